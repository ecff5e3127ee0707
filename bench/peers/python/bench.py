"""Peer benchmark for the official Python SDK (PyPI s2-sdk), run by bench/run_peers.sh.

  python bench.py --workload producer|session|append|read_session|read_unary \
                  --record-size N --records N --basin B --stream S

read_session / read_unary (issue 15) read N records from seq_num 0 of a stream that holds
them (bench/run_peers.sh prepares it, or it is the null sink's gen-SIZE-N): one read_session
with count N, every record taken; or unary reads of 1000-record pages.

Endpoints come from S2_ACCOUNT_ENDPOINT / S2_BASIN_ENDPOINT (Endpoints.from_env), the token
from S2_ACCESS_TOKEN. Prints one JSON line; cpu_user_s / cpu_sys_s / peak_rss_mb are null
here and filled in by the runner, which measures the whole child process.
"""

import argparse
import asyncio
import json
import math
import os
import sys
import time
from datetime import timedelta
from importlib.metadata import version

from s2_sdk import S2, AppendInput, Batching, Endpoints, ReadLimit, Record, SeqNum

ONE_MIB = 1024 * 1024


def die(msg: str) -> None:
    print(f"python peer: {msg}", file=sys.stderr)
    os._exit(1)


def percentile(sorted_vals, p):
    if not sorted_vals:
        return None
    return round(sorted_vals[max(1, math.ceil(p * len(sorted_vals))) - 1], 3)


async def consume(queue: asyncio.Queue, lat: list, check_seq: bool) -> None:
    """Tickets resolve in order; stamp each ack as it resolves."""
    expected = None
    while True:
        item = await queue.get()
        if item is None:
            return
        t0, ticket = item
        ack = await ticket
        lat.append((time.perf_counter() - t0) * 1e3)
        if check_seq:
            if expected is not None and ack.seq_num != expected:
                die(f"seq_num {ack.seq_num} != expected {expected}")
            expected = ack.seq_num + 1


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workload", default="producer", choices=["producer", "session", "append", "read_session", "read_unary"])
    ap.add_argument("--record-size", type=int, default=1024)
    ap.add_argument("--records", type=int, default=10000)
    ap.add_argument("--basin", required=True)
    ap.add_argument("--stream", required=True)
    args = ap.parse_args()

    body = b"x" * args.record_size
    n = args.records
    lat: list[float] = []
    batch_records = None

    async with S2(
        os.environ.get("S2_ACCESS_TOKEN") or "ignored", endpoints=Endpoints.from_env()
    ) as s2:
        stream = s2.basin(args.basin).stream(args.stream)
        cpu0 = time.process_time()
        start = time.perf_counter()
        if args.workload == "producer":
            queue: asyncio.Queue = asyncio.Queue()
            consumer = asyncio.create_task(consume(queue, lat, True))
            batching = Batching(max_records=1000, max_bytes=ONE_MIB, linger=timedelta(milliseconds=5))
            async with stream.producer(batching=batching, max_unacked_bytes=5 * ONE_MIB) as producer:
                for _ in range(n):
                    t0 = time.perf_counter()
                    ticket = await producer.submit(Record(body=body))
                    queue.put_nowait((t0, ticket))
            queue.put_nowait(None)
            await consumer
        elif args.workload == "session":
            batch_records = max(1, min(1000, ONE_MIB // (args.record_size + 8)))
            queue = asyncio.Queue()
            consumer = asyncio.create_task(consume(queue, lat, False))
            async with stream.append_session(max_unacked_bytes=5 * ONE_MIB) as session:
                left = n
                while left > 0:
                    k = min(left, batch_records)
                    records = [Record(body=body) for _ in range(k)]
                    t0 = time.perf_counter()
                    ticket = await session.submit(AppendInput(records=records))
                    queue.put_nowait((t0, ticket))
                    left -= k
            queue.put_nowait(None)
            await consumer
        elif args.workload == "read_session":
            got = 0
            session = stream.read_session(start=SeqNum(0), limit=ReadLimit(count=n))
            async for batch in session:
                for r in batch.records:
                    if r.seq_num != got:
                        die(f"seq_num {r.seq_num} != expected {got}")
                    got += 1
                if got >= n:
                    break
            await session.close()
            if got != n:
                die(f"read {got} records, expected {n}")
        elif args.workload == "read_unary":
            batch_records = max(1, min(1000, ONE_MIB // (args.record_size + 8)))
            got = 0
            while got < n:
                t0 = time.perf_counter()
                batch = await stream.read(start=SeqNum(got), limit=ReadLimit(count=min(1000, n - got)))
                lat.append((time.perf_counter() - t0) * 1e3)
                if not batch.records:
                    die(f"empty page at {got}")
                for r in batch.records:
                    if r.seq_num != got:
                        die(f"seq_num {r.seq_num} != expected {got}")
                    got += 1
        else:
            batch_records = 1
            for _ in range(n):
                t0 = time.perf_counter()
                await stream.append(AppendInput(records=[Record(body=body)]))
                lat.append((time.perf_counter() - t0) * 1e3)
        seconds = time.perf_counter() - start
        cpu_window = time.process_time() - cpu0

        tail = await stream.check_tail()
        reading = args.workload.startswith("read_")
        if (reading and tail.seq_num < n) or (not reading and tail.seq_num != n):
            die(f"tail is {tail.seq_num} after {n} records: records did not land")

    lat.sort()
    print(
        json.dumps(
            {
                "sdk": "python",
                "version": version("s2-sdk"),
                "workload": args.workload,
                "record_size": args.record_size,
                "records": n,
                "batch_records": batch_records,
                "seconds": round(seconds, 4),
                "records_per_s": round(n / seconds, 1),
                "mib_per_s": round(n * args.record_size / seconds / ONE_MIB, 3),
                "ack_p50_ms": percentile(lat, 0.50),
                "ack_p99_ms": percentile(lat, 0.99),
                "cpu_window_s": round(cpu_window, 2),
                "cpu_user_s": None,
                "cpu_sys_s": None,
                "peak_rss_mb": None,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    asyncio.run(main())
