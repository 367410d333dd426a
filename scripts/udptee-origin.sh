#!/usr/bin/env bash
# Bench helper (scripts/bench-forward.sh's `udptee-origin`): udptee with every target keeping its
# clients' addresses (`preserve-source = true`: a raw socket, needs CAP_NET_RAW), from a generated
# config file.
#
#   scripts/udptee-origin.sh LISTEN TARGET... [-- UDPTEE_FLAGS...]
set -euo pipefail
listen=$1
shift
targets=()
while [[ $# -gt 0 && $1 != -- ]]; do targets+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
# udptee takes this process's PID (exec), so the bench measures its CPU; the file stays behind in
# target/, which is never committed.
mkdir -p "$(dirname "$0")/../target/bench-cfg"
cfg=$(dirname "$0")/../target/bench-cfg/origin-$$.toml
{
  echo "listen = \"$listen\""
  for i in "${!targets[@]}"; do
    echo "[[target]]"
    echo "name = \"t$i\""
    echo "addr = \"${targets[$i]}\""
    echo "preserve-source = true"
  done
} > "$cfg"
exec "${UDPTEE_BIN:-$(dirname "$0")/../target/release/udptee}" --config "$cfg" "$@"
