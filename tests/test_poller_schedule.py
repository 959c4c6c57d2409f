"""The poller's scheduling and vocabulary, pure: an in-memory host, a virtual clock.

Fast enough to run once per mutant (`nox -s mutation`). The host answers batch reads from
a dict (no server, no sockets); the event loop's clock is virtual: when the loop would
wait, the clock jumps to the next timer at once. So read times below are exact numbers of
the schedule (min, 2*min, 4*min, ... max), not measurements of elapsed time.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import pytest

from openhands_async._converter import structure
from openhands_async.errors import (
    APIConnectionError,
    APIStatusError,
    RateLimitError,
    ResponseValidationError,
)
from openhands_async.lib._polling import (
    MISSING,
    ChangeFeed,
    PollerStats,
    StatusChange,
    StatusTable,
    bounds,
    final_change,
    raw_status,
    resolve_poll_interval,
    status_of,
)
from openhands_async.lib.poller import ConversationPoller
from openhands_async.models import Conversation, StartTask

from .conftest import exactly

T1, T2, T3 = ("1" * 32, "2" * 32, "3" * 32)
C1, C2 = ("a" * 32, "b" * 32)


class _Resource:
    def __init__(self, host: _Host, kind: str, model: type[Any]) -> None:
        self._host, self._kind, self._model = host, kind, model

    async def read_raw(self, ids: Sequence[str]) -> list[dict[str, Any] | None]:
        host = self._host
        host.in_flight += 1
        host.most_in_flight = max(host.most_in_flight, host.in_flight)
        try:
            await asyncio.sleep(0)  # let the other chunks of the cycle start
            host.reads.append((asyncio.get_running_loop().time(), self._kind, list(ids)))
            if host.read_seconds:
                await asyncio.sleep(host.read_seconds)  # the answer takes this long
            if host.failures:
                raise host.failures.pop(0)
            if host.on_read is not None:
                host.on_read(len(host.reads))
            return [None if host.store.get(i) is None else dict(host.store[i]) for i in ids]
        finally:
            host.in_flight -= 1

    def parse_raw(self, raw: Any) -> Any:
        self._host.parsed += 1
        return structure(raw, self._model)


class _Host:
    """A `PollerHost` over a dict of raw objects by id."""

    def __init__(self) -> None:
        self.store: dict[str, dict[str, Any] | None] = {}
        self.reads: list[tuple[float, str, list[str]]] = []
        self.failures: list[BaseException] = []
        self.on_read: Callable[[int], None] | None = None
        self.parsed = 0
        self.read_seconds = 0.0  # how long each read takes (virtual time)
        self.in_flight = self.most_in_flight = 0
        self.registered: list[Any] = []
        self.start_tasks: Any = _Resource(self, "start_task", StartTask)
        self.conversations: Any = _Resource(self, "conversation", Conversation)

    def _register_poller(self, poller: Any) -> None:
        self.registered.append(poller)

    def _unregister_poller(self, poller: Any) -> None:
        if poller in self.registered:
            self.registered.remove(poller)

    def times(self, item_id: str) -> list[float]:
        return [t for t, _, ids in self.reads if item_id in ids]


@pytest.fixture
async def clock() -> AsyncIterator[None]:
    """Virtual time for the running loop: a wait for a timer returns at once, the clock set
    to the timer's time."""
    loop = asyncio.get_running_loop()
    selector: Any = loop._selector  # type: ignore[attr-defined]
    select = selector.select
    now = [0.0]

    def virtual_select(timeout: float | None = None) -> Any:
        events = select(0)
        if not events and timeout is not None and timeout > 0:
            now[0] += timeout
        return events

    loop.time = lambda: now[0]  # type: ignore[method-assign]
    selector.select = virtual_select
    try:
        yield
    finally:
        selector.select = select
        del loop.time  # type: ignore[method-assign]


def _task(status: str, **more: Any) -> dict[str, Any]:
    return {"id": "x", "status": status, **more}


def _conv(sandbox: str, execution: str | None = None) -> dict[str, Any]:
    raw: dict[str, Any] = {"id": "x", "sandbox_status": sandbox}
    if execution is not None:
        raw["execution_status"] = execution
    return raw


def _poller(host: _Host, **kw: Any) -> ConversationPoller:
    return ConversationPoller(host, poll_interval=kw.pop("poll_interval", 4.0), **kw)


