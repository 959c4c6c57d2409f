"""docs/api-coverage.md, generated: every operation of the V1 spec and the SDK method that
calls it (or why none does). tests/test_api_coverage.py fails when the committed file
differs; regenerate with `python -m tests.api_coverage`.

The SDK's route table is read from its code, so it cannot drift: every call to a
`Resource` helper (`_get`, `_post`, `_search`, `_get_many`, ...) or to the base client
(`request`, `open_stream`, `download`) in `resources/` and `lib/`, with its path rendered
from module constants, f-strings and one-line path helpers. The method is the enclosing
function, named as the user reaches it (`client.settings.profiles.save`), which is found
by walking a real client's resources.
"""

from __future__ import annotations

import ast
import inspect
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openhands_async as oh
from openhands_async.resources._base import Resource

from .spec import load_spec

PACKAGE = Path(oh.__file__).parent
DOC = PACKAGE.parent / "docs" / "api-coverage.md"
HTTP = ("get", "post", "put", "patch", "delete")
HELPER_VERBS = {
    "_get": "GET",
    "_search": "GET",
    "_get_many": "GET",
    "_get_one": "GET",
    "_count": "GET",
    "_read_raw": "GET",
    "download": "GET",
    "_post": "POST",
    "_put": "PUT",
    "_patch": "PATCH",
    "_delete": "DELETE",
}
LITERAL_VERB = ("request", "open_stream", "_request")
# Why an operation has no SDK method, by path.
WHY_NOT = (
    (r"^/api/v1/webhooks/", "called by the agent server, not by users"),
    (r"^/api/v1/sandboxes/\{[^}]+\}/settings/secrets", "called from inside a sandbox"),
    (r"^/api/v1/", "not in the SDK yet"),
)
# Stream-start is followed by module-level code the conversations resource hands out.
MODULE_ALIASES = {"streaming": "conversations.stream_start"}


def norm(path: str) -> str:
    return re.sub(r"\{[^}]*\}", "{}", path).rstrip("/")


def _modules() -> Iterator[Path]:
    yield from sorted((PACKAGE / "resources").glob("*.py"))
    yield from sorted((PACKAGE / "lib").glob("*.py"))


class _Renderer:
    def __init__(self, tree: ast.Module) -> None:
        self.consts: dict[str, str] = {}
        self.funcs: dict[str, ast.expr] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.FunctionDef) and isinstance(node.body[-1], ast.Return):
                value = node.body[-1].value
                if value is not None:
                    self.funcs[node.name] = value
        self.assign(tree.body)

    def assign(self, body: list[ast.stmt] | ast.AST) -> None:
        """Record the string constants assigned in `body` (a module's top level, or every
        assignment inside one function: `path = f"..."`, `method, url = "POST", ...`)."""
        nodes = body if isinstance(body, list) else list(ast.walk(body))
        for node in nodes:
            if not isinstance(node, ast.Assign):
                continue
            for target in node.targets:
                pairs: list[tuple[ast.expr, ast.expr]] = [(target, node.value)]
                if isinstance(target, ast.Tuple) and isinstance(node.value, ast.Tuple):
                    pairs = list(zip(target.elts, node.value.elts, strict=False))
                for name, value in pairs:
                    rendered = self.render(value)
                    if isinstance(name, ast.Name) and rendered is not None:
                        self.consts[name.id] = rendered

    def local(self, fn: ast.AST) -> _Renderer:
        inner = _Renderer.__new__(_Renderer)
        inner.consts, inner.funcs = dict(self.consts), self.funcs
        inner.assign(fn)
        return inner

    def render(self, node: ast.AST | None, depth: int = 0) -> str | None:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return node.value
        if isinstance(node, ast.Name):
            return self.consts.get(node.id)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and depth < 3:
            body = self.funcs.get(node.func.id)
            return self.render(body, depth + 1) if body is not None else None
        is_call = isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
        if is_call and node.func.attr == "format":  # type: ignore[union-attr]  # "/a/{}".format(x)
            return self.render(node.func.value, depth)  # type: ignore[union-attr]
        if isinstance(node, ast.JoinedStr):
            parts = []
            for value in node.values:
                if isinstance(value, ast.Constant):
                    parts.append(str(value.value))
                elif isinstance(value, ast.FormattedValue):
                    inner = self.render(value.value, depth + 1)
                    parts.append(inner if inner and inner.startswith("/") else "{}")
            return "".join(parts)
        return None


