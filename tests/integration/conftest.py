"""Fixtures for the suite that runs against real open-source OpenHands app servers.

Run it with `nox -s integration` (tests/integration/harness.py starts the servers). The
servers' addresses come from the environment; a missing variable fails every test that
needs it, loudly (a CI run must never pass by skipping):

- `OH_REAL_BASE_URL`: a server without auth, with the fake LLM configured;
- `OH_REAL_KEYED_BASE_URL` and `OH_REAL_SESSION_KEY`: a server started with `SESSION_API_KEY`.

Starting a conversation takes ~15 s (a sandbox = an agent-server process), so the
conversations are started once per session by the `fleet` fixture and shared.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from datetime import datetime, timezone
from typing import Any, TypeVar

import aiohttp
import attrs
import pytest
import pytest_asyncio

import openhands_async as oh

from ._drift import RECORDER, RecordingResponse
from ._proxy import LossyProxy

T = TypeVar("T")

START_PATH = "/api/v1/app-conversations"
# Bounds on waiting for the real server (a sandbox boots in ~15 s on a 2-core machine).
SANDBOX_UP_BOUND = 150.0
READY_BOUND = 150.0
FINISHED_BOUND = 120.0
POLL = 0.5
#: lines for the end-of-run summary (timings, status sequences seen)
NOTES: list[str] = []


def _env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        pytest.fail(
            f"{name} is not set. These tests run against real OpenHands servers: "
            "run them with `nox -s integration` (tests/integration/harness.py starts the "
            "servers and sets the variables).",
            pytrace=False,
        )
    return value


@pytest.fixture(scope="session")
def base_url() -> str:
    return _env("OH_REAL_BASE_URL")


@pytest.fixture(scope="session")
def keyed_base_url() -> str:
    return _env("OH_REAL_KEYED_BASE_URL")


@pytest.fixture(scope="session")
def session_key() -> str:
    return _env("OH_REAL_SESSION_KEY")


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def http_session() -> AsyncIterator[aiohttp.ClientSession]:
    """One aiohttp session for every client, recording each body the server sends."""
    async with aiohttp.ClientSession(response_class=RecordingResponse) as session:
        yield session


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def client(
    base_url: str, http_session: aiohttp.ClientSession
) -> AsyncIterator[oh.OpenHandsClient]:
    async with oh.OpenHandsClient(base_url=base_url, session=http_session) as c:
        yield c


@pytest.fixture(autouse=True)
def _bodies_fit_the_models() -> Iterator[None]:
    """After each test: every body received so far must parse with the SDK's converter."""
    yield
    failures = RECORDER.check_new()
    if failures:
        pytest.fail(
            "the SDK's converter rejects real server answers:\n"
            + "\n".join(f"  {route}: {msg}" for route, msg in failures),
            pytrace=False,
        )


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "kills_server: SIGKILLs the plain server (and restarts it): runs last"
    )


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that kill the plain server run after every other test (the restarted server
    has forgotten the fleet's sandboxes)."""
    items.sort(key=lambda item: item.get_closest_marker("kills_server") is not None)


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if RECORDER.check_new() and exitstatus == 0:
        session.exitstatus = 1


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if NOTES:
        terminalreporter.section("real server notes")
        for line in NOTES:
            terminalreporter.write_line(line)
    terminalreporter.section("real server vs the SDK's models (drift)")
    for line in RECORDER.summary_lines():
        terminalreporter.write_line(line)


# --------------------------------------------------------------------------- helpers


async def wait_for(
    what: str, probe: Callable[[], Awaitable[T | None]], *, bound: float, every: float = POLL
) -> T:
    """Call `probe` until it returns something other than None; fail after `bound` seconds."""
    deadline = time.monotonic() + bound
    while True:
        result = await probe()
        if result is not None:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {bound:.0f}s waiting for {what}", pytrace=False)
        await asyncio.sleep(every)


def same_uuid(a: str | None, b: str) -> bool:
    return a is not None and uuid.UUID(a) == uuid.UUID(b)


async def raw_start_tasks(client: oh.OpenHandsClient) -> list[dict[str, Any]]:
    """Every start task on the server, as raw JSON (through the search route's pages)."""
    items: list[dict[str, Any]] = []
    page_id = None
    while True:
        params = {"limit": 100, "page_id": page_id}
        page = await client.request("GET", f"{START_PATH}/start-tasks/search", params=params)
        items += page["items"]
        page_id = page["next_page_id"]
        if not page_id:
            return items


def starts_sent_with(tasks: list[dict[str, Any]], conversation_id: str) -> int:
    """How many start tasks carried `conversation_id` in their request."""
    return sum(
        1
        for t in tasks
        if same_uuid((t.get("request") or {}).get("conversation_id"), conversation_id)
    )


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# --------------------------------------------------------------------------- the fleet


@attrs.define
class Early:
    """What the server said about conversation A right after its start was sent."""

    found: oh.StartTask | None  # conversations.find_start(A)
    by_id_search: list[oh.StartTask]  # start_tasks.search(conversation_id=A)
    by_id_count: int  # start_tasks.count(conversation_id=A)
    status_after: oh.StartTaskStatus  # A's status read after those lookups


@attrs.define
class Fleet:
    """Conversations started once per session and shared by the tests.

    - A: a plain `start` with a chosen conversation id (its own sandbox, id = A);
    - B: `start` through a proxy that loses the server's answer;
    - C: `start` through a proxy that loses the request itself (the server never sees it);
    - D: `start` through a proxy that loses the answer and then every lookup.
    B, C and D run in A's sandbox (`sandbox_id=A`): the process sandbox gives concurrent
    new sandboxes the same port (a real-server race), and reusing one is ~4x faster.
    """

    began: datetime
    a: str
    b: str
    c: str
    d: str
    a_task: oh.StartTask
    b_task: oh.StartTask
    c_task: oh.StartTask
    d_error: oh.StartUnconfirmedError
    early: Early
    b_proxy: LossyProxy
    c_proxy: LossyProxy
    d_proxy: LossyProxy
    logs: list[str]  # the SDK's log lines (INFO and up) while B, C and D started
    start_seconds: dict[str, float]
    ready: dict[str, oh.StartTask] = attrs.field(factory=dict)
    finished: dict[str, oh.Conversation] = attrs.field(factory=dict)
    statuses: dict[str, list[str]] = attrs.field(factory=dict)
    executions: dict[str, list[str | None]] = attrs.field(factory=dict)

    @property
    def ids(self) -> list[str]:
        return [self.a, self.b, self.c, self.d]


async def _through(
    proxy: LossyProxy, http_session: aiohttp.ClientSession, start: Callable[..., Awaitable[T]]
) -> T | oh.OpenHandsError:
    """Run `start(client)` with a client behind `proxy`; return its result or SDK error."""
    async with oh.OpenHandsClient(base_url=proxy.base_url, session=http_session) as c:
        try:
            return await start(c)
        except oh.OpenHandsError as exc:
            return exc


@contextlib.contextmanager
def sdk_log_lines() -> Iterator[list[str]]:
    """Collect the SDK's log messages (INFO and up) while the block runs."""
    handler = _ListHandler()
    sdk_log = logging.getLogger("openhands_async")
    level = sdk_log.level
    sdk_log.addHandler(handler)
    sdk_log.setLevel(logging.INFO)
    try:
        yield handler.messages
    finally:
        sdk_log.removeHandler(handler)
        sdk_log.setLevel(level)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def fleet(
    client: oh.OpenHandsClient, base_url: str, http_session: aiohttp.ClientSession
) -> AsyncIterator[Fleet]:
    upstream_port = int(base_url.rsplit(":", 1)[1].split("/")[0])
    began = datetime.now(timezone.utc)
    a, b, c, d = (uuid.uuid4().hex for _ in range(4))
    seconds: dict[str, float] = {}

    # A, and what the server says about it while it is still starting.
    t0 = time.monotonic()
    a_task = await client.conversations.start("Say hello (A).", conversation_id=a)
    seconds["A"] = time.monotonic() - t0
    found = await client.conversations.find_start(a)
    by_id_search = await client.start_tasks.search(conversation_id=a).to_list()
    by_id_count = await client.start_tasks.count(conversation_id=a)
    status_after = (await client.start_tasks.get(a_task.id)).status
    early = Early(found, by_id_search, by_id_count, status_after)

    statuses: dict[str, list[str]] = {a: [a_task.status.value]}

    def note_status(cid: str, task: oh.StartTask) -> None:
        seen = statuses.setdefault(cid, [])
        if not seen or seen[-1] != task.status.value:
            seen.append(task.status.value)

    async def a_sandbox_up() -> bool | None:
        (box,) = await client.request("GET", "/api/v1/sandboxes", params=[("id", a)])
        if box and box.get("status") == "RUNNING" and box.get("exposed_urls"):
            return True
        task = await client.start_tasks.get(a_task.id)
        note_status(a, task)
        if task.status is oh.StartTaskStatus.ERROR:
            pytest.fail(f"conversation A failed to start: {task.detail!r}", pytrace=False)
        return None

    await wait_for("A's sandbox to run", a_sandbox_up, bound=SANDBOX_UP_BOUND)

    async with (
        LossyProxy(upstream_port, lose_answers=1) as b_proxy,
        LossyProxy(upstream_port, lose_requests=1) as c_proxy,
        LossyProxy(upstream_port, lose_answers=1, refuse_after_loss=True) as d_proxy,
    ):

        async def start_b(cl: oh.OpenHandsClient) -> oh.StartTask:
            return await cl.conversations.start("Say hello (B).", conversation_id=b, sandbox_id=a)

        async def start_c(cl: oh.OpenHandsClient) -> oh.StartTask:
            return await cl.conversations.start("Say hello (C).", conversation_id=c, sandbox_id=a)

        async def start_d(cl: oh.OpenHandsClient) -> oh.StartTask:
            # Once the answer is lost, the proxy is gone: every lookup fails to connect.
            return await cl.conversations.start("Say hello (D).", conversation_id=d, sandbox_id=a)

        async def timed(name: str, coro: Awaitable[T]) -> T:
            t = time.monotonic()
            try:
                return await coro
            finally:
                seconds[name] = time.monotonic() - t

        with sdk_log_lines() as log_lines:
            b_res, c_res, d_res = await asyncio.gather(
                timed("B", _through(b_proxy, http_session, start_b)),
                timed("C", _through(c_proxy, http_session, start_c)),
                timed("D", _through(d_proxy, http_session, start_d)),
            )
    for name, res in (("B", b_res), ("C", c_res)):
        if not isinstance(res, oh.StartTask):
            pytest.fail(f"start of {name} raised {res!r}", pytrace=False)
    if not isinstance(d_res, oh.StartUnconfirmedError):
        pytest.fail(f"start of D should raise StartUnconfirmedError, got {d_res!r}", pytrace=False)
    assert isinstance(b_res, oh.StartTask)
    assert isinstance(c_res, oh.StartTask)

    fleet = Fleet(
        began=began,
        a=a,
        b=b,
        c=c,
        d=d,
        a_task=a_task,
        b_task=b_res,
        c_task=c_res,
        d_error=d_res,
        early=early,
        b_proxy=b_proxy,
        c_proxy=c_proxy,
        d_proxy=d_proxy,
        logs=log_lines,
        start_seconds=seconds,
    )

    # D's task exists on the server even though its start raised: find it the documented way.
    async def d_found() -> oh.StartTask | None:
        return await client.conversations.find_start(d, created_after=began)

    d_task = await wait_for("D's start task", d_found, bound=30)
    task_ids = {a: a_task.id, b: b_res.id, c: c_res.id, d: d_task.id}
    for cid, task in ((b, b_res), (c, c_res), (d, d_task)):
        note_status(cid, task)
    fleet.statuses = statuses
    fleet.executions = {cid: [] for cid in task_ids}

    async def all_ready() -> bool | None:
        tasks = await client.start_tasks.get_many(list(task_ids.values()))
        for cid, task in zip(task_ids, tasks, strict=True):
            assert task is not None, f"start task of {cid} vanished"
            note_status(cid, task)
            if task.status is oh.StartTaskStatus.ERROR:
                pytest.fail(f"start of {cid} ended in ERROR: {task.detail!r}", pytrace=False)
            fleet.ready[cid] = task
        return (
            True
            if all(t.status is oh.StartTaskStatus.READY for t in fleet.ready.values())
            else None
        )

    await wait_for("every start task to be READY", all_ready, bound=READY_BOUND)

    async def all_finished() -> bool | None:
        conversations = await client.conversations.get_many(fleet.ids)
        for cid, conv in zip(fleet.ids, conversations, strict=True):
            if conv is None:
                return None
            status = conv.execution_status.value if conv.execution_status else None
            if not fleet.executions[cid] or fleet.executions[cid][-1] != status:
                fleet.executions[cid].append(status)
            fleet.finished[cid] = conv
        done = all(c.is_terminal for c in fleet.finished.values())
        return True if done and len(fleet.finished) == 4 else None

    await wait_for("every conversation to finish", all_finished, bound=FINISHED_BOUND)
    NOTES.append(
        f"fleet ready in {(datetime.now(timezone.utc) - began).total_seconds():.1f}s; "
        f"start calls took {', '.join(f'{k} {v:.1f}s' for k, v in seconds.items())}; "
        f"start-task statuses {fleet.statuses}; execution statuses {fleet.executions}"
    )
    yield fleet
