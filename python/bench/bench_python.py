#!/usr/bin/env python3
"""Python producers side by side (issue 13): this package against aiokpl and boto3
``put_records``, with ``kpl put`` (the Rust producer) as the reference, on one workload and one
endpoint, in one run.

The workload is the seed workload: 100,000 JSON events of ~60 bytes over 1,000 user keys (fixed
seed), into a fresh 4-shard stream of `kpl local` on 127.0.0.1 for each contestant. Each
contestant runs in a process of its own; its records are built before the clock starts, and
the clock stops when every record's outcome is known. CPU is the whole process's (every
thread, the Rust engine's included; for ``kpl put`` its rusage). After each run the stream is
read back: the user records confirmed must all be there, and the Kinesis records are counted.

Usage: python bench_python.py --kpl PATH/TO/kpl [--records N] [--repeat R] [--only NAME,...]
(scripts/bench-python.sh sets up the venv and the binary and runs this).
"""

import argparse
import asyncio
import json
import os
import random
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time

CONTESTANTS = {
    "ours-async-futures": "kinesis_producer.Producer, put_nowait per record, each awaited",
    "ours-async-put-many": "kinesis_producer.Producer, put_many in batches of 1,000",
    "ours-sync-futures": "kinesis_producer.SyncProducer, put per record, wait",
    "ours-sync-put-many": "kinesis_producer.SyncProducer, put_many in batches of 1,000",
    "aiokpl-futures": "aiokpl 0.2.0 Producer, put_record per record, wait every outcome",
    "boto3-put-records": "boto3 put_records, chunks of 500, one after another",
    "kpl-put": "kpl put --json --partition-key-field user (Rust; reads and parses the file)",
}


def events(n: int):
    """The seed workload: [(line, user)], as scripts/bench-cli.sh makes it (its own seed)."""
    rng = random.Random(7)
    kinds = ["click", "view", "purchase", "scroll", "login"]
    out = []
    for i in range(n):
        user = "user-%04d" % rng.randrange(1000)
        line = '{"user":"%s","event":"%s","seq":%d,"v":%.3f}' % (
            user,
            rng.choice(kinds),
            i,
            rng.random(),
        )
        out.append((line.encode(), user))
    return out


# ─── Contestants (each in its own process) ──────────────────────────────────────────────────


def run_ours(name, endpoint, stream, records, rate_limit):
    from kinesis_producer import Producer, PutError, SyncProducer

    config = {"RateLimit": rate_limit}
    chunks = [records[i : i + 1000] for i in range(0, len(records), 1000)]
    if name.startswith("ours-async"):

        async def main():
            async with Producer(endpoint_url=endpoint, config=config) as p:
                t0, c0 = time.perf_counter(), time.process_time()
                if name == "ours-async-futures":
                    futs = [p.put_nowait(stream, d, partition_key=k) for d, k in records]
                    # Awaited one by one, as aiokpl's below.
                    outcomes = []
                    for f in futs:
                        try:
                            outcomes.append(await f)
                        except PutError as e:
                            outcomes.append(e)
                else:
                    lists = await asyncio.gather(
                        *[p.put_many(stream, c) for c in chunks]
                    )
                    outcomes = [o for lst in lists for o in lst]
                t1, c1 = time.perf_counter(), time.process_time()
            return outcomes, t1 - t0, c1 - c0

        outcomes, wall, cpu = asyncio.run(main())
    else:
        with SyncProducer(endpoint_url=endpoint, config=config) as p:
            t0, c0 = time.perf_counter(), time.process_time()
            if name == "ours-sync-futures":
                futs = [p.put(stream, d, partition_key=k) for d, k in records]
                outcomes = []
                for f in futs:
                    try:
                        outcomes.append(f.result())
                    except PutError as e:
                        outcomes.append(e)
            else:
                futs = [p.put_many(stream, c) for c in chunks]
                outcomes = [o for f in futs for o in f.result()]
            t1, c1 = time.perf_counter(), time.process_time()
        wall, cpu = t1 - t0, c1 - c0
    confirmed = sum(1 for o in outcomes if not isinstance(o, BaseException))
    return confirmed, wall, cpu


