"""What a person sees: the command in an 80x24 pseudo-terminal, rendered by a terminal
emulator (pyte), and what a pipe gets (plain lines). Against a FakeCloud in this process."""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import json
import os
import pty
import re
import signal
import struct
import sys
import termios
from pathlib import Path

import pyte
import pytest

from openhands_async import OpenHandsClient
from openhands_async.testing import FakeCloud

ROOT = Path(__file__).resolve().parents[1]
COLUMNS, ROWS = 80, 24
ANSI = re.compile(r"\x1b[\[\]()#;?]|\x1b")
# Hides rich, as on an install without the `cli` extra.
NO_RICH = "import sys; sys.modules['rich'] = None; from openhands_async.cli import main; "
NO_RICH += "sys.exit(main())"


def _env(cloud: FakeCloud | None = None) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("OPENHANDS_", "FORCE_COLOR", "NO_COLOR", "TTY_"))
        and k not in ("COLUMNS", "LINES")
    }
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    if cloud is not None:
        env["OPENHANDS_BASE_URL"] = cloud.base_url
        env["OPENHANDS_API_KEY"] = str(cloud.api_key)
    return env


def _argv(args: tuple[str, ...], rich: bool) -> list[str]:
    return [sys.executable, *(("-m", "openhands_async") if rich else ("-c", NO_RICH)), *args]


async def in_terminal(
    cloud: FakeCloud | None, *args: str, rich: bool = True
) -> tuple[int, list[str], bytes]:
    """Run the command in an 80x24 pseudo-terminal; returns its exit code, every line a
    person saw (the scrolled-off ones first) as the emulator rendered them, and the raw
    bytes."""
    master, slave = pty.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLUMNS, 0, 0))
    env = {**_env(cloud), "TERM": "xterm-256color"}
    proc = await asyncio.create_subprocess_exec(
        *_argv(args, rich), stdin=slave, stdout=slave, stderr=slave, env=env
    )
    os.close(slave)

    def read_all() -> bytes:
        chunks = []
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO: the terminal's other side closed (the command ended)
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)

    try:
        raw = await asyncio.wait_for(asyncio.to_thread(read_all), 60)
        code = await asyncio.wait_for(proc.wait(), 30)
    finally:
        os.close(master)
    screen = pyte.HistoryScreen(COLUMNS, ROWS, history=10_000)
    stream = pyte.ByteStream(screen)
    # The terminal turns "\n" into "\r\n" for the program (onlcr); pyte needs it said.
    screen.set_mode(pyte.modes.LNM)
    stream.feed(raw)
    history = ["".join(line[x].data for x in range(COLUMNS)) for line in screen.history.top]
    seen = [line.rstrip() for line in [*history, *screen.display]]
    while seen and not seen[-1]:
        seen.pop()
    return code, seen, raw


async def piped(cloud: FakeCloud | None, *args: str, rich: bool = True) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        *_argv(args, rich),
        env=_env(cloud),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def write_jobs(path: Path, n: int, failing: int = 1) -> Path:
    lines = [
        {"key": f"a-rather-long-job-key-number-{k}", "message": f"job {k}", "repository": "o/r"}
        for k in range(n - failing)
    ]
    lines += [{"key": f"bad-{k}", "message": "no [fake:outcome=error]"} for k in range(failing)]
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


BAR_LINE = re.compile(r"^[━╸╺ ]+ \d+/\d+ done  \d+\.\d/min  \d+:\d\d$")
COUNTS_LINE = re.compile(r"^queued \d+  running \d+  finished \d+  failed \d+(  \w+ \d+)*$")
ROW = re.compile(r"^\S+ +(finished|failed) +[0-9a-f]{32} +\S.*$")


