#!/usr/bin/env bash
# Bench helper (scripts/bench-forward.sh's `udptee-origin`): udptee with every target keeping its
# clients' addresses (`preserve-source = true`: a raw socket, needs CAP_NET_RAW), from a generated
# config file (scripts/udptee-filtered.sh, with no line settings).
#
#   scripts/udptee-origin.sh LISTEN TARGET... [-- UDPTEE_FLAGS...]
EVERY='preserve-source = true' LINES='' exec "$(dirname "$0")/udptee-filtered.sh" "$@"
