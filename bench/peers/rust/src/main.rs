//! Peer benchmark for the official Rust SDK (`s2-sdk`), run by bench/run_peers.sh.
//!
//!   s2-peer-bench --workload producer|session|append|read_session|read_unary \
//!                 --record-size N --records N --basin B --stream S
//!
//! read_session / read_unary (issue 15) read N records from seq_num 0 of a stream that holds
//! them (bench/run_peers.sh prepares it, or it is the null sink's gen-SIZE-N): one
//! `read_session` with count N, every record taken; or unary `read`s of 1000-record pages.
//!
//! Endpoints come from S2_ACCOUNT_ENDPOINT / S2_BASIN_ENDPOINT, the token from S2_ACCESS_TOKEN.
//! Prints one JSON line. cpu_user_s / cpu_sys_s / peak_rss_mb are left null: the runner
//! measures the whole child process (bench/peers/measure.py) and fills them in.

use std::time::{Duration, Instant};

use s2_sdk::{
    S2,
    append_session::AppendSessionConfig,
    batching::{BatchLimits, BatchingConfig},
    producer::ProducerConfig,
    types::{
        AppendInput, AppendRecord, AppendRecordBatch, ReadFrom, ReadInput, ReadLimits,
        ReadSessionConfig, ReadStart, ReadStop, S2Config, S2Endpoints,
    },
};
use futures::StreamExt;
use tokio::sync::mpsc;

const SDK_VERSION: &str = "0.35.3";
const ONE_MIB: usize = 1024 * 1024;

struct Args {
    workload: String,
    record_size: usize,
    records: usize,
    basin: String,
    stream: String,
}

fn parse_args() -> Args {
    let mut a = Args {
        workload: "producer".into(),
        record_size: 1024,
        records: 10_000,
        basin: String::new(),
        stream: String::new(),
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < argv.len() {
        let v = argv.get(i + 1).cloned().unwrap_or_else(|| die(&format!("{} needs a value", argv[i])));
        match argv[i].as_str() {
            "--workload" => a.workload = v,
            "--record-size" => a.record_size = v.parse().unwrap_or_else(|_| die("bad --record-size")),
            "--records" => a.records = v.parse().unwrap_or_else(|_| die("bad --records")),
            "--basin" => a.basin = v,
            "--stream" => a.stream = v,
            other => die(&format!("unknown argument {other}")),
        }
        i += 2;
    }
    if a.basin.is_empty() || a.stream.is_empty() {
        die("--basin and --stream are required");
    }
    a
}

fn die(msg: &str) -> ! {
    eprintln!("rust peer: {msg}");
    std::process::exit(2);
}

/// Process CPU (user+sys) in seconds from /proc/self/stat (clock ticks, 100 Hz).
fn cpu_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let rest = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // after ")": state=0, ..., utime=11, stime=12
    let ut: f64 = f.get(11).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    let st: f64 = f.get(12).and_then(|s| s.parse().ok()).unwrap_or(0.0);
    (ut + st) / 100.0
}

fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let idx = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[idx])
}

fn batching() -> BatchingConfig {
    BatchingConfig::new()
        .with_linger(Duration::from_millis(5))
        .with_limits(
            BatchLimits::new()
                .with_max_batch_records(1000)
                .expect("records limit")
                .with_max_batch_bytes(ONE_MIB)
                .expect("bytes limit"),
        )
}

