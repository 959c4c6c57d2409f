"""`_inputs`: what the SDK accepts from its users, with the exact messages they read.

Boundaries are tested on both sides (0/1 and 100/101 for page sizes, -1/0 for limits).
"""

from __future__ import annotations

import uuid

import pytest

from openhands_async._inputs import (
    check_base_url,
    check_ids,
    check_limit,
    check_page_size,
    is_loopback_url,
    normalize_repository,
    normalize_uuid,
    normalize_uuids,
)

from .conftest import exactly

DASHED = "c8b8980b-4e4f-49af-893a-d641724e0f6e"
HEX = "c8b8980b4e4f49af893ad641724e0f6e"


# -- UUIDs --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [DASHED, HEX, HEX.upper(), f"  {DASHED}\n", f"{{{DASHED}}}", f"urn:uuid:{DASHED}"],
)
def test_uuid_forms(value: str) -> None:
    assert normalize_uuid(value) == HEX


def test_uuid_object() -> None:
    assert normalize_uuid(uuid.UUID(DASHED)) == HEX


def test_uuid_errors_name_the_argument() -> None:
    with pytest.raises(
        ValueError, match=exactly("id must be a UUID (32 hex digits, dashes optional): 'nope'")
    ) as info:
        normalize_uuid("nope")
    assert info.value.__suppress_context__
    with pytest.raises(
        ValueError,
        match=exactly(
            f"conversation_id must be a UUID (32 hex digits, dashes optional): {HEX[:-1]!r}"
        ),
    ):
        normalize_uuid(HEX[:-1], "conversation_id")
    with pytest.raises(TypeError) as type_info:
        normalize_uuid(42)
    assert str(type_info.value) == "id must be a UUID string, not int"
    with pytest.raises(TypeError) as type_info:
        normalize_uuid(HEX.encode(), "task_id")
    assert str(type_info.value) == "task_id must be a UUID string, not bytes"


def test_uuids() -> None:
    assert normalize_uuids([DASHED, uuid.UUID(DASHED)]) == [HEX, HEX]
    assert normalize_uuids(iter([HEX])) == [HEX]
    assert normalize_uuids([]) == []
    with pytest.raises(
        ValueError, match=exactly("ids must be a UUID (32 hex digits, dashes optional): 'bad'")
    ):
        normalize_uuids([HEX, "bad"])
    with pytest.raises(ValueError, match=r"^conversation_ids must be a UUID"):
        normalize_uuids(["bad"], "conversation_ids")
    for single in (DASHED, DASHED.encode()):
        with pytest.raises(TypeError) as type_info:
            normalize_uuids(single)
        assert str(type_info.value) == "ids must be an iterable of ids, not a single string"
    with pytest.raises(TypeError, match=r"^task_ids must be an iterable"):
        normalize_uuids(HEX, "task_ids")


# -- repositories -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "slug"),
    [
        ("owner/repo", "owner/repo"),
        ("  owner/repo\n", "owner/repo"),
        ("Owner-1/re_po.js", "Owner-1/re_po.js"),
        ("https://github.com/owner/repo", "owner/repo"),
        ("http://github.com/owner/repo", "owner/repo"),
        ("https://github.com/owner/repo.git", "owner/repo"),
        ("https://github.com/owner/repo/", "owner/repo"),
        ("https://github.com/owner/repo.git/", "owner/repo"),
        ("https://github.com/owner/repo?tab=readme", "owner/repo"),
        ("https://github.com/owner/repo#readme", "owner/repo"),
        ("https://user@github.com/owner/repo", "owner/repo"),
        ("https://github.com:443/owner/repo", "owner/repo"),
        ("https://gitlab.example.com:8443/group/repo.git", "group/repo"),
        ("git@github.com:1234/repo.git", "1234/repo"),
        ("git@github.com:owner/repo.git", "owner/repo"),
        ("git@github.com:owner/repo", "owner/repo"),
        ("https://gitlab.com/group/sub/repo", "group/sub/repo"),
        ("git@gitlab.com:group/sub/repo.git", "group/sub/repo"),
        ("group/sub/repo", "group/sub/repo"),
        ("https://github.com//owner/repo", "owner/repo"),
        ("https://github.com/Xowner/repoX", "Xowner/repoX"),
    ],
)
def test_repository_forms(value: str, slug: str) -> None:
    assert normalize_repository(value) == slug


@pytest.mark.parametrize(
    "value",
    [
        "",
        "  ",
        "repo",
        "owner/",
        "/repo",
        "owner//repo",
        "owner repo/x",
        "owner/re po",
        "owner/repo?x",
        "https://github.com/",
        "https://github.com/owner",
        "ftp://github.com/owner/repo",
        "git@github.com:",
    ],
)
def test_bad_repository(value: str) -> None:
    with pytest.raises(
        ValueError, match=exactly(f"repository must be 'owner/repo' or a repository URL: {value!r}")
    ):
        normalize_repository(value)


