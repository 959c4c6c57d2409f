"""The shared journal's schema (PostgreSQL 12+): its tables, and the claim, a server-side
function so that taking a job, a running slot and a conversation id is one transaction in one
round trip. Created (or brought up to date) by every worker that opens the journal.

Every table is keyed by `batch_name`, so one database holds many batches. Times are the
database's own clock (`now()`): workers on several machines never compare their clocks.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg
    from typing_extensions import LiteralString

__all__ = ["SCHEMA", "SCHEMA_VERSION", "create"]

# Recorded in openhands_batch_schema once SCHEMA ran; bump it with any change to SCHEMA.
SCHEMA_VERSION = 2
# pg_advisory_xact_lock key: workers opening the journal at once create the schema in turn
# (concurrent CREATE ... IF NOT EXISTS / CREATE OR REPLACE FUNCTION can fail otherwise).
SCHEMA_LOCK = 0x6F68_6261_7463_68  # "ohbatch"

# SCHEMA runs only when the database's version is older: its ALTER TABLE takes the jobs
# table's exclusive lock even when there is nothing to change, and a worker opening while
# others feed could deadlock with one whose statement reads the table before writing it.
SCHEMA_TABLE_EXISTS: LiteralString = "SELECT to_regclass('openhands_batch_schema') IS NOT NULL"
SCHEMA_VERSION_READ: LiteralString = "SELECT coalesce(max(version), 0) FROM openhands_batch_schema"
SCHEMA_VERSION_RECORD: LiteralString = """
WITH old AS (DELETE FROM openhands_batch_schema)
INSERT INTO openhands_batch_schema (version) VALUES (%s)
"""

SCHEMA: LiteralString = """
CREATE TABLE IF NOT EXISTS openhands_batch_jobs (
    batch_name       text NOT NULL,
    key              text NOT NULL,
    seq              bigint NOT NULL,
    job              jsonb NOT NULL,
    state            text NOT NULL DEFAULT 'pending'
                     CHECK (state IN ('pending', 'starting', 'running', 'finished', 'failed')),
    -- The account label (a keyed hash of the API key, never the key) holding the job's slot.
    account          text,
    worker           text,
    lease_until      timestamptz,
    conversation_id  text,
    start_task_id    text,
    sandbox_status   text,
    execution_status text,
    error            text,
    attempts         integer NOT NULL DEFAULT 0,
    -- Earlier attempts, oldest first (a failed job retried gets a fresh id): each the
    -- fields `retry` cleared, like the SQLite journal's.
    history          jsonb NOT NULL DEFAULT '[]',
    -- Where the job was first read ("jobs.jsonl:2"), if known.
    source           text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    sent_at          timestamptz,
    running_at       timestamptz,
    ended_at         timestamptz,
    PRIMARY KEY (batch_name, key)
);
CREATE INDEX IF NOT EXISTS openhands_batch_jobs_pending
    ON openhands_batch_jobs (batch_name, seq, key) WHERE state = 'pending';
CREATE INDEX IF NOT EXISTS openhands_batch_jobs_active
    ON openhands_batch_jobs (batch_name, account) WHERE state IN ('starting', 'running');
-- A conversation id belongs to one job, ever: a second start with a known id breaks the
-- original conversation on the server.
CREATE UNIQUE INDEX IF NOT EXISTS openhands_batch_jobs_conversation
    ON openhands_batch_jobs (conversation_id) WHERE conversation_id IS NOT NULL;

