"""The poller's read path: a chunk observed as it comes in, the status table, and models
built only when someone sees them (issue 19)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

import openhands_async as oh
from openhands_async.lib._polling import StatusTable
from openhands_async.testing import FakeCloud, Fault

from .conftest import eventually


@pytest.fixture
async def fast_cloud() -> AsyncIterator[FakeCloud]:
    async with FakeCloud(time_scale=0.05) as fake:
        yield fake


def _client(cloud: FakeCloud) -> oh.OpenHandsClient:
    return oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url)


def _seed(cloud: FakeCloud, n: int) -> list[str]:
    return cloud.seed_conversations(n, message="x [fake:run_seconds=2000]", started_ago=0.05)


async def test_a_chunk_is_reported_before_the_next_answer_arrives(fast_cloud: FakeCloud) -> None:
    ids = _seed(fast_cloud, 150)  # two requests: 99 + 51
    # The second batch read of the first cycle never answers.
    fast_cloud.add_fault(Fault(route="get_conversations", action="stall", skip=1, times=1))
    async with _client(fast_cloud) as client:
        poller = client.poller(poll_interval=0.05, max_in_flight=1)
        feed = poller.changes()
        poller.track_conversations(ids)
        seen = [await feed.get() for _ in range(99)]
        assert {c.id for c in seen if c is not None} == set(ids[:99])
        assert poller.stats.cycles == 1  # the first cycle is still waiting for its 2nd read
        assert all(c is not None and c.model is not None for c in seen)  # a feed: models
        await poller.aclose()


async def test_no_model_is_built_for_a_change_no_feed_sees(
    fast_cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    ids = _seed(fast_cloud, 40)
    async with _client(fast_cloud) as client:
        built: list[Any] = []
        parse_raw = client.conversations.parse_raw

        def counting(raw: Any) -> oh.Conversation:
            built.append(raw["id"])
            return parse_raw(raw)

        monkeypatch.setattr(client.conversations, "parse_raw", counting)
        poller = client.poller(poll_interval=0.05)
        poller.track_conversations(ids)
        await poller.start()
        await eventually(lambda: poller.stats.changes >= 40)
        # One model per distinct status (to learn whether it is terminal), not per item.
        assert 1 <= len(built) <= 2
        # A feed sees a model with each change.
        feed = poller.changes()
        (extra,) = _seed(fast_cloud, 1)
        poller.track_conversation(extra)
        change = await asyncio.wait_for(feed.get(), 5)
        assert change is not None
        assert change.id == extra
        assert isinstance(change.model, oh.Conversation)
        await poller.aclose()


def test_status_table_rows() -> None:
    table = StatusTable()
    raw: dict[str, Any] = {"sandbox_status": "RUNNING", "execution_status": "running"}
    key = table.key("conversation", raw)
    row = table.row(key, raw)
    assert row == ["RUNNING/running", None]  # terminal unknown until a model says
    assert table.row(table.key("conversation", dict(raw)), raw) is row  # one row, shared
    assert table.row(table.key("conversation", {}), {}) == ["MISSING", None]  # defaults
    odd: dict[str, Any] = {"sandbox_status": ["RUNNING"]}  # unhashable: the model decides
    assert table.row(table.key("conversation", odd), odd) is None
    bad: dict[str, Any] = {"status": 3}  # not a string: the model decides
    assert table.row(table.key("start_task", bad), bad) is None
