"""The shared journal's values: account labels, rows as read from the database, and the
connection (psycopg is imported only when one opens)."""

from __future__ import annotations

import hashlib
import hmac
from typing import TYPE_CHECKING, Any

import attrs

from ...errors import JournalUnavailableError
from .journal import JournalRow, RejectRow

if TYPE_CHECKING:
    import psycopg

__all__ = ["SharedJobRow", "account_label", "connect", "is_postgres_dsn", "reject_row", "row"]

# The HMAC key of account labels: not a secret (anyone may compute a label), it only keeps
# a label from being a plain hash of the API key that other tools might also publish.
_LABEL_KEY = b"openhands-async batch account label v1"


def account_label(api_key: str, base_url: str) -> str:
    """A stable name for the account behind `api_key` on `base_url`, safe to store and show:
    HMAC-SHA256 over both, 80 bits in hex. API keys are long random strings, so the label
    cannot be turned back into the key."""
    digest = hmac.new(_LABEL_KEY, f"{base_url}\n{api_key}".encode(), hashlib.sha256)
    return "acct-" + digest.hexdigest()[:20]


def is_postgres_dsn(journal: str) -> bool:
    return journal.startswith(("postgresql://", "postgres://"))


@attrs.frozen
class SharedJobRow(JournalRow):
    """One job of a shared batch as the database holds it: a `JournalRow` (times: seconds
    since the epoch, the database's clock) and who holds it."""

    account: str | None = None
    worker: str | None = None
    attempts: int = 0
    lease_until: float | None = None


def row(record: Any) -> SharedJobRow:
    (key, seq, job, source, state, account, worker, conversation_id, start_task_id,
     sandbox_status, execution_status, error, attempts, history, created_at, sent_at,
     running_at, ended_at, lease_until) = record  # fmt: skip
    return SharedJobRow(
        key=key, seq=seq, job=job, state=state, conversation_id=conversation_id,
        start_task_id=start_task_id, sandbox_status=sandbox_status,
        execution_status=execution_status, error=error, created_at=created_at,
        sent_at=sent_at, running_at=running_at, ended_at=ended_at, source=source,
        history=tuple(history), account=account, worker=worker, attempts=attempts,
        lease_until=lease_until,
    )  # fmt: skip


def reject_row(record: Any) -> RejectRow:
    source, seq, state, key, job, error, recorded_at = record
    return RejectRow(source, seq, state, key, job, error, recorded_at)


async def connect(dsn: str, application_name: str) -> psycopg.AsyncConnection[Any]:
    try:
        import psycopg
    except ImportError:
        raise ImportError(
            "a postgresql:// journal needs psycopg: pip install 'openhands-async[postgres]'"
        ) from None
    try:
        return await psycopg.AsyncConnection.connect(
            dsn, autocommit=True, application_name=application_name[:63]
        )
    except psycopg.OperationalError as exc:
        # psycopg's message names host and port, never the password.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise JournalUnavailableError(
            f"cannot reach the batch journal's database: {reason}"
        ) from None
