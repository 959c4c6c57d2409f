"""A hand-written `StartTask` builder for the stream-start parser's usual element.

cattrs' structurer was a third of a stream's CPU per element (a hook call per field,
two timestamp parses, the status look-up, its error bookkeeping). `TaskBuilder.build`
makes the same `StartTask` for the shape the server writes: known keys with values of
the expected types, a known status, a request already made. For anything else it returns
None and the parser uses the cattrs structurer, which then builds the value or raises the
error it always did: this module never decides that an element is invalid.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

# The converter's own datetime hook: the fast path's timestamps are the very same values.
from .._converter import _parse_datetime
from ..models import StartRequest, StartTask, StartTaskStatus

__all__ = ["TaskBuilder"]

# Known values only; an unknown one (an open-enum pseudo-member) is left to cattrs.
_STATUS: dict[Any, Any] = dict(StartTaskStatus._value2member_map_)
_DEFAULT_STATUS = StartTaskStatus.WORKING.value
# A stream carries one `created_at` and a few `updated_at`s; a hostile one could carry a
# new string per element, so the cache is bounded (and cleared, not evicted: cheaper).
_STAMPS_KEPT = 16


class TaskBuilder:
    """Builds the `StartTask`s of one stream; keeps the timestamps it parsed (the same
    strings come back in element after element)."""

    __slots__ = ("_stamps",)

    def __init__(self) -> None:
        self._stamps: dict[str, datetime] = {}

    def build(self, item: dict[str, Any]) -> StartTask | None:
        """The `StartTask` cattrs would make of `item`, or None to let cattrs do it. Extra
        keys are ignored, as the lenient converter does; `request` must be None, missing
        or a `StartRequest` (the parser's reused one)."""
        get = item.get
        task_id = get("id")
        status = get("status", _DEFAULT_STATUS)
        status = _STATUS.get(status) if type(status) is str else None
        if type(task_id) is not str or status is None:
            return None
        created_by = get("created_by_user_id")
        detail = get("detail")
        conversation = get("app_conversation_id")
        sandbox = get("sandbox_id")
        agent_server = get("agent_server_url")
        for text in (created_by, detail, conversation, sandbox, agent_server):
            if text is not None and type(text) is not str:
                return None
        request = get("request")
        if request is not None and type(request) is not StartRequest:
            return None
        created = get("created_at")
        if created is not None:
            if type(created) is not str:
                return None
            created = self._stamps.get(created) or self._parse(created)
            if created is None:
                return None
        updated = get("updated_at")
        if updated is not None:
            if type(updated) is not str:
                return None
            updated = self._stamps.get(updated) or self._parse(updated)
            if updated is None:
                return None
        # Positional, in field order (tests pin it against attrs.fields): a third cheaper
        # than keywords, and this call is most of what is left of the per-element cost.
        return StartTask(
            task_id,
            status,
            created_by,
            detail,
            conversation,
            sandbox,
            agent_server,
            request,
            created,
            updated,
        )

    def _parse(self, text: str) -> datetime | None:
        """The timestamp (kept for the next element), or None: cattrs is to say why not."""
        try:
            stamp = _parse_datetime(text, datetime)
        except ValueError:
            return None
        if len(self._stamps) >= _STAMPS_KEPT:
            self._stamps.clear()
        self._stamps[text] = stamp
        return stamp
