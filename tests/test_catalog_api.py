"""Git searches, sandbox specs, skills, LLM models/providers, the web-client config, and a
conversation's controls (pending messages, profile / ACP model switches, skills, hooks),
against FakeCloud over loopback, documented errors included."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud


@pytest.fixture
async def slow_cloud() -> AsyncIterator[FakeCloud]:
    # Starts take ~0.15 s: long enough to queue a message before READY.
    async with FakeCloud(time_scale=1.0) as fake:
        yield fake


@pytest.fixture
async def slow_client(slow_cloud: FakeCloud) -> AsyncIterator[oh.OpenHandsClient]:
    async with oh.OpenHandsClient(api_key=slow_cloud.api_key, base_url=slow_cloud.base_url) as c:
        yield c


async def _until(check: Callable[[], Awaitable[bool]], steps: int = 500) -> None:
    """Poll (bounded) until `check()` holds; fail the test if it never does."""
    for _ in range(steps):
        if await check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition never became true")


async def _ready(client: oh.OpenHandsClient, task_id: str) -> str:
    found: list[oh.StartTask] = []

    async def terminal() -> bool:
        found[:] = [await client.start_tasks.get(task_id)]
        return found[0].is_terminal

    await _until(terminal)
    assert found[0].status == oh.StartTaskStatus.READY, found[0]
    assert found[0].app_conversation_id is not None
    return found[0].app_conversation_id


# -------------------------------------------------------------------- git


async def test_git_needs_a_connected_provider(client: oh.OpenHandsClient) -> None:
    for search in (
        client.git.repositories.search("github"),
        client.git.installations.search("github"),
        client.git.branches.search("github", "octo-org/service", ""),
        client.git.suggested_tasks.search(),
    ):
        with pytest.raises(oh.PermissionDeniedError):
            await search.to_list()
    with pytest.raises(oh.PermissionDeniedError):
        await client.users.git_organizations()


async def test_git_searches(client: oh.OpenHandsClient, cloud: FakeCloud) -> None:
    await client.secrets.set_git_provider(oh.GitProvider.GITHUB, "ghp_token")
    repos = await client.git.repositories.search("github", query="octo").to_list()
    assert [r.full_name for r in repos] == [
        "octo-org/service",
        "octo-org/website",
        "octo-org/infra",
    ]
    assert repos[0].git_provider is oh.GitProvider.GITHUB
    by_stars = await client.git.repositories.search("github", sort_order="stars-desc").to_list()
    assert by_stars[0].full_name == "developer/dotfiles"
    assert len(await client.git.repositories.search("github", page_size=1).to_list()) == 4
    assert await client.git.repositories.search("github", limit=2).to_list() == repos[:2]

    branches = await client.git.branches.search("github", "octo-org/service", "fe").to_list()
    assert [b.name for b in branches] == ["feature/login"]
    assert await client.git.branches.search("github", "nobody/none", "").to_list() == []
    assert await client.git.installations.search("github").to_list() == [
        "github-installation-developer",
        "github-installation-octo-org",
    ]
    tasks = await client.git.suggested_tasks.search().to_list()
    assert tasks[0].task_type is oh.SuggestedTaskType.FAILING_CHECKS
    orgs = await client.users.git_organizations()
    assert (orgs.provider, orgs.organizations) == ("github", ["developer", "octo-org"])
    # seeded data is the test's to change
    cloud.account.repositories["github"].append({**cloud.account.repositories["github"][0]})
    assert len(await client.git.repositories.search("github").to_list()) == 5
    # a provider with no token stored
    with pytest.raises(oh.PermissionDeniedError):
        await client.git.repositories.search("gitlab").to_list()


async def test_git_search_validation(client: oh.OpenHandsClient) -> None:
    await client.secrets.set_git_provider("github", "ghp_token")
    with pytest.raises(oh.UnprocessableEntityError):
        await client.git.repositories.search("github", sort_order="sideways").to_list()
    with pytest.raises(oh.UnprocessableEntityError):
        await client.git.repositories.search("not-a-provider").to_list()


# -------------------------------------------------------------------- catalogue


async def test_sandbox_specs_and_starting_a_sandbox_from_one(client: oh.OpenHandsClient) -> None:
    specs = await client.sandbox_specs.search().to_list()
    assert len(specs) == 1
    spec = specs[0]
    assert spec.created_at is not None
    assert spec.created_at.tzinfo is not None
    assert await client.sandbox_specs.get_many([spec.id, "missing"]) == [spec, None]
    assert await client.sandbox_specs.get(spec.id) == spec
    with pytest.raises(oh.NotFoundError):
        await client.sandbox_specs.get("missing")
    sandbox = await client.sandboxes.start(sandbox_spec_id=spec.id)
    assert (await client.sandboxes.get(sandbox.id)).id == sandbox.id


async def test_skills_and_marketplace(client: oh.OpenHandsClient) -> None:
    skills = await client.skills.search().to_list()
    assert {s.name for s in skills} >= {"github", "docker"}
    assert len(await client.skills.search(page_size=1).to_list()) == len(skills)
    preview = await client.skills.marketplace(
        [
            oh.MarketplaceRegistration("team", "github:octo-org/skills"),
            oh.MarketplaceRegistration("local", "/nowhere"),
        ]
    )
    assert preview.marketplace_skills == {"team": ["team-helper"]}
    assert [p.marketplace for p in preview.plugins] == ["team"]
    assert len(preview.errors) == 1


async def test_models_and_providers(client: oh.OpenHandsClient, cloud: FakeCloud) -> None:
    models = await client.config.models.search().to_list()
    assert "openai/gpt-5.5" in {m.full_name for m in models}
    gpt = await client.config.models.search(query="GPT", provider="openai").to_list()
    assert [m.name for m in gpt] == ["gpt-5.5", "gpt-4o-mini"]
    unverified = await client.config.models.search(verified=False).to_list()
    assert [m.name for m in unverified] == ["gpt-4o-mini"]
    providers = await client.config.providers.search().to_list()
    assert [p.name for p in providers] == ["anthropic", "openai", "openhands"]
    assert await client.config.providers.search(query="anth").to_list() == providers[:1]


async def test_web_client_config(client: oh.OpenHandsClient) -> None:
    config = await client.config.web_client()
    assert config.providers_configured == [oh.GitProvider.GITHUB]
    assert config.payload["kind"] == "WebClientConfig"


async def test_unknown_enum_values_are_kept(client: oh.OpenHandsClient, cloud: FakeCloud) -> None:
    await client.secrets.set_git_provider("github", "ghp_token")
    cloud.account.repositories["github"][0]["git_provider"] = "sourcehut"
    repos = await client.git.repositories.search("github").to_list()
    assert repos[0].git_provider == "sourcehut"
    assert not repos[0].git_provider.known


# -------------------------------------------------------------------- conversation controls


async def test_queued_message_is_delivered_at_ready(slow_client: oh.OpenHandsClient) -> None:
    client = slow_client
    task = await client.conversations.start("Build it")
    first = await client.conversations.queue_message(task, "Then add tests")
    second = await client.conversations.queue_message(task.id, "And docs")
    assert (first.queued, first.position, second.position) == (True, 1, 2)
    conv_id = await _ready(client, task.id)
    texts: list[str | None] = []

    async def delivered() -> bool:
        texts[:] = [e.text for e in await client.events.search(conv_id).to_list()]
        return "And docs" in texts

    await _until(delivered)
    users = [t for t in texts if t in ("Build it", "Then add tests", "And docs")]
    assert users == ["Build it", "Then add tests", "And docs"]


async def test_queue_message_limits_and_inputs(client: oh.OpenHandsClient) -> None:
    target = uuid.uuid4().hex  # a task that does not exist: queued, never delivered
    for _ in range(10):
        await client.conversations.queue_message(target, "hi")
    with pytest.raises(oh.RateLimitError):
        await client.conversations.queue_message(target, "one too many")
    with pytest.raises(ValueError, match="UUID"):
        await client.conversations.queue_message("not-a-uuid", "hi")
    with pytest.raises(ValueError, match="empty"):
        await client.conversations.queue_message(target, "   ")
    answer = await client.conversations.queue_message(target, "x", conversation=True)
    assert answer.position == 1  # a conversation id is its own queue


async def test_switch_profile_and_skills_hooks(client: oh.OpenHandsClient) -> None:
    await client.settings.profiles.save("small", model="openai/gpt-4o-mini")
    conv_id = await _ready(client, (await client.conversations.start("Go")).id)
    assert await client.conversations.switch_profile(conv_id, "small") is True
    assert (await client.conversations.get(conv_id)).llm_model == "openai/gpt-4o-mini"
    with pytest.raises(oh.NotFoundError):
        await client.conversations.switch_profile(conv_id, "unknown")
    with pytest.raises(oh.NotFoundError):
        await client.conversations.switch_profile(uuid.uuid4().hex, "small")
    # not an ACP agent
    with pytest.raises(oh.BadRequestError):
        await client.conversations.switch_acp_model(conv_id, "gpt-5.5")
    skills = await client.conversations.skills(conv_id)
    assert [s.name for s in skills] == ["github", "repo"]
    assert skills[0].content not in repr(skills[0])  # long texts stay out of reprs
    hooks = await client.conversations.hooks(conv_id)
    assert hooks[0].event_type == "stop"
    assert hooks[0].matchers[0].hooks[0].command == "echo done"
    with pytest.raises(oh.NotFoundError):
        await client.conversations.skills(uuid.uuid4().hex)

    sandbox_id = (await client.conversations.get(conv_id)).sandbox_id
    assert sandbox_id is not None
    await client.sandboxes.pause(sandbox_id)
    with pytest.raises(oh.ConflictError):
        await client.conversations.switch_profile(conv_id, "small")
    assert await client.conversations.skills(conv_id) == []
    assert await client.conversations.hooks(conv_id) == []


async def test_switch_acp_model_on_an_acp_conversation(client: oh.OpenHandsClient) -> None:
    task = await client.conversations.start("Go", agent_type="acp")
    conv_id = await _ready(client, task.id)
    assert await client.conversations.switch_acp_model(conv_id, "claude-sonnet-4-5") is True
    assert (await client.conversations.get(conv_id)).llm_model == "claude-sonnet-4-5"
