"""Soak: the poller following 10,000 conversations for 30 cycles under random faults.

    python benchmarks/bench_soak.py [--conversations 10000] [--cycles 30] [--interval 2]
                                    [--finishing 0.1] [--faults-per-cycle 1.5] [--repeat 3]
                                    [--seed 17] [--quick]

A FakeCloud runs in a separate process and the poller in a fresh process per repeat (so the
RSS is the poller's alone). The conversations are seeded as already running; a share
(`--finishing`, default 10%) finishes at times spread between cycle 3 and cycle 20, the rest
runs for an hour. The poller uses a fixed interval (`interval = min_interval = max_interval`)
so every item it follows is due in every cycle, and a subscriber drains `changes()`.

While the poller runs, the server process arms random faults on the conversations batch
route, `--faults-per-cycle` (default 1.5, seeded RNG) for every cycle's worth of answered
reads: a 5xx burst (500, 502, 503 or 504, 2-5 answers in a row), a connection reset
(before the answer or in the middle of the body, 1-3 in a row), or a 429 with
`Retry-After: 1`. The client keeps its default
retry policy (2 retries; 500 is not retried), so some reads fail for the poller, which must
read those items again later.

Measured per repeat:

- RSS (`/proc/self/statm`, after `gc.collect()`) as cycle 6 begins (= after cycle 5) and as
  cycle N+1 begins (= after cycle N); the growth between the two (goal: < 5 MB);
- items dropped (goal 0): items neither still followed nor in `results()`, plus MISSING
  answers; every finishing conversation in `results()` as finished and every other one
  still followed; the changes seen vs. the exact number expected (one first read per
  item, one more per conversation that finished after it);
- requests: the poller's own count per cycle vs. the formula ceil(due start tasks / 99) +
  ceil(due conversations / 99); and the server's count of requests that were answered 200
  during cycles 1..N, which must equal formula - failed reads (every logical read is
  answered once unless it failed; each faulted attempt is a retry or a failure).

Figures are medians over `--repeat` repeats. `--quick` (1,000 conversations, 16 cycles,
0.5 s interval, one repeat) takes about 20 s and checks the same things.
Exit status 1 when a goal is missed (for use as a smoke check).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from _fake_process import FakeCloudProcess, serve

API_KEY = "soak-key"
ROUTE = "get_conversations"
RSS_GOAL_MB = 5.0
PAGE = os.sysconf("SC_PAGE_SIZE")
STARTUP = 3.0  # seconds, about, from seeding to the poller's first cycle


# ---------------------------------------------------------------------- the server process


def _serve(conn: Connection) -> None:
    serve(conn, API_KEY, _Handler().handle)


def _random_fault(rng: random.Random) -> tuple[str, Any]:
    from openhands_async.testing import Fault

    kind = rng.choice(("5xx", "reset", "429"))
    if kind == "5xx":
        status = rng.choice((500, 502, 503, 504))
        return f"5xx-{status}", Fault(route=ROUTE, status=status, times=rng.randint(2, 5))
    if kind == "reset":
        action = rng.choice(("reset_before", "reset_mid_body"))
        return action, Fault(route=ROUTE, action=action, times=rng.randint(1, 3))
    return "429", Fault(route=ROUTE, status=429, retry_after="1", body={"error": "slow down"})


class _Handler:
    """The soak's server side: seeds the conversations, arms random faults, tallies."""

    def __init__(self) -> None:
        self.arming: asyncio.Task[None] | None = None
        self.armed: Counter[str] = Counter()

    async def arm(self, cloud: Any, rate: float, per_cycle: int, seed: int) -> None:
        import attrs

        # Faults are tied to the reads that succeed, not to the clock: `rate` faults per
        # cycle's worth of answered reads (a clock rate would outrun a poller slowed by them).
        rng = random.Random(seed)
        answered = total_ok = scanned = 0
        while True:
            await asyncio.sleep(0.02)
            log = cloud.request_log
            # Records still in flight (status None) are looked at again next time.
            while scanned < len(log) and log[scanned].status is not None:
                r = log[scanned]
                total_ok += r.route == ROUTE and r.status == 200
                scanned += 1
            while total_ok - answered >= per_cycle:
                answered += per_cycle
                count = int(rate) + (1 if rng.random() < rate - int(rate) else 0)
                for _ in range(count):
                    name, fault = _random_fault(rng)
                    self.armed[name] += 1
                    # Somewhere in the next cycle's reads, not always its first.
                    cloud.add_fault(attrs.evolve(fault, skip=rng.randrange(per_cycle)))

    async def handle(self, cloud: Any, msg: tuple[Any, ...]) -> Any:
        if msg[0] == "seed":
            _, n, finishing, first, last = msg
            k = round(n * finishing)
            ids = []
            # Finishing ones: 20 groups at evenly spread times between `first` and `last`.
            for g in range(20):
                size = k // 20 + (1 if g < k % 20 else 0)
                run = first + (last - first) * g / 19
                ids += cloud.seed_conversations(
                    size, message=f"soak [fake:run_seconds={run}]", started_ago=5.0
                )
            ids += cloud.seed_conversations(
                n - k, message="soak [fake:run_seconds=3600]", started_ago=5.0
            )
            return ids[:k], ids[k:]
        if msg[0] == "faults":
            _, rate, per_cycle, seed = msg
            self.armed.clear()
            cloud.clear_faults()
            cloud.request_log.clear()
            self.arming = asyncio.get_running_loop().create_task(
                self.arm(cloud, rate, per_cycle, seed)
            )
            return True
        # "tally"
        _, t_from, t_to = msg
        if self.arming is not None:
            self.arming.cancel()
            self.arming = None
        cloud.clear_faults()
        window = [r for r in cloud.request_log if r.route == ROUTE and t_from <= r.time]
        inside = [r for r in window if r.time <= t_to]
        return {
            "armed": dict(self.armed),
            "server_requests": len(inside),
            "server_ok": sum(1 for r in inside if r.status == 200),
            "server_faulted": Counter(str(r.status) for r in inside if r.status != 200),
            "after_window": len(window) - len(inside),
        }