def run_aiokpl(endpoint, stream, records):
    from aiokpl import Config, Producer

    async def main():
        cfg = Config(
            region="us-east-1",
            endpoint_url=endpoint,
            aws_access_key_id="bench",
            aws_secret_access_key="bench",
            aggregation_enabled=True,
        )
        async with Producer(cfg) as p:
            t0, c0 = time.perf_counter(), time.process_time()
            outs = [
                await p.put_record(stream=stream, partition_key=k, data=d) for d, k in records
            ]
            await p.flush()
            results = [await o.wait() for o in outs]
            t1, c1 = time.perf_counter(), time.process_time()
        return sum(1 for r in results if r.success), t1 - t0, c1 - c0

    return asyncio.run(main())


def run_boto3(endpoint, stream, records):
    import boto3

    client = boto3.client(
        "kinesis",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="bench",
        aws_secret_access_key="bench",
    )
    t0, c0 = time.perf_counter(), time.process_time()
    confirmed = 0
    for i in range(0, len(records), 500):
        chunk = [{"Data": d, "PartitionKey": k} for d, k in records[i : i + 500]]
        out = client.put_records(StreamName=stream, Records=chunk)
        confirmed += sum(1 for r in out["Records"] if "SequenceNumber" in r)
    t1, c1 = time.perf_counter(), time.process_time()
    return confirmed, t1 - t0, c1 - c0


def run_kpl_put(kpl, endpoint, stream, records, rate_limit):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "events.jsonl")
        with open(path, "wb") as f:
            f.write(b"".join(line + b"\n" for line, _ in records))
        props = os.path.join(d, "kpl.properties")
        with open(props, "w") as f:
            f.write(f"RateLimit = {rate_limit}\n")
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        done = subprocess.run(
            [kpl, "put", "--stream", stream, "--endpoint-url", endpoint, "--config", props,
             "--json", "--partition-key-field", "user", path],
            capture_output=True, text=True, check=True,
        )
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    m = re.search(r"(\d+) put, (\d+) failed", done.stderr)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return int(m.group(1)) if m else 0, wall, cpu


def contestant(args):
    records = events(args.records)
    if args.name.startswith("ours"):
        r = run_ours(args.name, args.endpoint, args.stream, records, args.rate_limit)
    elif args.name == "aiokpl-futures":
        r = run_aiokpl(args.endpoint, args.stream, records)
    elif args.name == "boto3-put-records":
        r = run_boto3(args.endpoint, args.stream, records)
    else:
        r = run_kpl_put(args.kpl, args.endpoint, args.stream, records, args.rate_limit)
    confirmed, wall, cpu = r
    print(json.dumps({"confirmed": confirmed, "wall_s": wall, "cpu_s": cpu}))


# ─── The driver ─────────────────────────────────────────────────────────────────────────────


