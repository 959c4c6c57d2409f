"""Shared by the examples: a client for OpenHands Cloud, or an embedded FakeCloud without a key."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import openhands_async as oh
from openhands_async.testing import FakeCloud


@asynccontextmanager
async def example_client() -> AsyncIterator[oh.OpenHandsClient]:
    """OpenHands Cloud when OPENHANDS_API_KEY is set, else a FakeCloud on 127.0.0.1."""
    if os.environ.get("OPENHANDS_API_KEY"):
        async with oh.OpenHandsClient() as client:
            yield client
        return
    print("OPENHANDS_API_KEY is not set: running against an embedded FakeCloud")
    async with (
        FakeCloud() as cloud,
        oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client,
    ):
        yield client
