"""Client configuration as plain values: `Timeouts`, `RetryPolicy` (and `Idempotency`,
how safe a request is to send again, which the policy decides on).

Pure data (attrs, frozen); the HTTP edge turns `Timeouts` into aiohttp's own timeouts and
the pipeline runs the retry loop (`_retry.attempts`) from a `RetryPolicy`.
"""

from __future__ import annotations

import enum

import attrs

from . import errors
from ._constants import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_RETRIES,
    DEFAULT_READ_TIMEOUT,
    DEFAULT_STREAM_IDLE_TIMEOUT,
    DEFAULT_TOTAL_TIMEOUT,
    INITIAL_RETRY_DELAY,
    MAX_RETRY_AFTER,
    MAX_RETRY_DELAY,
)

__all__ = ["Idempotency", "RetryPolicy", "Timeouts"]

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
class Timeouts:
    """Timeouts in seconds. `read` bounds one silence on the socket, `total` one attempt.

    Streams ignore `total` and use `stream_idle` as their read bound instead.

        client = OpenHandsClient(timeout=Timeouts(connect=5, read=30, total=60))
    """

    connect: float | None = DEFAULT_CONNECT_TIMEOUT
    read: float | None = DEFAULT_READ_TIMEOUT
    total: float | None = DEFAULT_TOTAL_TIMEOUT
    stream_idle: float | None = DEFAULT_STREAM_IDLE_TIMEOUT


@attrs.frozen
class RetryPolicy:
    """How often and how long to retry. `max_retries` counts re-sends, not attempts.

    Delays start at `initial_delay` and double (jittered) up to `max_delay`:

        client = OpenHandsClient(retry_policy=RetryPolicy(max_retries=5, max_delay=30))
    """

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
        """Whether a request that failed with `exc` may be sent again, given how safe
        re-sending it is (`Idempotency`).
        """
        if isinstance(exc, errors.ConcurrencyLimitError):
            return False  # only a running conversation ending frees a slot: not a timer
        if isinstance(exc, errors.RateLimitError):
            return exc.retry_after is None or exc.retry_after <= self.max_retry_after
        if isinstance(exc, errors.APIStatusError):
            return idempotency is Idempotency.SAFE and exc.status in RETRYABLE_STATUSES
        if isinstance(exc, errors.APIConnectionError):
            return idempotency is Idempotency.SAFE or not exc.may_have_been_sent
        return False
