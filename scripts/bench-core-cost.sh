#!/usr/bin/env bash
# What the forwarder's core spends per datagram, everything on it included: the forwarder's threads
# and the kernel work they cause there (a loopback send runs the receive path into the target's
# socket inside the sending call). This kernel accounts CPU by ticks without IRQ time, so /proc
# misses softirq work: instead a SCHED_IDLE busy loop (`udptee-loadgen spin`) shares the forwarder's
# core, and what it loses against its rate alone is what the rest cost. Generator and sinks run on
# GEN_CPU. Interleaved, RUNS times; prints each run and the medians.
#
#   RUNS=3 RATE=50k DURATION=5s FANOUT=2 FORWARDERS="udptee relay" scripts/bench-core-cost.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
RATE=${RATE:-50k}
DURATION=${DURATION:-5}
FANOUT=${FANOUT:-2}
FWD_CPU=${FWD_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
FORWARDERS=${FORWARDERS:-udptee relay}
. scripts/lib.sh
rate=$(python3 -c "import sys; s=sys.argv[1]; print(int(float(s[:-1])*1000) if s[-1] in 'kK' else int(float(s)))" "$RATE")
spin() { taskset -c "$FWD_CPU" "$T/udptee-loadgen" spin --duration "${DURATION}s" | python3 -c 'import json,sys; print(json.load(sys.stdin)["iterations_per_sec"])'; }
results=$tmp/results
for run in $(seq 1 "$RUNS"); do
  for fwd in $FORWARDERS; do
    alone=$(spin)
    listen=$(port)
    targets=() sinks=()
    for _ in $(seq 1 "$FANOUT"); do
      p=$(port)
      targets+=("127.0.0.1:$p")
      taskset -c "$GEN_CPU" "$T/udptee-loadgen" sink --listen "127.0.0.1:$p" --duration "$((DURATION + 6))s" > "$tmp/sink-$p.json" 2>/dev/null &
      sinks+=($!)
    done
    case $fwd in
      udptee) taskset -c "$FWD_CPU" "$T/udptee" --listen "127.0.0.1:$listen" $(printf -- '--to %s ' "${targets[@]}") --admin off --stats-interval 0 2>/dev/null & ;;
      relay) taskset -c "$FWD_CPU" "$T/udptee-loadgen" relay --listen "127.0.0.1:$listen" $(printf -- '--to %s ' "${targets[@]}") 2>/dev/null & ;;
      *) echo "unknown forwarder $fwd" >&2; exit 2 ;;
    esac
    fwd_pid=$!
    sleep 0.5
    taskset -c "$GEN_CPU" "$T/udptee-loadgen" send --to "127.0.0.1:$listen" --rate "$RATE" --duration "$((DURATION + 2))s" > "$tmp/send.json" 2>/dev/null &
    gen=$!
    sleep 1
    loaded=$(spin)
    wait "$gen"
    kill -TERM "$fwd_pid"; wait "$fwd_pid" 2>/dev/null || true
    wait "${sinks[@]}" 2>/dev/null || true
    received=$(python3 -c 'import json,sys; print(min(json.load(open(f))["datagrams"] for f in sys.argv[1:]))' "$tmp"/sink-*.json)
    sent=$(python3 -c 'import json; print(json.load(open("'"$tmp/send.json"'"))["sent"])')
    rm -f "$tmp"/sink-*.json
    python3 - "$fwd" "$run" "$alone" "$loaded" "$rate" "$sent" "$received" <<'PY' | tee -a "$results"
import sys
fwd, run, alone, loaded, rate, sent, received = sys.argv[1], sys.argv[2], *map(float, sys.argv[3:])
share = 1 - loaded / alone
print(f"{fwd} run {run}: core share {share:.3f}, {share * 1e6 / rate:.2f} us/datagram at {rate:.0f}/s; sent {sent:.0f}, least received by a sink {received:.0f}")
PY
  done
done
echo "command: RUNS=$RUNS RATE=$RATE DURATION=$DURATION FANOUT=$FANOUT FWD_CPU=$FWD_CPU GEN_CPU=$GEN_CPU FORWARDERS='$FORWARDERS' $0"
python3 - "$results" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    m = re.match(r"(\S+) run \d+: core share ([\d.]+), ([\d.]+) us", line)
    if m:
        rows.setdefault(m.group(1), []).append((float(m.group(2)), float(m.group(3))))
base = None
for fwd, v in rows.items():
    med = statistics.median(u for _, u in v)
    base = base or med
    print(f"{fwd}: median {med:.2f} us/datagram on the forwarder's core (share {statistics.median(s for s, _ in v):.3f}), ratio {med / base:.2f} to {list(rows)[0]}")
PY
