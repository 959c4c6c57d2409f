"""ConversationPoller against FakeCloud over loopback."""

from __future__ import annotations

import asyncio
import gc
import itertools
import math
import tracemalloc
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

import openhands_async as oh
from openhands_async._converter import structure
from openhands_async.lib._polling import raw_status as _raw_status
from openhands_async.lib._polling import status_of as _status_of
from openhands_async.testing import FakeCloud, Fault

from .conftest import eventually

OUTCOMES = ("finished", "error", "stuck", "waiting_for_confirmation")
POLL_ROUTES = ("get_conversations", "get_start_tasks")


def _client(cloud: FakeCloud) -> oh.OpenHandsClient:
    policy = oh.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)
    return oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url, retry_policy=policy)


@pytest.fixture
async def fast_cloud() -> AsyncIterator[FakeCloud]:
    async with FakeCloud(time_scale=0.05) as fake:
        yield fake


def _seed(cloud: FakeCloud, n: int, message: str) -> list[str]:
    # A conversation is null on the batch route until its sandbox exists (a few ms after
    # the start at these scales); seed them that far in the past so none reads as missing.
    return cloud.seed_conversations(n, message=message, started_ago=0.05)


def _poll_requests(cloud: FakeCloud) -> int:
    return sum(cloud.requests[r] for r in POLL_ROUTES)


def _count_cycles(
    poller: oh.ConversationPoller, cloud: FakeCloud, log: list[tuple[int, int, int, int]]
) -> None:
    """Record per cycle: due start tasks, due conversations, and the start-task and
    conversation requests the server saw while the cycle ran.

    A cycle awaits all its reads and the next one starts only after it, and the fake counts
    a request when it arrives, so the counts belong to that cycle however slow the loop is.
    """
    original = poller._cycle

    async def counted(due: Sequence[Any]) -> None:
        tasks0, convs0 = cloud.requests["get_start_tasks"], cloud.requests["get_conversations"]
        await original(due)
        log.append(
            (
                poller.stats.last_due_start_tasks,
                poller.stats.last_due_conversations,
                cloud.requests["get_start_tasks"] - tasks0,
                cloud.requests["get_conversations"] - convs0,
            )
        )

    poller._cycle = counted  # type: ignore[method-assign]


async def test_ids_are_validated(client: oh.OpenHandsClient) -> None:
    poller = client.poller(poll_interval=0.1)
    with pytest.raises(ValueError, match="UUID"):
        poller.track_conversation("not-a-uuid")
    with pytest.raises(ValueError, match="UUID"):
        poller.track_start_task("1234")
    with pytest.raises(ValueError, match="interval"):
        client.poller(poll_interval=1.0, min_interval=2.0)
    dashed = str(uuid.uuid4())
    assert poller.track_conversation(dashed) == uuid.UUID(dashed).hex
    await poller.aclose()


def test_poll_interval_is_the_one_name_and_interval_a_deprecated_alias(
    client: oh.OpenHandsClient,
) -> None:
    assert client.poller(2.0).poll_interval == 2.0  # positional still works
    assert client.poller().poll_interval == 5.0
    with pytest.warns(DeprecationWarning, match="poll_interval") as seen:
        poller = client.poller(interval=3.0)
    assert seen[0].filename == __file__  # points at the caller, not the SDK
    assert (poller.poll_interval, poller.interval, poller.min_interval) == (3.0, 3.0, 0.75)
    with pytest.warns(DeprecationWarning, match="poll_interval") as seen:
        direct = oh.ConversationPoller(client, interval=4.0)
    assert seen[0].filename == __file__
    assert direct.poll_interval == 4.0
    with pytest.raises(TypeError, match="not both"):
        client.poller(poll_interval=1.0, interval=1.0)
    with pytest.raises(ValueError, match="poll_interval"):
        client.poller(0)


