#!/usr/bin/env bash
# Latency floor for unary appends: N sequential POSTs of a one-record protobuf AppendInput,
# sent by ONE curl process over a reused HTTP/1.1 keep-alive connection (like an SDK's pool),
# timed per request with -w '%{time_total}'. Prints one JSON line like the SDK peers.
#
#   curl_floor.sh --record-size N --records N --basin B --stream S
#
# Needs S2_BASIN_ENDPOINT (and S2_ACCESS_TOKEN, any value for s2-lite).
set -euo pipefail
record_size=128 records=1000 basin="" stream=""
while [ $# -gt 0 ]; do
  case "$1" in
    --record-size) record_size="$2" ;;
    --records) records="$2" ;;
    --basin) basin="$2" ;;
    --stream) stream="$2" ;;
    --workload) [ "$2" = append ] || { echo "curl_floor: only --workload append" >&2; exit 2; } ;;
    *) echo "curl_floor: unknown argument $1" >&2; exit 2 ;;
  esac
  shift 2
done
[ -n "$basin" ] && [ -n "$stream" ] || { echo "curl_floor: --basin and --stream are required" >&2; exit 2; }
base="${S2_BASIN_ENDPOINT%/}/v1"
token="${S2_ACCESS_TOKEN:-ignored}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# AppendInput { records(1): AppendRecord { body(3): "x" * N } }, varint lengths.
python3 - "$record_size" "$work/body.pb" <<'EOF'
import sys
n, path = int(sys.argv[1]), sys.argv[2]
def varint(v):
    out = bytearray()
    while True:
        b = v & 0x7F
        v >>= 7
        if v:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)
rec = b"\x1a" + varint(n) + b"x" * n
open(path, "wb").write(b"\x0a" + varint(len(rec)) + rec)
EOF

url="$base/streams/$stream/records"
{
  echo "silent"
  echo "show-error"
  echo "request = \"POST\""
  echo "data-binary = \"@$work/body.pb\""
  echo "header = \"content-type: application/protobuf\""
  echo "header = \"accept: application/protobuf\""
  echo "header = \"authorization: Bearer $token\""
  echo "header = \"s2-basin: $basin\""
  echo "write-out = \"%{http_code} %{time_total} %{num_connects}\\n\""
  for _ in $(seq 1 "$records"); do
    echo "url = \"$url\""
    echo "output = \"/dev/null\""
  done
} >"$work/curl.cfg"

start=$(date +%s.%N)
curl -K "$work/curl.cfg" >"$work/times.txt"
end=$(date +%s.%N)

bad=$(awk '$1 != 200' "$work/times.txt" | wc -l)
got=$(wc -l <"$work/times.txt")
[ "$bad" -eq 0 ] && [ "$got" -eq "$records" ] || {
  echo "curl_floor: $got responses, $bad not 200:" >&2; awk '$1 != 200' "$work/times.txt" | head >&2; exit 1; }
connects=$(awk '{s += $3} END {print s}' "$work/times.txt")

tail_json="$(curl -fsS -H "authorization: Bearer $token" -H "s2-basin: $basin" "$url/tail")"
python3 - "$work/times.txt" "$start" "$end" "$record_size" "$records" "$connects" "$tail_json" <<'EOF'
import json, math, sys
path, start, end, size, n, connects, tail = sys.argv[1:]
size, n = int(size), int(n)
lat = sorted(float(line.split()[1]) * 1e3 for line in open(path))
seq = json.loads(tail)["tail"]["seq_num"]
if seq != n:
    sys.exit(f"curl_floor: tail is {seq} after {n} appends: records did not land")
pct = lambda p: round(lat[max(1, math.ceil(p * len(lat))) - 1], 3)
secs = float(end) - float(start)
print(json.dumps({
    "sdk": "curl", "version": "curl " + __import__("subprocess").run(
        ["curl", "--version"], capture_output=True, text=True).stdout.split()[1],
    "workload": "append", "record_size": size, "records": n, "batch_records": 1,
    "seconds": round(secs, 4), "records_per_s": round(n / secs, 1),
    "mib_per_s": round(n * size / secs / 1048576, 3),
    "ack_p50_ms": pct(0.50), "ack_p99_ms": pct(0.99), "cpu_window_s": None,
    "cpu_user_s": None, "cpu_sys_s": None, "peak_rss_mb": None,
    "tcp_connects": int(connects),
}))
EOF
