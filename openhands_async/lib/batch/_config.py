"""What a run is given: the client it needs (`BatchHost`) and its settings (`Settings`)."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import TYPE_CHECKING, Any, Protocol

import attrs

from .._polling import PollerHost
from .jobs import BatchProgress

if TYPE_CHECKING:
    from ...resources.conversations import Conversations
    from ...resources.sandboxes import Sandboxes
    from ...resources.start_tasks import StartTasks

__all__ = ["BatchHost", "Settings"]


class BatchHost(PollerHost, Protocol):
    """What the runner needs of a client: the resources it calls, and what a poller needs."""

    @property
    def conversations(self) -> Conversations: ...

    @property
    def start_tasks(self) -> StartTasks: ...

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
