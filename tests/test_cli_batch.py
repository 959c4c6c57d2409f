"""`openhands-async batch` a user can trust (issue 15, the command's side): bad lines fail
with their file:line and the batch goes on, `--check`, a 401 exits 3 and a re-run finishes
every job once, `--out` lists the whole batch after a resume, `--retry-failed`, counts
that add up after a SIGKILL, Ctrl-C saying how to resume. The command runs as a
subprocess against a FakeCloud in this process (loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import sqlite3
import sys
import uuid
from pathlib import Path
from typing import Any

from openhands_async.testing import FakeCloud, Fault

from .conftest import eventually
from .test_cli import _env, auth, lines, run
from .test_cli_terminal import _env as env_for
from .test_cli_terminal import piped


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text(
        "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows),
        encoding="utf-8",
    )
    return path


def sent_ids(cloud: FakeCloud) -> list[str]:
    """The conversation id of every start the server took."""
    return [
        uuid.UUID(t.request["conversation_id"]).hex
        for t in cloud._store.tasks.values()
        if t.request.get("conversation_id")
    ]


def good(n: int, **extra: Any) -> list[dict[str, Any]]:
    return [{"key": f"k{i}", "message": f"job {i}", **extra} for i in range(n)]


def batch_argv(jobs: Path, *more: str) -> list[str]:
    return ["batch", str(jobs), "--interval", "0.05", *more]


def summary_of(stdout: str) -> dict[str, Any]:
    objs = lines(stdout)
    assert objs, stdout
    assert objs[-1]["event"] == "summary", objs
    return objs[-1]


# -- bad lines, duplicates, --check -----------------------------------------------------------

MIXED = [
    {"key": "A", "message": "first"},  # 1
    {"key": "D", "message": "the job D"},  # 2
    {"key": "nomsg", "repository": "o/r"},  # 3: no message
    {"key": "B", "message": "second", "bogus_field": 1},  # 4: unknown field
    '{"key": "C", "message": "broken',  # 5: not JSON
    {"key": "E", "message": "third"},  # 6
    {"key": "D", "message": "other content"},  # 7: duplicate key, other content
    {"key": "A", "message": "first"},  # 8: the same job again
    {"key": "F", "message": "fourth"},  # 9
]


async def test_bad_lines_fail_with_file_line_and_the_batch_goes_on(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", MIXED)
    code, out, err = await run(*batch_argv(jobs), *auth(cloud))
    assert code == 1, err  # the batch has failures
    assert "Traceback" not in err
    results = [o for o in lines(out) if o.get("event") == "result"]
    by_source = {r["source"]: r for r in results}
    assert len(results) == len(MIXED) == len(by_source)  # every line reported, once
    assert {by_source[f"{jobs}:{n}"]["state"] for n in (1, 2, 6, 9)} == {"finished"}
    assert "message" in by_source[f"{jobs}:3"]["error"]
    assert "bogus_field" in by_source[f"{jobs}:4"]["error"]
    assert "JSON" in by_source[f"{jobs}:5"]["error"]
    assert by_source[f"{jobs}:7"]["error"] == "duplicate key 'D' (first on line 2)"
    assert by_source[f"{jobs}:8"]["state"] == "skipped"
    assert "line 1" in by_source[f"{jobs}:8"]["reason"]
    assert cloud.starts_received == 4  # the good ones, each once
    ids = sent_ids(cloud)
    assert len(ids) == len(set(ids))
    summary = summary_of(out)
    assert (summary["finished"], summary["failed"], summary["skipped"]) == (4, 4, 1)


async def test_bad_lines_are_said_with_file_line_for_people(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", MIXED)
    argv = batch_argv(jobs, "--base-url", cloud.base_url, "--api-key", str(cloud.api_key))
    code, out, err = await run(*argv)
    assert code == 1, err
    assert f"{jobs}:7: duplicate key 'D' (first on line 2)" in out.splitlines()
    for n in (3, 4, 5):
        assert any(line.startswith(f"{jobs}:{n}: ") for line in out.splitlines()), out
    assert "Traceback" not in err


async def test_check_prints_every_bad_line_and_starts_nothing(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", MIXED)
    # No key, no server: checking needs neither.
    code, out, err = await run("batch", str(jobs), "--check", "--base-url", "https://x.invalid")
    assert code == 1, err
    bad = [line for line in out.splitlines() if line.startswith(f"{jobs}:")]
    assert [line.split(":")[1] for line in bad] == ["3", "4", "5", "7"]
    assert f"{jobs}:7: duplicate key 'D' (first on line 2)" in bad
    assert "nothing was started" in out
    assert cloud.starts_received == 0

    fine = write_jsonl(tmp_path / "fine.jsonl", good(3))
    code, out, err = await run("batch", str(fine), "--check")
    assert code == 0, err
    assert "3 jobs" in out
    code, out, _ = await run("batch", str(jobs), "--check", "--json")
    assert code == 1
    assert [o["source"] for o in lines(out) if o["event"] == "invalid"] == [
        f"{jobs}:{n}" for n in (3, 4, 5, 7)
    ]


# -- 401 stops the batch ----------------------------------------------------------------------


async def test_a_401_on_the_first_starts_exits_3_and_a_rerun_finishes_all_once(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", good(7))
    journal = tmp_path / "j.db"
    argv = batch_argv(jobs, "--journal", str(journal), "--max-running", "3")
    cloud.add_fault(Fault(route="start", status=401, times=None))
    code, out, err = await run(*argv, *auth(cloud))
    assert code == 3, err
    assert cloud.requests["start"] <= 3  # the first wave only
    assert cloud.starts_received == 0
    assert "Traceback" not in err
    assert "--journal" in err  # how to go on once the key is right
    assert str(cloud.api_key) not in out + err  # the resume command leaves the key out
    assert lines(out)[-1]["error"] == "auth"
    stopped = summary_of(out.rsplit("\n", 2)[0])
    assert stopped["batch"]["pending"] + stopped["not_read"] == 7  # none failed or started
    assert stopped["batch"]["failed"] == 0

    cloud.clear_faults()
    code, out, err = await run(*argv, *auth(cloud))
    assert code == 0, err
    summary = summary_of(out)
    assert summary["finished"] == 7
    assert summary["batch"]["finished"] == summary["batch"]["total"] == 7
    ids = sent_ids(cloud)
    assert len(ids) == len(set(ids)) == cloud.starts_received == 7


async def test_a_403_exits_3_too(cloud: FakeCloud, tmp_path: Path) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", good(2))
    cloud.add_fault(Fault(route="start", status=403, times=None))
    code, _, err = await run(*batch_argv(jobs), *auth(cloud))
    assert code == 3, err
    assert "PermissionDenied" in err
    assert "Traceback" not in err


# -- resume: --out, counts, SIGKILL -----------------------------------------------------------


async def test_sigkill_then_rerun_with_out_lists_every_job_once_and_counts_add_up(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    n = 7
    jobs = write_jsonl(tmp_path / "jobs.jsonl", good(n, repository="o/r"))
    journal, results = tmp_path / "j.db", tmp_path / "results.jsonl"
    argv = batch_argv(jobs, "--journal", str(journal), "--out", str(results))
    argv += ["--max-running", "3", *auth(cloud)]
    # The server takes the 4th start and never answers: killed there, the job is neither
    # known to have started nor safe to send again without looking.
    cloud.add_fault(Fault(route="start", action="hold", skip=3, times=1))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openhands_async",
        *argv,
        env=_env(),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await eventually(
        lambda: any(r.route == "start" and r.status == "hold" for r in cloud.request_log),
        steps=6000,
    )
    proc.kill()
    await proc.wait()
    cloud.clear_faults()

    code, out, err = await run(*argv)
    assert code == 0, err
    summary = summary_of(out)
    # Each job counted once in this run: recovered jobs are followed, not also skipped.
    assert summary["finished"] + summary["failed"] + summary["skipped"] == n, summary
    assert summary["batch"]["finished"] == summary["batch"]["total"] == n
    ids = sent_ids(cloud)
    assert len(ids) == len(set(ids)) == cloud.starts_received == n  # none started twice
    exported = lines(results.read_text())
    assert sorted(r["key"] for r in exported) == sorted(f"k{i}" for i in range(n))
    assert {r["state"] for r in exported} == {"finished"}

    code, out, err = await run(*argv)  # once more: nothing to do, the file stays whole
    assert code == 0, err
    assert summary_of(out)["skipped"] == n
    assert len(lines(results.read_text())) == n
    assert cloud.starts_received == n


async def test_a_resumed_run_shows_done_against_the_total_never_past_it(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    n = 6
    jobs = write_jsonl(tmp_path / "jobs.jsonl", good(n))
    journal = tmp_path / "j.db"
    argv = batch_argv(jobs, "--journal", str(journal), "--max-running", "3")
    cloud.add_fault(Fault(route="start", action="hold", skip=3, times=1))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openhands_async",
        *argv,
        env=env_for(cloud),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    await eventually(
        lambda: any(r.route == "start" and r.status == "hold" for r in cloud.request_log),
        steps=6000,
    )
    proc.kill()
    await proc.wait()
    cloud.clear_faults()
    code, _, err = await piped(cloud, *argv)
    assert code == 0, err
    progress = [line for line in err.splitlines() if line.startswith("progress: ")]
    assert progress[-1].startswith(f"progress: {n}/{n} done"), progress
    assert all(int(re.match(r"progress: (\d+)/", p)[1]) <= n for p in progress)  # type: ignore[index]


# -- failed jobs: left alone unless --retry-failed --------------------------------------------


async def test_retry_failed(cloud: FakeCloud, tmp_path: Path) -> None:
    rows = [*good(2), {"key": "bad", "message": "fails [fake:outcome=error]"}]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    journal, results = tmp_path / "j.db", tmp_path / "results.jsonl"
    argv = batch_argv(jobs, "--journal", str(journal), "--out", str(results))
    code, out, err = await run(*argv, *auth(cloud))
    assert code == 1, err
    assert cloud.starts_received == 3

    # Again without --retry-failed: nothing started, the failure still counts, and the
    # command says how to retry it.
    code, out, err = await run(*argv, "--base-url", cloud.base_url, "--api-key", str(cloud.api_key))
    assert code == 1, err
    assert cloud.starts_received == 3
    assert re.search(r"1 failed job .*left alone", out), out
    assert "--retry-failed" in out
    code, out, err = await run(*argv, *auth(cloud))
    assert summary_of(out)["not_retried"] == 1

    code, out, err = await run(*argv, "--retry-failed", *auth(cloud))
    assert code == 1, err  # it fails again, on purpose
    assert cloud.starts_received == 4  # only the failed job, started afresh
    ids = sent_ids(cloud)
    assert len(ids) == len(set(ids))  # with a fresh conversation id
    record = next(r for r in lines(results.read_text()) if r["key"] == "bad")
    assert len(record["history"]) == 1  # the first attempt is kept
    assert len(lines(results.read_text())) == 3


def finished_in(journal: Path) -> int:
    """Jobs the journal holds as finished (read beside the running command)."""
    if not journal.exists():
        return 0
    with contextlib.closing(sqlite3.connect(journal, timeout=5)) as db:
        try:
            return int(
                db.execute("SELECT COUNT(*) FROM jobs WHERE state = 'finished'").fetchone()[0]
            )
        except sqlite3.OperationalError:  # no table yet
            return 0


# -- Ctrl-C -----------------------------------------------------------------------------------


async def test_ctrl_c_prints_the_counts_and_the_resume_command(
    cloud: FakeCloud, tmp_path: Path
) -> None:
    rows = [*good(2), *({"key": f"slow{i}", "message": "[fake:run_seconds=inf]"} for i in range(3))]
    jobs = write_jsonl(tmp_path / "jobs.jsonl", rows)
    journal = tmp_path / "my journal.db"
    argv = batch_argv(jobs, "--journal", str(journal), "--max-running", "5")
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openhands_async",
        *argv,
        env=env_for(cloud),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    await eventually(lambda: finished_in(journal) == 2, steps=6000)  # the quick ones
    proc.send_signal(signal.SIGINT)
    out_b, err_b = await asyncio.wait_for(proc.communicate(), 60)
    out, err = out_b.decode(), err_b.decode()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    text = out + err
    assert "keep running on the server" in text
    assert re.search(r"this run: finished \d, failed 0, skipped 0 in ", text), text
    assert "whole batch: 5 jobs, finished 2, failed 0, running 3" in text, text
    assert "openhands-async batch" in err
    assert "'" + str(journal) + "'" in err  # quoted for the shell: it has a space


# -- --watch-ends ------------------------------------------------------------------------------


async def test_watch_ends_hears_each_end_on_the_agent_server(tmp_path: Path) -> None:
    # READY at once and an hour between reads: a job can only end through its watch.
    async with FakeCloud(start_timeline=[("READY", 0.0)], idle_seconds=0, run_seconds=0.2) as c:
        jobs = write_jsonl(tmp_path / "jobs.jsonl", good(3))
        argv = ["batch", str(jobs), "--interval", "3600", "--max-running", "2"]
        code, out, err = await run(*argv, "--watch-ends", *auth(c))
        assert c.agent_sockets.opened >= 3
    assert code == 0, err
    summary = summary_of(out)
    assert (summary["finished"], summary["failed"], summary["ends_heard"]) == (3, 0, 3)
    assert c.starts_received == 3
