-- wrk script of the OpenResty benchmark: POSTs a body of RECORD_SIZE bytes ("x") and, when
-- done, prints one line "WRKJSON {...}" (latencies in microseconds) for bench/openresty/run.py.
wrk.method = "POST"
wrk.body = string.rep("x", tonumber(os.getenv("RECORD_SIZE") or "") or 128)
wrk.headers["Content-Type"] = "application/octet-stream"

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRKJSON {"requests":%d,"duration_us":%d,"bytes":%d,"connect":%d,"read":%d,"write":%d,'
      .. '"status":%d,"timeout":%d,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d,"mean_us":%.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
