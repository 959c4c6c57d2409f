"""The wire rules of `_sansio`, pinned exactly: what users read in error messages, every
Retry-After form, how error bodies and 2xx bodies are decoded, how queries are encoded.

Pure functions with canned values; these are the tests the mutation run (`nox -s
mutation`) relies on, so each asserts an exact value rather than "something came back".
"""

from __future__ import annotations

import email.utils
import enum
import time
from datetime import date, datetime, timezone

import pytest

import openhands_async as oh
from openhands_async._sansio import (
    decode_error_body,
    decode_json,
    encode_query,
    error_from_response,
    error_message_from_body,
    parse_retry_after,
)

NOW = 1_000_000_000.0  # a fixed "now" for HTTP dates, far from the real clock


# -- Retry-After ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("7", 7.0),
        ("0", 0.0),
        ("0.5", 0.5),
        (" 12 ", 12.0),
        ("86400", 86400.0),  # huge values are kept; RetryPolicy.max_retry_after decides
        ("1e9", 1e9),
        ("-5", 0.0),  # negative: never a negative sleep
        ("-0.1", 0.0),
        ("-inf", 0.0),
    ],
)
def test_retry_after_delta_seconds(value: str, seconds: float) -> None:
    assert parse_retry_after(value, now=NOW) == seconds


@pytest.mark.parametrize("value", ["soon", "", "   ", "nan", "NaN", "Wed, 21 Oct", "1 2", "7s"])
def test_retry_after_garbage_is_none(value: str) -> None:
    assert parse_retry_after(value, now=NOW) is None


def test_retry_after_none_is_none() -> None:
    assert parse_retry_after(None) is None
    assert parse_retry_after(None, now=NOW) is None


def test_retry_after_infinite_is_kept_for_the_policy_to_refuse() -> None:
    assert parse_retry_after("inf", now=NOW) == float("inf")


def test_retry_after_http_date_relative_to_now() -> None:
    assert email.utils.formatdate(NOW + 30, usegmt=True) == "Sun, 09 Sep 2001 01:47:10 GMT"
    assert parse_retry_after("Sun, 09 Sep 2001 01:47:10 GMT", now=NOW) == 30.0
    assert parse_retry_after(" Sun, 09 Sep 2001 01:47:10 GMT ", now=NOW) == 30.0
    # The same instant written with an offset.
    assert parse_retry_after("Sun, 09 Sep 2001 03:47:10 +0200", now=NOW) == 30.0
    # A date in the past: retry now, not a negative sleep.
    assert parse_retry_after("Sun, 09 Sep 2001 01:46:10 GMT", now=NOW) == 0.0
    assert parse_retry_after(email.utils.formatdate(NOW, usegmt=True), now=NOW) == 0.0


def test_retry_after_http_date_without_now_reads_the_clock() -> None:
    # Far from the real clock either way, so no timing is involved.
    assert parse_retry_after("Sun, 09 Sep 2001 01:47:10 GMT") == 0.0
    far = parse_retry_after("Fri, 01 Jan 2900 00:00:00 GMT")
    assert far is not None
    assert far > 1e10 - time.time()


def test_retry_after_impossible_date_is_none() -> None:
    assert parse_retry_after("Wed, 32 Oct 2015 07:28:00 GMT", now=NOW) is None


