"""Summarises benches/load/run.sh results: medians, spread and ratios.

Input: a TSV of `target test metric value` rows, one per repeat.
"""
import statistics
import sys
from collections import defaultdict

values = defaultdict(list)
with open(sys.argv[1]) as f:
    for line in f:
        target, test, metric, value = line.rstrip("\n").split("\t")
        if value:
            values[(target, test, metric)].append(float(value))


def median(target, test, metric):
    v = values.get((target, test, metric))
    return statistics.median(v) if v else None


def cell(target, test, metric, digits=1):
    v = values.get((target, test, metric))
    if not v:
        return "-"
    m = statistics.median(v)
    text = f"{m:,.{digits}f}"
    if len(v) > 1 and m:
        text += f" ±{(max(v) - min(v)) / 2 / m * 100:.0f}%"
    return text


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "-"
    return f"{a / b:.2f}"


def row(label, cells, width=22):
    print(f"{label:<34}" + "".join(f"{c:>{width}}" for c in cells))


print()
print("Medians of the repeats; ±: half the range, in % of the median.")
print()
row("", ["direct", "nginx", "sluice", "sluice/nginx", "sluice/direct"])
for title, test, metric, digits in [
        ("max req/s (wrk)", "max", "rps", 0),
    ("  answers not 2xx, socket errors", "max", "errors", 0),
    ("  proxy CPU µs/req at max", "max", "cpu_us_per_req", 2),
    ("fixed rate: p50 µs", "fixed", "p50_us", 0),
    ("  p99 µs", "fixed", "p99_us", 0),
    ("  p99.9 µs", "fixed", "p999_us", 0),
    ("  proxy CPU µs/req", "fixed", "cpu_us_per_req", 2),
    ("  failed requests", "fixed", "errors", 0),
        ("h2c req/s (h2load), pod over h1", "h2c", "rps", 0),
    ("  answers not 2xx, failed streams", "h2c", "errors", 0),
]:
    s = median("sluice", test, metric)
    row(
        title,
        [
            cell("direct", test, metric, digits),
            cell("nginx", test, metric, digits),
            cell("sluice", test, metric, digits),
            ratio(s, median("nginx", test, metric)),
            ratio(s, median("direct", test, metric)),
        ],
    )

row(
    "h2c req/s, pod over h2c",
    [
        cell("direct", "h2c", "rps", 0),
        "",
        cell("sluice-h2c", "h2c", "rps", 0),
        "",
        ratio(median("sluice-h2c", "h2c", "rps"), median("direct", "h2c", "rps")),
    ],
)
row("  answers not 2xx, failed streams", ["", "", cell("sluice-h2c", "h2c", "errors", 0), "", ""])

print()
row("HTTPS (TLS 1.3, keep-alive)", ["nginx", "sluice", "sluice/nginx"])
for title, metric, digits in [("max req/s", "rps", 0), ("  proxy CPU µs/req", "cpu_us_per_req", 2)]:
    row(
        title,
        [
            cell("nginx-tls", "max", metric, digits),
            cell("sluice-tls", "max", metric, digits),
            ratio(median("sluice-tls", "max", metric), median("nginx-tls", "max", metric)),
        ],
    )

print()
row("HTTPS to the pod (h1 in, TLS 1.3 out)", ["direct", "nginx", "sluice", "sluice/nginx"])
for title, metric, digits in [
    ("max req/s", "rps", 0),
    ("  answers not 2xx, socket errors", "errors", 0),
    ("  proxy CPU µs/req", "cpu_us_per_req", 2),
]:
    row(
        title,
        [
            cell("direct-tls", "max", metric, digits) if metric != "cpu_us_per_req" else "-",
            cell("nginx-tlspod", "max", metric, digits),
            cell("sluice-tlspod", "max", metric, digits),
            ratio(median("sluice-tlspod", "max", metric), median("nginx-tlspod", "max", metric)),
        ],
    )

print()
row("request metrics", ["on", "off", "on/off"])
for title, test, metric, digits in [
    ("max req/s", "max", "rps", 0),
    ("  proxy CPU µs/req at max", "max", "cpu_us_per_req", 2),
    ("fixed rate: proxy CPU µs/req", "fixed", "cpu_us_per_req", 2),
]:
    row(
        title,
        [
            cell("sluice", test, metric, digits),
            cell("sluice-nometrics", test, metric, digits),
            ratio(median("sluice", test, metric), median("sluice-nometrics", test, metric)),
        ],
    )

print()
row("resident memory (MB)", ["nginx", "sluice"])
for title, test in [("idle", "idle"), ("after the load", "loaded")]:
    n, s = median("nginx", test, "rss_kb"), median("sluice", test, "rss_kb")
    row(title, [f"{n / 1024:.1f}" if n else "-", f"{s / 1024:.1f}" if s else "-"])

print()
row("swap storm (fixed rate)", ["calm", "storm", "storm/calm"])
row(
    "  p99 µs",
    [
        cell("calm", "storm", "p99_us", 0),
        cell("storm", "storm", "p99_us", 0),
        ratio(median("storm", "storm", "p99_us"), median("calm", "storm", "p99_us")),
    ],
)
row("  failed requests", [cell("calm", "storm", "errors", 0), cell("storm", "storm", "errors", 0), ""])
row("  requests", [cell("calm", "storm", "requests", 0), cell("storm", "storm", "requests", 0), ""])
row("  table swaps per second", ["", cell("storm", "storm", "swaps_per_s", 0), ""])

print()
print("scale: 10,000 Ingresses (20,000 routes) from a manifests directory")
routes = median("scale", "scale", "routes")
ready = median("scale", "scale", "ready_s")
build = median("scale", "scale", "build_s")
rss = median("scale", "scale", "rss_kb")
print(f"  routes {routes:,.0f}" if routes else "  routes -")
print(f"  start to ready (read, parse, build): {ready:.2f} s" if ready else "  ready -")
print(f"  table build: {build * 1000:.0f} ms" if build else "  build -")
print(f"  resident memory: {rss / 1024:.1f} MB" if rss else "  rss -")
