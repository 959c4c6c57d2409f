"""Faults against the real server: cuts and stalls mid-stream and mid-cycle, and a killed server.

`BreakingProxy` (tests/integration/_proxy.py) sits between the SDK and the real server and
cuts or stalls one chosen response midway. The `broken` fixture runs, at the same time and
in the fleet's sandbox A (a new sandbox costs ~15 s):

- conversation E by `stream_start` through a proxy that cuts the stream in the middle of
  its first element (a truncated chunk: no element arrived, the start must be looked up).
  The server runs the start inside that response and drops it with the connection, so the
  task stays WORKING for good: the SDK must give up after `stall_timeout` with
  `StartStalledError`, never hang and never send the start again;
- conversation F by `stream_start` through a proxy that stalls the stream after its first
  element (the connection stays open, nothing more arrives; idle timeout 3 s). The SDK keeps
  that silent connection open while it polls the task: closing it would end the start;
- a poller following F's start task (then its conversation) through a proxy
  that cuts the first batch read of each kind mid-body and stalls the second (read
  timeout 3 s).

F and the poller must recover with the start sent once and every item followed to its final
status.
The last test SIGKILLs the plain app server (by PID) while a poller follows conversations
and starts it again; it runs after every other test (`kills_server`).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import attrs
import pytest
import pytest_asyncio

import openhands_async as oh

from ._proxy import Break, BreakingProxy
from .conftest import (
    NOTES,
    Fleet,
    raw_start_tasks,
    same_uuid,
    sdk_log_lines,
    starts_sent_with,
    wait_for,
)

pytestmark = pytest.mark.asyncio(loop_scope="session")

STREAM = b"POST /api/v1/app-conversations/stream-start "
TASKS_BATCH = b"GET /api/v1/app-conversations/start-tasks?"
CONVS_BATCH = b"GET /api/v1/app-conversations?"
BOUND = 150.0  # seconds for a whole scenario on a loaded 2-core machine
E_BOUND = 40.0  # a start in an existing sandbox is READY within ~10 s
# E's stall bound: its start is dropped by the server, so nothing moves after the cut; short
# to keep the run quick, long enough that a start the server did carry on would move.
E_STALL = 8.0
# F's: its start moves on unless the server dropped it (see the F test); a step of a start
# on a loaded machine can take well over E_STALL, so F's bound is looser.
F_STALL = 40.0
QUICK = oh.Timeouts(connect=5, read=3, total=30, stream_idle=3)


def _port(base_url: str) -> int:
    return int(base_url.rsplit(":", 1)[1].split("/")[0])


def _statuses(tasks: list[oh.StartTask]) -> list[str]:
    return [t.status.value for t in tasks]


def _check_chain(changes: list[oh.StatusChange]) -> None:
    """A poller's changes for one item: first read, then each one moving on from the last."""
    assert changes, "no change reported"
    assert changes[0].old is None
    for before, after in itertools.pairwise(changes):
        assert after.old == before.new, [(c.old, c.new) for c in changes]
        assert after.new != after.old
    assert changes[-1].terminal
    assert not any(c.terminal for c in changes[:-1])


