"""The V1 OpenAPI spec in ../shared, with its known defects patched, for the tests that
generate from it (test_spec_conformance.py: requests; test_hostile.py: response bodies)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

_IN_SHARED = Path("shared", "openapi", "openhands-cloud.json")
# ../shared beside the checkout; a git worktree one level deeper (wt/<name>) finds it too.
SPEC = next(
    (d / _IN_SHARED for d in Path(__file__).resolve().parents[1:] if (d / _IN_SHARED).exists()),
    Path(__file__).resolve().parents[2] / _IN_SHARED,
)


def load_spec() -> dict[str, Any]:
    spec: dict[str, Any] = json.loads(SPEC.read_text())
    # DELETE /api/v1/sandboxes/{id} declares only a `sandbox_id` query parameter, so no
    # request can be built from it; declare the path parameter the path template names.
    delete = spec["paths"]["/api/v1/sandboxes/{id}"]["delete"]
    delete["parameters"].append(
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
    )
    map_discriminators_by_const(spec)
    return spec


def map_discriminators_by_const(node: Any, root: dict[str, Any] | None = None) -> None:
    """Key every discriminator mapping by the `const` its target schema declares too.

    The spec's mappings are keyed by mangled names ("openhands__sdk__event__...MessageEvent-
    Output__1"), but every schema they point at pins its `kind` to the plain class name, and
    the real server sends exactly that (captures/events_search.txt: "kind":"MessageEvent").
    Without this, every event body fails the discriminator check whatever its content.
    """
    root = node if root is None else root
    if isinstance(node, dict):
        found = node.get("discriminator")
        if isinstance(found, dict) and isinstance(found.get("mapping"), dict):
            name = found["propertyName"]
            for ref in list(found["mapping"].values()):
                target = root["components"]["schemas"][ref.rsplit("/", 1)[-1]]
                const = target.get("properties", {}).get(name, {}).get("const")
                if isinstance(const, str):
                    found["mapping"].setdefault(const, ref)
        for value in node.values():
            map_discriminators_by_const(value, root)
    elif isinstance(node, list):
        for value in node:
            map_discriminators_by_const(value, root)
