"""Moving a conversation's timeline: pause, resume and re-run, as the routes that act on it
(sandbox pause/resume/delete, send-message, V0 start/stop) all do it."""

from __future__ import annotations

from ._events import ensure_events, run_events, shift_after, user_message_events
from ._state import INF, ConversationRecord, Store


def pause(store: Store, conv: ConversationRecord, now: float) -> None:
    # Make the events first: they are made from the timeline as it stood before the pause.
    ensure_events(conv)
    conv.paused_at = min(conv.paused_at, now)
    store.deactivate(conv)


def resume(store: Store, conv: ConversationRecord, now: float) -> None:
    """Continue a paused conversation where it stopped: its pending timeline moves on."""
    if conv.paused_at == INF:
        return
    moment, delta = conv.paused_at, now - conv.paused_at
    shift_after(conv, moment, delta)
    if conv.running_at > moment:
        conv.running_at += delta
    if conv.outcome_at > moment:
        conv.outcome_at += delta
    conv.paused_at = INF
    store.activate(conv)


def send_message(
    store: Store, conv: ConversationRecord, text: str, now: float, *, run: bool
) -> None:
    """A new user message; with `run`, an idle or settled agent runs again on it."""
    events = ensure_events(conv)
    execution = view[1] if (view := conv.view(now)) else None
    if run and execution != "running" and conv.broken_at == INF:
        plan = conv.task.plan
        conv.running_at = now + plan.idle_seconds
        conv.outcome_at = conv.running_at + plan.run_seconds
        events.extend(run_events(conv, text, now))
        store.activate(conv)
    else:
        events.extend(user_message_events(text, now))
