"""Secrets never leak; credentials never follow a redirect; transport safety defaults."""

from __future__ import annotations

import logging
import traceback
import uuid
from collections.abc import AsyncIterator

import pytest
from aiohttp import web

import openhands_async as oh
from openhands_async._start_request import make_start_request
from openhands_async.testing import FakeCloud, Fault

KEY = "sk-oh-SUPERSECRET-0123456789"
TOKEN = "ghp_TOKENVALUE-abcdef987654"
FAST = oh.RetryPolicy(max_retries=1, initial_delay=0.01, max_delay=0.02)


@pytest.fixture
async def secret_cloud() -> AsyncIterator[FakeCloud]:
    async with FakeCloud(api_key=KEY, time_scale=0.01) as fake:
        yield fake


async def test_api_key_and_start_secrets_never_leak(
    secret_cloud: FakeCloud, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    texts: list[str] = []
    cloud = secret_cloud
    async with oh.OpenHandsClient(
        api_key=KEY, base_url=cloud.base_url, retry_policy=FAST
    ) as client:
        texts += [repr(client), str(client)]
        task = await client.conversations.start("Fix it", secrets={"TOKEN": TOKEN})
        texts += [repr(task), str(task)]
        texts += [repr(t) for t in await client.start_tasks.get_many([task.id])]
        req = make_start_request("x", secrets={"TOKEN": TOKEN})
        texts += [repr(req), str(req), repr(task.request)]
        # errors of every kind, with their tracebacks
        for fault in (
            Fault(route="count_conversations", status=500),
            Fault(route="count_conversations", status=401),
            Fault(route="count_conversations", status=422, body={"detail": [{"msg": "bad"}]}),
            Fault(route="count_conversations", status=200, body="<html>oops</html>"),
            Fault(route="count_conversations", action="reset_before", times=5),
        ):
            cloud.add_fault(fault)
            with pytest.raises(oh.OpenHandsError) as info:
                await client.conversations.count()
            cloud.clear_faults()
            texts += [repr(info.value), str(info.value)]
            texts += traceback.format_exception(info.value)
    async with oh.OpenHandsClient(api_key="wrong", base_url=cloud.base_url) as bad:
        with pytest.raises(oh.AuthenticationError) as info:
            await bad.conversations.count()
        texts += traceback.format_exception(info.value)
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(r.__dict__) for r in caplog.records]
    blob = "\n".join(texts)
    assert KEY not in blob
    assert TOKEN not in blob


async def test_authorization_not_sent_on_redirect(secret_cloud: FakeCloud) -> None:
    seen: list[dict[str, str]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.json_response(0)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", record)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        target = f"http://127.0.0.1:{port}/api/v1/app-conversations/count"
        for status in (301, 302, 307, 308):
            secret_cloud.add_fault(
                Fault(route="count_conversations", status=status, headers={"Location": target})
            )
            async with oh.OpenHandsClient(
                api_key=KEY, base_url=secret_cloud.base_url, retry_policy=FAST
            ) as client:
                with pytest.raises(oh.APIStatusError) as info:
                    await client.conversations.count()
                assert info.value.status == status
                assert client.session is not None
                assert not client.session.connector._acquired  # type: ignore[union-attr]
        assert seen == []
    finally:
        await runner.cleanup()


def test_plain_http_to_a_remote_host_is_refused() -> None:
    for url in ("http://example.com", "http://[2001:db8::1]:3000", "http://openhands.invalid/api"):
        with pytest.raises(ValueError, match="http"):
            oh.OpenHandsClient(api_key=KEY, base_url=url)
    # opt-in and loopback are allowed
    oh.OpenHandsClient(api_key=KEY, base_url="http://example.com", allow_insecure_http=True)
    oh.OpenHandsClient(api_key=KEY, base_url="http://127.0.0.1:3000")
    oh.OpenHandsClient(api_key=KEY, base_url="http://localhost:3000")


async def test_tls_verification_is_on_by_default(secret_cloud: FakeCloud) -> None:
    async with oh.OpenHandsClient(api_key=KEY, base_url=secret_cloud.base_url) as client:
        await client.conversations.count()
        session = client.session
        assert session is not None
        connector = session.connector
        assert connector is not None
        ssl = connector._ssl  # type: ignore[attr-defined]
        assert ssl is not False, "TLS verification disabled"
        assert ssl is True or ssl is None or getattr(ssl, "verify_mode", 2) != 0


async def test_unknown_conversation_id_error_has_no_key(secret_cloud: FakeCloud) -> None:
    async with oh.OpenHandsClient(api_key=KEY, base_url=secret_cloud.base_url) as client:
        with pytest.raises(oh.NotFoundError) as info:
            await client.conversations.get(uuid.uuid4().hex)
    assert KEY not in "".join(traceback.format_exception(info.value))
