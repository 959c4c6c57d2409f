"""Bodies of routes the SDK has models for but no resource yet (sandboxes), for the drift check.

Every body any test receives is checked after the test (conftest.py, `_drift.py`); the
summary at the end of the run lists the fields the server sends that the models drop.
"""

from __future__ import annotations

import pytest

import openhands_async as oh

from ._drift import RECORDER
from .conftest import Fleet

pytestmark = pytest.mark.asyncio(loop_scope="session")


async def test_sandbox_bodies(client: oh.OpenHandsClient, fleet: Fleet) -> None:
    page = await client.request("GET", "/api/v1/sandboxes/search", params={"limit": 100})
    assert fleet.a in {s["id"] for s in page["items"]}
    got = await client.request("GET", "/api/v1/sandboxes", params=[("id", fleet.a), ("id", "nope")])
    assert got[0]["id"] == fleet.a
    assert got[1] is None


async def test_bodies_were_checked(fleet: Fleet) -> None:
    RECORDER.check_new()
    assert RECORDER.strict_ok + sum(len(v) for v in RECORDER.dropped.values()) > 0
    assert not RECORDER.lenient_failures
