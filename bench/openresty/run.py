#!/usr/bin/env python3
"""make bench-openresty: the s2 module inside real nginx, ONE worker, wrk against it (issue 13).

Each request appends its body (RECORD_SIZE bytes) as one record to a fresh stream:
  (a) unary     stream:append in the handler                       (bench/openresty/module_append.lua)
  (b) producer  a per-worker producer, ticket:ack() awaited          (same file)
  (c) cosocket  no module: a JSON POST to S2's append endpoint over a keep-alive
                ngx.socket.tcp                                       (bench/openresty/cosocket_append.lua)
each at CONNS connections (wrk -t WRK_THREADS --latency, BENCH_SECONDS). Every run gets a fresh
nginx; CPU per request is utime+stime of the single worker (all its threads, so the s2 I/O
thread too) from /proc/<pid>/stat before and after wrk, over wrk's completed requests. While wrk
runs, a low-rate probe (one GET /ping at a time on its own keep-alive connection, then
PING_INTERVAL_MS of pause) times every /ping answer; the same probe against an idle nginx gives
the idle figure.

Writes OUT (default bench/results/openresty.json) and the section "OpenResty (one nginx worker)"
of docs/benchmarks.md (between its <!-- openresty:begin/end --> markers; the rest of the page is
bench/report.py's and is left alone). Run under scripts/with-s2-lite.sh (S2_ACCOUNT_ENDPOINT).

  python3 bench/openresty/run.py              # the benchmark, then the docs section
  python3 bench/openresty/run.py --report     # only rewrite the docs section from OUT

Environment: BENCH_SECONDS=8 CONNS="50 500" VARIANTS="unary producer cosocket" ROUNDS=1
  WRK_THREADS=2 WRK_TIMEOUT=2s RECORD_SIZE=128 BENCH_LINGER=0.005 (producer linger, s)
  PING_INTERVAL_MS=20 PING_IDLE_SECONDS=5 OUT=... MD=docs/benchmarks.md NO_DOCS=1
  BASELINE=bench/results/openresty-before.json (a saved earlier run shown beside this one)
"""

import argparse
import http.client
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
VARIANTS = {
    "unary": ("(a)", "`stream:append` (unary)", "/unary"),
    "producer": ("(b)", "per-worker `stream:producer` + `ticket:ack()`", "/producer"),
    "cosocket": ("(c)", "JSON POST over a keep-alive `ngx.socket.tcp` (no module)", "/cosocket"),
}
BEGIN = "<!-- openresty:begin (written by bench/openresty/run.py; make bench-openresty) -->"
END = "<!-- openresty:end -->"


def log(*a):
    print("bench-openresty:", *a, file=sys.stderr, flush=True)


def env(name, default):
    v = os.environ.get(name, "")
    return v if v != "" else default


def loadavg():
    return open("/proc/loadavg").read().split()[:3]


