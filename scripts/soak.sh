#!/usr/bin/env bash
# Soak: udptee at a steady rate for a long time, fan-out 2 on loopback, mixed sizes (1-1400 B,
# realistic statsd lines), with a reload every 5 minutes that adds and removes a third target.
# Every 10 s it samples udptee's resident memory (VmRSS), its CPU (all threads, nanoseconds from
# /proc/PID/task/*/schedstat) and its counters from /metrics, then prints the samples and a verdict:
# RSS flat (no growth beyond the largest target set, within 1 MiB) and every datagram accounted
# for, the generator's count beside udptee's.
#
#   scripts/soak.sh                       # 30 minutes at 20k/s
#   DURATION=5m RATE=50k scripts/soak.sh
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${DURATION:-30m}
RATE=${RATE:-20k}
CPU_FWD=${CPU_FWD:-0}
CPU_GEN=${CPU_GEN:-1}
# shellcheck source=scripts/lib.sh
. scripts/lib.sh
secs=$(python3 -c "import re,sys; m=re.fullmatch(r'(\d+)(s|m|h)','$DURATION'); print(int(m[1])*{'s':1,'m':60,'h':3600}[m[2]])")

listen=$(port); a=$(port); b=$(port); c=$(port)
admin=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
for p in $a $b $c; do
  taskset -c "$CPU_GEN" "$T/udptee-loadgen" sink --listen "127.0.0.1:$p" --duration $((secs + 30))s \
    > "$tmp/sink-$p.json" 2>/dev/null &
done
write_config() { # $1: with the third target or not
  {
    echo "listen = \"127.0.0.1:$listen\""
    echo "admin = \"127.0.0.1:$admin\""
    echo "stats-interval = \"60s\""
    echo "[[target]]"; echo "name = \"old\""; echo "addr = \"127.0.0.1:$a\""
    echo "[[target]]"; echo "name = \"new\""; echo "addr = \"127.0.0.1:$b\""
    if [[ $1 == yes ]]; then echo "[[target]]"; echo "name = \"shadow\""; echo "addr = \"127.0.0.1:$c\""; fi
  } > "$tmp/udptee.toml"
}
write_config no
taskset -c "$CPU_FWD" "$T/udptee" --config "$tmp/udptee.toml" 2> "$tmp/log" &
pid=$!
sleep 1
taskset -c "$CPU_GEN" "$T/udptee-loadgen" send --to "127.0.0.1:$listen" --rate "$RATE" \
  --duration "${secs}s" --size 1-1400 --profile realistic > "$tmp/send.json" 2>/dev/null &
gen=$!

cpu_ns() { cat /proc/"$pid"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }'; }
rss_kib() { kib VmRSS "$pid"; }
metric() { curl -s "127.0.0.1:$admin/metrics" | awk -v m="$1" '$1==m {print $2}'; }

printf '%-7s %-9s %-12s %-12s %-10s %-10s\n' t_s rss_KiB cpu_us/dgram received fwd_old fwd_new
start=$(date +%s); last_cpu=$(cpu_ns); last_rx=0; third=no
: > "$tmp/samples"
while kill -0 "$gen" 2>/dev/null; do
  sleep 10
  now=$(( $(date +%s) - start ))
  if (( now % 300 < 10 && now >= 300 )); then
    third=$([[ $third == yes ]] && echo no || echo yes); write_config "$third"; kill -HUP "$pid"
  fi
  cpu=$(cpu_ns); rx=$(metric udptee_received_datagrams_total)
  d_rx=$(( rx - last_rx ))
  per=$(awk -v c=$((cpu - last_cpu)) -v n="$d_rx" 'BEGIN { if (n > 0) printf "%.2f", c / n / 1000; else print "-" }')
  rss=$(rss_kib)
  printf '%-7s %-9s %-12s %-12s %-10s %-10s\n' "$now" "$rss" "$per" "$rx" \
    "$(metric 'udptee_target_forwarded_datagrams_total{target="old"}')" \
    "$(metric 'udptee_target_forwarded_datagrams_total{target="new"}')"
  echo "$now $rss $per" >> "$tmp/samples"
  last_cpu=$cpu; last_rx=$rx
done
kill -TERM "$pid"; wait "$pid" || true
echo
python3 -c "import json; r = json.load(open('$tmp/send.json')); print(f\"generator: sent {r['sent']} datagrams ({r['errors']} send errors) at {r['achieved_rate']:.0f}/s\")"
grep -E 'final:' "$tmp/log" | sed 's/^.*final: /final: /'
echo
# The third target's 4 MiB ring comes and goes with the reloads; what must not happen is growth
# beyond the largest set. Growth = the largest sample after the first 10 minutes (both sets seen)
# minus the largest before; for shorter runs, from the first minute to the first reload (5 min).
awk '{ if ($1 < 600) { if ($2 > early) early = $2 } else { n++; if ($2 > late) late = $2 }
       if ($1 >= 60 && $1 < 300) { if (first == "") first = $2; last = $2 } }
     END {
       if (n > 0) { g = late - early; printf "RSS: largest %d KiB in the first 10 min, %d KiB after (growth %d KiB over %d samples)\n", early, late, g, n }
       else { g = last - first; printf "RSS: %d KiB after the first minute, %d KiB before the first reload (growth %d KiB)\n", first, last, g }
       print (g <= 1024 ? "RSS: flat" : "RSS: GROWING");
     }' "$tmp/samples"
awk '$3 != "-" { print $3 }' "$tmp/samples" | sort -n | awk '{ v[NR] = $1 } END { printf "CPU per datagram: median %s us, min %s, max %s over %d samples\n", v[int((NR + 1) / 2)], v[1], v[NR], NR }'
if grep -q 'unaccounted [1-9]' "$tmp/log"; then echo "accounting: BROKEN"; else echo "accounting: every datagram forwarded or dropped by reason"; fi
