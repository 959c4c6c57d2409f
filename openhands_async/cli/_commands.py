"""The commands on one conversation or a few: start, watch, list, events, send."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ..lib.follow import event_gist
from ._display import MISSING, NO_REPLY, Out, conv_ok, conv_status, fit, one_line, show
from ._display import arrow as _arrow
from ._parser import (
    EXIT_FAILED,
    EXIT_OK,
    FEW_INTERVAL,
    FEW_ITEMS,
    FEW_MAX_INTERVAL,
    MANY_INTERVAL,
)

# The longest event kind the server sends (ConversationStateUpdateEvent): columns line up.
_KIND_WIDTH = 28
_SOURCE_WIDTH = 11  # "environment"


def _poller(client: Any, items: int, interval: float | None) -> Any:
    """A poller prompt enough for a person watching a few items."""
    if interval is None:
        interval = FEW_INTERVAL if items <= FEW_ITEMS else MANY_INTERVAL
    if items <= FEW_ITEMS:
        # The poller backs a quiet item off to 4x its interval by default: a 4 s run was
        # seen ending at 7.8 s. Cap the back-off for the few items a person watches.
        return client.poller(interval, max_interval=max(interval, FEW_MAX_INTERVAL))
    return client.poller(interval)


def _stamp(out: Out) -> str:
    return f"[{out.elapsed():6.2f}s]"


async def cmd_start(client: Any, args: argparse.Namespace, out: Out) -> int:
    options: dict[str, Any] = {}
    if args.repo:
        options["repository"] = args.repo
    if args.branch:
        options["branch"] = args.branch
    if args.model:
        options["llm_model"] = args.model
    stream = client.conversations.stream_start(args.message, raise_on_error=False, **options)
    task = None
    async with stream:
        async for task in stream:
            out.following = [task.app_conversation_id or task.id]
            out.emit(
                {
                    "event": "start_task",
                    "id": task.id,
                    "status": str(task.status),
                    "detail": task.detail,
                    "elapsed": round(out.elapsed(), 3),
                },
                f"{_stamp(out)} {task.status}" + (f"  {task.detail}" if task.detail else ""),
            )
    if task is None or task.app_conversation_id is None:
        detail = show(task.detail if task is not None else "no start task")
        out.emit({"event": "start_failed", "detail": detail}, f"start failed: {detail}")
        return EXIT_FAILED
    cid = task.app_conversation_id
    out.following = [cid]
    url = f"{client.base_url}/conversations/{cid}"
    out.emit({"event": "conversation", "id": cid, "url": url}, f"conversation {cid}\n{url}")
    if args.follow:
        return await follow_events(client, cid, out)
    if not args.wait:
        return EXIT_OK
    poller = _poller(client, 1, args.interval)
    poller.track_conversation(cid)
    final = None
    async for change in poller.changes():
        out.emit(
            {
                "event": "change",
                "id": change.id,
                "old": change.old,
                "new": change.new,
                "elapsed": round(out.elapsed(), 3),
            },
            f"{_stamp(out)} {_arrow(change)}",
        )
        if change.terminal:
            final = change.model
            break
    await poller.aclose()
    out.following = []
    message = await client.events.last_agent_message(cid)
    ok = conv_ok(final)
    out.emit(
        {
            "event": "outcome",
            "id": cid,
            "status": conv_status(final),
            "ok": ok,
            "last_agent_message": message,
        },
        f"outcome: {conv_status(final)}\nagent: {message or NO_REPLY}",
    )
    return EXIT_OK if ok else EXIT_FAILED


async def cmd_watch(client: Any, args: argparse.Namespace, out: Out) -> int:
    ids: list[str] = list(args.ids)
    tasks = await client.start_tasks.get_many(ids)
    convs = await client.conversations.get_many(ids)
    poller = _poller(client, len(ids), args.interval)
    # What to name in the Ctrl-C message: the items still followed, by the id the user
    # can pass to `watch` again (a start task's conversation once it is known).
    following: dict[str, str] = {}
    for i, t, c in zip(ids, tasks, convs, strict=True):
        if t is not None:
            following[poller.track_start_task(i)] = i
            if not out.json:
                out.line(f"{'':9} {i[:8]} start task   {i}")
        elif c is not None:
            following[poller.track_conversation(i)] = i
            if not out.json:
                out.line(f"{'':9} {i[:8]} conversation {i}")
        else:
            out.emit({"event": "missing", "id": i}, f"{i}: not found")
    failed = any(t is None and c is None for t, c in zip(tasks, convs, strict=True))
    out.following = list(following.values())
    if poller.tracked:
        async for change in poller.changes():
            model = change.model
            # Short ids keep a line within 80 columns; the full id is named once, above.
            kind = "start task" if str(change.kind) == "start_task" else str(change.kind)
            text = f"{_stamp(out)} {change.id[:8]} {kind:<12} {_arrow(change)}"
            conversation = getattr(model, "app_conversation_id", None)
            if conversation and change.id in following and following[change.id] != conversation:
                following[change.id] = conversation
                text += f"\n{' ' * 19}conversation {conversation}"
            out.emit(
                {
                    "event": "change",
                    "id": change.id,
                    "kind": str(change.kind),
                    "old": change.old,
                    "new": change.new,
                    "terminal": change.terminal,
                    "elapsed": round(out.elapsed(), 3),
                },
                text,
            )
            if change.terminal:
                if str(change.kind) == "conversation" or not conversation:
                    following.pop(change.id, None)
                out.following = list(following.values())
                if change.missing or (str(change.kind) == "conversation" and not conv_ok(model)):
                    failed = True
                if str(getattr(model, "status", "")) == "ERROR":
                    failed = True
            else:
                out.following = list(following.values())
    await poller.aclose()
    return EXIT_FAILED if failed else EXIT_OK


async def cmd_list(client: Any, args: argparse.Namespace, out: Out) -> int:
    rows = []
    async for c in client.conversations.search(title_contains=args.title, limit=args.limit):
        if out.json:
            out.emit(
                {
                    "id": c.id,
                    "title": c.title,
                    "status": conv_status(c),
                    "repository": c.selected_repository,
                    "created_at": c.created_at,
                },
                "",
            )
        else:
            rows.append([c.id, conv_status(c), show(c.selected_repository), show(c.title)])
    if not out.json:
        if rows:
            out.table(["conversation", "status", "repository", "title"], rows, keep=(0, 1))
        else:
            print("no conversations" + (" with that title" if args.title else ""), file=sys.stderr)
    return EXIT_OK


def _event_row(e: Any, width: int | None) -> str:
    kind = fit(e.kind, _KIND_WIDTH)
    source = fit(show(e.source), _SOURCE_WIDTH)
    row = f"{e.timestamp:%H:%M:%S}  {kind:<{_KIND_WIDTH}}  {source:<{_SOURCE_WIDTH}}  "
    text = event_gist(e, width=None) or MISSING
    return row + (fit(text, width - len(row)) if width else one_line(text))


def _event_json(e: Any) -> dict[str, Any]:
    return {
        "id": e.id,
        "kind": e.kind,
        "timestamp": e.timestamp,
        "source": e.source,
        "text": event_gist(e, width=None),
        "payload": e.payload,
    }


async def follow_events(client: Any, cid: str, out: Out) -> int:
    """Print a conversation's events live, one line each, then the outcome (`--follow`)."""
    out.following = [cid]
    last = None
    async with client.events.follow(cid) as stream:
        async for e in stream:
            last = e
            if out.json:
                record = _event_json(e)
                if e.execution_status is not None:
                    record["execution_status"] = str(e.execution_status)
                out.emit({"event": "agent_event", **record}, "")
            else:
                out.line(_event_row(e, out.width))
    out.following = []
    status = str(last.execution_status) if last is not None and last.is_terminal else None
    ok = status == "finished"
    out.emit(
        {"event": "outcome", "id": cid, "status": status, "ok": ok, "via": stream.transport},
        f"outcome: {status or 'unknown'}",
    )
    return EXIT_OK if ok else EXIT_FAILED


