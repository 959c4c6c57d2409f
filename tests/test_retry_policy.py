"""The retry policy (`config.RetryPolicy`) and the loop built from it (`_retry`): what is
retried for which request, backoff delays and their caps, Retry-After, the attempt count.

No real waiting: the delays are read from the wait generator with jitter pinned, and the
loop runs with zero delays.
"""

from __future__ import annotations

import logging
import random
import types
from collections.abc import Callable

import backoff._async
import pytest

import openhands_async as oh
from openhands_async import _retry
from openhands_async._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_STREAM_IDLE_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT,
)
from openhands_async.config import RETRYABLE_STATUSES, Idempotency, RetryPolicy, Timeouts

from .conftest import exactly

SAFE = Idempotency.SAFE
UNSENT = Idempotency.UNSENT_ONLY


def status(code: int) -> oh.APIStatusError:
    return oh.APIStatusError(f"HTTP {code}", status=code)


def rate(retry_after: float | None) -> oh.RateLimitError:
    return oh.RateLimitError("HTTP 429", status=429, retry_after=retry_after)


# -- the policy's values ------------------------------------------------------------------


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_retries, policy.initial_delay, policy.max_delay) == (2, 0.5, 8.0)
    assert policy.max_retry_after == 120.0
    assert Timeouts() == Timeouts(
        connect=DEFAULT_CONNECT_TIMEOUT,
        read=DEFAULT_READ_TIMEOUT,
        total=DEFAULT_TOTAL_TIMEOUT,
        stream_idle=DEFAULT_STREAM_IDLE_TIMEOUT,
    )
    assert (Timeouts().connect, Timeouts().read, Timeouts().total) == (10.0, 60.0, 120.0)
    assert Timeouts().stream_idle == 600.0
    assert set(RETRYABLE_STATUSES) == {408, 429, 502, 503, 504}
    assert (SAFE.value, UNSENT.value) == ("safe", "unsent-only")


def test_zero_is_a_valid_policy() -> None:
    policy = RetryPolicy(max_retries=0, initial_delay=0, max_delay=0)
    assert (policy.max_retries, policy.initial_delay, policy.max_delay) == (0, 0, 0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_retries": -1}, "max_retries must be >= 0, got -1"),
        ({"initial_delay": -0.1}, "retry delays must be >= 0"),
        ({"max_delay": -1.0}, "retry delays must be >= 0"),
    ],
)
def test_invalid_policy(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=exactly(message)):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


# -- what is retried ----------------------------------------------------------------------


@pytest.mark.parametrize("code", [408, 429, 502, 503, 504])
def test_transient_statuses_are_retried_only_for_safe_requests(code: int) -> None:
    err = status(code)
    assert RetryPolicy().should_retry(err, SAFE) is True
    assert RetryPolicy().should_retry(err, UNSENT) is False


@pytest.mark.parametrize("code", [400, 401, 403, 404, 409, 410, 422, 500, 501, 505])
def test_other_statuses_are_not_retried(code: int) -> None:
    assert RetryPolicy().should_retry(status(code), SAFE) is False
    assert RetryPolicy().should_retry(status(code), UNSENT) is False


def test_typed_5xx_follow_their_status() -> None:
    unavailable = oh.ServiceUnavailableError("HTTP 503", status=503)
    internal = oh.InternalServerError("HTTP 500", status=500)
    assert RetryPolicy().should_retry(unavailable, SAFE) is True
    assert RetryPolicy().should_retry(internal, SAFE) is False


@pytest.mark.parametrize("idempotency", [SAFE, UNSENT])
def test_rate_limit_is_retried_for_any_request_within_max_retry_after(
    idempotency: Idempotency,
) -> None:
    policy = RetryPolicy(max_retry_after=30.0)
    assert policy.should_retry(rate(None), idempotency) is True
    assert policy.should_retry(rate(0.0), idempotency) is True
    assert policy.should_retry(rate(30.0), idempotency) is True  # the cap itself is slept
    assert policy.should_retry(rate(30.001), idempotency) is False
    assert policy.should_retry(rate(float("inf")), idempotency) is False