# ---------------------------------------------------------------------- the schedule


async def test_a_quiet_item_backs_off_to_max_interval(clock: None) -> None:
    host = _Host()
    host.store[T1] = _task("WORKING")

    def finish(n: int) -> None:
        if n == 7:
            host.store[T1] = _task("ERROR")

    host.on_read = finish
    poller = _poller(host)  # min 1, max 16
    poller.track_start_task(T1)
    results = await poller.wait()
    assert host.times(T1) == [0.0, 1.0, 3.0, 7.0, 15.0, 31.0, 47.0]
    model = results[T1]
    assert isinstance(model, StartTask)
    assert model.status == "ERROR"
    assert poller.tracked == 0
    assert poller.stats.cycles == 7
    assert poller.stats.changes == 2
    await poller.aclose()


async def test_a_change_reads_again_after_min_interval(clock: None) -> None:
    host = _Host()
    host.store[C1] = _conv("STARTING")
    script = {3: _conv("RUNNING", "running"), 5: _conv("RUNNING", "finished")}
    host.on_read = lambda n: host.store.__setitem__(C1, script.get(n, host.store[C1]))
    poller = _poller(host, poll_interval=2.0, max_interval=3.0)  # min 0.5, max 3
    poller.track_conversation(C1)
    feed = poller.changes()
    changes = [(c.old, c.new, c.terminal) async for c in feed]
    assert changes == [
        (None, "STARTING", False),
        ("STARTING", "RUNNING/running", False),
        ("RUNNING/running", "RUNNING/finished", True),
    ]
    # 0 (new) +0.5, unchanged +1, changed at 1.5: +0.5, unchanged +1 (then a change)
    assert host.times(C1) == [0.0, 0.5, 1.5, 2.0, 3.0]
    await poller.aclose()


async def test_failed_reads_back_off_and_keep_the_item(
    clock: None, caplog: pytest.LogCaptureFixture
) -> None:
    host = _Host()
    host.store[T1] = _task("WORKING")
    host.failures = [
        APIConnectionError("reset"),
        APIStatusError("boom", status=503),
        RateLimitError("slow down", status=429),
        ResponseValidationError("not a list"),
    ]
    host.on_read = lambda n: host.store.__setitem__(T1, _task("READY"))
    poller = _poller(host)
    poller.track_start_task(T1)
    with caplog.at_level(logging.INFO, "openhands_async"):
        results = await poller.wait()
    # failed at 0, 2, 6, 14 (quiet: 2, 4, 8, 16 from min 1), read at 30
    assert host.times(T1) == [0.0, 2.0, 6.0, 14.0, 30.0]
    assert poller.stats.failed_requests == 4
    assert isinstance(results[T1], StartTask)
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == (
        "poller read of 1 ids failed (APIConnectionError('reset')); retrying later"
    )
    assert len([m for m in messages if m.startswith("poller read of 1 ids failed")]) == 4
    await poller.aclose()


async def test_a_client_error_stops_the_poller_and_reaches_consumers(clock: None) -> None:
    host = _Host()
    host.store[T1] = _task("WORKING")
    error = APIStatusError("forbidden", status=403)
    host.failures = [error]
    poller = _poller(host)
    poller.track_start_task(T1)
    feed = poller.changes()
    with pytest.raises(APIStatusError) as caught:
        await feed.get()
    assert caught.value is error
    with pytest.raises(APIStatusError):
        await poller.wait()
    assert not poller.running
    assert poller.tracked == 1
    await poller.aclose()


async def test_items_due_within_half_min_interval_share_a_cycle(clock: None) -> None:
    host = _Host()
    for i in (T1, T2, T3):
        host.store[i] = _task("WORKING")
    poller = _poller(host)  # min 1: slack 0.5
    for i, due in ((T1, 1.0), (T2, 1.5), (T3, 1.6)):
        poller.track_start_task(i)
        poller._active[i].due = due
    host.on_read = lambda n: host.store.update({i: _task("READY") for i in (T1, T2, T3)})
    await poller.wait()
    assert [(t, ids) for t, _, ids in host.reads] == [(1.0, [T1, T2]), (1.6, [T3])]
    await poller.aclose()