# ---------------------------------------------------------------------- the client process


def _rss_mb() -> float:
    gc.collect()
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


async def _soak(spec: dict[str, Any]) -> dict[str, Any]:
    import openhands_async as oh

    finishing: list[str] = spec["finishing"]
    running: list[str] = spec["running"]
    cycles, interval, rss_at = spec["cycles"], spec["interval"], spec["rss_cycle"]
    tick = min(0.01, interval / 50)
    per_cycle: list[dict[str, int]] = []
    rss: dict[int, float] = {}
    async with oh.OpenHandsClient(api_key=API_KEY, base_url=spec["base_url"]) as client:
        poller = client.poller(interval, min_interval=interval, max_interval=interval)
        poller.track_conversations(finishing + running)
        seen: Counter[str] = Counter()  # changes per kind of change
        terminal: set[str] = set()
        missing = 0

        async def consume() -> None:
            nonlocal missing
            async for change in poller.changes(until_idle=False):
                if change.old is None:
                    seen["first-terminal" if change.terminal else "first"] += 1
                elif change.terminal:
                    seen["to-terminal"] += 1
                else:
                    seen["other"] += 1  # a status flapping: never expected here
                if change.missing:
                    missing += 1
                elif change.terminal:
                    terminal.add(change.id)

        consumer = asyncio.ensure_future(consume())
        await poller.start()
        s = poller.stats
        t_first = t_cut = 0.0
        last = 0
        # Cycle k+1 beginning means cycle k is over (the next cycle starts half an interval
        # after the last one's reads returned, at the earliest): sample between them.
        while last <= cycles:
            await asyncio.sleep(tick)
            if s.cycles == last:
                continue
            if s.cycles > last + 1:
                raise SystemExit(f"missed a cycle: {last} -> {s.cycles} (tick {tick}s too slow)")
            last = s.cycles
            now = time.monotonic()
            if last == 1:
                t_first = now - tick
            if last - 1 in (rss_at, cycles):
                rss[last - 1] = _rss_mb()
            if last == cycles + 1:
                # Cycle N's reads all arrived before now - interval/2; cycle N+1's after
                # now - tick: cut the server's log in between.
                t_cut = now - interval / 4
                break
            per_cycle.append(
                {
                    "due_start_tasks": s.last_due_start_tasks,
                    "due_conversations": s.last_due_conversations,
                    "requests": s.last_requests,
                    "requests_total": s.requests,
                    "failed_total": s.failed_requests,
                }
            )
        failed_by_n = s.failed_requests  # failures of cycle N+1 cannot have happened yet
        await poller.aclose()
        await asyncio.wait([consumer], timeout=5)
        results = poller.results()
        tracked = poller.tracked
    formula = [
        math.ceil(c["due_start_tasks"] / 99) + math.ceil(c["due_conversations"] / 99)
        for c in per_cycle
    ]
    done_ids = {k for k, v in results.items() if v is not None and v.is_terminal}
    finished_ok = sum(
        1
        for k in finishing
        if k in done_ids and results[k].execution_status is oh.ExecutionStatus.FINISHED  # type: ignore[union-attr]
    )
    n = len(finishing) + len(running)
    unaccounted = n - tracked - len(results)
    dropped = max(0, unaccounted) + missing  # lost from view, or reported as not existing
    return {
        "cycles": len(per_cycle),
        "t_first": t_first,
        "t_cut": t_cut,
        "rss_early": rss[rss_at],
        "rss_late": rss[cycles],
        "poller_requests": per_cycle[-1]["requests_total"],
        "formula": sum(formula),
        "per_cycle_matches": all(
            c["requests"] == f for c, f in zip(per_cycle, formula, strict=True)
        ),
        "requests_per_cycle": statistics.median(c["requests"] for c in per_cycle),
        "formula_per_cycle": statistics.median(formula),
        "failed_requests": failed_by_n,
        "dropped": dropped,
        "finished_reported": finished_ok,
        "finishing": len(finishing),
        "still_followed": tracked,
        "running": len(running),
        "changes": dict(seen),
        # One first read per item, plus one change to terminal per finishing conversation
        # not already finished at its first read.
        "changes_expected": n + len(finishing) - seen["first-terminal"],
        "changes_total": sum(seen.values()),
        "missing": missing,
        "terminal_changes": len(terminal),
    }


