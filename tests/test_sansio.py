"""Pure protocol functions, tested with canned values."""

from __future__ import annotations

import email.utils
import time

import pytest

import openhands_async as oh
from openhands_async._inputs import (
    is_loopback_url,
    normalize_repository,
    normalize_uuid,
    normalize_uuids,
)
from openhands_async._sansio import decode_json, error_from_response, parse_retry_after


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("0.5") == 0.5
    now = time.time()
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(date, now=now) == pytest.approx(30, abs=1.0)
    assert parse_retry_after(email.utils.formatdate(now - 30, usegmt=True), now=now) == 0.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None


@pytest.mark.parametrize(
    ("status", "cls"),
    [
        (400, oh.BadRequestError),
        (401, oh.AuthenticationError),
        (403, oh.PermissionDeniedError),
        (404, oh.NotFoundError),
        (409, oh.ConflictError),
        (410, oh.GoneError),
        (422, oh.UnprocessableEntityError),
        (500, oh.InternalServerError),
        (502, oh.InternalServerError),
        (503, oh.ServiceUnavailableError),
        (418, oh.APIStatusError),
    ],
)
def test_status_maps_to_its_error(status: int, cls: type[oh.APIStatusError]) -> None:
    err = error_from_response(status, {}, {"detail": "nope"}, method="GET", url="http://x/y")
    assert type(err) is cls
    assert err.status == status
    assert err.body == {"detail": "nope"}
    assert "nope" in str(err)
    assert "GET http://x/y" in str(err)


def test_422_details_are_readable() -> None:
    body = {"detail": [{"type": "missing", "loc": ["query", "ids"], "msg": "Field required"}]}
    err = error_from_response(422, {}, body, method="GET", url="u")
    assert isinstance(err, oh.UnprocessableEntityError)
    assert err.errors == body["detail"]
    assert "query.ids: Field required" in str(err)


def test_429_request_rate_vs_concurrency_cap() -> None:
    rate = error_from_response(
        429,
        {"Retry-After": "3"},
        {"error": "Rate limit exceeded: 10 per 1 second"},
        method="GET",
        url="u",
    )
    assert type(rate) is oh.RateLimitError
    assert rate.retry_after == 3.0
    cap = error_from_response(
        429,
        {},
        {"detail": {"error": "CONCURRENCY_LIMIT_REACHED", "limit": 10, "current": 10}},
        method="POST",
        url="u",
    )
    assert isinstance(cap, oh.ConcurrencyLimitError)
    assert isinstance(cap, oh.RateLimitError)
    assert (cap.limit, cap.current, cap.retry_after) == (10, 10, None)


def test_html_with_200_is_a_typed_error() -> None:
    with pytest.raises(oh.ResponseValidationError, match="text/html") as info:
        decode_json(
            200, "text/html; charset=utf-8", b"<!doctype html><html>", method="GET", url="u"
        )
    assert info.value.content_type == "text/html"
    with pytest.raises(oh.ResponseValidationError, match="not valid JSON"):
        decode_json(200, "application/json", b"{", method="GET", url="u")
    assert decode_json(200, "application/json", b"[null]", method="GET", url="u") == [None]


def test_uuid_normalisation() -> None:
    dashed = "c8b8980b-4e4f-49af-893a-d641724e0f6e"
    assert normalize_uuid(dashed) == "c8b8980b4e4f49af893ad641724e0f6e"
    assert normalize_uuid("C8B8980B4E4F49AF893AD641724E0F6E") == "c8b8980b4e4f49af893ad641724e0f6e"
    with pytest.raises(ValueError, match="conversation_id"):
        normalize_uuid("not-a-uuid", "conversation_id")
    with pytest.raises(TypeError):
        normalize_uuid(42)
    with pytest.raises(TypeError, match="single string"):
        normalize_uuids(dashed)


@pytest.mark.parametrize(
    "value",
    [
        "owner/repo",
        "https://github.com/owner/repo",
        "https://github.com/owner/repo.git",
        "https://github.com/owner/repo/",
        "git@github.com:owner/repo.git",
        " owner/repo ",
    ],
)
def test_repository_forms(value: str) -> None:
    assert normalize_repository(value) == "owner/repo"


def test_repository_groups_are_kept() -> None:
    assert normalize_repository("https://gitlab.com/group/sub/repo") == "group/sub/repo"


@pytest.mark.parametrize("value", ["", "repo", "owner/", "owner repo/x", "https://github.com/"])
def test_bad_repository(value: str) -> None:
    with pytest.raises(ValueError, match="repository"):
        normalize_repository(value)


def test_loopback_detection() -> None:
    assert is_loopback_url("http://127.0.0.1:3000")
    assert is_loopback_url("http://localhost:3000")
    assert is_loopback_url("http://[::1]:3000")
    assert not is_loopback_url("https://app.all-hands.dev")
    assert not is_loopback_url("http://[2001:db8::1]:3000")  # documentation range, never contacted
    assert not is_loopback_url("http://openhands.invalid")
