#!/usr/bin/env bash
# Peer benchmarks: the same workloads through the official S2 SDKs (Rust, Go, TypeScript,
# Python) and a raw curl floor, against the server in S2_ACCOUNT_ENDPOINT / S2_BASIN_ENDPOINT.
#
#   scripts/with-s2-lite.sh bench/run_peers.sh RESULTS.jsonl
#
# Installs or builds what is missing (idempotent; cached under ${S2_LUA_CACHE:-~/.cache/s2-lua}),
# creates one fresh basin (create_stream_on_append) and runs every SDK x workload on its own new
# stream, appending one JSON line per run to RESULTS.jsonl (see bench/README-peers.md).
#
# Environment:
#   PEERS="rust go ts python curl"  which peers to run (default: these five). Three more are
#                                   known: "lua" (this client, bench/lua_bench.lua, every ack
#                                   timed like the SDKs), "luajit" (the same scripts under
#                                   LuaJIT with the build-jit module) and "lua-sampled"
#                                   (producer only, 1 in LUA_SAMPLE=100 acks timed);
#                                   bench/run_all.sh adds them
#   BUILD=build                     where lua_bench.lua finds s2/core.so (for "lua")
#   BUILD_JIT=build-jit LUAJIT=luajit  the LuaJIT build and interpreter (for "luajit")
#   PEER_SCALE=1                    multiply every record count (e.g. 0.1 for a quick check)
#   APPEND_RECORD_SIZE=128          record size of the unary-append latency runs
#   S2_GO_SDK_SRC=DIR               build the Go peer against this s2-sdk-go v0.20.0 source tree
#                                   (the Go module proxy refuses the module here, see README)
#   PYTHON=python3                  interpreter for the Python venv (>= 3.11)
#   TARGET=s2-lite                  what the endpoints are: "s2-lite", or "sink" (tools/null_sink.c
#                                   under bench/with_sink.sh); every line gets "target": TARGET.
#                                   Against the sink, reads use its generated gen-SIZE-N streams;
#                                   against s2-lite one stream per read case is prepared first
#                                   (bench/read_throughput.lua --prepare-only, not timed)
#   READ_PEERS="lua luajit rust go python ts"  the peers with the read workloads (issue 15)
#   NO_READS=1                      skip the read workloads
set -uo pipefail

results="${1:?usage: run_peers.sh RESULTS.jsonl}"
here="$(cd "$(dirname "$0")" && pwd)"
peers_dir="$here/peers"
cache="${S2_LUA_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/s2-lua}"
peers="${PEERS:-rust go ts python curl}"
scale="${PEER_SCALE:-1}"
append_size="${APPEND_RECORD_SIZE:-128}"
target="${TARGET:-s2-lite}"
read_peers=" ${READ_PEERS:-lua luajit rust go python ts} "
case "$target" in s2-lite|sink) ;; *) echo "run_peers: TARGET is s2-lite or sink" >&2; exit 2 ;; esac
: "${S2_ACCOUNT_ENDPOINT:?S2_ACCOUNT_ENDPOINT is not set (run under scripts/with-s2-lite.sh)}"
: "${S2_BASIN_ENDPOINT:?S2_BASIN_ENDPOINT is not set}"
export S2_ACCESS_TOKEN="${S2_ACCESS_TOKEN:-ignored}"
mkdir -p "$cache"
: >>"$results"

log() { echo "run_peers: $*" >&2; }
now() { date +%s.%N; }
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
json_str() { python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$1"; }
skip_line() { # sdk reason
  echo "{\"sdk\":\"$1\",\"target\":\"$target\",\"skipped\":$(json_str "$2")}" >>"$results"
}

# ---------------------------------------------------------------- install / build (idempotent)
declare -A cmd ready read_cmd
reason=""
fail() { reason="$*"; }

setup_rust() {
  command -v cargo >/dev/null || { fail "cargo not found"; return 1; }
  local target="$cache/bench-rust-target"
  CARGO_TARGET_DIR="$target" cargo build --release --locked --quiet \
    --manifest-path "$peers_dir/rust/Cargo.toml" >&2 || { fail "cargo build failed"; return 1; }
  cmd[rust]="$target/release/s2-peer-bench"
}

setup_go() {
  command -v go >/dev/null || { fail "go not found"; return 1; }
  local dir="$cache/bench-go"
  mkdir -p "$dir"
  cp "$peers_dir/go/go.mod" "$peers_dir/go/go.sum" "$peers_dir/go/main.go" "$dir/"
  if [ -n "${S2_GO_SDK_SRC:-}" ]; then
    [ -f "$S2_GO_SDK_SRC/go.mod" ] || { fail "S2_GO_SDK_SRC=$S2_GO_SDK_SRC has no go.mod"; return 1; }
    (cd "$dir" && go mod edit -replace "github.com/s2-streamstore/s2-sdk-go=$S2_GO_SDK_SRC") || return 1
  fi
  # -mod=mod: go.sum pins the SDK's dependencies; the SDK's own line is added (and checked
  # against the checksum database) when it comes from the module proxy.
  if ! (cd "$dir" && go build -mod=mod -o s2-peer-bench-go . >"$dir/build.log" 2>&1); then
    if grep -q "s2-sdk-go.*403\|s2-sdk-go.*not available" "$dir/build.log"; then
      fail "Go module proxy refuses github.com/s2-streamstore/s2-sdk-go (403); set S2_GO_SDK_SRC to a v0.20.0 source tree"
    else
      fail "go build failed: $(tail -3 "$dir/build.log" | tr '\n' ' ')"
    fi
    return 1
  fi
  cmd[go]="$dir/s2-peer-bench-go"
}

setup_ts() {
  command -v node >/dev/null && command -v npm >/dev/null || { fail "node/npm not found"; return 1; }
  local dir="$cache/bench-ts"
  mkdir -p "$dir"
  if ! cmp -s "$peers_dir/ts/package-lock.json" "$dir/package-lock.json" || [ ! -d "$dir/node_modules/@s2-dev/streamstore" ]; then
    cp "$peers_dir/ts/package.json" "$peers_dir/ts/package-lock.json" "$dir/"
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2) || { fail "npm ci failed"; return 1; }
  fi
  cp "$peers_dir/ts/bench.mjs" "$dir/bench.mjs"   # ESM resolves packages next to the script
  cmd[ts]="node $dir/bench.mjs"
}

