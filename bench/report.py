#!/usr/bin/env python3
"""Turns bench/run_all.sh's RESULTS.jsonl into docs/benchmarks.md and docs/benchmarks.png.

  python3 bench/report.py RESULTS.jsonl [--md docs/benchmarks.md] [--png docs/benchmarks.png]

Figures are medians over the rounds of the run (ranges where they matter). The chart is drawn
with matplotlib (Debian's python3-matplotlib; when the python3 running this script lacks it,
/usr/bin/python3 is tried), else with gnuplot; without either, only the Markdown is written.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OFFICIAL = ["rust", "go", "ts", "python"]
LUA_KEYS = ["lua", "luajit", "lua-sampled"]  # this client: Lua 5.4, LuaJIT, 1 in 100 acks read
SDK_NAMES = {"rust": "Rust", "go": "Go", "ts": "TypeScript", "python": "Python", "curl": "curl"}
WORKLOADS = [("producer", 128), ("producer", 1024), ("producer", 8192), ("session", 1024),
             ("append", 128)]
RSS_HEADROOM_MIB = 16


def sdk_row(workload):
    """The SDKs' workload a Lua-only read workload is compared with (the same records)."""
    return re.sub(r"^read_session_(batch|columns)$", "read_session", workload)


READ_WORKLOADS = [("read_session", 128), ("read_session", 8192), ("read_session_batch", 128),
                  ("read_session_batch", 8192), ("read_session_columns", 128),
                  ("read_session_columns", 8192), ("read_unary", 128)]
OPENRESTY_BEGIN = "<!-- openresty:begin"  # the section bench/openresty/run.py writes
OPENRESTY_END = "<!-- openresty:end -->"
# Hand-written analysis (profiles, what remains, scale): carried over at the end, as written.
ANALYSIS_BEGIN = "<!-- analysis:begin"
ANALYSIS_END = "<!-- analysis:end -->"


# ---------------------------------------------------------------- loading

def client_key(r):
    """One key per client variant: lua, luajit, lua-sampled, rust, go, ts, python, curl."""
    if r["sdk"] == "lua" and (r.get("latency_sample") or 1) > 1:
        return "lua-sampled"
    return r["sdk"]


def label(key, versions, sample=None):
    if key == "lua":
        return f"**Lua s2 {versions.get('lua', '')}**"
    if key == "luajit":
        return f"**Lua s2 {versions.get('lua', '')} (LuaJIT)**"
    if key == "lua-sampled":
        return f"Lua s2 {versions.get('lua', '')}, 1 in {sample or 100} acks read"
    if key == "curl":
        return f"curl {versions.get('curl', '')} (floor)".replace("curl curl", "curl")
    return f"{SDK_NAMES.get(key, key)} {versions.get(key, '')}"


def load(path):
    meta, runs, skipped, errors, perf = {}, [], {}, [], []
    for line in open(path):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        if r.get("meta"):
            meta = r
        elif r.get("perf"):
            perf.append(r)
        elif "skipped" in r:
            skipped[r["sdk"]] = r["skipped"]
        elif "error" in r:
            errors.append(r)
        else:
            runs.append(r)
    return meta, runs, skipped, errors, perf


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarise(runs):
    """(client, workload, size) -> medians and ranges over rounds."""
    groups = {}
    for r in runs:
        if r.get("tag"):
            continue
        groups.setdefault((client_key(r), r["workload"], r["record_size"]), []).append(r)
    out = {}
    for key, rs in groups.items():
        rps = [r["records_per_s"] for r in rs]
        out[key] = {
            "n": len(rs),
            "records": rs[0]["records"],
            "records_per_s": med(rps), "rps_min": min(rps), "rps_max": max(rps),
            "mib_per_s": med(r["mib_per_s"] for r in rs),
            "p50": med(r["ack_p50_ms"] for r in rs),
            "p99": med(r["ack_p99_ms"] for r in rs),
            "cpu_user": med(r["cpu_user_s"] for r in rs),
            "cpu_sys": med(r["cpu_sys_s"] for r in rs),
            "cpu_us": med(r.get("cpu_us_per_record") for r in rs),
            "cpu_us_min": min(r.get("cpu_us_per_record") or 0 for r in rs),
            "cpu_us_max": max(r.get("cpu_us_per_record") or 0 for r in rs),
            "rss": med(r["peak_rss_mb"] for r in rs),
            "sample": rs[0].get("latency_sample"),
        }
    return out


# ---------------------------------------------------------------- formatting

def f_int(v):
    return "–" if v is None else f"{v:,.0f}"


