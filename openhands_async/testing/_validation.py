"""Request validation that answers the way FastAPI does (422 with a `detail` list, or 400)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import attrs
from multidict import MultiMapping

from ._wire import dashed, parse_datetime_us, uuid_hex

# pydantic writes SecretStr values like this; the start request's secrets are write-only.
REDACTED = "**********"
_STRING_FIELDS = (
    "sandbox_id",
    "system_message_suffix",
    "llm_model",
    "agent_profile_id",
    "selected_repository",
    "selected_branch",
    "title",
)
_ROLES = ("user", "system", "assistant", "tool")
_TRUE = frozenset({"1", "on", "t", "true", "y", "yes"})
_FALSE = frozenset({"0", "off", "f", "false", "n", "no"})
_UUID_CHARS = frozenset("0123456789abcdefABCDEF-")


class Invalid(Exception):
    """A 422 whose body is `{"detail": errors}`."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(errors)
        self.errors = errors


class BadRequest(Exception):
    """A 400 whose body is `{"detail": detail}`."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def error(
    kind: str, loc: Sequence[str | int], msg: str, value: Any, ctx: dict[str, Any] | None = None
) -> dict[str, Any]:
    item: dict[str, Any] = {"type": kind, "loc": list(loc), "msg": msg, "input": value}
    if ctx is not None:
        item["ctx"] = ctx
    return item


def uuid_error(loc: Sequence[str | int], value: Any) -> dict[str, Any]:
    if not isinstance(value, str):
        return error("uuid_type", loc, "UUID input should be a string, bytes or UUID object", value)
    body = value[9:] if value.lower().startswith("urn:uuid:") else value
    bad = next(((i, ch) for i, ch in enumerate(body) if ch not in _UUID_CHARS), None)
    if bad is not None:
        reason = (
            "invalid character: expected an optional prefix of `urn:uuid:` followed by "
            f"[0-9a-fA-F-], found `{bad[1]}` at {bad[0] + 1}"
        )
    elif "-" in body:
        reason = f"invalid group count: expected 5, found {body.count('-') + 1}"
    else:
        reason = f"invalid length: expected length 32 for simple format, found {len(body)}"
    return error(
        "uuid_parsing", loc, f"Input should be a valid UUID, {reason}", value, {"error": reason}
    )


class QueryReader:
    """Reads typed query parameters, collecting every error before answering 422 once."""

    def __init__(self, query: MultiMapping[str]) -> None:
        self._query = query
        self.errors: list[dict[str, Any]] = []

    def check(self) -> None:
        if self.errors:
            raise Invalid(self.errors)

    def text(self, name: str) -> str | None:
        # Like Starlette, a repeated scalar parameter keeps its last value.
        values = self._query.getall(name, [])
        return values[-1] if values else None

    def integer(self, name: str, default: int, *, gt: int, le: int) -> int:
        raw = self.text(name)
        if raw is None:
            return default
        loc = ("query", name)
        try:
            value = int(raw.strip())
        except ValueError:
            self.errors.append(
                error(
                    "int_parsing",
                    loc,
                    "Input should be a valid integer, unable to parse string as an integer",
                    raw,
                )
            )
            return default
        if value <= gt:
            self.errors.append(
                error("greater_than", loc, f"Input should be greater than {gt}", raw, {"gt": gt})
            )
        elif value > le:
            msg = f"Input should be less than or equal to {le}"
            self.errors.append(error("less_than_equal", loc, msg, raw, {"le": le}))
        return value

    def uuid(self, name: str) -> str | None:
        raw = self.text(name)
        if raw is None:
            return None
        value = uuid_hex(raw)
        if value is None:
            self.errors.append(uuid_error(("query", name), raw))
        return value

    def datetime_us(self, name: str) -> int | None:
        raw = self.text(name)
        if raw is None:
            return None
        value = parse_datetime_us(raw)
        if value is None:
            reason = "input is too short" if len(raw) < 10 else "invalid character in year"
            msg = f"Input should be a valid datetime or date, {reason}"
            self.errors.append(
                error("datetime_from_date_parsing", ("query", name), msg, raw, {"error": reason})
            )
        return value

    def choice(self, name: str, default: str, allowed: Sequence[str]) -> str:
        raw = self.text(name)
        if raw is None:
            return default
        if raw not in allowed:
            quoted = [f"'{option}'" for option in allowed]
            expected = ", ".join(quoted[:-1]) + f" or {quoted[-1]}"
            self.errors.append(
                error(
                    "enum",
                    ("query", name),
                    f"Input should be {expected}",
                    raw,
                    {"expected": expected},
                )
            )
            return default
        return raw

    def boolean(self, name: str, default: bool) -> bool:
        raw = self.text(name)
        if raw is None:
            return default
        if raw.lower() in _TRUE:
            return True
        if raw.lower() not in _FALSE:
            msg = "Input should be a valid boolean, unable to interpret input"
            self.errors.append(error("bool_parsing", ("query", name), msg, raw))
        return False

    def required_list(self, name: str) -> list[str]:
        values = list(self._query.getall(name, []))
        if not values:
            self.errors.append(error("missing", ("query", name), "Field required", None))
        return values


@attrs.frozen
class StartBody:
    """A validated start request: what the server echoes back, plus what the fake acts on."""

    echo: dict[str, Any]
    conversation_id: str | None  # 32 hex
    message: str | None  # the initial message's text; None without an initial message


def parse_start_body(raw: bytes) -> StartBody:
    if not raw.strip():
        raise Invalid([error("missing", ("body",), "Field required", None)])
    try:
        body = json.loads(raw)
    except ValueError as exc:
        pos = getattr(exc, "pos", 0)
        msg = getattr(exc, "msg", str(exc))
        raise Invalid(
            [error("json_invalid", ("body", pos), "JSON decode error", {}, {"error": msg})]
        ) from None
    if not isinstance(body, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        raise Invalid([error("model_attributes_type", ("body",), msg, body)])
    errors: list[dict[str, Any]] = []
    for name in _STRING_FIELDS:
        value = body.get(name)
        if value is not None and not isinstance(value, str):
            errors.append(
                error("string_type", ("body", name), "Input should be a valid string", value)
            )
    conversation_id = _uuid_field(body, "conversation_id", errors)
    parent_id = _uuid_field(body, "parent_conversation_id", errors)
    initial, message = _initial_message(body.get("initial_message"), errors)
    secrets = body.get("secrets")
    if secrets is not None and not isinstance(secrets, dict):
        msg = "Input should be a valid dictionary"
        errors.append(error("dict_type", ("body", "secrets"), msg, secrets))
    if errors:
        raise Invalid(errors)
    echo = {
        "sandbox_id": body.get("sandbox_id"),
        "conversation_id": dashed(conversation_id) if conversation_id else None,
        "initial_message": initial,
        "system_message_suffix": body.get("system_message_suffix"),
        "processors": body.get("processors"),
        "llm_model": body.get("llm_model"),
        "agent_profile_id": body.get("agent_profile_id"),
        "selected_repository": body.get("selected_repository"),
        "selected_branch": body.get("selected_branch"),
        "git_provider": body.get("git_provider"),
        "suggested_task": body.get("suggested_task"),
        "title": body.get("title"),
        "trigger": body.get("trigger"),
        "pr_number": body.get("pr_number") or [],
        "parent_conversation_id": dashed(parent_id) if parent_id else None,
        "agent_type": body.get("agent_type") or "default",
        "public": body.get("public"),
        "plugins": body.get("plugins"),
        "secrets": {name: REDACTED for name in secrets} if isinstance(secrets, dict) else None,
    }
    return StartBody(echo=echo, conversation_id=conversation_id, message=message)


def _uuid_field(body: dict[str, Any], name: str, errors: list[dict[str, Any]]) -> str | None:
    value = body.get(name)
    if value is None:
        return None
    parsed = uuid_hex(value) if isinstance(value, str) else None
    if parsed is None:
        errors.append(uuid_error(("body", name), value))
    return parsed


def _initial_message(
    value: Any, errors: list[dict[str, Any]]
) -> tuple[dict[str, Any] | None, str | None]:
    loc: tuple[str | int, ...] = ("body", "initial_message")
    if value is None:
        return None, None
    if not isinstance(value, dict):
        msg = "Input should be a valid dictionary or object to extract fields from"
        errors.append(error("model_attributes_type", loc, msg, value))
        return None, None
    role = value.get("role", "user")
    if role not in _ROLES:
        expected = "'user', 'system', 'assistant' or 'tool'"
        msg = f"Input should be {expected}"
        errors.append(error("literal_error", (*loc, "role"), msg, role, {"expected": expected}))
    content = value.get("content", [])
    if not isinstance(content, list):
        errors.append(
            error("list_type", (*loc, "content"), "Input should be a valid list", content)
        )
        content = []
    items: list[dict[str, Any]] = []
    texts: list[str] = []
    for index, item in enumerate(content):
        part = _content_part(item)
        if part is None:
            errors.append(
                error("missing", (*loc, "content", index, "text"), "Field required", item)
            )
            continue
        items.append(part)
        if part["type"] == "text":
            texts.append(part["text"])
    message = {"role": role, "content": items, "run": bool(value.get("run", False))}
    return message, "\n".join(texts)


def _content_part(item: Any) -> dict[str, Any] | None:
    if not isinstance(item, dict):
        return None
    cache_prompt = bool(item.get("cache_prompt", False))
    kind = item.get("type")
    if kind in (None, "text") and isinstance(item.get("text"), str):
        return {"cache_prompt": cache_prompt, "type": "text", "text": item["text"]}
    if kind in (None, "image") and isinstance(item.get("image_urls"), list):
        return {"cache_prompt": cache_prompt, "type": "image", "image_urls": item["image_urls"]}
    return None
