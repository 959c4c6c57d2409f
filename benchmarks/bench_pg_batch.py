"""Benchmark: shared batches end to end, 1 worker against 3 (issue 18).

    python benchmarks/bench_pg_batch.py [--jobs 600] [--cap 10] [--run-seconds 0.5]
                                        [--repeat 3] [--dsn postgresql://...]
                                        [--workers 1,3]

Each worker is a process with its own account (its own FakeCloud and API key, running cap
`--cap`), all on one batch of `--jobs` jobs of a fixed duration in one PostgreSQL journal;
every worker feeds the same job list. Reports, per worker count, medians of `--repeat`
runs: wall time (first journal open to the last worker's end), database statements per
job (all workers' statements over the jobs), and the claim latency p50/p99 (each
`claim` or `claim_many`, the one-statement transaction that takes jobs and slots, as the
workers timed it, contended ones included), and per run each worker's start, end, jobs
and CPU time. Goal: 3 workers >= 2.7x faster than 1. Without `--dsn` a throw-away cluster
is started (tests/postgres/cluster.py; needs the server binaries).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import statistics
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from openhands_async.testing import FakeCloud  # noqa: E402

_WORKER = """
import asyncio, json, resource, sys, time
import openhands_async as oh
from openhands_async.lib.batch import account_label
from openhands_async.lib.batch.postgres import PostgresJournal

class Timed(PostgresJournal):
    latencies = []
    async def claim(self, conversation_id, *, key=None):
        t = time.perf_counter()
        try:
            return await super().claim(conversation_id, key=key)
        finally:
            self.latencies.append(time.perf_counter() - t)
    async def claim_many(self, conversation_ids):
        t = time.perf_counter()
        try:
            return await super().claim_many(conversation_ids)
        finally:
            self.latencies.append(time.perf_counter() - t)

dsn, batch, key, url, n, cap = sys.argv[1:7]
async def main():
    async with oh.OpenHandsClient(api_key=key, base_url=url) as c:
        journal = Timed(dsn, batch_name=batch, account=account_label(key, url),
                        max_running=int(cap))
        started = time.time()
        async with journal:
            jobs = [oh.Job(f"job {i}", key=f"k{i:05}") for i in range(int(n))]
            done = 0
            async for r in c.run_batch(jobs, journal=journal, max_running=int(cap),
                                       poll_interval=0.1):
                done += r.ok
            trips = journal.round_trips
        ru = resource.getrusage(resource.RUSAGE_SELF)
        print(json.dumps({"start": started, "end": time.time(), "done": done,
                          "trips": trips, "lat": journal.latencies,
                          "cpu": ru.ru_utime + ru.ru_stime}))
asyncio.run(main())
"""


async def one_run(
    dsn: str, workers: int, jobs: int, cap: int, run_seconds: float
) -> dict[str, Any]:
    batch = f"bench-{uuid.uuid4().hex[:8]}"
    host_cpu = time.process_time()
    async with contextlib.AsyncExitStack() as stack:
        clouds = [
            await stack.enter_async_context(
                FakeCloud(api_key=f"key-{i}", max_running=cap, run_seconds=run_seconds)
            )
            for i in range(workers)
        ]
        argv = [(cloud.api_key or "", cloud.base_url, str(jobs), str(cap)) for cloud in clouds]
        procs = [
            await asyncio.create_subprocess_exec(
                sys.executable, "-c", _WORKER, dsn, batch, *a, stdout=asyncio.subprocess.PIPE
            )
            for a in argv
        ]
        reports = [json.loads((await p.communicate())[0]) for p in procs]
        starts = sum(cloud.starts_received for cloud in clouds)
        paused = sum(cloud.paused_by_cap for cloud in clouds)
        peak = max(cloud.peak_running for cloud in clouds)
    host_cpu = time.process_time() - host_cpu  # this process: the FakeClouds
    assert sum(r["done"] for r in reports) == jobs, reports
    assert starts == jobs, starts  # each job started once
    assert paused == 0
    assert peak <= cap
    latencies = sorted(x for r in reports for x in r["lat"])
    first = min(r["start"] for r in reports)
    print(
        f"  {workers} worker(s): "
        + ", ".join(
            f"opened +{r['start'] - first:.2f}s, ended +{r['end'] - first:.1f}s, "
            f"{r['done']} jobs, CPU {r['cpu']:.1f}s"
            for r in reports
        ),
        flush=True,
    )
    return {
        "wall": max(r["end"] for r in reports) - min(r["start"] for r in reports),
        "trips_per_job": sum(r["trips"] for r in reports) / jobs,
        "claim_p50_ms": 1000 * latencies[len(latencies) // 2],
        "claim_p99_ms": 1000 * latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "claims": len(latencies),
        "worker_cpu": statistics.mean(r["cpu"] for r in reports),
        "cloud_cpu": host_cpu,
    }


async def all_runs(dsn: str, args: argparse.Namespace) -> None:
    medians: dict[int, dict[str, float]] = {}
    for workers in args.workers:
        runs = [
            await one_run(dsn, workers, args.jobs, args.cap, args.run_seconds)
            for _ in range(args.repeat)
        ]
        medians[workers] = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
        m = medians[workers]
        walls = ", ".join(f"{r['wall']:.1f}" for r in runs)
        print(
            f"{workers} worker(s), cap {args.cap} each, {args.jobs} jobs of "
            f"{args.run_seconds}s: wall {m['wall']:.1f}s (runs: "
            f"{walls}), "
            f"{m['trips_per_job']:.1f} statements/job, claim p50 {m['claim_p50_ms']:.2f} ms "
            f"p99 {m['claim_p99_ms']:.2f} ms ({m['claims']:.0f} claims); CPU per worker "
            f"{m['worker_cpu']:.1f}s, FakeClouds' process {m['cloud_cpu']:.1f}s",
            flush=True,
        )
    if 1 in medians and 3 in medians:
        ratio = medians[1]["wall"] / medians[3]["wall"]
        print(f"speed-up, 3 workers vs 1: {ratio:.2f}x (goal >= 2.7x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--cap", type=int, default=10)
    parser.add_argument("--run-seconds", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--dsn")
    parser.add_argument(
        "--workers",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[1, 3],
        help="worker counts to run, e.g. 1,3 (the default)",
    )
    args = parser.parse_args()
    if args.dsn:
        asyncio.run(all_runs(args.dsn, args))
        return
    from tests.postgres.cluster import Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        sys.exit("no PostgreSQL server binaries found: pass --dsn or apt-get install postgresql")
    with Cluster(bindir) as cluster:
        asyncio.run(all_runs(cluster.dsn(), args))


if __name__ == "__main__":
    main()