def f_num(v, nd=1):
    return "–" if v is None else f"{v:,.{nd}f}"


def f_ratio(v):
    return "–" if v is None else f"{v:.2f}×"


def size_name(n):
    return f"{n // 1024} KiB" if n >= 1024 and n % 1024 == 0 else f"{n} B"


def best(summ, workload, size, field, lowest=False):
    """(sdk, value) of the best official SDK for a field."""
    cands = [(k, summ[(k, workload, size)][field]) for k in OFFICIAL
             if (k, workload, size) in summ and summ[(k, workload, size)][field] is not None]
    if not cands:
        return None, None
    return (min if lowest else max)(cands, key=lambda kv: kv[1])


def ratio(a, b):
    return a / b if a is not None and b else None


# ---------------------------------------------------------------- the chart

def chart_data(summ, versions):
    groups = [(w, s) for w, s in WORKLOADS if w != "append"]
    clients = [k for k in LUA_KEYS + OFFICIAL
               if any((k, w, s) in summ for w, s in groups)]
    lat_clients = [k for k in ["lua"] + OFFICIAL + ["curl"] if (k, "append", 128) in summ]

    def lab(k):
        return label(k, versions, (summ.get((k, "producer", 128)) or {}).get("sample")).replace("**", "")

    return {
        "groups": [f"{w} {size_name(s)}" for w, s in groups],
        "clients": [lab(k) for k in clients],
        "keys": clients,
        "mib_per_s": [[(summ.get((k, w, s)) or {}).get("mib_per_s") for w, s in groups] for k in clients],
        "cpu_us": [[(summ.get((k, w, s)) or {}).get("cpu_us") for w, s in groups] for k in clients],
        "lat_clients": [lab(k) for k in lat_clients],
        "lat_keys": lat_clients,
        "lat_p50": [summ[(k, "append", 128)]["p50"] for k in lat_clients],
        "lat_p99": [summ[(k, "append", 128)]["p99"] for k in lat_clients],
    }


COLORS = {"lua": "#d62728", "luajit": "#ff7f0e", "lua-sampled": "#ff9896", "rust": "#1f77b4", "go": "#17becf",
          "ts": "#2ca02c", "python": "#9467bd", "curl": "#7f7f7f"}


def draw_matplotlib(data, png):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 5.2), gridspec_kw={"width_ratios": [4, 4, 2.4]})
    n_g, n_c = len(data["groups"]), len(data["clients"])
    width = 0.8 / max(n_c, 1)
    for ax, field, title, log in [
        (axes[0], "mib_per_s", "Throughput (MiB/s of record bodies, higher is better)", False),
        (axes[1], "cpu_us", "Client CPU per record (µs, user+sys, log scale, lower is better)", True),
    ]:
        for i, (name, key) in enumerate(zip(data["clients"], data["keys"])):
            xs = [g + (i - (n_c - 1) / 2) * width for g in range(n_g)]
            ys = [v if v is not None else 0 for v in data[field][i]]
            ax.bar(xs, ys, width, label=name, color=COLORS.get(key), edgecolor="black",
                   linewidth=0.4)
        ax.set_xticks(range(n_g))
        ax.set_xticklabels(data["groups"])
        ax.set_title(title, fontsize=10)
        if log:
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=len(labels), fontsize=9, frameon=False)
    ax = axes[2]
    xs = range(len(data["lat_clients"]))
    ax.bar(xs, data["lat_p50"], 0.6, color=[COLORS.get(k) for k in data["lat_keys"]],
           edgecolor="black", linewidth=0.4, label="p50")
    ax.scatter(xs, data["lat_p99"], marker="_", s=300, color="black", label="p99", zorder=3)
    ax.set_xticks(list(xs))
    ax.set_xticklabels([c.split(",")[0].replace(" (floor)", "") for c in data["lat_clients"]],
                       rotation=30, ha="right", fontsize=8)
    ax.set_yscale("log")
    ax.set_ylim(1, max([v for v in data["lat_p99"] + data["lat_p50"] if v] + [10]) * 1.5)
    ax.set_title("Single-record append latency (ms, log)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.suptitle("s2 Lua client vs the official S2 SDKs, s2-lite on the same 2 cores (a fresh one per round), "
                 "medians over rounds", fontsize=11)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    fig.savefig(png, dpi=110)