def test_concurrency_cap_is_never_retried() -> None:
    cap = oh.ConcurrencyLimitError("HTTP 429", status=429, limit=3, current=3)
    assert RetryPolicy().should_retry(cap, SAFE) is False
    assert RetryPolicy().should_retry(cap, UNSENT) is False


def test_connection_errors() -> None:
    sent = oh.APIConnectionError("reset", may_have_been_sent=True)
    unsent = oh.APIConnectionError("refused", may_have_been_sent=False)
    timeout = oh.APITimeoutError("read timeout", kind="read")
    assert RetryPolicy().should_retry(sent, SAFE) is True
    assert RetryPolicy().should_retry(unsent, SAFE) is True
    assert RetryPolicy().should_retry(unsent, UNSENT) is True
    assert RetryPolicy().should_retry(sent, UNSENT) is False
    assert RetryPolicy().should_retry(timeout, UNSENT) is False
    assert RetryPolicy().should_retry(timeout, SAFE) is True


def test_other_errors_are_not_retried() -> None:
    invalid = oh.ResponseValidationError("html")
    assert RetryPolicy().should_retry(invalid, SAFE) is False
    assert RetryPolicy().should_retry(ValueError("x"), SAFE) is False


# -- backoff delays -----------------------------------------------------------------------


def delays(
    policy: RetryPolicy,
    excs: list[BaseException | None],
    monkeypatch: pytest.MonkeyPatch,
    pick: Callable[[float, float], float],
) -> tuple[list[float], list[tuple[float, float]]]:
    """Drive the wait generator as backoff does; record the jitter ranges asked for."""
    ranges: list[tuple[float, float]] = []

    def uniform(a: float, b: float) -> float:
        ranges.append((a, b))
        return pick(a, b)

    monkeypatch.setattr(random, "uniform", uniform)
    gen = _retry._wait_gen(policy)()
    next(gen)  # backoff primes the generator and ignores this value
    return [gen.send(exc) for exc in excs], ranges


def test_delays_double_from_initial_and_stop_at_max(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0)
    waits, ranges = delays(policy, [None] * 7, monkeypatch, lambda a, b: b)
    assert waits == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert (
        ranges == [(0.25, 0.5), (0.5, 1.0), (1.0, 2.0), (2.0, 4.0), (4.0, 8.0)] + [(4.0, 8.0)] * 2
    )


def test_jitter_never_goes_below_half_the_ceiling(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=3.0)
    waits, _ = delays(policy, [None] * 4, monkeypatch, lambda a, b: a)
    assert waits == [0.5, 1.0, 1.5, 1.5]


def test_real_jitter_stays_in_its_range() -> None:
    policy = RetryPolicy(initial_delay=2.0, max_delay=2.0)
    gen = _retry._wait_gen(policy)()
    next(gen)
    for _ in range(50):
        assert 1.0 <= gen.send(None) <= 2.0


def test_retry_after_overrides_a_shorter_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(initial_delay=1.0, max_delay=4.0)
    excs: list[BaseException | None] = [
        rate(30.0),  # longer than the backoff: Retry-After wins
        rate(0.1),  # shorter: the backoff stands
        rate(None),
        status(503),  # no retry_after attribute value
        rate(0.0),
    ]
    waits, _ = delays(policy, excs, monkeypatch, lambda a, b: b)
    assert waits == [30.0, 2.0, 4.0, 4.0, 4.0]


