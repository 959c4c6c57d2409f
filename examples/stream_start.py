"""Start a conversation and print every start-up status the moment the server writes it.

python examples/stream_start.py "Fix the typo in README.md" --repo owner/repo
"""

from __future__ import annotations

import argparse
import asyncio
import time

from _common import example_client


async def main(message: str, repository: str | None) -> None:
    async with example_client() as client:
        t0 = time.monotonic()
        stream = client.conversations.stream_start(message, repository=repository)
        async with stream:
            async for task in stream:
                print(f"[{time.monotonic() - t0:6.2f}s] {task.status} {task.detail or ''}")
        print(f"conversation {stream.task.app_conversation_id if stream.task else None}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("message", nargs="?", default="Add a CONTRIBUTING.md")
    parser.add_argument("--repo", default=None)
    args = parser.parse_args()
    asyncio.run(main(args.message, args.repo))
