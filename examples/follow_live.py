"""Start a conversation and print the agent's work live, one line per event.

python examples/follow_live.py "Fix the typo in README.md" --repo owner/repo

The events come from the conversation's agent server over a WebSocket the moment the agent
emits them (the app server's events/search lags up to 30 s behind).
"""

from __future__ import annotations

import argparse
import asyncio

from _common import example_client

from openhands_async import wait_until_ready
from openhands_async.lib.follow import event_gist


async def main(message: str, repository: str | None) -> None:
    async with example_client() as client:
        conversation_id = await wait_until_ready(client, message, repository=repository)
        print(f"conversation {conversation_id} is ready; following it")
        async with client.events.follow(conversation_id) as stream:
            async for event in stream:
                at = event.timestamp.strftime("%H:%M:%S.%f")[:-3]
                print(f"{at} {event.source or '-':<11} {event.kind:<30} {event_gist(event)}")
        status = stream.last_event.execution_status if stream.last_event else None
        print(f"done ({status}) over {stream.transport}, {stream.reconnects} reconnect(s)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("message", nargs="?", default="Add a CONTRIBUTING.md")
    parser.add_argument("--repo", default=None)
    args = parser.parse_args()
    asyncio.run(main(args.message, args.repo))