def run(*cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip()
    except Exception:
        return ""


# ---------------------------------------------------------------- S2 (plain HTTP, for setup)

def s2_request(method, url, body=None, basin=None):
    headers = {"Authorization": "Bearer " + env("S2_ACCESS_TOKEN", "ignored"),
               "Content-Type": "application/json"}
    if basin:
        headers["s2-basin"] = basin
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def v1(endpoint):
    endpoint = endpoint.rstrip("/")
    return endpoint if re.search(r"//[^/]+/.+", endpoint) else endpoint + "/v1"


def create_basin(name):
    s2_request("POST", v1(os.environ["S2_ACCOUNT_ENDPOINT"]) + "/basins",
               {"basin": name, "config": {"create_stream_on_append": True}})


def stream_tail(basin, stream):
    try:
        r = s2_request("GET", v1(os.environ["S2_BASIN_ENDPOINT"]) + f"/streams/{stream}/records/tail",
                       basin=basin)
        return r["tail"]["seq_num"]
    except Exception as e:
        log(f"tail of {stream}: {e}")
        return None


# ---------------------------------------------------------------- nginx

class Nginx:
    def __init__(self, extra_env):
        self.prefix = tempfile.mkdtemp(prefix="s2-bench-nginx.")
        template = open(os.path.join(HERE, "nginx.conf")).read()
        envv = dict(os.environ)
        envv.pop("LD_PRELOAD", None)
        envv.update(extra_env)
        for _ in range(5):
            self.port = random.randint(20000, 50000)
            conf = (template.replace("@PREFIX@", self.prefix).replace("@REPO@", ROOT)
                    .replace("@PORT@", str(self.port)))
            if os.getuid() == 0:
                conf = "user root;\n" + conf  # the worker must read the checkout
            with open(os.path.join(self.prefix, "nginx.conf"), "w") as f:
                f.write(conf)
            out = open(os.path.join(self.prefix, "stdout.log"), "w")
            self.proc = subprocess.Popen(["/usr/sbin/nginx", "-p", self.prefix, "-c",
                                          os.path.join(self.prefix, "nginx.conf")],
                                         cwd=self.prefix, env=envv, stdout=out, stderr=out)
            if self._wait_ready():
                self.worker = self._worker_pid()
                return
            self.stop(remove=False)
            logs = self.logs()
            if "Address already in use" not in logs:
                break
            for name in ("error.log", "stdout.log"):  # the next attempt's logs only
                os.remove(os.path.join(self.prefix, name))
        raise RuntimeError("nginx did not start:\n" + self.logs())

    def _wait_ready(self):
        for _ in range(200):
            if self.proc.poll() is not None:
                return False
            try:
                if self.get("/ping", timeout=1)[0] == 200:
                    return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def _worker_pid(self):
        kids = open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()
        if len(kids) != 1:
            raise RuntimeError(f"expected one nginx worker, found {kids}")
        return int(kids[0])

    def get(self, path, body=None, timeout=10):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)
        try:
            c.request("POST" if body is not None else "GET", path, body=body)
            r = c.getresponse()
            return r.status, r.read().decode(errors="replace")
        finally:
            c.close()

    def cpu_seconds(self):
        """utime + stime of the worker (every thread), in seconds."""
        stat = open(f"/proc/{self.worker}/stat").read()
        fields = stat[stat.rindex(")") + 2:].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def logs(self):
        out = []
        for name in ("error.log", "stdout.log"):
            try:
                out.append(open(os.path.join(self.prefix, name)).read())
            except OSError:
                pass
        return "".join(out)

    def error_lines(self):
        return [l for l in self.logs().splitlines() if re.search(r"\[(error|crit|alert|emerg)\]", l)]

    def stop(self, remove=True):
        if self.proc.poll() is None:
            pids = [self.proc.pid] + [int(p) for p in open(
                f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read().split()]
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                pass
            for pid in pids:  # a worker stuck in a blocking call: do not wait for it
                try:
                    os.kill(pid, 9)
                except OSError:
                    pass
            self.proc.wait()
        if remove:
            shutil.rmtree(self.prefix, ignore_errors=True)


# ---------------------------------------------------------------- /ping probe

class PingProbe(threading.Thread):
    """One GET /ping at a time on a keep-alive connection, a pause between; times each."""

    def __init__(self, port, interval_s, timeout_s=15):
        super().__init__(daemon=True)
        self.port, self.interval, self.timeout = port, interval_s, timeout_s
        self.stop_flag = threading.Event()
        self.samples, self.errors = [], 0

    def run(self):
        conn = None
        while not self.stop_flag.is_set():
            t0 = time.perf_counter()
            try:
                if conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
                    conn.connect()
                    t0 = time.perf_counter()  # time the request, not the connect
                conn.request("GET", "/ping")
                r = conn.getresponse()
                ok = r.read() == b"pong\n" and r.status == 200
                dt = time.perf_counter() - t0
                if ok:
                    self.samples.append(dt * 1000)
                else:
                    self.errors += 1
            except OSError:
                self.errors += 1
                if conn is not None:
                    conn.close()
                conn = None
            self.stop_flag.wait(self.interval)
        if conn is not None:
            conn.close()

    def result(self):
        s = sorted(self.samples)

        def pct(p):
            return round(s[min(len(s) - 1, int(len(s) * p / 100))], 3) if s else None

        return {"n": len(s), "errors": self.errors, "p50_ms": pct(50), "p99_ms": pct(99),
                "max_ms": round(s[-1], 3) if s else None}


def ping_for(port, seconds, interval):
    p = PingProbe(port, interval)
    p.start()
    time.sleep(seconds)
    p.stop_flag.set()
    p.join(20)
    return p.result()


# ---------------------------------------------------------------- one run

def wrk(port, path, conns, seconds, threads, timeout, record_size):
    cmd = ["wrk", "-t", str(threads), "-c", str(conns), "-d", f"{seconds}s", "--latency",
           "--timeout", timeout, "-s", os.path.join(HERE, "wrk_post.lua"),
           f"http://127.0.0.1:{port}{path}"]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 120,
                       env=dict(os.environ, RECORD_SIZE=str(record_size)))
    m = re.search(r"^WRKJSON (\{.*\})$", p.stdout, re.M)
    if p.returncode != 0 or not m:
        raise RuntimeError(f"wrk failed ({p.returncode}): {p.stdout}{p.stderr}")
    return json.loads(m.group(1)), p.stdout


