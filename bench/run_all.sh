#!/usr/bin/env bash
# The whole issue-9 benchmark: this Lua client and the official SDKs (Rust, Go, TypeScript,
# Python) plus a raw curl floor, on the same workloads against one s2-lite, then a 1 GiB push
# through the Lua producer for peak RSS. Writes one JSON line per run to RESULTS.jsonl (it is
# truncated first); bench/report.py turns it into docs/benchmarks.md and docs/benchmarks.png.
#
#   scripts/with-s2-lite.sh bench/run_all.sh RESULTS.jsonl && python3 bench/report.py RESULTS.jsonl
#   (make bench does both)
#
# Order: workload-major, every client on its own fresh stream, the Lua client first in each
# workload, then the SDKs, as in bench/run_peers.sh (which runs the matrix; see
# bench/README-peers.md for the peers' pins, installs and the JSON fields).
#
# Environment (besides run_peers.sh's: PEER_SCALE, APPEND_RECORD_SIZE, S2_GO_SDK_SRC, PYTHON):
#   PEERS="lua luajit lua-sampled rust go ts python curl"   clients to run
#   ROUNDS=3              passes over the whole matrix (report.py shows medians and ranges)
#   NO_PERF=1             skip the perf profile of the Lua producer (needs linux-perf)
#   RSS_RECORDS=1048576   records of RSS_RECORD_SIZE=1024 bytes in the RSS run (1 GiB); 0 skips it
#   BUILD=build           where s2/core.so was built (make)
#   NO_CHART_INSTALL=1    do not apt-get python3-matplotlib / gnuplot when neither is there
#   TARGETS="s2-lite sink"  each round runs the matrix against a fresh s2-lite and then against
#                         a fresh null sink (tools/null_sink.c, bench/with_sink.sh: only the
#                         client's cost); the lines carry "target" (issue 15)
#   SUBMIT_RECORDS=2000000  records per bench/submit_rate.lua run against the sink (three
#                         runs: tickets dropped / kept / 1 in 100 awaited; x PEER_SCALE); 0
#                         skips them
set -uo pipefail

results="${1:?usage: run_all.sh RESULTS.jsonl}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
build="${BUILD:-build}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
export BUILD="$build"
: "${S2_ACCOUNT_ENDPOINT:?S2_ACCOUNT_ENDPOINT is not set (run under scripts/with-s2-lite.sh)}"
export S2_ACCESS_TOKEN="${S2_ACCESS_TOKEN:-ignored}"
log() { echo "run_all: $*" >&2; }

mkdir -p "$(dirname "$results")"
: >"$results"