@attrs.define
class Broken:
    e: str
    f: str
    e_tasks: list[oh.StartTask]
    e_outcome: str  # "READY", the error it raised, or "hung"
    e_error: oh.OpenHandsError | None
    f_tasks: list[oh.StartTask]
    f_error: oh.OpenHandsError | None
    cut_proxy: BreakingProxy
    stall_proxy: BreakingProxy
    poll_proxy: BreakingProxy
    changes: dict[str, list[oh.StatusChange]]
    results: dict[str, oh.StartTask | oh.Conversation | None]
    logs: list[str]
    seconds: float


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def broken(
    fleet: Fleet, base_url: str, http_session: aiohttp.ClientSession
) -> AsyncIterator[Broken]:
    upstream = _port(base_url)
    e, f = uuid.uuid4().hex, uuid.uuid4().hex
    changes: dict[str, list[oh.StatusChange]] = {}
    e_tasks: list[oh.StartTask] = []
    f_tasks: list[oh.StartTask] = []
    began = time.monotonic()
    async with (
        # Cut 40 bytes into the first element: no element arrives, the SDK must look the
        # start up before anything else (never send it again).
        BreakingProxy(upstream, Break(STREAM, "cut", marker=b'{"id"', extra=40)) as cut_proxy,
        # Stall right after the first element: compact JSON has no CRLF, so `}` + CRLF is
        # the end of the chunk holding an element, the first one here.
        BreakingProxy(upstream, Break(STREAM, "stall", marker=b"}\r\n")) as stall_proxy,
        BreakingProxy(
            upstream,
            Break(TASKS_BATCH, "cut", extra=20),
            Break(TASKS_BATCH, "stall"),
            Break(CONVS_BATCH, "cut", extra=20),
            Break(CONVS_BATCH, "stall"),
        ) as poll_proxy,
        oh.OpenHandsClient(base_url=poll_proxy.base_url, session=http_session, timeout=QUICK) as pc,
    ):
        poller = pc.poller(1.0, min_interval=0.5, max_interval=2.0)

        async def consume() -> None:
            async for change in poller.changes(until_idle=False):
                changes.setdefault(change.id, []).append(change)

        async def stream(
            proxy: BreakingProxy,
            cid: str,
            name: str,
            tasks: list[oh.StartTask],
            track: bool,
            stall_timeout: float,
        ) -> list[oh.StartTask]:
            async with oh.OpenHandsClient(
                base_url=proxy.base_url, session=http_session, timeout=QUICK
            ) as sc:
                async for task in sc.conversations.stream_start(
                    f"Say hello ({name}).",
                    conversation_id=cid,
                    sandbox_id=fleet.a,
                    idle_timeout=3.0,
                    poll_interval=0.5,
                    stall_timeout=stall_timeout,
                ):
                    tasks.append(task)
                    if track and len(tasks) == 1:
                        poller.track_start_task(task.id)  # followed mid-start, through faults
            return tasks

        e_errors: list[oh.OpenHandsError] = []
        f_errors: list[oh.OpenHandsError] = []

        async def bounded_f() -> None:
            # Ends, READY or StartStalledError, so a dropped F start never costs E its result.
            try:
                await stream(stall_proxy, f, "F", f_tasks, True, stall_timeout=F_STALL)
            except oh.StartStalledError as exc:
                f_errors.append(exc)

        async def bounded_e() -> str:
            # The server drops a start whose stream connection closed (see the E test): the
            # recovery polls a task stuck in WORKING until E_STALL, and E_BOUND guards a hang.
            try:
                await asyncio.wait_for(
                    stream(cut_proxy, e, "E", e_tasks, False, stall_timeout=E_STALL), E_BOUND
                )
            except asyncio.TimeoutError:
                return "hung"
            except oh.OpenHandsError as exc:
                e_errors.append(exc)
                return type(exc).__name__
            return e_tasks[-1].status.value if e_tasks else "no task"

        with sdk_log_lines() as logs:
            consumer = asyncio.ensure_future(consume())
            await poller.start()
            try:
                e_outcome, _ = await asyncio.wait_for(
                    asyncio.gather(bounded_e(), bounded_f()), BOUND
                )
                # A dropped F start never ends: then the poller has nothing to wait for.
                results = poller.results() if f_errors else await poller.wait(timeout=BOUND)
            finally:
                await poller.aclose()
                await asyncio.wait([consumer], timeout=5)
    seconds = time.monotonic() - began
    NOTES.append(
        f"faults mid-stream/mid-cycle: {seconds:.1f}s; E (cut) saw {_statuses(e_tasks)} "
        f"and ended {e_outcome}, "
        f"F (stall) saw {_statuses(f_tasks)}{' then stalled' if f_errors else ''}; "
        f"poller stats {poller.stats}"
    )
    yield Broken(
        e,
        f,
        e_tasks,
        e_outcome,
        e_errors[0] if e_errors else None,
        f_tasks,
        f_errors[0] if f_errors else None,
        cut_proxy,
        stall_proxy,
        poll_proxy,
        changes,
        results,
        logs,
        seconds,
    )


def _check_recovered(
    client_tasks: list[oh.StartTask],
    cid: str,
    proxy: BreakingProxy,
    logs: list[str],
    *,
    said: str = "broke",
) -> None:
    (rule,) = proxy.breaks
    assert rule.broken == 1, "the proxy never broke the stream: the scenario did not happen"
    assert proxy.count(STREAM) == 1, "stream-start was sent again"
    assert len(client_tasks) >= 2, _statuses(client_tasks)
    assert len({t.id for t in client_tasks}) == 1
    statuses = _statuses(client_tasks)
    assert statuses[-1] == "READY", statuses
    assert all(a != b for a, b in itertools.pairwise(statuses)), statuses
    assert client_tasks[-1].app_conversation_id == cid
    assert any(said in m and client_tasks[0].id in m for m in logs), logs


