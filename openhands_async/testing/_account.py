"""The account's configuration (issue 20): settings, LLM profiles, custom secrets, git
tokens, pending messages, and the catalogue the server offers (git repositories, sandbox
specs, skills, LLM models). Plain records; the routes in `_routes/` keep them consistent.

Secret values are stored (a sandbox would need them) but no route ever answers one: the
routes answer `*_set` flags and names, as the real server does.
"""

from __future__ import annotations

import copy
import math
from typing import Any

import attrs

# The real server's limits (openhands-ai 1.11.0): settings/llm_profiles.py and
# pending_messages/pending_message_router.py.
MAX_PROFILES = 10
MAX_PENDING_MESSAGES = 10
DEFAULT_MODEL = "openai/fake"
SPEC_ID = "ghcr.io/openhands/agent-server:1.34.0-python"


def _default_llm() -> dict[str, Any]:
    return {"model": DEFAULT_MODEL, "api_key": None, "base_url": None, "usage_id": "default"}


@attrs.define
class ProfileRecord:
    llm: dict[str, Any]  # the full LLM config; "api_key" holds the stored key (or None)


@attrs.define
class SecretRecord:
    value: str
    description: str | None


@attrs.define
class PendingRecord:
    id: str
    role: str
    content: list[dict[str, Any]]
    #: Loop time it is delivered (INF: never, e.g. queued after READY, as on the server).
    deliver_at: float = math.inf


def _repositories() -> dict[str, list[dict[str, Any]]]:
    def repo(n: int, name: str, public: bool) -> dict[str, Any]:
        return {
            "id": str(1000 + n),
            "full_name": name,
            "git_provider": "github",
            "is_public": public,
            "stargazers_count": 10 * n,
            "link_header": None,
            "pushed_at": "2026-11-01T12:00:00Z",
            "owner_type": "organization",
            "main_branch": "main",
        }

    names = ["octo-org/service", "octo-org/website", "octo-org/infra", "developer/dotfiles"]
    return {"github": [repo(i, name, i != 2) for i, name in enumerate(names)]}


def _models() -> list[dict[str, Any]]:
    def model(provider: str, name: str, verified: bool) -> dict[str, Any]:
        return {
            "provider": provider,
            "name": name,
            "verified": verified,
            "hidden": False,
            "canonical": None,
        }

    return [
        model("openai", "fake", True),
        model("openhands", "claude-sonnet-4-5", True),
        model("openhands", "gpt-5.5", True),
        model("anthropic", "claude-sonnet-4-5", True),
        model("openai", "gpt-5.5", True),
        model("openai", "gpt-4o-mini", False),
    ]


@attrs.define
class Account:
    """One account's configuration, mutable by the routes and (for seeding) by tests."""

    llm: dict[str, Any] = attrs.Factory(_default_llm)
    #: Top-level settings fields a POST /api/v1/settings changed.
    fields: dict[str, Any] = attrs.Factory(dict)
    conversation_settings: dict[str, Any] = attrs.Factory(
        lambda: {
            "schema_version": 1,
            "max_iterations": 500,
            "confirmation_mode": False,
            "security_analyzer": "llm",
        }
    )
    search_api_key: str | None = None
    profiles: dict[str, ProfileRecord] = attrs.Factory(dict)
    active_profile: str | None = None
    secrets: dict[str, SecretRecord] = attrs.Factory(dict)
    #: Git-provider tokens by provider ("github": {"token": ..., "host": ...}).
    provider_tokens: dict[str, dict[str, Any]] = attrs.Factory(dict)
    #: Queued messages by queue key ("task-<hex>" or a dashed conversation id).
    pending: dict[str, list[PendingRecord]] = attrs.Factory(dict)
    #: The catalogue, seeded with plausible data; tests may change it.
    repositories: dict[str, list[dict[str, Any]]] = attrs.Factory(_repositories)
    models: list[dict[str, Any]] = attrs.Factory(_models)
    #: The LLM profile each conversation runs with (by 32-hex id), once switched.
    conversation_profiles: dict[str, str] = attrs.Factory(dict)

    def profile_llm(self, name: str) -> dict[str, Any] | None:
        record = self.profiles.get(name)
        return copy.deepcopy(record.llm) if record is not None else None

    def connected_provider(self) -> str | None:
        return next(iter(self.provider_tokens), None)
