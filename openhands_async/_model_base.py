"""What every model is built on: `_Model` (to_dict / to_json / from_dict, served by the
converter, which installs itself here with `_install_codec`) and `_OpenStrEnum` (enums
that keep values they do not know). Nothing here knows JSON."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Protocol, TypeVar

M = TypeVar("M", bound="_Model")


class _Codec(Protocol):
    def to_dict(self, model: _Model) -> dict[str, Any]: ...
    def to_json(self, model: _Model, indent: int | None) -> str: ...
    def from_dict(self, data: Mapping[str, Any], cls: type[M]) -> M: ...


_codec: _Codec | None = None


def _install_codec(codec: _Codec) -> None:
    global _codec
    _codec = codec


def _the_codec() -> _Codec:
    if _codec is None:  # only if models.py were loaded without the package
        raise RuntimeError("openhands_async._converter is not loaded")
    return _codec


class _Model:
    """What every model can do, as users of openai-python expect: plain data and back."""

    __slots__ = ()

    def to_dict(self) -> dict[str, Any]:
        """The model as JSON-ready data with the API's field names (timestamps as ISO 8601
        strings, statuses as their values); `type(m).from_dict(m.to_dict()) == m`.

        Secrets the model carries (a start request's `secrets`, a `session_api_key`) are
        included: this is the data, not a repr. An `Event` or a `User` gives back the whole
        object the server sent (its `payload`).

            task.to_dict()["status"]  # "READY"
            oh.StartTask.from_dict(task.to_dict()) == task  # True
        """
        return _the_codec().to_dict(self)

    def to_json(self, *, indent: int | None = 2) -> str:
        """`to_dict()` as a JSON string (`indent=None` for one line)."""
        return _the_codec().to_json(self, indent)

    @classmethod
    def from_dict(cls: type[M], data: Mapping[str, Any]) -> M:
        """Build the model from data as `to_dict()` writes it, or as the API sends it (unknown
        fields are ignored). Raises ValueError, naming the fields, on data that does not fit."""
        return _the_codec().from_dict(data, cls)


class _OpenStrEnum(str, enum.Enum):
    """A str enum that keeps values it does not know instead of failing.

    The server adds statuses over time. An unknown value becomes a pseudo-member whose
    `.value` is the raw string and whose `.known` is False; it still compares equal to
    that string.
    """

    @classmethod
    def _missing_(cls, value: object) -> Any:
        if not isinstance(value, str):
            return None
        member = str.__new__(cls, value)
        member._name_ = "UNKNOWN"
        member._value_ = value
        return member

    @property
    def known(self) -> bool:
        """False for a value this SDK version does not know (kept, never an error)."""
        return self._name_ != "UNKNOWN"

    def __str__(self) -> str:
        return str(self.value)

    def __repr__(self) -> str:
        return f"<{type(self).__name__}.{self._name_}: {self.value!r}>"
