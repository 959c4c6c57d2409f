"""Fault matrix: every endpoint family x every injected network/server fault.

Each case ends in success (after retries) or a typed `OpenHandsError`; never a hang (bounded
by `asyncio.wait_for`), never a leaked connection, never a duplicated start. Set
`OH_FAULT_TABLE=path` to write the observed outcomes as a Markdown table (docs/reliability.md).
"""

from __future__ import annotations

import asyncio
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from email.utils import formatdate
from typing import Any

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud, Fault

HANG_BOUND = 20.0  # only catches hangs; every case finishes well inside it
POLICY = oh.RetryPolicy(max_retries=3, initial_delay=0.01, max_delay=0.05)
TIMEOUTS = oh.Timeouts(connect=1.0, read=0.3, total=3.0, stream_idle=0.5)

Op = Callable[[oh.OpenHandsClient, dict[str, str]], Awaitable[Any]]


async def _stream(client: oh.OpenHandsClient, _: dict[str, str]) -> Any:
    tasks = [
        t async for t in client.conversations.stream_start("Fix the README", poll_interval=0.05)
    ]
    return tasks[-1]


# name -> (route, writes a start?, SAFE to retry?, operation)
OPS: dict[str, tuple[str, bool, bool, Op]] = {
    "start": ("start", True, False, lambda c, _: c.conversations.start("Fix the README")),
    "stream_start": ("stream_start", True, False, _stream),
    "start_tasks.get_many": (
        "get_start_tasks",
        False,
        True,
        lambda c, _: c.start_tasks.get_many([uuid.uuid4().hex]),
    ),
    "start_tasks.search": (
        "search_start_tasks",
        False,
        True,
        lambda c, _: c.start_tasks.search().to_list(),
    ),
    "start_tasks.count": ("count_start_tasks", False, True, lambda c, _: c.start_tasks.count()),
    "conversations.get_many": (
        "get_conversations",
        False,
        True,
        lambda c, ctx: c.conversations.get_many([ctx["cid"]]),
    ),
    "conversations.search": (
        "search_conversations",
        False,
        True,
        lambda c, _: c.conversations.search().to_list(),
    ),
    "conversations.count": (
        "count_conversations",
        False,
        True,
        lambda c, _: c.conversations.count(),
    ),
    "send_message": (
        "send_message",
        False,
        False,
        lambda c, ctx: c.conversations.send_message(ctx["cid"], "more"),
    ),
    "events.search": (
        "search_events",
        False,
        True,
        lambda c, ctx: c.events.search(ctx["cid"]).to_list(),
    ),
    "sandboxes.search": (
        "search_sandboxes",
        False,
        True,
        lambda c, _: c.sandboxes.search().to_list(),
    ),
    "sandboxes.pause": (
        "pause_sandbox",
        False,
        True,
        lambda c, ctx: c.sandboxes.pause(ctx["sandbox_id"]),
    ),
}


def _http_date(seconds: float) -> str:
    return formatdate(time.time() + seconds, usegmt=True)


# name -> (list of faults to add, Retry-After seconds the retry must wait)
FAULTS: dict[str, tuple[Callable[[str], list[Fault]], float]] = {
    "500x2": (lambda r: [Fault(route=r, status=500, times=2)], 0),
    "502x2": (lambda r: [Fault(route=r, status=502, times=2)], 0),
    "503x2": (lambda r: [Fault(route=r, status=503, times=2)], 0),
    "504x2": (lambda r: [Fault(route=r, status=504, times=2)], 0),
    "503-forever": (lambda r: [Fault(route=r, status=503, times=None)], 0),
    "429-no-retry-after": (lambda r: [Fault(route=r, status=429)], 0),
    "429-retry-after-1s": (lambda r: [Fault(route=r, status=429, retry_after="1")], 1.0),
    "429-retry-after-date": (
        lambda r: [Fault(route=r, status=429, retry_after=_http_date(1))],
        0.0,  # HTTP-dates have 1 s resolution: the wait is 0..1 s
    ),
    "reset_before": (lambda r: [Fault(route=r, action="reset_before")], 0),
    "reset_after_headers": (lambda r: [Fault(route=r, action="reset_after_headers")], 0),
    "reset_mid_body": (lambda r: [Fault(route=r, action="reset_mid_body")], 0),
    "stall": (lambda r: [Fault(route=r, action="stall")], 0),
    "latency 0.2s (< read timeout)": (lambda r: [], 0),
    "delay>read-timeout": (lambda r: [Fault(route=r, action="reset_before", delay=0.5)], 0),
}

