"""Issue 15: a batch a user can trust. One start per job key, a stop on 401/403, resumes
that keep every result, jobs checked when read. Over loopback against FakeCloud."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import uuid
from pathlib import Path
from typing import Any

import pytest

import openhands_async as oh
from openhands_async.lib.batch import SQLiteJournal, check_jobs, read_jobs
from openhands_async.testing import FakeCloud, Fault

from .conftest import eventually

FAST = oh.RetryPolicy(max_retries=2, initial_delay=0.01, max_delay=0.05)


def client_for(cloud: FakeCloud, api_key: str | None = None) -> oh.OpenHandsClient:
    return oh.OpenHandsClient(
        api_key=api_key or cloud.api_key, base_url=cloud.base_url, retry_policy=FAST
    )


async def run(c: oh.OpenHandsClient, batch: Any, **kw: Any) -> list[oh.JobResult]:
    return [r async for r in c.run_batch(batch, poll_interval=0.05, **kw)]


def sent_ids(cloud: FakeCloud) -> list[str]:
    """The conversation id of every start the server took, in order."""
    return [
        uuid.UUID(t.request["conversation_id"]).hex
        for t in cloud._store.tasks.values()
        if t.request.get("conversation_id")
    ]


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_text(
        "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines),
        encoding="utf-8",
    )
    return path


# -- 1. duplicate keys ------------------------------------------------------------------------


@pytest.mark.parametrize("max_running", [1, 5])
async def test_a_duplicate_key_is_started_once_and_reported_once(max_running: int) -> None:
    batch: list[Any] = [
        oh.Job("the job", key="D"),
        *(oh.Job(f"filler {i}") for i in range(3)),
        # Same key, same content: read after the first has ended (max_running=1), or
        # while it is still starting (max_running=5).
        oh.Job("the job", key="D"),
        # Two identical lines without a key share the content-hash key.
        {"message": "same twice", "repository": "o/r"},
        {"message": "same twice", "repository": "o/r"},
    ]
    async with FakeCloud(time_scale=0.1) as cloud, client_for(cloud) as c:
        results = await run(c, batch, max_running=max_running)
    ids = sent_ids(cloud)
    assert len(ids) == len(set(ids)) == cloud.starts_received == 5
    assert cloud.duplicate_starts == 0
    assert len(results) == len(batch)  # every input reported, none dropped
    skipped = [r for r in results if r.state == "skipped"]
    assert [r.source for r in skipped] == ["item 5", "item 7"]
    assert all("duplicate of the job on item" in (r.reason or "") for r in skipped)
    finished = [r for r in results if r.ok]
    assert len({r.conversation_id for r in finished}) == len(finished) == 5


async def test_a_duplicate_key_with_other_content_fails_naming_key_and_line(
    tmp_path: Path,
) -> None:
    jobs = write_jsonl(
        tmp_path / "jobs.jsonl",
        [
            {"message": "one"},
            {"message": "first D", "key": "D"},
            *({"message": f"filler {i}"} for i in range(4)),
            {"message": "second D", "key": "D"},
        ],
    )
    async with FakeCloud(time_scale=0.1) as cloud, client_for(cloud) as c:
        results = await run(c, read_jobs(jobs), max_running=2)
    by_source = {r.source: r for r in results}
    bad = by_source[f"{jobs}:7"]
    assert bad.state == "failed"
    assert bad.error == "duplicate key 'D' (first on line 2)"
    assert bad.conversation_id is None
    assert by_source[f"{jobs}:2"].ok
    assert by_source[f"{jobs}:2"].job is not None
    assert by_source[f"{jobs}:2"].job.message == "first D"
    ids = sent_ids(cloud)
    assert len(ids) == len(set(ids)) == 6  # the second D was never sent


async def test_a_key_the_journal_holds_with_other_content_is_not_started(tmp_path: Path) -> None:
    db = str(tmp_path / "run.db")
    async with FakeCloud(time_scale=0.1) as cloud, client_for(cloud) as c:
        await run(c, [oh.Job("original", key="D")], journal=db)
        moved = await run(c, [oh.Job("new"), oh.Job("edited", key="D")], journal=db)
        edited = await run(c, [oh.Job("edited again", key="D")], journal=db)
    assert [(r.state, r.error) for r in moved if not r.ok] == [
        ("failed", "duplicate key 'D' (first on item 1)")
    ]
    assert [r.state for r in edited] == ["failed"]
    assert "changed since the journal recorded it" in (edited[0].error or "")
    assert cloud.starts_received == 2  # "original" and "new"


class _ForgetfulJournal(SQLiteJournal):
    """A backend that lost the one-id-per-job rule: the runner must still hold it."""

    async def mark_starting(self, key: str, conversation_id: str) -> Any:
        self._update(key, state="starting", conversation_id=conversation_id)
        return self._must_get(key)


@pytest.mark.parametrize("journal_kind", ["sqlite", "forgetful"])
async def test_a_conversation_id_held_by_another_job_is_never_sent(
    tmp_path: Path, journal_kind: str
) -> None:
    db = tmp_path / "run.db"
    async with FakeCloud(time_scale=0.1) as cloud, client_for(cloud) as c:
        await run(c, [oh.Job("first", key="A")], journal=str(db))
        # Corrupt the journal: job B pending with A's conversation id.
        # `with connection` commits but does not close it; Python 3.13 warns at the GC.
        with contextlib.closing(sqlite3.connect(db)) as raw, raw:
            (a_id,) = raw.execute("SELECT conversation_id FROM jobs WHERE key='A'").fetchone()
            raw.execute(
                "INSERT INTO jobs (key, seq, job, state, conversation_id, created_at) "
                "VALUES ('B', 1, ?, 'pending', ?, 0)",
                (json.dumps({"message": "second"}), a_id),
            )
        journal = _ForgetfulJournal(db) if journal_kind == "forgetful" else str(db)
        with pytest.raises(AssertionError, match=a_id):
            await run(c, [oh.Job("first", key="A"), oh.Job("second", key="B")], journal=journal)
        if isinstance(journal, SQLiteJournal):
            journal.close()
    assert cloud.starts_received == 1
    assert sent_ids(cloud) == [a_id]


# -- 2. 401/403 stops the batch ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "how"),
    [(oh.AuthenticationError, "wrong key"), (oh.PermissionDeniedError, "403 fault")],
)
async def test_an_auth_error_on_a_start_stops_the_batch(
    tmp_path: Path, error: type[Exception], how: str
) -> None:
    db = str(tmp_path / "run.db")
    async with FakeCloud(time_scale=0.1) as cloud:
        key = "wrong-key" if how == "wrong key" else None
        if how == "403 fault":
            cloud.add_fault(Fault(route="start", status=403, times=None))
        async with client_for(cloud, key) as bad:
            with pytest.raises(error):
                await run(bad, [oh.Job(f"job {i}") for i in range(8)], journal=db, max_running=3)
        assert cloud.requests["start"] <= 3  # only the first wave went out
        assert cloud.starts_received == 0
        async with SQLiteJournal(db) as journal:
            counts = await journal.counts()
        assert counts["failed"] == 0
        assert counts["pending"] == sum(counts.values())  # nothing marked failed or started
        cloud.clear_faults()
        async with client_for(cloud) as good:
            results = await run(good, [oh.Job(f"job {i}") for i in range(8)], journal=db)
    assert len(results) == 8
    assert all(r.ok for r in results)
    ids = sent_ids(cloud)
    assert len(ids) == len(set(ids)) == cloud.starts_received == 8


# -- 3. resume keeps every result ------------------------------------------------------------


async def test_out_holds_one_line_per_job_of_the_whole_batch_after_a_resume(
    tmp_path: Path,
) -> None:
    db, out = str(tmp_path / "run.db"), tmp_path / "results.jsonl"
    jobs = [oh.Job(f"job {i}", repository="o/r") for i in range(8)]
    async with FakeCloud(time_scale=0.2, run_seconds=0.3) as cloud, client_for(cloud) as c:
        task = asyncio.create_task(run(c, jobs, max_running=3, journal=db, out=out))
        await eventually(lambda: cloud.starts_received >= 4)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        first = [json.loads(line) for line in out.read_text().splitlines()]
        assert 4 <= len(first) < 8  # what was read so far, each once
        assert len({r["key"] for r in first}) == len(first)
        run_ = c.run_batch(jobs, max_running=3, journal=db, out=out, poll_interval=0.05)
        async with run_:
            resumed = [r async for r in run_]
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["key"] for r in lines) == sorted(j.key for j in jobs)
    assert {r["state"] for r in lines} == {"finished"}
    assert cloud.starts_received == 8
    summary = run_.summary
    assert summary is not None
    assert summary.finished == len(resumed)
    assert summary.finished + summary.skipped == 8  # this run
    assert summary.batch["finished"] == summary.batch["total"] == 8  # the whole batch
    assert summary.complete
    assert not any(name.endswith(".tmp") for name in os.listdir(tmp_path))  # none left


async def test_retry_failed_starts_failed_jobs_again_with_a_fresh_id(tmp_path: Path) -> None:
    db = str(tmp_path / "run.db")
    jobs = [oh.Job(f"job {i}") for i in range(3)]
    async with FakeCloud(time_scale=0.1) as cloud, client_for(cloud) as c:
        cloud.add_fault(Fault(route="start", status=400, body={"detail": "bad repo"}))
        first = await run(c, jobs, journal=db)
        (failed,) = [r for r in first if not r.ok]
        assert failed.job is not None
        # Without retry_failed: left alone, and said so.
        again = c.run_batch(jobs, journal=db, poll_interval=0.05)
        assert [r async for r in again] == []
        assert again.summary is not None
        assert (again.summary.skipped, again.summary.not_retried) == (3, 1)
        assert again.summary.batch["failed"] == 1
        retried = c.run_batch(jobs, journal=db, poll_interval=0.05, retry_failed=True)
        results = [r async for r in retried]
    assert [(r.job.key if r.job else None, r.state) for r in results] == [
        (failed.job.key, "finished")
    ]
    assert results[0].conversation_id != failed.conversation_id
    async with SQLiteJournal(db) as journal:
        row = await journal.get(failed.job.key)
    assert row is not None
    assert row.state == "finished"
    assert [h["conversation_id"] for h in row.history] == [failed.conversation_id]
    assert "bad repo" in (row.history[0]["error"] or "")
    assert retried.summary is not None
    assert retried.summary.batch["finished"] == 3
    ids = sent_ids(cloud)
    assert len(ids) == len(set(ids)) == 3  # the 400'd start never reached the handler


# -- 4. jobs are checked when read -----------------------------------------------------------

BAD_LINES = [
    {"message": "good 1", "repository": "o/r"},
    {"repository": "o/r"},  # line 2: no message
    {"message": "typo", "bogus_field": 1},  # line 3
    '{"message": "broken',  # line 4
    {"message": "good 2"},
    {"message": "   "},  # line 6: empty
    {"message": "wrong type", "title": 5},  # line 7
    [1, 2],  # line 8: not an object
    {"message": "good 3"},
]


async def test_bad_lines_fail_with_their_line_and_the_batch_goes_on(tmp_path: Path) -> None:
    jobs = write_jsonl(tmp_path / "jobs.jsonl", BAD_LINES)
    out = tmp_path / "out.jsonl"
    async with FakeCloud(time_scale=0.1) as cloud, client_for(cloud) as c:
        # wait_for, not asyncio.timeout: that is Python 3.11+.
        results = await asyncio.wait_for(run(c, read_jobs(jobs), max_running=2, out=out), 60)
    bad = {r.source: r.error for r in results if not r.ok}
    assert sorted(bad) == [f"{jobs}:{n}" for n in (2, 3, 4, 6, 7, 8)]
    assert bad[f"{jobs}:2"] == "message is required"
    assert "unknown field 'bogus_field'" in (bad[f"{jobs}:3"] or "")
    assert "not valid JSON" in (bad[f"{jobs}:4"] or "")
    assert "empty" in (bad[f"{jobs}:6"] or "")
    assert "title" in (bad[f"{jobs}:7"] or "")
    assert "JSON object" in (bad[f"{jobs}:8"] or "")
    assert sum(r.ok for r in results) == 3
    assert cloud.starts_received == 3
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert [x["source"] for x in lines] == [f"{jobs}:{n}" for n in range(1, 10)]


async def test_bad_mappings_fail_with_their_position(client: oh.OpenHandsClient) -> None:
    results = await run(client, [{"message": "ok"}, {"messge": "typo"}])
    assert [(r.source, r.state) for r in results if not r.ok] == [("item 2", "failed")]


def test_check_lists_every_bad_line_and_starts_nothing(tmp_path: Path) -> None:
    jobs = write_jsonl(
        tmp_path / "jobs.jsonl",
        [*BAD_LINES, {"message": "x", "key": "K"}, {"message": "y", "key": "K"}],
    )
    bad = check_jobs(jobs)
    assert [b.source for b in bad] == [f"{jobs}:{n}" for n in (2, 3, 4, 6, 7, 8, 11)]
    assert bad[-1].error == "duplicate key 'K' (first on line 10)"


def test_jobs_are_checked_with_the_rules_of_start() -> None:
    with pytest.raises(ValueError, match="unknown field 'bogus_field'"):
        oh.Job("x", options={"bogus_field": 1})
    with pytest.raises(ValueError, match="required"):
        oh.Job.from_dict({"repository": "o/r"})
    with pytest.raises(ValueError, match="repository"):
        oh.Job("x", repository="not a repository!")
    with pytest.raises(TypeError, match="pr_number"):
        oh.Job("x", options={"pr_number": ["1"]})
    assert oh.Job("x", options={"title": "t", "run": False}).start_options() == {
        "title": "t",
        "run": False,
    }
