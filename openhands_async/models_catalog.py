"""Models of what the server offers: git (repositories, branches, suggested tasks), sandbox
specs, skills and marketplaces, LLM models and providers, the web client's configuration,
a conversation's skills and hooks, and a queued (pending) message.

Structuring lives in `_converter.py`.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import attrs

from ._model_base import _OpenStrEnum
from .models_settings import GitProvider

__all__ = [
    "Branch",
    "ConversationSkill",
    "GitInfo",
    "GitOrganizations",
    "HookDefinition",
    "HookEvent",
    "HookMatcher",
    "LLMModel",
    "LLMProvider",
    "MarketplacePlugin",
    "MarketplaceRegistration",
    "MarketplaceSkills",
    "PendingMessage",
    "Repository",
    "SandboxSpec",
    "Skill",
    "SuggestedTask",
    "SuggestedTaskType",
    "WebClientConfig",
]


class SuggestedTaskType(_OpenStrEnum):
    """The spec's TaskType."""

    MERGE_CONFLICTS = "MERGE_CONFLICTS"
    FAILING_CHECKS = "FAILING_CHECKS"
    UNRESOLVED_COMMENTS = "UNRESOLVED_COMMENTS"
    OPEN_ISSUE = "OPEN_ISSUE"
    OPEN_PR = "OPEN_PR"


@attrs.frozen
class Repository:
    """A repository the user can reach (`client.git.repositories.search`)."""

    id: str
    full_name: str
    git_provider: GitProvider
    is_public: bool = False
    stargazers_count: int | None = None
    pushed_at: str | None = None
    owner_type: str | None = None
    main_branch: str | None = None


@attrs.frozen
class Branch:
    """A branch of a repository (`client.git.branches.search`)."""

    name: str
    commit_sha: str
    protected: bool = False
    last_push_date: str | None = None


@attrs.frozen
class SuggestedTask:
    """Work a git provider suggests (`client.git.suggested_tasks.search`): a failing
    check, a merge conflict, an open issue...
    """

    git_provider: GitProvider
    task_type: SuggestedTaskType
    repo: str
    issue_number: int
    title: str


@attrs.frozen
class GitInfo:
    """The user on the connected git provider (UserGitInfo)."""

    id: str
    login: str
    avatar_url: str = ""
    company: str | None = None
    name: str | None = None
    email: str | None = None


@attrs.frozen
class GitOrganizations:
    """The git organisations the user belongs to on the active provider."""

    provider: GitProvider
    organizations: list[str] = attrs.field(factory=list)


@attrs.frozen
class SandboxSpec:
    """A template sandboxes are made from (SandboxSpecInfo): on the open-source server the
    agent-server image; its `id` is what `sandboxes.start(sandbox_spec_id=...)` takes."""

    id: str
    command: list[str] | None = None
    created_at: datetime | None = None
    initial_env: dict[str, str] = attrs.field(factory=dict, repr=False)
    working_dir: str | None = None


@attrs.frozen
class Skill:
    """An available skill (SkillInfo)."""

    name: str
    type: str
    source: str
    triggers: list[str] | None = None


@attrs.frozen
class MarketplaceRegistration:
    """A plugin marketplace to preview (`skills.marketplace`): `source` is
    `github:owner/repo`, a git URL or a local path."""

    name: str
    source: str
    ref: str | None = None
    repo_path: str | None = None
    auto_load: bool = False


@attrs.frozen
class MarketplacePlugin:
    """A plugin a marketplace offers (`client.skills.marketplace`)."""

    name: str
    source: str
    marketplace: str
    description: str | None = None


@attrs.frozen
class MarketplaceSkills:
    """What the marketplaces offer (MarketplaceSkillsPreviewResponse)."""

    skills: list[Skill] = attrs.field(factory=list)
    plugins: list[MarketplacePlugin] = attrs.field(factory=list)
    marketplace_skills: dict[str, list[str]] = attrs.field(factory=dict)
    errors: list[str] = attrs.field(factory=list)


@attrs.frozen
class LLMModel:
    """A model the server can run (LLMModel). `hidden` ones are valid but not offered."""

    name: str
    provider: str | None = None
    verified: bool = False
    hidden: bool = False
    canonical: str | None = None

    @property
    def full_name(self) -> str:
        """`provider/name` (how a start's `llm_model` names it), or the bare name."""
        if self.provider and not self.name.startswith(f"{self.provider}/"):
            return f"{self.provider}/{self.name}"
        return self.name


@attrs.frozen
class LLMProvider:
    """An LLM provider the server knows (`client.config.providers.search`)."""

    name: str
    verified: bool = False


@attrs.frozen
class WebClientConfig:
    """The server's configuration for its web client (WebClientConfig); `payload` keeps all.

    Of use to a script: `providers_configured` (the git providers a repository can come
    from, so which `provider` git searches can take) and `faulty_models` (models the server
    currently reports as failing).
    """

    app_mode: str | None = None
    providers_configured: list[GitProvider] = attrs.field(factory=list)
    faulty_models: list[str] = attrs.field(factory=list)
    maintenance_start_time: datetime | None = None
    error_message: str | None = None
    feature_flags: dict[str, Any] = attrs.field(factory=dict, repr=False)
    payload: dict[str, Any] = attrs.field(factory=dict, repr=False, eq=False)


@attrs.frozen
class ConversationSkill:
    """A skill loaded in a conversation (SkillResponse)."""

    name: str
    type: str
    content: str = attrs.field(default="", repr=False)
    triggers: list[str] = attrs.field(factory=list)


@attrs.frozen
class HookDefinition:
    """One hook a conversation runs: its `type`, `command` and `timeout` (seconds)."""

    type: str
    command: str
    timeout: int = 60


@attrs.frozen
class HookMatcher:
    """The hooks run for the tools whose names match `matcher`."""

    matcher: str
    hooks: list[HookDefinition] = attrs.field(factory=list)


@attrs.frozen
class HookEvent:
    """The hooks of one event type (`stop`, `pre_tool_use`, ...) in a conversation."""

    event_type: str
    matchers: list[HookMatcher] = attrs.field(factory=list)


@attrs.frozen
class PendingMessage:
    """A message queued for a conversation that is not READY yet (PendingMessageResponse):
    delivered, in order, when its start task reaches READY."""

    id: str
    queued: bool = True
    position: int = 1


# -- answers only unwrapped by the resources --------------------------------------------


@attrs.frozen
class SkillsAnswer:
    skills: list[ConversationSkill] = attrs.field(factory=list)


@attrs.frozen
class HooksAnswer:
    hooks: list[HookEvent] = attrs.field(factory=list)


@attrs.frozen
class Success:
    success: bool = True
