"""The account's state: start tasks, conversations and sandboxes, evaluated lazily.

Nothing runs in the background. A record stores when it was created and shares its start's
plan (the offsets of every transition); a read computes the status at "now" from them, so
ten thousand conversations cost ten thousand small objects and no tasks. The only eager
bookkeeping is the set of running conversations, which the per-account cap needs at start
time; it is pruned with a heap of the times conversations stop running.
"""

from __future__ import annotations

import heapq
import itertools
import math
from bisect import bisect_right
from typing import Any

import attrs

from ._plan import StartPlan
from ._wire import new_id, new_sandbox_id, new_session_key, uuid_hex

INF = math.inf
# How long after creation a WORKING task's updated_at is stamped (the server's is ~10 us later).
_FIRST_UPDATE = 0.00001


@attrs.define(eq=False)
class StartTaskRecord:
    id: str
    created: float
    request: dict[str, Any]
    plan: StartPlan
    conversation_id: str
    sandbox_id: str
    # When the server dropped the start (`Store.drop_start`): no phase after it is reached.
    stopped_at: float = INF

    def phase(self, t: float) -> int:
        """The phase reached at loop time t."""
        t = min(t, self.stopped_at)
        return max(0, bisect_right(self.plan.offsets, t - self.created) - 1)

    def at(self, phase: int) -> float:
        """When a phase is reached (INF for `len(phases)`, the "never" index, and for a
        phase the start was dropped before)."""
        offsets = self.plan.offsets
        if phase >= len(offsets):
            return INF
        when = self.created + offsets[phase]
        return when if when <= self.stopped_at else INF

    def updated(self, phase: int) -> float:
        return self.at(phase) + (_FIRST_UPDATE if phase == 0 else 0.0)

    @property
    def sandbox_from(self) -> float:
        return self.at(self.plan.sandbox_phase)

    @property
    def ready_at(self) -> float:
        return self.at(self.plan.ready_phase)

    @property
    def error_at(self) -> float:
        return self.at(self.plan.error_phase)


@attrs.define(eq=False)
class ConversationRecord:
    id: str
    task: StartTaskRecord
    running_at: float
    outcome_at: float
    outcome: str
    session_api_key: str
    paused_at: float = INF
    broken_at: float = INF
    sub_conversation_ids: list[str] = attrs.Factory(list)
    # Reserved for the events endpoints: events are appended here as they are produced.
    events: list[dict[str, Any]] = attrs.Factory(list)

    @classmethod
    def build(cls, task: StartTaskRecord, plan: StartPlan) -> ConversationRecord:
        running_at = task.ready_at + plan.idle_seconds if plan.runs else INF
        return cls(
            id=task.conversation_id,
            task=task,
            running_at=running_at,
            outcome_at=running_at + plan.run_seconds,
            outcome=plan.outcome,
            session_api_key=new_session_key(),
        )

    @property
    def created(self) -> float:
        # The conversation shows up with its sandbox; before that a batch read answers null.
        return self.task.sandbox_from

    @property
    def settles_at(self) -> float:
        """When it stops counting as running (INF: never, e.g. idle or broken)."""
        end = min(self.task.error_at, self.outcome_at)
        return end if end <= self.broken_at else INF

    def view(self, t: float) -> tuple[str, str | None] | None:
        """(sandbox_status, execution_status) at loop time t, or None while not visible."""
        task = self.task
        if t < task.sandbox_from:
            return None
        if t >= task.error_at:
            return "ERROR", None
        if t >= self.paused_at:
            return "PAUSED", None
        if t < task.ready_at:
            return "STARTING", None
        if t >= self.broken_at:
            return "RUNNING", None
        if t < self.running_at:
            return "RUNNING", "idle"
        if t < self.outcome_at:
            return "RUNNING", "running"
        return "RUNNING", self.outcome

    def updated(self, t: float) -> float:
        # A paused conversation's own timeline is frozen at the pause.
        frozen = min(t, self.paused_at)
        timeline = (self.task.ready_at, self.running_at, self.outcome_at, self.broken_at)
        return max(
            (
                self.created,
                *(m for m in timeline if m <= frozen),
                *(m for m in (self.paused_at, self.task.error_at) if m <= t),
            )
        )


@attrs.define(eq=False)
class SandboxRecord:
    id: str
    task: StartTaskRecord
    conversation: ConversationRecord | None  # None for the extra sandbox of a duplicate start

    def status(self, t: float) -> str | None:
        if t < self.task.sandbox_from:
            return None
        if self.conversation is not None:
            view = self.conversation.view(t)
            return view[0] if view else None
        return "ERROR" if t >= self.task.error_at else "STARTING"


