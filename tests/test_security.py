"""Secrets never leak; credentials never follow a redirect; transport safety defaults."""

from __future__ import annotations

import logging
import pickle
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


# -- secret values the caller passes in (issue 20) ----------------------------------------

SECRET_VALUE = "s3cr3t-VALUE-5566778899"
LLM_KEY = "sk-llm-PRIVATE-112233445566"
GIT_TOKEN = "ghp_GITTOKEN-998877665544"


def test_secret_str_never_shows_its_value() -> None:
    secret = oh.SecretStr(SECRET_VALUE)
    shown = [repr(secret), str(secret), f"{secret}", f"{secret!r}", f"{secret:>40}"]
    assert all(SECRET_VALUE not in text for text in shown)
    assert secret.get_secret_value() == SECRET_VALUE
    assert secret == oh.SecretStr(SECRET_VALUE)
    assert oh.SecretStr(secret).get_secret_value() == SECRET_VALUE
    with pytest.raises(TypeError):
        pickle.dumps(secret)


async def test_secret_values_never_leak(
    secret_cloud: FakeCloud, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    cloud = secret_cloud
    texts: list[str] = []
    async with oh.OpenHandsClient(
        api_key=KEY, base_url=cloud.base_url, retry_policy=FAST
    ) as client:
        calls = {
            "create_secret": (lambda: client.secrets.create("TOKEN", SECRET_VALUE), SECRET_VALUE),
            "store_git_providers": (
                lambda: client.secrets.set_git_provider("github", GIT_TOKEN),
                GIT_TOKEN,
            ),
            "store_settings": (lambda: client.settings.update(llm_api_key=LLM_KEY), LLM_KEY),
            "save_profile": (lambda: client.settings.profiles.save("p", api_key=LLM_KEY), LLM_KEY),
        }
        for call, _ in calls.values():
            texts.append(repr(await call()))
        texts += [repr(s) for s in await client.secrets.search().to_list()]
        texts += [repr(await client.settings.get()), repr(await client.settings.profiles.list())]
        texts += [repr(await client.settings.profiles.get("p"))]
        texts += [str((await client.settings.get()).payload)]
        # A server that echoes the request back in its error (pydantic's 422 carries
        # "input"), or a 500 quoting it: the values are masked before the caller sees them.
        for route, (call, value) in calls.items():
            for status, echo in (
                (422, {"detail": [{"msg": "bad", "input": {"value": value}}]}),
                (500, {"detail": f"could not store {value}"}),
                (503, {"error": f"could not store {value}"}),
            ):
                cloud.add_fault(Fault(route=route, status=status, body=echo, times=5))
                with pytest.raises(oh.APIStatusError) as info:
                    await call()
                cloud.clear_faults()
                texts += [repr(info.value), str(info.value), repr(info.value.body)]
                texts += traceback.format_exception(info.value)
    texts += [r.getMessage() for r in caplog.records]
    texts += [repr(r.__dict__) for r in caplog.records]
    blob = "\n".join(texts)
    for value in (SECRET_VALUE, LLM_KEY, GIT_TOKEN):
        assert value not in blob
    # ... and the server did get them
    assert cloud.account.secrets["TOKEN"].value == SECRET_VALUE
    assert cloud.account.provider_tokens["github"]["token"] == GIT_TOKEN
    assert cloud.account.llm["api_key"] == LLM_KEY
    assert cloud.account.profiles["p"].llm["api_key"] == LLM_KEY


def test_request_bodies_print_masked() -> None:
    from openhands_async.resources._redact import secret_body

    body = secret_body({"name": "X", "value": oh.SecretStr(SECRET_VALUE), "n": [1]})
    assert SECRET_VALUE not in repr(body)
    assert SECRET_VALUE not in str(body)
    assert body["value"] == SECRET_VALUE  # what goes on the wire
    import json

    assert json.loads(json.dumps(body)) == {"name": "X", "value": SECRET_VALUE, "n": [1]}
