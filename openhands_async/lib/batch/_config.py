"""What a run is given: the client it needs (`BatchHost`) and its settings (`Settings`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .._polling import PollerHost
from .jobs import BatchProgress

if TYPE_CHECKING:
    from ...resources.sandboxes import Sandboxes

__all__ = ["BatchHost", "Settings"]


class BatchHost(PollerHost, Protocol):
    """What the runner needs of a client: what a poller needs (the start tasks and
    conversations resources) and the sandboxes, to resume what the server paused."""

    @property
    def sandboxes(self) -> Sandboxes: ...


@attrs.frozen
class Settings:
    """A run's arguments, checked by `BatchRun`."""

    max_running: int
    start_limiter: AbstractAsyncContextManager[Any] | None
    fail_fast: bool
    poll_interval: float
    on_progress: Callable[[BatchProgress], None] | None
    retry_failed: bool = False