async def test_requests_per_cycle_follow_the_formula(clock: None) -> None:
    host = _Host()
    tasks = [f"{n:032x}" for n in range(1, 151)]
    convs = [f"{n:032x}" for n in range(1001, 1011)]
    for i in tasks:
        host.store[i] = _task("ERROR")
    for i in convs:
        host.store[i] = _conv("ERROR")
    poller = _poller(host, max_in_flight=2)
    poller.track_start_tasks(tasks)
    poller.track_conversations(convs)
    await poller.wait()
    assert [(kind, len(ids)) for _, kind, ids in host.reads] == [
        ("start_task", 99),
        ("start_task", 51),
        ("conversation", 10),
    ]
    assert host.most_in_flight == 2
    assert poller.stats == PollerStats(
        cycles=1,
        requests=3,
        failed_requests=0,
        reads=160,
        changes=160,
        last_due_start_tasks=150,
        last_due_conversations=10,
        last_requests=3,
    )
    await poller.aclose()


async def test_a_ready_start_task_hands_over_to_its_conversation(clock: None) -> None:
    host = _Host()
    conv_id = "AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAAA"
    host.store[T1] = _task("READY", app_conversation_id=conv_id)
    host.store[T2] = _task("READY", app_conversation_id=C2)
    host.store[C1] = _conv("RUNNING", "finished")
    host.store[C2] = _conv("RUNNING", "running")
    host.on_read = lambda n: host.store.__setitem__(C2, _conv("RUNNING", "error"))
    poller = _poller(host)
    poller.track_conversation(C2)  # already followed: not tracked twice
    poller.track_start_tasks([T1, T2])
    done = [c async for c in poller.as_completed()]
    assert sorted((c.id, c.new) for c in done) == [(C1, "RUNNING/finished"), (C2, "RUNNING/error")]
    results = await poller.wait()
    assert set(results) == {T1, T2, C1, C2}
    assert [ids for _, kind, ids in host.reads if kind == "conversation"] == [[C2], [C1]]
    # a READY start task whose conversation is done already is not followed again
    poller.track_start_task(T3)
    host.store[T3] = _task("READY", app_conversation_id=C1)
    await poller.wait()
    assert [ids for _, kind, ids in host.reads if kind == "conversation"] == [[C2], [C1]]
    await poller.aclose()


async def test_a_model_given_is_taken_as_read(clock: None) -> None:
    # What a start returned, or a conversation just read: no read at once to learn what the
    # caller already knows; the first read comes min_interval later, and no change is
    # reported until the status moves.
    host = _Host()
    host.store[T1] = _task("READY", app_conversation_id=C1)
    host.store[C2] = _conv("RUNNING", "finished")
    host.store[C1] = _conv("RUNNING", "finished")
    poller = _poller(host)  # min 1
    feed = poller.changes()
    key = poller.track_start_task(structure({"id": T1.upper(), "status": "WORKING"}, StartTask))
    assert key == T1
    poller.track_conversation(structure({"id": C2, "sandbox_status": "RUNNING"}, Conversation))
    changes = [(c.id, c.old, c.new) async for c in feed]
    assert changes == [
        (T1, "WORKING", "READY"),
        (C2, "RUNNING", "RUNNING/finished"),
        (C1, None, "RUNNING/finished"),  # handed over at READY: read at once, as ever
    ]
    assert [(t, ids) for t, _, ids in host.reads] == [(1.0, [T1]), (1.0, [C2]), (1.0, [C1])]
    await poller.aclose()


async def test_a_model_given_that_is_final_is_read_at_once(clock: None) -> None:
    # READY or ERROR already: read as an id would be (READY hands over from the read).
    host = _Host()
    host.store[T1] = _task("ERROR")
    poller = _poller(host)
    poller.track_start_task(structure({"id": T1, "status": "ERROR"}, StartTask))
    results = await poller.wait()
    assert host.reads == [(0.0, "start_task", [T1])]
    assert getattr(results[T1], "status", None) == "ERROR"
    await poller.aclose()


