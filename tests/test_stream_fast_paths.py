"""The stream-start parser's fast paths give what the slow ones give (pure, no sockets).

- `TaskBuilder`: the hand-built `StartTask` of the usual element equals cattrs' (the
  captures, and variants: missing, null, extra fields, unknown status, odd timestamps);
  whatever the fast path declines goes to cattrs and fails with the very same message.
- The frozen task it builds by slot stores is a plain `StartTask` in every respect.
- What `lib/_task_builder.py`'s surviving mutants showed untested: fields all set or each
  null stay on the fast path, the plain-constructor fallback, the slot-store probe, the
  method and URL in a builder's errors, and an empty timestamp refused (a bug).
- `NestingGuard`'s shortcut for reads whose quotes pair up matches a byte-by-byte reading,
  in random bodies and random chunkings (strings with brackets, escapes, cut strings).
- `AsyncStream` hands out a read's batch one item at a time: `task` is the one yielded
  last, and `aclose()` mid-batch ends the iteration.
"""

from __future__ import annotations

import copy
import json
import pickle
import platform
import random
from typing import Any

import attrs
import pytest

import openhands_async as oh
from openhands_async._converter import structure
from openhands_async.errors import ResponseValidationError
from openhands_async.lib import _task_builder
from openhands_async.lib._async_stream import AsyncStream
from openhands_async.lib._nesting import MAX_DEPTH, NestingGuard
from openhands_async.lib._task_builder import TaskBuilder

from .captures import CAPTURES, body
from .test_stream_parser_rules import _reference as _depths

STREAM_CAPTURES = sorted(p.name for p in CAPTURES.glob("stream-start*.json"))


def capture_elements() -> list[dict[str, Any]]:
    elements: list[dict[str, Any]] = []
    for name in STREAM_CAPTURES:
        elements.extend(body(name))
    return elements


class Counting:
    """Wraps a builder's cattrs structurer to count the elements that went through it."""

    def __init__(self, builder: TaskBuilder) -> None:
        self.calls = 0
        self._inner = builder._structure
        builder._structure = self  # type: ignore[assignment]

    def __call__(self, item: Any) -> oh.StartTask:
        self.calls += 1
        return self._inner(item)


def build_all(items: list[dict[str, Any]]) -> tuple[list[oh.StartTask], int]:
    builder = TaskBuilder()
    counting = Counting(builder)
    # The builder may replace an element's request by the one it made: give it copies.
    return [builder.build(copy.deepcopy(item)) for item in items], counting.calls


def test_the_captures_come_out_as_cattrs_makes_them() -> None:
    assert STREAM_CAPTURES
    for name in STREAM_CAPTURES:
        items = body(name)
        tasks, by_cattrs = build_all(items)
        assert tasks == [structure(item, oh.StartTask) for item in items]
        assert [repr(t) for t in tasks] == [repr(structure(i, oh.StartTask)) for i in items]
        # Only the first element (a request not yet made) needs cattrs.
        assert by_cattrs == 1, name
        assert all(t.request is tasks[0].request for t in tasks)


def test_the_benchmark_element_takes_the_fast_path() -> None:
    item = capture_elements()[0]
    many = [{**item, "status": status} for status in ("WORKING", "READY", "ERROR")]
    tasks, by_cattrs = build_all(many)
    assert tasks == [structure(i, oh.StartTask) for i in many]
    assert by_cattrs == 1
    assert build_all([{**many[0], "request": None}])[1] == 0  # nothing to structure