ALTER TABLE openhands_batch_jobs ADD COLUMN IF NOT EXISTS source text;
-- Every conversation id ever minted, and its job: no id ever serves two jobs (a retried
-- job's old id included). Ids are the server's, so unique across batches too.
CREATE TABLE IF NOT EXISTS openhands_batch_conversations (
    conversation_id text PRIMARY KEY,
    batch_name      text NOT NULL,
    key             text NOT NULL
);
-- Inputs that are not jobs of their own (invalid lines, duplicate keys), by where read.
CREATE TABLE IF NOT EXISTS openhands_batch_rejects (
    batch_name  text NOT NULL,
    source      text NOT NULL,
    seq         bigint NOT NULL,
    state       text NOT NULL CHECK (state IN ('failed', 'skipped')),
    key         text,
    job         jsonb,
    error       text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (batch_name, source)
);

-- One row per (batch, account): claims lock it, so slot counts are taken one at a time.
CREATE TABLE IF NOT EXISTS openhands_batch_accounts (
    batch_name text NOT NULL,
    account    text NOT NULL,
    PRIMARY KEY (batch_name, account)
);

CREATE TABLE IF NOT EXISTS openhands_batch_workers (
    batch_name  text NOT NULL,
    worker      text NOT NULL,
    account     text NOT NULL,
    host        text NOT NULL,
    pid         integer NOT NULL,
    max_running integer NOT NULL,
    started_at  timestamptz NOT NULL DEFAULT now(),
    seen_at     timestamptz NOT NULL DEFAULT now(),
    stopped_at  timestamptz,
    PRIMARY KEY (batch_name, worker)
);

CREATE TABLE IF NOT EXISTS openhands_batch_schema (version integer NOT NULL);

-- Claim one pending job and a running slot of the account, atomically (one transaction,
-- one round trip). VOLATILE: each statement reads a fresh snapshot, so the count below
-- sees every claim committed before this one got the account's lock.
CREATE OR REPLACE FUNCTION openhands_batch_claim(
    p_batch text, p_account text, p_worker text, p_max_running integer,
    p_conversation_id text, p_lease double precision, p_key text
) RETURNS SETOF openhands_batch_jobs LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    used integer;
    claimed text;
    holder record;
BEGIN
    -- Sending again the start of a job this worker holds, with its recorded id (the server
    -- provably never took it): it has its slot already.
    IF p_key IS NOT NULL THEN
        RETURN QUERY
        UPDATE openhands_batch_jobs AS j
           SET sent_at = now(), lease_until = now() + make_interval(secs => p_lease)
         WHERE j.batch_name = p_batch AND j.key = p_key AND j.state = 'starting'
           AND j.worker = p_worker AND j.conversation_id = p_conversation_id
        RETURNING j.*;
        IF FOUND THEN
            RETURN;
        END IF;
    END IF;
    PERFORM 1 FROM openhands_batch_accounts
        WHERE batch_name = p_batch AND account = p_account FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'account % is not registered for batch %', p_account, p_batch;
    END IF;
    SELECT count(*) INTO used FROM openhands_batch_jobs
        WHERE batch_name = p_batch AND account = p_account
          AND state IN ('starting', 'running');
    IF used >= p_max_running THEN
        RETURN;
    END IF;
    -- A fresh id may go to any pending job: the first in the batch's order that no other
    -- claim holds (SKIP LOCKED), not the job `p_key` this worker just read, which workers
    -- feeding the same list would all race for. An id already recorded (a start the server
    -- refused, sent again) stays with its own job.
    IF p_key IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM openhands_batch_conversations AS c
         WHERE c.conversation_id = p_conversation_id) THEN
        p_key := NULL;
    END IF;
    UPDATE openhands_batch_jobs AS j
       SET state = 'starting', account = p_account, worker = p_worker,
           conversation_id = p_conversation_id,
           lease_until = now() + make_interval(secs => p_lease),
           sent_at = now(), attempts = j.attempts + 1
     WHERE (j.batch_name, j.key) = (
           SELECT p.batch_name, p.key FROM openhands_batch_jobs AS p
            WHERE p.batch_name = p_batch AND p.state = 'pending'
              AND (p_key IS NULL OR p.key = p_key)
            ORDER BY p.seq, p.key
            LIMIT 1
              FOR UPDATE SKIP LOCKED)
    RETURNING j.key INTO claimed;
    IF claimed IS NULL THEN
        RETURN;
    END IF;
    -- The id is this job's for good; an id another job holds or held is never sent.
    INSERT INTO openhands_batch_conversations (conversation_id, batch_name, key)
        VALUES (p_conversation_id, p_batch, claimed) ON CONFLICT DO NOTHING;
    SELECT c.batch_name, c.key INTO holder FROM openhands_batch_conversations AS c
        WHERE c.conversation_id = p_conversation_id;
    IF holder.batch_name <> p_batch OR holder.key <> claimed THEN
        RAISE EXCEPTION USING ERRCODE = 'unique_violation', MESSAGE = format(
            'conversation id %s belongs to job %L of batch %L: it is never sent for job %L',
            p_conversation_id, holder.key, holder.batch_name, claimed);
    END IF;
    RETURN QUERY SELECT * FROM openhands_batch_jobs AS j
        WHERE j.batch_name = p_batch AND j.key = claimed;
END
$$;
"""


async def create(execute: Callable[..., Awaitable[psycopg.AsyncCursor[Any]]]) -> None:
    """Create the schema, or bring it up to date, unless the database has it already; in the
    caller's transaction (`execute`: its statement runner). Workers opening at once do this
    in turn (an advisory lock held to the transaction's end)."""
    await execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
    record = await (await execute(SCHEMA_TABLE_EXISTS)).fetchone()
    if record and record[0]:
        record = await (await execute(SCHEMA_VERSION_READ)).fetchone()
        if record and int(record[0]) >= SCHEMA_VERSION:
            return
    await execute(SCHEMA)
    await execute(SCHEMA_VERSION_RECORD, (SCHEMA_VERSION,))