OUTCOMES: dict[tuple[str, str], str] = {}


@pytest.fixture(scope="module", autouse=True)
def _write_table() -> Any:
    yield
    path = os.environ.get("OH_FAULT_TABLE")
    if path and OUTCOMES:
        faults = [*FAULTS, "connect-refused"]
        lines = ["| operation | " + " | ".join(faults) + " |", "|---" * (len(faults) + 1) + "|"]
        for op in OPS:
            cells = [OUTCOMES.get((op, f), "") for f in faults]
            lines.append(f"| {op} | " + " | ".join(cells) + " |")
        with open(path, "w") as fh:
            fh.write("\n".join(lines) + "\n")


def _leftover_connections(client: oh.OpenHandsClient) -> int:
    session = client.session
    if session is None:
        return 0
    return len(session.connector._acquired)  # type: ignore[union-attr]


async def _context(cloud: FakeCloud) -> dict[str, str]:
    (cid,) = cloud.seed_conversations(1, message="Fix the README", started_ago=60)
    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as c:
        conv = await c.conversations.get(cid)
    assert conv.sandbox_id is not None
    return {"cid": cid, "sandbox_id": conv.sandbox_id}


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("op", list(OPS))
async def test_fault_matrix(op: str, fault: str) -> None:
    route, starts, safe, call = OPS[op]
    make_faults, min_gap = FAULTS[fault]
    async with FakeCloud(time_scale=0.01) as cloud:
        ctx = await _context(cloud)
        cloud.request_log.clear()
        if fault.startswith("latency"):
            cloud.latency = 0.2
        for f in make_faults(route):
            cloud.add_fault(f)
        before = cloud.requests[route]
        async with oh.OpenHandsClient(
            api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=POLICY, timeout=TIMEOUTS
        ) as client:
            try:
                await asyncio.wait_for(call(client, ctx), HANG_BOUND)
            except oh.OpenHandsError as exc:
                outcome = type(exc).__name__
            else:
                outcome = "ok"
            attempts = cloud.requests[route] - before
            assert _leftover_connections(client) == 0
        assert cloud.duplicate_starts == 0
        if starts:
            assert cloud.starts_received <= 1, "a start was sent twice"
        times = [r.time for r in cloud.request_log if r.route == route]
        if outcome == "ok" and min_gap and len(times) >= 2:
            assert times[1] - times[0] >= min_gap - 0.05, "retried before Retry-After"
        if safe and fault in ("502x2", "503x2", "504x2", "reset_before", "stall"):
            assert outcome == "ok", f"{op} should recover from {fault}: {outcome}"
            assert attempts >= 2
        if fault.startswith("429") and fault != "429-retry-after-date":
            assert outcome == "ok", f"{op} should recover from {fault}: {outcome}"
        if fault == "503-forever":
            assert outcome != "ok" or not safe
        OUTCOMES[(op, fault)] = f"{outcome} ({attempts})"


@pytest.mark.parametrize("op", list(OPS))
async def test_connect_refused(op: str) -> None:
    _, _, _, call = OPS[op]
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed once the with block ends: nothing listens
    ctx = {"cid": uuid.uuid4().hex, "sandbox_id": "sb-1"}
    async with oh.OpenHandsClient(
        api_key="k", base_url=f"http://127.0.0.1:{port}", retry_policy=POLICY, timeout=TIMEOUTS
    ) as client:
        with pytest.raises(oh.OpenHandsError) as info:
            await asyncio.wait_for(call(client, ctx), HANG_BOUND)
        assert isinstance(info.value, oh.APIConnectionError), info.value
        assert _leftover_connections(client) == 0
    OUTCOMES[(op, "connect-refused")] = type(info.value).__name__
