"""The client core over loopback against FakeCloud: config, lifetime, reads, errors, retries."""

from __future__ import annotations

import asyncio
import logging
import socket
import uuid

import aiohttp
import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud, Fault

from .conftest import eventually

FAST = oh.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)


# ---------------------------------------------------------------- configuration


async def test_env_vars_configure_the_client(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENHANDS_API_KEY", cloud.api_key or "")
    monkeypatch.setenv("OPENHANDS_BASE_URL", cloud.base_url)
    async with oh.OpenHandsClient() as client:
        assert client.base_url == cloud.base_url
        assert await client.conversations.count() == 0


async def test_argument_beats_env(cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENHANDS_API_KEY", "wrong-key")
    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        assert await client.conversations.count() == 0
    async with oh.OpenHandsClient(base_url=cloud.base_url) as client:
        with pytest.raises(oh.AuthenticationError) as info:
            await client.conversations.count()
    assert info.value.status == 401
    assert "wrong-key" not in str(info.value)


async def test_missing_key_for_a_remote_host_names_the_env_var(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENHANDS_API_KEY", raising=False)
    monkeypatch.delenv("OPENHANDS_SESSION_API_KEY", raising=False)
    # .invalid never resolves; the check fires before anything is sent anyway.
    async with oh.OpenHandsClient(base_url="https://openhands.invalid") as client:
        with pytest.raises(oh.AuthenticationError, match="OPENHANDS_API_KEY"):
            await client.conversations.count()
        assert client.session is None  # nothing was sent


async def test_local_server_without_auth_gets_no_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENHANDS_API_KEY", raising=False)
    monkeypatch.delenv("OPENHANDS_SESSION_API_KEY", raising=False)
    async with FakeCloud(api_key=None) as cloud, oh.OpenHandsClient(base_url=cloud.base_url) as c:
        assert await c.conversations.count() == 0
        assert "Authorization" not in c._headers()
        assert "X-Session-API-Key" not in c._headers()


async def test_session_api_key_header_for_self_hosted_servers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OPENHANDS_API_KEY", raising=False)
    async with FakeCloud(api_key="local-key", auth="session") as cloud:
        async with oh.OpenHandsClient(base_url=cloud.base_url, session_api_key="local-key") as c:
            assert await c.conversations.count() == 0
        monkeypatch.setenv("OPENHANDS_SESSION_API_KEY", "local-key")
        async with oh.OpenHandsClient(base_url=cloud.base_url) as c:
            assert await c.conversations.count() == 0
        async with oh.OpenHandsClient(base_url=cloud.base_url, session_api_key="wrong") as c:
            with pytest.raises(oh.AuthenticationError):
                await c.conversations.count()


def test_plain_http_to_a_remote_host_is_refused() -> None:
    with pytest.raises(ValueError, match="allow_insecure_http"):
        oh.OpenHandsClient(api_key="k", base_url="http://openhands.invalid")
    client = oh.OpenHandsClient(
        api_key="k", base_url="http://openhands.invalid", allow_insecure_http=True
    )
    assert client.base_url == "http://openhands.invalid"


def test_user_agent_and_repr_hide_the_key() -> None:
    client = oh.OpenHandsClient(api_key="sk-very-secret", base_url="http://127.0.0.1:9")
    headers = client._headers()
    assert headers["User-Agent"].startswith(f"openhands-async/{oh.__version__}")
    assert "sk-very-secret" not in repr(client)
    assert "sk-very-secret" not in str(vars(client.conversations))


# ---------------------------------------------------------------- lifetime


async def test_owned_session_is_closed_borrowed_one_is_not(cloud: FakeCloud) -> None:
    client = oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url)
    await client.conversations.count()
    owned = client.session
    assert owned is not None
    await client.aclose()
    await client.aclose()  # idempotent
    assert owned.closed
    with pytest.raises(RuntimeError, match="closed"):
        await client.conversations.count()

    async with aiohttp.ClientSession() as session:
        async with oh.OpenHandsClient(
            api_key=cloud.api_key, base_url=cloud.base_url, session=session
        ) as borrowed:
            assert await borrowed.conversations.count() == 0
        assert not session.closed


# ---------------------------------------------------------------- reads


async def test_start_then_read_through_to_ready(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    task = await client.conversations.start("Fix the README", repository="https://github.com/o/r")
    assert task.status is oh.StartTaskStatus.WORKING
    assert task.request is not None
    assert task.request.selected_repository == "o/r"
    assert task.request.conversation_id is not None

    async def ready() -> oh.StartTask:
        while True:
            current = await client.start_tasks.get(task.id)
            if current.is_terminal:
                return current
            await asyncio.sleep(0.01)

    final = await asyncio.wait_for(ready(), 10)
    assert final.status is oh.StartTaskStatus.READY
    assert final.app_conversation_id == uuid.UUID(task.request.conversation_id).hex
    conversation = await client.conversations.get(final.app_conversation_id)
    assert conversation.id == final.app_conversation_id
    assert conversation.selected_repository == "o/r"
    assert cloud.starts_received == 1


async def test_get_many_chunks_keeps_order_and_reports_missing(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    tasks = [await client.conversations.start(f"job {n}") for n in range(5)]
    missing = uuid.uuid4().hex
    wanted = [t.id for t in tasks] * 50 + [missing]  # 251 ids
    before = cloud.requests["get_start_tasks"]
    got = await client.start_tasks.get_many(wanted)
    assert cloud.requests["get_start_tasks"] - before == 3  # ceil(251 / 99)
    assert [t.id if t else None for t in got] == [*wanted[:-1], None]


async def test_get_of_a_missing_id_is_not_found(client: oh.OpenHandsClient) -> None:
    with pytest.raises(oh.NotFoundError):
        await client.conversations.get(uuid.uuid4().hex)
    with pytest.raises(oh.NotFoundError):
        await client.start_tasks.get(str(uuid.uuid4()))


@pytest.mark.parametrize("bad", ["not-a-uuid", "", "1234", "g" * 32])
async def test_invalid_ids_fail_before_any_request(
    client: oh.OpenHandsClient, cloud: FakeCloud, bad: str
) -> None:
    with pytest.raises(ValueError, match="UUID"):
        await client.conversations.get_many([uuid.uuid4().hex, bad])
    with pytest.raises(ValueError, match="UUID"):
        await client.start_tasks.get(bad)
    assert sum(cloud.requests.values()) == 0


async def test_search_follows_cursors_and_honours_limit(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    for n in range(7):
        await client.conversations.start(f"job {n}", title=f"README job {n}")
    await eventually(lambda: cloud.conversation_count() == 7)

    before = cloud.requests["search_conversations"]
    items = [c async for c in client.conversations.search(page_size=3)]
    assert len(items) == 7
    assert len({c.id for c in items}) == 7
    assert cloud.requests["search_conversations"] - before == 3

    limited = await client.conversations.search(page_size=3, limit=5).to_list()
    assert [c.id for c in limited] == [c.id for c in items[:5]]
    titled = await client.conversations.search(title_contains="job 3").to_list()
    assert [c.title for c in titled] == ["README job 3"]
    assert await client.conversations.count() == 7
    assert await client.conversations.count(title_contains="job 3") == 1

    tasks = await client.start_tasks.search(page_size=2, order="CREATED_AT").to_list()
    assert len(tasks) == 7
    assert [t.created_at for t in tasks] == sorted(t.created_at for t in tasks)  # type: ignore[type-var]
    assert await client.start_tasks.count() == 7


@pytest.mark.parametrize("page_size", [0, 101, -1])
def test_page_size_out_of_range(client: oh.OpenHandsClient, page_size: int) -> None:
    with pytest.raises(ValueError, match="page_size"):
        client.conversations.search(page_size=page_size)


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, oh.BadRequestError),
        (403, oh.PermissionDeniedError),
        (404, oh.NotFoundError),
        (409, oh.ConflictError),
        (410, oh.GoneError),
        (422, oh.UnprocessableEntityError),
        (500, oh.InternalServerError),
    ],
)
async def test_status_errors_are_typed_and_carry_the_body(
    client: oh.OpenHandsClient, cloud: FakeCloud, status: int, cls: type[oh.APIStatusError]
) -> None:
    cloud.add_fault(Fault(route="count_conversations", status=status, body={"detail": "boom"}))
    with pytest.raises(cls) as info:
        await client.conversations.count()
    err = info.value
    assert err.status == status
    assert err.body == {"detail": "boom"}
    assert err.request_method == "GET"
    assert err.request_url.endswith("/api/v1/app-conversations/count")
    assert cloud.requests["count_conversations"] == 1  # not retried


async def test_html_page_with_200_is_a_typed_error(client: oh.OpenHandsClient) -> None:
    # The Cloud answers the single-id path with its web app; the SDK never calls it, but
    # any HTML answer must become ResponseValidationError, not a decode error.
    with pytest.raises(oh.ResponseValidationError, match="text/html"):
        await client.request("GET", f"/api/v1/app-conversations/{uuid.uuid4().hex}")


async def test_wrong_json_shape_is_a_typed_error(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    cloud.add_fault(Fault(route="get_conversations", status=200, body={"not": "a list"}))
    with pytest.raises(oh.ResponseValidationError):
        await client.conversations.get_many([uuid.uuid4().hex])


async def test_real_422_for_a_bad_body(client: oh.OpenHandsClient) -> None:
    with pytest.raises(oh.UnprocessableEntityError) as info:
        await client.request("POST", "/api/v1/app-conversations", json=["not", "an", "object"])
    assert info.value.errors


# ---------------------------------------------------------------- retries


async def test_transient_errors_on_reads_are_retried(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    cloud.add_fault(Fault(route="count_conversations", status=503, times=2))
    assert await client.conversations.count() == 0
    assert cloud.requests["count_conversations"] == 3


async def test_retries_stop_at_max_retries(cloud: FakeCloud) -> None:
    cloud.add_fault(Fault(route="count_conversations", status=502, times=10))
    async with oh.OpenHandsClient(
        api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST, max_retries=1
    ) as client:
        with pytest.raises(oh.InternalServerError):
            await client.conversations.count()
    assert cloud.requests["count_conversations"] == 2


async def test_retry_after_is_honoured(client: oh.OpenHandsClient, cloud: FakeCloud) -> None:
    cloud.add_fault(Fault(route="count_conversations", status=429, retry_after="1"))
    assert await client.conversations.count() == 0
    first, second = [r for r in cloud.request_log if r.route == "count_conversations"]
    assert second.time - first.time >= 1.0  # never undercut


async def test_a_429_pauses_every_request_of_the_client(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    cloud.add_fault(Fault(route="count_conversations", status=429, retry_after="1"))
    first = asyncio.create_task(client.conversations.count())
    # Until the client has read the 429 (not only sent the request: on a busy machine the
    # next request could leave before the answer is back).
    await eventually(lambda: client._gate.paused_for > 0)
    await client.start_tasks.count()  # another route, same client: held by the pause
    await first
    limited = next(r for r in cloud.request_log if r.route == "count_conversations")
    other = next(r for r in cloud.request_log if r.route == "count_start_tasks")
    assert other.time - limited.time >= 1.0


async def test_long_retry_after_is_raised_not_slept(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    cloud.add_fault(Fault(route="count_conversations", status=429, retry_after="3600"))
    with pytest.raises(oh.RateLimitError) as info:
        await client.conversations.count()
    assert info.value.retry_after == 3600
    assert cloud.requests["count_conversations"] == 1


async def test_read_timeout_is_typed_and_retried(cloud: FakeCloud) -> None:
    cloud.add_fault(Fault(route="count_conversations", action="stall", times=5))
    timeouts = oh.Timeouts(connect=1.0, read=0.2, total=1.0)
    async with oh.OpenHandsClient(
        api_key=cloud.api_key, base_url=cloud.base_url, timeout=timeouts, retry_policy=FAST
    ) as client:
        with pytest.raises(oh.APITimeoutError) as info:
            await client.conversations.count()
    assert info.value.kind == "read"
    assert cloud.requests["count_conversations"] == 3


async def test_connection_refused_is_typed() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again on exit: nothing listens there
    async with oh.OpenHandsClient(
        api_key="k", base_url=f"http://127.0.0.1:{port}", retry_policy=FAST
    ) as client:
        with pytest.raises(oh.APIConnectionError) as info:
            await client.conversations.count()
    assert not info.value.may_have_been_sent


# ---------------------------------------------------------------- starts never duplicate


async def test_start_429_is_retried(client: oh.OpenHandsClient, cloud: FakeCloud) -> None:
    cloud.add_fault(Fault(route="start", status=429, retry_after="0"))
    task = await client.conversations.start("hello")
    assert task.status is oh.StartTaskStatus.WORKING
    assert cloud.starts_received == 1


async def test_lost_start_answer_is_found_not_resent(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    # The server acts on the start, then the connection drops mid-answer.
    cloud.add_fault(Fault(route="start", action="reset_mid_body"))
    task = await client.conversations.start("hello", conversation_id=str(uuid.uuid4()))
    assert cloud.starts_received == 1
    assert cloud.duplicate_starts == 0
    again = await client.start_tasks.get(task.id)
    assert again.request is not None
    assert again.request.conversation_id == task.request.conversation_id  # type: ignore[union-attr]


async def test_start_that_never_arrived_is_sent_again(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    # Dropped before the handler ran: the server has no trace, so re-sending is safe.
    cloud.add_fault(Fault(route="start", action="reset_before"))
    cloud.add_fault(Fault(route="start", status=502))
    task = await client.conversations.start("hello")
    assert cloud.starts_received == 1
    assert cloud.requests["start"] == 3
    assert (await client.start_tasks.get(task.id)).id == task.id


async def test_start_timeout_is_looked_up_not_resent(cloud: FakeCloud) -> None:
    cloud.add_fault(Fault(route="start", action="respond", delay=1.0))  # acts, answers late
    timeouts = oh.Timeouts(connect=1.0, read=0.3, total=2.0)
    async with oh.OpenHandsClient(
        api_key=cloud.api_key, base_url=cloud.base_url, timeout=timeouts, retry_policy=FAST
    ) as client:
        task = await client.conversations.start("hello")
    assert task.request is not None
    assert cloud.starts_received == 1
    assert cloud.duplicate_starts == 0


async def test_unconfirmed_start_is_raised_with_its_id(cloud: FakeCloud) -> None:
    cloud.add_fault(Fault(route="start", action="reset_mid_body"))
    cloud.add_fault(Fault(route="search_start_tasks", status=503, times=50))
    async with oh.OpenHandsClient(
        api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST
    ) as client:
        cid = uuid.uuid4().hex
        with pytest.raises(oh.StartUnconfirmedError) as info:
            await client.conversations.start("hello", conversation_id=cid)
    assert info.value.conversation_id == cid
    assert cloud.starts_received == 1


async def test_concurrency_cap_is_not_retried_on_a_timer() -> None:
    async with (
        FakeCloud(max_running=1, cap_mode="refuse", time_scale=5.0) as cloud,
        oh.OpenHandsClient(
            api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST
        ) as client,
    ):
        await client.conversations.start("first")
        with pytest.raises(oh.ConcurrencyLimitError) as info:
            await client.conversations.start("second")
    assert (info.value.limit, info.value.current) == (1, 1)
    assert cloud.requests["start"] == 2


async def test_find_start_sees_a_task_that_is_still_starting(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    cid = uuid.uuid4().hex
    task = await client.conversations.start("hello", conversation_id=cid)
    found = await client.conversations.find_start(cid)
    assert found is not None
    assert found.id == task.id
    assert await client.conversations.find_start(uuid.uuid4().hex) is None


async def test_debug_logs_never_show_the_key(
    cloud: FakeCloud, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="openhands_async")
    cloud.add_fault(Fault(route="count_conversations", status=503))
    async with oh.OpenHandsClient(
        api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=FAST
    ) as client:
        await client.conversations.count()
    assert caplog.records
    assert cloud.api_key
    assert cloud.api_key not in caplog.text
