"""Benchmark: run_batch vs. the docs' way (POST every start, poll each alone, no cap).

    python benchmarks/bench_batch.py [--jobs 1000] [--cap 10] [--run-seconds 0.5]
                                     [--repeat 1] [--only run_batch] [--journal memory|file]
                                     [--poll-interval 0.02] [--watch-ends]

A FakeCloud with a per-account running cap (`--cap`, pause mode: a start beyond the cap
silently pauses the account's oldest running conversations, as the Cloud does) runs in a
separate process. Every conversation runs `--run-seconds` after a short start-up.

- `run_batch`: `client.run_batch(jobs, max_running=cap, poll_interval=0.02)` (the interval
  is `--poll-interval`); ideal wall time is ceil(jobs / cap) x (start-up + run seconds).
  `--watch-ends` adds a second row, `run_batch watch_ends`: the same run with
  `watch_ends=True` (each end heard on the agent server's WebSocket), side by side.
  Also printed: the requests the FakeCloud received, the client's and the FakeCloud's
  CPU time per job, and how long after a conversation's end the start that refilled its
  slot reached the FakeCloud (by its clock; what the runner adds to the ideal per slot).
- `docs way`: start all jobs with POST (50 at a time), then poll each conversation with its
  own GET every 0.5 s until all are terminal or the ideal time x 1.5 has passed (paused
  conversations never finish on their own).
"""

from __future__ import annotations

import argparse
import asyncio
import math
import multiprocessing as mp
import statistics
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

API_KEY = "bench-key"
START_UP = 0.02  # READY this long after the start request


def _serve(conn: Connection, cap: int, run_seconds: float) -> None:
    async def main() -> None:
        from openhands_async.testing import FakeCloud

        loop = asyncio.get_running_loop()
        async with FakeCloud(
            api_key=API_KEY,
            start_timeline=[("WORKING", 0.0), ("READY", START_UP)],
            idle_seconds=0.0,
            run_seconds=run_seconds,
            max_running=cap,
            cap_mode="pause",
        ) as cloud:
            conn.send(cloud.port)
            while True:
                msg = await loop.run_in_executor(None, conn.recv)
                if msg == "stats":
                    conn.send(
                        {
                            "starts": cloud.starts_received,
                            "requests": sum(cloud.requests.values()),
                            "paused": cloud.paused_by_cap,
                            "peak_running": cloud.peak_running,
                            # The FakeCloud's own CPU: what the client waits for when its
                            # event loop idles.
                            "server_cpu": time.process_time(),
                            "refill_gap_ms": _refill_gaps(cloud, cap),
                        }
                    )
                else:
                    return

    asyncio.run(main())


def _refill_gaps(cloud: Any, cap: int) -> list[float]:
    """For each start past the first `cap`, how long after a conversation's end it reached
    the server (ms), by FakeCloud's clock: the k-th end frees the slot of the (cap+k)-th
    start. What the runner adds to the ideal per slot (reading the end, recording it,
    refilling, the start's way to the server); only meaningful with nothing paused."""
    starts = sorted(r.time for r in cloud.request_log if r.route == "start" and r.status == 200)
    ends = sorted(c.outcome_at for c in cloud._store.conversations.values())  # FakeCloud's own
    return [(s - e) * 1e3 for s, e in zip(starts[cap:], ends, strict=False)]


_JOURNAL_CALLS = ("add", "key_of", "mark_starting", "mark_pending", "mark_running", "mark_ended")


def _timed_journal(path: str) -> Any:
    """A SQLite journal (a file in a fresh temporary directory, or ":memory:") that adds up
    the CPU time spent in each call the runner makes, in `.spent` (seconds). CPU, not wall
    time: the calls run inline, and on a busy machine wall time mostly counts the moments
    the process waited for a core."""
    import tempfile

    from openhands_async import SQLiteJournal

    class Timed(SQLiteJournal):
        spent = 0.0

    def timed(name: str) -> Any:
        inner = getattr(SQLiteJournal, name)

        async def call(self: Any, *args: Any, **kwargs: Any) -> Any:
            t0 = time.process_time()
            try:
                return await inner(self, *args, **kwargs)
            finally:
                Timed.spent += time.process_time() - t0

        return call

    for name in _JOURNAL_CALLS:
        setattr(Timed, name, timed(name))
    if path != ":memory:":
        path = str(Path(tempfile.mkdtemp(prefix="bench-batch-")) / "run.db")
    return Timed(path)


async def _with_batch(
    base_url: str, n: int, cap: int, journal_kind: str, poll: float = 0.02, watch: bool = False
) -> dict[str, Any]:
    import openhands_async as oh

    journal = _timed_journal(":memory:" if journal_kind == "memory" else "file")
    async with oh.OpenHandsClient(api_key=API_KEY, base_url=base_url) as client:
        jobs = (oh.Job(f"bench job {i}", repository="bench/repo") for i in range(n))
        began, cpu = time.monotonic(), time.process_time()
        ok = 0
        runs = client.run_batch(
            jobs, max_running=cap, poll_interval=poll, journal=journal, watch_ends=watch
        )
        async for result in runs:
            ok += result.ok
        wall, cpu = time.monotonic() - began, time.process_time() - cpu
    journal.close()
    return {
        "wall": wall,
        "finished": ok,
        "journal_us_per_job": journal.spent / n * 1e6,
        # The client's CPU over the run: near the wall time, its event loop never idles.
        "cpu_ms_per_job": cpu / n * 1e3,
    }


