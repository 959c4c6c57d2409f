"""Cutting the repeated request out of the reads (`_request_cut`) changes nothing visible.

Differential: every body and chunking is parsed twice, with the cut and with it switched
off (`RequestCut.expect` giving no stand-in), and the two must agree on every task, every
error's type, message, offset, excerpt and element count. The bodies are the captures and
the benchmark's shape, mutated near the repeats (garbage before, inside and after one, a
repeat nested one level deeper, in a string, after a space, a changed request, the body cut
anywhere), so the cut meets both its own cases and its refusals.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import openhands_async as oh
from openhands_async.lib import _request_cut
from openhands_async.lib._nesting import NestingGuard
from openhands_async.lib._request_cut import RequestCut
from openhands_async.lib._stream_parser import CountingReader, iter_start_tasks
from openhands_async.lib._task_builder import TaskBuilder

from .captures import raw
from .test_stream_prefix import Reads

Outcome = tuple[list[oh.StartTask], tuple[Any, ...] | None]


async def _run(reads: list[bytes]) -> Outcome:
    got: list[oh.StartTask] = []
    try:
        async for task in iter_start_tasks(CountingReader(Reads(reads))):
            got.append(task)
    except oh.StreamError as exc:
        return got, (type(exc), exc.message, exc.offset, exc.excerpt, exc.items_received)
    return got, None


def parse(reads: list[bytes], *, cut: bool, monkeypatch: pytest.MonkeyPatch) -> Outcome:
    with monkeypatch.context() as patch:
        if not cut:
            patch.setattr(RequestCut, "expect", lambda self, request: None)
        return asyncio.run(_run(reads))


def _element(base: dict[str, Any], status: str, request: Any = None) -> bytes:
    item = {**base, "status": status}
    if request is not None:
        item["request"] = request
    return json.dumps(item, separators=(",", ":")).encode()


BASE: dict[str, Any] = json.loads(raw("stream-start.raw"))[0]
REQUEST = json.dumps(BASE["request"], separators=(",", ":")).encode()


def bench_body(n: int) -> bytes:
    parts = [_element(BASE, "WORKING")] * (n - 1) + [_element(BASE, "READY")]
    return b"[\n" + b",\n".join(parts) + b"]"


# Edits at a repeat of the request (`at`: where its `"request":` starts).
def _edit(data: bytes, kind: int, at: int) -> bytes:
    value = at + len(b'"request":')
    end = value + len(REQUEST)
    edits = [
        lambda: data[:at] + b"x" + data[at:],  # garbage just before the key
        lambda: data[: value + 40] + b"}" + data[value + 40 :],  # inside the value
        lambda: data[:end] + b"]" + data[end:],  # right after it
        lambda: data[:at] + b'"nest":{' + data[at:end] + b"}," + data[at:],  # one level deeper
        lambda: data[: at - 1] + b", " + data[at:],  # a space before the key
        lambda: data[:value] + REQUEST.replace(b"default", b"other") + data[end:],  # changed
        lambda: data[:value] + b"7" + data[end:],  # a number for the request
        lambda: data[:at] + b'"detail":"' + data[at + 1 : value - 1] + b'",' + data[at:],
        lambda: data[:at],  # cut before it
        lambda: data[: value + 100],  # cut inside it
    ]
    return edits[kind % len(edits)]()


BODIES = [bench_body(60), raw("stream-start.raw"), raw("stream-start.pretty.json")]


@pytest.mark.parametrize("index", range(len(BODIES)))
def test_unmutated_bodies_parse_the_same_cut_or_not(
    index: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = BODIES[index]
    for size in (1, 7, 700, 5000, len(data)):
        reads = [data[i : i + size] for i in range(0, len(data), size)]
        assert parse(reads, cut=True, monkeypatch=monkeypatch) == parse(
            reads, cut=False, monkeypatch=monkeypatch
        )


def test_the_benchmark_body_is_cut_and_its_tasks_share_one_request(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    made: list[int] = []
    cut = RequestCut.cut

    def counting(self: RequestCut, data: bytes, nesting: Any) -> tuple[bytes, list[int]]:
        sent, where = cut(self, data, nesting)
        made.append(len(where))
        return sent, where

    monkeypatch.setattr(RequestCut, "cut", counting)
    data = bench_body(200)
    got, err = asyncio.run(_run([data[i : i + 65536] for i in range(0, len(data), 65536)]))
    assert err is None
    assert len(got) == 200
    # Not in the first read (the request is not known yet) nor across two reads.
    assert sum(made) == 200 - 88 - 1
    assert len({id(task.request) for task in got}) == 1


@settings(max_examples=150, deadline=None, database=None, suppress_health_check=list(HealthCheck))
@given(
    index=st.integers(0, len(BODIES) - 1),
    kinds=st.lists(st.integers(0, 99), min_size=1, max_size=3),
    picks=st.lists(st.integers(0, 10**6), min_size=3, max_size=3),
    cuts=st.lists(st.integers(0, 10**6), max_size=6),
)
def test_mutated_bodies_parse_the_same_cut_or_not(
    index: int, kinds: list[int], picks: list[int], cuts: list[int]
) -> None:
    data = BODIES[index]
    for kind, pick in zip(kinds, picks, strict=False):
        starts = [i for i in range(len(data)) if data.startswith(b'"request":', i)]
        if not starts:
            break
        data = _edit(data, kind, starts[pick % len(starts)])
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    reads = [data[a:b] for a, b in itertools.pairwise(bounds)]
    with pytest.MonkeyPatch.context() as patch:
        assert parse(reads, cut=True, monkeypatch=patch) == parse(
            reads, cut=False, monkeypatch=patch
        )


def test_a_body_holding_the_stand_in_stops_the_cut(monkeypatch: pytest.MonkeyPatch) -> None:
    value = (1 << 62) | 12345 | 1
    monkeypatch.setattr(_request_cut.secrets, "randbits", lambda bits: value)
    first = _element(BASE, "WORKING")
    # The second element's detail holds the digits N: no cut from that read on.
    odd = _element({**BASE, "detail": None}, "WORKING").replace(b'"detail":null', b'"x":%d' % value)
    data = b"[" + first + b"," + odd + b"," + first + b"]"
    reads = [data[: len(first) + 2], data[len(first) + 2 :]]
    cut = parse(reads, cut=True, monkeypatch=monkeypatch)
    assert cut == parse(reads, cut=False, monkeypatch=monkeypatch)
    assert len(cut[0]) == 3


def _cut_once(cutter: RequestCut, request: Any) -> None:
    """One element whose request the cutter cuts (it then has one stand-in to give back)."""
    data = b'[{"id":"x","request":' + json.dumps(request, separators=(",", ":")).encode() + b"}"
    guard = NestingGuard()
    guard.feed(data)
    cut, at = cutter.cut(data, guard)
    assert len(at) == 1, cut


def test_the_stand_in_is_no_float_and_fits_yajl() -> None:
    cutter = RequestCut()
    value = cutter.expect(BASE["request"])
    assert value is not None
    assert 2**62 < value < 2**63
    assert value % 2 == 1
    assert float(value) != value
    assert cutter.uncut(value) is None  # none cut yet
    _cut_once(cutter, BASE["request"])
    assert cutter.uncut(value + 2) is None
    assert cutter.uncut("x") is None
    assert cutter.uncut(value) == BASE["request"]
    assert cutter.uncut(value) is None  # each stand-in is given back once
    _cut_once(cutter, BASE["request"])
    assert cutter.take(value)
    assert not cutter.take(value)


def test_requests_it_cannot_write_the_same_way_are_not_cut() -> None:
    cutter = RequestCut()
    assert cutter.expect({"text": 'a "quoted" word'}) is None  # escapes
    assert cutter.expect(None) is None
    assert cutter.expect([1]) is None
    assert cutter.expect({"bad": "\ud800"}) is None  # no UTF-8 form
    assert cutter.expect({"n": float("nan")}) is None


def test_cut_repeats_take_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    # Only the first element (its request not known yet) goes through cattrs: a stand-in
    # is taken for the StartRequest already made, not declined to cattrs (which would
    # give the same value, slower).
    calls: list[object] = []
    slow = TaskBuilder._by_cattrs

    def counting(self: TaskBuilder, item: dict[str, Any]) -> oh.StartTask:
        calls.append(item.get("request"))
        return slow(self, item)

    monkeypatch.setattr(TaskBuilder, "_by_cattrs", counting)
    data = bench_body(200)
    got, err = asyncio.run(_run([data[i : i + 65536] for i in range(0, len(data), 65536)]))
    assert err is None
    assert len(got) == 200
    assert len(calls) == 1


def test_a_stand_in_for_a_request_no_longer_current_is_given_back() -> None:
    # A request that changed and came back: its old stand-in goes through cattrs, with the
    # request it stands for, as when ijson had read the request itself.
    cutter = RequestCut()
    builder = TaskBuilder(cutter=cutter)
    first = json.loads(_element(BASE, "WORKING"))
    builder.build(first)
    builder.expect_cut(cutter.expect(builder.raw_request))
    stand_in = cutter.expect(builder.raw_request)
    _cut_once(cutter, BASE["request"])  # a repeat the reads held, as `stand_in`
    other = json.loads(_element(BASE, "WORKING", {**BASE["request"], "title": "x"}))
    changed = builder.build(other)
    assert changed.request is not None
    assert changed.request.title == "x"
    again = builder.build({**json.loads(_element(BASE, "READY")), "request": stand_in})
    assert again == builder.build(json.loads(_element(BASE, "READY")))
    assert again.request is not None
    assert again.request.title is None


def test_an_integer_request_without_stand_ins_is_refused_as_before() -> None:
    item = {**json.loads(_element(BASE, "WORKING")), "request": 5}
    for builder in (TaskBuilder(), TaskBuilder(cutter=RequestCut())):
        with pytest.raises(oh.ResponseValidationError):
            builder.build(dict(item))


def test_a_body_writing_the_stand_in_as_a_request_is_refused_as_without_the_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The body itself writes this stream's N where a request goes (odds ~2**-61 with a
    # random N; forced here): that element must fail as an integer request does, not be
    # read as the repeated request.
    value = (1 << 62) | 12345 | 1
    monkeypatch.setattr(_request_cut.secrets, "randbits", lambda bits: value)
    first = _element(BASE, "WORKING")
    forged = _element(BASE, "READY").replace(
        b'"request":' + json.dumps(BASE["request"], separators=(",", ":")).encode(),
        b'"request":%d' % value,
    )
    assert b'"request":%d' % value in forged
    data = b"[" + first + b"," + forged + b"]"
    for reads in ([data[: len(first) + 2], data[len(first) + 2 :]], [data]):
        cut = parse(reads, cut=True, monkeypatch=monkeypatch)
        assert cut == parse(reads, cut=False, monkeypatch=monkeypatch)
        assert [t.status for t in cut[0]] == ["WORKING"]
        assert cut[1] is not None


def test_a_cut_element_that_cattrs_must_word_fails_as_without_the_cut(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The fast path takes the stand-in, then a timestamp it cannot read sends the element
    # to cattrs: which must see the request (not a spent stand-in) and word the same error.
    first = _element(BASE, "WORKING")
    bad = _element({**BASE, "updated_at": "not a time"}, "READY")
    good = _element(BASE, "READY")
    for second in (bad, good):
        data = b"[" + first + b"," + second + b"]"
        reads = [data[: len(first) + 2], data[len(first) + 2 :]]
        cut = parse(reads, cut=True, monkeypatch=monkeypatch)
        assert cut == parse(reads, cut=False, monkeypatch=monkeypatch)
        assert (cut[1] is None) == (second is good)
