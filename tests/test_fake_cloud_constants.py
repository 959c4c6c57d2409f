"""FakeCloud's own wire vocabulary (testing/_constants.py) against the spec and the SDK.

FakeCloud never imports the SDK (it serves the wire, so it catches SDK bugs instead of
sharing them); these checks keep its lists, the spec's enums and the SDK's from drifting
apart silently.
"""

from __future__ import annotations

import typing
from typing import Any

import pytest

import openhands_async as oh
from openhands_async import _constants as sdk_constants
from openhands_async.testing import _constants as fake
from openhands_async.testing._app import API_ROUTES, GROUPS, PROBES, ROUTE_NAMES
from openhands_async.testing._plan import DEFAULT_START_TIMELINE

from .spec import load_spec

SPEC = load_spec()
SCHEMAS: dict[str, Any] = SPEC["components"]["schemas"]


def _query_enum(path: str, name: str) -> list[str]:
    """The enum of a query parameter (under `anyOf` when it is optional)."""
    for parameter in SPEC["paths"][path]["get"]["parameters"]:
        if parameter["name"] == name:
            schema = parameter["schema"]
            for option in [schema, *schema.get("anyOf", [])]:
                if "enum" in option:
                    return list(option["enum"])
                if "$ref" in option:
                    return list(SCHEMAS[option["$ref"].rsplit("/", 1)[-1]]["enum"])
    raise AssertionError(f"no enum for {name} on {path}")


@pytest.mark.parametrize(
    ("ours", "schema"),
    [
        (fake.START_STATUSES, "AppConversationStartTaskStatus"),
        (fake.SANDBOX_STATUSES, "SandboxStatus"),
        (fake.EXECUTION_STATUSES, "ConversationExecutionStatus"),
        (fake.START_TASK_SORTS, "AppConversationStartTaskSortOrder"),
        (fake.EVENT_SORTS, "EventSortOrder"),
    ],
)
def test_lists_match_the_spec_enums(ours: tuple[str, ...], schema: str) -> None:
    assert list(ours) == SCHEMAS[schema]["enum"]  # same values, same order


def test_event_kinds_match_the_spec() -> None:
    base = "/api/v1/conversation/{conversation_id}/events"
    assert list(fake.EVENT_KINDS) == _query_enum(f"{base}/search", "kind__eq")
    assert list(fake.EVENT_KINDS) == _query_enum(f"{base}/count", "kind__eq")


def test_sort_parameters_use_the_spec_enums() -> None:
    app = "/api/v1/app-conversations"
    assert list(fake.START_TASK_SORTS) == _query_enum(f"{app}/start-tasks/search", "sort_order")
    events = "/api/v1/conversation/{conversation_id}/events/search"
    assert list(fake.EVENT_SORTS) == _query_enum(events, "sort_order")


@pytest.mark.parametrize(
    ("ours", "enum"),
    [
        (fake.START_STATUSES, oh.StartTaskStatus),
        (fake.SANDBOX_STATUSES, oh.SandboxStatus),
        (fake.EXECUTION_STATUSES, oh.ExecutionStatus),
    ],
)
def test_lists_match_the_sdk_enums(ours: tuple[str, ...], enum: Any) -> None:
    assert list(ours) == [member.value for member in enum]


def test_sort_orders_match_the_sdk() -> None:
    from openhands_async.resources import events, start_tasks

    assert typing.get_args(start_tasks.StartTaskOrder) == fake.START_TASK_SORTS
    assert typing.get_args(events.EventOrder) == fake.EVENT_SORTS


def test_outcomes_are_statuses() -> None:
    assert set(fake.START_OUTCOMES) == {s.value for s in oh.StartTaskStatus if s.is_terminal}
    assert set(fake.START_OUTCOMES) <= set(fake.START_STATUSES)
    assert set(fake.RUN_OUTCOMES) <= set(fake.EXECUTION_STATUSES)
    assert set(fake.RUN_OUTCOMES) == {
        "finished",
        "error",
        "stuck",
        "waiting_for_confirmation",
    }
    # The default timeline walks every non-error status, in order.
    assert [s for s, _ in DEFAULT_START_TIMELINE] == list(fake.START_STATUSES[:-1])


def test_batch_limits_fit_the_sdk() -> None:
    # The SDK's chunks must never be refused by a FakeCloud batch read, and FakeCloud must
    # refuse one id more than the server allows (len(ids) < 100; start tasks: <= 100).
    limits = [
        fake.MAX_CONVERSATION_IDS,
        fake.MAX_SANDBOX_IDS,
        fake.MAX_EVENT_IDS,
        fake.MAX_START_TASK_IDS,
    ]
    assert sdk_constants.MAX_BATCH_IDS == min(limits) == 99
    assert fake.MAX_START_TASK_IDS == 100
    assert sdk_constants.MAX_PAGE_SIZE == fake.MAX_PAGE_SIZE == 100


def test_route_names_partition() -> None:
    names = [route.name for group in GROUPS for route in group.table()]
    assert len(names) == len(set(names))  # one name, one route
    assert {"alive", "health", "ready"} == PROBES
    assert not PROBES & API_ROUTES
    assert {
        "conversation_page",
        "agent_events_socket",  # checks the key in its first frame itself
        "not_found",
        "method_not_allowed",
    } == ROUTE_NAMES - PROBES - API_ROUTES


def test_fake_cloud_imports_nothing_from_the_sdk() -> None:
    import ast
    from pathlib import Path

    import openhands_async.testing as testing

    root = Path(testing.__file__).parent
    for path in root.rglob("*.py"):
        if path == root / "pytest_plugin.py":
            continue  # the pytest plugin binds a client to the fake: it imports the package
        depth = len(path.relative_to(root).parts)  # 1: testing/x.py, 2: testing/_routes/x.py
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                assert node.level <= depth, f"{path.name} imports from outside testing/"
                if node.level == 0:
                    assert not (node.module or "").startswith("openhands_async"), path.name
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("openhands_async") for a in node.names), path.name


def test_issue20_lists_match_the_spec_and_the_sdk() -> None:
    from openhands_async.testing._routes.git import SORTS
    from openhands_async.testing._routes.secrets import PROVIDERS

    assert list(PROVIDERS) == SCHEMAS["ProviderType"]["enum"]
    assert list(PROVIDERS) == [member.value for member in oh.GitProvider]
    assert list(SORTS) == SCHEMAS["SortOrder"]["enum"]
    assert [m.value for m in oh.SuggestedTaskType] == SCHEMAS["TaskType"]["enum"]