async def test_hundreds_of_items_reach_every_terminal_state(fast_cloud: FakeCloud) -> None:
    cloud = fast_cloud
    expected: dict[str, str] = {}  # conversation id -> final status string
    for i, outcome in enumerate(OUTCOMES):
        ids = _seed(cloud, 60, message=f"work [fake:outcome={outcome},run_seconds={2 + 2 * i}]")
        expected.update(dict.fromkeys(ids, f"RUNNING/{outcome}"))
    sandbox_errors = _seed(cloud, 20, message="boom [fake:start=ERROR]")
    expected.update(dict.fromkeys(sandbox_errors, "ERROR"))
    missing = [uuid.uuid4().hex for _ in range(5)]

    async with _client(cloud) as client:
        tasks_ok = [
            await client.conversations.start(f"go [fake:outcome={o},run_seconds=3]")
            for o in OUTCOMES
            for _ in range(5)
        ]
        tasks_err = [await client.conversations.start("fail [fake:start=ERROR]") for _ in range(10)]
        poller = client.poller(poll_interval=0.05)
        for cid in [*expected, *missing]:
            poller.track_conversation(cid)
        for task in [*tasks_ok, *tasks_err]:
            poller.track_start_task(task.id)
        assert poller.tracked == len(expected) + len(missing) + 30

        seen: dict[str, list[oh.StatusChange]] = defaultdict(list)
        async for change in poller.changes():
            seen[change.id].append(change)
        results = await poller.wait(timeout=30)
        await poller.aclose()

    assert poller.tracked == 0
    # Changes per item are a chain: each `old` is the previous `new`, nothing repeats.
    for changes in seen.values():
        assert changes[0].old is None
        for prev, nxt in itertools.pairwise(changes):
            assert nxt.old == prev.new != nxt.new
        assert changes[-1].terminal
        assert all(not c.terminal for c in changes[:-1])
    for cid, final in expected.items():
        model = results[cid]
        assert isinstance(model, oh.Conversation)
        assert seen[cid][-1].new == final
        assert model.is_terminal
    for mid in missing:
        assert results[mid] is None
        assert [(c.new, c.missing) for c in seen[mid]] == [("MISSING", True)]
    for task in tasks_err:
        model = results[task.id]
        assert isinstance(model, oh.StartTask)
        assert model.status is oh.StartTaskStatus.ERROR
    for task, outcome in zip(tasks_ok, [o for o in OUTCOMES for _ in range(5)], strict=True):
        st = results[task.id]
        assert isinstance(st, oh.StartTask)
        assert st.status is oh.StartTaskStatus.READY
        assert st.app_conversation_id is not None
        conv = results[st.app_conversation_id]  # followed automatically
        assert isinstance(conv, oh.Conversation)
        assert conv.execution_status == outcome
        assert seen[st.app_conversation_id][-1].kind == "conversation"


async def test_requests_per_cycle_follow_the_formula(fast_cloud: FakeCloud) -> None:
    # Nothing here depends on timing: which items share a later cycle does (how far the
    # conversations got when they are read), but every cycle must match the formula, the
    # first one reads everything tracked before the start, and the conversations the start
    # tasks hand over need at least one more cycle.
    cloud = fast_cloud
    conv_ids = _seed(cloud, 250, message="x [fake:run_seconds=6]")
    conv_ids += _seed(cloud, 60, message="x [fake:run_seconds=12]")
    async with _client(cloud) as client:
        tasks = await asyncio.gather(
            *(client.conversations.start("t [fake:run_seconds=4]") for _ in range(120))
        )
        before = _poll_requests(cloud)
        poller = client.poller(poll_interval=0.05, max_in_flight=3)
        poller.track_conversations(conv_ids)
        poller.track_start_tasks(t.id for t in tasks)
        log: list[tuple[int, int, int, int]] = []
        _count_cycles(poller, cloud, log)
        results = await poller.wait(timeout=30)
        await poller.aclose()

    assert log[0] == (120, 310, 2, 4)  # ceil(120/99) + ceil(310/99)
    assert len(log) == poller.stats.cycles >= 2
    for due_tasks, due_convs, sent_tasks, sent_convs in log:
        assert sent_tasks == math.ceil(due_tasks / 99)
        assert sent_convs == math.ceil(due_convs / 99)
    assert sum(t + c for _, _, t, c in log) == poller.stats.requests
    assert poller.stats.requests == _poll_requests(cloud) - before
    # Each batch read asked for at most 99 ids, each tracked id at least once.
    asked = [
        [value for key, value in r.query if key == "ids"]
        for r in cloud.request_log
        if r.route in POLL_ROUTES
    ]
    assert all(1 <= len(ids) <= 99 for ids in asked)
    assert {i for ids in asked for i in ids} >= {*conv_ids, *(t.id for t in tasks)}
    assert len(results) == 310 + 120 + 120  # every start task hands over a conversation


