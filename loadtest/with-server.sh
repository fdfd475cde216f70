#!/usr/bin/env bash
# Build nbchat and the load generator, start the server on a free loopback
# port, run the generator against it with the given flags, stop the server,
# and exit with the generator's status. For make targets, e.g.:
#   loadtest/with-server.sh -preset default
#   loadtest/with-server.sh -preset smoke -out reports/smoke
# ADDR (default 127.0.0.1:18089) and SERVER_FLAGS override the server side;
# the server keeps its message store in a temporary directory.
set -euo pipefail
cd "$(dirname "$0")/.."
addr="${ADDR:-127.0.0.1:18089}"
bin="$(mktemp -d)"
trap 'rm -rf "$bin"' EXIT
go build -o "$bin/nbchat" .
go build -o "$bin/loadtest" ./loadtest
# shellcheck disable=SC2086 # SERVER_FLAGS is a list of flags
"$bin/nbchat" -addr "$addr" -log-level warn -data "$bin/data" ${SERVER_FLAGS:-} &
server=$!
trap 'kill "$server" 2>/dev/null; wait "$server" 2>/dev/null; rm -rf "$bin"' EXIT
for _ in $(seq 100); do # up to 10 s for the listener
	if curl -fsS "http://$addr/healthz" >/dev/null 2>&1; then break; fi
	if ! kill -0 "$server" 2>/dev/null; then echo "nbchat exited" >&2; exit 2; fi
	sleep 0.1
done
status=0
"$bin/loadtest" -url "ws://$addr/ws" "$@" || status=$?
exit "$status"
