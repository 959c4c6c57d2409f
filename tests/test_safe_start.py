"""`_safe_start`: a start is sent once; after a lost answer it is looked for, and sent
again only when the server shows no trace of it (at most `max_resends` times).

The pauses between look-ups are recorded by a stand-in for `asyncio.sleep` in the module,
so nothing waits.
"""

from __future__ import annotations

import logging
import types
from datetime import datetime, timezone

import pytest

import openhands_async as oh
from openhands_async import _safe_start
from openhands_async._safe_start import SafeStart, may_have_started
from openhands_async.models import StartTask

CID = "0123456789abcdef0123456789abcdef"
URL = "http://x/api/v1/app-conversations"


@pytest.fixture
def pauses(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    monkeypatch.setattr(_safe_start, "asyncio", types.SimpleNamespace(sleep=sleep))
    return slept


class Finder:
    """`find` answering from a script: a task, None, or an exception per call."""

    def __init__(self, *answers: StartTask | BaseException | None) -> None:
        self.answers = list(answers)
        self.calls: list[tuple[str, datetime]] = []

    async def __call__(self, cid: str, created_after: datetime) -> StartTask | None:
        self.calls.append((cid, created_after))
        answer = self.answers.pop(0) if self.answers else None
        if isinstance(answer, BaseException):
            raise answer
        return answer


class Sender:
    """`send` failing with the given errors in turn, then answering a task."""

    def __init__(self, *failures: BaseException) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> StartTask:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return StartTask(id=f"sent-{self.calls}")


def lost() -> oh.APIConnectionError:
    return oh.APIConnectionError("connection reset", may_have_been_sent=True)


def server_error() -> oh.InternalServerError:
    return oh.InternalServerError("HTTP 500", status=500)


# -- which failures may have started it ---------------------------------------------------


def test_may_have_started() -> None:
    assert may_have_started(lost()) is True
    assert may_have_started(oh.APIConnectionError("refused", may_have_been_sent=False)) is False
    assert may_have_started(oh.APITimeoutError("read", kind="read")) is True
    assert may_have_started(oh.APITimeoutError("c", kind="connect", may_have_been_sent=False)) is (
        False
    )
    assert may_have_started(server_error()) is True
    assert may_have_started(oh.ServiceUnavailableError("HTTP 503", status=503)) is True
    assert may_have_started(oh.RateLimitError("HTTP 429", status=429)) is False
    assert may_have_started(oh.BadRequestError("HTTP 400", status=400)) is False
    assert may_have_started(oh.ResponseValidationError("html")) is False
    assert may_have_started(ValueError("x")) is False


def test_sent_after_is_taken_when_made() -> None:
    before = datetime.now(timezone.utc)
    safe = SafeStart(CID, Finder(), url=URL, retry_delay=1.0)
    after = datetime.now(timezone.utc)
    assert safe.conversation_id == CID
    assert safe.sent_after.tzinfo is timezone.utc
    assert before <= safe.sent_after <= after


# -- looking ------------------------------------------------------------------------------


async def test_look_tries_lookups_times_with_doubling_pauses(pauses: list[float]) -> None:
    find = Finder()
    safe = SafeStart(CID, find, url=URL, retry_delay=0.5, lookups=4)
    assert await safe.look(lost()) is None
    assert find.calls == [(CID, safe.sent_after)] * 4
    assert pauses == [0.5, 1.0, 2.0]


async def test_look_default_is_three_lookups(pauses: list[float]) -> None:
    find = Finder()
    assert await SafeStart(CID, find, url=URL, retry_delay=2.0).look(lost()) is None
    assert len(find.calls) == 3
    assert pauses == [2.0, 4.0]


async def test_look_with_no_lookups_asks_nothing(pauses: list[float]) -> None:
    find = Finder()
    assert await SafeStart(CID, find, url=URL, retry_delay=1.0, lookups=0).look(lost()) is None
    assert find.calls == []
    assert pauses == []


async def test_look_returns_the_task_once_found(
    pauses: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openhands_async")
    task = StartTask(id="task-1")
    find = Finder(None, task, StartTask(id="never-asked"))
    safe = SafeStart(CID, find, url=URL, retry_delay=0.25, lookups=3)
    assert await safe.look(lost()) is task
    assert len(find.calls) == 2
    assert pauses == [0.25]
    assert [r.getMessage() for r in caplog.records] == [
        f"found start of {CID} after a lost answer: task task-1"
    ]


async def test_found_at_once_does_not_pause(pauses: list[float]) -> None:
    task = StartTask(id="t")
    assert await SafeStart(CID, Finder(task), url=URL, retry_delay=1.0).look(lost()) is task
    assert pauses == []


async def test_a_failed_lookup_is_start_unconfirmed(pauses: list[float]) -> None:
    cause = oh.APIConnectionError("connection reset")
    failure = oh.InternalServerError("HTTP 502", status=502, method="GET", url="http://x/s")
    find = Finder(None, failure, StartTask(id="never-asked"))
    safe = SafeStart(CID, find, url=URL, retry_delay=1.0)
    with pytest.raises(oh.StartUnconfirmedError) as info:
        await safe.look(cause)
    err = info.value
    assert err.message == (
        f"the start of conversation {CID} may have reached the server (connection reset), "
        "and looking for it failed (HTTP 502 (GET http://x/s)); it was not sent again"
    )
    assert (err.request_method, err.request_url, err.conversation_id) == ("POST", URL, CID)
    assert err.__cause__ is failure
    assert err.may_have_been_sent is True
    assert len(find.calls) == 2


async def test_a_bug_in_find_is_not_disguised(pauses: list[float]) -> None:
    with pytest.raises(KeyError):
        await SafeStart(CID, Finder(KeyError("bug")), url=URL, retry_delay=1.0).look(lost())


# -- sending ------------------------------------------------------------------------------


async def test_a_clean_send_looks_for_nothing(pauses: list[float]) -> None:
    find, send = Finder(), Sender()
    task = await SafeStart(CID, find, url=URL, retry_delay=1.0).send(send, max_resends=2)
    assert task.id == "sent-1"
    assert (send.calls, find.calls) == (1, [])


@pytest.mark.parametrize(
    "failure",
    [
        oh.APIConnectionError("refused", may_have_been_sent=False),
        oh.BadRequestError("HTTP 400", status=400),
        oh.RateLimitError("HTTP 429", status=429),
        oh.ConcurrencyLimitError("HTTP 429", status=429, limit=1, current=1),
    ],
)
async def test_failures_that_did_not_start_it_are_raised_without_looking(
    failure: BaseException, pauses: list[float]
) -> None:
    find, send = Finder(), Sender(failure)
    with pytest.raises(type(failure)) as info:
        await SafeStart(CID, find, url=URL, retry_delay=1.0).send(send, max_resends=2)
    assert info.value is failure
    assert (send.calls, find.calls) == (1, [])


@pytest.mark.parametrize("failure", [lost(), server_error()])
async def test_a_lost_answer_whose_task_is_found_is_not_resent(
    failure: BaseException, pauses: list[float]
) -> None:
    found = StartTask(id="found")
    find, send = Finder(found), Sender(failure)
    task = await SafeStart(CID, find, url=URL, retry_delay=1.0).send(send, max_resends=2)
    assert task is found
    assert send.calls == 1
    assert len(find.calls) == 1


async def test_no_trace_is_resent_and_logged(
    pauses: list[float], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="openhands_async")
    find, send = Finder(), Sender(lost())
    safe = SafeStart(CID, find, url=URL, retry_delay=1.0, lookups=2)
    task = await safe.send(send, max_resends=1)
    assert task.id == "sent-2"
    assert send.calls == 2
    assert len(find.calls) == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"start {CID} left no trace on the server; sending it again"
    ]


async def test_no_resends_allowed_raises_the_lost_answer(pauses: list[float]) -> None:
    failure = server_error()
    find, send = Finder(), Sender(failure)
    with pytest.raises(oh.InternalServerError) as info:
        await SafeStart(CID, find, url=URL, retry_delay=1.0, lookups=1).send(send, max_resends=0)
    assert info.value is failure
    assert (send.calls, len(find.calls)) == (1, 1)


async def test_resends_stop_at_max_resends(pauses: list[float]) -> None:
    failures = [lost(), server_error(), lost(), server_error()]
    find, send = Finder(), Sender(*failures)
    with pytest.raises(oh.APIConnectionError) as info:
        await SafeStart(CID, find, url=URL, retry_delay=1.0, lookups=1).send(send, max_resends=2)
    assert info.value is failures[2]
    assert send.calls == 3
    assert len(find.calls) == 3


async def test_found_after_a_resend(pauses: list[float]) -> None:
    found = StartTask(id="found-late")
    find, send = Finder(None, found), Sender(lost(), lost())
    task = await SafeStart(CID, find, url=URL, retry_delay=1.0, lookups=1).send(send, max_resends=3)
    assert task is found
    assert send.calls == 2


async def test_a_failed_lookup_stops_the_resends(pauses: list[float]) -> None:
    find = Finder(oh.APIConnectionError("down"))
    send = Sender(lost())
    with pytest.raises(oh.StartUnconfirmedError) as info:
        await SafeStart(CID, find, url=URL, retry_delay=1.0).send(send, max_resends=5)
    assert send.calls == 1
    # The message names the failure that lost the answer, then the failed look-up.
    assert "may have reached the server (connection reset)" in info.value.message
    assert "looking for it failed (down)" in info.value.message