async def test_a_null_answer_is_reported_once_as_missing(clock: None) -> None:
    host = _Host()
    host.store[T1] = _task("WORKING")
    host.store[C1] = None

    def vanish(n: int) -> None:
        if n == 2:
            host.store[T1] = None

    host.on_read = vanish
    poller = _poller(host)
    poller.track_start_task(T1)
    poller.track_conversation(C1)
    changes = [c async for c in poller.changes()]
    assert changes == [
        StatusChange(T1, "start_task", None, "WORKING", changes[0].model),
        StatusChange(C1, "conversation", None, MISSING, None, True, True),
        StatusChange(T1, "start_task", "WORKING", MISSING, None, True, True),
    ]
    assert poller.results() == {T1: None, C1: None}
    assert host.times(C1) == [0.0]
    replay = [(c.id, c.kind, c.missing) async for c in poller.as_completed()]
    assert sorted(replay) == [(T1, "start_task", True), (C1, "conversation", True)]
    # tracking a missing id again forgets the old answer
    host.store[C1] = _conv("ERROR")
    poller.track_conversation(C1)
    assert C1 not in poller.results()
    await poller.wait()
    assert isinstance(poller.results()[C1], Conversation)
    await poller.aclose()


async def test_an_object_that_does_not_fit_is_read_again(clock: None) -> None:
    host = _Host()
    host.store[T1] = {"id": 5, "status": "WORKING"}  # an id that is not a string
    host.on_read = lambda n: host.store.__setitem__(T1, _task("READY")) if n == 2 else None
    poller = _poller(host)
    poller.track_start_task(T1)
    await poller.wait()
    assert host.times(T1) == [0.0, 2.0]
    await poller.aclose()


async def test_no_model_is_built_for_an_unwatched_known_change(clock: None) -> None:
    host = _Host()
    for i in (T1, T2):
        host.store[i] = _task("WORKING")
    poller = _poller(host)
    poller.track_start_task(T1)
    await poller.start()
    await asyncio.sleep(0.5)  # virtual: one cycle
    assert host.parsed == 1  # WORKING learnt to be not terminal
    poller.track_start_task(T2)
    await asyncio.sleep(0.5)
    assert host.parsed == 1  # T2's change: a known row, no feed
    feed = poller.changes(until_idle=False)
    host.store[T1] = _task("FAILED_XYZ")  # unknown status: a model decides
    await asyncio.sleep(2.0)
    change = await feed.get()
    assert change is not None
    assert (change.id, change.new, change.model is not None) == (T1, "FAILED_XYZ", True)
    await feed.aclose()
    await poller.aclose()


async def test_untracked_while_in_flight_is_not_observed(clock: None) -> None:
    host = _Host()
    host.store[T1] = _task("READY")
    poller = _poller(host)
    poller.track_start_task(T1)
    host.on_read = lambda n: poller.untrack(T1)
    await poller.wait()
    assert poller.results() == {}
    assert poller.stats.changes == 0
    poller.untrack(T2)  # not tracked: no error
    await poller.aclose()


async def test_lifetime(clock: None) -> None:
    host = _Host()
    poller = _poller(host)
    assert not poller.running
    async with poller as started:
        assert started is poller
        assert poller.running
        assert host.registered == [poller]
        assert await poller.wait(timeout=1) == {}  # nothing followed: idle at once
    assert not poller.running
    assert host.registered == []
    with pytest.raises(RuntimeError, match=r"^this poller is closed$"):
        poller.track_start_task(T1)
    with pytest.raises(RuntimeError, match=r"^this poller is closed$"):
        poller.changes()
    await poller.aclose()  # twice is fine


async def test_wait_times_out_and_the_poller_keeps_running(clock: None) -> None:
    host = _Host()
    host.store[T1] = _task("WORKING")
    poller = _poller(host)
    poller.track_start_task(T1)
    with pytest.raises(asyncio.TimeoutError):
        await poller.wait(timeout=10)
    assert poller.running
    assert host.times(T1) == [0.0, 1.0, 3.0, 7.0]
    await poller.aclose()


# ---------------------------------------------------------------------- arguments


def test_bounds_default_and_checked() -> None:
    assert bounds(4.0, None, None) == (1.0, 16.0)
    assert bounds(4.0, 4, 4) == (4.0, 4.0)
    assert bounds(4.0, 0.5, None) == (0.5, 16.0)
    need = r"^need 0 < min_interval <= poll_interval <= max_interval, got "
    for low, high in ((0, None), (-1, None), (5, None), (None, 3.9)):
        with pytest.raises(ValueError, match=need):
            bounds(4.0, low, high)
    with pytest.raises(ValueError, match=need + r"5\.0, 4\.0, 6\.0$"):
        bounds(4.0, 5, 6)


