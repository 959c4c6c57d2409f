"""A server started with SESSION_API_KEY: the SDK's `session_api_key` (X-Session-API-Key)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aiohttp
import pytest
import pytest_asyncio

import openhands_async as oh

from .conftest import START_PATH

pytestmark = pytest.mark.asyncio(loop_scope="session")


@pytest.fixture(autouse=True)
def _no_key_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENHANDS_API_KEY", "OPENHANDS_SESSION_API_KEY", "OPENHANDS_BASE_URL"):
        monkeypatch.delenv(name, raising=False)


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def keyed(
    keyed_base_url: str, session_key: str, http_session: aiohttp.ClientSession
) -> AsyncIterator[oh.OpenHandsClient]:
    async with oh.OpenHandsClient(
        base_url=keyed_base_url, session_api_key=session_key, session=http_session
    ) as c:
        yield c


async def test_right_key_reads(keyed: oh.OpenHandsClient, session_key: str) -> None:
    assert await keyed.conversations.count() == 0
    assert await keyed.conversations.search().to_list() == []
    assert await keyed.start_tasks.count() == 0
    assert await keyed.start_tasks.search().to_list() == []
    assert await keyed.conversations.get_many([uuid.uuid4().hex]) == [None]
    assert await keyed.start_tasks.get_many([uuid.uuid4().hex]) == [None]
    assert session_key not in repr(keyed)


async def test_right_key_passes_auth_on_post(keyed: oh.OpenHandsClient) -> None:
    # A bad body: 422 (validation) proves the key got the request past authentication.
    with pytest.raises(oh.UnprocessableEntityError):
        await keyed.request("POST", START_PATH, json=[1])


def _assert_unauthorized(err: oh.AuthenticationError, key: str) -> None:
    assert err.status == 401
    assert err.body == {"detail": "Unauthorized"}
    assert key not in str(err)
    assert key not in repr(err)
    assert key not in repr(err.headers)


@pytest.mark.parametrize("wrong", ["wrong-key", "bearer", "none"])
async def test_wrong_or_missing_key(
    wrong: str,
    keyed: oh.OpenHandsClient,
    keyed_base_url: str,
    session_key: str,
    http_session: aiohttp.ClientSession,
) -> None:
    kwargs: dict[str, str] = {
        "wrong-key": {"session_api_key": session_key[::-1]},
        "bearer": {"api_key": session_key},  # the Cloud's scheme: this server wants its header
        "none": {},
    }[wrong]
    async with oh.OpenHandsClient(base_url=keyed_base_url, session=http_session, **kwargs) as c:
        with pytest.raises(oh.AuthenticationError) as info:
            await c.conversations.count()
        _assert_unauthorized(info.value, session_key)
        with pytest.raises(oh.AuthenticationError) as info:
            await c.conversations.start("never started")
        _assert_unauthorized(info.value, session_key)
        with pytest.raises(oh.AuthenticationError):
            await c.start_tasks.get_many([uuid.uuid4().hex])
    # Nothing was started (and no lookup made one up).
    assert await keyed.start_tasks.count() == 0


async def test_session_key_from_environment(
    keyed_base_url: str,
    session_key: str,
    http_session: aiohttp.ClientSession,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENHANDS_SESSION_API_KEY", session_key)
    monkeypatch.setenv("OPENHANDS_BASE_URL", keyed_base_url)
    async with oh.OpenHandsClient(session=http_session) as c:
        assert c.base_url == keyed_base_url
        assert await c.conversations.count() == 0