async def cmd_events(client: Any, args: argparse.Namespace, out: Out) -> int:
    if args.follow:
        return await follow_events(client, args.id, out)
    seen = 0
    day = None
    width = out.width
    async for e in client.events.search(args.id, kind=args.kind, limit=args.limit):
        seen += 1
        if out.json:
            out.emit(_event_json(e), "")
            continue
        if e.timestamp.date() != day:  # the date once, then times: rows stay short
            day = e.timestamp.date()
            out.line(f"{day.isoformat()}")
        out.line(_event_row(e, width))
    if seen == 0:
        (conversation,) = await client.conversations.get_many([args.id])
        if conversation is None:
            if out.json:
                out.emit({"error": "not_found", "id": args.id}, "")
            print(f"openhands-async: no conversation {args.id}", file=sys.stderr)
            return EXIT_FAILED
        print("no events" + (f" of kind {args.kind}" if args.kind else ""), file=sys.stderr)
    return EXIT_OK


async def cmd_send(client: Any, args: argparse.Namespace, out: Out) -> int:
    if not args.wait:
        await client.conversations.send_message(args.id, args.message)
        out.emit({"event": "sent", "id": args.id}, f"sent to {args.id}")
        return EXIT_OK
    if not out.json:
        out.line(f"sending to {args.id}; waiting for the reply")
    out.following = [args.id]  # Ctrl-C: the agent keeps running; say how to follow it
    try:
        reply = await client.conversations.ask(
            args.id, args.message, timeout=args.timeout, poll_interval=args.interval
        )
    except TimeoutError:
        later = f"openhands-async events {args.id} --kind MessageEvent"
        out.emit(
            {"event": "no_reply", "id": args.id, "timeout": args.timeout},
            f"no reply within {args.timeout:g} s; the agent may still answer. Read it "
            f"later with:\n  {later}",
        )
        return EXIT_FAILED
    out.emit(
        {"event": "reply", "id": args.id, "reply": reply},
        f"agent: {NO_REPLY + ' (its run ended without one)' if reply is None else reply}",
    )
    return EXIT_OK if reply is not None else EXIT_FAILED
