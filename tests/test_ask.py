"""`conversations.ask`: send a follow-up, wait for the agent's NEXT reply (never the one
before it), over loopback against FakeCloud."""

from __future__ import annotations

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud


async def finished_conversation(
    client: oh.OpenHandsClient, message: str, *, ended: bool = True
) -> str:
    """A conversation of `message`, once its run ended (or, `ended=False`, once it runs)."""
    task = await client.conversations.start(message)
    poller = client.poller(0.02)
    poller.track_start_task(task.id)
    cid = None
    async for change in poller.changes():
        if change.kind == "conversation" and (change.terminal or not ended):
            cid = change.id
            break
    await poller.aclose()
    assert cid is not None
    return cid


async def test_ask_returns_the_reply_to_this_message_not_the_previous_one(
    client: oh.OpenHandsClient,
) -> None:
    cid = await finished_conversation(client, "Fix the README")
    assert await client.events.last_agent_message(cid) == "Done: Fix the README"
    reply = await client.conversations.ask(cid, "Now add tests", timeout=30, poll_interval=0.02)
    assert reply == "Done: Now add tests"
    again = await client.conversations.ask(cid, "And a changelog", timeout=30, poll_interval=0.02)
    assert again == "Done: And a changelog"


async def test_ask_times_out_naming_the_conversation(client: oh.OpenHandsClient) -> None:
    # The agent is busy on a task that never ends: no reply comes.
    cid = await finished_conversation(client, "Think [fake:run_seconds=inf]", ended=False)
    with pytest.raises(TimeoutError, match=cid):
        await client.conversations.ask(cid, "Still there?", timeout=0.3, poll_interval=0.02)


async def test_ask_returns_none_when_the_run_ends_without_a_reply(
    client: oh.OpenHandsClient,
) -> None:
    # Every run of this conversation ends in error, without a word from the agent.
    cid = await finished_conversation(client, "Fails [fake:outcome=error]")
    reply = await client.conversations.ask(cid, "Try again", timeout=30, poll_interval=0.02)
    assert reply is None


async def test_ask_checks_its_arguments(client: oh.OpenHandsClient) -> None:
    with pytest.raises(ValueError, match="conversation_id"):
        await client.conversations.ask("not-an-id", "hi")
    with pytest.raises(ValueError, match="timeout"):
        await client.conversations.ask("0" * 32, "hi", timeout=0)


async def test_send_wait_prints_the_agents_reply(cloud: FakeCloud) -> None:
    from .test_cli import auth, lines, run

    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        cid = await finished_conversation(client, "Fix the README")
    code, out, err = await run("send", cid, "Now add tests", "--wait", *auth(cloud))
    assert code == 0, err
    assert lines(out) == [{"event": "reply", "id": cid, "reply": "Done: Now add tests"}]
    argv = ["send", cid, "And docs", "--wait", "--base-url", cloud.base_url]
    code, out, err = await run(*argv, "--api-key", str(cloud.api_key))
    assert code == 0, err
    assert out.splitlines()[-1] == "agent: Done: And docs"


async def test_send_wait_timeout_exits_1_saying_how_to_read_it_later(cloud: FakeCloud) -> None:
    from .test_cli import auth, lines, run

    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        cid = await finished_conversation(client, "Busy [fake:run_seconds=inf]", ended=False)
    argv = ["send", cid, "Still there?", "--wait", "--timeout", "0.5", "--interval", "0.05"]
    code, out, err = await run(*argv, *auth(cloud))
    assert code == 1, err
    assert lines(out)[-1]["event"] == "no_reply"
    assert "Traceback" not in err
