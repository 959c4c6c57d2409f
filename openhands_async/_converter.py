"""The one cattrs converter: every hook the models need, registered in one place.

`converter` is lenient (unknown fields ignored, as new server fields must not break
clients); `strict_converter` forbids extra keys and is for tests that watch for drift.
`ModelCodec` serves the models' `to_dict()` / `to_json()` / `from_dict()` with `converter`.
"""

from __future__ import annotations

import copy
import enum
import functools
import json
import types
import typing
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from typing import Any, TypeVar

import attrs
import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override
from cattrs.preconf.json import make_converter as _make_json_converter

from . import errors, models
from .models import (
    Event,
    ExecutionStatus,
    ImageContent,
    SandboxStatus,
    StartRequest,
    StartTaskStatus,
    TextContent,
    User,
    _OpenStrEnum,
)
from .models_catalog import WebClientConfig
from .models_settings import ApiKeyInfo, SecretStr, Settings

T = TypeVar("T")
NoneType = type(None)

__all__ = [
    "ModelCodec",
    "converter",
    "make_converter",
    "strict_converter",
    "structure",
    "structurer",
    "unstructure",
]


def _parse_datetime(value: Any, _: type) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value)  # the common case (3.11+ reads "Z")
        except ValueError:
            text = value.strip()
            # Python 3.10's fromisoformat rejects "Z"; some server answers carry no offset.
            if text.endswith(("Z", "z")):
                text = text[:-1] + "+00:00"
            parsed = datetime.fromisoformat(text)
    else:
        raise TypeError(f"expected an ISO 8601 timestamp string, got {type(value).__name__}")
    # The server writes UTC; a timestamp without an offset is UTC too (seen in start-task search).
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)


def _structure_str(value: Any, cls: type[str]) -> str:
    # cattrs would call str() on anything, so a null id came out as the string "None". Also
    # serves the str-based enums (cls(value) keeps their open-enum handling).
    if isinstance(value, str):
        return value if cls is str else cls(value)
    raise TypeError(f"expected a string, got {type(value).__name__}")


def _structure_content(value: Any, _: type) -> TextContent | ImageContent:
    if not isinstance(value, dict):
        raise TypeError(f"message content must be an object, got {type(value).__name__}")
    # `type` defaults server-side ("text" / "image"), so the spec lets a block omit it.
    implied = "text" if "text" in value else "image" if "image_urls" in value else None
    kind = value.get("type", implied)
    # Content blocks are structured by the lenient converter in both modes: they are leaves.
    if kind == "text":
        return converter.structure(value, TextContent)
    if kind == "image":
        return converter.structure(value, ImageContent)
    raise ValueError(f"unknown message content type {kind!r}")


def _structure_event(value: Any, _: type) -> Event:
    if not isinstance(value, dict):
        raise TypeError(f"an event must be an object, got {type(value).__name__}")
    if "id" not in value or "timestamp" not in value:
        raise ValueError("an event needs an id and a timestamp")
    source = value.get("source")
    return Event(
        id=str(value["id"]),
        kind=str(value.get("kind") or ""),
        timestamp=_parse_datetime(value["timestamp"], datetime),
        source=source if isinstance(source, str) else None,
        payload=dict(value),
    )


def _is_optional(type_: Any) -> bool:
    args = typing.get_args(type_)
    return (
        typing.get_origin(type_) in (typing.Union, types.UnionType)
        and len(args) == 2
        and NoneType in args
    )