async def _docs_way(base_url: str, n: int, deadline: float) -> dict[str, Any]:
    import aiohttp

    headers = {"Authorization": f"Bearer {API_KEY}"}
    path = "/api/v1/app-conversations"
    began = time.monotonic()
    async with aiohttp.ClientSession(base_url, headers=headers) as session:
        gate = asyncio.Semaphore(50)

        async def start(i: int) -> str:
            async with (
                gate,
                session.post(
                    path,
                    json={
                        "initial_message": {
                            "content": [{"type": "text", "text": f"job {i}"}],
                            "run": True,
                        }
                    },
                ) as resp,
            ):
                return str((await resp.json())["id"])

        task_ids = await asyncio.gather(*(start(i) for i in range(n)))
        conversation_ids: dict[str, str] = {}
        done: dict[str, str] = {}

        async def poll_one(task_id: str) -> None:
            conv = conversation_ids.get(task_id)
            if conv is None:
                async with session.get(f"{path}/start-tasks", params={"ids": task_id}) as resp:
                    (task,) = await resp.json()
                if task and task["status"] == "READY":
                    conversation_ids[task_id] = task["app_conversation_id"]
                return
            async with session.get(path, params={"ids": conv}) as resp:
                (c,) = await resp.json()
            if c and c["execution_status"] in ("finished", "error", "stuck"):
                done[task_id] = c["execution_status"]

        while len(done) < n and time.monotonic() - began < deadline:
            await asyncio.gather(*(poll_one(t) for t in task_ids if t not in done))
            await asyncio.sleep(0.5)
        return {"wall": time.monotonic() - began, "finished": len(done)}


def _run(
    kind: str, n: int, cap: int, run_seconds: float, journal: str, poll: float = 0.02
) -> dict[str, Any]:
    parent, child = mp.Pipe()
    server = mp.Process(target=_serve, args=(child, cap, run_seconds), daemon=True)
    server.start()
    port = parent.recv()
    base_url = f"http://127.0.0.1:{port}"
    ideal = math.ceil(n / cap) * (START_UP + run_seconds)
    try:
        if kind.startswith("run_batch"):
            watch = kind == "run_batch watch_ends"
            out = asyncio.run(_with_batch(base_url, n, cap, journal, poll, watch))
        else:
            out = asyncio.run(_docs_way(base_url, n, ideal * 1.5))
        parent.send("stats")
        out.update(parent.recv())
    finally:
        parent.send("stop")
        server.join(10)
    out["ideal"] = ideal
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--cap", type=int, default=10)
    parser.add_argument("--run-seconds", type=float, default=0.5)
    parser.add_argument("--repeat", type=int, default=1, help="runs of each client")
    parser.add_argument(
        "--only", choices=("run_batch", "docs way"), help="run one client (default: both)"
    )
    parser.add_argument(
        "--journal",
        choices=("memory", "file"),
        default="memory",
        help="run_batch's SQLite journal: in memory (run_batch's default) or a file",
    )
    parser.add_argument(
        "--poll-interval", type=float, default=0.02, help="run_batch's poll_interval"
    )
    parser.add_argument(
        "--watch-ends", action="store_true", help="also run run_batch with watch_ends=True"
    )
    args = parser.parse_args()
    kinds = [args.only] if args.only else ["run_batch", "docs way"]
    if args.watch_ends and "run_batch" in kinds:
        kinds.insert(kinds.index("run_batch") + 1, "run_batch watch_ends")
    # Round after round (each client once a round), so load that drifts hits each alike.
    rows = [
        (kind, _run(kind, args.jobs, args.cap, args.run_seconds, args.journal, args.poll_interval))
        for _ in range(args.repeat)
        for kind in kinds
    ]
    print(
        f"\n{args.jobs} jobs, account cap {args.cap}, {args.run_seconds}s per conversation, "
        f"{args.journal} journal, poll_interval {args.poll_interval}"
    )
    print(
        "| client | finished | wall s | ideal s | wall/ideal | requests"
        " | paused by cap | peak running | journal CPU µs/job | client CPU ms/job"
        " | FakeCloud CPU ms/job | end to next start ms (median, p90) |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")

    def journal_cost(r: dict[str, Any]) -> str:
        us = r.get("journal_us_per_job")
        return "-" if us is None else f"{us:.0f}"

    def client_cpu(r: dict[str, Any]) -> str:
        ms = r.get("cpu_ms_per_job")
        return "-" if ms is None else f"{ms:.2f}"

    def server_cpu(r: dict[str, Any]) -> str:
        return f"{r['server_cpu'] / args.jobs * 1e3:.2f}"

    def gaps(r: dict[str, Any]) -> str:
        g = sorted(r["refill_gap_ms"])
        return "-" if not g else f"{statistics.median(g):.1f}, {g[9 * len(g) // 10]:.1f}"

    for kind, r in rows:
        print(
            f"| {kind} | {r['finished']}/{args.jobs} | {r['wall']:.2f} | {r['ideal']:.1f} | "
            f"{r['wall'] / r['ideal']:.3f} | {r['requests']:,} | {r['paused']} "
            f"| {r['peak_running']} | {journal_cost(r)} | {client_cpu(r)} | {server_cpu(r)} "
            f"| {gaps(r)} |"
        )
    if args.repeat > 1:
        for kind in kinds:
            walls = [r["wall"] for k, r in rows if k == kind]
            ideal = rows[0][1]["ideal"]
            print(
                f"{kind}: median wall {statistics.median(walls):.2f} s, "
                f"wall/ideal {statistics.median(walls) / ideal:.3f} "
                f"(min {min(walls) / ideal:.3f}, max {max(walls) / ideal:.3f}, {len(walls)} runs)"
            )


if __name__ == "__main__":
    main()
