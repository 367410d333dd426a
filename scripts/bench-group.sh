#!/usr/bin/env bash
# Lines per core-second through a group of 4 members, against Etsy statsd's proxy.js (npm statsd
# 0.9.0, as .ci/packages.sh installs it into target/ci-tools) and against udptee's plain mirror path
# (one target, the same traffic), side by side: DogStatsD datagrams as `udptee-loadgen send
# --payload dogstatsd --profile realistic --size 1432` makes them, at RATE datagrams/s for
# DURATION, interleaved RUNS times. The forwarder is pinned to FWD_CPU, the generator and sinks to
# GEN_CPU. CPU is the forwarder process's utime + stime (loopback sends run in its own context), so
# lines per core-second = lines received by the members / CPU seconds. Members are Python sinks
# that count lines; their admin ports answer `health: up`. Prints medians and ratios.
#
# `beside` is the mirror with the group beside it in one udptee: the mirror's lines and the receive
# worker's own CPU (its thread's utime + stime) against `mirror` alone say what a group costs the
# mirrors next to it beyond its own threads.
#
#   scripts/bench-group.sh
#   RUNS=5 RATE=4000 DURATION=5s scripts/bench-group.sh
#   FORWARDERS="mirror beside" scripts/bench-group.sh
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
RUNS=${RUNS:-3}
RATE=${RATE:-3000}
DURATION=${DURATION:-5s}
FWD_CPU=${FWD_CPU:-0}
GEN_CPU=${GEN_CPU:-1}
PROXY_JS=${PROXY_JS:-target/ci-tools/node_modules/statsd/proxy.js}
FORWARDERS=${FORWARDERS:-"group mirror proxyjs"}
[[ -f $PROXY_JS ]] || { echo "no $PROXY_JS: run .ci/packages.sh, or set PROXY_JS (skipping proxyjs)" >&2; FORWARDERS=${FORWARDERS//proxyjs/}; }

# 4 members: a UDP line counter and an admin port answering `health: up`, per member.
cat > "$tmp/member.py" <<'PY'
import os, socket, sys, threading
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
udp.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8 << 20)
udp.bind(("127.0.0.1", int(sys.argv[1])))
adm = socket.socket(); adm.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
adm.bind(("127.0.0.1", int(sys.argv[2]))); adm.listen(16)
def admin():
    while True:
        c, _ = adm.accept()
        try:
            c.recv(64); c.sendall(b"health: up\n")
        finally:
            c.close()
threading.Thread(target=admin, daemon=True).start()
lines = 0
out = sys.argv[3]
udp.settimeout(0.5)
while True:
    try:
        d = udp.recv(65536)
    except socket.timeout:
        open(out + ".new", "w").write(str(lines)); os.replace(out + ".new", out); continue
    lines += sum(1 for l in d.split(b"\n") if l)
PY
ports=(); admins=()
for i in 0 1 2 3 4; do
  ports+=("$(port)"); admins+=("$(port)")
  taskset -c "$GEN_CPU" python3 "$tmp/member.py" "${ports[i]}" "${admins[i]}" "$tmp/lines$i" &
done
# ports[4] is the mirror's receiver, not a member.
sleep 0.5

members=""
for i in 0 1 2 3; do members+="{ addr = \"127.0.0.1:${ports[i]}\", admin = \"127.0.0.1:${admins[i]}\" }, "; done
nodes=""
for i in 0 1 2 3; do nodes+="{host: '127.0.0.1', port: ${ports[i]}, adminport: ${admins[i]}}, "; done
total() { local s=0 v; for i in 0 1 2 3; do v=$(cat "$tmp/lines$i" 2>/dev/null || true); s=$((s + ${v:-0})); done; echo "$s"; }
mirrored() { local v; v=$(cat "$tmp/lines4" 2>/dev/null || true); echo "${v:-0}"; }
cpu_s() { awk '{ printf "%.3f", ($14 + $15) / '"$(getconf CLK_TCK)"' }' "/proc/$1/stat"; }
# The receive workers' own CPU (udptee's threads named udptee-rx*), 0 for another forwarder.
rx_s() {
  local t s=0
  for t in /proc/"$1"/task/*; do
    [[ $(cat "$t/comm" 2>/dev/null) == udptee-rx* ]] || continue
    s=$(awk -v s="$s" '{ printf "%.3f", s + ($14 + $15) / '"$(getconf CLK_TCK)"' }' "$t/stat")
  done
  echo "$s"
}

echo "forwarder run lines cpu_s lines_per_core_s" > "$tmp/rows"
for run in $(seq 1 "$RUNS"); do
  for fwd in $FORWARDERS; do
    listen=$(port)
    case $fwd in
      group)
        printf 'listen = "127.0.0.1:%s"\nadmin = "off"\nstats-interval = "0s"\n[[target]]\nname = "cluster"\nmembers = [%s]\n' "$listen" "$members" > "$tmp/g.toml"
        taskset -c "$FWD_CPU" "$T/udptee" --config "$tmp/g.toml" 2> "$tmp/log" & ;;
      mirror)
        taskset -c "$FWD_CPU" "$T/udptee" --listen "127.0.0.1:$listen" --to "127.0.0.1:${ports[4]}" --admin off --stats-interval 0 2> "$tmp/log" & ;;
      beside)
        printf 'listen = "127.0.0.1:%s"\nadmin = "off"\nstats-interval = "0s"\n[[target]]\nname = "mirror"\naddr = "127.0.0.1:%s"\n[[target]]\nname = "cluster"\nmembers = [%s]\n' "$listen" "${ports[4]}" "$members" > "$tmp/b.toml"
        taskset -c "$FWD_CPU" "$T/udptee" --config "$tmp/b.toml" 2> "$tmp/log" & ;;
      proxyjs)
        printf '{nodes: [%s], address: "127.0.0.1", port: %s, mgmt_address: "127.0.0.1", mgmt_port: %s, forkCount: 0, checkInterval: 10000}\n' "$nodes" "$listen" "$(port)" > "$tmp/p.js"
        taskset -c "$FWD_CPU" node "$PROXY_JS" "$tmp/p.js" > /dev/null 2>&1 & ;;
    esac
    pid=$!
    sleep 1.5
    before=$(total); m0=$(mirrored); c0=$(cpu_s "$pid"); r0=$(rx_s "$pid")
    taskset -c "$GEN_CPU" "$T/udptee-loadgen" send --to "127.0.0.1:$listen" --payload dogstatsd --profile realistic \
      --size 1432 --rate "$RATE" --duration "$DURATION" > /dev/null
    sleep 1.5
    c1=$(cpu_s "$pid"); r1=$(rx_s "$pid"); after=$(total); m1=$(mirrored)
    kill -INT "$pid"; wait "$pid" 2>/dev/null || true
    lines=$((after - before))
    # The mirror's own line count (mirror, beside) stands for the lines of those runs.
    [[ $fwd == mirror ]] && lines=$((m1 - m0))
    [[ $fwd == mirror || $fwd == beside ]] && echo "$fwd $run $((m1 - m0)) $(awk -v a="$r0" -v b="$r1" 'BEGIN { printf "%.3f", b - a }')" >> "$tmp/mirrors"
    echo "$fwd $run $lines $(awk -v a="$c0" -v b="$c1" 'BEGIN { printf "%.3f", b - a }') $(awk -v l="$lines" -v a="$c0" -v b="$c1" 'BEGIN { d = b - a; if (d <= 0) d = 0.001; printf "%.0f", l / d }')" >> "$tmp/rows"
    echo "run $run/$RUNS: $fwd: $lines lines" >&2
  done
done
python3 - "$tmp/rows" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1]).read().splitlines()[1:]]
by = {}
for f, _, lines, cpu, lpcs in rows:
    by.setdefault(f, []).append((int(lines), float(cpu), float(lpcs)))
print(f"{'forwarder':>10} {'runs':>4} {'lines med':>10} {'cpu s med':>9} {'lines/core-s med':>17} {'vs proxyjs':>10}")
base = statistics.median(r[2] for r in by["proxyjs"]) if "proxyjs" in by else None
for f, rs in by.items():
    m = statistics.median(r[2] for r in rs)
    ratio = f"{m / base:.1f}x" if base else "-"
    print(f"{f:>10} {len(rs):>4} {statistics.median(r[0] for r in rs):>10.0f} {statistics.median(r[1] for r in rs):>9.3f} {m:>17.0f} {ratio:>10}")
PY
if [[ -s $tmp/mirrors ]]; then
  python3 - "$tmp/mirrors" <<'PY'
import statistics, sys
by = {}
for line in open(sys.argv[1]):
    f, _, lines, rx = line.split()
    by.setdefault(f, []).append((int(lines), float(rx)))
print()
print("the mirror, alone and with the group beside it:")
print(f"{'forwarder':>10} {'mirror lines med':>16} {'workers cpu s med':>17} {'ratio':>6}")
base = statistics.median(r[1] for r in by["mirror"]) if "mirror" in by else None
for f, rs in by.items():
    m = statistics.median(r[1] for r in rs)
    ratio = f"{m / base:.2f}" if base else "-"
    print(f"{f:>10} {statistics.median(r[0] for r in rs):>16.0f} {m:>17.3f} {ratio:>6}")
PY
fi
echo "command: RUNS=$RUNS RATE=$RATE DURATION=$DURATION FWD_CPU=$FWD_CPU GEN_CPU=$GEN_CPU FORWARDERS='$FORWARDERS' $0"
