#!/usr/bin/env bash
# udptee against the baseline relay (single-thread recvmmsg -> sendmmsg per target, no queues), side by
# side: fan-out 2, 64-byte statsd datagrams, each forwarder pinned to FWD_CPU with taskset, the generator
# and sinks to GEN_CPU; interleaved, RUNS times. Prints medians and ratios (scripts/summarize.py).
#
#   RUNS=3 RATES=50k,100k DURATION=5s scripts/bench-forward.sh
#   UDPTEE_ARGS="--workers 2" FWD_CPU=0-1 scripts/bench-forward.sh     # unpinned-style, two workers
#   FORWARDERS="udptee udptee-nolat relay" scripts/bench-forward.sh    # cost of latency recording
#   BASE_REV=771d6f9 FORWARDERS="udptee udptee-base relay" BASELINE=udptee-base scripts/bench-forward.sh
#                                              # against an earlier commit, built in a git worktree
#   FORWARDERS="udptee udptee-filtered" GEN_ARGS="--profile realistic" SIZE=512 scripts/bench-forward.sh
#                                              # the second target with line settings (udptee-filtered.sh)
#   FORWARDERS="udptee udptee-status" scripts/bench-forward.sh   # the status page open (polled 1/s)
#   FORWARDERS="udptee udptee-origin" FANOUT=1 scripts/bench-forward.sh
#                                              # preserve-source (raw socket) vs a plain copy
#   FORWARDERS="udptee udptee-capped" BASELINE=udptee scripts/bench-forward.sh
#                                              # every target under a max-rate it never reaches
#   FORWARDERS="udptee-filtered udptee-budget" BASELINE=udptee-filtered GEN_ARGS="--profile realistic" SIZE=512 scripts/bench-forward.sh
#                                              # a series budget beside the same line settings
#   BASE_REV=5a51d66 FORWARDERS="udptee-base udptee udptee-top" BASELINE=udptee-base scripts/bench-forward.sh
#                                              # nobody looking at the top talkers (this build against one
#                                              # without them), and `udptee top` running (udptee-top.sh)
#   FORWARDERS="udptee udptee-record" scripts/bench-forward.sh
#                                              # --record on (into $OUT, rotated, 2 x 64 MiB kept) vs off
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
RATES=${RATES:-50k,100k}
DURATION=${DURATION:-5s}
FANOUT=${FANOUT:-2}
SIZE=${SIZE:-64}
FWD_CPU=${FWD_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
RCVBUF=${RCVBUF:-8MiB}
UDPTEE_ARGS=${UDPTEE_ARGS:-}
GEN_ARGS=${GEN_ARGS:-}
FORWARDERS=${FORWARDERS:-udptee relay}
OUT=${OUT:-bench-out/forward-$(date +%Y%m%d-%H%M%S)}

cargo build --release --workspace -q
T=target/release
if [[ -n ${BASE_REV:-} ]]; then
  base=target/bench-base
  [[ -d $base ]] || git worktree add -q --detach "$base" "$BASE_REV"
  git -C "$base" checkout -q --detach "$BASE_REV"
  (cd "$base" && cargo build --release -q --bin udptee)
  BASE_BIN=$base/target/release/udptee
fi
mkdir -p "$OUT"
for run in $(seq 1 "$RUNS"); do
  for fwd in $FORWARDERS; do
    case $fwd in
      udptee) cmd="taskset -c $FWD_CPU $T/udptee --listen {listen} {to} --stats-interval 0 --admin 127.0.0.1:0 --rcvbuf $RCVBUF $UDPTEE_ARGS" ;;
      udptee-mmsg) cmd="taskset -c $FWD_CPU $T/udptee --listen {listen} {to} --stats-interval 0 --admin 127.0.0.1:0 --rcvbuf $RCVBUF --io mmsg $UDPTEE_ARGS" ;;
      udptee-uring) cmd="taskset -c $FWD_CPU $T/udptee --listen {listen} {to} --stats-interval 0 --admin 127.0.0.1:0 --rcvbuf $RCVBUF --io uring $UDPTEE_ARGS" ;;
      udptee-nolat) cmd="taskset -c $FWD_CPU $T/udptee --listen {listen} {to} --stats-interval 0 --admin 127.0.0.1:0 --rcvbuf $RCVBUF --latency off $UDPTEE_ARGS" ;;
      udptee-base) cmd="taskset -c $FWD_CPU ${BASE_BIN:?set BASE_REV} --listen {listen} {to} --stats-interval 0 --admin 127.0.0.1:0 --rcvbuf $RCVBUF $UDPTEE_ARGS" ;;
      udptee-origin) cmd="taskset -c $FWD_CPU scripts/udptee-origin.sh {listen} {targets} -- --stats-interval 0 --admin 127.0.0.1:0 --rcvbuf $RCVBUF $UDPTEE_ARGS" ;;
      udptee-capped) cmd="taskset -c $FWD_CPU scripts/udptee-capped.sh {listen} {targets} -- --stats-interval 0 --admin 127.0.0.1:0 --rcvbuf $RCVBUF $UDPTEE_ARGS" ;;
      udptee-budget) cmd="taskset -c $FWD_CPU scripts/udptee-budget.sh {listen} {targets} -- --stats-interval 0 --admin 127.0.0.1:0 --rcvbuf $RCVBUF $UDPTEE_ARGS" ;;
      udptee-filtered) cmd="taskset -c $FWD_CPU scripts/udptee-filtered.sh {listen} {targets} -- --stats-interval 0 --admin 127.0.0.1:0 --rcvbuf $RCVBUF $UDPTEE_ARGS" ;;
      udptee-top) cmd="taskset -c $FWD_CPU scripts/udptee-top.sh {listen} {targets} -- --stats-interval 0 --rcvbuf $RCVBUF $UDPTEE_ARGS" ;;
      udptee-status) cmd="taskset -c $FWD_CPU scripts/udptee-status.sh {listen} {targets} -- --stats-interval 0 --rcvbuf $RCVBUF $UDPTEE_ARGS" ;;
      udptee-record) cmd="taskset -c $FWD_CPU $T/udptee --listen {listen} {to} --stats-interval 0 --admin 127.0.0.1:0 --rcvbuf $RCVBUF --record $OUT/rec-$run.pcap --record-max-bytes 64MiB --record-keep 2 $UDPTEE_ARGS" ;;
      relay) cmd="taskset -c $FWD_CPU $T/udptee-loadgen relay --listen {listen} {to} --rcvbuf $RCVBUF" ;;
      *) echo "unknown forwarder $fwd" >&2; exit 2 ;;
    esac
    echo "run $run/$RUNS: $fwd" >&2
    "$T/udptee-loadgen" bench --fanout "$FANOUT" --rates "$RATES" --duration "$DURATION" --size "$SIZE" \
      --cpus "$GEN_CPU" $GEN_ARGS --forwarder "$cmd" --out "$OUT/$fwd-$run" > "$OUT/$fwd-$run.txt"
  done
done
rm -f "$OUT"/rec-*.pcap
echo "command: BASE_REV=${BASE_REV:-} FORWARDERS='$FORWARDERS' RUNS=$RUNS RATES=$RATES DURATION=$DURATION FANOUT=$FANOUT SIZE=$SIZE FWD_CPU=$FWD_CPU GEN_CPU=$GEN_CPU RCVBUF=$RCVBUF UDPTEE_ARGS='$UDPTEE_ARGS' GEN_ARGS='$GEN_ARGS' $0"
python3 scripts/summarize.py "$OUT" "${BASELINE:-relay}"