def draw_gnuplot(data, png):
    with tempfile.TemporaryDirectory() as tmp:
        dat = os.path.join(tmp, "d.dat")
        with open(dat, "w") as f:
            f.write("group " + " ".join(f'"{c}"' for c in data["clients"]) + "\n")
            for gi, g in enumerate(data["groups"]):
                f.write(f'"{g}" ' + " ".join(str(data["mib_per_s"][ci][gi] or 0)
                                               for ci in range(len(data["clients"]))))
                f.write(" " + " ".join(str(data["cpu_us"][ci][gi] or 0)
                                       for ci in range(len(data["clients"]))) + "\n")
        n = len(data["clients"])
        script = f"""
set terminal pngcairo size 1400,520 font ",9"
set output "{png}"
set multiplot layout 1,2 title "s2 Lua client vs the official S2 SDKs (medians)"
set style data histograms
set style histogram clustered gap 1
set style fill solid 0.8 border -1
set key top left
set title "Throughput (MiB/s)"
plot for [i=2:{n + 1}] "{dat}" using i:xtic(1) title columnheader(i)
set title "Client CPU per record (us, log)"
set logscale y
plot for [i={n + 2}:{2 * n + 1}] "{dat}" using i:xtic(1) title columnheader(i-{n})
unset multiplot
"""
        subprocess.run(["gnuplot"], input=script, text=True, check=True)


def draw_chart(data, png):
    """Returns a short description of how the chart was made, or None."""
    try:
        import matplotlib  # noqa: F401
        draw_matplotlib(data, png)
        return "matplotlib"
    except ImportError:
        pass
    for py in ["/usr/bin/python3"]:
        if os.path.exists(py) and os.path.realpath(py) != os.path.realpath(sys.executable):
            if subprocess.run([py, "-c", "import matplotlib"], capture_output=True).returncode == 0:
                with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
                    json.dump(data, f)
                try:
                    subprocess.run([py, os.path.abspath(__file__), "--draw", f.name, png], check=True)
                finally:
                    os.unlink(f.name)
                return "matplotlib"
    if shutil.which("gnuplot"):
        draw_gnuplot(data, png)
        return "gnuplot"
    return None


# ---------------------------------------------------------------- the Markdown

def target_line(ok, text):
    return f"| {'**met**' if ok else '**missed**'} | {text} |"