async def test_stream_start_cut_is_looked_up_not_resent(
    client: oh.OpenHandsClient, broken: Broken
) -> None:
    """The part that works: no element arrived, the SDK found the start and never resent it."""
    (rule,) = broken.cut_proxy.breaks
    assert rule.broken == 1, "the proxy never cut the stream: the scenario did not happen"
    assert broken.cut_proxy.count(STREAM) == 1, "stream-start was sent again"
    assert starts_sent_with(await raw_start_tasks(client), broken.e) == 1
    assert broken.e_tasks, "the SDK did not find the start after the cut"
    assert any("broke; found task" in m and broken.e in m for m in broken.logs), broken.logs


async def test_stream_start_cut_mid_element_recovers(
    client: oh.OpenHandsClient, broken: Broken
) -> None:
    """openhands-ai 1.11.0 runs the start inside the stream-start response
    (app_conversation_router._stream_app_conversation_start): the cut ends the start and
    its task stays WORKING for good. The stream ends with `StartStalledError` after the
    stall bound, carrying that task; the start is on the server once, never re-sent."""
    assert broken.e_outcome != "hung", (
        f"stream_start polled a task stuck in {_statuses(broken.e_tasks)} for {E_BOUND:.0f}s"
    )
    err = broken.e_error
    assert isinstance(err, oh.StartStalledError), (broken.e_outcome, err)
    assert isinstance(err, oh.StreamError)
    assert err.stall_timeout == E_STALL
    assert err.items_received == 0
    assert same_uuid(err.conversation_id, broken.e)
    assert broken.e_tasks
    assert err.task.id == broken.e_tasks[0].id
    assert not err.task.status.is_terminal
    assert "not sent again" in str(err)
    assert f"client.start_tasks.get({err.task.id!r})" in str(err)
    # The server still shows the task as the SDK last read it: the start was dropped.
    now = await client.start_tasks.get(err.task.id)
    assert (now.status, now.updated_at) == (err.task.status, err.task.updated_at)
    assert broken.cut_proxy.count(STREAM) == 1, "stream-start was sent again"
    assert starts_sent_with(await raw_start_tasks(client), broken.e) == 1
    assert any("stalled" in m and err.task.id in m for m in broken.logs), broken.logs


async def test_stream_start_stall_recovers(client: oh.OpenHandsClient, broken: Broken) -> None:
    """The server cancels a start whose stream connection closed, so after the idle timeout
    (3 s here) the SDK keeps the silent stream open while it polls F's task, and closes it
    only once the task is READY: F's start finishes however slow it is after the stall."""
    assert broken.f_error is None, (
        f"F's start stopped moving after its stream went silent: {broken.f_error}"
    )
    _check_recovered(broken.f_tasks, broken.f, broken.stall_proxy, broken.logs, said="went silent")
    assert starts_sent_with(await raw_start_tasks(client), broken.f) == 1


async def test_poller_cycle_cut_and_stall_miss_no_status(broken: Broken) -> None:
    assert [(r.request, r.action, r.broken) for r in broken.poll_proxy.breaks] == [
        (TASKS_BATCH, "cut", 1),
        (TASKS_BATCH, "stall", 1),
        (CONVS_BATCH, "cut", 1),
        (CONVS_BATCH, "stall", 1),
    ], "a planned cut or stall did not happen"
    task_ids = {broken.f_tasks[0].id: broken.f}
    assert set(broken.results) == set(task_ids) | set(task_ids.values())
    for task_id, cid in task_ids.items():
        task = broken.results[task_id]
        assert isinstance(task, oh.StartTask)
        assert task.status is oh.StartTaskStatus.READY
        assert same_uuid(task.app_conversation_id, cid)
        conv = broken.results[cid]
        assert isinstance(conv, oh.Conversation)
        assert conv.execution_status is oh.ExecutionStatus.FINISHED, broken.changes[cid]
        for item in (task_id, cid):
            _check_chain(broken.changes[item])
        assert broken.changes[task_id][-1].new == "READY"
    # Nothing but the poller's batch reads went through its proxy.
    assert all(
        line.startswith((TASKS_BATCH, CONVS_BATCH)) for line in broken.poll_proxy.requests
    ), broken.poll_proxy.requests


# --------------------------------------------------------------------------- a killed server


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _continue_agent_servers(home: Path) -> None:
    """SIGCONT the plain server's agent servers: a pause SIGSTOPs one, and the restarted
    app server no longer knows it, so nothing would resume it before the harness stops it."""
    sandboxes = str(home / "sandboxes") + "/"
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            cwd = os.readlink(entry / "cwd")
        except OSError:
            continue
        if b"oh_loopback_agent_server" in cmdline and (cwd + "/").startswith(sandboxes):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), signal.SIGCONT)