async def test_429_pauses_every_caller_for_retry_after(fast_cloud: FakeCloud) -> None:
    cloud = fast_cloud
    ids = _seed(cloud, 400, message="x [fake:run_seconds=30]")
    async with _client(cloud) as client:
        poller = client.poller(poll_interval=0.05, max_in_flight=4)
        poller.track_conversations(ids)
        await poller.start()
        await eventually(lambda: poller.stats.cycles >= 2)
        cloud.add_fault(Fault(route="get_conversations", status=429, retry_after="1"))

        async def other_caller() -> None:  # an unrelated caller of the same client
            while True:
                await client.conversations.count()
                await asyncio.sleep(0.01)

        other = asyncio.create_task(other_caller())
        await eventually(lambda: any(r.status == 429 for r in cloud.request_log))
        await asyncio.sleep(2.0)
        other.cancel()
        await asyncio.wait([other])
        await poller.aclose()

    t429 = next(r.time for r in cloud.request_log if r.status == 429)
    later = [r for r in cloud.request_log if r.time > t429]
    # Requests already sent when the 429 came back (the cycle's other chunks, the other
    # caller's request) may still reach the server just after it; nothing else may arrive
    # until Retry-After has passed.
    in_flight = [r for r in later if r.time < t429 + 1.0]
    assert len(in_flight) <= 4
    assert all(r.time < t429 + 0.3 for r in in_flight)
    resumed = [r for r in later if r.time >= t429 + 1.0]
    assert {r.route for r in resumed} >= {"get_conversations", "count_conversations"}
    assert poller.stats.failed_requests == 0  # the client's own retry absorbed it


async def test_failed_reads_are_retried_and_never_drop_items(fast_cloud: FakeCloud) -> None:
    cloud = fast_cloud
    ids = _seed(cloud, 150, message="x [fake:run_seconds=4]")
    cloud.add_fault(Fault(route="get_conversations", status=503, times=6))
    async with _client(cloud) as client:
        poller = client.poller(poll_interval=0.05)
        poller.track_conversations(ids)
        results = await poller.wait(timeout=30)
        await poller.aclose()
    assert poller.stats.failed_requests >= 1
    assert len(results) == 150
    assert all(isinstance(m, oh.Conversation) and m.is_terminal for m in results.values())


async def test_missing_ids_are_reported_once(fast_cloud: FakeCloud) -> None:
    cloud = fast_cloud
    live = _seed(cloud, 3, message="x [fake:run_seconds=10]")
    ghosts = [uuid.uuid4().hex for _ in range(3)]
    ghost_task = uuid.uuid4().hex
    async with _client(cloud) as client:
        poller = client.poller(poll_interval=0.05)
        poller.track_conversations([*live, *ghosts])
        poller.track_start_task(ghost_task)
        changes = [c async for c in poller.changes()]
        await poller.aclose()
    missing = [c for c in changes if c.missing]
    assert sorted(c.id for c in missing) == sorted([*ghosts, ghost_task])
    assert all(c.new == "MISSING" and c.model is None and c.terminal for c in missing)
    # After the first read, the ghosts were never asked for again.
    asked = [
        value
        for r in cloud.request_log
        if r.route in POLL_ROUTES
        for key, value in r.query
        if key == "ids"
    ]
    for ghost in [*ghosts, ghost_task]:
        assert asked.count(ghost) == 1