setup_python() {
  local py="${PYTHON:-python3}" venv="$cache/bench-py"
  command -v "$py" >/dev/null || { fail "$py not found"; return 1; }
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { fail "s2-sdk needs Python >= 3.11 (set PYTHON)"; return 1; }
  if ! cmp -s "$peers_dir/python/requirements.txt" "$venv/requirements.txt"; then
    rm -rf "$venv"
    "$py" -m venv "$venv" || { fail "venv failed"; return 1; }
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
      -r "$peers_dir/python/requirements.txt" >&2 || { rm -rf "$venv"; fail "pip install failed"; return 1; }
    cp "$peers_dir/python/requirements.txt" "$venv/requirements.txt"
  fi
  cmd[python]="$venv/bin/python $peers_dir/python/bench.py"
}

setup_lua() {
  local lua="${LUA:-lua5.4}" build="${BUILD:-build}" root
  root="$(cd "$here/.." && pwd)"
  command -v "$lua" >/dev/null || { fail "$lua not found"; return 1; }
  case "$build" in /*) ;; *) build="$root/$build" ;; esac
  [ -f "$build/s2/core.so" ] || { fail "$build/s2/core.so missing (run make)"; return 1; }
  # Only the Lua peer reads these; the checkout's modules, not an installed copy.
  export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;" LUA_CPATH="$build/?.so;;"
  cmd[lua]="$lua $here/lua_bench.lua"
  read_cmd[lua]="$lua $here/read_throughput.lua --target $target"
}

# The same Lua scripts under LuaJIT against the LuaJIT build of the module; they report
# "sdk": "luajit". LUA_CPATH is set for the command alone (the lua peer's is exported).
setup_luajit() {
  local lua="${LUAJIT:-luajit}" build="${BUILD_JIT:-build-jit}" root
  root="$(cd "$here/.." && pwd)"
  command -v "$lua" >/dev/null || { fail "$lua not found"; return 1; }
  case "$build" in /*) ;; *) build="$root/$build" ;; esac
  [ -f "$build/s2/core.so" ] || { fail "$build/s2/core.so missing (run make luajit)"; return 1; }
  case "$build" in *[[:space:]]*) fail "BUILD_JIT must not contain spaces"; return 1 ;; esac
  export LUA_PATH="$root/lua/?.lua;$root/lua/?/init.lua;;"
  cmd[luajit]="env LUA_CPATH=$build/?.so;; $lua $here/lua_bench.lua"
  read_cmd[luajit]="env LUA_CPATH=$build/?.so;; $lua $here/read_throughput.lua --target $target"
}

setup_lua_sampled() {
  setup_lua || return 1
  cmd[lua-sampled]="${cmd[lua]} --sample ${LUA_SAMPLE:-100}"
}

setup_curl() {
  command -v curl >/dev/null || { fail "curl not found"; return 1; }
  cmd[curl]="bash $peers_dir/curl_floor.sh"
}

for p in $peers; do
  t0=$(now)
  reason="setup failed"
  if setup_"${p//-/_}"; then
    ready[$p]=1
    log "$p ready ($(since "$t0") s)"
  else
    log "$p SKIPPED: $reason"
    skip_line "$p" "$reason"
  fi
done

# ---------------------------------------------------------------- basin
basin="peers-$(date +%s)-$((RANDOM % 10000))"
if ! curl -fsS -X POST "${S2_ACCOUNT_ENDPOINT%/}/v1/basins" \
     -H "authorization: Bearer $S2_ACCESS_TOKEN" -H "content-type: application/json" \
     -H "s2-request-token: $basin" \
     -d "{\"basin\":\"$basin\",\"config\":{\"create_stream_on_append\":true}}" >/dev/null; then
  log "could not create basin $basin"; exit 1
fi
log "basin $basin"

# ---------------------------------------------------------------- runs
scaled() { awk -v n="$1" -v s="$scale" 'BEGIN { v = int(n * s); print (v < 1 ? 1 : v) }'; }
# workload record_size records
matrix=(
  "producer 128 $(scaled 200000)"
  "producer 1024 $(scaled 100000)"
  "producer 8192 $(scaled 20000)"
  "session 1024 $(scaled 100000)"
  "append $append_size $(scaled 1000)"
)
if [ -z "${NO_READS:-}" ]; then
  matrix+=(
    "read_session 128 $(scaled 1000000)"
    "read_session 8192 $(scaled 100000)"
    "read_session_batch 128 $(scaled 1000000)"
    "read_session_batch 8192 $(scaled 100000)"
    "read_session_columns 128 $(scaled 1000000)"
    "read_session_columns 8192 $(scaled 100000)"
    "read_unary 128 $(scaled 100000)"
  )
fi

# The stream a read case reads: the sink generates gen-SIZE-N; on s2-lite it is written once
# (through the Lua client's append session, not timed) and read by every peer.
declare -A prepared
read_stream() { # size n -> the stream's name in $stream; 1 if it cannot be prepared
  local size="$1" n="$2" name
  if [ "$target" = sink ]; then stream="gen-$size-$n"; return 0; fi
  name="read-$size-$n"
  if [ -z "${prepared[$name]:-}" ]; then
    setup_lua || { log "cannot prepare $name: $reason"; return 1; }
    log "preparing $name ($n records of $size B)"
    ${LUA:-lua5.4} "$here/read_throughput.lua" --target s2-lite --prepare-only --record-size "$size" \
      --records "$n" --basin "$basin" --stream "$name" >&2 || { log "preparing $name failed"; return 1; }
    prepared[$name]=1
  fi
  stream="$name"
}

failures=0
# Workload-major order: s2-lite's in-memory state grows during the run and shares the CPU, so
# interleaving the SDKs spreads that drift over all of them instead of penalising the last one.
for row in "${matrix[@]}"; do
  read -r workload size n <<<"$row"
  for p in $peers; do
    [ -n "${ready[$p]:-}" ] || continue
    [ "$p" = curl ] && [ "$workload" != append ] && continue
    [ "$p" = lua-sampled ] && [ "$workload" != producer ] && continue
    # reader:next_batch / next_columns (many records per call) are the Lua client's own API
    case "$workload" in read_session_batch|read_session_columns)
      [ "$p" != lua ] && [ "$p" != luajit ] && continue ;;
    esac
    run="${cmd[$p]}"
    stream="$p-$workload-$size"
    case "$workload" in
      read_*)
        case "$read_peers" in *" $p "*) ;; *) continue ;; esac
        [ -n "${read_cmd[$p]:-}" ] && run="${read_cmd[$p]}"
        read_stream "$size" "$n" || { failures=$((failures + 1)); continue; } ;;
    esac
    # shellcheck disable=SC2086 # cmd[...] holds a command and its fixed arguments
    if line="$(python3 "$peers_dir/measure.py" $run --workload "$workload" \
                 --record-size "$size" --records "$n" --basin "$basin" --stream "$stream")"; then
      line="$(python3 -c 'import json,sys; r=json.loads(sys.argv[1]); r["target"]=sys.argv[2]; print(json.dumps(r))' "$line" "$target")"
      echo "$line" >>"$results"
      python3 - "$line" >&2 <<'EOF'
import json, sys
r = json.loads(sys.argv[1])
sdk = r['sdk'] + (f"/{r['latency_sample']}" if r.get('latency_sample', 1) > 1 else "")
print(f"run_peers: {r['target']:<7} {sdk:<6} {r['workload']:<12} {r['record_size']:>5} B x {r['records']:<7} "
      f"{r['records_per_s']:>10.0f} rec/s {r['mib_per_s']:>7.2f} MiB/s  "
      f"ack p50 {r['ack_p50_ms']} ms p99 {r['ack_p99_ms']} ms  "
      f"cpu {r['cpu_user_s']}+{r['cpu_sys_s']} s ({r.get('cpu_us_per_record')} us/rec)  rss {r['peak_rss_mb']} MiB")
EOF
    else
      failures=$((failures + 1))
      log "FAILED: $p $workload $size x $n"
      echo "{\"sdk\":\"$p\",\"target\":\"$target\",\"workload\":\"$workload\",\"record_size\":$size,\"records\":$n,\"error\":\"run failed, see stderr\"}" >>"$results"
    fi
  done
done

log "results in $results ($failures failed runs)"
[ "$failures" -eq 0 ]