#[tokio::main]
async fn main() {
    let args = parse_args();
    let token = std::env::var("S2_ACCESS_TOKEN").unwrap_or_else(|_| "ignored".into());
    let endpoints = S2Endpoints::from_env().unwrap_or_else(|e| die(&format!("endpoints: {e}")));
    let s2 = S2::new(S2Config::new(token).with_endpoints(endpoints))
        .unwrap_or_else(|e| die(&format!("client: {e}")));
    let basin = s2.basin(args.basin.parse().unwrap_or_else(|e| die(&format!("basin name: {e}"))));
    let stream = basin.stream(args.stream.parse().unwrap_or_else(|e| die(&format!("stream name: {e}"))));

    let body = bytes::Bytes::from(vec![b'x'; args.record_size]);
    let n = args.records;
    let mut lat_ms: Vec<f64> = Vec::with_capacity(n);
    let mut batch_records = 0usize; // 0: chosen by the SDK (producer)

    let cpu0 = cpu_seconds();
    let start = Instant::now();
    match args.workload.as_str() {
        "producer" => {
            let producer = stream.producer(
                ProducerConfig::new()
                    .with_max_unacked_bytes(5 * ONE_MIB as u32)
                    .expect("max unacked")
                    .with_batching(batching()),
            );
            // Tickets resolve in order; a consumer task stamps each ack as it resolves.
            let (tx, mut rx) = mpsc::unbounded_channel();
            let consumer = tokio::spawn(async move {
                let mut lat = Vec::with_capacity(n);
                let mut next_seq = None;
                while let Some((t0, ticket)) = rx.recv().await {
                    let t0: Instant = t0;
                    let ticket: s2_sdk::producer::RecordSubmitTicket = ticket;
                    let ack = ticket.await.unwrap_or_else(|e| die(&format!("record ack: {e}")));
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                    if let Some(expected) = next_seq {
                        if ack.seq_num != expected {
                            die(&format!("seq_num {} != expected {}", ack.seq_num, expected));
                        }
                    }
                    next_seq = Some(ack.seq_num + 1);
                }
                lat
            });
            for _ in 0..n {
                let t0 = Instant::now();
                let record = AppendRecord::new(body.clone()).expect("record");
                let ticket = producer
                    .submit(record)
                    .await
                    .unwrap_or_else(|e| die(&format!("submit: {e}")));
                let _ = tx.send((t0, ticket));
            }
            drop(tx);
            producer.close().await.unwrap_or_else(|e| die(&format!("producer close: {e}")));
            lat_ms = consumer.await.expect("consumer task");
        }
        "session" => {
            batch_records = 1000.min(ONE_MIB / (args.record_size + 8)).max(1);
            let session = stream.append_session(
                AppendSessionConfig::new()
                    .with_max_unacked_bytes(5 * ONE_MIB as u32)
                    .expect("max unacked"),
            );
            let (tx, mut rx) = mpsc::unbounded_channel();
            let consumer = tokio::spawn(async move {
                let mut lat = Vec::new();
                while let Some((t0, ticket)) = rx.recv().await {
                    let t0: Instant = t0;
                    let ticket: s2_sdk::append_session::BatchSubmitTicket = ticket;
                    ticket.await.unwrap_or_else(|e| die(&format!("batch ack: {e}")));
                    lat.push(t0.elapsed().as_secs_f64() * 1e3);
                }
                lat
            });
            let mut left = n;
            while left > 0 {
                let k = left.min(batch_records);
                let batch = AppendRecordBatch::try_from_iter(
                    (0..k).map(|_| AppendRecord::new(body.clone()).expect("record")),
                )
                .expect("batch");
                let t0 = Instant::now();
                let ticket = session
                    .submit(AppendInput::new(batch))
                    .await
                    .unwrap_or_else(|e| die(&format!("session submit: {e}")));
                let _ = tx.send((t0, ticket));
                left -= k;
            }
            drop(tx);
            session.close().await.unwrap_or_else(|e| die(&format!("session close: {e}")));
            lat_ms = consumer.await.expect("consumer task");
        }
        "append" => {
            batch_records = 1;
            for _ in 0..n {
                let batch = AppendRecordBatch::try_from_iter([AppendRecord::new(body.clone()).expect("record")])
                    .expect("batch");
                let t0 = Instant::now();
                stream
                    .append(AppendInput::new(batch))
                    .await
                    .unwrap_or_else(|e| die(&format!("append: {e}")));
                lat_ms.push(t0.elapsed().as_secs_f64() * 1e3);
            }
        }
        "read_session" => {
            let input = ReadInput::new()
                .with_start(ReadStart::new().with_from(ReadFrom::SeqNum(0)))
                .with_stop(ReadStop::new().with_limits(ReadLimits::new().with_count(n)));
            let mut session = stream
                .read_session(input, ReadSessionConfig::new())
                .await
                .unwrap_or_else(|e| die(&format!("read_session: {e}")));
            let mut got = 0u64;
            while let Some(batch) = session.next().await {
                let batch = batch.unwrap_or_else(|e| die(&format!("read: {e}")));
                for r in &batch.records {
                    if r.seq_num != got {
                        die(&format!("seq_num {} != expected {}", r.seq_num, got));
                    }
                    if r.body.len() != args.record_size {
                        die(&format!("body of {} bytes", r.body.len()));
                    }
                    got += 1;
                }
                if got >= n as u64 {
                    break;
                }
            }
            if got != n as u64 {
                die(&format!("read {got} records, expected {n}"));
            }
        }
        "read_unary" => {
            batch_records = 1000.min(ONE_MIB / (args.record_size + 8)).max(1);
            let mut got = 0u64;
            while got < n as u64 {
                let want = 1000.min(n - got as usize);
                let input = ReadInput::new()
                    .with_start(ReadStart::new().with_from(ReadFrom::SeqNum(got)))
                    .with_stop(ReadStop::new().with_limits(ReadLimits::new().with_count(want)));
                let t0 = Instant::now();
                let batch = stream.read(input).await.unwrap_or_else(|e| die(&format!("read: {e}")));
                lat_ms.push(t0.elapsed().as_secs_f64() * 1e3);
                if batch.records.is_empty() {
                    die(&format!("empty page at {got}"));
                }
                for r in &batch.records {
                    if r.seq_num != got {
                        die(&format!("seq_num {} != expected {}", r.seq_num, got));
                    }
                    got += 1;
                }
            }
        }
        other => die(&format!("unknown workload {other}")),
    }
    let seconds = start.elapsed().as_secs_f64();
    let cpu_window = cpu_seconds() - cpu0;

    let tail = stream.check_tail().await.unwrap_or_else(|e| die(&format!("check_tail: {e}")));
    let reading = args.workload.starts_with("read_");
    if (reading && tail.seq_num < n as u64) || (!reading && tail.seq_num != n as u64) {
        die(&format!("tail is {} after {} records: records did not land", tail.seq_num, n));
    }

    lat_ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let fmt = |v: Option<f64>| v.map_or("null".to_string(), |x| format!("{x:.3}"));
    println!(
        "{{\"sdk\":\"rust\",\"version\":\"{}\",\"workload\":\"{}\",\"record_size\":{},\"records\":{},\"batch_records\":{},\"seconds\":{:.4},\"records_per_s\":{:.1},\"mib_per_s\":{:.3},\"ack_p50_ms\":{},\"ack_p99_ms\":{},\"cpu_window_s\":{:.2},\"cpu_user_s\":null,\"cpu_sys_s\":null,\"peak_rss_mb\":null}}",
        SDK_VERSION,
        args.workload,
        args.record_size,
        n,
        if batch_records == 0 { "null".to_string() } else { batch_records.to_string() },
        seconds,
        n as f64 / seconds,
        (n * args.record_size) as f64 / seconds / ONE_MIB as f64,
        fmt(percentile(&lat_ms, 0.50)),
        fmt(percentile(&lat_ms, 0.99)),
        cpu_window,
    );
}