def start_local(kpl):
    proc = subprocess.Popen(
        [kpl, "local", "--port", "0", "--log-level", "error"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    for _ in range(100):
        line = proc.stdout.readline()
        m = re.search(r"listening on (http://127\.0\.0\.1:\d+)", line or "")
        if m:
            return proc, m.group(1)
    proc.kill()
    sys.exit("kpl local did not start")


def kinesis_and_user_records(client, stream):
    """(Kinesis records, user records) in the stream: aggregates counted by their records."""
    from kinesis_producer import deaggregate

    kinesis = users = 0
    for shard in client.list_shards(StreamName=stream)["Shards"]:
        it = client.get_shard_iterator(
            StreamName=stream, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        for _ in range(100_000):
            page = client.get_records(ShardIterator=it, Limit=10_000)
            kinesis += len(page["Records"])
            users += sum(len(deaggregate(r)) for r in page["Records"])
            it = page.get("NextShardIterator")
            if not page["Records"] or not it:
                break
    return kinesis, users


def drive(args):
    import boto3

    proc, endpoint = start_local(args.kpl)
    client = boto3.client(
        "kinesis", endpoint_url=endpoint, region_name="us-east-1",
        aws_access_key_id="bench", aws_secret_access_key="bench",
    )
    names = args.only.split(",") if args.only else list(CONTESTANTS)
    rate_limits = [int(x) for x in args.rate_limits.split(",")]
    rows = []
    try:
        for rate_limit in rate_limits:
            for name in names:
                if rate_limit != rate_limits[0] and not (name.startswith("ours") or name == "kpl-put"):
                    continue  # RateLimit is ours: the others run once
                runs = []
                for rep in range(args.repeat):
                    stream = f"bench-{name}-{rate_limit}-{rep}"
                    client.create_stream(StreamName=stream, ShardCount=4)
                    while client.describe_stream_summary(StreamName=stream)[
                        "StreamDescriptionSummary"]["StreamStatus"] != "ACTIVE":
                        time.sleep(0.05)
                    out = subprocess.run(
                        [sys.executable, __file__, "--contestant", name, "--endpoint", endpoint,
                         "--stream", stream, "--records", str(args.records), "--kpl", args.kpl,
                         "--rate-limit", str(rate_limit)],
                        capture_output=True, text=True, timeout=args.timeout,
                    )
                    if out.returncode != 0:
                        sys.exit(f"{name} failed:\n{out.stderr}")
                    r = json.loads(out.stdout.strip().splitlines()[-1])
                    r["kinesis_records"], r["read_back"] = kinesis_and_user_records(client, stream)
                    runs.append(r)
                    print(f"{name} RateLimit {rate_limit} run {rep + 1}: {r}", file=sys.stderr)
                rows.append((name, rate_limit, runs))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    report(rows, args.records)
    # What a future per record costs in CPython with no producer at all, in the same sitting.
    floor = os.path.join(os.path.dirname(os.path.abspath(__file__)), "future_floor.py")
    print("\nThe futures alone (future_floor.py, medians of 5):")
    subprocess.run([sys.executable, floor, str(args.records)], check=True)


def report(rows, n):
    med = lambda runs, k: statistics.median(r[k] for r in runs)  # noqa: E731
    by = {(name, rl): runs for name, rl, runs in rows}
    print(f"\n{n:,} records per run, medians of {len(rows[0][2])} runs\n")
    spread = lambda runs, k: f"{min(r[k] for r in runs):.2f}-{max(r[k] for r in runs):.2f}"  # noqa: E731
    print("| contestant | RateLimit | confirmed | read back | Kinesis records | wall s (runs) | confirmed/s | CPU s (runs) | CPU µs per record |")
    print("|---|---|---|---|---|---|---|---|---|")
    for name, rl, runs in rows:
        wall, cpu = med(runs, "wall_s"), med(runs, "cpu_s")
        c = min(r["confirmed"] for r in runs)
        print(
            f"| {name} | {rl if name.startswith(('ours', 'kpl')) else '-'} | {c:,} | "
            f"{min(r['read_back'] for r in runs):,} | {int(med(runs, 'kinesis_records')):,} | "
            f"{wall:.2f} ({spread(runs, 'wall_s')}) | {c / wall:,.0f} | "
            f"{cpu:.2f} ({spread(runs, 'cpu_s')}) | {cpu / max(c, 1) * 1e6:.1f} |"
        )
    aio = by.get(("aiokpl-futures", rows[0][1]))
    if aio:
        aw, ac = med(aio, "wall_s"), med(aio, "cpu_s")
        print("\nAgainst aiokpl (same RateLimit rows as above):")
        for name, rl, runs in rows:
            if name.startswith("ours"):
                print(f"- {name} (RateLimit {rl}): {aw / med(runs, 'wall_s'):.1f}x its confirmed "
                      f"records/s, {ac / med(runs, 'cpu_s'):.1f}x less CPU per record")
    for rl in sorted({rl for _, rl, _ in rows}):
        ref = by.get(("kpl-put", rl))
        if ref:
            rc = med(ref, "cpu_s")
            for name, r_rl, runs in rows:
                if name.startswith("ours") and r_rl == rl:
                    print(f"- {name} (RateLimit {rl}): {med(runs, 'cpu_s') / rc:.2f}x the CPU of kpl put")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--kpl", required=True)
    ap.add_argument("--records", type=int, default=100_000)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--only", default="")
    ap.add_argument("--rate-limits", default="150,1000000",
                    help="our RateLimit values to run at (the KPL's default is 150)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--contestant")
    ap.add_argument("--endpoint")
    ap.add_argument("--stream")
    ap.add_argument("--rate-limit", type=int, default=150)
    args = ap.parse_args()
    if args.contestant:
        args.name = args.contestant
        contestant(args)
    else:
        drive(args)


if __name__ == "__main__":
    main()
