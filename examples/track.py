"""Follow conversations started elsewhere (ids on the command line) until they end.

python examples/track.py CONVERSATION_ID [CONVERSATION_ID ...]
Without ids, it starts three conversations itself to have something to follow.
"""

from __future__ import annotations

import argparse
import asyncio

from _common import example_client


async def main(ids: list[str]) -> None:
    async with example_client() as client:
        poller = client.poller(poll_interval=1.0)
        if ids:
            poller.track_conversations(ids)
        else:
            tasks = [await client.conversations.start(f"Task {n}") for n in range(3)]
            poller.track_start_tasks(t.id for t in tasks)  # READY hands over
        async for change in poller.changes():
            print(f"{change.kind:<12} {change.id} {change.old} -> {change.new}")
        print(f"{poller.stats.requests} batch reads in {poller.stats.cycles} cycles")
        await poller.aclose()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("ids", nargs="*")
    asyncio.run(main(parser.parse_args().ids))
