"""The commands on one conversation or a few: start, watch, list, events, send."""

from __future__ import annotations

import argparse
from typing import Any

from ._display import Out, conv_ok, conv_status
from ._parser import EXIT_FAILED, EXIT_OK


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
            out.emit(
                {
                    "event": "start_task",
                    "id": task.id,
                    "status": str(task.status),
                    "detail": task.detail,
                    "elapsed": round(out.elapsed(), 3),
                },
                f"[{out.elapsed():6.2f}s] {task.status}"
                + (f"  {task.detail}" if task.detail else ""),
            )
    if task is None or task.app_conversation_id is None:
        detail = task.detail if task is not None else "no start task"
        out.emit({"event": "start_failed", "detail": detail}, f"start failed: {detail}")
        return EXIT_FAILED
    cid = task.app_conversation_id
    url = f"{client.base_url}/conversations/{cid}"
    out.emit({"event": "conversation", "id": cid, "url": url}, f"conversation {cid}\n{url}")
    if not args.wait:
        return EXIT_OK
    poller = client.poller(interval=args.interval)
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
            f"[{out.elapsed():6.2f}s] {change.old} -> {change.new}",
        )
        if change.terminal:
            final = change.model
            break
    await poller.aclose()
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
        f"outcome: {conv_status(final)}\nagent: {message}",
    )
    return EXIT_OK if ok else EXIT_FAILED


async def cmd_watch(client: Any, args: argparse.Namespace, out: Out) -> int:
    ids: list[str] = list(args.ids)
    tasks = await client.start_tasks.get_many(ids)
    convs = await client.conversations.get_many(ids)
    poller = client.poller(interval=args.interval)
    for i, t, c in zip(ids, tasks, convs, strict=True):
        if t is not None:
            poller.track_start_task(i)
        elif c is not None:
            poller.track_conversation(i)
        else:
            out.emit({"event": "missing", "id": i}, f"{i}: not found")
    failed = any(t is None and c is None for t, c in zip(tasks, convs, strict=True))
    if poller.tracked:
        async for change in poller.changes():
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
                f"[{out.elapsed():6.2f}s] {change.kind} {change.id}: {change.old} -> {change.new}",
            )
            if change.terminal:
                model = change.model
                if change.missing or (str(change.kind) == "conversation" and not conv_ok(model)):
                    failed = True
                if str(getattr(model, "status", "")) == "ERROR":
                    failed = True
    await poller.aclose()
    return EXIT_FAILED if failed else EXIT_OK


async def cmd_list(client: Any, args: argparse.Namespace, out: Out) -> int:
    async for c in client.conversations.search(title_contains=args.title, limit=args.limit):
        out.emit(
            {
                "id": c.id,
                "title": c.title,
                "status": conv_status(c),
                "repository": c.selected_repository,
                "created_at": c.created_at,
            },
            f"{c.id}  {conv_status(c):<20} {c.title or ''}",
        )
    return EXIT_OK


async def cmd_events(client: Any, args: argparse.Namespace, out: Out) -> int:
    async for e in client.events.search(args.id, kind=args.kind, limit=args.limit):
        out.emit(
            {
                "id": e.id,
                "kind": e.kind,
                "timestamp": e.timestamp,
                "source": e.source,
                "text": e.text,
            },
            f"{e.timestamp}  {e.kind:<20} {e.source or '':<6} {e.text or ''}",
        )
    return EXIT_OK


async def cmd_send(client: Any, args: argparse.Namespace, out: Out) -> int:
    await client.conversations.send_message(args.id, args.message)
    out.emit({"event": "sent", "id": args.id}, f"sent to {args.id}")
    return EXIT_OK