def test_resolve_poll_interval() -> None:
    assert resolve_poll_interval(None, None, 5.0) == 5.0
    assert resolve_poll_interval(2, None, 5.0) == 2.0
    assert type(resolve_poll_interval(2, None, 5.0)) is float
    with pytest.warns(DeprecationWarning, match=r"^interval= is deprecated: use poll_interval=$"):
        assert resolve_poll_interval(None, 3, 5.0) == 3.0
    with pytest.raises(TypeError, match=r"^pass poll_interval, not both"):
        resolve_poll_interval(1, 2, 5.0)
    for bad in (0, -1, True, "1", None):
        with pytest.raises(ValueError, match=r"^poll_interval must be a number > 0, got "):
            resolve_poll_interval(bad, None, 5.0) if bad is not None else resolve_poll_interval(
                None, None, 0.0
            )


def test_the_poller_checks_its_arguments() -> None:
    host = _Host()
    with pytest.raises(ValueError, match=r"^max_in_flight must be >= 1, got 0$"):
        _poller(host, max_in_flight=0)
    poller = _poller(host, max_in_flight=1, min_interval=2, max_interval=8)
    assert (poller.poll_interval, poller.min_interval, poller.max_interval) == (4.0, 2.0, 8.0)
    assert poller.max_in_flight == 1
    with pytest.warns(DeprecationWarning, match="interval= is deprecated"):
        old = ConversationPoller(host, interval=3)
    assert old.interval == 3.0 == old.poll_interval
    assert ConversationPoller(host).poll_interval == 5.0
    assert ConversationPoller(host).max_in_flight == 4


def test_the_poller_normalises_ids() -> None:
    poller = _poller(_Host())
    assert poller.track_conversation("AAAAAAAA-AAAA-AAAA-AAAA-AAAAAAAAAAAA") == C1
    assert poller.track_conversations([C1, C2]) == [C1, C2]
    assert poller.track_start_tasks([T1]) == [T1]
    assert poller.tracked == 3
    item = poller._active[T1]
    assert (item.kind, item.status, item.due, item.interval) == ("start_task", None, 0.0, 1.0)
    with pytest.raises(ValueError, match=r"^task_id must be a UUID"):
        poller.track_start_task("nope")


# ---------------------------------------------------------------------- the vocabulary


def test_status_strings() -> None:
    conv = structure(
        {"id": C1, "sandbox_status": "RUNNING", "execution_status": "running"}, Conversation
    )
    assert status_of(conv) == "RUNNING/running"
    assert status_of(structure({"id": C1, "sandbox_status": "PAUSED"}, Conversation)) == "PAUSED"
    assert status_of(structure({"id": C1}, Conversation)) == "MISSING"
    assert status_of(structure({"id": T1, "status": "READY"}, StartTask)) == "READY"
    running_idle = {"sandbox_status": "RUNNING", "execution_status": "idle"}
    assert raw_status("conversation", running_idle) == "RUNNING/idle"
    assert raw_status("conversation", {}) == "MISSING"
    assert raw_status("conversation", {"sandbox_status": "PAUSED", "execution_status": None}) == (
        "PAUSED"
    )
    assert raw_status("start_task", {}) == "WORKING"
    assert raw_status("start_task", {"status": None}) is None  # required: the model decides
    assert raw_status("start_task", {"status": 3}) is None
    assert raw_status("conversation", {"sandbox_status": None}) is None


def test_status_table_rows() -> None:
    table = StatusTable()
    raw = {"sandbox_status": "RUNNING", "execution_status": "running"}
    key = table.key("conversation", raw)
    assert key == ("conversation", ("RUNNING", "running"))
    assert table.key("start_task", {}) == ("start_task", ("WORKING",))
    row = table.row(key, raw)
    assert row == ["RUNNING/running", None]
    assert table.row(key, raw) is row  # kept
    assert table.row(("start_task", (3,)), {"status": 3}) is None
    listed = {"status": ["x"]}
    assert table.row(table.key("start_task", listed), listed) is None  # unhashable
    for n in range(StatusTable._CAP + 5):
        r = {"status": f"S{n}"}
        assert table.row(table.key("start_task", r), r) == [f"S{n}", None]
    assert len(table._rows) == StatusTable._CAP
    late = {"status": f"S{StatusTable._CAP + 1}"}
    assert table.row(table.key("start_task", late), late) is not table.row(
        table.key("start_task", late), late
    )