async def test_add_and_remove_items_while_running(fast_cloud: FakeCloud) -> None:
    cloud = fast_cloud
    (slow,) = _seed(cloud, 1, message="x [fake:run_seconds=2000]")
    (quick,) = _seed(cloud, 1, message="x [fake:run_seconds=20]")
    async with _client(cloud) as client:
        poller = client.poller(poll_interval=0.05)
        poller.track_conversation(slow)
        stream = poller.changes()
        first = await stream.__anext__()
        assert first.id == slow
        poller.track_conversation(quick)
        poller.untrack(slow)
        untracked_at = cloud.request_log[-1].time
        rest = [c async for c in stream]
        results = await poller.wait(timeout=10)
        await poller.aclose()
    assert list(results) == [quick]
    assert rest
    assert rest[-1].id == quick
    assert rest[-1].terminal
    assert all(c.id == quick for c in rest)
    assert isinstance(results[quick], oh.Conversation)
    # After the untrack `slow` is never read again; the read that may have been in flight
    # at that moment is left out. `quick` runs 1 s (scaled), so reads follow the untrack
    # however late this test's first change came on a loaded machine.
    reads_after = [
        [value for key, value in r.query if key == "ids"]
        for r in cloud.request_log
        if r.time > untracked_at
    ]
    reads_after = [ids for ids in reads_after if ids]
    assert len(reads_after) >= 2, reads_after
    assert all(ids == [quick] for ids in reads_after[1:]), reads_after


async def test_paused_is_reported_and_followed_to_the_end() -> None:
    async with FakeCloud(time_scale=0.05, max_running=2, cap_mode="pause") as cloud:
        # 40 s scaled to 2 s: long enough that a loaded machine still sees them running.
        oldest, _second = _seed(cloud, 2, message="x [fake:run_seconds=40]")
        async with _client(cloud) as client:
            poller = client.poller(poll_interval=0.05)
            poller.track_conversations([oldest, _second])
            stream = poller.changes()
            statuses: dict[str, str] = {}

            async def until(cond: Callable[[], bool]) -> None:
                while not cond():
                    change = await stream.__anext__()
                    statuses[change.id] = change.new

            await until(lambda: statuses.get(oldest) == "RUNNING/running")
            task = await client.conversations.start("new one [fake:run_seconds=1]")
            poller.track_start_task(task.id)
            await until(lambda: statuses.get(oldest) == "PAUSED")
            await asyncio.sleep(0.5)  # a paused conversation stays PAUSED and is still followed
            assert oldest not in poller.results()  # not finished: still followed
            assert poller.tracked >= 1
            assert statuses[oldest] == "PAUSED"
            # Resume it behind the API's back (FakeCloud has no resume route).
            cloud._store.conversations[oldest].paused_at = float("inf")
            rest = [c async for c in stream]
            results = await poller.wait(timeout=10)
            await poller.aclose()
    after_resume = [c.new for c in rest if c.id == oldest]
    assert after_resume[-1] == "RUNNING/finished"
    assert "PAUSED" not in after_resume
    final = results[oldest]
    assert isinstance(final, oh.Conversation)
    assert final.execution_status == oh.ExecutionStatus.FINISHED
    assert cloud.paused_by_cap >= 1


async def test_as_completed_yields_each_item_once(fast_cloud: FakeCloud) -> None:
    cloud = fast_cloud
    ids = _seed(cloud, 30, message="x [fake:run_seconds=3]")
    async with _client(cloud) as client:
        task = await client.conversations.start("t [fake:run_seconds=1]")
        poller = client.poller(poll_interval=0.05)
        poller.track_conversations(ids)
        poller.track_start_task(task.id)
        done = [c async for c in poller.as_completed()]
        await poller.aclose()
    assert len(done) == 31
    assert {c.id for c in done} >= set(ids)
    assert all(c.terminal and c.kind == "conversation" for c in done)
    assert task.id not in {c.id for c in done}  # READY hands over to the conversation


def _leftover_tasks() -> list[asyncio.Task[Any]]:
    me = asyncio.current_task()
    names = ("ConversationPoller", "gather_bounded", "_get_many", "OpenHandsClient.request")
    return [
        t
        for t in asyncio.all_tasks()
        if t is not me and not t.done() and any(n in repr(t.get_coro()) for n in names)
    ]


