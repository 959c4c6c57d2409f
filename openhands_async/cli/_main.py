"""Running a command: the client, logging, and errors mapped to exit codes and messages."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any

from .. import errors as _errors
from .._constants import ENV_API_KEY, ENV_SESSION_API_KEY
from ._account import cmd_models, cmd_secrets
from ._batch import cmd_batch, cmd_check, cmd_check_server
from ._commands import cmd_events, cmd_list, cmd_send, cmd_start, cmd_watch
from ._demo import cmd_demo
from ._display import Out
from ._parser import (
    EXIT_AUTH,
    EXIT_BROKEN_PIPE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_NETWORK,
    EXIT_OK,
    EXIT_USAGE,
    build_parser,
)

NO_KEY_HINT = (
    "No API key. Create one in OpenHands Cloud: Settings -> API keys, then\n"
    f"  export {ENV_API_KEY}=<your key>\n"
    "(or pass --api-key). To see everything work without an account, run:\n"
    "  openhands-async demo"
)

_COMMANDS: dict[str, Callable[[Any, argparse.Namespace, Out], Awaitable[int]]] = {
    "start": cmd_start,
    "watch": cmd_watch,
    "batch": cmd_batch,
    "list": cmd_list,
    "events": cmd_events,
    "send": cmd_send,
    "secrets": cmd_secrets,
    "models": cmd_models,
}


def _has_key(args: argparse.Namespace) -> bool:
    return bool(
        getattr(args, "api_key", None)
        or os.environ.get(ENV_API_KEY)
        or os.environ.get(ENV_SESSION_API_KEY)
    )


async def _run(args: argparse.Namespace, out: Out) -> int:
    if args.command == "demo":
        return await cmd_demo(args, out)
    if args.command == "batch" and args.check:
        code = cmd_check(args, out)  # the file alone first: no server, no key
        if code != EXIT_OK:
            return code
    from .. import OpenHandsClient

    # The client resolves the base URL and key from the environment and decides, with the
    # SDK's own loopback rule, whether a request without a key may be sent at all.
    insecure = bool(getattr(args, "allow_insecure_http", False))
    try:
        client = OpenHandsClient(
            api_key=getattr(args, "api_key", None),
            base_url=getattr(args, "base_url", None),
            allow_insecure_http=insecure,
        )
    except ValueError as exc:
        if "http://" in str(exc) and not insecure:
            raise ValueError(
                "refusing plain http:// to a host that is not this machine: your API key "
                "would travel unencrypted. Use https://, or pass --allow-insecure-http if "
                "you must."
            ) from None
        raise
    async with client:
        if args.command == "batch" and args.check:
            # Then what only the server can tell: models and repositories it knows.
            return await cmd_check_server(client, args, out)
        return await _COMMANDS[args.command](client, args, out)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to the current sys.stderr: a live display redirects it to print above."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stderr
        super().emit(record)


def _log_requests() -> None:
    handler = _StderrHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logger = logging.getLogger("openhands_async")
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)


def run_interruptibly(main: Coroutine[Any, Any, int]) -> int:
    """`asyncio.run(main)`, with a first Ctrl-C cancelling `main` on every Python.

    Python 3.11's asyncio.run cancels the main task and raises KeyboardInterrupt once it has
    unwound, so `finally` blocks and the batch's counts run (a `main` that swallows the
    cancellation returns its code). 3.10's lets KeyboardInterrupt out wherever the
    interpreter happens to be, even inside asyncio's own bookkeeping, leaving a task
    half-stepped and a traceback on stderr. A second Ctrl-C interrupts at once, as 3.11's.
    """
    if sys.version_info >= (3, 11):
        return asyncio.run(main)
    return asyncio.run(_cancelled_by_ctrl_c(main))


async def _cancelled_by_ctrl_c(main: Coroutine[Any, Any, int]) -> int:
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    interrupted = False

    def interrupt() -> None:
        nonlocal interrupted
        interrupted = True
        loop.remove_signal_handler(signal.SIGINT)  # Python's own handler for a second one
        task.cancel()

    try:
        loop.add_signal_handler(signal.SIGINT, interrupt)
    except (NotImplementedError, RuntimeError):  # Windows' loops; not the main thread
        return await main
    try:
        return await main
    except asyncio.CancelledError:
        if interrupted:
            raise KeyboardInterrupt from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGINT)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for a resume command
    if (
        getattr(args, "jobs", None)
        and args.command == "batch"
        and not os.path.exists(args.jobs)
        and args.jobs != "status"
    ):
        print(f"openhands-async: error: no such file: {args.jobs}", file=sys.stderr)
        return EXIT_USAGE
    out = Out(bool(getattr(args, "json", False)))
    if getattr(args, "verbose", False):
        _log_requests()
    try:
        return run_interruptibly(_run(args, out))
    except (ValueError, json.JSONDecodeError) as exc:
        print(f"openhands-async: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        if out.interrupt_hint:
            print(f"\n{out.interrupt_hint}", file=sys.stderr)
        elif out.following:
            print(
                "\nStopped following. The agent keeps running on the server. To follow it "
                f"again:\n  openhands-async watch {' '.join(out.following)}",
                file=sys.stderr,
            )
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (`| head -1`): stop quietly. Point stdout at devnull so
        # the interpreter's last flush at exit does not fail again.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_BROKEN_PIPE
    except _errors.OpenHandsError as exc:
        if isinstance(exc, _errors.AuthenticationError):
            code, kind = EXIT_AUTH, "auth"
        elif isinstance(exc, _errors.APIConnectionError):
            code, kind = EXIT_NETWORK, "network"
        else:
            code, kind = EXIT_FAILED, type(exc).__name__
        if out.json:
            out.emit({"error": kind, "detail": str(exc)}, "")
        if code == EXIT_AUTH and not _has_key(args):
            print(NO_KEY_HINT, file=sys.stderr)
            return code
        print(f"openhands-async: {type(exc).__name__}: {exc}", file=sys.stderr)
        if code == EXIT_AUTH:
            print("Check your API key (OpenHands Cloud settings -> API keys).", file=sys.stderr)
        return code
