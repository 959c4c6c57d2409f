"""Models to plain data and back: `to_dict()`, `to_json()`, `from_dict()` (one converter)."""

from __future__ import annotations

import json
import types
import typing
from datetime import datetime, timedelta, timezone
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

import openhands_async as oh
from openhands_async._converter import structure
from openhands_async.models import _OpenStrEnum

from .captures import body

# Every model with the three methods (all but the generic Page).
MODELS = [
    oh.TextContent,
    oh.ImageContent,
    oh.Message,
    oh.StartRequest,
    oh.StartTask,
    oh.Conversation,
    oh.ExposedUrl,
    oh.Sandbox,
    oh.SendMessageResult,
    oh.Event,
    oh.User,
]

# Real answers: (capture, where the model is in it, model).
CAPTURED = [
    ("app-conversations_POST.txt", lambda b: b, oh.StartTask),
    ("start-tasks_batch_get_final.json", lambda b: b[0], oh.StartTask),
    ("app-conversations_batch_get_nonstream.txt", lambda b: b[0], oh.Conversation),
    ("app-conversations_search_1.txt", lambda b: b["items"][0], oh.Conversation),
    ("sandboxes_search_1.txt", lambda b: b["items"][0], oh.Sandbox),
    ("events_search.txt", lambda b: b["items"][0], oh.Event),
    ("events_search.txt", lambda b: b["items"][-1], oh.Event),
    ("send-message.txt", lambda b: b, oh.SendMessageResult),
]


@pytest.mark.parametrize(("capture", "pick", "model"), CAPTURED, ids=[c[0] for c in CAPTURED])
def test_captured_answers_round_trip(capture: str, pick: Any, model: type[Any]) -> None:
    sent = pick(body(capture))
    parsed = structure(sent, model)
    data = parsed.to_dict()
    assert model.from_dict(data) == parsed
    assert model.from_dict(json.loads(parsed.to_json())) == parsed
    # Plain JSON data: what json.dumps takes with no help, enums as plain strings.
    assert json.loads(json.dumps(data)) == data
    for key in ("status", "sandbox_status", "execution_status"):
        if key in data:
            assert type(data[key]) in (str, type(None)), key


def test_the_values_are_plain_and_named_as_the_api_names_them() -> None:
    task = oh.StartTask(
        id="t1",
        status=oh.StartTaskStatus("SOMETHING_NEW"),  # a status the SDK does not know
        app_conversation_id="c1",
        created_at=datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc),
        request=oh.StartRequest(
            initial_message=oh.Message([oh.TextContent("hi")]), secrets={"GITHUB_TOKEN": "s3"}
        ),
    )
    data = task.to_dict()
    assert data["status"] == "SOMETHING_NEW"
    assert type(data["status"]) is str
    assert data["app_conversation_id"] == "c1"
    assert data["created_at"] == "2026-01-02T03:04:05+00:00"
    # A request is written as it is sent: only what was set (the server's defaults apply).
    assert data["request"] == {
        "initial_message": {
            "content": [{"text": "hi", "cache_prompt": False, "type": "text"}],
            "role": "user",
            "run": False,
        },
        "secrets": {"GITHUB_TOKEN": "s3"},
    }
    assert oh.StartTask.from_dict(data) == task
    assert json.loads(task.to_json()) == data
    assert "\n" not in task.to_json(indent=None)
    assert task.to_json().startswith('{\n  "id": "t1"')


def test_events_and_users_give_back_what_the_server_sent() -> None:
    sent = body("events_search.txt")["items"][0]
    event = structure(sent, oh.Event)
    assert event.to_dict() == sent  # the whole object, its spelling of the timestamp included
    written = event.to_dict()  # a deep copy: emptying it leaves the event as it was
    nested = [value for value in written.values() if isinstance(value, dict)]
    assert nested
    for value in [*nested, written]:
        value.clear()
    assert event.to_dict() == sent
    again = oh.Event.from_dict(event.to_dict())
    assert again == event
    assert again.payload == sent
    # Built by hand (no payload): the typed fields.
    made = oh.Event(
        id="e", kind="MessageEvent", timestamp=datetime(2026, 1, 1, tzinfo=timezone.utc)
    )
    assert made.to_dict() == {
        "id": "e",
        "kind": "MessageEvent",
        "timestamp": "2026-01-01T00:00:00+00:00",
        "source": None,
    }
    assert oh.Event.from_dict(made.to_dict()) == made

    sent_user = {"id": "u", "email": "a@b.c", "extra": {"k": 1}}
    user = structure(sent_user, oh.User)
    assert user.to_dict() == sent_user
    assert oh.User.from_dict(user.to_dict()) == user
    assert oh.User.from_dict(user.to_dict()).payload == user.payload


