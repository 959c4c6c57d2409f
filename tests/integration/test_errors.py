"""Every error status the real server returns becomes the SDK's typed error.

`client.request` is used only where the SDK's own methods validate input before sending
(or have no method for the route); everything else goes through the SDK's methods.
"""

from __future__ import annotations

import asyncio
import uuid

import aiohttp
import pytest

import openhands_async as oh

from ._drift import RECORDER
from .conftest import START_PATH, Fleet, wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")


def _missing() -> str:
    return uuid.uuid4().hex


async def test_422_bad_body(client: oh.OpenHandsClient) -> None:
    with pytest.raises(oh.UnprocessableEntityError) as info:
        await client.request("POST", START_PATH, json=[1])
    err = info.value
    assert err.status == 422
    assert err.request_method == "POST"
    assert err.request_url.endswith(START_PATH)
    assert err.errors
    assert all("loc" in e and "msg" in e for e in err.errors)
    assert "HTTP 422" in str(err)


async def test_422_bad_query(client: oh.OpenHandsClient) -> None:
    # start-tasks validates ids as UUIDs in FastAPI: 422, where app-conversations answers 400.
    with pytest.raises(oh.UnprocessableEntityError) as info:
        await client.request("GET", f"{START_PATH}/start-tasks", params=[("ids", "not-a-uuid")])
    assert info.value.errors[0]["loc"] == ["query", "ids", 0]
    with pytest.raises(oh.UnprocessableEntityError):
        await client.request("GET", f"{START_PATH}/search", params={"limit": 101})


async def test_400_bad_id(client: oh.OpenHandsClient) -> None:
    with pytest.raises(oh.BadRequestError) as info:
        await client.request("GET", START_PATH, params=[("ids", "not-a-uuid")])
    assert info.value.status == 400
    assert "Invalid UUID format" in str(info.value)
    assert info.value.body == {"detail": "Invalid UUID format for ids: ['not-a-uuid']"}


async def test_400_too_many_ids(client: oh.OpenHandsClient) -> None:
    """The server's cap is 99 ids per call: the SDK's chunk size (99) is right at it."""
    ids = [_missing() for _ in range(100)]
    with pytest.raises(oh.BadRequestError, match="Maximum is 99"):
        await client.request("GET", START_PATH, params=[("ids", i) for i in ids])
    assert (
        await client.request("GET", START_PATH, params=[("ids", i) for i in ids[:99]])
        == [None] * 99
    )


async def test_404_unknown_route(client: oh.OpenHandsClient) -> None:
    with pytest.raises(oh.NotFoundError) as info:
        await client.request("GET", "/api/v1/no-such-route")
    assert info.value.status == 404
    assert info.value.body == {"detail": "Not Found"}


async def test_404_unknown_conversation(client: oh.OpenHandsClient) -> None:
    missing = _missing()
    with pytest.raises(oh.NotFoundError, match="not found"):
        await client.conversations.send_message(missing, "again")
    with pytest.raises(oh.NotFoundError, match="unknown_app_conversation"):
        await client.request("PATCH", f"{START_PATH}/{missing}", json={"title": "x"})


async def test_405_single_conversation_path(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    """GET /app-conversations/{id} is not a read route (405 here, HTML 200 on the Cloud)."""
    with pytest.raises(oh.APIStatusError) as info:
        await client.request("GET", f"{START_PATH}/{fleet.a}")
    assert type(info.value) is oh.APIStatusError
    assert info.value.status == 405


async def test_409_sandbox_paused(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    """A paused sandbox: no execution status, and send-message answers 409."""
    sandbox = fleet.a
    before = len(RECORDER.bodies)
    await client.sandboxes.pause(sandbox)
    (paused,) = [b for b in RECORDER.bodies[before:] if b.path.endswith("/pause")]
    assert (paused.status, paused.raw) == (200, b'{"success":true}')
    try:
        conv = await client.conversations.get(fleet.b)
        assert conv.sandbox_status is oh.SandboxStatus.PAUSED
        assert conv.execution_status is None
        assert conv.conversation_url is None
        assert not conv.is_terminal  # paused: it can go on once resumed
        with pytest.raises(oh.ConflictError) as info:
            await client.conversations.send_message(fleet.b, "again")
        assert info.value.status == 409
        assert "resume" in str(info.value)
    finally:
        before = len(RECORDER.bodies)
        await client.sandboxes.resume(sandbox)
        resumed = [b.raw for b in RECORDER.bodies[before:] if b.path.endswith("/resume")]

        async def running_again() -> bool | None:
            conv = await client.conversations.get(fleet.b)
            ok = conv.sandbox_status is oh.SandboxStatus.RUNNING and conv.execution_status
            return True if ok else None

        await wait_for("the sandbox to run again", running_again, bound=30)
    assert resumed == [b'{"success":true}']
    conv = await client.conversations.get(fleet.b)
    assert conv.execution_status is oh.ExecutionStatus.FINISHED


async def test_429_request_rate(base_url: str, http_session: aiohttp.ClientSession) -> None:
    """The open-source server allows ~10 requests/s per client address, then answers 429.

    Without retries the SDK raises RateLimitError with the server's Retry-After; with its
    default policy the same burst completes (the client pauses, then retries). `/alive` is
    behind the same limiter and cheap: API reads take ~0.2 s each on this server, too slow
    for a burst to reach the limit reliably.
    """
    burst = 40
    await asyncio.sleep(1.1)  # start from an empty window
    async with oh.OpenHandsClient(base_url=base_url, session=http_session, max_retries=0) as c:
        results = await asyncio.gather(
            *(c.request("GET", "/alive") for _ in range(burst)), return_exceptions=True
        )
    limited = [r for r in results if isinstance(r, oh.RateLimitError)]
    others = [r for r in results if isinstance(r, BaseException) and r not in limited]
    assert not others, others
    assert limited, f"{burst} requests at once were all accepted: no 429 to check"
    err = limited[0]
    assert err.status == 429
    assert err.retry_after == 1.0
    assert err.body == {"message": "Too many requests"}
    assert "Too many requests" in str(err)
    assert not isinstance(err, oh.ConcurrencyLimitError)
    assert all(r == {"status": "ok"} for r in results if not isinstance(r, BaseException))

    await asyncio.sleep(1.1)
    before = len(RECORDER.bodies)
    async with oh.OpenHandsClient(base_url=base_url, session=http_session) as c:
        answers = await asyncio.gather(*(c.request("GET", "/alive") for _ in range(burst)))
    assert answers == [{"status": "ok"}] * burst
    retried = sum(b.status == 429 for b in RECORDER.bodies[before:])
    assert retried, "no 429 in the second burst: the retry path was not exercised"
    await asyncio.sleep(1.1)  # leave an empty window to the next test