def write_md(path, png_rel, chart_tool, meta, runs, skipped, errors, perf, summ):
    versions = {"lua": next((r["version"] for r in runs if r["sdk"] == "lua"), "?")}
    for r in runs:
        versions.setdefault(r["sdk"], str(r["version"]).replace("curl ", ""))
    rounds = max((r.get("round", 1) for r in runs), default=1)
    L = []
    w = L.append
    w("# Benchmarks")
    w("")
    w("The Lua client (`s2`) beside the official S2 SDKs — Rust, Go, TypeScript, Python — and a raw")
    w("`curl` POST, on the same workloads against **one in-memory s2-lite per round** on this")
    w("machine, one client after another, each on a fresh stream (issue 9). Regenerate everything on this")
    w("page (tables, chart, perf profile) with `make bench` (about 15 minutes): it runs")
    w("`scripts/with-s2-lite.sh bench/run_all.sh build/bench.jsonl` and then")
    w("`python3 bench/report.py build/bench.jsonl`. The [OpenResty section](#openresty-one-nginx-worker)")
    w("at the end is `make bench-openresty`'s (issue 13).")
    w("")
    w(f"Run of **{meta.get('date', '?')}**: {rounds} round(s) over the whole matrix, clients")
    w("interleaved per workload; figures are **medians over the rounds** (ranges where noted).")
    w("**Read the [caveats](#caveats) first**: this is a shared 2-core VM and s2-lite shares the")
    w("cores.")
    w("")
    if chart_tool:
        w(f"![throughput, CPU per record and append latency by client]({png_rel})")
        w("")

    # --- headline
    w("## Headline: the Lua client against the best official SDK")
    w("")
    w("Ratios are Lua ÷ the best official SDK *for that figure* (named in brackets): the")
    w("fastest for records/s, the one using least CPU for CPU per record, the smallest for RSS.")
    w("Throughput above 1× and CPU/RSS below 1× favour Lua. \"Lua\" reads every record's ack,")
    w("as every SDK peer does; \"1 in 100\" is the same producer reading one ack in 100.")
    w("")
    w("| workload | Lua records/s | × fastest SDK | Lua CPU µs/record | × lowest-CPU SDK | Lua peak RSS MiB | × smallest SDK | ack p50 / p99 ms |")
    w("|---|---:|---:|---:|---:|---:|---:|---:|")
    for wl, size in WORKLOADS:
        for key in LUA_KEYS:
            s = summ.get((key, wl, size))
            if not s:
                continue
            bk, bv = best(summ, wl, size, "records_per_s")
            ck, cv = best(summ, wl, size, "cpu_us", lowest=True)
            rk, rv = best(summ, wl, size, "rss", lowest=True)
            name = f"{wl} {size_name(size)}" + {"lua-sampled": " (1 in 100)", "luajit": " (LuaJIT)"}.get(key, "")
            w(f"| {name} | {f_int(s['records_per_s'])} | {f_ratio(ratio(s['records_per_s'], bv))}"
              f" ({SDK_NAMES.get(bk, '–')}) | {f_num(s['cpu_us'], 2)} |"
              f" {f_ratio(ratio(s['cpu_us'], cv))} ({SDK_NAMES.get(ck, '–')}) | {f_num(s['rss'])} |"
              f" {f_ratio(ratio(s['rss'], rv))} ({SDK_NAMES.get(rk, '–')}) |"
              f" {f_num(s['p50'], 1)} / {f_num(s['p99'], 1)} |")
    cu = summ.get(("curl", "append", 128))
    la = summ.get(("lua", "append", 128))
    if cu and la:
        w(f"| append 128 B vs curl | | | | | | | p50 {f_ratio(ratio(la['p50'], cu['p50']))} of curl's |")
    w("")

    # --- targets
    w("## Targets (issue 9; reported, not asserted)")
    w("")
    w("| | target and measurement |")
    w("|---|---|")
    for size in (128, 8192):
        s = summ.get(("lua", "producer", size))
        bk, bv = best(summ, "producer", size, "records_per_s")
        if s and bv:
            r = s["records_per_s"] / bv
            extra = ""
            ss = summ.get(("lua-sampled", "producer", size))
            if ss:
                extra = f"; reading 1 ack in 100: {ratio(ss['records_per_s'], bv):.2f}×"
            miss = "" if r >= 1 else f", **{(1 - r) * 100:.0f} % short**"
            w(target_line(r >= 1.0, f"producer throughput ≥ 1.0× the fastest SDK at {size_name(size)}: "
                          f"{f_int(s['records_per_s'])} vs {f_int(bv)} rec/s ({SDK_NAMES[bk]}) = "
                          f"**{r:.2f}×**{miss}{extra}. Medians; single runs vary up to 2× (caveats)"))
    for wl, size in WORKLOADS[:4]:
        s = summ.get(("lua", wl, size))
        ck, cv = best(summ, wl, size, "cpu_us", lowest=True)
        if s and cv:
            r = s["cpu_us"] / cv
            extra = ""
            ss = summ.get(("lua-sampled", wl, size))
            if ss:
                rs = ss["cpu_us"] / cv
                extra = (f"; reading 1 ack in 100: {f_num(ss['cpu_us'], 2)} µs = {rs:.2f}×"
                         + ("" if rs <= 0.5 else f", needs {rs / 0.5:.1f}× less"))
            miss = "" if r <= 0.5 else f", **needs {r / 0.5:.1f}× less CPU to meet it**"
            w(target_line(r <= 0.5, f"client CPU per record ≤ 0.5× the best SDK, {wl} {size_name(size)}: "
                          f"{f_num(s['cpu_us'], 2)} vs {f_num(cv, 2)} µs ({SDK_NAMES[ck]}) = "
                          f"**{r:.2f}×**{miss}{extra}"))
    if cu and la:
        d = la["p50"] / cu["p50"] - 1
        w(target_line(d <= 0.10, f"single-append p50 within 10 % of the raw curl POST: "
                      f"{la['p50']:.2f} vs {cu['p50']:.2f} ms = **{d * 100:+.1f} %**"
                      + ("" if d <= 0.10 else f", {(d - 0.10) * 100:.1f} points over")))
    rss_runs = [r for r in runs if r.get("tag") == "rss"]
    for r in rss_runs:
        limit = r["max_inflight_bytes"] / 1048576 + RSS_HEADROOM_MIB
        gib = r["records"] * r["record_size"] / 2**30
        ok = r["peak_rss_mb"] <= limit
        w(target_line(ok, f"peak RSS while pushing {gib:.2f} GiB ({r['records']:,} × "
                      f"{size_name(r['record_size'])}) through the producer ≤ max_inflight_bytes "
                      f"({r['max_inflight_bytes'] / 1048576:.0f} MiB) + {RSS_HEADROOM_MIB} MiB = "
                      f"{limit:.0f} MiB: **{r['peak_rss_mb']:.1f} MiB**"
                      + ("" if ok else f", {r['peak_rss_mb'] - limit:.1f} MiB over")
                      + f" ({r['records_per_s']:,.0f} rec/s, {r['mib_per_s']:.1f} MiB/s)"))
    if not rss_runs:
        w("| – | RSS run not in this result file |")
    w("")

    # --- machine and versions
    w("## Machine and versions")
    w("")
    w("| | |")
    w("|---|---|")
    w(f"| date | {meta.get('date', '?')} |")
    w(f"| CPU | {meta.get('nproc', '?')} × {meta.get('cpu_model', '?')} ({meta.get('cpu_detail', '')}) |")
    w(f"| memory | {meta.get('mem_total_gib', '?')} GiB |")
    w(f"| OS | {meta.get('os', '?')}, Linux {meta.get('kernel', '?')} |")
    w(f"| load average before the run | {' '.join(meta.get('loadavg_before', []))} |")
    w(f"| server | s2-lite {meta.get('s2_lite', '0.43.4')}, in memory, on 127.0.0.1, the same 2 cores |")
    w(f"| Lua client | s2 {versions.get('lua', '?')} ({meta.get('lua', 'Lua')}, libcurl {meta.get('libcurl', '?')}, nghttp2 {meta.get('nghttp2', '?')}) |")
    if meta.get("luajit"):
        w(f"| LuaJIT rows | the same scripts and module built for {meta['luajit']} (`build-jit/`) |")
    w(f"| Rust SDK | `s2-sdk` {versions.get('rust', skipped.get('rust', '?'))} (crates.io), rustc {meta.get('rustc', '?')} |")
    w(f"| Go SDK | `s2-sdk-go` {versions.get('go', '–')}, go {meta.get('go', '?')}"
      + (f" — **skipped**: {skipped['go']}" if 'go' in skipped else
         " (built from a source tree given by `S2_GO_SDK_SRC`, see caveats)") + " |")
    w(f"| TypeScript SDK | `@s2-dev/streamstore` {versions.get('ts', skipped.get('ts', '?'))} (npm), node {meta.get('node', '?')} |")
    w(f"| Python SDK | `s2-sdk` {versions.get('python', skipped.get('python', '?'))} (PyPI), CPython 3.11 venv |")
    w(f"| curl floor | curl {versions.get('curl', meta.get('curl', '?'))}, one process, one keep-alive HTTP/1.1 connection |")
    for k, why in skipped.items():
        if k != "go":
            w(f"| skipped | {k}: {why} |")
    w("")
    if errors:
        w("**Failed runs:** " + "; ".join(f"{e['sdk']} {e.get('workload')} {e.get('record_size')} B"
                                          f" (round {e.get('round', '?')})" for e in errors))
        w("")

    # --- per workload
    w("## Results per workload")
    w("")
    w("Settings for every client: 5 ms linger, batches of at most 1000 records / 1 MiB, 5 MiB in")
    w("flight; record bodies of `x`, no headers. Records/s: median (min–max over rounds). CPU is")
    w("user+sys of the whole client process from `wait4` (start-up included), per record.")
    w("")
    for wl, size in WORKLOADS:
        keys = [k for k in LUA_KEYS + OFFICIAL + ["curl"] if (k, wl, size) in summ]
        if not keys:
            continue
        n = summ[(keys[0], wl, size)]["records"]
        w(f"### {wl}, {size_name(size)} records × {n:,}")
        w("")
        bk, bv = best(summ, wl, size, "records_per_s")
        ck, cv = best(summ, wl, size, "cpu_us", lowest=True)
        w("| client | records/s | MiB/s | × fastest SDK | ack p50 ms | ack p99 ms | CPU user+sys s | CPU µs/record | × lowest-CPU SDK | peak RSS MiB | rounds |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for k in keys:
            s = summ[(k, wl, size)]
            rng = f" ({f_int(s['rps_min'])}–{f_int(s['rps_max'])})" if s["n"] > 1 else ""
            w(f"| {label(k, versions, s['sample'])} | {f_int(s['records_per_s'])}{rng} | {f_num(s['mib_per_s'])} |"
              f" {f_ratio(ratio(s['records_per_s'], bv))} | {f_num(s['p50'], 1)} | {f_num(s['p99'], 1)} |"
              f" {f_num(s['cpu_user'], 2)}+{f_num(s['cpu_sys'], 2)} | {f_num(s['cpu_us'], 2)} |"
              f" {f_ratio(ratio(s['cpu_us'], cv))} | {f_num(s['rss'])} | {s['n']} |")
        w("")

    # --- perf
    if perf:
        w("## Where the Lua producer's CPU goes")
        w("")
        w("`perf record --call-graph dwarf` of `bench/lua_bench.lua --workload producer --record-size")
        w("128` (`bench/perf_producer.py`, part of the run). Shares are of the client process's")
        w("CPU samples; \"inclusive\" counts a function with everything it calls. Debian's `lua5.4`")
        w("is stripped, so the VM (bytecode, GC, table code) shows only as one lump.")
        w("")
        for p in perf:
            if p.get("skipped"):
                w(f"- perf skipped: {p['skipped']}")
                continue
            k = p["latency_sample"]
            which = "every ack" if k == 1 else f"1 ack in {k}"
            tp = p["threads_pct"] + [None, None]
            w(f"**Reading {which}** ({p['records']:,} records, {p['samples']} samples,"
              f" {p['cpu_us_per_record_window']} µs of CPU per record in the timed window;"
              f" caller thread {tp[0]} %, I/O thread {tp[1]} % of the samples):")
            w("")
            w("| inclusive | % |")
            w("|---|---:|")
            for name, pct in p["inclusive_pct"]:
                w(f"| {name.replace('  ', '&nbsp;&nbsp;')} | {pct:.1f} |")
            w("")
            w("Top self time: " + ", ".join(
                f"{sym if sym != '(stripped)' else 'Lua VM'} ({dso.split('.so')[0]}) {pct:.1f} %"
                for pct, dso, sym in p["top_self"][:10]) + ".")
            w("")

    # --- method and caveats
    w("## How it was measured")
    w("")
    w("- `bench/run_all.sh` runs `bench/run_peers.sh` (the matrix) `ROUNDS` times, then the 1 GiB")
    w("  RSS run and the perf profile. Every round starts its own fresh s2-lite, shared by all")
    w("  clients of that round (one basin with `create_stream_on_append`, a fresh stream per run).")
    w("  One server for all rounds is not possible here: s2-lite keeps ~4× the record bytes in")
    w("  memory, frees nothing when a basin is deleted, and a round writes ~2.2 GB of records;")
    w("  three rounds on one server ran the 24 GiB machine out of memory.")
    w("- Every client is one process run by `bench/peers/measure.py`, which takes user+sys CPU and")
    w("  peak RSS from the kernel's `wait4` rusage of the whole process (start-up included:")
    w("  ~0.2–0.3 s of CPU for node and CPython, a few ms for Lua, Rust and Go).")
    w("- Producer ack latency is per record, submit to ack; session, per batch; append, per call.")
    w("  `bench/lua_bench.lua` keeps the sampled tickets in a FIFO and stamps the resolved ones")
    w("  every 32 submits (at most tens of µs late), then awaits the rest in order after the last")
    w("  submit, as the SDK peers' consumer tasks do. Latencies go into a fixed histogram (10 µs")
    w("  steps below 100 ms, 1 ms above), so p50/p99 are bucket upper edges.")
    w("- Every run checks `check_tail` = the record count afterwards (the producer peers also")
    w("  check consecutive seq_nums), else the run counts as failed.")
    w("- The RSS run reads 1 ack in 1000, so that the benchmark's own ticket FIFO stays out of")
    w("  the figure; it measures the client library, the Lua VM and its shared libraries.")
    w("- Pins, installs and the JSON fields of the peers: `bench/README-peers.md`.")
    w("")
    w("## Caveats")
    w("")
    w("- **Shared, noisy 2-core VM.** Other work on the host moves the numbers; records/s of the")
    w("  same client vary by up to 2× between single runs. Compare ratios and the medians, rerun")
    w("  before concluding. CPU per record and peak RSS are the stable figures. The load average")
    w("  before the run (machine table) shows how busy the host already was.")
    w("- **s2-lite is the throughput bottleneck.** It runs on the same two cores as the client,")
    w("  keeps every record in memory, and at these rates it uses more CPU than any client. A")
    w("  faster client mostly leaves more CPU to the server; records/s differences of less than")
    w("  ~20 % between clients are within the noise.")
    w("- **Ack latency of producer and session runs is measured at saturation**: every client")
    w("  submits as fast as backpressure allows, so p50 ≈ bytes in flight ÷ throughput (5 MiB at")
    w("  ~50 MiB/s ≈ 100 ms). The `append` rows give the idle-path latency; s2-lite's own flush")
    w("  interval (~5 ms) dominates it for every client.")
    w("- **Go:** the Go module proxy answers 403 for `github.com/s2-streamstore/s2-sdk-go` here,")
    w("  so the Go peer runs only when `S2_GO_SDK_SRC` points at a source tree of v0.20.0 (this")
    w("  run: " + ("skipped" if "go" in skipped else "built from such a tree, upstream commit `d0cc887`") + ").")
    w("  Its producer queues up to 100 batches outside the 5 MiB in-flight limit (the Batcher's")
    w("  default channel buffer), which shows in its producer latency and RSS.")
    w("- **Reading every record's ack costs the Lua client more than submitting it:**")
    w("  `ticket:result()` builds a fresh ack table (with the batch's start/end/tail) per record.")
    w("  The \"1 in 100\" rows show the same producer when the application reads few acks.")
    w("- The curl floor's CPU and RSS include its bash and python3 helpers; only its latency is")
    w("  meaningful.")
    w("- `make bench-session` and `make bench-producer` still run the older standalone Lua")
    w("  benchmarks (`bench/session_throughput.lua`, `bench/producer_throughput.lua`).")
    w("")
    # The OpenResty section belongs to bench/openresty/run.py (make bench-openresty): carry it over.
    try:
        old = open(path).read()
    except OSError:
        old = ""
    begin, end = old.find(OPENRESTY_BEGIN), old.find(OPENRESTY_END)
    if begin >= 0 and end > begin:
        w(old[begin:end + len(OPENRESTY_END)])
        w("")
    with open(path, "w") as f:
        f.write("\n".join(L))


def target_of(r):
    return r.get("target") or "s2-lite"


def sink_section(runs, versions):
    """Issue 15: the rows run against the null sink (tools/null_sink.c) beside the same rows
    against s2-lite, the read workloads, and the submit-path runs. Empty when the results hold
    no sink or read rows."""
    lite = summarise([r for r in runs if target_of(r) == "s2-lite" and r["workload"] != "submit"])
    sink = summarise([r for r in runs if target_of(r) == "sink" and r["workload"] != "submit"])
    submits = [r for r in runs if r["workload"] == "submit"]
    if not sink and not submits and not any(k[1].startswith("read_") for k in lite):
        return []
    L = []
    w = L.append
    w("## Against the null sink: the client's own cost (issue 15)")
    w("")
    w("The same clients on the same workloads against `tools/null_sink.c` (`bench/with_sink.sh`), a")
    w("server that acks every batch at once and serves reads from generated streams, so that what")
    w("is left is the client's cost; beside them the s2-lite figures. Reads: a read session of N")
    w("records from seq_num 0 (`read_session`; `read_session_batch`: the same, the Lua client")
    w("taking lists of up to 1000 records with `reader:next_batch()`; `read_session_columns`: with")
    w("`reader:next_columns()`, no table per record), unary reads of 1000-record")
    w("pages (`read_unary`);")
    w("on s2-lite from a stream prepared once, on the sink from its `gen-SIZE-N` stream. Medians")
    w("over the rounds; CPU is user+sys of the whole client process per record (start-up included).")
    w("")
    # The issue-15 target: CPU per record ≤ 0.5× the lowest-CPU official SDK, against the sink.
    tgt = [(wl, size) for wl, size in WORKLOADS + READ_WORKLOADS if wl != "append"]
    rows = []
    for wl, size in tgt:
        base = sdk_row(wl)
        ck, cv = best(sink, base, size, "cpu_us", lowest=True)
        for key in ("lua", "luajit"):
            s_ = sink.get((key, wl, size))
            if s_ and cv and s_["cpu_us"] is not None:
                rows.append((wl, size, key, s_["cpu_us"], ck, cv))
    if rows:
        w("### CPU per record against the lowest-CPU official SDK, sink (target ≤ 0.5×)")
        w("")
        w("Every ack read. `read_session_batch` and `read_session_columns` are compared with the SDKs'")
        w("`read_session` row (the same records, taken many at a time).")
        w("")
        w("| workload | client | CPU µs/record | lowest-CPU SDK µs | ratio | target ≤ 0.5× |")
        w("|---|---|---:|---:|---:|---|")
        for wl, size, key, cpu, ck, cv in rows:
            r_ = cpu / cv
            w(f"| {wl} {size_name(size)} | {'LuaJIT' if key == 'luajit' else 'Lua 5.4'} | {f_num(cpu, 2)} |"
              f" {f_num(cv, 2)} ({SDK_NAMES.get(ck, ck)}) | {f_ratio(r_)} |"
              f" {'met' if r_ <= 0.5 else f'**missed** (needs {r_ / 0.5:.1f}× less)'} |")
        w("")
    for wl, size in WORKLOADS + READ_WORKLOADS:
        keys = [k for k in LUA_KEYS + OFFICIAL + ["curl"]
                if (k, wl, size) in lite or (k, wl, size) in sink]
        if not keys:
            continue
        any_s = lite.get((keys[0], wl, size)) or sink.get((keys[0], wl, size))
        base = sdk_row(wl)
        _, cv = best(sink, base, size, "cpu_us", lowest=True)
        w(f"### {wl}, {size_name(size)} records × {any_s['records']:,}")
        w("")
        w("| client | records/s s2-lite | records/s sink | CPU µs/record s2-lite | CPU µs/record sink | CPU sink × lowest-CPU SDK | peak RSS MiB s2-lite | peak RSS MiB sink |")
        w("|---|---:|---:|---:|---:|---:|---:|---:|")
        for k in keys:
            a, b = lite.get((k, wl, size), {}), sink.get((k, wl, size), {})
            w(f"| {label(k, versions, (a or b).get('sample'))} | {f_int(a.get('records_per_s'))} |"
              f" {f_int(b.get('records_per_s'))} | {f_num(a.get('cpu_us'), 2)} | {f_num(b.get('cpu_us'), 2)} |"
              f" {f_ratio(ratio(b.get('cpu_us'), cv))} | {f_num(a.get('rss'))} | {f_num(b.get('rss'))} |")
        w("")
    if submits:
        w("### The submit path alone: `producer:submit` from one Lua thread, sink")
        w("")
        w("`bench/submit_rate.lua`, 100 B bodies. Accepted: records over the submit loop alone;")
        w("acked: until `close` returned. Goal: ≥ 2 M records/s accepted.")
        w("")
        w("| client | tickets | records | accepted records/s | acked records/s | CPU µs/record | peak RSS MiB | rounds |")
        w("|---|---|---:|---:|---:|---:|---:|---:|")
        for sdk, mode, what in [(sdk, m, wh) for sdk in ("lua", "luajit") for m, wh in
                                [("drop", "dropped"), ("keep", "every one kept"), ("sample", "1 in 100 awaited")]]:
            rs = [r for r in submits if r.get("tickets") == mode and r["sdk"] == sdk]
            if not rs:
                continue
            w(f"| {'LuaJIT' if sdk == 'luajit' else 'Lua 5.4'} | {what} | {rs[0]['records']:,} | {f_int(med(r['submit_records_per_s'] for r in rs))} |"
              f" {f_int(med(r['records_per_s'] for r in rs))} | {f_num(med(r.get('cpu_us_per_record') for r in rs), 2)} |"
              f" {f_num(med(r.get('peak_rss_mb') for r in rs))} | {len(rs)} |")
        w("")
    return L


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results", nargs="?")
    ap.add_argument("--md", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    ap.add_argument("--png", default=os.path.join(ROOT, "docs", "benchmarks.png"))
    ap.add_argument("--draw", nargs=2, metavar=("DATA_JSON", "PNG"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.draw:
        draw_matplotlib(json.load(open(a.draw[0])), a.draw[1])
        return 0
    if not a.results:
        ap.error("RESULTS.jsonl is required")
    meta, runs, skipped, errors, perf = load(a.results)
    if not runs:
        print("report: no runs in " + a.results, file=sys.stderr)
        return 1
    all_runs = runs
    # The s2-lite matrix as before; sink, read and submit rows go to sink_section (issue 15).
    runs = [r for r in runs if target_of(r) == "s2-lite" and r["workload"] in dict(WORKLOADS)]
    summ = summarise(runs)
    versions = {"lua": next((r["version"] for r in all_runs if r["sdk"] == "lua"), "?")}
    for r in all_runs:
        versions.setdefault(r["sdk"], str(r["version"]).replace("curl ", ""))
    tool = draw_chart(chart_data(summ, versions), a.png)
    if not tool:
        print("report: no matplotlib and no gnuplot: chart not drawn", file=sys.stderr)
    png_rel = os.path.relpath(a.png, os.path.dirname(os.path.abspath(a.md)))
    try:
        old = open(a.md).read()
    except OSError:
        old = ""
    begin, end = old.find(ANALYSIS_BEGIN), old.find(ANALYSIS_END)
    analysis = old[begin:end + len(ANALYSIS_END)] if begin >= 0 and end > begin else ""
    write_md(a.md, png_rel, tool, meta, runs, skipped, errors, perf, summ)
    extra = sink_section(all_runs, versions)
    if extra:
        with open(a.md, "a") as f:
            f.write("\n\n" + "\n".join(extra))
    if analysis:
        with open(a.md, "a") as f:
            f.write("\n\n" + analysis + "\n")
    print(f"report: wrote {a.md}" + (f" and {a.png} ({tool})" if tool else ""), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
