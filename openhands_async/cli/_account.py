"""Account commands: `secrets list|set|delete`, `models`, and the checks `batch --check`
runs before starting anything (LLM models and repositories the server knows)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import Any

from ._display import Out
from ._parser import EXIT_FAILED, EXIT_OK


async def cmd_secrets(client: Any, args: argparse.Namespace, out: Out) -> int:
    if args.action == "list":
        secrets = await client.secrets.search().to_list()
        for s in secrets:
            out.emit({"name": s.name, "description": s.description}, "")
        if not out.json:
            out.table(["name", "description"], [[s.name, s.description or ""] for s in secrets])
        return EXIT_OK
    if args.action == "set":
        # The value never goes on the command line (shell history, `ps`): from an
        # environment variable, stdin, or a prompt.
        if args.from_env:
            value = os.environ.get(args.from_env)
            if value is None:
                raise ValueError(f"environment variable {args.from_env} is not set")
        elif not sys.stdin.isatty():
            value = sys.stdin.read().rstrip("\n")
        else:
            value = getpass.getpass(f"value for {args.name}: ")
        if not value:
            raise ValueError("a secret value must not be empty")
        await client.secrets.create(args.name, value, description=args.description)
        out.emit({"event": "secret_set", "name": args.name}, f"secret {args.name} set")
        return EXIT_OK
    await client.secrets.delete(args.name)
    out.emit({"event": "secret_deleted", "name": args.name}, f"secret {args.name} deleted")
    return EXIT_OK


async def cmd_models(client: Any, args: argparse.Namespace, out: Out) -> int:
    models = await client.config.models.search(
        query=args.query, provider=args.provider, verified=True if args.verified else None
    ).to_list()
    shown = [m for m in models if not m.hidden]
    for m in shown:
        out.emit({"name": m.full_name, "provider": m.provider, "verified": m.verified}, "")
    if not out.json:
        rows = [[m.full_name, "yes" if m.verified else ""] for m in shown]
        out.table(["model", "verified"], rows)
    return EXIT_OK if shown else EXIT_FAILED


async def check_jobs(client: Any, jobs: list[Any]) -> tuple[list[str], list[str]]:
    """(problems, warnings) for a batch: each `llm_model` must be a model the server
    offers, each repository one the connected git provider finds. A check the server
    cannot answer (no such route, no provider connected) is a warning, not a problem."""
    from .. import OpenHandsError, PermissionDeniedError

    problems: list[str] = []
    warnings: list[str] = []
    models = {str(m) for j in jobs if (m := _field(j, "llm_model"))}
    repos = {str(r) for j in jobs if (r := _field(j, "repository"))}
    if models:
        try:
            known = await client.config.models.search().to_list()
        except OpenHandsError as exc:
            warnings.append(f"cannot check llm_model ({type(exc).__name__}): not checked")
        else:
            names = {m.full_name for m in known} | {m.name for m in known}
            problems += [f"unknown llm_model {m!r}" for m in sorted(models) if m not in names]
    for repo in sorted(repos):
        name = _repo_name(repo)
        if name is None:
            warnings.append(f"repository {repo!r}: not a GitHub owner/repo, not checked")
            continue
        try:
            found = await client.git.repositories.search("github", query=name).to_list()
        except PermissionDeniedError:
            warnings.append("no git provider connected: repositories not checked")
            break
        except OpenHandsError as exc:
            warnings.append(f"cannot check repositories ({type(exc).__name__}): not checked")
            break
        if not any(r.full_name.lower() == name.lower() for r in found):
            problems.append(f"repository {repo!r} not found")
    return problems, warnings


def _field(job: Any, name: str) -> Any:
    """A job's field, from a JSONL line's dict or a `Job` (its options or attributes)."""
    if isinstance(job, dict):
        return job.get(name)
    return getattr(job, name, None) or getattr(job, "options", {}).get(name)


def _repo_name(repo: str) -> str | None:
    text = repo.strip().removesuffix(".git")
    for prefix in ("https://github.com/", "http://github.com/", "github.com/"):
        if text.startswith(prefix):
            text = text[len(prefix) :]
    parts = text.strip("/").split("/")
    return "/".join(parts) if len(parts) == 2 and all(parts) and ":" not in text else None
