#!/usr/bin/env bash
# What protecting a shadow costs (issue #30), side by side in one interleaved run of
# scripts/bench-forward.sh (realistic statsd lines, 512-byte datagrams, fan-out 2):
#   - a rate cap:        every target under a max-rate it never reaches   (udptee-capped / udptee)
#   - a series budget:   a line target with max-series beside the same line target without
#                                                                         (udptee-budget / udptee-filtered)
#   - nobody looking:    this build (top talkers compiled in, nobody looking) against BASE_REV, the
#                        last build without them                          (udptee / udptee-base)
#   - someone looking:   `udptee top` running against nobody looking       (udptee-top / udptee)
# Prints bench-forward.sh's table, then those four ratios of median CPU per datagram.
#
#   RUNS=3 RATES=50k scripts/bench-shadow.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export BASE_REV=${BASE_REV:-5a51d66}
export FORWARDERS="udptee-base udptee udptee-capped udptee-filtered udptee-budget udptee-top"
export BASELINE=udptee
export GEN_ARGS=${GEN_ARGS:---profile realistic}
export SIZE=${SIZE:-512}
export RATES=${RATES:-50k}
export PAIRS="udptee-capped:udptee,udptee-budget:udptee-filtered,udptee:udptee-base,udptee-top:udptee"
exec scripts/bench-forward.sh
