#!/usr/bin/env bash
# Bench helper (scripts/bench-forward.sh's `udptee-top`): udptee with someone looking at its top
# talkers, that is, `udptee top` running (through a pipe: a table every second from GET /top), as
# an operator would during an incident. The viewer is another process on POLL_CPU, so the bench
# measures what looking costs udptee itself: the sample's copies and the sampler thread's tally.
#
#   scripts/udptee-top.sh LISTEN TARGET... [-- UDPTEE_FLAGS...]
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
  # Until the admin listener answers, then for as long as udptee (this PID, after exec) lives.
  until curl -s -o /dev/null "http://127.0.0.1:$port/healthz"; do
    kill -0 "$pid" 2>/dev/null || exit 0
    sleep 0.05
  done
  taskset -c "${POLL_CPU:-1}" "$bin" top --admin "127.0.0.1:$port" --by "${TOP_BY:-name}" > /dev/null 2>&1 &
  viewer=$!
  while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
  kill "$viewer" 2>/dev/null || true
) &
exec "$bin" --listen "$listen" "${to[@]}" "$@" --admin "127.0.0.1:$port"
