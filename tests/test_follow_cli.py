"""`openhands-async start ... --follow` and `events ID --follow` (issue 16)."""

from __future__ import annotations

from openhands_async.testing import FakeCloud

from .test_cli import auth, lines, run


async def test_start_follow_prints_each_event_then_the_outcome(cloud: FakeCloud) -> None:
    code, out, err = await run("start", "Fix it [fake:steps=3]", "--follow", *auth(cloud))
    assert code == 0, err
    objs = lines(out)
    events = [o for o in objs if o.get("event") == "agent_event"]
    kinds = [e["kind"] for e in events]
    assert kinds.count("ActionEvent") == kinds.count("ObservationEvent") == 3
    assert len({e["id"] for e in events}) == len(events)
    assert events[-1]["execution_status"] == "finished"
    assert objs[-1] == {
        "event": "outcome",
        "id": objs[-1]["id"],
        "status": "finished",
        "ok": True,
        "via": "websocket",
    }


async def test_events_follow_human_lines(cloud: FakeCloud) -> None:
    code, out, err = await run("start", "Do it [fake:outcome=stuck]", *auth(cloud))
    assert code == 0, err
    cid = next(o for o in lines(out) if o.get("event") == "conversation")["id"]
    code, out, err = await run(
        "events", cid, "--follow", "--base-url", cloud.base_url, "--api-key", str(cloud.api_key)
    )
    assert code == 1, err  # stuck is not a success
    rows = out.splitlines()
    assert any("ActionEvent" in r and "ls -la" in r for r in rows)
    assert any("ObservationEvent" in r for r in rows)
    assert rows[-1] == "outcome: stuck"


async def test_follow_lines_say_the_command_not_the_tool_call_json(cloud: FakeCloud) -> None:
    # The real server's `summary` is the tool call as JSON (`terminal: {"command": ...}`);
    # a person reading the line wants the command itself, as `event_gist` gives it.
    code, out, err = await run(
        "start", "Fix it", "--follow", "--base-url", cloud.base_url, "--api-key", str(cloud.api_key)
    )
    assert code == 0, err
    rows = [r for r in out.splitlines() if "ActionEvent" in r]
    assert rows, out
    assert all('{"' not in r for r in rows), rows
    assert any(r.rstrip().endswith("TerminalAction: ls -la") for r in rows), rows
