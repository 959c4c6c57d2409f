"""The command line: options, help texts, exit codes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._constants import DEFAULT_BASE_URL, ENV_API_KEY, ENV_BASE_URL
from ..batch import DEFAULT_MAX_RUNNING

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_NETWORK = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it

DESCRIPTION = """\
Start, follow and batch OpenHands Cloud conversations.
Try it without an account: openhands-async demo"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> Any:  # exit 2, as argparse does
        self.print_usage(sys.stderr)
        print(f"{self.prog}: error: {message}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _common() -> _Parser:
    # SUPPRESS: an option given before the command is not reset by the command's parser.
    common = _Parser(add_help=False)
    common.add_argument(
        "--json", action="store_true", default=argparse.SUPPRESS, help="one JSON object per line"
    )
    common.add_argument(
        "--base-url",
        default=argparse.SUPPRESS,
        help=f"server (default: ${ENV_BASE_URL} or {DEFAULT_BASE_URL})",
    )
    common.add_argument(
        "--api-key", default=argparse.SUPPRESS, help=f"API key (default: ${ENV_API_KEY})"
    )
    common.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log requests on stderr",
    )
    return common


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(
        prog="openhands-async",
        description=DESCRIPTION,
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
    p.add_argument("--max-running", type=int, default=DEFAULT_MAX_RUNNING)
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
