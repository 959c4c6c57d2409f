"""`TaskBuilder`: one stream-start element (a decoded JSON object) in, a `StartTask` out.

The usual element is built by hand: cattrs' structurer was a third of a stream's CPU per
element (a hook call per field, two timestamp parses, the status look-up, its error
bookkeeping), and attrs' frozen `__init__` another sixth (a slow `object.__setattr__`
call per field). The fast path takes the shape the server writes: every field present,
each value of its usual type, a known status, timestamps that parse, a request equal to
the one before. Anything else goes through cattrs, which builds the same value or raises
the `ResponseValidationError` it always did: the fast path never decides that an element
is invalid, it only declines it.
"""

from __future__ import annotations

import operator
from datetime import datetime
from typing import TYPE_CHECKING, Any

# The converter's own datetime hook: the fast path's timestamps are the very same values.
from .._converter import _parse_datetime, converter, structurer
from ..models import StartRequest, StartTask, StartTaskStatus

if TYPE_CHECKING:
    from ._request_cut import RequestCut

__all__ = ["TaskBuilder"]

NoneType = type(None)

# StartTask's fields in attrs' order (tests pin it against `attrs.fields(StartTask)`).
_FIELDS = (
    "id",
    "status",
    "created_by_user_id",
    "detail",
    "app_conversation_id",
    "sandbox_id",
    "agent_server_url",
    "request",
    "created_at",
    "updated_at",
)
# One C call for all ten values (KeyError when one is missing: then cattrs, defaults).
_values = operator.itemgetter(*_FIELDS)
# Known values only: an unknown one (an open-enum pseudo-member) is left to cattrs.
_STATUS: dict[Any, Any] = dict(StartTaskStatus._value2member_map_)

_request_hook = converter.get_structure_hook(StartRequest)


def _request_or_made(value: Any, type_: Any) -> Any:
    # The `request` field's hook in this structurer only: a request already made passes.
    if value is None or isinstance(value, StartRequest):
        return value
    return _request_hook(value, StartRequest)


class _Unfrozen(StartTask):
    """StartTask's very layout with plain attribute stores (no slots of its own): a task
    is built as one, then made a `StartTask` by `__class__` assignment, which Python
    allows between classes of one layout. Ten slot stores instead of attrs' ten slow
    `object.__setattr__` calls; StartTask has no validators, converters or post-init (a
    test checks), so its `__init__` would store exactly these values."""

    __slots__ = ()
    __init__ = object.__init__
    # Both: a class overriding only one of them still gets the slow generic slot.
    __setattr__ = object.__setattr__
    __delattr__ = object.__delattr__


def _unfrozen_works() -> bool:
    # An interpreter that refuses the `__class__` assignment gets the plain constructor.
    try:
        made: Any = _Unfrozen()
        for field in _FIELDS:
            setattr(made, field, None)
        made.id, made.status = "x", StartTaskStatus.READY
        made.__class__ = StartTask
    except TypeError:
        return False
    return type(made) is StartTask and made == StartTask("x", StartTaskStatus.READY)


_UNFROZEN = _unfrozen_works()


