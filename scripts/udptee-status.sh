#!/usr/bin/env bash
# Bench helper (scripts/bench-forward.sh's `udptee-status`, and `udptee-top` through
# scripts/udptee-top.sh): udptee with someone looking, from another process on POLL_CPU, so the
# bench measures what being looked at costs udptee itself.
#   VIEW=status (the default): its status page open, that is, GET /status.json once a second on
#     its admin listener, as the page's script does;
#   VIEW=top: `udptee top` running (through a pipe: a table every second from GET /top, ranked by
#     TOP_BY), as an operator would during an incident: udptee pays for the sample's copies and
#     the sampler thread's tally.
#
#   scripts/udptee-status.sh LISTEN TARGET... [-- UDPTEE_FLAGS...]
set -euo pipefail
listen=$1
shift
to=()
while [[ $# -gt 0 && $1 != -- ]]; do to+=(--to "$1"); shift; done
[[ ${1:-} == -- ]] && shift
bin=${UDPTEE_BIN:-$(dirname "$0")/../target/release/udptee}
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
pid=$$
(
  # Until udptee (this PID, after exec) is gone; off the forwarder's CPU (FWD_CPU), like a browser
  # or a terminal elsewhere.
  if [[ ${VIEW:-status} == top ]]; then
    until curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; do
      kill -0 "$pid" 2>/dev/null || exit 0
      sleep 0.05
    done
    taskset -c "${POLL_CPU:-1}" "$bin" top --admin "127.0.0.1:$port" --by "${TOP_BY:-name}" > /dev/null 2>&1 &
    viewer=$!
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    kill "$viewer" 2>/dev/null || true
  else
    while kill -0 "$pid" 2>/dev/null; do
      taskset -c "${POLL_CPU:-1}" curl -s -o /dev/null "http://127.0.0.1:$port/status.json" || true
      sleep 1
    done
  fi
) &
exec "$bin" --listen "$listen" "${to[@]}" "$@" --admin "127.0.0.1:$port"
