"""Models and the converter, against the real server's captured bodies."""

from __future__ import annotations

import json
import typing
from collections.abc import Iterator
from datetime import datetime, timezone
from typing import Any

import attrs
import cattrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import openhands_async as oh
from openhands_async import models
from openhands_async._converter import (
    _is_optional,
    converter,
    strict_converter,
    structure,
    unstructure,
)
from openhands_async._start_request import make_start_request

from .captures import CAPTURES, body


def test_start_task_from_capture_is_typed_and_aware() -> None:
    task = structure(body("app-conversations_POST.txt"), oh.StartTask)
    assert task.id == "c8b8980b4e4f49af893ad641724e0f6e"
    assert task.status is oh.StartTaskStatus.WORKING
    assert task.created_at is not None
    assert task.created_at.tzinfo is not None
    assert task.request is not None
    assert task.request.initial_message is not None
    assert task.request.initial_message.text == "hello"


def test_naive_timestamps_are_utc() -> None:
    # The real server's start-task search writes timestamps without an offset.
    page = structure(body("start-tasks_search.txt"), oh.Page[oh.StartTask])
    created = page.items[0].created_at
    assert created is not None
    assert created.tzinfo == timezone.utc
    assert page.items[0].status is oh.StartTaskStatus.READY


@pytest.mark.parametrize(
    "text",
    [
        "2026-11-22T22:59:19.655475Z",
        "2026-11-22T22:59:19.655475z",
        " 2026-11-22T22:59:19.655475+00:00 ",
        "2026-11-22T22:59:19.655475",
        "2026-11-23T00:59:19.655475+02:00",
    ],
)
def test_timestamp_spellings_are_one_instant(text: str) -> None:
    parsed = structure({"id": "x", "created_at": text}, oh.StartTask).created_at
    assert parsed == datetime(2026, 11, 22, 22, 59, 19, 655475, tzinfo=timezone.utc)


def test_conversation_batch_with_null_and_strict_fit() -> None:
    data = body("app-conversations_batch_get_missing_and_found.txt")
    items = structure(data, list[oh.Conversation | None])
    assert items[0] is None
    conv = items[1]
    assert conv is not None
    assert conv.sandbox_status is oh.SandboxStatus.RUNNING
    assert conv.execution_status is oh.ExecutionStatus.FINISHED
    assert conv.is_terminal
    # Every field the real server sends is modelled: the strict converter accepts it.
    strict_converter.structure(data[1], oh.Conversation)
    assert conv.session_api_key is not None
    assert conv.session_api_key not in repr(conv)


def test_sandbox_from_capture() -> None:
    page = structure(body("sandboxes_search_1.txt"), oh.Page[oh.Sandbox])
    sandbox = page.items[0]
    assert sandbox.status is oh.SandboxStatus.RUNNING
    assert sandbox.exposed_urls == [
        oh.ExposedUrl(name="AGENT_SERVER", url="http://localhost:8100", port=8100)
    ]
    assert "XFGRUF" not in repr(sandbox)


def test_unknown_enum_values_and_fields_do_not_fail() -> None:
    data = dict(body("app-conversations_POST.txt"))
    data["status"] = "WARMING_UP_QUANTUM_CORE"
    data["brand_new_field"] = {"x": 1}
    task = structure(data, oh.StartTask)
    assert task.status == "WARMING_UP_QUANTUM_CORE"
    assert task.status.value == "WARMING_UP_QUANTUM_CORE"
    assert not task.status.known
    assert oh.StartTaskStatus.READY.known
    assert not task.is_terminal
    with pytest.raises(cattrs.ClassValidationError) as info:
        strict_converter.structure(data, oh.StartTask)
    assert "brand_new_field" in " ".join(cattrs.transform_error(info.value))


def test_wrong_shape_is_a_response_validation_error() -> None:
    with pytest.raises(oh.ResponseValidationError, match="StartTask"):
        structure({"status": "READY"}, oh.StartTask)  # no id
    with pytest.raises(oh.ResponseValidationError):
        structure({"id": "x", "created_at": "yesterday"}, oh.StartTask)
    with pytest.raises(oh.ResponseValidationError):
        structure({"id": "x", "status": 5}, oh.StartTask)


def test_start_request_sends_only_what_was_set_and_hides_secrets() -> None:
    req = make_start_request(
        "Fix it",
        repository="https://github.com/o/r.git",
        conversation_id="c8b8980b-4e4f-49af-893a-d641724e0f6e",
        secrets={"GITHUB_TOKEN": "ghp_supersecret"},
    )
    wire = unstructure(req)
    assert wire == {
        "conversation_id": "c8b8980b4e4f49af893ad641724e0f6e",
        "initial_message": {
            "content": [{"text": "Fix it", "cache_prompt": False, "type": "text"}],
            "role": "user",
            "run": True,
        },
        "selected_repository": "o/r",
        "secrets": {"GITHUB_TOKEN": "ghp_supersecret"},
    }
    assert "ghp_supersecret" not in repr(req)
    assert "GITHUB_TOKEN" in repr(req)


def test_start_request_mints_a_fresh_id_and_takes_content_lists() -> None:
    a = make_start_request("x")
    b = make_start_request(["look", oh.ImageContent(["https://example.invalid/a.png"])])
    assert a.conversation_id != b.conversation_id
    assert a.conversation_id is not None
    assert len(a.conversation_id) == 32
    assert b.initial_message is not None
    assert [c.type for c in b.initial_message.content] == ["text", "image"]
    assert converter.structure(unstructure(b.initial_message), oh.Message) == b.initial_message