# -- the message users read ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"detail": "nope"}, "nope"),
        ({"error": "Rate limit exceeded: 10 per 1 second"}, "Rate limit exceeded: 10 per 1 second"),
        ({"message": "m"}, "m"),
        # detail first, then error, then message
        ({"message": "m", "error": "e", "detail": "d"}, "d"),
        ({"message": "m", "error": "e"}, "e"),
        # empty or unusable values are skipped for the next key
        ({"detail": "", "error": "e"}, "e"),
        ({"detail": [], "error": "e"}, "e"),
        ({"detail": {}, "error": "e"}, "e"),
        ({"detail": None, "error": "e"}, "e"),
        ({"detail": 5, "message": "m"}, "m"),
        ({"detail": True}, ""),
        ({"detail": 5}, ""),
        ({"other": "x"}, ""),
        ({}, ""),
        # FastAPI's validation list
        (
            {
                "detail": [
                    {"type": "missing", "loc": ["query", "ids"], "msg": "Field required"},
                    {"loc": ["body", 0, "title"], "msg": "too long"},
                ]
            },
            "query.ids: Field required; body.0.title: too long",
        ),
        ({"detail": [{"loc": ["a"]}]}, "a: {'loc': ['a']}"),
        ({"detail": [{"loc": [], "msg": "m"}]}, "{'loc': [], 'msg': 'm'}"),
        ({"detail": [{"msg": "m"}]}, "{'msg': 'm'}"),
        ({"detail": ["first", 2]}, "first; 2"),
        ({"error": ["only"]}, "only"),
        # a structured detail: its JSON, keys sorted so the message is stable
        ({"detail": {"b": 1, "a": "x"}}, '{"a": "x", "b": 1}'),
        ({"message": {"k": [1]}}, '{"k": [1]}'),
        # text bodies: stripped, cut at 200 characters
        ("  plain text\n", "plain text"),
        ("", ""),
        (None, ""),
        (42, ""),
        (["detail"], ""),
    ],
)
def test_error_message_from_body(body: object, message: str) -> None:
    assert error_message_from_body(body) == message


def test_error_message_text_is_cut_at_200_characters() -> None:
    assert error_message_from_body("x" * 200) == "x" * 200
    assert error_message_from_body("y" * 201) == "y" * 200 + "..."
    assert error_message_from_body(" " + "z" * 200 + " ") == "z" * 200  # stripped first
    assert error_message_from_body("<html>" + "a" * 500) == ("<html>" + "a" * 500)[:200] + "..."


# -- status -> exception ------------------------------------------------------------------


def test_error_carries_message_status_body_headers_method_url() -> None:
    body = {"detail": "Conversation not found"}
    err = error_from_response(404, {"X-Request-Id": "r1"}, body, method="GET", url="http://x/api/c")
    assert type(err) is oh.NotFoundError
    assert err.message == "HTTP 404: Conversation not found"
    assert str(err) == "HTTP 404: Conversation not found (GET http://x/api/c)"
    assert err.status == 404
    assert err.body is body
    assert err.headers == {"X-Request-Id": "r1"}
    assert (err.request_method, err.request_url) == ("GET", "http://x/api/c")


def test_error_without_detail_says_only_the_status() -> None:
    err = error_from_response(500, {}, "", method="POST", url="u")
    assert err.message == "HTTP 500"
    assert str(err) == "HTTP 500 (POST u)"


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (300, oh.APIStatusError),
        (418, oh.APIStatusError),
        (499, oh.APIStatusError),
        (500, oh.InternalServerError),
        (501, oh.InternalServerError),
        (504, oh.InternalServerError),
        (599, oh.InternalServerError),
    ],
)
def test_unlisted_statuses(status: int, cls: type[oh.APIStatusError]) -> None:
    assert type(error_from_response(status, {}, None, method="GET", url="u")) is cls


def test_429_rate_limit_with_and_without_retry_after() -> None:
    rate = error_from_response(
        429, {"Retry-After": "3"}, {"error": "slow down"}, method="GET", url="u"
    )
    assert type(rate) is oh.RateLimitError
    assert rate.retry_after == 3.0
    assert rate.message == "HTTP 429: slow down"
    assert rate.status == 429
    assert rate.headers == {"Retry-After": "3"}
    bare = error_from_response(429, {}, "Too Many Requests", method="GET", url="u")
    assert type(bare) is oh.RateLimitError
    assert bare.retry_after is None
    assert bare.body == "Too Many Requests"
    assert str(bare) == "HTTP 429: Too Many Requests (GET u)"


