#!/usr/bin/env python3
"""Draws hit latency against working-set size (target/working_set.csv, written by
`cargo bench -p cache-core --bench working_set`) as an SVG line chart: log-scale keys on x,
log-scale nanoseconds per hit on y, one line per cache. Standard library only.

Usage: scripts/plot_working_set.py [in.csv] [out.svg]
"""
import csv
import math
import sys

src = sys.argv[1] if len(sys.argv) > 1 else "target/working_set.csv"
dst = sys.argv[2] if len(sys.argv) > 2 else "docs/working_set.svg"

series = {}
with open(src) as f:
    for row in csv.DictReader(f):
        series.setdefault(row["cache"], []).append((int(row["keys"]), float(row["ns_per_hit"])))

W, H = 760, 440
L, R, T, B = 70, 170, 40, 60
xs = [k for pts in series.values() for k, _ in pts]
ys = [v for pts in series.values() for _, v in pts]
x0, x1 = math.log10(min(xs)), math.log10(max(xs))
y0 = math.floor(math.log10(min(ys)))
y1 = math.ceil(math.log10(max(ys)))


def px(k):
    return L + (math.log10(k) - x0) / (x1 - x0) * (W - L - R)


def py(v):
    return H - B - (math.log10(v) - y0) / (y1 - y0) * (H - T - B)


colors = {"cache-core": "#d62728", "cached": "#1f77b4", "quick_cache": "#2ca02c", "moka": "#9467bd"}
out = [
    f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif" font-size="12">',
    f'<rect width="{W}" height="{H}" fill="white"/>',
    f'<text x="{W / 2 - 60}" y="22" font-size="14">Hit latency against working-set size (u64 -&gt; u64)</text>',
]
for e in range(y0, y1 + 1):
    for m in (1, 2, 5):
        v = m * 10 ** e
        if v < 10 ** y0 or v > 10 ** y1:
            continue
        y = py(v)
        out.append(f'<line x1="{L}" y1="{y:.1f}" x2="{W - R}" y2="{y:.1f}" stroke="#ddd"/>')
        out.append(f'<text x="{L - 8}" y="{y + 4:.1f}" text-anchor="end">{v:g}</text>')
k = 1
while k <= max(xs):
    x = px(k)
    out.append(f'<line x1="{x:.1f}" y1="{T}" x2="{x:.1f}" y2="{H - B}" stroke="#eee"/>')
    label = f"{k // 1024}K" if k >= 1024 and k < 1 << 20 else ("1M" if k == 1 << 20 else str(k))
    out.append(f'<text x="{x:.1f}" y="{H - B + 16}" text-anchor="middle">{label}</text>')
    k *= 4
out.append(f'<text x="{(L + W - R) / 2:.0f}" y="{H - 18}" text-anchor="middle">cached keys, hit in random order</text>')
out.append(f'<text x="18" y="{(T + H - B) / 2:.0f}" transform="rotate(-90 18 {(T + H - B) / 2:.0f})" text-anchor="middle">ns per hit (log)</text>')
out.append(f'<rect x="{L}" y="{T}" width="{W - L - R}" height="{H - T - B}" fill="none" stroke="#888"/>')
for i, (name, pts) in enumerate(series.items()):
    c = colors.get(name, "#333")
    d = " ".join(f"{px(k):.1f},{py(v):.1f}" for k, v in pts)
    out.append(f'<polyline points="{d}" fill="none" stroke="{c}" stroke-width="2"/>')
    for k, v in pts:
        out.append(f'<circle cx="{px(k):.1f}" cy="{py(v):.1f}" r="2.5" fill="{c}"/>')
    ly = T + 16 + i * 20
    out.append(f'<line x1="{W - R + 14}" y1="{ly - 4}" x2="{W - R + 38}" y2="{ly - 4}" stroke="{c}" stroke-width="2"/>')
    out.append(f'<text x="{W - R + 44}" y="{ly}">{name}</text>')
out.append("</svg>")
with open(dst, "w") as f:
    f.write("\n".join(out) + "\n")
print(f"wrote {dst}")
