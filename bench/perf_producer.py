#!/usr/bin/env python3
"""Where the Lua producer's CPU goes: `perf record` of bench/lua_bench.lua (producer, 128 B)
and a summary as one JSON line ({"perf": true, ...}) for bench/report.py.

  perf_producer.py [--records N] [--sample K] >> RESULTS.jsonl

Needs `perf` (Debian: linux-perf) and the S2_* environment (scripts/with-s2-lite.sh), plus
LUA_PATH / LUA_CPATH pointing at the checkout (bench/run_all.sh sets them). Call graphs are
unwound with DWARF (the Lua interpreter has no frame pointers), so inclusive shares
("children": the function and what it calls) are reliable for the C functions; the Lua VM
itself is stripped in Debian's lua5.4 and shows only as addresses ("lua5.4 VM").
Exits 0 with a {"perf": true, "skipped": reason} line when perf cannot run.
"""

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))

# Inclusive shares reported, by symbol (perf's names; inlined functions appear too).
FUNCS = [
    ("l_producer_submit", "producer:submit (C binding, whole call)"),
    ("s2_producer_submit", "  s2_producer_submit (core: batching, encode)"),
    ("lua_newuserdatauv", "  ticket userdata allocation"),
    ("s2l_check_owner", "  fork check in submit (getpid)"),
    ("l_ticket_result", "ticket:result() (ack table per record)"),
    ("l_ticket_ack", "ticket:ack()"),
    ("l_ticket_ready", "ticket:ready()"),
    ("check_ticket", "fork check on ticket calls (getpid)"),
    ("__GI_getpid", "getpid() in all, syscall included"),
    ("io_main", "I/O thread (nghttp2, send/recv, acks)"),
    ("s2_now", "clock reads (core.now)"),
]


def skip(reason):
    print(json.dumps({"perf": True, "skipped": reason}))
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200000)
    ap.add_argument("--record-size", type=int, default=128)
    ap.add_argument("--sample", type=int, default=1)
    ap.add_argument("--lua", default=os.environ.get("LUA", "lua5.4"))
    a = ap.parse_args()
    if not shutil.which("perf"):
        return skip("perf not installed (Debian: linux-perf)")
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "perf.data")
        rec = subprocess.run(
            ["perf", "record", "-q", "-F", "4000", "--call-graph", "dwarf,8192", "-o", data,
             a.lua, os.path.join(HERE, "lua_bench.lua"), "--workload", "producer",
             "--record-size", str(a.record_size), "--records", str(a.records),
             "--sample", str(a.sample)],
            capture_output=True, text=True)
        if rec.returncode != 0:
            return skip("perf record failed: " + (rec.stderr.strip().splitlines() or ["?"])[-1])
        bench = json.loads([ln for ln in rec.stdout.splitlines() if ln.startswith("{")][-1])

        def report(*extra):
            p = subprocess.run(["perf", "report", "-i", data, "--stdio", "-g", "none", *extra],
                               capture_output=True, text=True)
            return p.stdout

        # Self time by shared object and by symbol.
        dso = []
        for ln in report("--no-children", "--sort", "dso").splitlines():
            m = re.match(r"\s+([\d.]+)%\s+(\S+)", ln)
            if m:
                dso.append([float(m.group(1)), m.group(2)])
        top_self = []
        for ln in report("--no-children", "--sort", "dso,sym").splitlines():
            m = re.match(r"\s+([\d.]+)%\s+(\S+)\s+\[.\]\s+(.+?)\s*$", ln)
            if m:
                sym = m.group(3)
                if sym.startswith("0x"):
                    sym = "(stripped)"
                top_self.append([float(m.group(1)), m.group(2), sym])
        # Merge the stripped VM addresses into one entry.
        merged = {}
        for pct, d, sym in top_self:
            key = (d, sym)
            merged[key] = merged.get(key, 0.0) + pct
        top_self = sorted(([round(v, 2), d, s] for (d, s), v in merged.items()), reverse=True)[:15]
        children = {}
        for ln in report("--children", "--sort", "sym").splitlines():
            m = re.match(r"\s+([\d.]+)%\s+([\d.]+)%\s+\[.\]\s+(\S+)", ln)
            if m and m.group(3) not in children:
                children[m.group(3)] = float(m.group(1))
        by_thread, samples = [], 0
        for ln in report("--no-children", "-n", "--sort", "pid").splitlines():
            m = re.match(r"\s+([\d.]+)%\s+(\d+)\s+(\d+):", ln)
            if m:
                by_thread.append(float(m.group(1)))
                samples += int(m.group(2))
    out = {
        "perf": True,
        "workload": "producer", "record_size": a.record_size, "records": a.records,
        "latency_sample": a.sample, "samples": samples,
        "cpu_us_per_record_window": round(bench["cpu_window_s"] / a.records * 1e6, 2),
        "threads_pct": by_thread,  # main (caller) thread first, then the I/O thread
        "dso_self_pct": dso[:8],
        "top_self": top_self,
        "inclusive_pct": [[label, children.get(sym)] for sym, label in FUNCS
                          if children.get(sym) is not None],
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