async def _restart(home: Path, port: int) -> str:
    """`run_server.sh start` again on the same state (the fake LLM still runs)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OH_", "OPENHANDS_"))}
    env.pop("SESSION_API_KEY", None)
    env.update(
        OH_HOME=str(home),
        PORT=str(port),
        FAKE_LLM_PORT=os.environ["OH_REAL_LLM_PORT"],
        FAKE_LLM="0",  # still running; its settings are stored in the state directory
    )
    proc = await asyncio.create_subprocess_exec(
        "bash",
        os.environ["OH_REAL_RUN_SERVER"],
        "start",
        env=env,
        cwd=home,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        out, _ = await asyncio.wait_for(proc.communicate(), BOUND)
    except asyncio.TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        raise
    return out.decode(errors="replace")


@pytest.mark.kills_server
async def test_poller_outlives_a_killed_server(fleet: Fleet, base_url: str) -> None:
    home = Path(os.environ.get("OH_REAL_HOME") or pytest.fail("OH_REAL_HOME is not set"))
    port = _port(base_url)
    cids = fleet.ids  # A, B, C, D: all in sandbox A
    changes: dict[str, list[oh.StatusChange]] = {}
    retry = oh.RetryPolicy(max_retries=1, initial_delay=0.2, max_delay=0.5)
    async with oh.OpenHandsClient(base_url=base_url, timeout=QUICK, retry_policy=retry) as c:
        # The fleet's conversations are finished (terminal); with their sandbox paused they
        # read PAUSED, which the poller follows on: something to follow through the outage.
        await c.sandboxes.pause(fleet.a)

        async def paused() -> bool | None:
            convs = await c.conversations.get_many(cids)
            ok = all(x is not None and x.sandbox_status is oh.SandboxStatus.PAUSED for x in convs)
            return True if ok else None

        await wait_for("sandbox A to pause", paused, bound=60)
        poller = c.poller(1.0, min_interval=0.5, max_interval=2.0)

        async def consume() -> None:
            async for change in poller.changes(until_idle=False):
                changes.setdefault(change.id, []).append(change)

        consumer = asyncio.ensure_future(consume())
        with sdk_log_lines() as logs:
            try:
                poller.track_conversations(cids)
                await poller.start()

                async def all_followed() -> bool | None:
                    last = [changes[cid][-1] for cid in cids if cid in changes]
                    for ch in last:
                        assert not ch.terminal, f"ended before the kill: {ch}"
                    return True if len(last) == len(cids) else None

                await wait_for("the poller to follow all four", all_followed, bound=60)
                before_kill = {cid: changes[cid][-1].new for cid in cids}
                pid = int((home / "server.pid").read_text().strip())
                failed_before = poller.stats.failed_requests
                os.kill(pid, signal.SIGKILL)

                async def dead() -> bool | None:
                    return True if not _pid_alive(pid) else None

                await wait_for("the app server to die", dead, bound=10, every=0.1)

                async def outage_seen() -> bool | None:
                    return True if poller.stats.failed_requests >= failed_before + 2 else None

                await wait_for("the poller to see the outage", outage_seen, bound=60)
                # Reported through the normal error path; nothing dropped, still running.
                assert poller.running
                assert poller.tracked == len(cids)
                assert poller.results() == {}
                assert any(f"poller read of {len(cids)} ids failed" in m for m in logs), logs
                outage = poller.stats.failed_requests - failed_before

                t0 = time.monotonic()
                out = await _restart(home, port)
                assert "app server up" in out, out
                restart_s = time.monotonic() - t0
                results = await poller.wait(timeout=BOUND)
            finally:
                await poller.aclose()
                await asyncio.wait([consumer], timeout=5)
                _continue_agent_servers(home)
    assert set(results) == set(cids)
    final = {}
    for cid in cids:
        _check_chain(changes[cid])
        conv = results[cid]
        # The process sandbox keeps its registry in memory: the restarted server no longer
        # knows sandbox A, so the conversations read sandbox MISSING (terminal).
        final[cid] = changes[cid][-1].new
        assert conv is None or conv.is_terminal, conv
    NOTES.append(
        f"killed app server: states before {json.dumps(before_kill)}; poller saw {outage} "
        f"failed reads; restart took {restart_s:.1f}s; final states {json.dumps(final)}"
    )
