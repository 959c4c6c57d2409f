"""What is retried, and how long to wait: policy as data, the loop from `backoff`."""

from __future__ import annotations

import enum
import logging
import random
from collections.abc import AsyncIterator, Generator
from contextlib import AbstractAsyncContextManager, aclosing
from typing import Any

import attrs
import backoff

from . import errors
from ._constants import DEFAULT_MAX_RETRIES, INITIAL_RETRY_DELAY, MAX_RETRY_AFTER, MAX_RETRY_DELAY

log = logging.getLogger("openhands_async")

# Statuses after which the server has not acted, or a proxy/load balancer failed in front of it.
RETRYABLE_STATUSES = frozenset({408, 429, 502, 503, 504})


class Idempotency(enum.Enum):
    """How safe it is to send a request again."""

    #: Reads, deletes, updates: any transient failure may be retried.
    SAFE = "safe"
    #: Starts and messages: retried only when the server provably did not act on it
    #: (429, or a connection that failed before the request was sent).
    UNSENT_ONLY = "unsent-only"


@attrs.frozen
class RetryPolicy:
    """How often and how long to retry. `max_retries` counts re-sends, not attempts."""

    max_retries: int = DEFAULT_MAX_RETRIES
    initial_delay: float = INITIAL_RETRY_DELAY
    max_delay: float = MAX_RETRY_DELAY
    #: A Retry-After longer than this is not slept through; the error is raised at once.
    max_retry_after: float = MAX_RETRY_AFTER

    def __attrs_post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must be >= 0")

    def should_retry(self, exc: BaseException, idempotency: Idempotency) -> bool:
        if isinstance(exc, errors.ConcurrencyLimitError):
            return False  # only a running conversation ending frees a slot: not a timer
        if isinstance(exc, errors.RateLimitError):
            return exc.retry_after is None or exc.retry_after <= self.max_retry_after
        if isinstance(exc, errors.APIStatusError):
            return idempotency is Idempotency.SAFE and exc.status in RETRYABLE_STATUSES
        if isinstance(exc, errors.APIConnectionError):
            return idempotency is Idempotency.SAFE or not exc.may_have_been_sent
        return False

    def _waits(self) -> Generator[float, BaseException | None, None]:
        """backoff's wait generator: it sends in the exception, so Retry-After is honoured.

        Jitter is applied here rather than by backoff so that it never undercuts Retry-After.
        """
        exc = yield 0.0  # backoff primes the generator with send(None)
        attempt = 0
        while True:
            ceiling = min(self.max_delay, self.initial_delay * (2**attempt))
            delay = random.uniform(ceiling / 2, ceiling)
            retry_after = getattr(exc, "retry_after", None)
            if retry_after is not None:
                delay = max(delay, retry_after)
            attempt += 1
            exc = yield delay

    def attempts(
        self, idempotency: Idempotency, *, max_retries: int | None = None
    ) -> AbstractAsyncContextManager[AsyncIterator[Any]]:
        """`async with policy.attempts(...) as tries: async for attempt in tries: with attempt:`."""
        retries = self.max_retries if max_retries is None else max_retries
        return aclosing(
            backoff.aretry_context(
                errors.APIError,
                self._waits,
                max_tries=retries + 1,
                jitter=None,
                giveup=lambda exc: not self.should_retry(exc, idempotency),
                on_backoff=_log_backoff,
                logger=None,
            )
        )


def _log_backoff(details: Any) -> None:
    log.info(
        "retrying in %.2fs after attempt %d: %s",
        details.get("wait", 0.0),
        details.get("tries", 0),
        details.get("exception"),
    )