def one_run(variant, conns, rnd, basin, cfg):
    stream = f"{variant}-{conns}-r{rnd}"
    tag, _, path = VARIANTS[variant]
    log(f"{tag} {variant}, {conns} connections, round {rnd}")
    nginx = Nginx({"S2_BASIN": basin, "BENCH_STREAM": stream, "BENCH_LINGER": str(cfg["linger_s"])})
    try:
        status, body = nginx.get(path, body=b"warm-up")  # makes the stream, client, producer
        if status != 200:
            raise RuntimeError(f"warm-up request: {status} {body.strip()}")
        load_before = loadavg()
        cpu0 = nginx.cpu_seconds()
        probe = PingProbe(nginx.port, cfg["ping_interval_s"])
        threading.Timer(0.3, probe.start).start()  # once wrk has its connections
        w, text = wrk(nginx.port, path, conns, cfg["seconds"], cfg["wrk_threads"],
                      cfg["wrk_timeout"], cfg["record_size"])
        cpu1 = nginx.cpu_seconds()
        probe.stop_flag.set()
        probe.join(20)
        load_after = loadavg()
        secs = w["duration_us"] / 1e6
        errors = {k: w[k] for k in ("connect", "read", "write", "status", "timeout")}
        r = {
            "variant": variant, "connections": conns, "round": rnd, "stream": stream,
            "requests": w["requests"], "seconds": round(secs, 3),
            "rps": round(w["requests"] / secs, 1) if secs else 0,
            "p50_ms": w["p50_us"] / 1000, "p90_ms": w["p90_us"] / 1000,
            "p99_ms": w["p99_us"] / 1000, "max_ms": w["max_us"] / 1000,
            "mean_ms": round(w["mean_us"] / 1000, 3),
            "errors": errors, "error_total": sum(errors.values()),
            "worker_cpu_s": round(cpu1 - cpu0, 3),
            "cpu_us_per_request": round((cpu1 - cpu0) * 1e6 / w["requests"], 1) if w["requests"] else None,
            "ping_under_load": probe.result(),
            "loadavg_before": load_before, "loadavg_after": load_after,
        }
        time.sleep(0.2)
        r["stream_tail"] = stream_tail(basin, stream)
        errs = nginx.error_lines()
        r["nginx_error_lines"] = len(errs)
        if errs:
            r["nginx_first_error"] = errs[0][-300:]
        log(f"  {r['rps']:.0f} req/s, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
            f"errors {r['error_total']}, CPU {r['cpu_us_per_request']} us/req, "
            f"/ping p99 {r['ping_under_load']['p99_ms']} ms (n={r['ping_under_load']['n']})")
        return r
    except Exception as e:
        log(f"  failed: {e}")
        return {"variant": variant, "connections": conns, "round": rnd, "error": str(e)[-2000:]}
    finally:
        nginx.stop()


# ---------------------------------------------------------------- summary and goals

