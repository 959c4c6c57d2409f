"""What is retried, and how long to wait: the policy is data (`config.RetryPolicy`), the
loop comes from `backoff`."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Callable, Generator
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any

import backoff

from . import errors
from .config import RETRYABLE_STATUSES, Idempotency, RetryPolicy

__all__ = ["RETRYABLE_STATUSES", "Idempotency", "attempts"]

log = logging.getLogger("openhands_async")


def _wait_gen(policy: RetryPolicy) -> Callable[[], Generator[float, BaseException | None, None]]:
    """backoff's wait generator: it sends in the exception, so Retry-After is honoured.

    Jitter is applied here rather than by backoff so that it never undercuts Retry-After.
    """

    def waits() -> Generator[float, BaseException | None, None]:
        exc = yield 0.0  # backoff primes the generator with send(None)
        attempt = 0
        while True:
            ceiling = min(policy.max_delay, policy.initial_delay * (2**attempt))
            delay = random.uniform(ceiling / 2, ceiling)
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                delay = max(delay, retry_after)
            attempt += 1
            exc = yield delay

    return waits


def attempts(
    policy: RetryPolicy, idempotency: Idempotency, *, max_retries: int | None = None
) -> AbstractAsyncContextManager[AsyncIterator[Any]]:
    """`async with attempts(policy, ...) as tries: async for attempt in tries: with attempt:`."""
    retries = policy.max_retries if max_retries is None else max_retries
    return aclosing(
        backoff.aretry_context(
            errors.APIError,
            _wait_gen(policy),
            max_tries=retries + 1,
            jitter=None,
            giveup=lambda exc: not policy.should_retry(exc, idempotency),
            on_backoff=_log_backoff,
            logger=None,
        )
    )


def _log_backoff(details: Any) -> None:
    log.info(
        "retrying in %.2fs after attempt %d: %s",
        details.get("wait", 0.0),
        details.get("tries", 0),
        _brief(details.get("exception")),
    )


def _brief(exc: object) -> str:
    # The error's kind, status and request only: a server's message can quote the request
    # back (a secret value sent in it), and this line is logged before the caller's
    # resource had a chance to mask it.
    if isinstance(exc, errors.APIStatusError):
        where = f" ({exc.request_method} {exc.request_url})" if exc.request_method else ""
        return f"HTTP {exc.status}{where}"
    return str(exc)  # a connection error's message is the SDK's own
