"""docs/api-coverage.md is generated from the spec and the SDK's code (tests/api_coverage.py):
the committed file must be what the generator writes, and every path the SDK calls must be
one the spec has."""

from __future__ import annotations

from .api_coverage import DOC, generate, norm, sdk_routes
from .spec import load_spec


def test_committed_api_coverage_is_current() -> None:
    assert DOC.read_text(encoding="utf-8") == generate(), (
        "docs/api-coverage.md is stale: run `python -m tests.api_coverage` and commit it"
    )


def test_every_sdk_call_is_a_spec_operation() -> None:
    spec = load_spec()
    known = {
        (verb.upper(), norm(path))
        for path, operations in spec["paths"].items()
        for verb in operations
    }
    unknown = sorted(set(sdk_routes()) - known)
    assert unknown == []


def test_the_route_table_sees_the_v1_methods() -> None:
    # Guards the reader: a change that made it see nothing would pass the first test.
    routes = sdk_routes()
    assert "settings.profiles.save" in routes[("POST", "/api/v1/settings/profiles/{}")]
    assert (
        "conversations.stream_start" in routes[("POST", "/api/v1/app-conversations/stream-start")]
    )
    assert len(routes) >= 60