class TaskBuilder:
    """Builds the `StartTask`s of one stream. Keeps the request it last structured (the
    server repeats it in every element: an equal one gets the same `StartRequest`, frozen
    and so shared by the snapshots) and the timestamps it last parsed (`created_at` is the
    same in every element, `updated_at` in runs of them)."""

    __slots__ = (
        "_created",
        "_created_text",
        "_cut",
        "_cut_raw",
        "_cutter",
        "_raw_request",
        "_request",
        "_structure",
        "_updated",
        "_updated_text",
    )

    def __init__(
        self,
        *,
        method: str = "",
        url: str = "",
        cutter: RequestCut | None = None,
    ) -> None:
        self._raw_request: object = None
        self._request: StartRequest | None = None
        # The stand-in (an int, see `_request_cut`) ijson reads for the request `_cut_raw`
        # in place of its repeats; the cutter gives back (once each) the request any
        # stand-in stands for.
        self._cut: int | None = None
        self._cut_raw: object = None
        self._cutter = cutter
        # None, not "": an empty timestamp is no repeat of one never seen (cattrs refuses it).
        self._created_text: str | None = None
        self._updated_text: str | None = None
        self._created: datetime | None = None
        self._updated: datetime | None = None
        # Built once per type and hook (cached), so opening a stream generates no code.
        self._structure = structurer(
            StartTask, method=method, url=url, field_hooks={"request": _request_or_made}
        )

    @property
    def raw_request(self) -> object:
        """The request (as decoded) that an equal one in the next element reuses."""
        return self._raw_request

    @property
    def cut_is_stale(self) -> bool:
        """Whether `raw_request` changed since the last `expect_cut`."""
        return self._raw_request is not self._cut_raw

    def expect_cut(self, value: int | None) -> None:
        """Repeats of `raw_request` now reach `build` as the stand-in `value` (None: no
        more stand-ins for it)."""
        self._cut, self._cut_raw = value, self._raw_request

    def build(self, item: dict[str, Any]) -> StartTask:
        """The `StartTask` of one element; `ResponseValidationError` if it does not fit."""
        try:
            task_id, status, created_by, detail, conversation, sandbox, server, request, c, u = (
                _values(item)
            )
        except KeyError:
            return self._by_cattrs(item)
        # The usual value types (each test a pointer compare): id and status strings, the
        # rest a string or null, the request an object, null or a stand-in (an int).
        if not (
            type(task_id) is str
            and type(status) is str
            and (created_by is None or type(created_by) is str)
            and (detail is None or type(detail) is str)
            and (conversation is None or type(conversation) is str)
            and (sandbox is None or type(sandbox) is str)
            and (server is None or type(server) is str)
            and (request is None or type(request) is dict or type(request) is int)
            and (c is None or type(c) is str)
            and (u is None or type(u) is str)
        ):
            return self._by_cattrs(item)
        member = _STATUS.get(status)
        if member is None:
            return self._by_cattrs(item)
        if request is not None:
            if type(request) is dict:
                if request != self._raw_request:
                    return self._by_cattrs(item)
            # A stand-in, for the request last structured (else cattrs, which gets it back).
            elif (
                request != self._cut
                or self._raw_request is not self._cut_raw
                or self._cutter is None
                or not self._cutter.take(request)
            ):
                return self._by_cattrs(item)
            else:  # taken: cattrs, if a timestamp below sends the item there, sees the request
                item["request"] = self._raw_request
            request = self._request
        else:
            self._raw_request = self._request = None
        # A timestamp that does not parse goes to cattrs too: it says why.
        created = updated = None
        if c is not None:
            if c != self._created_text:
                if (parsed := _stamp(c)) is None:
                    return self._by_cattrs(item)
                self._created_text, self._created = c, parsed
            created = self._created
        if u is not None:
            if u != self._updated_text:
                if (parsed := _stamp(u)) is None:
                    return self._by_cattrs(item)
                self._updated_text, self._updated = u, parsed
            updated = self._updated
        if not _UNFROZEN:  # pragma: no cover  (CPython takes the other way)
            return StartTask(
                task_id,
                member,
                created_by,
                detail,
                conversation,
                sandbox,
                server,
                request,
                created,
                updated,
            )
        task: Any = _Unfrozen()  # Any: to mypy the fields are frozen, even on _Unfrozen
        task.id = task_id
        task.status = member
        task.created_by_user_id = created_by
        task.detail = detail
        task.app_conversation_id = conversation
        task.sandbox_id = sandbox
        task.agent_server_url = server
        task.request = request
        task.created_at = created
        task.updated_at = updated
        task.__class__ = StartTask
        made: StartTask = task
        return made

    def _by_cattrs(self, item: dict[str, Any]) -> StartTask:
        this_request = item.get("request")
        if self._cutter is not None and type(this_request) is int:
            # A stand-in: the request it stands for, as ijson would have decoded it.
            restored = self._cutter.uncut(this_request)
            if restored is not None:
                item["request"] = this_request = restored
        if this_request is not None and this_request == self._raw_request:
            # The value structuring it again would give. Only fields typed Any keep the
            # first of equal numbers (1, 1.0).
            item["request"] = self._request
        else:
            self._raw_request = this_request
        task = self._structure(item)
        self._request = task.request
        return task


def _stamp(text: str) -> datetime | None:
    """The timestamp, or None: not one for the fast path (cattrs is to say why)."""
    try:
        return _parse_datetime(text, datetime)
    except ValueError:
        return None