@pytest.mark.parametrize("closer", ["poller", "client"])
async def test_close_leaves_no_pending_tasks(fast_cloud: FakeCloud, closer: str) -> None:
    cloud = fast_cloud
    ids = _seed(cloud, 300, message="x [fake:run_seconds=2000]")
    client = _client(cloud)
    poller = client.poller(poll_interval=0.05, max_in_flight=2)
    poller.track_conversations(ids)
    waiter = asyncio.create_task(poller.wait())
    await eventually(lambda: poller.stats.cycles >= 2)
    # Leave requests hanging so the close happens mid-cycle.
    before = cloud.requests["get_conversations"]
    cloud.add_fault(Fault(route="get_conversations", action="stall", times=None))
    await eventually(lambda: cloud.requests["get_conversations"] > before)
    await asyncio.sleep(0.05)
    close: Callable[[], Awaitable[None]] = poller.aclose if closer == "poller" else client.aclose
    await close()
    await client.aclose()
    assert not poller.running
    await asyncio.wait_for(waiter, 1)  # waiting consumers return when the poller stops
    await asyncio.sleep(0)
    assert _leftover_tasks() == []
    with pytest.raises(RuntimeError, match="closed"):
        poller.track_conversation(uuid.uuid4().hex)


async def test_cancelled_consumer_does_not_stop_the_poller(fast_cloud: FakeCloud) -> None:
    cloud = fast_cloud
    ids = _seed(cloud, 5, message="x [fake:run_seconds=4]")
    async with _client(cloud) as client:
        poller = client.poller(poll_interval=0.05)
        poller.track_conversations(ids)
        with pytest.raises(asyncio.TimeoutError):
            await poller.wait(timeout=0.001)
        results = await poller.wait(timeout=10)
        assert len(results) == 5
    assert not poller.running
    assert _leftover_tasks() == []


async def test_non_transient_error_reaches_consumers(fast_cloud: FakeCloud) -> None:
    cloud = fast_cloud
    ids = _seed(cloud, 3, message="x [fake:run_seconds=2000]")
    cloud.add_fault(Fault(route="get_conversations", status=401, times=None))
    async with _client(cloud) as client:
        poller = client.poller(poll_interval=0.05)
        poller.track_conversations(ids)
        with pytest.raises(oh.AuthenticationError):
            await poller.wait(timeout=5)
        with pytest.raises(oh.AuthenticationError):
            async for _ in poller.changes():
                pass
        assert not poller.running
    assert _leftover_tasks() == []


async def test_as_completed_after_the_fact_replays_finished_items(fast_cloud: FakeCloud) -> None:
    cloud = fast_cloud
    (conv,) = _seed(cloud, 1, message="x [fake:run_seconds=1]")
    ghost_task = uuid.uuid4().hex
    async with _client(cloud) as client, client.poller(poll_interval=0.05) as poller:
        poller.track_conversation(conv)
        poller.track_start_task(ghost_task)
        await poller.wait(timeout=10)
        done = {c.id: c async for c in poller.as_completed()}
    assert set(done) == {conv, ghost_task}
    assert done[ghost_task].kind == "start_task"
    assert done[ghost_task].missing
    assert done[conv].new == "RUNNING/finished"


async def test_followed_items_keep_no_model(fast_cloud: FakeCloud) -> None:
    # Per followed item only id/kind/status/schedule stay (a Conversation model is ~2 KB);
    # the final model is kept once the item is done, for wait() and as_completed().
    cloud = fast_cloud
    n = 500

    async def first_reads(poller: oh.ConversationPoller, ids: list[str]) -> None:
        poller.track_conversations(ids)
        stream = poller.changes()
        for _ in ids:  # each item's first read is a change, with its model
            assert isinstance((await stream.__anext__()).model, oh.Conversation)

    async with _client(cloud) as client:
        # Warm-up: one-off caches (URL parsing, generated structure code) fill here.
        warm = client.poller(poll_interval=10.0)
        await first_reads(warm, _seed(cloud, 100, message="x [fake:run_seconds=2000]"))
        await warm.aclose()
        ids = _seed(cloud, n, message="x [fake:run_seconds=2000]")
        poller = client.poller(poll_interval=10.0)
        gc.collect()
        tracemalloc.start(40)
        try:
            before = tracemalloc.take_snapshot()
            await first_reads(poller, ids)
            gc.collect()
            after = tracemalloc.take_snapshot()
        finally:
            tracemalloc.stop()
        assert poller.results() == {}  # nothing is final yet
        await poller.aclose()
    # The fake runs in this process: leave out what it allocated.
    server = [tracemalloc.Filter(False, "*/openhands_async/testing/*", all_frames=True)]
    grown = sum(
        d.size_diff
        for d in after.filter_traces(server).compare_to(before.filter_traces(server), "filename")
    )
    assert grown / n < 600  # measured ~420 B, ~200 of it the poller's own