def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def summarise(runs):
    out = {}
    for r in runs:
        if "error" in r:
            continue
        out.setdefault((r["variant"], r["connections"]), []).append(r)
    summ = {}
    for (v, c), rs in out.items():
        summ[(v, c)] = {
            "rounds": len(rs),
            "rps": med(r["rps"] for r in rs),
            "p50_ms": med(r["p50_ms"] for r in rs),
            "p99_ms": med(r["p99_ms"] for r in rs),
            "errors": med(r["error_total"] for r in rs),
            "timeouts": med(r["errors"]["timeout"] for r in rs),
            "cpu_us": med(r["cpu_us_per_request"] for r in rs),
            "ping_p99_ms": med(r["ping_under_load"]["p99_ms"] for r in rs),
            "ping_n": med(r["ping_under_load"]["n"] for r in rs),
            "ping_errors": med(r["ping_under_load"]["errors"] for r in rs),
        }
    return summ


def goals(summ, idle, linger_ms):
    def g(v, c, k):
        return (summ.get((v, c)) or {}).get(k)

    out = []

    def add(text, a, b, ok, detail):
        out.append({"goal": text, "met": None if a is None or b is None else bool(ok), "detail": detail})

    b, c = g("producer", 500, "rps"), g("cosocket", 500, "rps")
    add("at 500 connections (b) >= 5x (c) in requests/s", b, c, b and c and b >= 5 * c,
        f"{b:,.0f} vs {c:,.0f} req/s = {b / c:.2f}x" if b and c else "not measured")
    b, c = g("producer", 50, "p50_ms"), g("cosocket", 50, "p50_ms")
    add(f"at 50 connections (b)'s p50 <= linger ({linger_ms:g} ms) + (c)'s p50", b, c,
        b is not None and c is not None and b <= linger_ms + c,
        f"{b:.2f} vs {linger_ms:g} + {c:.2f} = {linger_ms + c:.2f} ms" if b is not None and c is not None
        else "not measured")
    for conns in (50, 500):
        a, c = g("unary", conns, "rps"), g("cosocket", conns, "rps")
        add(f"at {conns} connections (a) >= 1.0x (c) in requests/s", a, c, a and c and a >= c,
            f"{a:,.0f} vs {c:,.0f} req/s = {a / c:.2f}x" if a and c else "not measured")
    idle_p99 = idle.get("p99_ms")
    parts, ok_all, any_run = [], True, False
    for v in VARIANTS:
        for conns in (50, 500):
            p = g(v, conns, "ping_p99_ms")
            if p is None or not idle_p99:
                continue
            any_run = True
            ok_all = ok_all and p <= 2 * idle_p99
            parts.append(f"{VARIANTS[v][0]} {conns}: {p:.2f} ms ({p / idle_p99:.1f}x)")
    add("/ping p99 under each load within 2x its idle p99", idle_p99 if any_run else None, idle_p99,
        ok_all, (f"idle {idle_p99:.2f} ms; " + ", ".join(parts)) if any_run else "not measured")
    return out


# ---------------------------------------------------------------- Markdown

def f_ms(v):
    if v is None:
        return "–"
    return f"{v / 1000:.2f} s" if v >= 1000 else f"{v:.1f} ms" if v >= 10 else f"{v:.2f} ms"


def f_int(v):
    return "–" if v is None else f"{v:,.0f}"


def table(doc, L):
    summ = summarise(doc["runs"])
    conns_list = sorted({c for _, c in summ})
    L.append("| handler | connections | req/s | p50 | p99 | timeouts / other errors | worker CPU µs/request | /ping p99 under load (n) |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|")
    for v in VARIANTS:
        for c in conns_list:
            s = summ.get((v, c))
            if not s:
                continue
            other = (s["errors"] or 0) - (s["timeouts"] or 0)
            cpu = "–" if s["cpu_us"] is None else f"{s['cpu_us']:,.0f}"
            L.append(f"| {VARIANTS[v][0]} {VARIANTS[v][1]} | {c} | {f_int(s['rps'])} | {f_ms(s['p50_ms'])} | "
                     f"{f_ms(s['p99_ms'])} | {f_int(s['timeouts'])} / {f_int(other)} | {cpu} | "
                     f"{f_ms(s['ping_p99_ms'])} ({f_int(s['ping_n'])}) |")
    failed = [r for r in doc["runs"] if "error" in r]
    for r in failed:
        L.append(f"| {VARIANTS[r['variant']][0]} {VARIANTS[r['variant']][1]} | {r['connections']} | "
                 f"failed: {r['error'][:120].replace('|', '/')} | | | | | |")
    return summ


