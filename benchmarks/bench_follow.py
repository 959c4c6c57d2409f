"""Benchmark live events (not a test). Run: python benchmarks/bench_follow.py [--events N]

One FakeCloud conversation emits N events (default 1,000: `steps=N/2` actions and their
observations, 20 ms apart). Three consumers follow it at once, side by side in one run:
`client.events.follow` over the agent server's WebSocket, and `follow(transport="poll")`
polling the app server's `events/search` every 1 s and every 5 s. Delivery latency is
measured per event from the moment the fake makes it visible (its scheduled time on the
shared loop clock: the agent-server socket writes it then, and search lists it from then
on) to the consumer seeing it. The terminal state update, which the WebSocket follow holds
until the socket has been quiet for `settle` (1 s), is reported apart. `--websocket-only`
runs the WebSocket consumer alone. The fake's search has no webhook buffer: on a real server
polling is later still (events reach the app server in batches of 5 or every 30 s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import openhands_async as oh
from openhands_async.testing import FakeCloud

SPACING = 0.02
ENDINGS: dict[str, float] = {}


async def consume(
    client: oh.OpenHandsClient, cid: str, visible_at: dict[str, float], **kw: object
) -> tuple[list[float], str | None]:
    loop = asyncio.get_running_loop()
    latencies: list[float] = []
    async with client.events.follow(cid, **kw) as stream:  # type: ignore[arg-type]
        async for event in stream:
            now = loop.time()
            # The terminal state update is held on purpose until the socket is quiet for
            # `settle` (1 s): it is reported apart, not counted as delivery latency.
            if event.id in visible_at and not event.is_terminal:
                latencies.append(now - visible_at[event.id])
            elif event.is_terminal:
                ENDINGS[str(stream.transport) + str(kw.get("poll_interval"))] = (
                    now - visible_at.get(event.id, now)
                )
    return latencies, stream.transport


def row(name: str, latencies: list[float]) -> str:
    ordered = sorted(latencies)
    p99 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
    return (
        f"| {name:<30} | {len(ordered):>6} | {statistics.median(ordered) * 1e3:>11.2f} "
        f"| {p99 * 1e3:>10.2f} | {ordered[-1] * 1e3:>10.2f} |"
    )


async def main(n_events: int, websocket_only: bool) -> None:
    steps = max(1, n_events // 2)
    run_seconds = steps * 2 * SPACING
    async with (
        FakeCloud(idle_seconds=1.0) as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client,
    ):
        if True:
            message = f"Benchmark [fake:steps={steps},run_seconds={run_seconds}]"
            cid = await oh.wait_until_ready(client, message)
            await client.events.count(cid)  # the fake makes a conversation's events on first read
            conv = cloud._store.conversations[cid]
            # Every event's visible-from time on the loop clock (made once, now).
            visible_at = {e["id"]: e["_at"] for e in conv.events}
            # Measure only what is still to come when the consumers connect (the run starts
            # idle_seconds after READY): a replayed event's "latency" is just its age.
            connect = asyncio.get_running_loop().time()
            visible_at = {k: v for k, v in visible_at.items() if v > connect}
            started = time.monotonic()
            consumers = [consume(client, cid, visible_at, poll_interval=0.05)]
            if not websocket_only:
                consumers += [
                    consume(client, cid, visible_at, transport="poll", poll_interval=1.0),
                    consume(client, cid, visible_at, transport="poll", poll_interval=5.0),
                ]
            results = await asyncio.gather(*consumers)
            elapsed = time.monotonic() - started
    print(
        f"{len(visible_at)} events over {run_seconds:.0f} s (run started "
        f"{conv.running_at - connect:.2f} s after connecting), followed at once "
        f"({elapsed:.1f} s)"
    )
    print()
    print("| consumer                       | events | median (ms) |   p99 (ms) |   max (ms) |")
    print("|--------------------------------|-------:|------------:|-----------:|-----------:|")
    names = ["events.follow (websocket)", "poll events/search every 1 s"]
    for name, (latencies, _) in zip(
        [*names, "poll events/search every 5 s"], results, strict=False
    ):
        print(row(name, latencies))
    print()
    ending = ", ".join(f"{k}: {v * 1e3:.0f} ms" for k, v in ENDINGS.items())
    print(f"the terminal state update (not in the table; held for `settle`): {ending}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--websocket-only", action="store_true")
    args = parser.parse_args()
    asyncio.run(main(args.events, args.websocket_only))
