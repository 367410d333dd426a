#!/usr/bin/env bash
# Bench helper (scripts/bench-forward.sh's `udptee-status`): udptee with its status page open, that
# is, GET /status.json once a second on its admin listener, as the page's script does. The poller
# is another process, so the bench measures what the page costs udptee itself.
#
#   scripts/udptee-status.sh LISTEN TARGET... [-- UDPTEE_FLAGS...]
set -euo pipefail
listen=$1
shift
to=()
while [[ $# -gt 0 && $1 != -- ]]; do to+=(--to "$1"); shift; done
[[ ${1:-} == -- ]] && shift
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pid=$$
(
  # Until udptee (this PID, after exec) is gone.
  while kill -0 "$pid" 2>/dev/null; do
    # Off the forwarder's CPU (FWD_CPU), like a browser elsewhere.
    taskset -c "${POLL_CPU:-1}" curl -s -o /dev/null "http://127.0.0.1:$port/status.json" || true
    sleep 1
  done
) &
exec "${UDPTEE_BIN:-$(dirname "$0")/../target/release/udptee}" --listen "$listen" "${to[@]}" "$@" --admin "127.0.0.1:$port"