_MAYBE = st.sampled_from([None, "absent"])


@given(
    sandbox=st.sampled_from(["STARTING", "RUNNING", "PAUSED", "ERROR", "MISSING", "NEW"]) | _MAYBE,
    execution=st.sampled_from(["idle", "running", "finished", "stuck", "novel"]) | _MAYBE,
    task=st.sampled_from(["WORKING", "READY", "ERROR", "STARTING_SANDBOX", "NEW"]) | _MAYBE,
)
def test_raw_status_matches_the_models(
    sandbox: str | None, execution: str | None, task: str | None
) -> None:
    # The poller compares unchanged items by their raw status fields and builds a model
    # only on a change, so both ways must give the same status string.
    conv: dict[str, Any] = {"id": uuid.uuid4().hex}
    if sandbox != "absent":
        conv["sandbox_status"] = sandbox
    if execution != "absent":
        conv["execution_status"] = execution
    start: dict[str, Any] = {"id": uuid.uuid4().hex}
    if task != "absent":
        start["status"] = task
    for kind, raw, cls in (
        ("conversation", conv, oh.Conversation),
        ("start_task", start, oh.StartTask),
    ):
        status = _raw_status(kind, raw)  # type: ignore[arg-type]
        try:
            model = structure(raw, cls)
        except oh.ResponseValidationError:
            assert status is None  # a null status: the model cannot be built either
            continue
        assert status == _status_of(model)


async def test_an_object_that_does_not_fit_is_read_again(fast_cloud: FakeCloud) -> None:
    cloud = fast_cloud
    (cid,) = _seed(cloud, 1, message="x [fake:run_seconds=4]")
    async with _client(cloud) as client:
        real = client.request
        broken = 2

        async def request(*args: Any, **kwargs: Any) -> Any:
            nonlocal broken
            data = await real(*args, **kwargs)
            if broken:  # the first reads carry a status that fits no model
                broken -= 1
                data[0]["sandbox_status"] = {"not": "a status"}
            return data

        client.request = request  # type: ignore[method-assign]
        poller = client.poller(poll_interval=0.05)
        poller.track_conversation(cid)
        changes = [c async for c in poller.changes()]
        await poller.aclose()
    assert poller.stats.reads >= 3
    assert changes[0].old is None  # the broken reads were not reported
    assert changes[-1].new == "RUNNING/finished"


async def test_changes_until_idle_false_stays_open_across_idle_spells(
    fast_cloud: FakeCloud,
) -> None:
    first, second = _seed(fast_cloud, 2, message="x [fake:run_seconds=1]")
    async with _client(fast_cloud) as client:
        poller = client.poller(poll_interval=0.05)
        poller.track_conversation(first)
        ending = poller.changes()  # the default: ends once nothing is followed
        following = poller.changes(until_idle=False)
        assert [c.id for c in [c async for c in ending] if c.terminal] == [first]
        assert poller.tracked == 0
        # Idle now: the open stream still waits, and sees an item tracked afterwards.
        poller.track_conversation(second)
        seen: list[str] = []
        async for change in following:
            if change.terminal:
                seen.append(change.id)
            if len(seen) == 2:
                break
        assert seen == [first, second]
        rest = asyncio.ensure_future(anext(following, None))
        await poller.aclose()
        assert await rest is None  # closing the poller ends it


async def test_a_feed_is_the_queue_and_a_dropped_one_stops_receiving(
    client: oh.OpenHandsClient,
) -> None:
    poller = client.poller(poll_interval=0.1)
    feed = poller.changes(until_idle=False)
    assert isinstance(feed, oh.ChangeFeed)
    assert len(poller._subscribers) == 1
    del feed
    gc.collect()
    assert not poller._subscribers  # held weakly: nothing accumulates for nobody
    closed = poller.changes(until_idle=False)
    await poller.aclose()
    assert await closed.get() is None  # a closed poller ends its feeds
    assert [c async for c in closed] == []
