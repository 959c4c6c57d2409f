"""Start one conversation and wait for the agent to finish, reading with batch calls.

python examples/start_and_wait.py "Fix the typo in README.md" --repo owner/repo
"""

from __future__ import annotations

import argparse
import asyncio

from _common import example_client


async def main(message: str, repository: str | None) -> None:
    async with example_client() as client:
        task = await client.conversations.start(message, repository=repository)
        print(f"start task {task.id}: {task.status}")
        while not task.is_terminal:
            await asyncio.sleep(1.0)
            task = await client.start_tasks.get(task.id)
            print(f"  {task.status}")
        if task.app_conversation_id is None:
            raise SystemExit(f"start failed: {task.detail}")
        conversation = await client.conversations.get(task.app_conversation_id)
        while not conversation.is_terminal:
            await asyncio.sleep(2.0)
            conversation = await client.conversations.get(conversation.id)
        print(f"conversation {conversation.id}: {conversation.execution_status}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("message", nargs="?", default="Add a CONTRIBUTING.md")
    parser.add_argument("--repo", default=None)
    args = parser.parse_args()
    asyncio.run(main(args.message, args.repo))
