#!/usr/bin/env python3
"""Summarise interleaved `udptee-loadgen bench` runs: medians per (forwarder, rate) and ratios.

Usage: summarize.py OUT_DIR [BASELINE]
OUT_DIR holds one sub-directory per run, named NAME-RUN (e.g. udptee-1, relay-2), each with bench.json.
Prints, per rate: median CPU us/datagram, median and max worst-target loss %, median RSS, p99 latency,
whether the generator reached the rate in every run, and each forwarder's CPU ratio to BASELINE.
Then the highest offered rate that was loss-free in every run, per forwarder. With PAIRS set
(`A:B,C:D`), also each A's median CPU per datagram over B's, per rate.
"""
import json, os, statistics, sys
from collections import defaultdict

out = sys.argv[1]
baseline = sys.argv[2] if len(sys.argv) > 2 else None
rows = defaultdict(list)  # (name, rate) -> [row]
runs = defaultdict(int)
for d in sorted(os.listdir(out)):
    path = os.path.join(out, d, "bench.json")
    if not os.path.isfile(path):
        continue
    name = d.rsplit("-", 1)[0]
    runs[name] += 1
    for r in json.load(open(path))["rows"]:
        rows[(name, r["offered_rate"])].append(r)

def rate_key(rate):
    return float("inf") if rate is None else rate

def label(rate):
    return "max" if rate is None else f"{rate/1000:.0f}k"

names = sorted(runs)
rates = sorted({k[1] for k in rows}, key=rate_key)
med = lambda xs: statistics.median(xs) if xs else float("nan")
print(f"runs per forwarder: {dict(runs)}")
print(f"{'forwarder':>10} {'rate':>6} {'sent/s':>9} {'cpu us/dg':>10} {'ratio':>6} {'loss% med':>9} {'loss% max':>9} "
      f"{'rss MiB':>8} {'p99 us':>8} {'gen ok':>6} {'sink drops':>10}")
for rate in rates:
    base = med([r["cpu_us_per_datagram"] for r in rows.get((baseline, rate), [])]) if baseline else None
    for name in names:
        rs = rows.get((name, rate), [])
        if not rs:
            continue
        cpu = med([r["cpu_us_per_datagram"] for r in rs])
        loss = [max(r["loss_pct"]) for r in rs]
        ratio = f"{cpu / base:.2f}" if base else "-"
        print(f"{name:>10} {label(rate):>6} {med([r['sent_rate'] for r in rs]):>9.0f} {cpu:>10.2f} {ratio:>6} "
              f"{med(loss):>9.3f} {max(loss):>9.3f} {med([r['rss_kib'] for r in rs]) / 1024:>8.1f} "
              f"{med([r['latency_us']['p99'] for r in rs]):>8.0f} {str(all(r['rate_reached'] for r in rs)):>6} "
              f"{sum(r['sink_kernel_drops'] for r in rs):>10}")
print()
for name in names:
    free = [rate for rate in rates if rows.get((name, rate)) and all(max(r["loss_pct"]) == 0 for r in rows[(name, rate)])]
    best = max(free, key=rate_key) if free else None
    print(f"{name}: highest offered rate loss-free in every run: {label(best) if free else 'none'}")

pairs = [p.split(":", 1) for p in os.environ.get("PAIRS", "").split(",") if ":" in p]
if pairs:
    print()
    for rate in rates:
        for a, b in pairs:
            ca = med([r["cpu_us_per_datagram"] for r in rows.get((a, rate), [])])
            cb = med([r["cpu_us_per_datagram"] for r in rows.get((b, rate), [])])
            print(f"{label(rate):>6} {a} against {b}: {ca:.2f} / {cb:.2f} us/dg = {ca / cb:.3f}x")
