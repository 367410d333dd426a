#!/usr/bin/env bash
# udptee's resident memory with its defaults, at 1, 2, 4 and 8 targets: idle, and after 30,000
# mixed-size datagrams (1-9000 bytes) while one target never reads. Prints RSS and peak (VmHWM) in
# MiB beside the start-up log's own formula, and the baseline relay for scale. With BASE_REV, it
# then prints the CPU-per-datagram comparison against that commit (scripts/bench-forward.sh, 50k and
# 100k/s, pinned, fan-out 2, 64 B, interleaved).
#
#   scripts/bench-memory.sh
#   BASE_REV=771d6f9 scripts/bench-memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
mib() { awk -v v="$1" 'BEGIN { printf "%.1f", v/1024 }'; }

# A target that never reads: a bound socket with the smallest receive buffer, held by a sleeper.
stuck=$(port)
python3 -c "import socket,time; s=socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1); s.bind(('127.0.0.1', $stuck)); time.sleep(3600)" &
sleep 0.3

printf '%-8s %-10s %-12s %-12s %-14s\n' targets idle_MiB stalled_MiB peak_MiB logged_total
for n in 1 2 4 8; do
  listen=$(port)
  args=(--listen "127.0.0.1:$listen" --stats-interval 0 --admin off --to "stuck=127.0.0.1:$stuck")
  for i in $(seq 2 "$n"); do
    p=$(port)
    "$T/udptee-loadgen" sink --listen "127.0.0.1:$p" --duration 20s > /dev/null 2>&1 &
    args+=(--to "t$i=127.0.0.1:$p")
  done
  "$T/udptee" "${args[@]}" 2> "$tmp/log" &
  pid=$!
  sleep 1.5
  idle=$(kib VmRSS "$pid")
  "$T/udptee-loadgen" send --to "127.0.0.1:$listen" --size 1-9000 --count 30000 --rate 20k > /dev/null 2>&1
  sleep 0.5
  loaded=$(kib VmRSS "$pid"); peak=$(kib VmHWM "$pid")
  logged=$(grep -o 'total_bytes=[0-9]*' "$tmp/log" | head -1 | cut -d= -f2)
  printf '%-8s %-10s %-12s %-12s %-14s\n' "$n" "$(mib "$idle")" "$(mib "$loaded")" "$(mib "$peak")" "$(mib $((logged / 1024)))"
  kill -INT "$pid"; wait "$pid" 2>/dev/null || true
done
listen=$(port)
"$T/udptee-loadgen" relay --listen "127.0.0.1:$listen" --to "127.0.0.1:$stuck" > /dev/null 2>&1 &
rpid=$!
sleep 1
echo "baseline relay, 1 target: $(mib "$(kib VmRSS "$rpid")") MiB"
kill "$rpid" 2>/dev/null || true
if [[ -n ${BASE_REV:-} ]]; then
  echo
  BASE_REV=$BASE_REV RATES=${RATES:-50k,100k} FORWARDERS="udptee udptee-base relay" BASELINE=udptee-base \
    scripts/bench-forward.sh
fi
