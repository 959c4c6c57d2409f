"""Where run_batch's time goes beyond the ideal (issue 19): each slot's period, and how the
starts of one wave drift apart.

    python benchmarks/bench_batch_waves.py [--jobs 300] [--cap 10] [--poll-interval 0.01]

Runs `bench_batch.py`'s run_batch case (memory journal) with every start request
timestamped. A "wave" is the `--cap` starts sent within 0.1 s of each other. Prints the
wave period (from one wave's first start to the next's: a slot's period, ideally start-up
+ run seconds) and a wave's spread (first to last start): the wall time is the slowest
slot's periods, so a spread that grows wave after wave is time lost. Prints figures only.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import math
import multiprocessing as mp
import statistics
import time
from typing import Any

import bench_batch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=300)
    parser.add_argument("--cap", type=int, default=10)
    parser.add_argument("--poll-interval", type=float, default=0.01)
    args = parser.parse_args()

    import openhands_async.resources.conversations as conversations

    sent: list[float] = []
    send_start = conversations.Conversations.send_start

    async def timed_send(self: Any, request: Any) -> Any:
        sent.append(time.monotonic())
        return await send_start(self, request)

    conversations.Conversations.send_start = timed_send  # type: ignore[method-assign]
    parent, child = mp.Pipe()
    server = mp.Process(target=bench_batch._serve, args=(child, args.cap, 0.5), daemon=True)
    server.start()
    url = f"http://127.0.0.1:{parent.recv()}"
    try:
        out = asyncio.run(
            bench_batch._with_batch(url, args.jobs, args.cap, "memory", args.poll_interval)
        )
    finally:
        parent.send("stop")
        conversations.Conversations.send_start = send_start  # type: ignore[method-assign]
    ideal = math.ceil(args.jobs / args.cap) * (bench_batch.START_UP + 0.5)
    waves = [[sent[0]]]
    for t in sent[1:]:
        if t - waves[-1][-1] < 0.1:
            waves[-1].append(t)
        else:
            waves.append([t])
    periods = [b[0] - a[0] for a, b in itertools.pairwise(waves)]
    spreads = [1000 * (w[-1] - w[0]) for w in waves]
    print(
        f"{args.jobs} jobs, cap {args.cap}, poll_interval {args.poll_interval}: wall "
        f"{out['wall']:.2f} s, ideal {ideal:.2f} s ({out['wall'] / ideal:.3f}x); {len(waves)} "
        f"waves; period median {statistics.median(periods):.4f} s "
        f"({statistics.median(periods) / (bench_batch.START_UP + 0.5):.3f}x a job's time)"
    )
    picks = sorted({0, 1, len(waves) // 2, len(waves) - 1})
    print(
        "spread of a wave's starts (first to last), ms: "
        + ", ".join(f"wave {k + 1}: {spreads[k]:.0f}" for k in picks)
    )


if __name__ == "__main__":
    main()