async def test_batch_in_a_terminal_one_display_no_wrapping(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", 6)
    code, seen, raw = await in_terminal(
        cloud, "batch", str(jobs), "--max-running", "2", "--interval", "0.1"
    )
    assert code == 1, seen  # one job fails on purpose
    assert b"\x1b[" in raw  # it did draw live (rich), not plain lines
    # One progress display, each of its two lines whole: a wrapped or redrawn-below
    # display would leave copies or fragments behind.
    bars = [line for line in seen if "done" in line and "/min" in line]
    assert len(bars) == 1, seen
    assert BAR_LINE.match(bars[0]), bars
    assert bars[0].split()[1] == "6/6"  # against the total, known from the file
    counts = [line for line in seen if line.startswith("queued")]
    assert len(counts) == 1, seen
    assert COUNTS_LINE.match(counts[0]), counts
    assert "queued 0" in counts[0]
    assert "finished 5  failed 1" in counts[0]
    # The summary: a header, one whole row per job (keys cut in the middle to fit), totals.
    header = seen.index(next(line for line in seen if line.startswith("key ")))
    rows = seen[header + 1 : header + 7]
    assert all(ROW.match(row) for row in rows), rows
    assert {row.split()[0] for row in rows} >= {"bad-0"}
    assert any("…" in row.split()[0] for row in rows)  # the long keys were cut
    assert seen[header + 7].startswith("finished 5, failed 1, skipped 0 in ")
    assert "None" not in "\n".join(seen)


async def test_demo_in_a_terminal_lines_stay_above_the_display() -> None:
    code, seen, _ = await in_terminal(None, "demo", "--jobs", "4")  # its own FakeCloud
    assert code == 0, seen
    bars = [line for line in seen if "done" in line and "/min" in line]
    assert len(bars) == 1, seen
    assert BAR_LINE.match(bars[0]), bars
    # Result lines are whole lines of their own, never run into the display.
    results = [line for line in seen if re.match(r"^\[ *\d+\.\d\ds\]    (finished|failed) ", line)]
    assert len(results) == 4, seen
    assert all(re.match(r"^\[ *\d+\.\d\ds\] ", line) for line in results)
    assert seen[-1].startswith("[")
    assert "done: batch finished 3, failed 1" in seen[-1]
    assert "None" not in "\n".join(seen)


async def test_batch_without_rich_in_a_terminal_plain_lines(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", 3)
    code, seen, raw = await in_terminal(cloud, "batch", str(jobs), "--interval", "0.1", rich=False)
    assert code == 1, seen
    assert b"\x1b" not in raw
    assert b"\r\r" not in raw
    assert not re.search(rb"\r[^\n]", raw)
    assert any(line.startswith("progress: 3/3 done") for line in seen), seen
    header = seen.index(next(line for line in seen if line.startswith("key ")))
    assert all(ROW.match(row) for row in seen[header + 1 : header + 4]), seen
    assert all(len(line) <= COLUMNS for line in seen)


async def test_batch_piped_plain_lines_no_redraws(cloud: FakeCloud, tmp_path: Path) -> None:
    jobs = write_jobs(tmp_path / "jobs.jsonl", 4)
    code, out, err = await piped(cloud, "batch", str(jobs), "--interval", "0.1")
    assert code == 1, err
    for text in (out, err):
        assert "\r" not in text
        assert "\x1b" not in text
    assert err.splitlines()[-1].startswith("progress: 4/4 done")
    lines = out.splitlines()
    assert lines[0].split() == ["key", "state", "conversation", "status"]
    assert all(ROW.match(row) for row in lines[1:5]), lines
    assert lines[-1].startswith("finished 3, failed 1, skipped 0 in ")
    assert all(len(line) <= COLUMNS for line in lines)  # fits 80 columns in a file too


async def test_list_into_a_closed_pipe_exits_quietly(cloud: FakeCloud) -> None:
    async with OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        await client.conversations.start("Something to list")
    # The reader is gone before the command writes (`| head -1` after its line, made
    # deterministic): every write meets a broken pipe.
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = await asyncio.create_subprocess_exec(
            *_argv(("list",), True),
            env=_env(cloud),
            stdout=write_end,
            stderr=asyncio.subprocess.PIPE,
        )
    finally:
        os.close(write_end)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 141
    assert b"Traceback" not in err
    assert b"BrokenPipeError" not in err
    assert b"Exception ignored" not in err


async def test_list_has_a_header_and_no_none(cloud: FakeCloud) -> None:
    async with OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        await client.conversations.start("Listed without a repository")
    code, out, err = await piped(cloud, "list")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0].split() == ["conversation", "status", "repository", "title"]
    assert len(lines) == 2
    assert "None" not in out
    assert lines[1].split()[2] == "-"  # no repository, said for people


async def test_events_unknown_id_exits_1_naming_it(cloud: FakeCloud) -> None:
    unknown = "0" * 31 + "1"
    code, out, err = await piped(cloud, "events", unknown)
    assert code == 1
    assert unknown in err
    assert out == ""
    code, out, err = await piped(cloud, "events", unknown, "--json")
    assert code == 1
    assert json.loads(out) == {"error": "not_found", "id": unknown}


async def test_events_columns_hold_long_kinds_and_actions_show_text(cloud: FakeCloud) -> None:
    async with OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        task = await client.conversations.start("Look around")
        poller = client.poller(0.05)
        poller.track_start_task(task.id)
        conversation = None
        async for change in poller.changes():
            if change.terminal and change.kind == "conversation":
                conversation = change.id
                break
        await poller.aclose()
    assert conversation is not None
    code, out, err = await piped(cloud, "events", conversation)
    assert code == 0, err
    rows = out.splitlines()[1:]  # after the date
    kinds = {row.split()[1] for row in rows}
    assert {"ConversationStateUpdateEvent", "ActionEvent", "MessageEvent"} <= kinds
    # One column start for every row's source and text, long kinds included.
    assert len({row.index(row.split()[2], 10 + len(row.split()[1])) for row in rows}) == 1
    action = next(row for row in rows if row.split()[1] == "ActionEvent")
    assert "ls -la" in action
    assert "None" not in out


async def test_ctrl_c_on_watch_says_the_agent_keeps_running(cloud: FakeCloud) -> None:
    async with OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        task = await client.conversations.start("Never ends [fake:run_seconds=inf]")
    proc = await asyncio.create_subprocess_exec(
        *_argv(("watch", task.id, "--json"), True),
        env=_env(cloud),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 60))
    assert first["event"] == "change"  # it is watching now
    proc.send_signal(signal.SIGINT)
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode == 130, err.decode()
    text = err.decode()
    assert "keeps running on the server" in text
    assert re.search(r"openhands-async watch [0-9a-f]{32}", text), text
    assert "Traceback" not in text