def test_final_change_and_stats() -> None:
    assert final_change(T1, None, "start_task") == StatusChange(
        T1, "start_task", None, MISSING, None, True, True
    )
    conv = structure({"id": C1, "sandbox_status": "ERROR"}, Conversation)
    assert final_change(C1, conv, "start_task") == StatusChange(
        C1, "conversation", None, "ERROR", conv, True, False
    )
    task = structure({"id": T1, "status": "ERROR"}, StartTask)
    assert final_change(T1, task, "conversation").kind == "start_task"
    stats = PollerStats()
    stats.count_cycle(3, 4, 2)
    stats.count_cycle(1, 0, 1)
    assert stats == PollerStats(1 + 1, 3, 0, 8, 0, 1, 0, 1)


class _Source:
    def __init__(self) -> None:
        self.running = True
        self.tracked = 1
        self.error: BaseException | None = None
        self.unsubscribed: list[ChangeFeed] = []

    def _raise_if_failed(self) -> None:
        if self.error is not None:
            raise self.error

    def _unsubscribe(self, feed: ChangeFeed) -> None:
        self.unsubscribed.append(feed)


async def test_a_feed_of_final_changes_skips_ready_start_tasks() -> None:
    source = _Source()
    feed = ChangeFeed(source, until_idle=True, only_terminal=True)
    ready = structure({"id": T1, "status": "READY"}, StartTask)
    error = structure({"id": T2, "status": "ERROR"}, StartTask)
    feed._put(StatusChange(T1, "start_task", None, "READY", ready, True))
    feed._put(StatusChange(T3, "start_task", None, "WORKING", None, False))
    feed._put(StatusChange(T3, "start_task", None, MISSING, None, True, True))
    feed._put(StatusChange(T2, "start_task", None, "ERROR", error, True))
    feed._put(StatusChange(C1, "conversation", None, "READY", None, True))
    got = [await feed.get(), await feed.get(), await feed.get()]
    assert [(c.id, c.new) for c in got if c is not None] == [
        (T3, MISSING),
        (T2, "ERROR"),
        (C1, "READY"),
    ]
    source.tracked = 0
    assert await feed.get() is None  # idle and empty
    assert source.unsubscribed == [feed]
    assert await feed.get() is None


async def test_a_feed_ends_on_close_and_raises_the_pollers_error() -> None:
    source = _Source()
    feed = ChangeFeed(source, until_idle=False, only_terminal=False)
    from openhands_async.lib._polling import _CLOSED, _IDLE

    change = StatusChange(T1, "start_task", None, "WORKING", None)
    feed._put(_IDLE)
    feed._put(change)
    source.tracked = 0
    assert await feed.__anext__() is change  # until_idle=False: idle does not end it
    feed._put(_CLOSED)
    source.error = ValueError("poller bug")
    with pytest.raises(ValueError, match="poller bug"):
        await feed.get()
    assert await feed.get() is None  # ended: no second raise
    with pytest.raises(StopAsyncIteration):
        await feed.__anext__()
    assert feed.__aiter__() is feed
    stopped = ChangeFeed(source, until_idle=False, only_terminal=False)
    source.running, source.error = False, None
    assert await stopped.get() is None
    cancelled = ChangeFeed(source, until_idle=False, only_terminal=False)
    source.running = True
    task = asyncio.ensure_future(cancelled.get())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert cancelled in source.unsubscribed
    await cancelled.aclose()


async def test_untrack_forgets_done_items_and_can_end_a_wait(clock: None) -> None:
    host = _Host()
    host.store[T1] = _task("ERROR")
    host.store[C1] = None
    host.store[T2] = _task("WORKING")
    poller = _poller(host)
    poller.track_start_task(T1)
    poller.track_conversation(C1)
    await poller.wait()
    replay = {c.id: (c.kind, c.new, c.model is not None) async for c in poller.as_completed()}
    assert replay == {T1: ("start_task", "ERROR", True), C1: ("conversation", MISSING, False)}
    poller.untrack(T1.upper())
    poller.untrack(C1)
    assert poller.results() == {}
    assert poller._missing_kinds == {}
    with pytest.raises(ValueError, match=r"^id must be a UUID"):
        poller.untrack("nope")
    poller.track_start_task(T2)
    waiting = asyncio.ensure_future(poller.wait())
    await asyncio.sleep(5)  # virtual: T2 read a few times, still WORKING
    assert not waiting.done()
    poller.untrack(T2)  # the last followed item: the wait ends
    assert await waiting == {}
    await poller.aclose()


