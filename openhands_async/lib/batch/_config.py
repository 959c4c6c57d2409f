"""What a run is given: the client it needs (`BatchHost`) and its settings (`Settings`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .._polling import PollerHost
from .jobs import BatchProgress

if TYPE_CHECKING:
    from ...config import RetryPolicy, Timeouts
    from ...resources.sandboxes import Sandboxes
    from ..events import Events

__all__ = ["BatchHost", "Settings"]


class BatchHost(PollerHost, Protocol):
    """What the runner needs of a client: what a poller needs (the start tasks and
    conversations resources), the sandboxes, to resume what the server paused, the events
    (`watch_ends`), and its timeouts and retry policy (how long a start may stay in
    flight)."""

    @property
    def sandboxes(self) -> Sandboxes: ...

    @property
    def events(self) -> Events: ...

    @property
    def timeouts(self) -> Timeouts: ...

    @property
    def retry_policy(self) -> RetryPolicy: ...


@attrs.frozen
class Settings:
    """A run's arguments, checked by `BatchRun`."""

    max_running: int
    start_limiter: AbstractAsyncContextManager[Any] | None
    fail_fast: bool
    poll_interval: float
    on_progress: Callable[[BatchProgress], None] | None
    retry_failed: bool = False
    #: How long one start (its attempts included) may stay in flight: an adopted start the
    #: server has no trace of is sent again only after this (see `Journal.in_flight_window`).
    start_timeout: float = 0.0
    #: Follow each running job's events, so that its end is read at once (`EndWatch`).
    watch_ends: bool = False
