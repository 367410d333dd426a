#!/usr/bin/env bash
# What a statsd line costs through a tcp:// listener (16 connections) with one UDP and one TCP
# target, against the UDP path (16 UDP clients, datagrams of the same lines packed to 1432 bytes,
# two UDP targets), and the UDP listener with one UDP and one TCP target; side by side,
# interleaved, RUNS times, at RATE lines per second (benches/streams.rs). udptee's threads are
# pinned to CPU 0, clients and receivers to CPU 1; CPU 0 is measured with an idle-priority spin
# (softirq included, against the spin alone just before and after each run) and by udptee's
# threads' run time. Prints medians per line and ratios to the UDP path.
#
#   scripts/bench-streams.sh
#   RATE=400000 RUNS=5 SECS=5 scripts/bench-streams.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RATE=${RATE:-200000}
RUNS=${RUNS:-3}
SECS=${SECS:-3}
echo "command: RATE=$RATE RUNS=$RUNS SECS=$SECS $0"
RATE=$RATE RUNS=$RUNS SECS=$SECS cargo bench -q --bench streams
