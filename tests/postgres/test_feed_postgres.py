"""Feeding a shared batch ahead, in bulk, and claiming in one round trip (issue 18's
benchmark: every worker's claims find jobs waiting). Against a real PostgreSQL."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import openhands_async as oh
from openhands_async.lib.batch import account_label
from openhands_async.lib.batch.postgres import PostgresJournal
from openhands_async.testing import FakeCloud

Open = Callable[..., Awaitable[PostgresJournal]]


@pytest.fixture
async def open_journal(pg_dsn: str) -> AsyncIterator[Open]:
    opened: list[PostgresJournal] = []

    async def open_(account: str = "acct-a", max_running: int = 3) -> PostgresJournal:
        journal = PostgresJournal(pg_dsn, batch_name="b", account=account, max_running=max_running)
        opened.append(await journal.open())
        return journal

    yield open_
    for journal in opened:
        await journal.close()


def new_jobs(n: int, text: str = "task") -> list[tuple[str, int, dict[str, str], str]]:
    return [(f"k{i:04}", i, {"message": f"{text} {i}"}, f"jobs.jsonl:{i + 1}") for i in range(n)]


async def test_two_workers_feeding_one_list_at_once_add_each_job_once(open_journal: Open) -> None:
    one, two = await open_journal(), await open_journal()
    before = one.round_trips
    # The same 300 lines (the second worker's content differs: the first feeder's stays),
    # fed at once in two orders: one statement each, no deadlock, every row answered.
    first, second = await asyncio.gather(
        one.add_all(new_jobs(300)), two.add_all(new_jobs(300, "other")[::-1])
    )
    assert one.round_trips - before <= 2  # the feed, and the rows others were inserting
    assert sorted(r.key for r in first) == sorted(r.key for r in second)
    assert len(first) == len({r.key for r in first}) == 300
    rows = await one.rows()
    assert len(rows) == 300
    kept = {r.key: r.job["message"] for r in rows}
    assert {r.key: r.job["message"] for r in second} == kept  # as the database has them
    # Keys locked in one order: whoever took the first key inserted them all.
    assert len({m.split()[0] for m in kept.values()}) == 1
    assert all(r.state == "pending" and r.source for r in rows)
    # Fed again: nothing new, the rows as they are now (one claimed meanwhile).
    claimed = await two.claim_next(uuid.uuid4().hex)
    assert claimed is not None
    again = {r.key: r for r in await one.add_all(new_jobs(300))}
    assert again[claimed.key].state == "starting"
    assert (await one.counts())["pending"] == 299


async def test_a_claim_and_its_id_check_are_one_round_trip(open_journal: Open) -> None:
    journal = await open_journal()
    await journal.add_all(new_jobs(2))
    minted = uuid.uuid4().hex
    before = journal.round_trips
    row = await journal.claim_next(minted)
    assert row is not None
    assert await journal.key_of(minted) == row.key  # the claim's own record of the id
    assert journal.round_trips - before == 1
    assert await journal.key_of(minted) == row.key  # asked again: read from the table
    assert journal.round_trips - before == 2
    other = await open_journal()
    assert await other.key_of(minted) == row.key  # the same, as any worker reads it


async def test_one_statement_claims_a_job_per_id_within_the_accounts_slots(
    open_journal: Open,
) -> None:
    a1, a2 = await open_journal("acct-a", 3), await open_journal("acct-a", 3)
    b = await open_journal("acct-b", 2)
    await a1.add_all(new_jobs(20))
    assert (await a1.claim_next(uuid.uuid4().hex)) is not None  # one slot of acct-a taken
    ids = [[uuid.uuid4().hex for _ in range(5)] for _ in range(3)]
    before = [j.round_trips for j in (a1, a2, b)]
    got = await asyncio.gather(*(j.claim_many(i) for j, i in zip((a1, a2, b), ids, strict=True)))
    assert [j.round_trips - n for j, n in zip((a1, a2, b), before, strict=True)] == [1, 1, 1]
    # Five ids each, but acct-a had 2 slots left (shared by a1 and a2), acct-b 2.
    assert sum(len(rows) for rows in got[:2]) == 2
    assert len(got[2]) == 2
    claimed = [r for rows in got for r in rows]
    assert len({r.key for r in claimed}) == 4
    for journal, rows, minted in zip((a1, a2, b), got, ids, strict=True):
        # Each row has the id of its turn, in order, and the claim answers the id check.
        assert [r.conversation_id for r in rows] == minted[: len(rows)]
        assert all(r.state == "starting" and r.worker == journal.worker for r in rows)
        for r in rows:
            assert await journal.key_of(r.conversation_id or "") == r.key
    counts = await b.counts()
    assert counts["starting"] == 5
    assert counts["pending"] == 15


async def test_two_workers_on_one_list_start_each_job_once_fed_in_bulk(pg_dsn: str) -> None:
    n, cap = 40, 4
    async with (
        FakeCloud(api_key="key-a", max_running=cap, time_scale=0.05) as a,
        FakeCloud(api_key="key-b", max_running=cap, time_scale=0.05) as b,
    ):
        journals = [
            PostgresJournal(
                pg_dsn,
                batch_name="b",
                account=account_label(cloud.api_key or "", cloud.base_url),
                max_running=cap,
            )
            for cloud in (a, b)
        ]
        # Each worker feeds the same list, with an invalid line and a duplicate key.
        lines: list[object] = [oh.Job(f"job {i}", key=f"k{i:03}") for i in range(n)]
        lines[7:7] = [{"message": ""}, oh.Job("job 3", key="k003")]

        async def worker(cloud: FakeCloud, journal: PostgresJournal) -> list[oh.JobResult]:
            async with (
                oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client,
                journal,
            ):
                run = client.run_batch(lines, journal=journal, max_running=cap, poll_interval=0.02)
                return [r async for r in run]

        pairs = zip((a, b), journals, strict=True)
        results = await asyncio.gather(*(worker(c, j) for c, j in pairs))
        assert a.starts_received + b.starts_received == n  # each job started once
        assert a.duplicate_starts == b.duplicate_starts == 0
        assert max(a.peak_running, b.peak_running) <= cap
    started = Counter(r.job.key for rs in results for r in rs if r.ok and r.job)
    assert sorted(started) == [f"k{i:03}" for i in range(n)]
    assert set(started.values()) == {1}  # each reported by one worker
    for rs in results:  # each worker reports its own input's rejects
        assert sorted(r.state for r in rs if not r.ok) == ["failed", "skipped"]
    # Per job: its claim (the id check answered by it), running, ended; plus a few per
    # worker (opening, the feeds, the end's checks): not add + claim + id check in turn.
    trips = sum(j.round_trips for j in journals)
    assert trips <= 3 * n + 2 * 40, trips


async def test_a_worker_opening_a_current_schema_takes_no_table_lock(
    pg_dsn: str, open_journal: Open
) -> None:
    import psycopg

    from openhands_async.lib.batch._postgres_schema import SCHEMA_VERSION

    await open_journal()
    # Another worker mid-statement on the jobs table: a worker opening now must not wait
    # for the table's exclusive lock (the schema's ALTER TABLE), which deadlocked with a
    # statement that reads the table before writing it.
    async with await psycopg.AsyncConnection.connect(pg_dsn) as busy:
        await busy.execute("LOCK TABLE openhands_batch_jobs IN ACCESS SHARE MODE")
        second = await asyncio.wait_for(open_journal(), 120)  # a hang guard, not a timing
        await busy.rollback()
    cursor = await second._require().execute("SELECT version FROM openhands_batch_schema")
    assert await cursor.fetchall() == [(SCHEMA_VERSION,)]
    # A database an older release created (no version recorded) is brought up to date.
    await second._require().execute("DELETE FROM openhands_batch_schema")
    third = await open_journal()
    cursor = await third._require().execute("SELECT version FROM openhands_batch_schema")
    assert await cursor.fetchall() == [(SCHEMA_VERSION,)]


async def test_answers_to_starts_go_on_their_own_connection(open_journal: Open) -> None:
    journal = await open_journal()
    await journal.add_all(new_jobs(1))
    (row,) = await journal.claim_many([uuid.uuid4().hex])
    assert journal._side is not None
    side_pid = journal._side.info.backend_pid
    assert side_pid != journal._require().info.backend_pid
    running = await journal.mark_running(row.key, "task-1")
    assert running.state == "running"
    assert running.start_task_id == "task-1"
    cursor = await journal._require().execute(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE %s",
        (f"openhands-async {journal.worker}%",),
    )
    assert await cursor.fetchone() == (3,)  # claims and ends, answers to starts, LISTEN
    await journal.close()
    assert journal._side is None


async def test_ends_are_recorded_in_one_statement_but_not_over_a_new_holder(
    open_journal: Open,
) -> None:
    from openhands_async.lib.batch.journal import Ended

    first, second = await open_journal(), await open_journal()
    await first.add_all(new_jobs(3))
    a, b, c = await first.claim_many([uuid.uuid4().hex for _ in range(3)])
    # `b`'s lease lapsed and `second` adopted it: `first` must not record its end.
    await first._require().execute(
        "UPDATE openhands_batch_jobs SET lease_until = now() - interval '1 second' WHERE key = %s",
        (b.key,),
    )
    assert [r.key for r in await second.adopt()] == [b.key]
    before = first.round_trips
    lost = await first.mark_ended_many(
        [Ended(a.key, "finished"), Ended(b.key, "finished"), Ended(c.key, "failed", error="x")]
    )
    assert first.round_trips - before == 1
    assert lost == {b.key}
    assert b.key in first.lost
    assert first.held == set()
    states = {r.key: (r.state, r.error) for r in await first.rows()}
    assert states == {a.key: ("finished", None), b.key: ("starting", None), c.key: ("failed", "x")}
