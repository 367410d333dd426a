#!/usr/bin/env bash
# The machine's ceiling: generator straight into one sink, no forwarder, generator on GEN_CPU and sink on
# SINK_CPU, at 64-byte and mixed 20-1400-byte sizes. A row whose generator missed its rate ("gen ok"
# False) is generator-limited; loss with sink drops is sink-limited. Figures above this are not trustworthy.
#
#   RUNS=3 RATES=100k,200k,300k,max scripts/bench-ceiling.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
RATES=${RATES:-100k,200k,300k,400k,max}
DURATION=${DURATION:-3s}
GEN_CPU=${GEN_CPU:-1}
SINK_CPU=${SINK_CPU:-0}
OUT=${OUT:-bench-out/ceiling-$(date +%Y%m%d-%H%M%S)}

cargo build --release --workspace -q
T=target/release
mkdir -p "$OUT"
for run in $(seq 1 "$RUNS"); do
  for size in 64 20-1400; do
    "$T/udptee-loadgen" bench --fanout 1 --forwarder none --rates "$RATES" --duration "$DURATION" --size "$size" \
      --cpus "$GEN_CPU" --sink-cpus "$SINK_CPU" --out "$OUT/size${size}-$run" > "$OUT/size${size}-$run.txt"
  done
done
echo "command: RUNS=$RUNS RATES=$RATES DURATION=$DURATION GEN_CPU=$GEN_CPU SINK_CPU=$SINK_CPU $0"
python3 scripts/summarize.py "$OUT"