def test_retry_after_is_not_jittered_below(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(initial_delay=0.5, max_delay=8.0)
    waits, _ = delays(policy, [rate(5.0), rate(5.0)], monkeypatch, lambda a, b: a)
    assert waits == [5.0, 5.0]


def test_zero_delays(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = RetryPolicy(initial_delay=0.0, max_delay=0.0)
    waits, _ = delays(policy, [None, None], monkeypatch, lambda a, b: b)
    assert waits == [0.0, 0.0]


# -- the loop -----------------------------------------------------------------------------

ZERO = RetryPolicy(max_retries=2, initial_delay=0.0, max_delay=0.0)


async def run(
    policy: RetryPolicy,
    idempotency: Idempotency,
    failures: list[BaseException],
    *,
    max_retries: int | None = None,
) -> tuple[int, str | None]:
    """Run the loop over an operation failing with `failures` in turn, then succeeding."""
    calls = 0
    async with _retry.attempts(policy, idempotency, max_retries=max_retries) as tries:
        async for attempt in tries:
            with attempt:
                calls += 1
                if calls <= len(failures):
                    raise failures[calls - 1]
                return calls, "ok"
    return calls, None


async def test_retries_until_success() -> None:
    assert await run(ZERO, SAFE, [status(503), status(502)]) == (3, "ok")


async def test_max_retries_counts_resends() -> None:
    failures: list[BaseException] = [status(503)] * 3
    with pytest.raises(oh.APIStatusError) as info:
        await run(ZERO, SAFE, failures)
    assert info.value is failures[2]


async def test_max_retries_zero_tries_once() -> None:
    policy = RetryPolicy(max_retries=0, initial_delay=0.0, max_delay=0.0)
    first = status(503)
    with pytest.raises(oh.APIStatusError) as info:
        await run(policy, SAFE, [first])
    assert info.value is first
    assert await run(policy, SAFE, []) == (1, "ok")


async def test_per_call_max_retries_overrides_the_policy() -> None:
    assert await run(ZERO, SAFE, [status(503)] * 4, max_retries=4) == (5, "ok")
    with pytest.raises(oh.APIStatusError):
        await run(ZERO, SAFE, [status(503)], max_retries=0)


async def test_giving_up_raises_the_error_at_once() -> None:
    not_found = oh.NotFoundError("HTTP 404", status=404)
    with pytest.raises(oh.NotFoundError) as info:
        await run(ZERO, SAFE, [not_found])
    assert info.value is not_found
    # An unsafe request is not sent again after a 503.
    with pytest.raises(oh.APIStatusError):
        await run(ZERO, UNSENT, [status(503)])
    assert await run(ZERO, UNSENT, [rate(None)]) == (2, "ok")


async def test_only_api_errors_are_retried() -> None:
    with pytest.raises(KeyError):
        await run(ZERO, SAFE, [KeyError("bug")])


async def test_each_retry_is_logged(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="openhands_async")
    await run(ZERO, SAFE, [status(503), status(504)])
    messages = [r.getMessage() for r in caplog.records if r.name == "openhands_async"]
    assert messages == [
        "retrying in 0.00s after attempt 1: HTTP 503",
        "retrying in 0.00s after attempt 2: HTTP 504",
    ]
    assert all(r.levelno == logging.INFO for r in caplog.records if r.name == "openhands_async")
    assert [r for r in caplog.records if r.name != "openhands_async"] == []  # not backoff's too


async def test_the_loop_sleeps_exactly_the_policys_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    """backoff adds no jitter of its own (that could undercut Retry-After)."""
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)

    # backoff's loop sleeps through its module's `asyncio`; only `sleep` is used there.
    monkeypatch.setattr(backoff._async, "asyncio", types.SimpleNamespace(sleep=sleep))
    monkeypatch.setattr(random, "uniform", lambda a, b: (a + b) / 2)
    policy = RetryPolicy(max_retries=3, initial_delay=4.0, max_delay=4.0)
    assert await run(policy, SAFE, [status(503), rate(10.0), rate(0.5)]) == (4, "ok")
    assert slept == [3.0, 10.0, 3.0]


def test_log_line(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="openhands_async")
    _retry._log_backoff({"wait": 1.5, "tries": 2, "exception": status(502)})
    _retry._log_backoff({})
    assert [r.getMessage() for r in caplog.records] == [
        "retrying in 1.50s after attempt 2: HTTP 502",
        "retrying in 0.00s after attempt 0: None",
    ]
