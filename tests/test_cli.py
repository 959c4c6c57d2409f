"""The `openhands-async` command, run as a subprocess against a FakeCloud in this process."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import sys
from pathlib import Path
from typing import Any

import pytest

from openhands_async.testing import FakeCloud

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENHANDS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return env


async def run(*argv: str, timeout: float = 30) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openhands_async",
        *argv,
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def lines(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def auth(cloud: FakeCloud) -> list[str]:
    return ["--base-url", cloud.base_url, "--api-key", str(cloud.api_key), "--json"]


async def test_start_wait_list_events_send(cloud: FakeCloud) -> None:
    code, out, err = await run(
        "start", "Fix the README", "--repo", "o/r", "--wait", *auth(cloud), "--interval", "0.1"
    )
    assert code == 0, err
    objs = lines(out)
    assert [o["status"] for o in objs if o.get("event") == "start_task"][-1] == "READY"
    conv = next(o for o in objs if o.get("event") == "conversation")
    assert conv["url"] == f"{cloud.base_url}/conversations/{conv['id']}"
    outcome = objs[-1]
    assert outcome["event"] == "outcome"
    assert outcome["ok"] is True
    assert outcome["last_agent_message"]
    cid = conv["id"]

    code, out, err = await run("list", "--limit", "50", *auth(cloud))
    assert code == 0, err
    assert cid in {o["id"] for o in lines(out)}

    code, out, err = await run("send", cid, "Now add tests", *auth(cloud))
    assert code == 0, err
    assert lines(out) == [{"event": "sent", "id": cid}]

    code, out, err = await run("events", cid, "--kind", "MessageEvent", *auth(cloud))
    assert code == 0, err
    events = lines(out)
    assert events
    assert all(e["kind"] == "MessageEvent" for e in events)


async def test_start_without_wait_human_output(cloud: FakeCloud) -> None:
    code, out, err = await run(
        "start", "Hi", "--base-url", cloud.base_url, "--api-key", str(cloud.api_key)
    )
    assert code == 0, err
    assert "READY" in out
    assert f"{cloud.base_url}/conversations/" in out


async def test_failing_conversation_exits_1(cloud: FakeCloud) -> None:
    code, out, _ = await run(
        "start", "Break [fake:outcome=error]", "--wait", *auth(cloud), "--interval", "0.1"
    )
    assert code == 1
    assert lines(out)[-1]["ok"] is False


async def test_watch_start_task_and_conversation(cloud: FakeCloud) -> None:
    from openhands_async import OpenHandsClient

    async with OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        task = await client.conversations.start("Watch me")
        bad = await client.conversations.start("Fail [fake:outcome=error]")
    code, out, err = await run("watch", task.id, bad.id, *auth(cloud), "--interval", "0.1")
    assert code == 1, err  # one of them fails
    changes = lines(out)
    assert {c["kind"] for c in changes} >= {"start_task", "conversation"} or any(
        "start" in c["kind"] for c in changes
    )
    assert sum(1 for c in changes if c["terminal"]) >= 2


async def test_batch_journal_out_resumes(cloud: FakeCloud, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    jobs.write_text(
        "\n".join(
            json.dumps({"message": f"job {n}", "repository": "o/r", "key": f"k{n}"})
            for n in range(4)
        )
        + "\n"
    )
    journal, results = tmp_path / "j.sqlite", tmp_path / "results.jsonl"
    argv = ["batch", str(jobs), "--max-running", "2", "--journal", str(journal)]
    argv += ["--out", str(results), "--interval", "0.1", *auth(cloud)]
    code, out, err = await run(*argv)
    assert code == 0, err
    objs = lines(out)
    assert objs[-1]["event"] == "summary"
    assert objs[-1]["finished"] == 4
    exported = lines(results.read_text())
    assert {r["key"] for r in exported} == {"k0", "k1", "k2", "k3"}
    assert all(r["state"] == "finished" for r in exported)
    assert cloud.starts_received == 4
    code, out, err = await run(*argv)
    assert code == 0, err
    assert cloud.starts_received == 4  # nothing started twice


async def test_usage_error_exits_2(cloud: FakeCloud) -> None:
    code, _, err = await run("start", *auth(cloud))  # no MESSAGE
    assert code == 2
    assert "usage" in err
    code, _, _ = await run("nonsense")
    assert code == 2
    code, _, _ = await run("batch", "/nonexistent.jsonl", *auth(cloud))
    assert code == 2


async def test_wrong_key_exits_3(cloud: FakeCloud) -> None:
    code, out, _ = await run("list", "--base-url", cloud.base_url, "--api-key", "wrong", "--json")
    assert code == 3
    assert lines(out)[-1]["error"] == "auth"


async def test_closed_port_exits_4() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code, out, _ = await run(
        "list", "--base-url", f"http://127.0.0.1:{port}", "--api-key", "k", "--json"
    )
    assert code == 4
    assert lines(out)[-1]["error"] == "network"


async def test_no_key_prints_hint_exits_3() -> None:
    code, _, err = await run("list", "--base-url", "https://openhands.invalid")
    assert code == 3
    assert "OPENHANDS_API_KEY" in err
    assert "openhands-async demo" in err


async def test_verbose_logs_requests_without_the_key(cloud: FakeCloud) -> None:
    code, _, err = await run("list", "--verbose", *auth(cloud))
    assert code == 0
    assert "GET" in err
    assert str(cloud.api_key) not in err


async def test_demo_runs_to_the_end() -> None:
    code, out, err = await run("demo")
    assert code == 0, err
    assert "FakeCloud" in out
    assert "done:" in out
    code, out, err = await run("demo", "--json")
    assert code == 0, err
    assert lines(out)[-1]["step"] == "done"


async def test_start_error_exits_1(cloud: FakeCloud) -> None:
    code, out, _ = await run("start", "No sandbox [fake:start=ERROR]", *auth(cloud))
    assert code == 1
    objs = lines(out)
    assert objs[-1]["event"] == "start_failed"
    assert any(o.get("status") == "ERROR" for o in objs)


# Ctrl-C, at the level of the event loop: what every command's interrupt handling stands on.
_INTERRUPTED_BODY = """
import asyncio, os, signal
from openhands_async.cli._main import run_interruptibly

seen = []

async def body():
    os.kill(os.getpid(), signal.SIGINT)  # Python's own handler would raise on the next line
    seen.append("after the signal")
    try:
        await asyncio.Event().wait()
    except asyncio.CancelledError:
        seen.append("cancelled")
        if not SWALLOW:
            raise
    return 0

try:
    print("returned", run_interruptibly(body()), seen)
except KeyboardInterrupt:
    print("KeyboardInterrupt", seen)
"""


@pytest.mark.parametrize("swallow", [False, True], ids=["reraised", "swallowed"])
async def test_ctrl_c_cancels_the_command_at_an_await_on_every_python(swallow: bool) -> None:
    # Python 3.10's asyncio.run lets KeyboardInterrupt out wherever the interpreter is, even
    # inside asyncio's own bookkeeping (CI saw it in Event.wait's cleanup, with a traceback
    # on stderr); 3.11's cancels the main task. The CLI must get the second on every version,
    # and as 3.11's, a command that swallows the cancellation returns its own exit code.
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        f"SWALLOW = {swallow}\n{_INTERRUPTED_BODY}",
        env=_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, err.decode()
    outcome = "returned 0" if swallow else "KeyboardInterrupt"
    assert out.decode().strip() == f"{outcome} ['after the signal', 'cancelled']"
    assert err.decode() == ""