def _optional_hook(type_: Any, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    # cattrs' own Optional hook looks the inner hook up on every call: once is enough.
    inner = next(arg for arg in type_.__args__ if arg is not NoneType)
    hook = conv.get_structure_hook(inner)

    def structure_optional(value: Any, _: Any) -> Any:
        return None if value is None else hook(value, inner)

    return structure_optional


def _enum_hook(cls: type[enum.Enum]) -> Callable[[Any, Any], Any]:
    # A dict look-up for known values; the class call (slow, through EnumMeta) only for
    # unknown ones, which the SDK's enums accept via `_missing_`.
    members = cls._value2member_map_

    def structure_enum(value: Any, _: Any) -> Any:
        try:
            return members[value]
        except (KeyError, TypeError):
            return cls(value)

    return structure_enum


def _object_hook(cls: type, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    # cattrs' generated hook tests `"field" in value`: on a string that is a substring test,
    # so "abc" passed as a model with no required fields.
    hook: Callable[[Any, Any], Any] = make_dict_structure_fn(cls, conv)

    def structure_object(value: Any, type_: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected a JSON object, got {type(value).__name__}")
        return hook(value, type_)

    return structure_object


def _is_open_enum(type_: Any) -> bool:
    return isinstance(type_, type) and issubclass(type_, _OpenStrEnum)


def _payload_hook(cls: type, conv: cattrs.Converter) -> Callable[[Any, Any], Any]:
    hook = _object_hook(cls, conv)

    def structure_with_payload(value: Any, type_: Any) -> Any:
        return attrs.evolve(hook(value, type_), payload=dict(value))

    return structure_with_payload


def make_converter(*, strict: bool = False) -> cattrs.Converter:
    conv = _make_json_converter(forbid_extra_keys=strict, detailed_validation=True)
    conv.register_structure_hook_factory(_is_optional, _optional_hook)
    # By class: as str subclasses they would otherwise get the `str` hook, `cls(value)`.
    for status_enum in (StartTaskStatus, SandboxStatus, ExecutionStatus):
        conv.register_structure_hook(status_enum, _enum_hook(status_enum))
        # Plain strings out (to_dict): the value, also for a status the SDK does not know.
        conv.register_unstructure_hook(status_enum, lambda status: status.value)
    # Every other open enum (git providers, task types, ...): the same hook, made per class.
    conv.register_structure_hook_factory(_is_open_enum, _enum_hook)
    conv.register_structure_hook(datetime, _parse_datetime)
    conv.register_structure_hook(str, _structure_str)
    conv.register_unstructure_hook(datetime, lambda d: d.isoformat())
    conv.register_structure_hook(TextContent | ImageContent, _structure_content)
    conv.register_structure_hook_factory(attrs.has, _object_hook)
    # Events keep their raw object: kinds and their fields vary too much to type them all.
    conv.register_structure_hook(Event, _structure_event)
    # Models that keep the raw object too (`payload`): the server adds fields often.
    for with_payload in (User, Settings, WebClientConfig, ApiKeyInfo):
        conv.register_structure_hook(with_payload, _payload_hook(with_payload, conv))
    # A secret goes on the wire as its value; it is never structured from an answer.
    conv.register_unstructure_hook(SecretStr, SecretStr.get_secret_value)
    # Both keep the object the server sent: that object is their data, and reads back the
    # same (a deep copy: changing the dict must not change the model). One built by hand
    # (no payload) writes its typed fields.
    for kept in (Event, User):
        typed = make_dict_unstructure_fn(kept, conv, payload=override(omit=True))
        conv.register_unstructure_hook(
            kept, lambda model, typed=typed: copy.deepcopy(model.payload) or typed(model)
        )
    # A request sends only what the caller set, so the server's own defaults apply.
    conv.register_unstructure_hook(
        StartRequest,
        make_dict_unstructure_fn(StartRequest, conv, _cattrs_omit_if_default=True),
    )
    return conv


converter = make_converter()
strict_converter = make_converter(strict=True)


class ModelCodec:
    """`to_dict()` / `to_json()` / `from_dict()` of every model, through `converter`."""

    def to_dict(self, model: models._Model) -> dict[str, Any]:
        data: dict[str, Any] = converter.unstructure(model)
        return data

    def to_json(self, model: models._Model, indent: int | None) -> str:
        return json.dumps(self.to_dict(model), indent=indent, ensure_ascii=False)

    def from_dict(self, data: Mapping[str, Any], cls: type[models.M]) -> models.M:
        if not isinstance(data, Mapping):
            raise TypeError(f"{cls.__name__}.from_dict takes a mapping, got {type(data).__name__}")
        try:
            result: models.M = converter.structure(dict(data), cls)
        except cattrs.BaseValidationError as exc:
            detail = "; ".join(cattrs.transform_error(exc))
            raise ValueError(f"the data does not fit {cls.__name__}: {detail}") from None
        except (TypeError, ValueError) as exc:  # the models' own hooks raise plain ones
            raise ValueError(f"the data does not fit {cls.__name__}: {exc}") from None
        return result


models._install_codec(ModelCodec())


def structure(data: Any, cls: type[T], *, method: str = "", url: str = "") -> T:
    """Structure a decoded JSON answer, turning any mismatch into ResponseValidationError."""
    return structurer(cls, method=method, url=url)(data)


def structurer(
    cls: type[T],
    *,
    method: str = "",
    url: str = "",
    field_hooks: Mapping[str, Callable[[Any, Any], Any]] | None = None,
) -> Callable[[Any], T]:
    """`structure` for many answers of one type (a stream's elements): the type is looked
    up once, not per answer (that look-up costs a third of a small element's structuring).

    `field_hooks` (attrs classes only) replaces the hooks of some fields for this structurer
    alone; the converter itself is not changed.
    """
    if field_hooks:
        hook = _hook_with(cls, tuple(field_hooks.items()))  # type: ignore[arg-type]
    else:
        hook = converter.get_structure_hook(cls)
    # cattrs would iterate a string (or dict) element by element: slow and wrong
    want_list = typing.get_origin(cls) is list

    def structure_one(data: Any) -> T:
        try:
            if want_list and not isinstance(data, list):
                raise TypeError(f"expected a JSON array, got {type(data).__name__}")
            result: T = hook(data, cls)
            return result
        except Exception as exc:  # cattrs raises ClassValidationError groups and plain errors
            raise _validation_error(exc, cls, data, method, url) from None

    return structure_one


@functools.lru_cache(maxsize=16)
def _hook_with(cls: type, field_hooks: tuple[tuple[str, Any], ...]) -> Callable[[Any, Any], Any]:
    overrides = {name: override(struct_hook=hook) for name, hook in field_hooks}
    generated: Callable[[Any, Any], Any] = make_dict_structure_fn(
        cls,
        converter,
        **overrides,  # type: ignore[arg-type]
    )

    def structure_object(value: Any, type_: Any) -> Any:
        if not isinstance(value, dict):
            raise TypeError(f"expected a JSON object, got {type(value).__name__}")
        return generated(value, type_)

    return structure_object


def _validation_error(
    exc: Exception, cls: Any, data: Any, method: str, url: str
) -> errors.ResponseValidationError:
    if isinstance(exc, cattrs.BaseValidationError):
        detail = "; ".join(cattrs.transform_error(exc))
    else:
        detail = f"{type(exc).__name__}: {exc}"
    name = getattr(cls, "__name__", str(cls))
    return errors.ResponseValidationError(
        f"the server's answer does not fit {name}: {detail[:500]}",
        method=method,
        url=url,
        content_type="application/json",
        body=data,
    )


def unstructure(obj: Any) -> Any:
    return converter.unstructure(obj)
