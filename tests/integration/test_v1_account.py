"""Issue 20's endpoints against the real server: settings, profiles (saved, activated,
switched to on a running conversation), secrets (created, listed without value, deleted),
a pending message queued before READY and then seen in the conversation's events, and the
read-only catalogue (sandbox specs, models, providers, skills, web-client config). Git
without a connected provider: the typed 403 and 422 the server answers.

Lean on purpose (CI budget): one conversation of its own, started in the first test.
"""

from __future__ import annotations

import uuid

import pytest

import openhands_async as oh

from .conftest import wait_for

pytestmark = pytest.mark.asyncio(loop_scope="session")

SECRET = f"V1_SECRET_{uuid.uuid4().hex[:8].upper()}"  # env-variable names only
VALUE = "integration-VALUE-" + uuid.uuid4().hex


async def test_catalogue_and_settings(client: oh.OpenHandsClient) -> None:
    settings = await client.settings.get()
    assert settings.llm_model
    assert isinstance(await client.settings.agent_schema(), dict)
    specs = await client.sandbox_specs.search().to_list()
    assert specs
    assert await client.sandbox_specs.get_many([specs[0].id]) == [specs[0]]
    assert await client.config.models.search(limit=5).to_list()
    assert await client.config.providers.search(limit=5).to_list()
    await client.skills.search(limit=5).to_list()
    assert (await client.config.web_client()).payload
    with pytest.raises(oh.NotFoundError):
        await client.api_keys.current()  # a Cloud route the open-source server lacks


async def test_git_without_a_provider(client: oh.OpenHandsClient) -> None:
    with pytest.raises(oh.PermissionDeniedError):
        await client.users.git_info()
    with pytest.raises(oh.PermissionDeniedError):  # git_router: a token is required
        await client.git.repositories.search("github").to_list()
    with pytest.raises(oh.UnprocessableEntityError):  # not a ProviderType
        await client.git.installations.search("no-such-provider").to_list()


async def test_secret_created_listed_without_value_deleted(client: oh.OpenHandsClient) -> None:
    await client.secrets.create(SECRET, VALUE, description="integration")
    listed = await client.secrets.search(name_contains=SECRET).to_list()
    assert [(s.name, s.description) for s in listed] == [(SECRET, "integration")]
    assert VALUE not in repr(listed)
    await client.secrets.delete(SECRET)
    assert await client.secrets.search(name_contains=SECRET).to_list() == []
    with pytest.raises(oh.NotFoundError):
        await client.secrets.delete(SECRET)


async def test_pending_message_and_profile_switch(client: oh.OpenHandsClient) -> None:
    task = await client.conversations.start("Say hello")
    queued = await client.conversations.queue_message(task, "Then say goodbye")
    assert queued.queued

    async def ready() -> str | None:
        t = await client.start_tasks.get(task.id)
        assert t.status != oh.StartTaskStatus.ERROR, t.detail
        return t.app_conversation_id if t.status == oh.StartTaskStatus.READY else None

    conv_id = await wait_for("READY", ready, bound=120)

    async def delivered() -> bool | None:
        texts = [e.text for e in await client.events.search(conv_id).to_list()]
        return True if "Then say goodbye" in texts else None

    await wait_for("the queued message in the events", delivered, bound=90)

    profiles = client.settings.profiles
    name = f"it-{uuid.uuid4().hex[:8]}"
    await profiles.save(name)  # the current (fake) LLM, under a name
    try:
        assert name in [p.name for p in (await profiles.list()).profiles]
        activated = await profiles.activate(name)
        assert activated.model == (await client.settings.get()).llm_model
        assert await client.conversations.switch_profile(conv_id, name) is True
        with pytest.raises(oh.NotFoundError):
            await client.conversations.switch_profile(conv_id, "no-such-profile")
        renamed = f"{name}-b"
        await profiles.rename(name, renamed)
        name = renamed
    finally:
        await profiles.delete(name)