# ---------------------------------------------------------------------- refresh


async def test_refresh_reads_a_waiting_item_at_once_then_backs_off_afresh(clock: None) -> None:
    host = _Host()
    host.store[C1] = _conv("RUNNING", "running")
    host.on_read = lambda n: n == 6 and host.store.__setitem__(C1, _conv("RUNNING", "finished"))
    poller = _poller(host)  # min 1, max 16: unrefreshed reads at 0, 1, 3, 7, 15, 31
    poller.track_conversation(C1)
    asyncio.get_running_loop().call_at(5.0, poller.refresh, C1.upper())  # any id spelling
    results = await poller.wait()
    assert host.times(C1) == [0.0, 1.0, 3.0, 5.0, 6.0, 8.0]
    model = results[C1]
    assert isinstance(model, Conversation)
    assert model.execution_status == "finished"
    await poller.aclose()


async def test_refresh_during_the_items_read_reads_it_again_after_that_cycle(
    clock: None,
) -> None:
    host = _Host()
    host.store[C1] = _conv("RUNNING", "running")
    host.store[C2] = _conv("RUNNING", "running")
    poller = _poller(host)

    def on_read(n: int) -> None:
        if n == 3:  # in flight: its answer (sent before the news) must not end the refresh
            poller.refresh(C1)
        if n == 4:
            host.store[C1] = _conv("RUNNING", "finished")
            host.store[C2] = _conv("RUNNING", "finished")

    host.on_read = on_read
    poller.track_conversations([C1, C2])
    results = await poller.wait()
    assert [(t, ids) for t, _, ids in host.reads] == [
        (0.0, [C1, C2]),
        (1.0, [C1, C2]),
        (3.0, [C1, C2]),
        (3.0, [C1]),  # refreshed alone, right after the cycle that was reading it
        (7.0, [C2]),
    ]
    assert {k: getattr(m, "execution_status", None) for k, m in results.items()} == {
        C1: "finished",
        C2: "finished",
    }
    await poller.aclose()


async def test_refresh_of_an_item_not_followed_reads_nothing(clock: None) -> None:
    host = _Host()
    host.store[C1] = _conv("ERROR")
    poller = _poller(host)
    poller.refresh(C1)  # never tracked (and before the poller started)
    poller.track_conversation(C1)
    await poller.wait()  # read once: ERROR is terminal
    poller.refresh(C1)  # done: no longer followed
    poller.refresh(C2)
    await asyncio.sleep(0)
    assert host.times(C1) == [0.0]
    assert host.reads == [(0.0, "conversation", [C1])]
    message = "id must be a UUID (32 hex digits, dashes optional): 'not-a-uuid'"
    with pytest.raises(ValueError, match=exactly(message)):
        poller.refresh("not-a-uuid")
    await poller.aclose()


# ---------------------------------------------------------------------- fixed rate


@pytest.mark.parametrize(
    ("fixed_rate", "read_seconds", "times"),
    [
        # From each cycle's start: a read of 0.3 s does not push the next one back...
        (True, 0.3, [0.0, 1.0, 2.0, 3.0]),
        # ...but one longer than min_interval / 2 does, or the cycles would run back to back
        # (a cycle takes in items due within min_interval / 2) on a server slow to answer.
        (True, 0.8, [0.0, 1.8, 3.6, 5.4]),
        # Otherwise from each cycle's end.
        (False, 0.3, [0.0, 1.3, 2.6, 3.9]),
    ],
)
async def test_fixed_rate_counts_the_interval_from_the_cycles_start(
    clock: None, fixed_rate: bool, read_seconds: float, times: list[float]
) -> None:
    host = _Host()
    host.read_seconds = read_seconds
    host.store[C1] = _conv("RUNNING", "running")
    host.on_read = lambda n: n == 4 and host.store.__setitem__(C1, _conv("RUNNING", "finished"))
    poller = ConversationPoller(
        host, 1.0, min_interval=1.0, max_interval=1.0, fixed_rate=fixed_rate
    )
    poller.track_conversation(C1)
    await poller.wait()
    assert host.times(C1) == pytest.approx(times)
    await poller.aclose()
