#!/usr/bin/env bash
# Start a three-node nbchat cluster over NATS on loopback, then either
# serve it until Ctrl-C / SIGTERM (-serve), or run the load generator
# against all three nodes with the given flags, stop everything and exit
# with the generator's status:
#   loadtest/cluster.sh -preset cluster50k -out reports/cluster50k
#   loadtest/cluster.sh -serve
# Builds bin/nbchat and bin/nats-server. Nodes listen on 127.0.0.1:9101-9103
# (-node node1..node3). NATS_PORT (4222), NATS_HTTP_PORT (8222, NATS's
# monitoring port), NATS_FLAGS and SERVER_FLAGS (extra flags for
# nats-server and every node) and LOG_LEVEL (warn) override. Logs and each
# node's store go to a temporary directory, which is removed after a clean
# run and kept (its path printed) otherwise, or always with KEEP=1.
set -euo pipefail
cd "$(dirname "$0")/.."
nats_port="${NATS_PORT:-4222}"
nats_http="${NATS_HTTP_PORT:-8222}"
nats_url="nats://127.0.0.1:$nats_port"
serve=0
if [ "${1:-}" = "-serve" ]; then
	serve=1
	shift
fi

tmp="$(mktemp -d -t nbchat-cluster.XXXXXX)"
nats_pid=""
node_pids=()
lt_pid=""
status=2 # until the load test (or a clean -serve stop) says otherwise

say() { echo "cluster.sh: $*" >&2; }

# alive PID: running and not yet a zombie waiting to be reaped.
alive() {
	[ -r "/proc/$1/stat" ] || return 1
	local st
	st="$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -c1)"
	[ -n "$st" ] && [ "$st" != Z ]
}

# stop_pids PID...: SIGTERM, up to 15 s to exit, then SIGKILL; reaps them
# and reports any that did not exit with status 0.
stop_pids() {
	local pid rc
	for pid in "$@"; do kill -TERM "$pid" 2>/dev/null || true; done
	for _ in $(seq 150); do
		local left=0
		for pid in "$@"; do if alive "$pid"; then left=1; fi; done
		[ "$left" = 0 ] && break
		sleep 0.1
	done
	for pid in "$@"; do
		if alive "$pid"; then
			say "pid $pid ($(cat "/proc/$pid/comm" 2>/dev/null)) ignored SIGTERM for 15 s: killing it"
			kill -KILL "$pid" 2>/dev/null || true
		fi
		rc=0
		wait "$pid" 2>/dev/null || rc=$?
		if [ "$rc" != 0 ]; then say "pid $pid exited with status $rc after SIGTERM"; fi
	done
}

# nats_stats prints nats-server's CPU seconds, RSS and message counts.
nats_stats() {
	[ -n "$nats_pid" ] && alive "$nats_pid" || return 0
	local tck cpu rss varz
	tck="$(getconf CLK_TCK)"
	cpu="$(sed 's/.*) //' "/proc/$nats_pid/stat" | awk -v t="$tck" '{printf "%.2f", ($12+$13)/t}')"
	rss="$(awk '/^VmRSS/ {printf "%.1f", $2/1024}' "/proc/$nats_pid/status")"
	varz="$(curl -fsS --max-time 2 "http://127.0.0.1:$nats_http/varz" 2>/dev/null | tr -d ' \n' || true)"
	msgs="$(echo "$varz" | grep -oE '"(in|out)_msgs":[0-9]+' | tr '\n' ' ' || true)"
	say "nats-server: CPU ${cpu}s, RSS ${rss} MiB; ${msgs:-no /varz}"
}