def _variants(item: dict[str, Any]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for key in item:
        if key != "id":
            out.append({k: v for k, v in item.items() if k != key})  # missing field
        out.append({**item, key: None})  # null field (an error for id and status)
    out += [
        {**item, "new_server_field": {"x": [1, 2]}},
        {**item, "status": "SOME_NEW_STATUS"},
        {**item, "created_at": "2026-11-22T22:59:19"},  # no offset: UTC
        {**item, "updated_at": "2026-11-22T22:59:19.655486+02:00"},
        {**item, "updated_at": "2026-11-22 22:59:19Z"},
        {**item, "detail": "a detail", "sandbox_id": "sb", "agent_server_url": "http://x"},
        {**item, "request": None},
        {**item, "request": {**item["request"], "title": "another"}},
    ]
    return out


def test_variants_come_out_as_cattrs_makes_them() -> None:
    item = capture_elements()[0]
    for variant in _variants(item):
        try:
            expected = structure(copy.deepcopy(variant), oh.StartTask)
        except ResponseValidationError:
            continue  # the next test
        # After a usual element (its request made), so the fast path is tried first.
        tasks, _ = build_all([item, variant])
        assert tasks[1] == expected, variant
        assert repr(tasks[1]) == repr(expected)
        assert tasks[1].status.known == expected.status.known


BAD = [
    {"id": 7},
    {"id": None},
    {"status": None},
    {"status": 3},
    {"status": ["WORKING"]},
    {"detail": 5},
    {"sandbox_id": ["x"]},
    {"created_at": 5},
    {"created_at": "not a time"},
    {"updated_at": "2026-13-45T99:99:99Z"},
    {"request": "x"},
    {"request": {"initial_message": 3}},
]


@pytest.mark.parametrize("change", BAD, ids=lambda c: json.dumps(c))
def test_what_does_not_fit_fails_with_cattrs_message(change: dict[str, Any]) -> None:
    item = capture_elements()[0]
    bad = {**item, **change}
    with pytest.raises(ResponseValidationError) as expected:
        structure(copy.deepcopy(bad), oh.StartTask)
    builder = TaskBuilder()
    builder.build(copy.deepcopy(item))
    with pytest.raises(ResponseValidationError) as got:
        builder.build(copy.deepcopy(bad))
    assert got.value.message == expected.value.message


def test_missing_id_fails_as_cattrs_says() -> None:
    item = {k: v for k, v in capture_elements()[0].items() if k != "id"}
    with pytest.raises(ResponseValidationError, match=r"required field missing @ \$\.id"):
        TaskBuilder().build(item)


def test_a_changed_request_is_structured_again_and_an_equal_one_shared() -> None:
    item = capture_elements()[0]
    other = {**item, "request": {**item["request"], "title": "t"}}
    tasks, by_cattrs = build_all([item, item, other, other, {**item, "request": None}, item])
    assert tasks[1].request is tasks[0].request
    assert tasks[2].request is not tasks[1].request
    assert tasks[2].request == structure(other, oh.StartTask).request
    assert tasks[3].request is tasks[2].request
    assert tasks[4].request is None
    assert tasks[5].request == tasks[0].request
    assert by_cattrs == 3  # the first, the changed request, the first again after null


def test_start_task_init_stores_only_what_the_fast_path_stores() -> None:
    # The fast path skips attrs' __init__: this holds only while it would just store.
    fields = attrs.fields(oh.StartTask)
    assert tuple(f.name for f in fields) == _task_builder._FIELDS
    assert all(f.validator is None and f.converter is None for f in fields)
    assert all(f.on_setattr in (None, attrs.setters.NO_OP) for f in fields)
    assert not hasattr(oh.StartTask, "__attrs_post_init__")
    assert not hasattr(oh.StartTask, "__attrs_pre_init__")


@pytest.mark.skipif(platform.python_implementation() != "CPython", reason="CPython layout")
def test_the_slot_stores_are_in_use_on_cpython() -> None:
    assert _task_builder._UNFROZEN


def test_a_task_built_fast_is_a_plain_frozen_start_task() -> None:
    item = {**capture_elements()[0], "request": None}  # a Message holds a list: no hash
    task = build_all([item])[0][0]
    slow = structure(item, oh.StartTask)
    assert type(task) is oh.StartTask
    assert task == slow
    assert hash(task) == hash(slow)
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        task.status = oh.StartTaskStatus.READY  # type: ignore[misc]
    with pytest.raises(attrs.exceptions.FrozenInstanceError):
        del task.detail  # type: ignore[misc]
    assert pickle.loads(pickle.dumps(task)) == task
    assert oh.StartTask.from_dict(task.to_dict()) == task
    assert attrs.evolve(task, detail="x").detail == "x"
    assert copy.copy(task) == task


# ---------------------------------------------------------------------- NestingGuard


def _random_body(rng: random.Random) -> bytes:
    parts: list[bytes] = []
    depth = 0
    for _ in range(rng.randint(1, 400)):
        roll = rng.random()
        if roll < 0.25 and depth < MAX_DEPTH + 3:
            parts.append(rng.choice([b"[", b"{"]))
            depth += 1
        elif roll < 0.45 and depth > 0:
            parts.append(rng.choice([b"]", b"}"]))
            depth -= 1
        elif roll < 0.8:
            text = rng.choice([b"", b"a", b"key", b"[", b"]]", b"{[", b'\\"', b"\\\\", b'x\\"]'])
            parts.append(b'"' + text + b'"')
        else:
            parts.append(rng.choice([b",", b":", b" ", b"\n", b"null", b"12"]))
    return b"".join(parts)


def test_the_guard_matches_a_byte_by_byte_reading_in_random_splits() -> None:
    rng = random.Random(19)
    checked = 0
    for _ in range(400):
        data = _random_body(rng)
        depths = _depths(data)
        cuts = sorted(rng.sample(range(len(data) + 1), min(len(data) + 1, rng.randint(0, 6))))
        guard = NestingGuard()
        start = 0
        for end in [*cuts, len(data)]:
            ok = guard.feed(data[start:end])
            deepest = max(depths[start:end], default=guard.depth)
            assert ok == (deepest <= MAX_DEPTH), (data, cuts)
            if not ok:
                break
            assert guard.depth == (depths[end - 1] if end else 0), (data, cuts)
            start = end
            checked += 1
    assert checked > 1000


def test_the_guard_shortcut_and_the_regex_agree_on_strings_left_open() -> None:
    element = b'{"id": "x", "request": {"content": [{"text": "hi"}], "pr": []}},\n'
    data = b"[\n" + element * 60
    depths = _depths(data)
    for cut in range(1, len(data)):
        guard = NestingGuard()
        assert guard.feed(data[:cut])
        assert guard.feed(data[cut:])
        assert guard.depth == depths[-1]
        assert guard.feed(b'"]"')  # inside a string or not: the guard must know which
        assert guard.depth == _depths(data + b'"]"')[-1]


# ---------------------------------------------------------------------- AsyncStream


class _Batches(AsyncStream[int]):
    def __init__(self, batches: list[list[int]]) -> None:
        self.released = 0

        async def gen() -> Any:
            for batch in batches:
                yield batch

        super().__init__(gen(), self._count_release)

    def _count_release(self) -> None:
        self.released += 1


async def test_a_batch_is_handed_out_item_by_item() -> None:
    stream = _Batches([[1, 2, 3], [], [4]])
    assert [item async for item in stream] == [1, 2, 3, 4]
    assert stream._latest == 4


async def test_aclose_mid_batch_ends_the_iteration() -> None:
    async with _Batches([[1, 2, 3], [4]]) as stream:
        assert await stream.__anext__() == 1
        assert stream._latest == 1
    assert stream.released == 1
    with pytest.raises(StopAsyncIteration):
        await stream.__anext__()


# ------------------------------------------- TaskBuilder: mutants of lib/_task_builder.py


def _all_strings(item: dict[str, Any]) -> dict[str, Any]:
    """The element with every optional text field a string (the captures have nulls)."""
    return {
        **item,
        "created_by_user_id": "user-1",
        "detail": "a detail",
        "app_conversation_id": "conv-1",
        "sandbox_id": "sb-1",
        "agent_server_url": "http://agent",
    }


@pytest.mark.parametrize("field", ["created_at", "updated_at"])
def test_an_empty_timestamp_is_refused_even_as_the_first_fast_element(field: str) -> None:
    # Bug (found by a surviving mutant): the builder's "last timestamp text" started as "",
    # so a first element (request null: no cattrs call needed) with an empty timestamp was
    # taken for a repeat and given `None`; cattrs refuses "" as a timestamp.
    item = {**capture_elements()[0], "request": None, field: ""}
    with pytest.raises(ResponseValidationError) as expected:
        structure(copy.deepcopy(item), oh.StartTask)
    with pytest.raises(ResponseValidationError) as got:
        TaskBuilder().build(copy.deepcopy(item))
    assert got.value.message == expected.value.message


def test_elements_with_every_field_set_or_null_take_the_fast_path() -> None:
    # Only the first element (its request not yet made) goes through cattrs; each field a
    # string, then each a null, is still the usual shape, and comes out as cattrs makes it.
    item = _all_strings(capture_elements()[0])
    nulls = [{**item, key: None} for key in _task_builder._FIELDS[2:]]
    many = [item, *nulls, item]
    tasks, by_cattrs = build_all(many)
    assert tasks == [structure(copy.deepcopy(i), oh.StartTask) for i in many]
    assert tasks[0].created_by_user_id == "user-1"
    assert by_cattrs == 1 + 1  # the first, and the first again after a null request


def test_without_the_slot_stores_the_plain_constructor_builds_the_same(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # An interpreter that refuses the `__class__` assignment gets `StartTask(...)`.
    monkeypatch.setattr(_task_builder, "_UNFROZEN", False)
    item = _all_strings(capture_elements()[0])
    many = [
        item,
        item,
        {**item, "request": None, "created_at": None, "updated_at": None},
        *capture_elements(),
    ]
    tasks, _ = build_all(many)
    assert tasks == [structure(copy.deepcopy(i), oh.StartTask) for i in many]
    assert [repr(t) for t in tasks] == [repr(structure(i, oh.StartTask)) for i in many]


@pytest.mark.skipif(platform.python_implementation() != "CPython", reason="CPython layout")
def test_the_slot_store_probe_says_yes_on_cpython() -> None:
    assert _task_builder._unfrozen_works() is True


def test_the_slot_store_probe_says_no_when_the_class_cannot_be_assigned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    class OtherLayout:  # no slots: `__class__` assignment from a slotted class is refused
        pass

    monkeypatch.setattr(_task_builder, "StartTask", OtherLayout)
    assert _task_builder._unfrozen_works() is False


def test_a_builder_names_its_request_in_errors_only_when_given_one() -> None:
    bad = {**capture_elements()[0], "status": 3}
    with pytest.raises(ResponseValidationError) as got:
        TaskBuilder().build(copy.deepcopy(bad))
    assert (got.value.request_method, got.value.request_url) == ("", "")
    where = {"method": "POST", "url": "https://app.example/api/v1/app-conversations/stream-start"}
    with pytest.raises(ResponseValidationError) as got:
        TaskBuilder(**where).build(copy.deepcopy(bad))
    assert (got.value.request_method, got.value.request_url) == (where["method"], where["url"])
