#!/usr/bin/env bash
# Leak check: one server (store on disk, rooms and users leaving memory
# after 2 s) takes WAVES waves of load-test scenarios, each with fresh names,
# and after every wave it must be back where it started: no connection or
# room left, no goroutine or file descriptor more than before the first
# wave, and no more live heap than after the first wave (within a margin for
# the maps, which keep their size). Live heap, not heap in use: spans that
# hold a few live objects count whole in the latter, which moved by 3 MiB
# from run to run with no leak. Real runs grew 0.2-1.8 MiB from the first
# wave to the second, a user sweep that forgets no one 5.5 MiB. Exits
# non-zero on the first scenario that fails or the first figure that grows.
#   WAVES=5 loadtest/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
waves="${WAVES:-3}"
addr="${ADDR:-127.0.0.1:18090}"
debug="${DEBUG_ADDR:-127.0.0.1:18091}"
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/nbchat" .
go build -o "$bin/loadtest" ./loadtest
"$bin/nbchat" -addr "$addr" -debug-addr "$debug" -log-level warn -data "$bin/data" \
	-room-ttl 2s -user-ttl 2s -max-upgrade-rate 1000 &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$bin"' EXIT
for _ in $(seq 100); do # up to 10 s for the listener
	if curl -fsS "http://$addr/healthz" >/dev/null 2>&1; then break; fi
	if ! kill -0 "$server" 2>/dev/null; then echo "nbchat exited" >&2; exit 2; fi
	sleep 0.1
done

metric() { curl -fsS "http://$addr/metrics" | awk -v k="$1" '$1 == k { printf "%d", $2 }'; }

# settle waits for the last wave's connections and rooms to go (the sweep
# runs every 10 s), then collects garbage twice, so that what sync.Pool
# kept is freed too.
settle() {
	for _ in $(seq 60); do
		if [ "$(metric nbchat_connections)" = 0 ] && [ "$(metric nbchat_rooms)" = 0 ]; then break; fi
		sleep 1
	done
	curl -fsS "http://$debug/debug/pprof/heap?gc=1" >/dev/null
	curl -fsS "http://$debug/debug/pprof/heap?gc=1" >/dev/null
}

scenarios=(
	"-preset smoke"
	"-preset smoke -scenario dm"
	"-preset smoke -scenario churn -duration 10s"
	"-preset smoke -scenario storm -rate 800"
	"-preset smoke -scenario storm -storm-silent -rate 800"
	"-preset smoke -scenario slow"
)

settle
goroutines0=$(metric go_goroutines)
fds0=$(metric process_open_fds)
heap0=$(metric go_memstats_heap_alloc_bytes)
echo "soak: before: $goroutines0 goroutines, $fds0 fds, heap $((heap0 >> 10)) KiB"
heap1=0
for wave in $(seq "$waves"); do
	for s in "${scenarios[@]}"; do
		# shellcheck disable=SC2086 # $s is a list of flags
		if ! "$bin/loadtest" -url "ws://$addr/ws" -progress off -out "" $s >"$bin/run.log" 2>&1; then
			cat "$bin/run.log"
			echo "soak: the server's counters:"
			curl -fsS "http://$addr/metrics" | grep -E '^nbchat_(closes|handshakes|accept|reuse|name_probes|errors)' || true
			echo "soak: wave $wave: $s failed" >&2
			exit 1
		fi
	done
	settle
	conns=$(metric nbchat_connections)
	rooms=$(metric nbchat_rooms)
	goroutines=$(metric go_goroutines)
	fds=$(metric process_open_fds)
	heap=$(metric go_memstats_heap_alloc_bytes)
	echo "soak: after wave $wave: $conns connections, $rooms rooms, $goroutines goroutines, $fds fds, heap $((heap >> 10)) KiB"
	[ "$wave" = 1 ] && heap1=$heap
	fail=""
	[ "$conns" = 0 ] || fail="$fail connections left;"
	[ "$rooms" = 0 ] || fail="$fail rooms left in memory;"
	[ "$goroutines" -le $((goroutines0 + 2)) ] || fail="$fail goroutines $goroutines0 -> $goroutines;"
	[ "$fds" -le $((fds0 + 2)) ] || fail="$fail file descriptors $fds0 -> $fds;"
	[ "$heap" -le $((heap1 * 5 / 4 + (2 << 20))) ] || fail="$fail heap $((heap1 >> 10)) -> $((heap >> 10)) KiB since wave 1;"
	if [ -n "$fail" ]; then
		echo "soak: FAIL after wave $wave:$fail" >&2
		exit 1
	fi
done
echo "soak: PASS ($waves waves of ${#scenarios[@]} scenarios)"
