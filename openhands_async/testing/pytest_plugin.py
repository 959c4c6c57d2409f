"""The pytest plugin: FakeCloud fixtures for your tests, with no conftest to write.

Installing openhands-async registers this module with pytest (a `pytest11` entry point), so
every test can ask for:

- `fake_cloud`: a running `FakeCloud`, stopped after the test. Its options come from the
  closest `@pytest.mark.fake_cloud(...)` marker (any `FakeCloud` keyword argument).
- `make_fake_cloud`: a factory, `await make_fake_cloud(**options)`, for a test that needs
  several fakes or builds the options at run time; each one is stopped after the test.
- `openhands_client`: an `OpenHandsClient` bound to `fake_cloud` (its key, its URL; never
  the key in your environment), closed after the test. Extra client arguments come from
  `@pytest.mark.openhands_client(...)`.

    import pytest

    @pytest.mark.fake_cloud(time_scale=0.1, run_outcome="error")
    async def test_reports_failures(fake_cloud, openhands_client):
        (cid,) = fake_cloud.seed_conversations(1)
        ...

The fixtures are async, so they need pytest-asyncio (`asyncio_mode = "auto"`, or mark the
tests with `@pytest.mark.asyncio`). Turn the plugin off with `-p no:openhands_async`.

This is the one module of `openhands_async.testing` that imports the SDK: the fake itself
never does, so it cannot share the SDK's bugs.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from openhands_async import OpenHandsClient

from . import FakeCloud

try:
    import pytest_asyncio
except ImportError:  # pragma: no cover - exercised in a subprocess by the plugin's tests
    pytest_asyncio = None  # type: ignore[assignment]

__all__ = ["MakeFakeCloud", "fake_cloud", "make_fake_cloud", "openhands_client"]

MakeFakeCloud = Callable[..., Awaitable[FakeCloud]]
"""The type of the `make_fake_cloud` fixture: `await make_fake_cloud(**FakeCloud options)`."""

NEEDS_PYTEST_ASYNCIO = (
    "the openhands_async fixtures (fake_cloud, make_fake_cloud, openhands_client) are async "
    "and need pytest-asyncio: pip install pytest-asyncio"
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "fake_cloud(**options): FakeCloud keyword arguments for the fake_cloud fixture",
    )
    config.addinivalue_line(
        "markers",
        "openhands_client(**options): OpenHandsClient keyword arguments for the "
        "openhands_client fixture",
    )


def _marker_options(request: pytest.FixtureRequest, name: str) -> dict[str, Any]:
    marker = request.node.get_closest_marker(name)
    if marker is None:
        return {}
    if marker.args:
        raise pytest.UsageError(f"@pytest.mark.{name}(...) takes keyword arguments only")
    return dict(marker.kwargs)


def _client_for(cloud: FakeCloud, options: dict[str, Any]) -> OpenHandsClient:
    # An empty key, not None: None would fall back to OPENHANDS_API_KEY from the environment,
    # and a test must not send a real key anywhere, not even to the fake.
    key = cloud.api_key or ""
    credentials = (
        {"api_key": "", "session_api_key": key}
        if cloud.auth == "session"
        else {"api_key": key, "session_api_key": ""}
    )
    return OpenHandsClient(base_url=cloud.base_url, **{**credentials, **options})


if pytest_asyncio is not None:

    @pytest_asyncio.fixture
    async def make_fake_cloud() -> AsyncIterator[MakeFakeCloud]:
        """A factory of running FakeCloud servers, all stopped after the test."""
        clouds: list[FakeCloud] = []

        async def make(**options: Any) -> FakeCloud:
            cloud = FakeCloud(**options)
            await cloud.start()
            clouds.append(cloud)
            return cloud

        try:
            yield make
        finally:
            for cloud in reversed(clouds):
                await cloud.stop()

    @pytest_asyncio.fixture
    async def fake_cloud(
        request: pytest.FixtureRequest, make_fake_cloud: MakeFakeCloud
    ) -> FakeCloud:
        """A running FakeCloud; options from the closest `@pytest.mark.fake_cloud(...)`."""
        return await make_fake_cloud(**_marker_options(request, "fake_cloud"))

    @pytest_asyncio.fixture
    async def openhands_client(
        request: pytest.FixtureRequest, fake_cloud: FakeCloud
    ) -> AsyncIterator[OpenHandsClient]:
        """An OpenHandsClient bound to `fake_cloud`; extra arguments from
        `@pytest.mark.openhands_client(...)`."""
        options = _marker_options(request, "openhands_client")
        async with _client_for(fake_cloud, options) as client:
            yield client

else:  # pragma: no cover - exercised in a subprocess by the plugin's tests
    # Defined anyway, so a test asking for them is told what is missing instead of
    # "fixture 'fake_cloud' not found".

    @pytest.fixture
    def make_fake_cloud() -> None:
        pytest.fail(NEEDS_PYTEST_ASYNCIO, pytrace=False)

    @pytest.fixture
    def fake_cloud() -> None:
        pytest.fail(NEEDS_PYTEST_ASYNCIO, pytrace=False)

    @pytest.fixture
    def openhands_client() -> None:
        pytest.fail(NEEDS_PYTEST_ASYNCIO, pytrace=False)