def markdown(doc, baseline=None):
    m, s = doc["meta"], doc["settings"]
    L = [BEGIN, "## OpenResty (one nginx worker)", ""]
    L.append("The s2 module inside real nginx (Debian nginx-light + libnginx-mod-http-lua, the LuaJIT "
             "build of `s2.core`), **one worker process**, `wrk` against it, each request appending "
             f"one {s['record_size']} B record to a fresh stream of the same s2-lite (issue 13). Regenerate "
             "with `make bench-openresty` (about 1–2 minutes): `scripts/with-s2-lite.sh python3 "
             "bench/openresty/run.py`, which writes `bench/results/openresty.json` and this section.")
    L.append("")
    L.append(f"Run of **{m['date']}** at commit `{m.get('commit', '?')}`: wrk -t{s['wrk_threads']} "
             f"--latency --timeout {s['wrk_timeout']}, {s['seconds']} s per run, {s['rounds']} round(s) "
             f"(medians when more); producer linger {s['linger_s'] * 1000:g} ms. Machine: {m['nproc']} cores "
             f"({m['cpu_model']}), shared with other work and with s2-lite and wrk; load average "
             f"{' '.join(m['loadavg_before'])} before the run, {' '.join(m.get('loadavg_after') or ['?'])} after "
             f"(uptime: `{m.get('uptime', '?')}`). nginx {m.get('nginx', '?')}, lua-nginx-module "
             f"{m.get('lua_nginx_module', '?')}, {m.get('luajit', 'LuaJIT')}, {m.get('wrk', 'wrk')}, "
             f"s2-lite {m.get('s2_lite', '?')}." + (" The checkout had uncommitted changes." if m.get("dirty") else ""))
    L.append("")
    L.append("- (a) `stream:append{ body }` in the handler; (b) one producer per worker, made by its "
             "first request, `producer:submit(body)` then `ticket:ack()`; (c) what an OpenResty user "
             "writes without this module: `POST {basin endpoint}/streams/{stream}/records` with a JSON "
             "`AppendInput`, over `ngx.socket.tcp` with a keep-alive pool "
             "(`bench/openresty/cosocket_append.lua`, ~40 lines).")
    L.append("")
    summ = table(doc, L)
    idle = doc["ping_idle"]
    L.append("")
    L.append(f"/ping idle: p50 {f_ms(idle.get('p50_ms'))}, p99 **{f_ms(idle.get('p99_ms'))}** "
             f"({idle.get('n')} requests, {idle.get('errors')} errors).")
    L.append("")
    L.append("Goals (issue 13; reported, not asserted):")
    L.append("")
    L.append("| | goal | measured |")
    L.append("|---|---|---|")
    for gl in doc["goals"]:
        verdict = "–" if gl["met"] is None else "**met**" if gl["met"] else "**missed**"
        L.append(f"| {verdict} | {gl['goal']} | {gl['detail']} |")
    if baseline and baseline.get("meta", {}).get("date") == m.get("date"):
        L.append("")
        L.append(f"This run is also the saved baseline (`{os.path.relpath(doc['baseline_path'], ROOT)}`): "
                 "the code before issue 13's never-block work, where unary calls block the worker and "
                 "`ticket:ack()` polls with `ngx.sleep`. Later runs show it beside their own figures.")
    elif baseline:
        bm = baseline["meta"]
        L.append("")
        L.append(f"Before (run of {bm['date']}, commit `{bm.get('commit', '?')}`, load "
                 f"{' '.join(bm['loadavg_before'])}; `{os.path.relpath(doc['baseline_path'], ROOT)}`):")
        L.append("")
        table(baseline, L)
        bi = baseline.get("ping_idle", {})
        L.append("")
        L.append(f"/ping idle then: p99 {f_ms(bi.get('p99_ms'))}. Goals then: " + "; ".join(
            f"{'met' if gl['met'] else 'missed' if gl['met'] is False else '–'}: {gl['goal']} ({gl['detail']})"
            for gl in baseline.get("goals", [])) + ".")
    L.append("")
    L.append("How it was measured:")
    L.append("")
    L.append("- Every (handler, connections) run starts its own nginx (one worker), warms it with one "
             "request (stream created on append, client and producer made), then runs wrk "
             "(`bench/openresty/wrk_post.lua` POSTs the record body and prints wrk's own summary as "
             "JSON). Latency percentiles are wrk's, over completed requests; requests wrk gave up on "
             f"after {s['wrk_timeout']} are the timeouts column (not in the percentiles).")
    L.append("- Worker CPU: utime+stime of the worker process (every thread, the s2 I/O thread "
             "included) from `/proc/<pid>/stat` just before and after wrk, divided by wrk's completed "
             "requests (10 ms clock ticks). s2-lite's and wrk's CPU are not in it.")
    L.append(f"- /ping: a probe in the harness (python3 `http.client`, one keep-alive connection) sends "
             f"one `GET /ping` at a time and pauses {s['ping_interval_ms']} ms between answers, about "
             f"{1000 // max(1, s['ping_interval_ms'])} requests/s at most, so it adds almost no load. "
             f"Idle: {s['ping_idle_s']} s against an nginx with no other traffic; under load: from 0.3 s "
             "after wrk starts to its end. n is the number of answers; a blocked worker gives few, "
             "slow ones.")
    runs = [r for r in doc["runs"] if "error" not in r]
    short = [f"{VARIANTS[r['variant']][0]} {r['connections']}" for r in runs
             if r.get("stream_tail") is None or r["stream_tail"] < r["requests"] + 1]
    L.append("- Records check: after each run the stream's tail must be at least wrk's completed "
             "requests + 1 (the warm-up): " + ("every run passed." if not short else
                                                "**failed** for " + ", ".join(short) + "."))
    L.append("- Shared, noisy 2-core VM: nginx, wrk, the probe and s2-lite share the two cores; rerun "
             "before concluding from differences under ~20 %.")
    L.append(END)
    return "\n".join(L) + "\n"