class Store:
    """All records of the (single) account, keyed by 32-hex id, in creation order."""

    def __init__(self) -> None:
        self.tasks: dict[str, StartTaskRecord] = {}
        self.conversations: dict[str, ConversationRecord] = {}
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.peak_running = 0
        self.paused_by_cap = 0
        self.duplicate_starts = 0
        # Running conversations, oldest first (dicts keep insertion order), and when each stops.
        self._active: dict[str, ConversationRecord] = {}
        self._settling: list[tuple[float, str]] = []

    def running(self, now: float) -> int:
        self._prune(now)
        return len(self._active)

    def make_room(self, now: float, limit: int | None, mode: str) -> int | None:
        """Apply the running cap before a start: the running count if refused, else None."""
        if limit is None:
            return None
        current = self.running(now)
        if current < limit:
            return None
        if mode == "refuse":
            return current
        for conv in list(itertools.islice(self._active.values(), current - limit + 1)):
            conv.paused_at = now
            del self._active[conv.id]
            self.paused_by_cap += 1
        return None

    def add_start(
        self, now: float, plan: StartPlan, request: dict[str, Any], chosen_id: str | None
    ) -> StartTaskRecord:
        original = self.conversations.get(chosen_id) if chosen_id else None
        if original is not None:
            # Measured: the new task fails after starting another sandbox, and the conversation
            # already holding the id loses its execution status for good.
            self.duplicate_starts += 1
            duplicate = plan.as_duplicate()
            task = StartTaskRecord(new_id(), now, request, duplicate, original.id, new_sandbox_id())
            self.tasks[task.id] = task
            self.sandboxes[task.sandbox_id] = SandboxRecord(task.sandbox_id, task, None)
            original.broken_at = min(original.broken_at, task.error_at)
            return task
        conversation_id = chosen_id or new_id()
        # The open-source server names the sandbox after a client-chosen conversation id.
        sandbox_id = chosen_id or new_sandbox_id()
        task = StartTaskRecord(new_id(), now, request, plan, conversation_id, sandbox_id)
        conv = ConversationRecord.build(task, plan)
        self.tasks[task.id] = task
        self.conversations[conv.id] = conv
        self.sandboxes[sandbox_id] = SandboxRecord(sandbox_id, task, conv)
        parent_id = request.get("parent_conversation_id")
        parent = self.conversations.get(uuid_hex(parent_id) or "") if parent_id else None
        if parent is not None:
            parent.sub_conversation_ids.append(conv.id)
        self.activate(conv)
        return task

    def drop_start(self, task: StartTaskRecord, now: float) -> None:
        """Stop a start where it is at `now` (the open-source server drops a start whose
        stream-start connection closed): its task's status and updated_at never move again,
        and a conversation not yet READY never runs (its sandbox stays STARTING, counted as
        running, if it had one)."""
        if task.stopped_at <= now:
            return
        task.stopped_at = now
        conv = self.conversations.get(task.conversation_id)
        if conv is not None and conv.task is task and task.ready_at == INF:
            conv.running_at = conv.outcome_at = INF

    def activate(self, conv: ConversationRecord) -> None:
        """Count the conversation as running until it settles."""
        self._active[conv.id] = conv
        if conv.settles_at < INF:
            heapq.heappush(self._settling, (conv.settles_at, conv.id))

    def deactivate(self, conv: ConversationRecord) -> None:
        """Stop counting it as running (paused or deleted)."""
        self._active.pop(conv.id, None)

    def remove(self, conv: ConversationRecord) -> None:
        """Delete the conversation and its sandbox (its start task stays, as on the server)."""
        self.conversations.pop(conv.id, None)
        self.deactivate(conv)
        self.sandboxes.pop(conv.task.sandbox_id, None)

    def note_peak(self, now: float) -> None:
        # Only starts admitted through the API move the peak, not seeded conversations.
        self.peak_running = max(self.peak_running, self.running(now))

    def _prune(self, now: float) -> None:
        heap = self._settling
        while heap and heap[0][0] <= now:
            _, conv_id = heapq.heappop(heap)
            # A later duplicate start may have pushed the end to never: then it stays.
            # (A deleted conversation is gone; a re-run one may settle later than this entry.)
            conv = self.conversations.get(conv_id)
            if conv is None or conv.settles_at <= now:
                self._active.pop(conv_id, None)
