#!/usr/bin/python3
"""Turns volume_bench.py's CSV files into one self-contained HTML page of SVG charts (no
libraries): the busy day's size, dead tuples and rates over time per run, the latency rounds
and the replica scaling.

  /usr/bin/python3 tests/bench/plot_volume.py [DIR]   # DIR default tests/bench/out; writes DIR/volume.html
"""
import csv
import html
import os
import sys

COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def read(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return list(csv.DictReader(f))


def chart(title, series, xlabel, ylabel, w=640, h=300):
    """series: {name: [(x, y), ...]} -> an SVG line chart with axes and a legend."""
    pts = [p for s in series.values() for p in s]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y1 = max(p[1] for p in pts) or 1.0
    x1 = x1 if x1 > x0 else x0 + 1
    L, R, T, B = 60, 170, 30, 40
    sx = lambda x: L + (x - x0) / (x1 - x0) * (w - L - R)  # noqa: E731
    sy = lambda y: h - B - y / y1 * (h - T - B)  # noqa: E731
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="11">',
           f'<text x="{w / 2}" y="16" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
           f'<line x1="{L}" y1="{h - B}" x2="{w - R}" y2="{h - B}" stroke="#000"/>',
           f'<line x1="{L}" y1="{T}" x2="{L}" y2="{h - B}" stroke="#000"/>',
           f'<text x="{(L + w - R) / 2}" y="{h - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
           f'<text x="14" y="{(T + h - B) / 2}" transform="rotate(-90 14 {(T + h - B) / 2})" '
           f'text-anchor="middle">{html.escape(ylabel)}</text>']
    for i in range(5):
        yv = y1 * i / 4
        out.append(f'<text x="{L - 4}" y="{sy(yv) + 4}" text-anchor="end">{yv:.3g}</text>')
        out.append(f'<line x1="{L}" y1="{sy(yv)}" x2="{w - R}" y2="{sy(yv)}" stroke="#ddd"/>')
        xv = x0 + (x1 - x0) * i / 4
        out.append(f'<text x="{sx(xv)}" y="{h - B + 14}" text-anchor="middle">{xv:.3g}</text>')
    for k, (name, s) in enumerate(series.items()):
        c = COLORS[k % len(COLORS)]
        path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in sorted(s))
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.6" points="{path}"/>')
        out.append(f'<rect x="{w - R + 10}" y="{T + 14 * k}" width="10" height="10" fill="{c}"/>')
        out.append(f'<text x="{w - R + 24}" y="{T + 14 * k + 9}">{html.escape(name)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def table(rows, cols):
    if not rows:
        return ""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(r[c])}</td>" for c in cols) + "</tr>" for r in rows)
    return f"<table border=1 cellspacing=0 cellpadding=3><tr>{head}</tr>{body}</table>"


def main():
    d = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(os.path.abspath(__file__)), "out")
    parts = ["<html><head><meta charset='utf-8'><title>outboxd volume benchmarks</title></head><body>",
             "<h1>outboxd volume benchmarks</h1>"]
    day = read(os.path.join(d, "busyday.csv"))
    if day:
        parts.append("<h2>A busy day (time compressed)</h2>")
        for col, label in (("size_mb", "table + index MB"), ("dead_tuples", "dead tuples"),
                           ("produced_per_s", "messages produced / s"), ("sent_per_s", "messages sent / s"),
                           ("published_per_s", "events published / s")):
            series = {}
            for r in day:
                series.setdefault(r["run"], []).append((float(r["t"]), float(r[col])))
            parts.append(chart(label, series, "seconds", label))
    lat = read(os.path.join(d, "latency.csv"))
    if lat:
        parts.append("<h2>Latency rounds</h2>")
        for col, label in (("p50_250", "commit -> 250 p50 ms"), ("p99_250", "commit -> 250 p99 ms")):
            series = {}
            for r in lat:
                series.setdefault(f"{r['layout']} {r['rate']}/s", []).append((float(r["round"]), float(r[col])))
            parts.append(chart(label, series, "round", "ms"))
        parts.append(table(lat, list(lat[0].keys())))
    sc = read(os.path.join(d, "scaling.csv"))
    if sc:
        parts.append("<h2>Replica scaling</h2>")
        series = {}
        for r in sc:
            series.setdefault(f"relay {r['delay_ms']} ms, pool {r['pool']}", []).append(
                (float(r["replicas"]), float(r["drain_per_s"])))
        parts.append(chart("drain rate by replicas", series, "replicas", "messages / s"))
        parts.append(table(sc, list(sc[0].keys())))
    parts.append("</body></html>")
    out = os.path.join(d, "volume.html")
    with open(out, "w") as f:
        f.write("\n".join(parts))
    print(out)


if __name__ == "__main__":
    main()
