"""Send a follow-up message to a conversation and read the agent's reply from its events.

python examples/follow_up.py CONVERSATION_ID "Now add tests"
Without an id, it starts a conversation first and waits for it to finish.
"""

from __future__ import annotations

import argparse
import asyncio

from _common import example_client

import openhands_async as oh


async def wait_done(client: oh.OpenHandsClient, cid: str) -> None:
    poller = client.poller(poll_interval=1.0)
    poller.track_conversation(cid)
    await poller.wait()
    await poller.aclose()


async def main(cid: str | None, message: str) -> None:
    async with example_client() as client:
        if cid is None:
            cid = await oh.wait_until_ready(client, "Write a haiku about tests")
            await wait_done(client, cid)
            print(f"first reply: {await client.events.last_agent_message(cid)}")
        await client.conversations.send_message(cid, message)
        await wait_done(client, cid)
        print(f"reply: {await client.events.last_agent_message(cid)}")
        async for event in client.events.search(cid, kind="MessageEvent"):
            print(f"  {event.timestamp:%H:%M:%S} {event.source:<6} {event.text}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("id", nargs="?", default=None)
    parser.add_argument("message", nargs="?", default="Now add tests")
    args = parser.parse_args()
    asyncio.run(main(args.id, args.message))