def test_429_concurrency_cap() -> None:
    body = {"detail": {"error": "CONCURRENCY_LIMIT_REACHED", "limit": 10, "current": 9}}
    cap = error_from_response(429, {"Retry-After": "5"}, body, method="POST", url="http://x/s")
    assert type(cap) is oh.ConcurrencyLimitError
    assert (cap.limit, cap.current, cap.retry_after) == (10, 9, 5.0)
    assert cap.message == (
        'HTTP 429: {"current": 9, "error": "CONCURRENCY_LIMIT_REACHED", "limit": 10}'
    )
    assert (cap.status, cap.body, cap.request_method, cap.request_url) == (
        429,
        body,
        "POST",
        "http://x/s",
    )
    assert cap.headers == {"Retry-After": "5"}


@pytest.mark.parametrize(
    ("limit", "expected"),
    [(0, 0), (3, 3), ("10", None), (True, None), (False, None), (2.0, None), (None, None)],
)
def test_429_concurrency_numbers_are_ints_or_none(limit: object, expected: int | None) -> None:
    body = {"detail": {"error": "CONCURRENCY_LIMIT_REACHED", "limit": limit, "current": limit}}
    cap = error_from_response(429, {}, body, method="POST", url="u")
    assert isinstance(cap, oh.ConcurrencyLimitError)
    assert cap.limit == expected
    assert cap.current == expected
    assert type(cap.limit) is type(expected)


def test_429_concurrency_numbers_missing() -> None:
    body = {"detail": {"error": "CONCURRENCY_LIMIT_REACHED"}}
    cap = error_from_response(429, {}, body, method="POST", url="u")
    assert isinstance(cap, oh.ConcurrencyLimitError)
    assert (cap.limit, cap.current) == (None, None)


@pytest.mark.parametrize(
    "body",
    [
        {"detail": {"error": "SOMETHING_ELSE", "limit": 1}},
        {"detail": "CONCURRENCY_LIMIT_REACHED"},
        {"error": "CONCURRENCY_LIMIT_REACHED"},
        {"detail": {"error": "concurrency_limit_reached"}},
        "CONCURRENCY_LIMIT_REACHED",
        None,
    ],
)
def test_other_429s_are_plain_rate_limits(body: object) -> None:
    err = error_from_response(429, {}, body, method="POST", url="u")
    assert type(err) is oh.RateLimitError


# -- 2xx bodies ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type",
    [
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON",
        " application/json ",
        "application/problem+json",
        "application/vnd.api+json; charset=utf-8",
    ],
)
def test_decode_json_accepts_json_media_types(content_type: str) -> None:
    assert decode_json(200, content_type, b'{"a": [1, null]}', method="GET", url="u") == {
        "a": [1, None]
    }


@pytest.mark.parametrize(
    ("content_type", "shown", "kept"),
    [
        ("text/html; charset=utf-8", "'text/html'", "text/html"),
        ("TEXT/PLAIN", "'text/plain'", "text/plain"),
        ("application/jsonx", "'application/jsonx'", "application/jsonx"),
        ("json", "'json'", "json"),
        (None, "'(none)'", None),
        ("", "'(none)'", None),
        ("; charset=utf-8", "'(none)'", None),
    ],
)
def test_decode_json_refuses_other_media_types(
    content_type: str | None, shown: str, kept: str | None
) -> None:
    raw = b"<!doctype html><html>"
    with pytest.raises(oh.ResponseValidationError) as info:
        decode_json(203, content_type, raw, method="PATCH", url="http://x/y")
    err = info.value
    assert err.message == (
        f"expected JSON but the server answered 203 with content type {shown} (21 bytes)"
    )
    assert err.content_type == kept
    assert err.body == "<!doctype html><html>"
    assert (err.request_method, err.request_url) == ("PATCH", "http://x/y")


def test_decode_json_refusal_keeps_500_bytes_of_the_body_as_text() -> None:
    raw = b"\xff" + b"a" * 600
    with pytest.raises(oh.ResponseValidationError) as info:
        decode_json(200, "text/plain", raw, method="GET", url="u")
    assert info.value.body == "\ufffd" + "a" * 499
    assert "(601 bytes)" in info.value.message