def sdk_routes() -> dict[tuple[str, str], set[str]]:
    """(METHOD, normalised path) -> the SDK methods calling it, read from the code."""
    found: dict[tuple[str, str], set[str]] = {}
    reach = _reachable()
    for module in _modules():
        tree = ast.parse(module.read_text(encoding="utf-8"))
        renderer = _Renderer(tree)
        functions = (ast.FunctionDef, ast.AsyncFunctionDef)
        for cls in [n for n in tree.body if isinstance(n, ast.ClassDef)]:
            for fn in [n for n in cls.body if isinstance(n, functions)]:
                name = _name(reach, cls.name, fn.name)
                for verb, path in _calls(fn, renderer) if name else ():
                    found.setdefault((verb, norm(path)), set()).add(name)
        alias = MODULE_ALIASES.get(module.stem)
        for fn in [n for n in tree.body if isinstance(n, functions)] if alias else ():
            for verb, path in _calls(fn, renderer):
                found.setdefault((verb, norm(path)), set()).add(alias)
    return found


def _calls(fn: ast.AST, module: _Renderer) -> Iterator[tuple[str, str]]:
    renderer = module.local(fn)
    for node in ast.walk(fn):
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        name, args = node.func.attr, node.args
        if name in HELPER_VERBS and args:
            verb, path_node = HELPER_VERBS[name], args[0]
        elif name in LITERAL_VERB and len(args) >= 2 and renderer.render(args[0]):
            verb, path_node = str(renderer.render(args[0])).upper(), args[1]
        else:
            continue
        path = renderer.render(path_node)
        if path and path.startswith("/"):
            yield verb, path


def _reachable() -> dict[str, list[str]]:
    """Class name -> the client attribute paths of the resources of (or derived from) it."""
    client = oh.OpenHandsClient(base_url="http://127.0.0.1:9")
    out: dict[str, list[str]] = {}

    def visit(obj: Any, path: str, depth: int) -> None:
        for cls in type(obj).__mro__:
            if issubclass(cls, Resource) and cls is not Resource:
                out.setdefault(cls.__name__, []).append(path)
        if depth < 2:
            for attr, value in vars(obj).items():
                if isinstance(value, Resource) and not attr.startswith("_"):
                    visit(value, f"{path}.{attr}", depth + 1)

    for attr, member in inspect.getmembers(type(client)):
        if isinstance(member, property | type(oh.OpenHandsClient.__dict__["users"])):
            value = getattr(client, attr)
            if isinstance(value, Resource):
                visit(value, attr, 0)
    return out


def _name(reach: dict[str, list[str]], cls: str, method: str) -> str | None:
    paths = reach.get(cls)
    if not paths or method.startswith("__"):
        return None
    return f"{min(paths, key=len)}.{method}"


def generate() -> str:
    spec = load_spec()
    routes = sdk_routes()
    rows = []
    covered = total = 0
    for path in sorted(p for p in spec["paths"] if p.startswith("/api/v1/")):
        for verb in HTTP:
            if verb not in spec["paths"][path]:
                continue
            key = (verb.upper(), norm(path))
            methods = sorted(routes.get(key, ()))
            counted = not any(re.search(p, path) for p, _ in WHY_NOT[:2])
            total += counted
            if methods:
                covered += counted
                cell = ", ".join(f"`client.{m}`" for m in methods)
            else:
                cell = next(why for pattern, why in WHY_NOT if re.search(pattern, path))
            rows.append(f"| {verb.upper()} | `{path}` | {cell} |")
    extra = sorted(
        f"| {verb} | `{path}` | " + ", ".join(f"`client.{m}`" for m in sorted(methods)) + " |"
        for (verb, path), methods in routes.items()
        if not path.startswith("/api/v1/")
    )
    return "\n".join(
        [
            "# API coverage",
            "",
            "Generated by `tests/test_api_coverage.py` from the V1 OpenAPI spec",
            "(`../shared/openapi/openhands-cloud.json`) and the SDK's own calls; do not edit.",
            "Regenerate with `python -m tests.api_coverage`.",
            "",
            f"{covered} of the {total} V1 operations a user calls have an SDK method "
            "(webhooks and in-sandbox lookups aside).",
            "",
            "| Method | Path | SDK |",
            "|---|---|---|",
            *rows,
            "",
            "Outside `/api/v1` (probes, Cloud routes):",
            "",
            "| Method | Path | SDK |",
            "|---|---|---|",
            *extra,
            "",
        ]
    )


if __name__ == "__main__":
    DOC.write_text(generate(), encoding="utf-8")
    print(f"wrote {DOC}")
