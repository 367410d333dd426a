#!/usr/bin/env bash
# Bench helper (scripts/bench-forward.sh's `udptee-filtered`): udptee with the first target as it
# is and every other target with line settings, from a generated config file.
#
#   scripts/udptee-filtered.sh LISTEN TARGET... [-- UDPTEE_FLAGS...]
#
# LINES (TOML keys for the filtered targets) defaults to an include that keeps the loadgen's
# tracking line (so its sinks still measure loss) and the api.*/db.* names of the realistic profile;
# set it empty for none. EVERY (TOML keys for every target, the first too) defaults to none.
set -euo pipefail
listen=$1
shift
targets=()
while [[ $# -gt 0 && $1 != -- ]]; do targets+=("$1"); shift; done
[[ ${1:-} == -- ]] && shift
LINES=${LINES-'include = ["ulg.*", "api.*", "db.*"]'}
EVERY=${EVERY:-}
# udptee takes this process's PID (exec), so the bench measures its CPU; the file stays behind in
# target/, which is never committed.
mkdir -p "$(dirname "$0")/../target/bench-cfg"
cfg=$(dirname "$0")/../target/bench-cfg/filtered-$$.toml
{
  echo "listen = \"$listen\""
  for i in "${!targets[@]}"; do
    echo "[[target]]"
    echo "name = \"t$i\""
    echo "addr = \"${targets[$i]}\""
    echo "$EVERY"
    if ((i > 0)); then echo "$LINES"; fi
  done
} > "$cfg"
exec "${UDPTEE_BIN:-$(dirname "$0")/../target/release/udptee}" --config "$cfg" "$@"
