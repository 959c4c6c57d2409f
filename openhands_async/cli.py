"""The `openhands-async` command: start, watch, batch, list, events, send, and a demo that
runs against an embedded FakeCloud (no account needed)."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO
from urllib.parse import urlsplit

from . import errors as _errors

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_NETWORK = 0, 1, 2, 3, 4
DEFAULT_BASE_URL = "https://app.all-hands.dev"
NO_KEY_HINT = (
    "No API key. Create one in OpenHands Cloud: Settings -> API keys, then\n"
    "  export OPENHANDS_API_KEY=<your key>\n"
    "(or pass --api-key). To see everything work without an account, run:\n"
    "  openhands-async demo"
)


class _Out:
    """Human lines or, with --json, one JSON object per line."""

    def __init__(self, as_json: bool, stream: TextIO | None = None) -> None:
        self.json = as_json
        self.stream = stream or sys.stdout
        self.t0 = time.monotonic()

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def emit(self, obj: dict[str, Any], text: str) -> None:
        if self.json:
            print(json.dumps(obj, default=str), file=self.stream, flush=True)
        else:
            print(text, file=self.stream, flush=True)


def _is_loopback(base_url: str) -> bool:
    host = urlsplit(base_url).hostname or ""
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


def _conv_ok(conv: Any) -> bool:
    return conv is not None and str(conv.execution_status or "").lower() == "finished"


def _conv_status(conv: Any) -> str:
    if conv is None:
        return "MISSING"
    s = str(conv.sandbox_status)
    return f"{s}/{conv.execution_status}" if conv.execution_status is not None else s


# ---------------------------------------------------------------------------- commands


async def _cmd_start(client: Any, args: argparse.Namespace, out: _Out) -> int:
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
    ok = _conv_ok(final)
    out.emit(
        {
            "event": "outcome",
            "id": cid,
            "status": _conv_status(final),
            "ok": ok,
            "last_agent_message": message,
        },
        f"outcome: {_conv_status(final)}\nagent: {message}",
    )
    return EXIT_OK if ok else EXIT_FAILED


async def _cmd_watch(client: Any, args: argparse.Namespace, out: _Out) -> int:
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
                if change.missing or (str(change.kind) == "conversation" and not _conv_ok(model)):
                    failed = True
                if str(getattr(model, "status", "")) == "ERROR":
                    failed = True
    await poller.aclose()
    return EXIT_FAILED if failed else EXIT_OK


def _read_jobs(path: str) -> Iterator[dict[str, Any]]:
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if line.strip():
                obj = json.loads(line)
                if not isinstance(obj, dict):
                    raise ValueError(f"{path}:{n}: a job must be a JSON object")
                yield obj


def _result_dict(r: Any) -> dict[str, Any]:
    return {
        "key": r.job.key,
        "job": r.job.to_dict(),
        "state": r.state,
        "conversation_id": r.conversation_id,
        "sandbox_status": r.sandbox_status,
        "execution_status": r.execution_status,
        "error": r.error,
        "duration": None if r.duration is None else round(r.duration, 3),
    }


class _Progress:
    def __init__(self, out: _Out, stream: TextIO) -> None:
        self.out, self.stream = out, stream
        self.tty = stream.isatty() and not out.json
        self.last = 0.0

    def __call__(self, p: Any, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self.last < (0.1 if self.tty else 2.0):
            return
        self.last = now
        done = p.finished + p.failed
        rate = done / max(now - self.out.t0, 1e-6)
        total = done + p.queued + p.starting + p.running + p.paused
        if self.out.json:
            return
        width = 20
        # Before the first job is known the bar is empty, not full.
        fill = width * done // total if total else (width if final else 0)
        bar = "#" * fill + "-" * (width - fill)
        line = (
            f"[{bar}] queued {p.queued} starting {p.starting} running {p.running} "
            + (f"paused {p.paused} " if p.paused else "")
            + f"finished {p.finished} failed {p.failed} skipped {p.skipped} "
            f"{rate * 60:.1f}/min"
        )
        if self.tty:
            self.stream.write("\r" + line + ("\n" if final else ""))
        else:
            self.stream.write(line + "\n")
        self.stream.flush()


def _open_out(path: str | None) -> TextIO | None:
    return open(path, "w", encoding="utf-8") if path else None


async def _cmd_batch(client: Any, args: argparse.Namespace, out: _Out) -> int:
    progress = _Progress(out, sys.stderr)
    results = []
    scratch = tempfile.TemporaryDirectory(prefix="openhands-async-")
    journal = args.journal or os.path.join(scratch.name, "journal.db")  # not ":memory:" (its
    # lock file would land in the working directory)
    run = client.run_batch(
        _read_jobs(args.jobs),
        max_running=args.max_running,
        journal=journal,
        poll_interval=args.interval,
        on_progress=progress,
    )
    outf = _open_out(args.out)
    try:
        async with run:
            async for r in run:
                results.append(r)
                d = _result_dict(r)
                if outf is not None:
                    outf.write(json.dumps(d, default=str) + "\n")
                    outf.flush()
                if out.json:
                    out.emit({"event": "result", **d}, "")
                progress(run.progress)
    finally:
        if outf is not None:
            outf.close()
        scratch.cleanup()
    progress(run.progress, final=True)
    p = run.progress
    summary = {
        "event": "summary",
        "finished": p.finished,
        "failed": p.failed,
        "skipped": p.skipped,
        "results": len(results),
        "elapsed": round(out.elapsed(), 3),
    }
    lines = [f"{'key':<26} {'state':<9} {'conversation':<34} status"]
    for r in results:
        lines.append(
            f"{r.job.key[:26]:<26} {r.state:<9} {r.conversation_id!s:<34} "
            f"{r.error or f'{r.sandbox_status}/{r.execution_status}'}"
        )
    lines.append(
        f"finished {p.finished}, failed {p.failed}, skipped {p.skipped} in {out.elapsed():.1f}s"
    )
    out.emit(summary, "\n".join(lines))
    return EXIT_FAILED if any(not r.ok for r in results) else EXIT_OK


async def _cmd_list(client: Any, args: argparse.Namespace, out: _Out) -> int:
    async for c in client.conversations.search(title_contains=args.title, limit=args.limit):
        out.emit(
            {
                "id": c.id,
                "title": c.title,
                "status": _conv_status(c),
                "repository": c.selected_repository,
                "created_at": c.created_at,
            },
            f"{c.id}  {_conv_status(c):<20} {c.title or ''}",
        )
    return EXIT_OK


async def _cmd_events(client: Any, args: argparse.Namespace, out: _Out) -> int:
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


async def _cmd_send(client: Any, args: argparse.Namespace, out: _Out) -> int:
    await client.conversations.send_message(args.id, args.message)
    out.emit({"event": "sent", "id": args.id}, f"sent to {args.id}")
    return EXIT_OK


async def _cmd_demo(args: argparse.Namespace, out: _Out) -> int:
    from . import OpenHandsClient
    from .testing import FakeCloud

    def say(text: str, **obj: Any) -> None:
        out.emit(
            {"elapsed": round(out.elapsed(), 3), **obj, "text": text},
            f"[{out.elapsed():6.2f}s] {text}",
        )

    async with (
        FakeCloud(time_scale=0.2) as cloud,
        OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client,
    ):
        say(f"FakeCloud serving on {cloud.base_url} (no account needed)", step="fakecloud")
        say("1) streaming start: every status as the server writes it", step="stream_start")
        cid = None
        async for task in client.conversations.stream_start(
            "Demo: fix the README", repository="demo/repo"
        ):
            say(f"   start task {task.status}", step="stream_start", status=str(task.status))
            cid = task.app_conversation_id or cid
        say(f"   conversation {cid}", step="stream_start", conversation_id=cid)
        say("2) the poller: one batch read per cycle for every tracked item", step="poller")
        poller = client.poller(interval=0.2)
        assert cid is not None
        poller.track_conversation(cid)
        async for change in poller.changes():
            say(f"   {change.id[:8]} {change.old} -> {change.new}", step="poller", new=change.new)
            if change.terminal:
                break
        await poller.aclose()
        say(f"   agent said: {await client.events.last_agent_message(cid)}", step="poller")
        say(f"3) the batch runner: {args.jobs} jobs, at most 2 running", step="batch")
        jobs = [
            {"message": f"Demo job {n}", "repository": "demo/repo"} for n in range(args.jobs - 1)
        ]
        jobs.append({"message": "Demo job that fails [fake:outcome=error]"})
        progress = _Progress(out, sys.stdout)
        scratch = tempfile.TemporaryDirectory(prefix="openhands-async-demo-")
        run = client.run_batch(
            jobs,
            max_running=2,
            poll_interval=0.2,
            on_progress=progress,
            journal=os.path.join(scratch.name, "journal.db"),
        )
        async with run:
            async for r in run:
                say(
                    f"   {r.state:<8} {r.conversation_id} {r.execution_status}",
                    step="batch",
                    state=r.state,
                )
        scratch.cleanup()
        progress(run.progress, final=True)
        p = run.progress
        say(
            f"done: batch finished {p.finished}, failed {p.failed} (one fails on purpose); "
            f"{sum(cloud.requests.values())} requests",
            step="done",
        )
    return EXIT_OK


# ---------------------------------------------------------------------------- plumbing


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2, as argparse does
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def build_parser() -> argparse.ArgumentParser:
    common = _Parser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per line"
    )
    common.add_argument(
        "--base-url",
        default=argparse.SUPPRESS,
        help="server (default: $OPENHANDS_BASE_URL or OpenHands Cloud)",
    )
    common.add_argument(
        "--api-key", default=argparse.SUPPRESS, help="API key (default: $OPENHANDS_API_KEY)"
    )
    common.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log requests on stderr",
    )
    parser = _Parser(
        prog="openhands-async",
        description=__doc__,
        parents=[common],
        epilog="exit codes: 0 ok, 1 a conversation failed, 2 usage, 3 auth, 4 network",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    p = sub.add_parser("start", parents=[common], help="start a conversation, streaming its start")
    p.add_argument("message")
    p.add_argument("--repo")
    p.add_argument("--branch")
    p.add_argument("--model")
    p.add_argument("--wait", action="store_true", help="follow it to the end")
    p.add_argument("--interval", type=float, default=2.0, help=argparse.SUPPRESS)
    p = sub.add_parser("watch", parents=[common], help="follow conversations or start tasks")
    p.add_argument("ids", nargs="+", metavar="ID")
    p.add_argument("--interval", type=float, default=2.0)
    p = sub.add_parser("batch", parents=[common], help="run jobs from a JSONL file")
    p.add_argument("jobs", metavar="JOBS.jsonl")
    p.add_argument("--max-running", type=int, default=10)
    p.add_argument("--journal", help="SQLite journal: re-run to resume")
    p.add_argument("--out", metavar="RESULTS.jsonl")
    p.add_argument("--interval", type=float, default=5.0, help="poll interval")
    p = sub.add_parser("list", parents=[common], help="search conversations")
    p.add_argument("--title")
    p.add_argument("--limit", type=int, default=20)
    p = sub.add_parser("events", parents=[common], help="a conversation's events")
    p.add_argument("id")
    p.add_argument("--kind")
    p.add_argument("--limit", type=int, default=None)
    p = sub.add_parser("send", parents=[common], help="send a follow-up message")
    p.add_argument("id")
    p.add_argument("message")
    p = sub.add_parser("demo", parents=[common], help="everything, against an embedded FakeCloud")
    p.add_argument("--jobs", type=int, default=5)
    return parser


_COMMANDS = {
    "start": _cmd_start,
    "watch": _cmd_watch,
    "batch": _cmd_batch,
    "list": _cmd_list,
    "events": _cmd_events,
    "send": _cmd_send,
}


async def _run(args: argparse.Namespace, out: _Out) -> int:
    if args.command == "demo":
        return await _cmd_demo(args, out)
    from . import OpenHandsClient

    base_url = (
        getattr(args, "base_url", None) or os.environ.get("OPENHANDS_BASE_URL") or DEFAULT_BASE_URL
    )
    api_key = getattr(args, "api_key", None) or os.environ.get("OPENHANDS_API_KEY")
    if not api_key and not _is_loopback(base_url):
        print(NO_KEY_HINT, file=sys.stderr)
        if out.json:
            out.emit({"error": "auth", "detail": "no API key"}, "")
        return EXIT_AUTH
    async with OpenHandsClient(api_key=api_key, base_url=base_url) as client:
        return await _COMMANDS[args.command](client, args, out)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "jobs", None) and args.command == "batch" and not os.path.exists(args.jobs):
        print(f"openhands-async: error: no such file: {args.jobs}", file=sys.stderr)
        return EXIT_USAGE
    out = _Out(bool(getattr(args, "json", False)))
    if getattr(args, "verbose", False):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger = logging.getLogger("openhands_async")
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        return asyncio.run(_run(args, out))
    except _UsageError as exc:
        print(f"openhands-async: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"openhands-async: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except _errors.OpenHandsError as exc:
        if isinstance(exc, _errors.AuthenticationError):
            code, kind = EXIT_AUTH, "auth"
        elif isinstance(exc, _errors.APIConnectionError):
            code, kind = EXIT_NETWORK, "network"
        else:
            code, kind = EXIT_FAILED, type(exc).__name__
        if out.json:
            out.emit({"error": kind, "detail": str(exc)}, "")
        print(f"openhands-async: {type(exc).__name__}: {exc}", file=sys.stderr)
        if code == EXIT_AUTH:
            print("Check your API key (OpenHands Cloud settings -> API keys).", file=sys.stderr)
        return code


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