def test_decode_json_invalid_json() -> None:
    raw = b'{"a": ' + b"1" * 600
    with pytest.raises(oh.ResponseValidationError) as info:
        decode_json(201, "application/json; charset=utf-8", raw, method="PUT", url="http://x")
    err = info.value
    assert err.message.startswith(
        "the server answered 201 with a body that is not valid JSON: Expecting"
    )
    assert err.content_type == "application/json"
    assert err.body == raw[:500].decode()
    assert (err.request_method, err.request_url) == ("PUT", "http://x")
    assert err.__cause__ is None
    assert err.__suppress_context__


def test_decode_json_invalid_json_that_is_not_utf8_either() -> None:
    with pytest.raises(oh.ResponseValidationError, match="not valid JSON") as info:
        decode_json(200, "application/json", b'{"a": "\xff', method="GET", url="u")
    assert info.value.body == '{"a": "\ufffd'


def test_decode_json_hostile_nesting_is_a_validation_error() -> None:
    raw = b"[" * 200_000 + b"]" * 200_000
    with pytest.raises(oh.ResponseValidationError, match="not valid JSON") as info:
        decode_json(200, "application/json", raw, method="GET", url="u")
    assert info.value.body == "[" * 500


# -- error bodies -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content_type", "raw", "body"),
    [
        ("application/json", b'{"detail": "x"}', {"detail": "x"}),
        ("application/problem+json", b"[1]", [1]),
        ("application/json; charset=utf-8", b'"s"', "s"),
        ("application/json", b"{not json", "{not json"),
        ("application/json", b"", ""),
        ("text/plain", b'{"detail": "x"}', '{"detail": "x"}'),
        (None, b'{"detail": "x"}', '{"detail": "x"}'),
        ("", b"[1]", "[1]"),
        ("text/html", b"<h1>502 Bad Gateway</h1>", "<h1>502 Bad Gateway</h1>"),
        ("text/plain", b"caf\xc3\xa9 \xff", "caf\u00e9 \ufffd"),
        ("application/json", b'{"a": "\xff"}', {"a": "\ufffd"}),
    ],
)
def test_decode_error_body(content_type: str | None, raw: bytes, body: object) -> None:
    assert decode_error_body(content_type, raw) == body


def test_decode_error_body_hostile_nesting_is_text() -> None:
    raw = b"[" * 200_000
    assert decode_error_body("application/json", raw) == "[" * 200_000


# -- query encoding -----------------------------------------------------------------------


class Color(enum.Enum):
    RED = "red"


def test_encode_query() -> None:
    assert encode_query(None) is None
    assert encode_query({}) == []
    assert encode_query([]) == []
    assert encode_query(
        {
            "a": None,
            "yes": True,
            "no": False,
            "n": 5,
            "zero": 0,
            "ids": ["x", "y"],
            "pair": ("p", "q"),
            "flags": [True, False],
            "empty": [],
            "when": datetime(2026, 12, 1, 8, 30, tzinfo=timezone.utc),
            "day": date(2026, 12, 1),
            "color": Color.RED,
            "colors": [Color.RED],
            "s": "text",
        }
    ) == [
        ("yes", "true"),
        ("no", "false"),
        ("n", "5"),
        ("zero", "0"),
        ("ids", "x"),
        ("ids", "y"),
        ("pair", "p"),
        ("pair", "q"),
        ("flags", "true"),
        ("flags", "false"),
        ("when", "2026-12-01T08:30:00+00:00"),
        ("day", "2026-12-01"),
        ("color", "red"),
        ("colors", "red"),
        ("s", "text"),
    ]


def test_encode_query_pairs_keep_order_and_repeats() -> None:
    pairs = [("b", "2"), ("a", "1"), ("b", "3")]
    assert encode_query(pairs) == [("b", "2"), ("a", "1"), ("b", "3")]