async def test_plain_http_to_another_host_needs_the_option() -> None:
    # 0.0.0.0 is not a loopback address for the SDK; connecting to it stays on this machine.
    url = "http://0.0.0.0:9"
    code, _, err = await piped(None, "list", "--base-url", url, "--api-key", "k")
    assert code == 2
    assert "--allow-insecure-http" in err
    assert "allow_insecure_http=True" not in err  # a CLI option, not a Python argument
    code, _, err = await piped(
        None, "list", "--base-url", url, "--api-key", "k", "--allow-insecure-http"
    )
    assert code == 4, err  # it tried: nothing listens there


def test_every_option_says_its_default() -> None:
    import argparse

    from openhands_async.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if action.option_strings and action.dest != "help":
                assert "default" in (action.help or ""), (name, action.option_strings)
    epilog = sub.choices["batch"].epilog or ""
    example = [line.strip() for line in epilog.splitlines() if line.strip().startswith("{")]
    assert example
    assert all("message" in json.loads(line) for line in example)


def test_max_running_default_is_the_sdks() -> None:
    from openhands_async._constants import DEFAULT_MAX_RUNNING
    from openhands_async.cli import build_parser

    args = build_parser().parse_args(["batch", "jobs.jsonl"])
    assert args.max_running == DEFAULT_MAX_RUNNING


@pytest.mark.parametrize(("items", "expect_cap"), [(1, True), (10, True), (11, False)])
def test_a_few_items_are_polled_promptly(items: int, expect_cap: bool) -> None:
    from openhands_async.cli._commands import _poller

    class Client:
        def poller(self, interval: float, **kwargs: float) -> dict[str, float]:
            return {"interval": interval, **kwargs}

    made = _poller(Client(), items, None)
    if expect_cap:
        assert made["max_interval"] <= 2.0
        assert made["interval"] <= 1.0
    else:
        assert "max_interval" not in made


@pytest.mark.parametrize(
    "command", [[], ["start"], ["watch"], ["batch"], ["list"], ["events"], ["send"], ["demo"]]
)
def test_help_fits_80_columns(command: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from openhands_async.cli import build_parser

    monkeypatch.setenv("COLUMNS", "80")  # argparse wraps its own text to $COLUMNS
    parser = build_parser()
    if command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[command[0]]
    text = parser.format_help()
    assert all(len(line) <= COLUMNS for line in text.splitlines()), text
