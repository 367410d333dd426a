#!/usr/bin/env bash
# The receive worker thread's CPU per datagram (udptee-rx0, from its schedstat): two plain targets
# against one plain and one with line settings, 50k/s of 512-byte realistic DogStatsD, udptee on CPU 0,
# generator and sinks on CPU 1, 3 interleaved runs. The plain target waits only behind this thread.
#
#   scripts/bench-rx-thread.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh
a=$(port); b=$(port)
for p in $a $b; do taskset -c 1 "$T/udptee-loadgen" sink --listen 127.0.0.1:$p --duration 200s >/dev/null 2>&1 & done
for run in 1 2 3; do
  for mode in plain filtered; do
    l=$(port)
    {
      echo "listen = \"127.0.0.1:$l\""; echo 'admin = "off"'; echo 'stats-interval = "0s"'
      echo '[[target]]'; echo "addr = \"127.0.0.1:$a\""
      echo '[[target]]'; echo "addr = \"127.0.0.1:$b\""
      [[ $mode == filtered ]] && echo 'include = ["ulg.*", "api.*", "db.*"]'
    } > "$tmp/$mode.toml"
    taskset -c 0 "$T/udptee" --config "$tmp/$mode.toml" 2>/dev/null &
    pid=$!; sleep 0.5
    rx=$(grep -l "^udptee-rx0$" /proc/$pid/task/*/comm | sed "s,/comm,,")
    c0=$(awk '{print $1}' $rx/schedstat)
    taskset -c 1 "$T/udptee-loadgen" send --to 127.0.0.1:$l --rate 50k --duration 5s --size 512 --payload dogstatsd --profile realistic > "$tmp/s.json"
    sleep 0.3
    c1=$(awk '{print $1}' $rx/schedstat)
    n=$(python3 -c "import json; print(json.load(open('$tmp/s.json'))['sent'])")

    echo "$run $mode rx0 $(python3 -c "print(f'{($c1-$c0)/$n/1000:.2f}')") us/dg"
    kill -INT $pid; wait $pid || true
  done
done
