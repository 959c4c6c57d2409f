"""The command line: options, help texts, exit codes."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .._constants import (
    DEFAULT_ASK_TIMEOUT,
    DEFAULT_BASE_URL,
    DEFAULT_MAX_RUNNING,
    ENV_API_KEY,
    ENV_BASE_URL,
)

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_AUTH, EXIT_NETWORK = 0, 1, 2, 3, 4
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report it
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away (`| head`)

# Polling for a person watching a few items: promptly (a run is seen ending within ~2 s);
# the poller reads every tracked item in one request per cycle, so this costs little.
FEW_ITEMS = 10
FEW_INTERVAL = 1.0
FEW_MAX_INTERVAL = 2.0
MANY_INTERVAL = 5.0
BATCH_INTERVAL = 5.0

BATCH_EPILOG = """\
JOBS.jsonl: one job per line, a JSON object with "message" and any start
argument ("repository", "branch", "llm_model", ...); "key" names the job in
the journal (default: a hash of the job). For example:

  {"key": "readme", "message": "Fix the README typos", "repository": "octo/app"}
  {"message": "Add a test", "repository": "octo/app", "branch": "dev"}

A bad line fails as its own job ("jobs.jsonl:7: ...") and the batch goes on.
After a crash or Ctrl-C, run the same command with the same --journal: finished
jobs are skipped, started ones followed, none started twice.

