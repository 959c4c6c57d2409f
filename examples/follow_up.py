"""Send a follow-up message to a conversation and wait for the agent's reply to it.

python examples/follow_up.py CONVERSATION_ID "Now add tests"
Without an id, it starts a conversation first and waits for it to finish.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys

from _common import example_client

import openhands_async as oh


async def wait_done(client: oh.OpenHandsClient, cid: str) -> None:
    poller = client.poller(poll_interval=1.0)
    poller.track_conversation(cid)
    await poller.wait()
    await poller.aclose()


async def main(cid: str | None, message: str) -> int:
    async with example_client() as client:
        if cid is None:
            cid = await oh.wait_until_ready(client, "Write a haiku about tests")
            await wait_done(client, cid)
            print(f"first reply: {await client.events.last_agent_message(cid)}")
        try:
            # Sends, then waits for the reply to THIS message (not the one before it).
            reply = await client.conversations.ask(cid, message, timeout=600)
        except oh.NotFoundError:
            print(f"no conversation {cid} on this server", file=sys.stderr)
            return 1
        print(f"reply: {reply}")
        async for event in client.events.search(cid, kind="MessageEvent"):
            print(f"  {event.timestamp:%H:%M:%S} {event.source:<6} {event.text}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("id", nargs="?", default=None)
    parser.add_argument("message", nargs="?", default="Now add tests")
    args = parser.parse_args()
    if args.id is not None and not os.environ.get("OPENHANDS_API_KEY"):
        # Without a key the example runs against a fresh FakeCloud: no conversation of
        # yours is there, so an id cannot be followed up.
        parser.exit(
            2,
            f"OPENHANDS_API_KEY is not set, so this example would run against a fresh, empty\n"
            f"FakeCloud, where conversation {args.id} does not exist. Set OPENHANDS_API_KEY\n"
            "to follow up on one of your conversations, or run it without an id to see it\n"
            "start one first.\n",
        )
    sys.exit(asyncio.run(main(args.id, args.message)))