cleanup() {
	trap '' INT TERM
	if [ -n "$lt_pid" ] && alive "$lt_pid"; then stop_pids "$lt_pid"; fi
	nats_stats
	if [ "${#node_pids[@]}" -gt 0 ]; then stop_pids "${node_pids[@]}"; fi
	if [ -n "$nats_pid" ]; then stop_pids "$nats_pid"; fi
	if { [ "$status" = 0 ] && [ -z "${KEEP:-}" ]; } || ! compgen -G "$tmp/*.log" >/dev/null; then
		rm -rf "$tmp" # a clean run, or nothing started: no logs to keep
	else
		for f in "$tmp"/*.log; do
			[ -s "$f" ] || continue
			say "last lines of $f:"
			tail -n 5 "$f" >&2
		done
		say "logs and data kept in $tmp"
	fi
}
# on_signal CODE: a -serve run stopped by a signal ends well; anything
# else interrupted fails with 128+signal.
on_signal() {
	if [ "$serve" = 1 ] && [ "$status" = 0 ]; then exit 0; fi
	status=$1
	exit "$1"
}
trap cleanup EXIT
trap 'on_signal 130' INT
trap 'on_signal 143' TERM

# Children run in their own sessions, so a Ctrl-C reaches only this script,
# which stops them in order with one SIGTERM each (nbchat exits at once on
# a second signal).
bg=()
if command -v setsid >/dev/null; then bg=(setsid); fi

# healthy URL PID NAME: wait up to 15 s for URL while PID runs.
healthy() {
	for _ in $(seq 150); do
		if curl -fsS --max-time 1 "$1" >/dev/null 2>&1; then return 0; fi
		if ! alive "$2"; then
			say "$3 exited during startup; its log:"
			tail -n 20 "$tmp/$3.log" >&2
			exit 2
		fi
		sleep 0.1
	done
	say "$3 not healthy within 15 s ($1)"
	exit 2
}

go build -o bin/nbchat .
go build -o bin/nats-server github.com/nats-io/nats-server/v2
# Read the whole usage before matching: with pipefail, grep -q leaving early
# would kill the server with SIGPIPE now and then and fail the check.
usage="$(bin/nbchat -h 2>&1 || true)"
if [[ "$usage" != *-nats* ]]; then
	say "bin/nbchat has no -nats flag: this server cannot run as a cluster"
	exit 2
fi
if [ "$serve" = 0 ]; then
	go build -o "$tmp/loadtest" ./loadtest
fi

# Refuse to start on ports someone else holds: the health checks would
# otherwise talk to them.
for port in "$nats_port" "$nats_http" 9101 9102 9103; do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
		say "127.0.0.1:$port is already in use"
		exit 2
	fi
done

# shellcheck disable=SC2086 # NATS_FLAGS is a list of flags
"${bg[@]}" bin/nats-server -a 127.0.0.1 -p "$nats_port" -m "$nats_http" ${NATS_FLAGS:-} >"$tmp/nats.log" 2>&1 &
nats_pid=$!
healthy "http://127.0.0.1:$nats_http/healthz" "$nats_pid" nats

urls=()
for i in 1 2 3; do
	# shellcheck disable=SC2086 # SERVER_FLAGS is a list of flags
	"${bg[@]}" bin/nbchat -addr "127.0.0.1:910$i" -nats "$nats_url" -node "node$i" -data "$tmp/node$i" \
		-log-level "${LOG_LEVEL:-warn}" ${SERVER_FLAGS:-} >"$tmp/node$i.log" 2>&1 &
	node_pids+=($!)
	urls+=("ws://127.0.0.1:910$i/ws")
done
for i in 1 2 3; do
	healthy "http://127.0.0.1:910$i/healthz" "${node_pids[$((i - 1))]}" "node$i"
done
say "NATS on $nats_url; nodes node1..node3 up (logs in $tmp)"

if [ "$serve" = 1 ]; then
	for i in 1 2 3; do say "node$i: chat page http://127.0.0.1:910$i/, WebSocket ${urls[$((i - 1))]}"; done
	say "serving until Ctrl-C or SIGTERM"
	status=0
	while :; do
		for i in 1 2 3; do
			if ! alive "${node_pids[$((i - 1))]}"; then
				say "node$i exited"
				status=1
				exit 1
			fi
		done
		if ! alive "$nats_pid"; then
			say "nats-server exited"
			status=1
			exit 1
		fi
		sleep 1 &
		wait $! || true # a signal interrupts the wait at once
	done
fi

list="$(
	IFS=,
	echo "${urls[*]}"
)"
"${bg[@]}" "$tmp/loadtest" -url "$list" "$@" &
lt_pid=$!
status=0
wait "$lt_pid" || status=$?
lt_pid=""
for i in 1 2 3; do
	if ! alive "${node_pids[$((i - 1))]}"; then
		say "node$i died during the run"
		[ "$status" != 0 ] || status=1
	fi
done
exit "$status"