def _client_main(spec_file: str) -> None:
    spec = json.loads(Path(spec_file).read_text())
    cpu0 = time.process_time()
    out = asyncio.run(_soak(spec))
    out["cpu"] = time.process_time() - cpu0
    print(json.dumps(out))


# ---------------------------------------------------------------------- orchestration


def _one_run(server: FakeCloudProcess, args: argparse.Namespace, seed: int) -> dict[str, Any]:
    i = args.interval
    # Seeded as running for 5 s already; the client needs a few seconds to start: finish
    # between about cycle 2 and two thirds of the way through.
    first, last = 5 + STARTUP + 2 * i, 5 + STARTUP + (args.cycles * 2 // 3) * i
    finishing, running = server.ask("seed", args.conversations, args.finishing, first, last)
    spec = {
        "base_url": server.base_url,
        "finishing": finishing,
        "running": running,
        "cycles": args.cycles,
        "interval": i,
        "rss_cycle": args.rss_cycle,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        server.ask("faults", args.faults_per_cycle, math.ceil(args.conversations / 99), seed)
        proc = subprocess.run(
            [sys.executable, __file__, "--client", f.name],
            check=True,
            capture_output=True,
            text=True,
        )
    finally:
        Path(f.name).unlink()
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out.update(server.ask("tally", out["t_first"] - 1.0, out["t_cut"]))
    # Each logical read is answered 200 exactly once unless it failed for the poller.
    out["server_identity"] = out["server_ok"] == out["formula"] - out["failed_requests"]
    out["rss_growth"] = out["rss_late"] - out["rss_early"]
    print(f"  seed {seed}: {json.dumps(out)}", file=sys.stderr, flush=True)
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--client":
        _client_main(sys.argv[2])
        return 0
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog=__doc__.split("\n\n", 2)[2],
    )
    parser.add_argument("--conversations", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=30)
    parser.add_argument("--interval", type=float, default=2.0, help="seconds (default 2)")
    parser.add_argument("--finishing", type=float, default=0.1, help="share that finishes")
    parser.add_argument("--faults-per-cycle", type=float, default=1.5)
    parser.add_argument("--rss-cycle", type=int, default=5, help="early RSS sample (default 5)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--seed", type=int, default=17)
    parser.add_argument("--quick", action="store_true", help="1,000 conversations, 16 cycles")
    args = parser.parse_args()
    if args.quick:
        args.conversations, args.cycles, args.interval, args.repeat = 1000, 16, 0.5, 1
    if not 0 < args.rss_cycle < args.cycles:
        parser.error("--rss-cycle must be between 0 and --cycles")

    server = FakeCloudProcess(_serve)
    try:
        runs = [_one_run(server, args, args.seed + r) for r in range(args.repeat)]
    finally:
        server.stop()
    return _report(args, runs)


def _report(args: argparse.Namespace, runs: list[dict[str, Any]]) -> int:
    def med(key: str) -> float:
        return float(statistics.median(r[key] for r in runs))

    armed: Counter[str] = Counter()
    faulted: Counter[str] = Counter()
    for r in runs:
        armed.update(r["armed"])
        faulted.update(r["server_faulted"])
    n = args.conversations
    print(
        f"\nSoak: {n:,} conversations ({args.finishing:.0%} finishing), {args.cycles} cycles "
        f"{args.interval:g} s apart, ~{args.faults_per_cycle:g} faults armed per cycle; "
        f"median of {len(runs)}\n"
    )
    print("| figure | median | goal |")
    print("|---|---|---|")
    print(f"| RSS after cycle {args.rss_cycle} | {med('rss_early'):.1f} MB | |")
    print(f"| RSS after cycle {args.cycles} | {med('rss_late'):.1f} MB | |")
    worst = max(r["rss_growth"] for r in runs)
    print(
        f"| RSS growth, cycle {args.rss_cycle} -> {args.cycles} | {med('rss_growth'):+.1f} MB "
        f"(worst {worst:+.1f}) | < {RSS_GOAL_MB:g} MB |"
    )
    print(f"| items dropped | {med('dropped'):.0f} (max {max(r['dropped'] for r in runs)}) | 0 |")
    print(
        f"| changes seen / expected | {med('changes_total'):,.0f} / "
        f"{med('changes_expected'):,.0f} | equal |"
    )
    print(
        f"| finishing conversations reported finished | {med('finished_reported'):,.0f} / "
        f"{med('finishing'):,.0f} | all |"
    )
    followed = f"{med('still_followed'):,.0f} / {med('running'):,.0f}"
    print(f"| still followed at the end | {followed} | all |")
    print(
        f"| poller requests per cycle / formula | {med('requests_per_cycle'):.0f} / "
        f"{med('formula_per_cycle'):.0f} | equal |"
    )
    print(
        f"| server requests answered 200 / formula - failed reads | {med('server_ok'):,.0f} / "
        f"{med('formula') - med('failed_requests'):,.0f} | equal |"
    )
    print(
        f"| server requests in cycles 1..{args.cycles} (retries included) | "
        f"{med('server_requests'):,.0f} | |"
    )
    failed = med("failed_requests")
    print(f"| reads that failed for the poller (read again next cycle) | {failed:.0f} | |")
    print(f"| poller CPU s | {med('cpu'):.1f} | |")
    print(f"\nFaults armed (all repeats): {dict(sorted(armed.items()))}")
    print(f"Faulted answers the server sent (all repeats): {dict(sorted(faulted.items()))}")
    ok = (
        all(r["dropped"] == 0 for r in runs)
        and all(r["finished_reported"] == r["finishing"] for r in runs)
        and all(r["still_followed"] == r["running"] for r in runs)
        and all(r["changes_total"] == r["changes_expected"] for r in runs)
        and all(r["per_cycle_matches"] and r["server_identity"] for r in runs)
        and worst < RSS_GOAL_MB
    )
    print("\nall goals met" if ok else "\nGOAL MISSED (see the table)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
