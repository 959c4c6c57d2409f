"""Record every body the real server sends and check it against the SDK's models.

A `RecordingResponse` (an aiohttp response class) keeps each body the SDK reads. Each
2xx JSON body of a route the SDK models is structured twice: with the SDK's lenient
converter (must succeed: that is what users get) and with `strict_converter` (extra keys
forbidden: every failure names a field the server sends and the models drop). Fields the
models have and the server never sent, and enum values the SDK does not know, are
collected too. The summary is printed at the end of the run (see conftest.py).
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from typing import Any

import aiohttp
import attrs
import cattrs

from openhands_async._converter import converter, strict_converter
from openhands_async.models import (
    Conversation,
    Event,
    Page,
    Sandbox,
    SendMessageResult,
    StartRequest,
    StartTask,
    User,
)
from openhands_async.models_catalog import (
    LLMModel,
    LLMProvider,
    PendingMessage,
    SandboxSpec,
    Skill,
    WebClientConfig,
)
from openhands_async.models_settings import (
    EditResult,
    Profile,
    ProfileActivation,
    ProfileList,
    ProfileMutation,
    Secret,
    Settings,
)

_P = "/api/v1/app-conversations"
# (method, path pattern) -> the type the SDK structures that answer into
ROUTES: list[tuple[str, re.Pattern[str], Any]] = [
    ("POST", re.compile(rf"^{_P}$"), StartTask),
    ("GET", re.compile(rf"^{_P}/start-tasks$"), list[StartTask | None]),
    ("GET", re.compile(rf"^{_P}/start-tasks/search$"), Page[StartTask]),
    ("GET", re.compile(rf"^{_P}/start-tasks/count$"), int),
    ("GET", re.compile(rf"^{_P}$"), list[Conversation | None]),
    ("GET", re.compile(rf"^{_P}/search$"), Page[Conversation]),
    ("GET", re.compile(rf"^{_P}/count$"), int),
    ("GET", re.compile(r"^/api/v1/sandboxes$"), list[Sandbox | None]),
    ("GET", re.compile(r"^/api/v1/sandboxes/search$"), Page[Sandbox]),
    ("POST", re.compile(rf"^{_P}/[^/]+/send-message$"), SendMessageResult),
    ("GET", re.compile(r"^/api/v1/conversation/[^/]+/events/search$"), Page[Event]),
    ("GET", re.compile(r"^/api/v1/conversation/[^/]+/events/count$"), int),
    ("GET", re.compile(r"^/api/v1/conversation/[^/]+/events$"), list[Event | None]),
    ("GET", re.compile(r"^/api/v1/users/me$"), User),
    # issue 20
    ("GET", re.compile(r"^/api/v1/settings$"), Settings),
    ("GET", re.compile(r"^/api/v1/settings/profiles$"), ProfileList),
    ("GET", re.compile(r"^/api/v1/settings/profiles/[^/]+$"), Profile),
    ("POST", re.compile(r"^/api/v1/settings/profiles/[^/]+$"), ProfileMutation),
    ("POST", re.compile(r"^/api/v1/settings/profiles/[^/]+/activate$"), ProfileActivation),
    ("POST", re.compile(r"^/api/v1/settings/profiles/[^/]+/rename$"), ProfileMutation),
    ("GET", re.compile(r"^/api/v1/secrets/search$"), Page[Secret]),
    ("POST", re.compile(r"^/api/v1/secrets$"), EditResult),
    ("DELETE", re.compile(r"^/api/v1/secrets/[^/]+$"), EditResult),
    ("GET", re.compile(r"^/api/v1/sandbox-specs$"), list[SandboxSpec | None]),
    ("GET", re.compile(r"^/api/v1/sandbox-specs/search$"), Page[SandboxSpec]),
    ("GET", re.compile(r"^/api/v1/config/models/search$"), Page[LLMModel]),
    ("GET", re.compile(r"^/api/v1/config/providers/search$"), Page[LLMProvider]),
    ("GET", re.compile(r"^/api/v1/skills/search$"), Page[Skill]),
    ("GET", re.compile(r"^/api/v1/web-client/config$"), WebClientConfig),
    ("POST", re.compile(r"^/api/v1/conversations/[^/]+/pending-messages$"), PendingMessage),
]


@attrs.define
class Body:
    method: str
    path: str
    status: int
    content_type: str
    raw: bytes


@attrs.define
class Recorder:
    bodies: list[Body] = attrs.field(factory=list)
    checked: int = 0
    #: route -> strict-converter complaints (each names dropped fields and where)
    dropped: dict[str, set[str]] = attrs.field(factory=lambda: defaultdict(set))
    #: model name -> field names the server sent at least once
    seen_keys: dict[str, set[str]] = attrs.field(factory=lambda: defaultdict(set))
    #: "Model.field" -> enum values the SDK does not know
    unknown_enum_values: dict[str, set[str]] = attrs.field(factory=lambda: defaultdict(set))
    #: lenient-converter failures: (route, message); each one is an SDK bug
    lenient_failures: list[tuple[str, str]] = attrs.field(factory=list)
    #: non-2xx and unmodelled answers seen: "METHOD path -> status"
    unmodelled: set[str] = attrs.field(factory=set)
    strict_ok: int = 0

    def add(self, method: str, path: str, status: int, content_type: str, raw: bytes) -> None:
        self.bodies.append(Body(method, path, status, content_type, raw))

    def check_new(self) -> list[tuple[str, str]]:
        """Check the bodies recorded since the last call; return new lenient failures."""
        before = len(self.lenient_failures)
        new, self.checked = self.bodies[self.checked :], len(self.bodies)
        for body in new:
            self._check(body)
        return self.lenient_failures[before:]

    def _check(self, body: Body) -> None:
        route = f"{body.method} {_template(body.path)}"
        target = _target(body.method, body.path)
        if target is None or not 200 <= body.status < 300 or "json" not in body.content_type:
            self.unmodelled.add(f"{route} -> {body.status}")
            return
        try:
            data = json.loads(body.raw)
        except ValueError as exc:
            self.lenient_failures.append((route, f"not JSON: {exc}"))
            return
        try:
            parsed = converter.structure(data, target)
        except Exception as exc:
            self.lenient_failures.append((route, _describe(exc)))
            return
        try:
            strict_converter.structure(data, target)
            self.strict_ok += 1
        except Exception as exc:
            for line in _describe_lines(exc):
                self.dropped[route].add(re.sub(r"\[\d+\]", "[]", line))
        self._note_keys(data)
        self._note_enums(parsed)

    def _note_keys(self, data: Any) -> None:
        items: list[Any]
        if isinstance(data, dict) and "items" in data:
            items = data["items"]
        elif isinstance(data, list):
            items = data
        else:
            items = [data]
        for item in items:
            if not isinstance(item, dict):
                continue
            model = _guess_model(item)
            if model is None:
                continue
            self.seen_keys[model.__name__].update(item)
            request = item.get("request")
            if model is StartTask and isinstance(request, dict):
                self.seen_keys[StartRequest.__name__].update(request)

    def _note_enums(self, parsed: Any) -> None:
        if isinstance(parsed, Page):
            values: list[Any] = list(parsed.items)
        elif isinstance(parsed, list):
            values = parsed
        else:
            values = [parsed]
        for value in values:
            for field in ("status", "sandbox_status", "execution_status"):
                member = getattr(value, field, None)
                if member is not None and not getattr(member, "known", True):
                    self.unknown_enum_values[f"{type(value).__name__}.{field}"].add(member.value)

    def never_sent(self) -> dict[str, list[str]]:
        """Model fields the server did not send in any body of this run."""
        out = {}
        for model in (StartTask, Conversation, Sandbox, StartRequest, Event, SendMessageResult):
            seen = self.seen_keys.get(model.__name__)
            if not seen:
                continue
            # `payload` is the SDK's copy of the whole raw object, never a server field.
            missing = [
                f.name for f in attrs.fields(model) if f.name not in seen and f.name != "payload"
            ]
            if missing:
                out[model.__name__] = missing
        return out

    def summary_lines(self) -> list[str]:
        self.check_new()
        lines = [
            f"{len(self.bodies)} bodies recorded; {self.strict_ok} parsed strictly without drift",
        ]
        if self.lenient_failures:
            lines.append("LENIENT PARSE FAILURES (SDK bugs):")
            lines += [f"  {route}: {msg}" for route, msg in self.lenient_failures]
        if self.dropped:
            lines.append("fields the server sends that the models drop (strict converter):")
            for route in sorted(self.dropped):
                lines.append(f"  {route}")
                lines += [f"    {msg}" for msg in sorted(self.dropped[route])]
        else:
            lines.append("fields the server sends that the models drop: none")
        never = self.never_sent()
        if never:
            lines.append("model fields the server never sent in this run:")
            lines += [f"  {model}: {', '.join(names)}" for model, names in never.items()]
        if self.unknown_enum_values:
            lines.append("enum values the SDK does not know:")
            for where, values in sorted(self.unknown_enum_values.items()):
                lines.append(f"  {where}: {', '.join(sorted(values))}")
        if self.unmodelled:
            lines.append("answers not checked (errors, or routes the SDK has no model for yet):")
            lines += [f"  {entry}" for entry in sorted(self.unmodelled)]
        return lines


RECORDER = Recorder()


class RecordingResponse(aiohttp.ClientResponse):
    """An aiohttp response that hands every body it reads to `RECORDER`."""

    async def read(self) -> bytes:
        body = await super().read()
        RECORDER.add(
            self.method, self.url.path, self.status, self.headers.get("Content-Type", ""), body
        )
        return body


def _target(method: str, path: str) -> Any:
    for m, pattern, target in ROUTES:
        if m == method and pattern.match(path):
            return target
    return None


_HEX32 = re.compile(r"/[0-9a-f]{32}(?=/|$)|/[0-9a-f-]{36}(?=/|$)|/[A-Za-z0-9]{22}(?=/|$)")


def _template(path: str) -> str:
    return _HEX32.sub("/{id}", path)


def _guess_model(item: dict[str, Any]) -> type | None:
    if "app_conversation_id" in item or "agent_server_url" in item:
        return StartTask
    if "success" in item:
        return SendMessageResult
    if "sandbox_status" in item or "execution_status" in item:
        return Conversation
    if "sandbox_spec_id" in item or "exposed_urls" in item:
        return Sandbox
    if "kind" in item and "timestamp" in item:
        return Event
    return None


def _describe_lines(exc: BaseException) -> list[str]:
    if isinstance(exc, cattrs.BaseValidationError):
        return list(cattrs.transform_error(exc))
    return [f"{type(exc).__name__}: {exc}"]


def _describe(exc: BaseException) -> str:
    return "; ".join(_describe_lines(exc))[:800]
