#!/usr/bin/env bash
# Bench helper (scripts/bench-forward.sh's `udptee-capped`): udptee with every target under a
# `max-rate` it never reaches (a billion a second), from a generated config file
# (scripts/udptee-filtered.sh, with no line settings): what checking the cap costs.
#
#   scripts/udptee-capped.sh LISTEN TARGET... [-- UDPTEE_FLAGS...]
EVERY='max-rate = "1000000000/s"' LINES='' exec "$(dirname "$0")/udptee-filtered.sh" "$@"