def test_content_blocks_without_a_type_are_read_by_their_fields() -> None:
    # The spec gives both blocks `type` a default, so {"image_urls": [...]} is a valid image
    # block (found by the spec-generated bodies in test_hostile.py: it was rejected).
    got = structure({"content": [{"image_urls": ["u"]}, {"text": "t"}]}, oh.Message)
    assert got.content == [oh.ImageContent(["u"]), oh.TextContent("t")]
    with pytest.raises(oh.ResponseValidationError):
        structure({"content": [{"cache_prompt": True}]}, oh.Message)


@pytest.mark.parametrize("message", ["", "   ", [], [""]])
def test_empty_message_is_refused(message: object) -> None:
    with pytest.raises(ValueError, match="empty"):
        make_start_request(message)  # type: ignore[arg-type]


def test_bad_start_arguments() -> None:
    with pytest.raises(TypeError, match="message"):
        make_start_request(42)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="conversation_id"):
        make_start_request("x", conversation_id="nope")
    with pytest.raises(ValueError, match="repository"):
        make_start_request("x", repository="just-a-name")
    with pytest.raises(TypeError):
        make_start_request("x", surprise=True)  # type: ignore[call-arg]


def test_finish_action_text_is_the_agent_answer() -> None:
    # How the real open-source server records an agent's final answer (captured in the
    # integration suite): an ActionEvent whose action is a FinishAction.
    event = structure(
        {
            "id": "e1",
            "kind": "ActionEvent",
            "timestamp": "2026-11-22T22:59:32.018754",
            "source": "agent",
            "action": {"kind": "FinishAction", "message": "Hello from the fake LLM. Done."},
        },
        oh.Event,
    )
    assert event.text == "Hello from the fake LLM. Done."
    other = structure(
        {"id": "e2", "kind": "ActionEvent", "timestamp": "2026-11-22T22:59:32", "action": {}},
        oh.Event,
    )
    assert other.text is None


# ---------------------------------------------------------------- the converter's own hooks

OPTIONAL_TYPES = {
    str(hint): hint
    for name in models.__all__
    if attrs.has(cls := getattr(models, name))
    for hint in typing.get_type_hints(cls).values()
    if _is_optional(hint)
}


def _values(value: Any) -> Iterator[Any]:
    yield value
    children = value.values() if isinstance(value, dict) else value
    if isinstance(value, (dict, list)):
        for child in children:
            yield from _values(child)


def _captured_bodies() -> Iterator[Any]:
    for path in sorted(CAPTURES.iterdir()):
        try:
            if path.suffix == ".raw":
                yield json.loads(path.read_bytes())
            elif path.suffix in (".txt", ".json"):
                yield body(path.name)
        except ValueError:
            continue  # notes, headers-only answers, chunk logs


# Every value (at any depth) of the captured bodies: real requests, timestamps, statuses.
CAPTURED_VALUES = [v for data in _captured_bodies() for v in _values(data)]
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda kids: (
        st.lists(kids, max_size=3) | st.dictionaries(st.text(max_size=8), kids, max_size=3)
    ),
    max_leaves=8,
)


@pytest.mark.parametrize("hint", list(OPTIONAL_TYPES.values()), ids=list(OPTIONAL_TYPES))
def test_optional_hook_agrees_with_cattrs(hint: Any) -> None:
    # `X | None` fields use a hook that looks X's hook up once; cattrs' own Optional hook
    # (still on the converter) is the reference: same value, or the same kind of error.
    fast = converter.get_structure_hook(hint)

    def outcome(hook: Any, value: Any) -> Any:
        try:
            return hook(value, hint)
        except Exception as exc:
            return type(exc)

    @settings(
        max_examples=80, deadline=None, database=None, suppress_health_check=list(HealthCheck)
    )
    @given(st.sampled_from(CAPTURED_VALUES) | JSON)
    def check(value: Any) -> None:
        assert outcome(fast, value) == outcome(converter._structure_optional, value)

    check()


@pytest.mark.parametrize("not_an_object", ["abc", "request", ["x"], 5])
@pytest.mark.parametrize(
    "model", [models.StartTask, models.StartRequest, models.Conversation, models.User]
)
def test_a_model_is_only_ever_read_from_a_json_object(model: type, not_an_object: Any) -> None:
    # "request" would pass cattrs' `"field" in value` test as a substring of a string.
    with pytest.raises(oh.ResponseValidationError, match="expected a JSON object"):
        structure(not_an_object, model)


@pytest.mark.parametrize("not_an_object", ["", "initial_message", ["x"]])
def test_a_nested_request_that_is_not_an_object_is_refused(not_an_object: Any) -> None:
    task = {"id": "a" * 32, "status": "WORKING", "created_at": "2025-01-01T00:00:00Z"}
    with pytest.raises(oh.ResponseValidationError, match="request"):
        structure({**task, "request": not_an_object}, models.StartTask)


def test_a_start_request_message_without_content_reads_as_empty() -> None:
    # The spec's SendMessageRequest requires no field; the server defaults content to [].
    task = {"id": "a" * 32, "status": "WORKING", "created_at": "2025-01-01T00:00:00Z"}
    got = structure({**task, "request": {"initial_message": {"role": "user"}}}, models.StartTask)
    assert got.request is not None
    assert got.request.initial_message == models.Message(content=[], role="user")
    assert got.request.initial_message.text == ""