# ---------------------------------------------------------------- chart tool (for report.py)
# Debian's python3-matplotlib (it lands in /usr/bin/python3's dist-packages; report.py looks
# there too when the python3 on PATH is another one), else Debian's gnuplot.
have_matplotlib() {
  python3 -c 'import matplotlib' 2>/dev/null || /usr/bin/python3 -c 'import matplotlib' 2>/dev/null
}
if ! have_matplotlib && ! command -v gnuplot >/dev/null && [ -z "${NO_CHART_INSTALL:-}" ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  log "installing python3-matplotlib (Debian) for the chart"
  if ! { $sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q \
           --no-install-recommends python3-matplotlib; } >&2; then
    log "python3-matplotlib failed; trying gnuplot-nox"
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends gnuplot-nox >&2 \
      || log "no chart tool: report.py will write the tables only"
  fi
fi

# ---------------------------------------------------------------- what ran where
python3 - "$results" "$build" <<'EOF'
import json, os, platform, re, subprocess, sys, time
results, build = sys.argv[1:3]
def run(*cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        return (p.stdout + p.stderr).strip()
    except Exception:
        return ""
def first(pattern, text, default=None):
    m = re.search(pattern, text, re.M)
    return m.group(1).strip() if m else default
lscpu = run("lscpu")
meminfo = open("/proc/meminfo").read()
meta = {
    "meta": True,
    "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    "nproc": int(run("nproc") or 0),
    "cpu_model": first(r"^Model name:\s*(.+)$", lscpu, "unknown"),
    "cpu_detail": "family %s model %s, %s threads/core%s" % (
        first(r"^CPU family:\s*(.+)$", lscpu, "?"), first(r"^Model:\s*(.+)$", lscpu, "?"),
        first(r"^Thread\(s\) per core:\s*(.+)$", lscpu, "?"),
        (", hypervisor " + first(r"^Hypervisor vendor:\s*(.+)$", lscpu))
        if first(r"^Hypervisor vendor:\s*(.+)$", lscpu) else ""),
    "mem_total_gib": round(int(first(r"^MemTotal:\s*(\d+)", meminfo, "0")) / 1048576, 1),
    "kernel": platform.release(),
    "os": first(r'^PRETTY_NAME="?([^"\n]+)', open("/etc/os-release").read(), "unknown"),
    "s2_lite": os.environ.get("S2_LITE_VERSION", "0.43.4"),
    "lua": run("lua5.4", "-v").split("  ")[0],
    "luajit": run("luajit", "-v").split(" -- ")[0],
    "libcurl": run("pkg-config", "--modversion", "libcurl"),
    "nghttp2": run("pkg-config", "--modversion", "libnghttp2"),
    "curl": first(r"^curl (\S+)", run("curl", "--version")),
    "rustc": first(r"^rustc (\S+)", run("rustc", "--version")),
    "go": first(r"go version go(\S+)", run("go", "version")),
    "node": run("node", "--version").lstrip("v"),
    "python": platform.python_version(),
    "loadavg_before": open("/proc/loadavg").read().split()[:3],
}
with open(results, "a") as f:
    f.write(json.dumps(meta) + "\n")
EOF

# ---------------------------------------------------------------- the matrix, ROUNDS times
# Each round is one run_peers.sh pass; report.py takes the median over the rounds. Its lines get
# "round": k. s2-lite keeps ~4x the record bytes in memory and frees nothing when a basin is
# deleted; a round writes ~2.2 GB of records, so three rounds on one server exhaust 24 GiB (the
# OOM killer stopped it). With ROUNDS > 1 every round therefore gets a fresh s2-lite of its own
# (scripts/with-s2-lite.sh; all clients of a round share it); the server this script was
# started with then serves only the RSS and perf runs. ROUND_SERVER=0 uses that one throughout.
failures=0
rounds="${ROUNDS:-3}"
round_server=()
if [ "$rounds" -gt 1 ] && [ "${ROUND_SERVER:-1}" != 0 ]; then
  round_server=("$root/scripts/with-s2-lite.sh")
fi
for k in $(seq 1 "$rounds"); do
  for t in ${TARGETS:-s2-lite sink}; do
  log "round $k of $rounds: $t"
  tmp="$(mktemp)"
  if [ "$t" = sink ]; then
    TARGET=sink PEERS="${PEERS:-lua luajit lua-sampled rust go ts python curl}" "$here/with_sink.sh" "$here/run_peers.sh" "$tmp" || failures=1
  else
    PEERS="${PEERS:-lua luajit lua-sampled rust go ts python curl}" "${round_server[@]}" "$here/run_peers.sh" "$tmp" || failures=1
  fi
  python3 - "$tmp" "$k" >>"$results" <<'EOF'
import json, sys
for line in open(sys.argv[1]):
    if line.strip():
        r = json.loads(line)
        r["round"] = int(sys.argv[2])
        print(json.dumps(r))
EOF
  rm -f "$tmp"
  done
done

# ---------------------------------------------------------------- the submit path alone (sink)
submit_records="$(awk -v n="${SUBMIT_RECORDS:-2000000}" -v s="${PEER_SCALE:-1}" 'BEGIN { v = int(n * s); print (n > 0 && v < 1 ? 1 : v) }')"
if [ "$submit_records" -gt 0 ]; then
  export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;" LUA_CPATH="$build/?.so;;"
  jit_build="${BUILD_JIT:-$root/build-jit}"
  for interp in lua luajit; do
  case " ${PEERS:-lua luajit} " in *" $interp "*) ;; *) continue ;; esac
  if [ "$interp" = lua ]; then run=("${LUA:-lua5.4}")
  elif [ -f "$jit_build/s2/core.so" ] && command -v "${LUAJIT:-luajit}" >/dev/null; then
    run=(env "LUA_CPATH=$jit_build/?.so;;" "${LUAJIT:-luajit}")
  else log "submit rate under LuaJIT skipped: no $jit_build/s2/core.so or luajit"; continue
  fi
  for mode in drop keep sample; do
    log "submit rate ($interp): $submit_records x 100 B, tickets $mode (null sink)"
    if line="$("$here/with_sink.sh" python3 "$here/peers/measure.py" "${run[@]}" \
                 "$here/submit_rate.lua" --tickets "$mode" --records "$submit_records")"; then
      echo "$line" >>"$results"
      python3 - "$line" >&2 <<'PY'
import json, sys
r = json.loads(sys.argv[1])
print(f"run_all: submit {r['sdk']} ({r['tickets']}) {r['submit_records_per_s']:.0f} rec/s accepted, "
      f"{r['records_per_s']:.0f} rec/s acked, {r['cpu_us_per_record']} us/rec, rss {r['peak_rss_mb']} MiB")
PY
    else
      failures=1
      echo "{\"sdk\":\"$interp\",\"workload\":\"submit\",\"tickets\":\"$mode\",\"target\":\"sink\",\"record_size\":100,\"records\":$submit_records,\"error\":\"run failed, see stderr\"}" >>"$results"
    fi
  done
  done
fi

# ---------------------------------------------------------------- 1 GiB through the producer
rss_records="${RSS_RECORDS:-1048576}"
rss_size="${RSS_RECORD_SIZE:-1024}"
if [ "$rss_records" -gt 0 ]; then
  export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;" LUA_CPATH="$build/?.so;;"
  log "RSS run: $rss_records x $rss_size B through the Lua producer"
  # 1 ack in 1000 timed: the harness's own ticket FIFO stays out of the peak RSS.
  if line="$(python3 "$here/peers/measure.py" "${LUA:-lua5.4}" "$here/lua_bench.lua" \
               --workload producer --record-size "$rss_size" --records "$rss_records" \
               --sample 1000 --tag rss)"; then
    echo "$line" >>"$results"
    python3 - "$line" >&2 <<'PY'
import json, sys
r = json.loads(sys.argv[1])
limit = r["max_inflight_bytes"] / 1048576 + 16
print(f"run_all: RSS run {r['records_per_s']:.0f} rec/s {r['mib_per_s']:.1f} MiB/s, "
      f"peak RSS {r['peak_rss_mb']} MiB (target <= {limit:.0f} MiB)")
PY
  else
    failures=1
    echo "{\"sdk\":\"lua\",\"workload\":\"producer\",\"tag\":\"rss\",\"record_size\":$rss_size,\"records\":$rss_records,\"error\":\"run failed, see stderr\"}" >>"$results"
  fi
fi

# ---------------------------------------------------------------- where the CPU goes (perf)
if [ -z "${NO_PERF:-}" ]; then
  export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;" LUA_CPATH="$build/?.so;;"
  for s in 1 100; do
    log "perf: producer 128 B, 1 in $s acks read"
    python3 "$here/perf_producer.py" --sample "$s" >>"$results" || log "perf run failed"
  done
fi

log "results in $results"
exit "$failures"
