"""One self-contained HTML page (inline SVG, no scripts, no external files) from a load-test
JSON document: a summary table with the verdicts, then per scenario the latency percentiles,
throughput, backlog, CPU and memory over time, with the plan's thresholds drawn."""
import html

# series colours; red and dark yellow are kept for the threshold lines
PALETTE = ["#1f77b4", "#ff7f0e", "#9467bd", "#2ca02c", "#8c564b"]
STEPS = [1, 2, 3, 5, 10, 15, 20, 30, 60, 120, 300, 600, 1200]


def nice_max(v):
    """A round axis maximum at or above v."""
    if v <= 0:
        return 1.0
    mag = 10 ** len(str(int(v))) / 10 if v >= 1 else 10 ** -len(f"{v:.10f}".split(".")[1].lstrip("0"))
    for m in (1, 2, 2.5, 5, 10):
        if v <= m * mag:
            return m * mag
    return v


def svg_chart(title, series, unit, thresholds=(), width=560, height=245, ymin_top=0):
    """series: [(label, [(x, y), ...])] (x < 0, before the start, is left out); thresholds:
    [(label, y, color)] drawn dashed; ymin_top: a percentage axis stops there when it can."""
    series = [(label, [(x, y) for x, y in s if x >= 0]) for label, s in series]
    pts = [p for _, s in series for p in s if p[1] is not None]
    left, right, top, bottom = 58, 12, 40, 34  # the legend sits between title and plot
    pw, ph = width - left - right, height - top - bottom
    xdata = max([p[0] for p in pts] + [1.0])
    xstep = next((st for st in STEPS if xdata / st <= 8), STEPS[-1])
    xticks = int(-(-xdata // xstep))
    xmax = xticks * xstep
    # the scale follows the data and the lowest threshold; higher ones are named at the top
    ymax = nice_max(max([p[1] * 1.1 for p in pts] + [min((t[1] for t in thresholds), default=0) * 1.15, 0]))
    if ymin_top and all(p[1] <= ymin_top for p in pts):
        ymax = ymin_top
    X = lambda x: left + pw * x / xmax  # noqa: E731
    Y = lambda y: top + ph * (1 - y / ymax)  # noqa: E731
    o = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" width="{width}" height="{height}" '
         f'font-family="sans-serif" font-size="11" role="img"><title>{html.escape(title)}</title>',
         f'<text x="{left}" y="15" font-size="13" font-weight="bold">{html.escape(title)}</text>']
    for i in range(6):
        yv = ymax * i / 5
        o.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(yv):.1f}" y2="{Y(yv):.1f}" stroke="#e4e4e4"/>'
                 f'<text x="{left - 5}" y="{Y(yv) + 4:.1f}" text-anchor="end">{yv:g}</text>')
    for i in range(xticks + 1):
        xv = i * xstep
        o.append(f'<text x="{X(xv):.1f}" y="{top + ph + 14}" text-anchor="middle">{xv:g}</text>')
    o.append(f'<text x="{left + pw / 2}" y="{height - 3}" text-anchor="middle" fill="#555">seconds since start</text>')
    o.append(f'<text x="12" y="{top + ph / 2}" transform="rotate(-90 12 {top + ph / 2})" text-anchor="middle" '
             f'fill="#555">{html.escape(unit)}</text>')
    o.append(f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="none" stroke="#888"/>')
    for k, (label, yv, color) in enumerate(thresholds):
        anchor, tx = ("end", left + pw - 4) if k % 2 == 0 else ("start", left + 4)
        if yv > ymax:
            o.append(f'<text x="{left + pw - 4}" y="{top + 12}" text-anchor="end" fill="{color}">'
                     f'{html.escape(label)} (above the scale)</text>')
            continue
        o.append(f'<line x1="{left}" x2="{left + pw}" y1="{Y(yv):.1f}" y2="{Y(yv):.1f}" stroke="{color}" '
                 f'stroke-dasharray="6 4" stroke-width="1.5"/>'
                 f'<text x="{tx}" y="{Y(yv) + (13 if Y(yv) - top < 24 else -4):.1f}" text-anchor="{anchor}" '
                 f'fill="{color}">{html.escape(label)}</text>')
    lx = left
    for k, (label, s) in enumerate(series):
        color = PALETTE[k % len(PALETTE)]
        good = [(x, y) for x, y in s if y is not None]
        if len(good) == 1:
            o.append(f'<circle cx="{X(good[0][0]):.1f}" cy="{Y(good[0][1]):.1f}" r="3" fill="{color}"/>')
        elif good:
            pts_s = " ".join(f"{X(x):.1f},{Y(y):.1f}" for x, y in good)
            o.append(f'<polyline fill="none" stroke="{color}" stroke-width="2" points="{pts_s}"/>')
        o.append(f'<rect x="{lx}" y="{top - 15}" width="10" height="10" fill="{color}"/>'
                 f'<text x="{lx + 14}" y="{top - 6}">{html.escape(label)}</text>')
        lx += 22 + 7 * len(label)
    o.append("</svg>")
    return "".join(o)


def fmt_ms(v):
    return "–" if v is None else f"{v * 1000:.0f} ms"


def fmt(v, spec=".1f", suffix=""):
    return "–" if v is None else f"{v:{spec}}{suffix}"


def summary_table(doc):
    cols = ["scenario", "offered /s", "inserted /s", "delivered /s", "fell behind", "p50", "p95", "p99", "max",
            "commit→sent_at p95", "error rate", "backlog max", "CPU max", "RSS max", "Kafka lag max", "verdict"]
    rows = []
    for r in doc["scenarios"]:
        lat = r["latency_commit_to_250_s"] or r["latency_commit_to_sent_at_s"]
        colour = {"PASS": "#1a7f37", "WARN": "#9a6700", "FAIL": "#cf222e"}[r["verdict"]]
        verdict = r["verdict"] + ("" if r["sla_applies"] else " (informational)")
        rows.append([r["scenario"], f"{r['offered_rate']}", fmt(r["achieved_insert_rate"]), fmt(r["delivered_rate"]),
                     f"{r['fell_behind']} (max {r['max_behind_s'] * 1000:.0f} ms)",
                     fmt_ms(lat["p50"]), fmt_ms(lat["p95"]), fmt_ms(lat["p99"]), fmt_ms(lat["max"]),
                     fmt_ms(r["latency_commit_to_sent_at_s"]["p95"]), f"{r['error_rate'] * 100:.3f} %",
                     str(r["backlog_max"]), fmt(r["cpu_pct_max"], ".0f", " %"), fmt(r["rss_mb_max"], ".1f", " MiB"),
                     fmt(r["kafka_lag_max"], ".0f"), f'<b style="color:{colour}">{html.escape(verdict)}</b>'])
    head = "".join(f"<th>{html.escape(c)}</th>" for c in cols)
    body = "".join("<tr>" + "".join(f"<td>{v if i == len(cols) - 1 else html.escape(v)}</td>" for i, v in enumerate(r))
                   + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def scenario_section(r, sla):
    w, tl = r["windows"], r["timeline"]
    basis = r["latency_basis"]
    lat = svg_chart(f"Latency {basis} by commit time", [
        ("p50", [(x["t"], x["p50"] * 1000) for x in w]),
        ("p95", [(x["t"], x["p95"] * 1000) for x in w]),
        ("p99", [(x["t"], x["p99"] * 1000) for x in w])], "ms",
        [("target p95 200 ms", sla["p95_target_s"] * 1000, "#9a6700"),
         ("alert p95 500 ms", sla["p95_alert_s"] * 1000, "#cf222e")])
    thr = svg_chart("Throughput", [
        ("committed /s", [(e["t"], e.get("offered_per_s")) for e in tl]),
        ("delivered /s", [(e["t"], e.get("delivered_per_s")) for e in tl])], "messages / s",
        [(f"offered {r['offered_rate']}/s", r["offered_rate"], "#888")])
    back = svg_chart("Backlog (pending + sending)", [("rows", [(e["t"], e["backlog"]) for e in tl])], "rows")
    cpu = svg_chart("CPU (% of one core; machine: % of all cores)", [
        ("outboxd", [(e["t"], e.get("cpu_pct")) for e in tl]),
        ("relay", [(e["t"], e.get("relay_cpu_pct")) for e in tl]),
        ("load generator", [(e["t"], e.get("driver_cpu_pct")) for e in tl]),
        ("machine busy", [(e["t"], e.get("host_busy_pct")) for e in tl])], "%",
        [("outboxd alert 85 %", 85, "#cf222e")], ymin_top=100)
    rss = svg_chart("outboxd memory", [("RSS MiB (sum)", [(e["t"], e.get("rss_mb")) for e in tl])], "MiB")
    charts = [lat, thr, back, cpu, rss]
    if r["kafka_lag_max"] is not None:
        charts.append(svg_chart("Kafka mirror lag", [("events", [(e["t"], e.get("kafka_lag")) for e in tl])],
                                "events", [("alert 10000", 10000, "#cf222e")]))
    errs = ""
    if r["insert_error_examples"]:
        errs = "<p>Insert errors, e.g.: " + "; ".join(html.escape(e) for e in r["insert_error_examples"]) + "</p>"
    return (f"<h2>{html.escape(r['scenario'])}: {r['offered_rate']} msg/s for {r['duration_s']:g} s — "
            f"{html.escape(r['verdict'])}</h2>"
            f"<p>{r['offered']} rows offered by {r['sessions']} producer sessions; states after the drain "
            f"({r['drain_s']:.1f} s): {html.escape(', '.join(f'{k} {v}' for k, v in sorted(r['states'].items())))}.</p>"
            + errs + '<div class="charts">' + "".join(f"<div>{ch}</div>" for ch in charts) + "</div>")


def html_report(doc):
    sla = doc["sla"]
    verdict = "PASS" if doc["passed"] else "FAIL"
    cfg = (f"environment {doc['env']} ({doc['stack']} stack), scale {doc['scale']:g}, {doc['replicas']} replica(s), "
           f"relay per-reply delay {doc['relay_delay_ms']:g} ms, SMTP pool {doc['smtp_pool_size']}, "
           f"Kafka mirror {'on' if doc['mirror'] else 'off'}")
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>outboxd load test</title><style>"
            "body{font-family:sans-serif;margin:24px;color:#222}table{border-collapse:collapse;font-size:13px}"
            "td,th{border:1px solid #bbb;padding:3px 7px;text-align:right}th{background:#f2f2f2}"
            "td:first-child{text-align:left}.charts{display:flex;flex-wrap:wrap;gap:10px}"
            ".charts div{border:1px solid #ddd}</style></head><body>"
            f"<h1>outboxd load test — {verdict}</h1>"
            f"<p>{html.escape(doc['generated_at'])}: {html.escape(cfg)}. SLA: p95 commit → SMTP 250 under "
            f"{sla['p95_target_s'] * 1000:.0f} ms (target), alert above {sla['p95_alert_s'] * 1000:.0f} ms; error rate "
            f"(insert errors + failed + dead + unfinished, over offered) under {sla['max_error_rate'] * 100:g} %. "
            "Stress is informational for latency (it looks for the limit); its errors count.</p>"
            + summary_table(doc) + "".join(scenario_section(r, sla) for r in doc["scenarios"]) + "</body></html>")
