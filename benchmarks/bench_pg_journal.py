"""Benchmark: the shared PostgreSQL journal under contention (no OpenHands server involved).

    python benchmarks/bench_pg_journal.py [--workers 1 3 6] [--jobs 600] [--cap 10]
                                          [--dsn postgresql://...]

Each worker is its own journal (its own connection), all on one account of one batch with
a running cap of `--cap`: they claim jobs as fast as they can and end each at once
(claim -> mark_running -> mark_ended), so every claim contends for the account's lock.
Reports, per worker count: claim latency p50/p99 (a claim that finds no free slot retried
at once, counted apart), database statements per job, jobs per second. Without `--dsn`
a throw-away cluster is started (tests/postgres/cluster.py; needs the server binaries).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from openhands_async.lib.batch.postgres import PostgresJournal


async def run(dsn: str, workers: int, jobs: int, cap: int) -> dict[str, float]:
    batch = f"bench-{uuid.uuid4().hex[:8]}"
    journals = [
        await PostgresJournal(dsn, batch_name=batch, account="acct-bench", max_running=cap).open()
        for _ in range(workers)
    ]
    await journals[0].add_many((f"k{i:05}", i, {"message": f"job {i}"}) for i in range(jobs))
    base = [j.round_trips for j in journals]
    latencies: list[float] = []
    empty = 0

    async def work(journal: PostgresJournal) -> None:
        nonlocal empty
        while True:
            began = time.perf_counter()
            row = await journal.claim(uuid.uuid4().hex)
            if row is None:
                if (await journal.remaining()).pending == 0:
                    return
                empty += 1  # every slot held by the others: try again
                await asyncio.sleep(0)
                continue
            latencies.append(time.perf_counter() - began)
            await journal.mark_running(row.key, uuid.uuid4().hex)
            await journal.mark_ended(row.key, "finished", execution_status="finished")

    began = time.perf_counter()
    await asyncio.gather(*(work(j) for j in journals))
    wall = time.perf_counter() - began
    trips = sum(j.round_trips - b for j, b in zip(journals, base, strict=True))
    for journal in journals:
        await journal.close()
    latencies.sort()
    return {
        "workers": workers,
        "claim_p50_ms": statistics.median(latencies) * 1000,
        "claim_p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "no_slot_retries": empty,
        "statements_per_job": trips / jobs,
        "jobs_per_s": jobs / wall,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 3, 6])
    parser.add_argument("--jobs", type=int, default=600)
    parser.add_argument("--cap", type=int, default=10)
    parser.add_argument("--dsn", default=None)
    args = parser.parse_args()

    async def all_runs(dsn: str) -> None:
        for n in args.workers:
            r = await run(dsn, n, args.jobs, args.cap)
            print(
                f"{r['workers']:>2} workers: claim p50 {r['claim_p50_ms']:.2f} ms, "
                f"p99 {r['claim_p99_ms']:.2f} ms, {r['statements_per_job']:.2f} statements/job "
                f"(no-slot claims not counted: {r['no_slot_retries']}), "
                f"{r['jobs_per_s']:.0f} jobs/s"
            )

    if args.dsn:
        asyncio.run(all_runs(args.dsn))
        return
    from tests.postgres.cluster import Cluster, find_bindir

    bindir = find_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries found; pass --dsn")
    with Cluster(bindir) as cluster:
        asyncio.run(all_runs(cluster.dsn()))


if __name__ == "__main__":
    main()
