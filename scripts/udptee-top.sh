#!/usr/bin/env bash
# Bench helper (scripts/bench-forward.sh's `udptee-top`): udptee with `udptee top` looking at it
# (scripts/udptee-status.sh with VIEW=top).
#
#   scripts/udptee-top.sh LISTEN TARGET... [-- UDPTEE_FLAGS...]
VIEW=top exec "$(dirname "$0")/udptee-status.sh" "$@"