def test_from_dict_ignores_unknown_fields_and_refuses_what_does_not_fit() -> None:
    assert oh.Sandbox.from_dict({"id": "s", "new_field": 1}) == oh.Sandbox(id="s")
    with pytest.raises(ValueError, match=r"Conversation.*\$\.id"):
        oh.Conversation.from_dict({"title": "no id"})
    with pytest.raises(ValueError, match="Event"):
        oh.Event.from_dict({"id": "e"})  # no timestamp
    with pytest.raises(TypeError, match="mapping"):
        oh.Conversation.from_dict(["not", "a", "dict"])  # type: ignore[arg-type]


def test_every_model_but_page_has_them() -> None:
    for model in MODELS:
        assert all(callable(getattr(model, name)) for name in ("to_dict", "to_json", "from_dict"))
    assert not hasattr(oh.Page, "to_dict")
    # Still slotted: the mixin adds no instance dict.
    assert not hasattr(oh.Conversation(id="c"), "__dict__")


# ---------------------------------------------------------------- property: any model

JSON: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3)
    ),
    max_leaves=6,
)
WHEN = st.datetimes(
    min_value=datetime(1970, 1, 2), max_value=datetime(2100, 1, 1), timezones=st.just(timezone.utc)
) | st.datetimes(
    min_value=datetime(1970, 1, 2),
    max_value=datetime(2100, 1, 1),
    timezones=st.builds(lambda m: timezone(timedelta(minutes=m)), st.integers(-720, 720)),
)


def strategy(hint: Any) -> st.SearchStrategy[Any]:
    """Values of a model field's type, as the server could send them (aware timestamps, known
    and unknown statuses, content blocks with their own `type`)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return st.one_of(*(strategy(a) for a in args))
    if origin is list:
        return st.lists(strategy(args[0]), max_size=3)
    if origin is dict:
        return st.dictionaries(st.text(max_size=5), strategy(args[1]), max_size=3)
    if hint is Any:
        return JSON
    if hint is type(None):
        return st.none()
    if hint is datetime:
        return WHEN
    if isinstance(hint, type) and issubclass(hint, _OpenStrEnum):
        return st.sampled_from(list(hint)) | st.text(min_size=1, max_size=8).map(hint)
    if hint is float:
        return st.floats(allow_nan=False, allow_infinity=False)
    if hint in (str, int, bool):
        return st.from_type(hint)
    if attrs.has(hint):
        return model_strategy(hint)
    raise AssertionError(f"no strategy for {hint!r}")


def model_strategy(cls: type[Any]) -> st.SearchStrategy[Any]:
    hints = typing.get_type_hints(cls)
    fields = {f.name: strategy(hints[f.name]) for f in attrs.fields(cls) if f.name != "payload"}
    if cls in (oh.TextContent, oh.ImageContent):  # `type` tells the blocks apart
        fields.pop("type")
    if cls in (oh.Event, oh.User):  # read from the server's object, which they keep
        return st.builds(cls, **fields).map(lambda m: structure(m.to_dict(), cls))
    return st.builds(cls, **fields)


@pytest.mark.parametrize("model", MODELS, ids=[m.__name__ for m in MODELS])
def test_any_model_round_trips(model: type[Any]) -> None:
    @settings(
        max_examples=40,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
        phases=[Phase.explicit, Phase.generate],  # no shrinking: the assertion names the model
    )
    @given(model_strategy(model))
    def check(m: Any) -> None:
        data = m.to_dict()
        assert model.from_dict(data) == m, data
        assert model.from_dict(json.loads(m.to_json())) == m, data

    check()