def write_docs(md_path, text):
    old = open(md_path).read() if os.path.exists(md_path) else "# Benchmarks\n"
    if BEGIN.split(" (")[0] in old and END in old:
        start = old.index(BEGIN.split(" (")[0])
        end = old.index(END) + len(END)
        new = old[:start] + text.rstrip("\n") + old[end:]
    else:
        new = old.rstrip("\n") + "\n\n" + text
    with open(md_path, "w") as f:
        f.write(new)


# ---------------------------------------------------------------- main

def meta():
    lscpu = run("lscpu")
    m = re.search(r"^Model name:\s*(.+)$", lscpu, re.M)
    nginx_v = run("/usr/sbin/nginx", "-v")
    dpkg = run("dpkg-query", "-W", "-f", "${Version}", "libnginx-mod-http-lua")
    return {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "commit": run("git", "-C", ROOT, "rev-parse", "--short", "HEAD"),
        "dirty": bool(run("git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no")),
        "nproc": os.cpu_count(),
        "cpu_model": m.group(1).strip() if m else "unknown",
        "uptime": run("uptime"),
        "loadavg_before": loadavg(),
        "nginx": (re.search(r"nginx/(\S+)", nginx_v) or [None, "?"])[1],
        "lua_nginx_module": dpkg or "?",
        "luajit": "libluajit2 " + (run("dpkg-query", "-W", "-f", "${Version}", "libluajit2-5.1-2") or "?"),
        "wrk": run("wrk", "-v").splitlines()[0].split(" [")[0] if run("wrk", "-v") else "wrk",
        "s2_lite": env("S2_LITE_VERSION", "0.43.4"),
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", action="store_true", help="only rewrite the docs section from OUT")
    a = ap.parse_args()
    out_path = os.path.abspath(env("OUT", os.path.join(ROOT, "bench", "results", "openresty.json")))
    md_path = os.path.abspath(env("MD", os.path.join(ROOT, "docs", "benchmarks.md")))
    baseline_path = os.path.abspath(env("BASELINE", os.path.join(ROOT, "bench", "results", "openresty-before.json")))

    if not a.report:
        for var in ("S2_ACCOUNT_ENDPOINT", "S2_BASIN_ENDPOINT"):
            if not os.environ.get(var):
                sys.exit(f"bench-openresty: {var} is not set (run under scripts/with-s2-lite.sh)")
        if not shutil.which("wrk"):
            sys.exit("bench-openresty: wrk is missing (make bench-openresty installs it)")
        if not os.path.exists(os.path.join(ROOT, "build-jit", "s2", "core.so")):
            sys.exit("bench-openresty: build-jit/s2/core.so is missing (make luajit)")
        cfg = {
            "seconds": int(env("BENCH_SECONDS", "8")),
            "connections": [int(c) for c in env("CONNS", "50 500").split()],
            "variants": env("VARIANTS", "unary producer cosocket").split(),
            "rounds": int(env("ROUNDS", "1")),
            "wrk_threads": int(env("WRK_THREADS", "2")),
            "wrk_timeout": env("WRK_TIMEOUT", "2s"),
            "record_size": int(env("RECORD_SIZE", "128")),
            "linger_s": float(env("BENCH_LINGER", "0.005")),
            "ping_interval_ms": int(env("PING_INTERVAL_MS", "20")),
            "ping_idle_s": float(env("PING_IDLE_SECONDS", "5")),
        }
        cfg["ping_interval_s"] = cfg["ping_interval_ms"] / 1000
        for v in cfg["variants"]:
            if v not in VARIANTS:
                sys.exit(f"bench-openresty: unknown variant {v} (one of {' '.join(VARIANTS)})")
        doc = {"meta": meta(), "settings": {k: v for k, v in cfg.items() if k != "ping_interval_s"}}
        basin = f"bench-or-{int(time.time()) % 100000000:x}-{random.randint(0, 0xffff):04x}"
        create_basin(basin)
        doc["basin"] = basin
        log(f"idle /ping for {cfg['ping_idle_s']} s")
        idle_nginx = Nginx({"S2_BASIN": basin, "BENCH_STREAM": "idle"})
        try:
            doc["ping_idle"] = ping_for(idle_nginx.port, cfg["ping_idle_s"], cfg["ping_interval_s"])
        finally:
            idle_nginx.stop()
        log(f"  idle /ping p50 {doc['ping_idle']['p50_ms']} ms, p99 {doc['ping_idle']['p99_ms']} ms")
        runs = []
        for rnd in range(1, cfg["rounds"] + 1):
            for conns in cfg["connections"]:
                for v in cfg["variants"]:
                    runs.append(one_run(v, conns, rnd, basin, cfg))
        doc["runs"] = runs
        doc["meta"]["loadavg_after"] = loadavg()
        doc["meta"]["uptime_after"] = run("uptime")
        summ = summarise(runs)
        doc["summary"] = [dict(variant=v, connections=c, **s) for (v, c), s in sorted(summ.items())]
        doc["goals"] = goals(summ, doc["ping_idle"], cfg["linger_s"] * 1000)
        os.makedirs(os.path.dirname(out_path), exist_ok=True)
        with open(out_path, "w") as f:
            json.dump(doc, f, indent=1)
            f.write("\n")
        log(f"results in {os.path.relpath(out_path, ROOT)}")
        for gl in doc["goals"]:
            log(f"  {'met' if gl['met'] else 'MISSED' if gl['met'] is False else '-'}: {gl['goal']}: {gl['detail']}")
    doc = json.load(open(out_path))
    if env("NO_DOCS", "") == "":
        baseline = None
        if os.path.exists(baseline_path) and os.path.abspath(baseline_path) != out_path:
            baseline = json.load(open(baseline_path))
        doc["baseline_path"] = baseline_path
        write_docs(md_path, markdown(doc, baseline))
        log(f"wrote the OpenResty section of {os.path.relpath(md_path, ROOT)}")
    failed = [r for r in doc["runs"] if "error" in r]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
