#!/usr/bin/env bash
# Runs a command with an in-memory s2-lite on a free loopback port, then stops the server,
# also when the command fails or is interrupted. The command sees:
#   S2_TEST_ENDPOINT=http://127.0.0.1:PORT
#   S2_ACCOUNT_ENDPOINT / S2_BASIN_ENDPOINT (same), S2_ACCESS_TOKEN=ignored
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
server="$("$here/install-s2-lite.sh")"

port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

logdir="${TMPDIR:-/tmp}"
log="$(mktemp "$logdir/s2-lite.XXXXXX.log")"
pid=""
stop() {
  if [ -n "$pid" ]; then
    kill "$pid" 2>/dev/null || true
    # s2-lite shuts down gracefully (up to 10 s); do not wait that long for an in-memory store.
    for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  fi
  rm -f "$log"
}
trap stop EXIT
trap 'exit 130' INT TERM

# A free port can be taken between the check and the bind: try a few.
endpoint=""
for attempt in 1 2 3 4 5; do
  port=""
  for _ in $(seq 1 50); do
    candidate=$(( 20000 + RANDOM % 30000 ))
    if ! port_in_use "$candidate"; then port="$candidate"; break; fi
  done
  [ -n "$port" ] || { echo "with-s2-lite: no free port found" >&2; exit 1; }
  RUST_LOG="${RUST_LOG:-warn}" "$server" --port "$port" >"$log" 2>&1 &
  pid=$!
  for i in $(seq 1 300); do
    if curl -fsS -m 1 "http://127.0.0.1:$port/health" >/dev/null 2>&1; then
      endpoint="http://127.0.0.1:$port"
      break
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  [ -n "$endpoint" ] && break
  if kill -0 "$pid" 2>/dev/null; then
    echo "with-s2-lite: no /health after 30 s" >&2; cat "$log" >&2; exit 1
  fi
  wait "$pid" 2>/dev/null || true
  pid=""
  grep -qi "address already in use" "$log" || { echo "with-s2-lite: server exited during start-up:" >&2; cat "$log" >&2; exit 1; }
  echo "with-s2-lite: port $port was taken, trying another (attempt $attempt)" >&2
done
[ -n "$endpoint" ] || { echo "with-s2-lite: could not start s2-lite" >&2; exit 1; }

export S2_TEST_ENDPOINT="$endpoint" S2_ACCOUNT_ENDPOINT="$endpoint" S2_BASIN_ENDPOINT="$endpoint"
export S2_ACCESS_TOKEN="${S2_ACCESS_TOKEN:-ignored}"
set +e
"$@"
status=$?
set -e
exit "$status"
