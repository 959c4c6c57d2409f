"""Every public name has a docstring: the API reference (`nox -s docs`) is built from them.

Checked: what `openhands_async`, `openhands_async.testing` and its pytest plugin export,
the public methods and properties of those classes (and of their SDK base classes), and the
public methods of every resource the client wires (found from the client's cached
properties and the sub-resources they hold, so a new resource is checked without editing
this test). Each resource and exported name also has its `:::` entry in the reference.
"""

from __future__ import annotations

import enum
import functools
import inspect
import typing
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

import openhands_async
import openhands_async.testing
from openhands_async import OpenHandsClient
from openhands_async.lib.batch import Journal, SQLiteJournal
from openhands_async.resources._base import Resource
from openhands_async.testing import pytest_plugin

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "reference"

# A class that implements a documented protocol without subclassing it: its methods are
# documented by the protocol's (the reference shows them there).
IMPLEMENTS: dict[type, type] = {SQLiteJournal: Journal}


def _unwrap(member: Any) -> Any:
    if isinstance(member, (staticmethod, classmethod)):
        return member.__func__
    if isinstance(member, property):
        return member.fget
    if isinstance(member, functools.cached_property):
        return member.func
    return member


def _is_documentable(member: Any) -> bool:
    member = _unwrap(member)
    return inspect.isfunction(member) or inspect.isclass(member)


def _has_doc(obj: Any) -> bool:
    return bool((getattr(obj, "__doc__", None) or "").strip())


def _sdk_classes(cls: type) -> Iterator[type]:
    for klass in cls.__mro__:
        if klass.__module__.startswith("openhands_async"):
            yield klass


def _undocumented_members(cls: type) -> Iterator[str]:
    protocol = IMPLEMENTS.get(cls)
    for klass in _sdk_classes(cls):
        if not _has_doc(klass):
            yield f"{klass.__module__}.{klass.__qualname__}"
        for name, member in vars(klass).items():
            if name.startswith("_") or not _is_documentable(member):
                continue
            if inspect.isclass(member) or isinstance(member, enum.Enum):
                continue
            if _has_doc(_unwrap(member)):
                continue
            if protocol is not None and _has_doc(getattr(protocol, name, None)):
                continue
            yield f"{klass.__module__}.{klass.__qualname__}.{name}"


def _exported(module: ModuleType) -> Iterator[tuple[str, Any]]:
    for name in module.__all__:
        yield f"{module.__name__}.{name}", getattr(module, name)


def _resource_classes() -> dict[str, type]:
    """client attribute path -> resource class: the client's cached properties and the
    sub-resources they hold (`client.git.repositories`, `client.settings.profiles`)."""
    client = OpenHandsClient(api_key="test-key", base_url="http://127.0.0.1:9")  # never sends
    todo = [
        (name, getattr(client, name))
        for name, member in vars(OpenHandsClient).items()
        if isinstance(member, functools.cached_property)
    ]
    found: dict[str, type] = {}
    while todo:
        path, resource = todo.pop()
        found[path] = type(resource)
        todo += [
            (f"{path}.{attr}", value)
            for attr, value in vars(resource).items()
            if not attr.startswith("_") and isinstance(value, Resource)
        ]
    return found


def test_the_client_has_resources() -> None:
    # The walk below finds them from the client's cached properties: it must find some.
    assert {"conversations", "start_tasks", "events", "sandboxes", "users"} <= set(
        _resource_classes()
    )


@pytest.mark.parametrize("module", [openhands_async, openhands_async.testing, pytest_plugin])
def test_every_exported_name_has_a_docstring(module: ModuleType) -> None:
    missing: set[str] = set()
    for qualname, obj in _exported(module):
        if typing.get_origin(obj) is not None:  # a type alias (Literal[...]): griffe's docs
            continue
        if inspect.isclass(obj):
            missing.update(_undocumented_members(obj))
        elif callable(obj) and not _has_doc(obj):
            missing.add(qualname)
    assert not missing, "public names without a docstring:\n  " + "\n  ".join(sorted(missing))


def test_every_resource_method_has_a_docstring() -> None:
    missing: set[str] = set()
    for attribute, cls in _resource_classes().items():
        prop = OpenHandsClient.__dict__.get(attribute)
        if prop is not None and not _has_doc(prop.func):
            missing.add(f"OpenHandsClient.{attribute}")
        missing.update(_undocumented_members(cls))
    assert not missing, "resource methods without a docstring:\n  " + "\n  ".join(sorted(missing))


def test_every_resource_is_in_the_reference() -> None:
    pages = "\n".join(page.read_text() for page in REFERENCE.glob("*.md"))
    absent = [
        f"{cls.__module__}.{cls.__qualname__}"
        for cls in _resource_classes().values()
        if f"::: {cls.__module__}.{cls.__qualname__}" not in pages
    ]
    assert not absent, f"add a `::: name` for these to docs/reference/resources.md: {absent}"


def test_the_check_sees_a_missing_docstring() -> None:
    class Documented:
        """A class with one undocumented method."""

        def method(self) -> None:
            pass

    Documented.__module__ = "openhands_async.example"
    assert list(_undocumented_members(Documented)) == [
        "openhands_async.example.test_the_check_sees_a_missing_docstring.<locals>.Documented.method"
    ]


@pytest.mark.parametrize("module", [openhands_async, openhands_async.testing])
def test_every_exported_name_is_in_the_reference(module: ModuleType) -> None:
    pages = {
        line.strip() for page in REFERENCE.glob("*.md") for line in page.read_text().split("\n")
    }
    absent = [
        name
        for name in module.__all__
        if not name.startswith("__")
        and f"::: {module.__name__}.{name}" not in pages
        # or its whole module is rendered (`::: openhands_async.errors`)
        and f"::: {getattr(getattr(module, name), '__module__', None)}" not in pages
    ]
    assert not absent, f"add a `::: {module.__name__}.NAME` to docs/reference/ for: {absent}"
