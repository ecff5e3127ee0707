// Peer benchmark for the official TypeScript SDK (@s2-dev/streamstore), run by bench/run_peers.sh.
//
//   node bench.mjs --workload producer|session|append|read_session|read_unary \
//                  --record-size N --records N --basin B --stream S
//
// read_session / read_unary (issue 15) read N records from seq_num 0 of a stream that holds
// them (bench/run_peers.sh prepares it, or it is the null sink's gen-SIZE-N), as bytes: one
// readSession with count N, every record taken; or unary reads of 1000-record pages.
//
// Endpoints and token come from S2_ACCOUNT_ENDPOINT / S2_BASIN_ENDPOINT / S2_ACCESS_TOKEN
// (S2Environment.parse). Prints one JSON line; cpu_user_s / cpu_sys_s / peak_rss_mb are null
// here and filled in by the runner, which measures the whole child process.
// The runner copies this file next to the cached node_modules (~/.cache/s2-lua/bench-ts).
import { readFileSync } from "node:fs";
import {
  AppendInput,
  AppendRecord,
  BatchTransform,
  Producer,
  S2,
  S2Environment,
} from "@s2-dev/streamstore";

const SDK_VERSION = JSON.parse(
  readFileSync(new URL("./node_modules/@s2-dev/streamstore/package.json", import.meta.url)),
).version;
const ONE_MIB = 1024 * 1024;

function die(msg) {
  process.stderr.write(`ts peer: ${msg}\n`);
  process.exit(1);
}

function parseArgs(argv) {
  const a = { workload: "producer", recordSize: 1024, records: 10000, basin: "", stream: "" };
  for (let i = 0; i < argv.length; i += 2) {
    const k = argv[i], v = argv[i + 1];
    if (v === undefined) die(`${k} needs a value`);
    if (k === "--workload") a.workload = v;
    else if (k === "--record-size") a.recordSize = Number(v);
    else if (k === "--records") a.records = Number(v);
    else if (k === "--basin") a.basin = v;
    else if (k === "--stream") a.stream = v;
    else die(`unknown argument ${k}`);
  }
  if (!a.basin || !a.stream) die("--basin and --stream are required");
  return a;
}

const percentile = (sorted, p) =>
  sorted.length === 0
    ? null
    : Math.round(sorted[Math.max(1, Math.ceil(p * sorted.length)) - 1] * 1000) / 1000;
const nowMs = () => performance.now();

// Resolves `done` after `total` ticks, without keeping one promise per record alive.
function counter(total) {
  let left = total, resolve;
  const done = new Promise((r) => (resolve = r));
  if (left === 0) resolve();
  return { done, tick: () => { if (--left === 0) resolve(); } };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const s2 = new S2({ ...S2Environment.parse(), accessToken: process.env.S2_ACCESS_TOKEN || "ignored" });
  const stream = s2.basin(args.basin).stream(args.stream);
  const body = new Uint8Array(args.recordSize).fill(0x78);
  const n = args.records;
  const lat = [];
  let batchRecords = null;

  const cpu0 = process.cpuUsage();
  const start = nowMs();
  if (args.workload === "producer") {
    const session = await stream.appendSession({ maxInflightBytes: 5 * ONE_MIB });
    const producer = new Producer(
      new BatchTransform({ lingerDurationMillis: 5, maxBatchRecords: 1000, maxBatchBytes: ONE_MIB }),
      session,
    );
    let expected = null;
    const acked = counter(n);
    for (let i = 0; i < n; i++) {
      const t0 = nowMs();
      const ticket = await producer.submit(AppendRecord.bytes({ body }));
      ticket.ack().then((ack) => {
        lat.push(nowMs() - t0);
        const seq = ack.seqNum();
        if (expected !== null && seq !== expected) die(`seq_num ${seq} != expected ${expected}`);
        expected = seq + 1;
        acked.tick();
      }, (e) => die(`record ack: ${e}`));
    }
    await producer.close(); // closes the session too
    await acked.done;
  } else if (args.workload === "session") {
    batchRecords = Math.max(1, Math.min(1000, Math.floor(ONE_MIB / (args.recordSize + 8))));
    const session = await stream.appendSession({ maxInflightBytes: 5 * ONE_MIB });
    const acked = counter(Math.ceil(n / batchRecords));
    for (let left = n; left > 0; ) {
      const k = Math.min(left, batchRecords);
      const records = new Array(k);
      for (let i = 0; i < k; i++) records[i] = AppendRecord.bytes({ body });
      const t0 = nowMs();
      const ticket = await session.submit(AppendInput.create(records));
      ticket.ack().then(() => {
        lat.push(nowMs() - t0);
        acked.tick();
      }, (e) => die(`batch ack: ${e}`));
      left -= k;
    }
    await acked.done;
    await session.close();
  } else if (args.workload === "append") {
    batchRecords = 1;
    for (let i = 0; i < n; i++) {
      const t0 = nowMs();
      await stream.append(AppendInput.create([AppendRecord.bytes({ body })]));
      lat.push(nowMs() - t0);
    }
  } else if (args.workload === "read_session") {
    const session = await stream.readSession(
      { start: { from: { seqNum: 0 } }, stop: { limits: { count: n } } },
      { as: "bytes" },
    );
    let got = 0;
    for await (const r of session) {
      if (r.seqNum !== got) die(`seq_num ${r.seqNum} != expected ${got}`);
      if (r.body.length !== args.recordSize) die(`body of ${r.body.length} bytes`);
      got++;
      if (got >= n) break;
    }
    if (got !== n) die(`read ${got} records, expected ${n}`);
  } else if (args.workload === "read_unary") {
    batchRecords = Math.max(1, Math.min(1000, Math.floor(ONE_MIB / (args.recordSize + 8))));
    let got = 0;
    while (got < n) {
      const t0 = nowMs();
      const batch = await stream.read(
        { start: { from: { seqNum: got } }, stop: { limits: { count: Math.min(1000, n - got) } } },
        { as: "bytes" },
      );
      lat.push(nowMs() - t0);
      if (batch.records.length === 0) die(`empty page at ${got}`);
      for (const r of batch.records) {
        if (r.seqNum !== got) die(`seq_num ${r.seqNum} != expected ${got}`);
        got++;
      }
    }
  } else {
    die(`unknown workload ${args.workload}`);
  }
  const seconds = (nowMs() - start) / 1000;
  const cpu = process.cpuUsage(cpu0);

  const tail = await stream.checkTail();
  const seq = tail.tail.seqNum;
  const reading = args.workload.startsWith("read_");
  if ((reading && seq < n) || (!reading && seq !== n)) die(`tail is ${seq} after ${n} records: records did not land`);
  await stream.close();

  lat.sort((x, y) => x - y);
  const r = (x, d) => Math.round(x * 10 ** d) / 10 ** d;
  console.log(
    JSON.stringify({
      sdk: "ts",
      version: SDK_VERSION,
      workload: args.workload,
      record_size: args.recordSize,
      records: n,
      batch_records: batchRecords,
      seconds: r(seconds, 4),
      records_per_s: r(n / seconds, 1),
      mib_per_s: r((n * args.recordSize) / seconds / ONE_MIB, 3),
      ack_p50_ms: percentile(lat, 0.5),
      ack_p99_ms: percentile(lat, 0.99),
      cpu_window_s: r((cpu.user + cpu.system) / 1e6, 2),
      cpu_user_s: null,
      cpu_sys_s: null,
      peak_rss_mb: null,
    }),
  );
  process.exit(0);
}

main().catch((e) => die(e?.stack || String(e)));
