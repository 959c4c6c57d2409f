"""Benchmark: ConversationPoller vs. the docs' one-GET-per-conversation loop.

    python benchmarks/bench_poller.py [--sizes 1000 10000] [--interval 2] [--cycles 3]
                                      [--window 8] [--repeat 3]

A FakeCloud runs in a separate process; every client runs in its own fresh process (so CPU
time and peak RSS are that client's alone, imports not counted). For each size N, each
repeat runs:

1. Same work: N conversations that keep running, `--cycles` cycles `--interval` apart,
   every conversation read once a cycle, by three clients:
   - `poller`: `client.poller(poll_interval=I, min_interval=I, max_interval=I)` (no back-off,
     so every item is due every cycle);
   - `bare-batch`: bare aiohttp + `json.loads` sending the same batch reads (99 ids a
     request, 4 at once): the least CPU those reads can cost;
   - `one-get`: the docs' pattern with bare aiohttp + `json.loads`: one
     `GET /api/v1/app-conversations?ids=<id>` per conversation (100 connections).
   Requests are counted by the server; the formula is ceil(due start tasks / 99) +
   ceil(due conversations / 99) per cycle.
2. Until done: N conversations that finish spread over `--window` seconds, followed by a
   default poller (`interval=I`, adaptive intervals) until all are terminal; requests the
   server saw vs. the formula summed over the cycles the poller ran.
3. Memory (tracemalloc): the poller's bytes per followed conversation after the first
   read of N running conversations, between cycles; and per finished conversation (the
   final model `wait()` returns is kept).

Numbers are medians over `--repeat` repeats; ratios are taken within a repeat.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _fake_process import FakeCloudProcess, serve

API_KEY = "bench-key"
PATH = "/api/v1/app-conversations"
POLL_ROUTES = ("get_conversations", "get_start_tasks")


# ---------------------------------------------------------------------- the server process


def _serve(conn: Connection) -> None:
    serve(conn, API_KEY, _handle)


async def _handle(cloud: Any, msg: tuple[Any, ...]) -> Any:
    if msg[0] == "count":
        return sum(cloud.requests[r] for r in POLL_ROUTES)
    _, n, window, started_ago = msg
    # 20 groups finishing at window/20, 2*window/20, ... window seconds.
    ids: list[str] = []
    for g in range(20):
        size = n // 20 + (1 if g < n % 20 else 0)
        run = window * (g + 1) / 20
        message = f"bench [fake:run_seconds={run}]"
        ids += cloud.seed_conversations(size, message=message, started_ago=started_ago)
    return ids


# ---------------------------------------------------------------------- the client processes


def _count_cycles(poller: Any, log: list[tuple[int, int]], cycles: int | None) -> asyncio.Event:
    """Log (due start tasks, due conversations) per cycle; the event is set after `cycles`."""
    original = poller._cycle
    done = asyncio.Event()

    async def counted(due: Sequence[Any]) -> None:
        await original(due)
        log.append((poller.stats.last_due_start_tasks, poller.stats.last_due_conversations))
        if len(log) == cycles:
            done.set()

    poller._cycle = counted
    return done


def _formula(log: list[tuple[int, int]]) -> int:
    return sum(math.ceil(t / 99) + math.ceil(c / 99) for t, c in log)


async def _poller_fixed(base_url: str, ids: list[str], interval: float, cycles: int) -> Any:
    import openhands_async as oh

    async with oh.OpenHandsClient(api_key=API_KEY, base_url=base_url) as client:
        poller = client.poller(interval, min_interval=interval, max_interval=interval)
        log: list[tuple[int, int]] = []
        done = _count_cycles(poller, log, cycles)
        poller.track_conversations(ids)
        await poller.start()
        await done.wait()
        await poller.aclose()
    s = poller.stats
    return {"cycles": s.cycles, "requests": s.requests, "reads": s.reads, "formula": _formula(log)}


async def _poller_done(base_url: str, ids: list[str], interval: float) -> Any:
    import openhands_async as oh

    async with oh.OpenHandsClient(api_key=API_KEY, base_url=base_url) as client:
        poller = client.poller(interval)
        log: list[tuple[int, int]] = []
        _count_cycles(poller, log, None)
        poller.track_conversations(ids)
        results = await poller.wait()
        await poller.aclose()
    s = poller.stats
    done = sum(1 for m in results.values() if m is not None and m.is_terminal)
    return {
        "cycles": s.cycles,
        "requests": s.requests,
        "reads": s.reads,
        "changes": s.changes,
        "formula": _formula(log),
        "complete": done == len(ids),
    }


async def _bare(
    base_url: str, ids: list[str], interval: float, cycles: int, per_request: int
) -> Any:
    """`cycles` cycles reading every conversation, `per_request` ids a request."""
    import aiohttp

    status: dict[str, tuple[str, str | None]] = {}
    requests = reads = changes = 0
    chunks = [ids[i : i + per_request] for i in range(0, len(ids), per_request)]
    # one-get: as many at once as the connector allows; batches: 4, like the poller.
    gate = asyncio.Semaphore(100 if per_request == 1 else 4)
    headers = {"Authorization": f"Bearer {API_KEY}"}
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(base_url, headers=headers, connector=connector) as session:

        async def read(chunk: list[str]) -> None:
            nonlocal requests, reads, changes
            async with gate:
                requests += 1
                params = [("ids", cid) for cid in chunk]
                async with session.get(PATH, params=params) as resp:
                    body = json.loads(await resp.read())
            for cid, conv in zip(chunk, body, strict=True):
                reads += 1
                now = (conv["sandbox_status"], conv["execution_status"])
                if status.get(cid) != now:
                    status[cid] = now
                    changes += 1

        for cycle in range(cycles):
            if cycle:
                await asyncio.sleep(interval)
            await asyncio.gather(*(read(chunk) for chunk in chunks))
    formula = cycles * math.ceil(len(ids) / 99)
    return {"cycles": cycles, "requests": requests, "reads": reads, "formula": formula}


async def _memory(base_url: str, ids: list[str], interval: float, finished: bool) -> Any:
    import gc
    import tracemalloc

    import openhands_async as oh

    async with oh.OpenHandsClient(api_key=API_KEY, base_url=base_url) as client:
        await client.conversations.count()  # session and connections exist before we measure
        poller = client.poller(interval)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        poller.track_conversations(ids)
        if finished:
            await poller.wait()  # every one is terminal at its first read
        else:
            # Every item's first read is a change; the N-th comes with the cycle's last
            # chunk, so let the cycle end (the next is `min_interval` away): nothing is in
            # flight when we measure.
            stream = poller.changes()
            for _ in range(len(ids)):
                await stream.__anext__()
            await asyncio.sleep(poller.min_interval / 2)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        n = poller.stats.reads
        await poller.aclose()
    return {"bytes_per_item": (after - before) / n}


def _client_main(spec: dict[str, Any]) -> None:
    # Imported before the clock starts: the clients import different amounts of code.
    import aiohttp  # noqa: F401

    import openhands_async  # noqa: F401

    ids = json.loads(Path(spec["ids_file"]).read_text())
    mode, url, interval, cycles = spec["mode"], spec["base_url"], spec["interval"], spec["cycles"]
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if mode == "poller":
        out = asyncio.run(_poller_fixed(url, ids, interval, cycles))
    elif mode == "bare-batch":
        out = asyncio.run(_bare(url, ids, interval, cycles, 99))
    elif mode == "one-get":
        out = asyncio.run(_bare(url, ids, interval, cycles, 1))
    elif mode == "until-done":
        out = asyncio.run(_poller_done(url, ids, interval))
    else:
        out = asyncio.run(_memory(url, ids, interval, finished=mode == "memory-finished"))
    out["wall"] = time.perf_counter() - wall0
    out["cpu"] = time.process_time() - cpu0
    out["rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(out))


# ---------------------------------------------------------------------- orchestration


def _run_client(
    server: FakeCloudProcess, mode: str, ids: list[str], args: argparse.Namespace
) -> Any:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(ids, f)
    spec = {
        "mode": mode,
        "base_url": server.base_url,
        "ids_file": f.name,
        "interval": args.interval,
        "cycles": args.cycles,
    }
    before = server.ask("count")
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--client", json.dumps(spec)],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        Path(f.name).unlink()
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["server_requests"] = server.ask("count") - before
    print(f"  N={len(ids)} {mode}: {out}", file=sys.stderr, flush=True)
    return out


def _median(runs: list[dict[str, Any]], key: str) -> float:
    return float(statistics.median(r[key] for r in runs))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        _client_main(json.loads(sys.argv[2]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--interval", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--cycles", type=int, default=3, help="same-work cycles (default 3)")
    parser.add_argument("--window", type=float, default=8.0, help="until-done (default 8 s)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per number (default 3)")
    parser.add_argument(
        "--one-get-max",
        type=int,
        default=10000,
        help="skip the one-get client above this N (at 100,000 it takes ~10 minutes a cycle)",
    )
    args = parser.parse_args()

    same_work = ("poller", "bare-batch", "one-get")
    runs: dict[tuple[int, str], list[dict[str, Any]]] = {}
    server = FakeCloudProcess(_serve)
    try:
        for _ in range(args.repeat):
            for n in args.sizes:
                # Running for an hour; seeded 5 s ago so every sandbox exists at the first read.
                for mode in same_work:
                    if mode == "one-get" and n > args.one_get_max:
                        continue
                    ids = server.ask("seed", n, 3600.0, 5.0)
                    runs.setdefault((n, mode), []).append(_run_client(server, mode, ids, args))
                ids = server.ask("seed", n, args.window, 0.0)
                runs.setdefault((n, "until-done"), []).append(
                    _run_client(server, "until-done", ids, args)
                )
                ids = server.ask("seed", n, 3600.0, 5.0)
                runs.setdefault((n, "memory"), []).append(_run_client(server, "memory", ids, args))
                ids = server.ask("seed", n, 1.0, 3600.0)  # finished an hour ago
                runs.setdefault((n, "memory-finished"), []).append(
                    _run_client(server, "memory-finished", ids, args)
                )
    finally:
        server.stop()
    _report(args, runs)


def _report(args: argparse.Namespace, runs: dict[tuple[int, str], list[dict[str, Any]]]) -> None:
    reps = f"median of {args.repeat}"
    print(
        f"\nSame work ({reps}): N running conversations, {args.cycles} cycles "
        f"{args.interval:g} s apart, each conversation read once a cycle\n"
    )
    print(
        "| N | client | requests/cycle | formula/cycle | requests (server) | reads "
        "| wall s | CPU s | CPU µs/read | peak RSS MB |"
    )
    print("|---" * 10 + "|")
    for n in args.sizes:
        for mode in ("poller", "bare-batch", "one-get"):
            if (n, mode) not in runs:
                continue
            rs = runs[(n, mode)]
            req = _median(rs, "server_requests")
            cpu = _median(rs, "cpu")
            reads = _median(rs, "reads")
            print(
                f"| {n:,} | {mode} | {req / args.cycles:,.0f} | "
                f"{_median(rs, 'formula') / args.cycles:,.0f} | {req:,.0f} | {reads:,.0f} | "
                f"{_median(rs, 'wall'):.1f} | {cpu:.2f} | {cpu / reads * 1e6:.0f} | "
                f"{_median(rs, 'rss_mb'):.0f} |"
            )
    print()
    for n in args.sizes:
        pol, bare = runs[(n, "poller")], runs[(n, "bare-batch")]
        one = runs.get((n, "one-get"))

        def per_read(r: dict[str, Any]) -> float:
            return float(r["cpu"] / r["reads"])

        cpu_bare = statistics.median(
            per_read(p) / per_read(b) for p, b in zip(pol, bare, strict=True)
        )
        if one is None:
            print(
                f"N={n:,}: (one-get not run); poller CPU per read = {cpu_bare:.2f}x "
                f"bare-batch's; requests = formula: "
                f"{all(r['server_requests'] == r['formula'] for r in pol)}"
            )
            continue
        req_ratio = statistics.median(
            o["server_requests"] / p["server_requests"] for p, o in zip(pol, one, strict=True)
        )
        cpu_one = statistics.median(
            per_read(p) / per_read(o) for p, o in zip(pol, one, strict=True)
        )
        print(
            f"N={n:,}: one-get sends {req_ratio:.1f}x the poller's requests; poller CPU per "
            f"read = {cpu_bare:.2f}x bare-batch's, {cpu_one:.2f}x one-get's"
        )

    print(
        f"\nUntil done ({reps}): N conversations finishing over {args.window:g} s, "
        f"poller(poll_interval={args.interval:g}) with adaptive intervals\n"
    )
    print(
        "| N | complete | cycles | requests (server) | formula | reads | changes "
        "| wall s | CPU s | CPU µs/read | peak RSS MB |"
    )
    print("|---" * 11 + "|")
    for n in args.sizes:
        rs = runs[(n, "until-done")]
        complete = "yes" if all(r["complete"] for r in rs) else "NO"
        exact = all(r["server_requests"] == r["formula"] for r in rs)
        cpu, reads = _median(rs, "cpu"), _median(rs, "reads")
        print(
            f"| {n:,} | {complete} | {_median(rs, 'cycles'):.0f} | "
            f"{_median(rs, 'server_requests'):,.0f} | {_median(rs, 'formula'):,.0f}"
            f"{'' if exact else ' (differs!)'} | {reads:,.0f} | {_median(rs, 'changes'):,.0f} | "
            f"{_median(rs, 'wall'):.1f} | {cpu:.2f} | {cpu / reads * 1e6:.0f} | "
            f"{_median(rs, 'rss_mb'):.0f} |"
        )

    print(f"\nPoller memory, tracemalloc ({reps})\n")
    print("| N | bytes per followed conversation | bytes per finished conversation |")
    print("|---|---|---|")
    for n in args.sizes:
        print(
            f"| {n:,} | {_median(runs[(n, 'memory')], 'bytes_per_item'):.0f} | "
            f"{_median(runs[(n, 'memory-finished')], 'bytes_per_item'):.0f} |"
        )


if __name__ == "__main__":
    main()
