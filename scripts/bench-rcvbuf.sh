#!/usr/bin/env bash
# How large udptee's receive buffer must be: loss at 25k, 50k and 100k datagrams/s (fan-out 2, 64 B,
# pinned as in bench-forward.sh) with the stock 208 KiB buffer and larger ones, interleaved RUNS times.
#
#   RUNS=3 SIZES="208KiB 1MiB 8MiB" scripts/bench-rcvbuf.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
SIZES=${SIZES:-208KiB 1MiB 8MiB}
RATES=${RATES:-25k,50k,100k}
DURATION=${DURATION:-5s}
OUT=${OUT:-bench-out/rcvbuf-$(date +%Y%m%d-%H%M%S)}
mkdir -p "$OUT"
cargo build --release --workspace -q
T=target/release
for run in $(seq 1 "$RUNS"); do
  for size in $SIZES; do
    echo "run $run/$RUNS: --rcvbuf $size" >&2
    "$T/udptee-loadgen" bench --fanout 2 --rates "$RATES" --duration "$DURATION" --size 64 --cpus 1 \
      --forwarder "taskset -c 0 $T/udptee --listen {listen} {to} --stats-interval 0 --admin 127.0.0.1:0 --rcvbuf $size" \
      --out "$OUT/rcvbuf$size-$run" > "$OUT/rcvbuf$size-$run.txt"
  done
done
echo "command: RUNS=$RUNS SIZES='$SIZES' RATES=$RATES DURATION=$DURATION $0"
python3 scripts/summarize.py "$OUT"