@pytest.mark.parametrize(("value", "kind"), [(None, "NoneType"), (42, "int"), (b"o/r", "bytes")])
def test_repository_type(value: object, kind: str) -> None:
    with pytest.raises(TypeError) as info:
        normalize_repository(value)  # type: ignore[arg-type]
    assert str(info.value) == f"repository must be a string, not {kind}"


# -- page sizes and limits ----------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 50, 99, 100])
def test_page_size_in_range(size: int) -> None:
    assert check_page_size(size) == size


@pytest.mark.parametrize("size", [0, -1, 101, 1000])
def test_page_size_out_of_range(size: int) -> None:
    with pytest.raises(
        ValueError, match=exactly(f"page_size must be between 1 and 100, got {size}")
    ):
        check_page_size(size)


@pytest.mark.parametrize("size", [True, False, 5.0, "5", None])
def test_page_size_type(size: object) -> None:
    with pytest.raises(TypeError) as info:
        check_page_size(size)  # type: ignore[arg-type]
    assert str(info.value) == "page_size must be an int"


@pytest.mark.parametrize("limit", [None, 0, 1, 100, 10**9])
def test_limit_accepted(limit: int | None) -> None:
    assert check_limit(limit) == limit


@pytest.mark.parametrize("limit", [-1, -100])
def test_limit_negative(limit: int) -> None:
    with pytest.raises(ValueError, match=exactly(f"limit must be >= 0, got {limit}")):
        check_limit(limit)


@pytest.mark.parametrize("limit", [True, False, 1.0, "5"])
def test_limit_type(limit: object) -> None:
    with pytest.raises(TypeError) as info:
        check_limit(limit)  # type: ignore[arg-type]
    assert str(info.value) == "limit must be an int or None"


# -- opaque ids ---------------------------------------------------------------------------


def test_ids_are_stripped_non_empty_strings() -> None:
    assert check_ids([" sb-1 ", "sb-2"], "sandbox_ids") == ["sb-1", "sb-2"]
    assert check_ids(iter(["e"]), "event_ids") == ["e"]
    assert check_ids([], "sandbox_ids") == []


@pytest.mark.parametrize("bad", ["", "   ", 1, None])
def test_ids_bad_items(bad: object) -> None:
    with pytest.raises(
        ValueError, match=exactly(f"sandbox_ids must be non-empty strings, got {bad!r}")
    ):
        check_ids(["ok", bad], "sandbox_ids")


@pytest.mark.parametrize("single", ["abc", b"abc"])
def test_ids_single_string(single: object) -> None:
    with pytest.raises(TypeError) as info:
        check_ids(single, "event_ids")  # type: ignore[arg-type]
    assert str(info.value) == "event_ids must be an iterable of ids, not a single string"


# -- URLs ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:3000",
        "http://127.8.9.10",
        "http://localhost:3000",
        "http://LOCALHOST",
        "http://api.localhost:8000/x",
        "http://[::1]:3000",
        "https://user:pw@localhost/",
    ],
)
def test_loopback(url: str) -> None:
    assert is_loopback_url(url) is True


@pytest.mark.parametrize(
    "url",
    [
        "https://app.all-hands.dev",
        "http://notlocalhost",
        "http://localhost.example.com",
        # "Any address" is not loopback, though a connect to it reaches this host on Linux:
        # plain http to it still needs `allow_insecure_http`.
        "http://0.0.0.0:3000",
        "http://[2001:db8::1]:3000",
        "http://openhands.invalid",
        "http://",
        "not a url",
    ],
)
def test_not_loopback(url: str) -> None:
    assert is_loopback_url(url) is False


@pytest.mark.parametrize(
    ("url", "clean"),
    [
        ("https://app.all-hands.dev", "https://app.all-hands.dev"),
        ("https://app.all-hands.dev/", "https://app.all-hands.dev"),
        ("https://x.example/base//", "https://x.example/base"),
        ("https://x.example/PREFIX/", "https://x.example/PREFIX"),
        ("http://127.0.0.1:3000/", "http://127.0.0.1:3000"),
        ("http://localhost", "http://localhost"),
    ],
)
def test_base_url_accepted(url: str, clean: str) -> None:
    assert check_base_url(url, allow_insecure_http=False) == clean


@pytest.mark.parametrize("url", ["ftp://x.example", "app.all-hands.dev", "", "/api"])
def test_base_url_needs_a_scheme(url: str) -> None:
    for allow in (False, True):
        with pytest.raises(
            ValueError,
            match=exactly(
                f"base_url must start with https:// (or http:// for loopback): {url.rstrip('/')!r}"
            ),
        ):
            check_base_url(url, allow_insecure_http=allow)


def test_plain_http_to_a_remote_host() -> None:
    with pytest.raises(
        ValueError,
        match=exactly(
            "refusing plain http:// to a non-loopback host (http://openhands.invalid): the API key "
            "would travel unencrypted. Use https://, or pass allow_insecure_http=True if you must."
        ),
    ):
        check_base_url("http://openhands.invalid/", allow_insecure_http=False)
    allowed = check_base_url("http://openhands.invalid/", allow_insecure_http=True)
    assert allowed == "http://openhands.invalid"
