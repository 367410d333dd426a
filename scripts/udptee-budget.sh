#!/usr/bin/env bash
# Bench helper (scripts/bench-forward.sh's `udptee-budget`): scripts/udptee-filtered.sh's targets
# (the first plain, the others with line settings) with a series budget on the filtered ones, large
# enough that nothing is dropped: what counting series costs beside the line settings alone.
#
#   scripts/udptee-budget.sh LISTEN TARGET... [-- UDPTEE_FLAGS...]
LINES=${LINES-'include = ["ulg.*", "api.*", "db.*"]'}
LINES="$LINES
max-series = 1000000" exec "$(dirname "$0")/udptee-filtered.sh" "$@"
