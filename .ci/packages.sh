#!/usr/bin/env bash
# The real tools the tests use as witnesses: from Debian's packages, iproute2 (ip, tc) for the
# network-namespace tests, nftables for the fault suite's lossy link (this kernel has no netem),
# tcpdump (it reads the recorder's pcap files back), prometheus (promtool and a real server scraping
# udptee), chromium (renders the status page headless), tmux (drives `udptee top`'s live view),
# systemd (systemd-analyze verify of the shipped unit), clang and libbpf-dev (build.rs compiles the
# kernel fast path's BPF program with them; without them udptee builds without it and its tests
# skip), bpftool (the fast-path tests check the TCX link is gone after kill -9) and nodejs/npm; from npm, Etsy's statsd daemon, with the proxy.js and hashring 3.2.0 the group witness test runs (into target/ci-tools, never committed); from PyPI,
# Datadog's DogStatsD client and kubernetes-validate (the DaemonSet's schema check); from npm also
# dockerfilelint (dist/Dockerfile). A test whose tool is missing prints why it skips, so a failure here
# is reported, not fatal.
set -uo pipefail
packages=(iproute2 nftables tcpdump prometheus chromium tmux clang libbpf-dev bpftool dpkg-dev lintian man-db)
command -v node >/dev/null && command -v npm >/dev/null || packages+=(nodejs npm)
command -v systemd-analyze >/dev/null || packages+=(systemd)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]} == 0)); then
  echo "packages: Debian packages present (${packages[*]})"
elif [[ $(id -u) -ne 0 ]]; then
  echo "packages: not root, cannot install ${missing[*]}; the tests that need them will skip"
else
  echo "packages: installing ${missing[*]}"
  if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >/tmp/udptee-ci-apt.log 2>&1; then
    echo "packages: apt-get failed (see /tmp/udptee-ci-apt.log); the tests that need them will skip"
    tail -5 /tmp/udptee-ci-apt.log
  fi
fi
tools=target/ci-tools
if [[ ! -f $tools/node_modules/statsd/stats.js ]] && command -v npm >/dev/null; then
  mkdir -p "$tools"
  (cd "$tools" && npm install --no-audit --no-fund --silent statsd@0.9.0) >/tmp/udptee-ci-npm.log 2>&1 \
    || echo "packages: npm install statsd failed (see /tmp/udptee-ci-npm.log)"
fi
if [[ ! -x $tools/node_modules/.bin/dockerfilelint ]] && command -v npm >/dev/null; then
  mkdir -p "$tools"
  (cd "$tools" && npm install --no-audit --no-fund --silent dockerfilelint@1.8.0) >/tmp/udptee-ci-npm.log 2>&1 \
    || echo "packages: npm install dockerfilelint failed (see /tmp/udptee-ci-npm.log)"
fi
if ! command -v kubernetes-validate >/dev/null; then
  python3 -m pip install -q kubernetes-validate >/tmp/udptee-ci-pip.log 2>&1 \
    || echo "packages: pip install kubernetes-validate failed (see /tmp/udptee-ci-pip.log)"
fi
if ! python3 -c 'import datadog' 2>/dev/null; then
  python3 -m pip install -q datadog >/tmp/udptee-ci-pip.log 2>&1 \
    || echo "packages: pip install datadog failed (see /tmp/udptee-ci-pip.log)"
fi
echo "packages: statsd $([[ -f $tools/node_modules/statsd/stats.js ]] && echo ready || echo missing), datadog client $(python3 -c 'import datadog; print(datadog.__version__)' 2>/dev/null || echo missing)"
exit 0
