"""What the runner does about a job the server paused at its running cap: it holds no slot
while paused, the batch runs no more than are still running, and it is resumed (first, as
older work) when a slot frees. A mixin of `Runner`, kept apart for size."""

from __future__ import annotations

import logging

from ... import errors
from ...models import Conversation
from ..poller import ConversationPoller
from ._claims import Active
from ._config import BatchHost
from .jobs import JobResult, failed
from .journal import Journal

log = logging.getLogger("openhands_async")

__all__ = ["Pauses"]


class Pauses:
    """The runner's pause steps (state lives on `Runner`)."""

    client: BatchHost
    journal: Journal
    poller: ConversationPoller
    paused: list[Active]
    target: int

    def _counted(self) -> int:
        raise NotImplementedError  # Runner's

    def _refused(self, limit: int | None) -> None:
        raise NotImplementedError  # Runner's

    def _forget(self, entry: Active) -> None:
        raise NotImplementedError  # Runner's

    def _ended(self, result: JobResult) -> None:
        raise NotImplementedError  # Runner's

    def _watch(self, entry: Active, conversation: Conversation | None = None) -> None:
        raise NotImplementedError  # Runner's

    def _report(self) -> None:
        raise NotImplementedError  # Runner's

    def _paused_or_not(self, entry: Active, paused: bool) -> None:
        """A read of a running job's conversation: its sandbox paused or not."""
        if paused and not entry.paused:
            # Not our doing: the server paused it to make room for a newer start (its cap is
            # below our target, or conversations outside this batch hold slots). Run no more
            # than are still running; it is resumed when a slot frees.
            entry.paused = True
            self.paused.append(entry)
            self.target = max(1, min(self.target, self._counted()))
            log.info(
                "the server paused job %s at its running cap; running at most %d",
                entry.row.key,
                self.target,
            )
        elif not paused and entry.paused:  # resumed by someone else
            entry.paused = False
            self.paused.remove(entry)
        self._report()

    async def _resume_paused(self, entry: Active) -> None:
        sandbox_id = entry.sandbox_id or entry.conversation_id
        assert sandbox_id is not None  # it was read as a paused conversation
        try:
            await self.client.sandboxes.resume(sandbox_id)
        except errors.ConcurrencyLimitError as exc:
            self._refused(exc.limit)
            return
        except (errors.APIError, ValueError) as exc:
            self._forget(entry)
            error = f"paused by the server's running cap and not resumed: {exc}"
            row = entry.row
            try:
                await self.journal.mark_ended(
                    row.key, "failed", sandbox_status="PAUSED", error=error
                )
            except errors.JournalLeaseLost:
                return
            args = (entry.job, row.conversation_id, entry.task, error, row.sent_at)
            self._ended(failed(*args, sandbox_status="PAUSED"))
            return
        entry.paused = False
        self.paused.remove(entry)
        log.info("resumed job %s, paused by the server's running cap", entry.row.key)
        if entry.conversation_id:
            # Read it afresh: paused again before the next read, it would show no change.
            self.poller.untrack(entry.conversation_id)
            self.poller.track_conversation(entry.conversation_id)
            self._watch(entry)  # a watch ends when its sandbox is paused
        self._report()