Several workers, one batch: on each, --journal postgresql://user@host:5432/db
--batch-name NAME (extra openhands-async[postgres]); --max-running holds per
account across them. `openhands-async batch status --journal postgresql://...
--batch-name NAME` shows the batch per state and per worker."""

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
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="one JSON object per line, for programs (default: lines for people)",
    )
    common.add_argument(
        "--base-url",
        default=argparse.SUPPRESS,
        metavar="URL",
        help=f"the server (default: ${ENV_BASE_URL}, else {DEFAULT_BASE_URL})",
    )
    common.add_argument(
        "--api-key",
        default=argparse.SUPPRESS,
        metavar="KEY",
        help=f"your API key (default: ${ENV_API_KEY})",
    )
    common.add_argument(
        "--allow-insecure-http",
        action="store_true",
        default=argparse.SUPPRESS,
        help="allow a plain http:// server that is not on this machine: your key travels "
        "unencrypted (default: refused)",
    )
    common.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=argparse.SUPPRESS,
        help="log each request on stderr, without the key (default: off)",
    )
    return common


def _interval(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--interval",
        type=float,
        default=None,
        metavar="SECONDS",
        help=f"seconds between status reads (default: {FEW_INTERVAL:g} for up to "
        f"{FEW_ITEMS} items, read again at most {FEW_MAX_INTERVAL:g} s apart; "
        f"{MANY_INTERVAL:g} beyond)",
    )


def _add(sub: Any, name: str, common: _Parser, summary: str, **kwargs: Any) -> _Parser:
    parser: _Parser = sub.add_parser(
        name,
        parents=[common],
        help=summary,
        description=kwargs.pop("description", summary),
        formatter_class=argparse.RawDescriptionHelpFormatter,
        **kwargs,
    )
    return parser


def build_parser() -> argparse.ArgumentParser:
    common = _common()
    parser = _Parser(
        prog="openhands-async",
        description=DESCRIPTION,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="exit codes: 0 ok, 1 a conversation failed or was not found, 2 usage,\n"
        "3 auth, 4 network, 130 interrupted, 141 output closed (e.g. | head)\n\n"
        "'openhands-async COMMAND --help' shows a command's options.",
    )
    sub = parser.add_subparsers(
        dest="command", metavar="COMMAND", required=True, parser_class=_Parser
    )

    p = _add(sub, "start", common, "start a conversation, showing each step of its start")
    p.add_argument("message", help="what the agent should do")
    p.add_argument(
        "--repo", metavar="OWNER/REPO", help="repository to work on, or its URL (default: none)"
    )
    p.add_argument("--branch", help="branch to check out (default: the repository's default)")
    p.add_argument("--model", metavar="LLM", help="LLM model (default: your account's setting)")
    p.add_argument(
        "--wait",
        action="store_true",
        help="follow the conversation to its end and print the agent's reply (default: "
        "return once it started)",
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="then print the agent's events live, one line each, to its outcome (default: "
        "return once it started)",
    )
    _interval(p)

    p = _add(
        sub,
        "watch",
        common,
        "follow conversations or start tasks until they end",
        epilog="Ctrl-C stops watching; the agents keep running on the server.",
    )
    p.add_argument("ids", nargs="+", metavar="ID", help="conversation or start task ids")
    _interval(p)

    p = _add(
        sub,
        "batch",
        common,
        "run many jobs from a JSONL file, a few at a time",
        epilog=BATCH_EPILOG,
    )
    p.add_argument("jobs", metavar="JOBS.jsonl", help="one job per line (see below), or `status`")
    p.add_argument(
        "--max-running",
        type=int,
        default=DEFAULT_MAX_RUNNING,
        metavar="N",
        help=f"conversations running at once (default: {DEFAULT_MAX_RUNNING})",
    )
    p.add_argument(
        "--journal",
        metavar="FILE",
        help="SQLite journal of every job: run again with it to resume; or a "
        "postgresql:// DSN shared by several workers (default: none, a temporary one)",
    )
    p.add_argument(
        "--batch-name",
        metavar="NAME",
        help="the shared batch to join or show, with a postgresql:// --journal (default: none)",
    )
    p.add_argument(
        "--out",
        metavar="RESULTS.jsonl",
        help="write the whole batch's results to this file, one JSON line per job, "
        "rewritten complete at the end of each run (default: none)",
    )
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="start jobs that failed in an earlier run again, with a fresh conversation "
        "(default: leave them alone)",
    )
    p.add_argument(
        "--watch-ends",
        action="store_true",
        help="also follow each running job's events on its agent server, so that a job's "
        "end is read at once and its slot refilled (default: found by the reads every "
        "--interval)",
    )
    p.add_argument(
        "--check",
        action="store_true",
        help="check every line of JOBS.jsonl, then each llm_model and repository "
        "against the server (one it cannot check only warns); start nothing "
        "(default: check and run)",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=BATCH_INTERVAL,
        metavar="SECONDS",
        help=f"seconds between status reads (default: {BATCH_INTERVAL:g})",
    )

    p = _add(sub, "secrets", common, "list, set or delete your custom secrets")
    acts = p.add_subparsers(dest="action", required=True, parser_class=_Parser)
    _add(acts, "list", common, "names and descriptions (values are never shown)")
    q = _add(
        acts,
        "set",
        common,
        "create a secret or replace its value",
        epilog="The value is read from --from-env VAR, else from stdin, else a prompt: "
        "never from the command line.",
    )
    q.add_argument("name", help="the secret's name (the agents see it as this env variable)")
    q.add_argument("--description", help="what it is for (default: none)")
    q.add_argument(
        "--from-env",
        metavar="VAR",
        help="read the value from this env variable (default: stdin, else a prompt)",
    )
    q = _add(acts, "delete", common, "delete a secret")
    q.add_argument("name", help="the secret's name")

    p = _add(sub, "models", common, "list the LLM models the server offers")
    p.add_argument("query", nargs="?", help="only names containing this (default: all)")
    p.add_argument("--provider", help="only this provider's models (default: all)")
    p.add_argument("--verified", action="store_true", help="only verified models (default: all)")

    p = _add(sub, "list", common, "list your conversations")
    p.add_argument("--title", metavar="TEXT", help="only titles containing TEXT (default: all)")
    p.add_argument(
        "--limit", type=int, default=20, metavar="N", help="at most N conversations (default: 20)"
    )

    p = _add(sub, "events", common, "show a conversation's events, oldest first")
    p.add_argument("id", help="conversation id")
    p.add_argument(
        "--kind",
        metavar="KIND",
        help="only events of this kind, e.g. MessageEvent, ActionEvent (default: all)",
    )
    p.add_argument(
        "--limit", type=int, default=None, metavar="N", help="at most N events (default: all)"
    )
    p.add_argument(
        "--follow",
        action="store_true",
        help="print the events live as the agent emits them, to its outcome (default: "
        "list those stored so far)",
    )

    p = _add(sub, "send", common, "send a follow-up message to a conversation")
    p.add_argument("id", help="conversation id")
    p.add_argument("message", help="the message")
    p.add_argument(
        "--wait",
        action="store_true",
        help="wait for the agent's reply to this message and print it (default: return once sent)",
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_ASK_TIMEOUT,
        metavar="SECONDS",
        help=f"with --wait, give up after this long (default: {DEFAULT_ASK_TIMEOUT:g})",
    )
    p.add_argument(
        "--interval",
        type=float,
        default=FEW_INTERVAL,
        metavar="SECONDS",
        help=f"with --wait, seconds between reads of the events (default: {FEW_INTERVAL:g})",
    )

    p = _add(
        sub,
        "demo",
        common,
        "see everything work against an embedded fake server (no account needed)",
    )
    p.add_argument(
        "--jobs", type=int, default=5, metavar="N", help="jobs in the demo batch (default: 5)"
    )
    return parser
