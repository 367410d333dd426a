#!/usr/bin/env bash
# recvmmsg against io_uring multishot recvmsg, side by side in one run: CPU per datagram and the highest
# loss-free rate at fan-out 1, 2 and 4, with 64-byte and mixed 20-1400-byte datagrams. Each combination
# runs both backends interleaved RUNS times (scripts/bench-forward.sh), udptee pinned to FWD_CPU.
#
#   RUNS=3 DURATION=3s scripts/bench-backends.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
DURATION=${DURATION:-3s}
OUT=${OUT:-bench-out/backends-$(date +%Y%m%d-%H%M%S)}
for fanout in 1 2 4; do
  case $fanout in
    1) rates=50k,100k,150k ;;
    2) rates=50k,100k,125k ;;
    4) rates=25k,50k,75k ;;
  esac
  for size in 64 20-1400; do
    echo "== fan-out $fanout, size $size"
    RUNS=$RUNS RATES=$rates DURATION=$DURATION FANOUT=$fanout SIZE=$size FORWARDERS="udptee-mmsg udptee-uring" \
      BASELINE=udptee-mmsg OUT="$OUT/f$fanout-s$size" scripts/bench-forward.sh 2>&1 | grep -v '^run '
  done
done
