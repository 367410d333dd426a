#!/usr/bin/env bash
# udptee replay's figures (issue #11): the achieved rate at --speed max beside udptee-loadgen's own
# ceiling on this machine (sending straight to a sink), interleaved RUNS times, sender pinned to
# GEN_CPU and sink to SINK_CPU; then, at --speed 1, the error of the inter-datagram gaps on the wire
# (tcpdump of the replay against the recording, read with tshark): median and p99.
#
#   scripts/bench-replay.sh                       # 200,000 datagrams of 64 B recorded at 20k/s
#   COUNT=500000 RUNS=5 scripts/bench-replay.sh
set -euo pipefail
cd "$(dirname "$0")/.."
COUNT=${COUNT:-200000}
RUNS=${RUNS:-3}
GEN_CPU=${GEN_CPU:-1}
SINK_CPU=${SINK_CPU:-0}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
command -v tcpdump >/dev/null && command -v tshark >/dev/null || { echo "needs tcpdump and tshark" >&2; exit 2; }

rec=$(port)
"$T/udptee-loadgen" sink --listen "127.0.0.1:$rec" --idle-timeout 5s > /dev/null 2>&1 &
tcpdump -i lo -U -B 65536 -w "$tmp/rec.pcap" "udp dst port $rec" 2> /dev/null &
dump=$!
sleep 1
"$T/udptee-loadgen" send --to "127.0.0.1:$rec" --rate 20k --count "$COUNT" --size 64 > /dev/null
sleep 1
kill -INT "$dump"; wait "$dump" 2> /dev/null || true
got=$(tcpdump -r "$tmp/rec.pcap" -n 2> /dev/null | wc -l)
echo "recorded $got datagrams at 20k/s into a pcap (tcpdump -i lo)"

printf '%-6s %-22s %-22s\n' run loadgen_max_per_s replay_max_per_s
for run in $(seq 1 "$RUNS"); do
  s=$(port)
  taskset -c "$SINK_CPU" "$T/udptee-loadgen" sink --listen "127.0.0.1:$s" --idle-timeout 3s > /dev/null 2>&1 &
  sleep 0.3
  lg=$(taskset -c "$GEN_CPU" "$T/udptee-loadgen" send --to "127.0.0.1:$s" --rate max --count "$got" --size 64 \
    | python3 -c 'import json,sys; print(round(json.load(sys.stdin)["achieved_rate"]))')
  rp=$(taskset -c "$GEN_CPU" "$T/udptee" replay "$tmp/rec.pcap" --to "127.0.0.1:$s" --speed max \
    | sed -E 's/.* s, ([0-9]+)\/s;.*/\1/')
  printf '%-6s %-22s %-22s\n' "$run" "$lg" "$rp"
  echo "$lg $rp" >> "$tmp/rates"
done
python3 - "$tmp/rates" <<'PY'
import statistics, sys
rows = [list(map(float, l.split())) for l in open(sys.argv[1])]
lg, rp = statistics.median(r[0] for r in rows), statistics.median(r[1] for r in rows)
print(f"median: loadgen {lg:.0f}/s, replay {rp:.0f}/s, ratio {rp / lg:.2f}")
PY

# --speed 1: the gaps on the wire against the recorded gaps.
out=$(port)
"$T/udptee-loadgen" sink --listen "127.0.0.1:$out" --idle-timeout 5s > /dev/null 2>&1 &
tcpdump -i lo -U -B 65536 -w "$tmp/out.pcap" "udp dst port $out" 2> /dev/null &
dump=$!
sleep 1
taskset -c "$GEN_CPU" "$T/udptee" replay "$tmp/rec.pcap" --to "127.0.0.1:$out" --speed 1
sleep 1
kill -INT "$dump"; wait "$dump" 2> /dev/null || true
tshark -r "$tmp/rec.pcap" -T fields -e frame.time_epoch > "$tmp/rec.t" 2> /dev/null
tshark -r "$tmp/out.pcap" -T fields -e frame.time_epoch > "$tmp/out.t" 2> /dev/null
python3 - "$tmp/rec.t" "$tmp/out.t" <<'PY'
import sys
from decimal import Decimal
a = [Decimal(l) for l in open(sys.argv[1]) if l.strip()]
b = [Decimal(l) for l in open(sys.argv[2]) if l.strip()]
n = min(len(a), len(b))
print(f"--speed 1: {len(b)} of {len(a)} datagrams on the wire; total duration recorded {float(a[n-1]-a[0]):.3f} s, replayed {float(b[n-1]-b[0]):.3f} s")
err = sorted(abs(float((b[i] - b[i-1]) - (a[i] - a[i-1]))) * 1e6 for i in range(1, n))
drift = sorted(abs(float((b[i] - b[0]) - (a[i] - a[0]))) * 1e6 for i in range(n))
q = lambda v, p: v[min(len(v) - 1, int(p * len(v)))]
print(f"inter-datagram gap error: median {q(err, 0.5):.1f} us, p99 {q(err, 0.99):.1f} us (recorded median gap {q(sorted(float(a[i]-a[i-1])*1e6 for i in range(1, n)), 0.5):.1f} us)")
print(f"offset from the recorded schedule: median {q(drift, 0.5):.1f} us, p99 {q(drift, 0.99):.1f} us")
PY
