"""Benchmark: ConversationPoller vs. the docs' one-GET-per-conversation loop.

    python benchmarks/bench_poller.py [--sizes 1000 10000] [--interval 2] [--window 8]

A FakeCloud runs in a separate process. For each size N it seeds N fresh conversations that
finish spread over `--window` seconds, and each client runs in its own fresh process (so
CPU time and peak RSS are that client's alone):

- `poller`: `client.poller(interval=I)` tracking all N until every one is terminal;
- `one-get`: the docs' pattern with bare aiohttp + json.loads: every cycle, one
  `GET /api/v1/app-conversations?ids=<id>` per unfinished conversation (all at once,
  100 connections), then sleep I. Capped at `--max-one-get-cycles` cycles for big N
  (the table says so).

Also measured: the poller's memory per tracked conversation (tracemalloc, after the first
cycle, models included) and CPU seconds per conversation read, poller vs. bare loop.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import resource
import subprocess
import sys
import tempfile
import time
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

API_KEY = "bench-key"
PATH = "/api/v1/app-conversations"


# ---------------------------------------------------------------------- the server process


def _serve(conn: Connection) -> None:
    asyncio.run(_serve_async(conn))


async def _serve_async(conn: Connection) -> None:
    from openhands_async.testing import FakeCloud

    loop = asyncio.get_running_loop()
    async with FakeCloud(api_key=API_KEY, time_scale=1.0) as cloud:
        conn.send(cloud.port)
        while True:
            msg = await loop.run_in_executor(None, conn.recv)
            if msg[0] == "stop":
                return
            _, n, window = msg
            ids: list[str] = []
            groups = 20
            for g in range(groups):
                size = n // groups + (1 if g < n % groups else 0)
                run = window * (g + 1) / groups
                ids += cloud.seed_conversations(size, message=f"bench [fake:run_seconds={run}]")
            conn.send(ids)


# ---------------------------------------------------------------------- the client processes


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def _run_poller(base_url: str, ids: list[str], interval: float) -> dict[str, Any]:
    import openhands_async as oh

    async with oh.OpenHandsClient(api_key=API_KEY, base_url=base_url) as client:
        poller = client.poller(interval=interval)
        poller.track_conversations(ids)
        results = await poller.wait()
        await poller.aclose()
    done = sum(1 for m in results.values() if m is not None and m.is_terminal)
    return {
        "requests": poller.stats.requests,
        "cycles": poller.stats.cycles,
        "reads": poller.stats.reads,
        "updates": poller.stats.changes,
        "done": done,
        "complete": done == len(ids),
    }


async def _run_one_get(
    base_url: str, ids: list[str], interval: float, max_cycles: int
) -> dict[str, Any]:
    import aiohttp

    terminal_exec = {"finished", "error", "stuck", "waiting_for_confirmation"}
    status: dict[str, tuple[str, str | None]] = {}
    pending = set(ids)
    requests = updates = cycles = 0
    headers = {"Authorization": f"Bearer {API_KEY}"}
    connector = aiohttp.TCPConnector(limit=100)
    async with aiohttp.ClientSession(base_url, headers=headers, connector=connector) as session:

        async def check(cid: str) -> None:
            nonlocal requests, updates
            requests += 1
            async with session.get(PATH, params={"ids": cid}) as resp:
                body = json.loads(await resp.read())
            conv = body[0]
            if conv is None:
                pending.discard(cid)
                return
            now = (conv["sandbox_status"], conv["execution_status"])
            if status.get(cid) != now:
                status[cid] = now
                updates += 1
            if now[0] in ("ERROR", "MISSING") or now[1] in terminal_exec:
                pending.discard(cid)

        while pending and cycles < max_cycles:
            cycles += 1
            await asyncio.gather(*(check(cid) for cid in list(pending)))
            if pending:
                await asyncio.sleep(interval)
    return {
        "requests": requests,
        "cycles": cycles,
        "reads": requests,
        "updates": updates,
        "done": len(ids) - len(pending),
        "complete": not pending,
    }


async def _measure_memory(base_url: str, ids: list[str], interval: float) -> dict[str, Any]:
    import gc
    import tracemalloc

    import openhands_async as oh

    async with oh.OpenHandsClient(api_key=API_KEY, base_url=base_url) as client:
        await client.conversations.count()  # session and connections exist before we measure
        poller = client.poller(interval=interval)
        gc.collect()
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        poller.track_conversations(ids)
        await poller.start()
        while poller.stats.cycles < 2:  # noqa: ASYNC110 (cycle 1 is over once cycle 2 began)
            await asyncio.sleep(0.01)
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
        tracemalloc.stop()
        await poller.aclose()
    return {"bytes_per_item": (after - before) / len(ids)}


def _client_main(argv: list[str]) -> None:
    mode, base_url, ids_file, interval, max_cycles = argv
    ids = json.loads(Path(ids_file).read_text())
    wall0, cpu0 = time.perf_counter(), time.process_time()
    if mode == "poller":
        out = asyncio.run(_run_poller(base_url, ids, float(interval)))
    elif mode == "one-get":
        out = asyncio.run(_run_one_get(base_url, ids, float(interval), int(max_cycles)))
    else:
        out = asyncio.run(_measure_memory(base_url, ids, float(interval)))
    out["wall"] = time.perf_counter() - wall0
    out["cpu"] = time.process_time() - cpu0
    out["rss_mb"] = _rss_mb()
    print(json.dumps(out))


# ---------------------------------------------------------------------- orchestration


def _run_client(mode: str, base_url: str, ids: list[str], interval: float, cap: int) -> Any:
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(ids, f)
    try:
        proc = subprocess.run(
            [sys.executable, __file__, "--client", mode, base_url, f.name, str(interval), str(cap)],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        Path(f.name).unlink()
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        _client_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--interval", type=float, default=2.0)
    parser.add_argument("--window", type=float, default=8.0)
    parser.add_argument("--max-one-get-cycles", type=int, default=3)
    args = parser.parse_args()

    ctx = mp.get_context("spawn")
    parent, child = ctx.Pipe()
    server = ctx.Process(target=_serve, args=(child,), daemon=True)
    server.start()
    port = parent.recv()
    base_url = f"http://127.0.0.1:{port}"
    rows: list[tuple[int, str, dict[str, Any]]] = []
    mem: dict[int, float] = {}
    try:
        for n in args.sizes:
            for mode in ("poller", "one-get"):
                parent.send(("seed", n, args.window))
                ids = parent.recv()
                cap = args.max_one_get_cycles if n > 1000 else 10**9
                rows.append((n, mode, _run_client(mode, base_url, ids, args.interval, cap)))
                print(f"  done: N={n} {mode}", file=sys.stderr, flush=True)
            parent.send(("seed", n, 3600.0))
            ids = parent.recv()
            mem[n] = _run_client("memory", base_url, ids, args.interval, 0)["bytes_per_item"]
    finally:
        parent.send(("stop",))
        server.join(5)
        if server.is_alive():
            server.terminate()

    print(
        f"\ninterval={args.interval}s, conversations finish over {args.window}s, "
        "FakeCloud in a separate process\n"
    )
    head = (
        "| N | client | complete | cycles | requests | wall s | CPU s | CPU µs/read "
        "| peak RSS MB | poller B/conv |"
    )
    print(head)
    print("|---" * 10 + "|")
    cost: dict[tuple[int, str], float] = {}
    for n, mode, r in rows:
        per_read = r["cpu"] / max(1, r["reads"]) * 1e6
        cost[(n, mode)] = per_read
        complete = "yes" if r["complete"] else f"no ({r['done']}/{n}, capped)"
        mem_col = f"{mem[n]:.0f}" if mode == "poller" else ""
        print(
            f"| {n:,} | {mode} | {complete} | {r['cycles']} | {r['requests']:,} | "
            f"{r['wall']:.1f} | {r['cpu']:.2f} | {per_read:.0f} | {r['rss_mb']:.0f} | {mem_col} |"
        )
    print()
    for n in args.sizes:
        ratio = cost[(n, "poller")] / cost[(n, "one-get")]
        print(f"N={n:,}: poller CPU per conversation read = {ratio:.2f}x the bare aiohttp loop's")


if __name__ == "__main__":
    main()
