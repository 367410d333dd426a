#!/usr/bin/env bash
# What keeping the origin (`preserve-source`) costs per datagram against a plain copy, side by side,
# interleaved, for both ways udptee keeps it (docs/performance.md, "Keeping the origin"):
#
# - UDP: udptee with one target, plain (`udptee`) or keeping each client's address and port through
#   a raw socket (`udptee-origin`, scripts/udptee-origin.sh), through scripts/bench-forward.sh: the
#   forwarder pinned to FWD_CPU, its whole core measured with the idle-priority spin (softirq
#   included), the generator and sink on GEN_CPU.
# - Unix: benches/origin.rs, udptee in-process with a Unix listener and one Unix target, relaying or
#   keeping each client's credentials (SCM_CREDENTIALS); its threads' run time per datagram.
#
# Both at RATES (default 50k and 150k/s), RUNS times. Needs root (CAP_NET_RAW, CAP_SYS_ADMIN).
#
#   scripts/bench-origin.sh
#   RUNS=5 scripts/bench-origin.sh
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-3}
RATES=${RATES:-50k,150k}
DURATION=${DURATION:-5s}
echo "== UDP: a plain copy (udptee) against one from the client's address (udptee-origin)"
FORWARDERS="udptee udptee-origin" BASELINE=udptee FANOUT=1 RUNS=$RUNS RATES=$RATES \
  DURATION=$DURATION scripts/bench-forward.sh
echo
echo "== Unix: relayed against kept credentials"
rates=$(echo "$RATES" | sed 's/k/000/g')
RATES=$rates RUNS=$RUNS SECS=${DURATION%s} cargo bench -q --bench origin
