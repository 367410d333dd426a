#!/usr/bin/env bash
# The real tools the tests use as witnesses, from Debian's packages: iproute2 (ip, tc) for the
# network-namespace tests, nftables for the fault suite's lossy link (this kernel has no netem).
# A test whose tool is missing prints why it skips, so a failure here is reported, not fatal.
set -uo pipefail
packages=(iproute2 nftables)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "packages: all present (${packages[*]})"
  exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
  echo "packages: not root, cannot install ${missing[*]}; the tests that need them will skip"
  exit 0
fi
echo "packages: installing ${missing[*]}"
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/udptee-ci-apt.log 2>&1; then
  echo "packages: apt-get failed (see /tmp/udptee-ci-apt.log); the tests that need them will skip"
  tail -5 /tmp/udptee-ci-apt.log
fi
exit 0
