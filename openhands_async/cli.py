"""The `openhands-async` command. For now: `demo`, which runs against an embedded FakeCloud."""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Sequence


async def _demo(jobs: int) -> int:
    from . import OpenHandsClient
    from .testing import FakeCloud

    started = time.monotonic()

    def say(text: str) -> None:
        print(f"[{time.monotonic() - started:6.2f}s] {text}", flush=True)

    async with (
        FakeCloud(time_scale=1.0) as cloud,
        OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client,
    ):
        say(f"FakeCloud serving on {cloud.base_url} (no account needed)")
        tasks = [
            await client.conversations.start(
                f"Demo job {n}: fix the README", repository="demo/repo"
            )
            for n in range(jobs)
        ]
        say(f"started {len(tasks)} conversations")
        ids = [t.id for t in tasks]
        conversation_ids: list[str] = []
        while True:
            current = await client.start_tasks.get_many(ids)
            if all(t is not None and t.is_terminal for t in current):
                conversation_ids = [
                    t.app_conversation_id for t in current if t and t.app_conversation_id
                ]
                break
            await asyncio.sleep(0.05)
        say(f"{len(conversation_ids)} start tasks READY")
        while True:
            conversations = await client.conversations.get_many(conversation_ids)
            if all(c is not None and c.is_terminal for c in conversations):
                break
            await asyncio.sleep(0.05)
        for c in conversations:
            assert c is not None
            say(f"{c.id}  {c.sandbox_status}/{c.execution_status}  {c.title}")
        say(f"done: {len(conversations)} conversations, {sum(cloud.requests.values())} requests")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="openhands-async", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="run a small batch against an embedded FakeCloud")
    demo.add_argument("--jobs", type=int, default=5)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return asyncio.run(_demo(args.jobs))
    parser.error(f"unknown command {args.command}")  # pragma: no cover
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
