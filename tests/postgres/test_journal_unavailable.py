"""A shared journal whose database cannot be reached: a typed error, nothing started, and
the DSN's password nowhere in what the user sees."""

from __future__ import annotations

import socket

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud

pytest.importorskip("psycopg")


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_unreachable_database_is_a_typed_error_without_the_password() -> None:
    dsn = f"postgresql://batch:s3cret-pw@127.0.0.1:{_closed_port()}/openhands?connect_timeout=2"
    async with (
        FakeCloud() as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client,
    ):
        with pytest.raises(oh.JournalUnavailableError) as info:
            async for _ in client.run_batch([{"message": "hi"}], journal=dsn, batch_name="b"):
                pass
        assert "127.0.0.1" in str(info.value)
        assert "s3cret-pw" not in str(info.value)
        assert "s3cret-pw" not in repr(info.value)
        assert info.value.__cause__ is None
        assert cloud.starts_received == 0
