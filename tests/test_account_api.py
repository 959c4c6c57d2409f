"""Settings, LLM profiles, secrets, git-provider tokens, the API key and `org_id`, against
FakeCloud over loopback: each method, its documented errors, and the state they share."""

from __future__ import annotations

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud

# -------------------------------------------------------------------- settings


async def test_settings_get_and_partial_update(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    before = await client.settings.get()
    assert before.llm_model == "openai/fake"
    assert before.llm_api_key_set is False
    assert before.payload["conversation_settings"]["max_iterations"] == 500

    await client.settings.update(
        llm_model="openai/gpt-5.5",
        llm_api_key="sk-llm-123",
        conversation_settings={"max_iterations": 42},
        git_user_name="bot",
    )
    after = await client.settings.get()
    assert after.llm_model == "openai/gpt-5.5"
    assert after.llm_api_key_set is True
    assert after.llm.get("api_key") is None  # never sent back
    assert after.git_user_name == "bot"
    assert after.payload["conversation_settings"]["max_iterations"] == 42
    # only what was given changed: the rest of the conversation settings stayed
    assert after.payload["conversation_settings"]["security_analyzer"] == "llm"
    assert cloud.account.llm["api_key"] == "sk-llm-123"


async def test_settings_update_needs_a_field(client: oh.OpenHandsClient) -> None:
    with pytest.raises(ValueError, match="at least one"):
        await client.settings.update()


async def test_settings_update_sends_diffs(client: oh.OpenHandsClient) -> None:
    # The server refuses raw `agent_settings` (422: legacy keys); the SDK sends the diff.
    await client.settings.update(agent_settings={"llm": {"base_url": "http://llm.local"}})
    settings = await client.settings.get()
    assert (settings.llm_model, settings.llm_base_url) == ("openai/fake", "http://llm.local")


async def test_settings_schemas(client: oh.OpenHandsClient) -> None:
    agent = await client.settings.agent_schema()
    conversation = await client.settings.conversation_schema()
    assert "llm" in agent["properties"]
    assert "max_iterations" in conversation["properties"]


# -------------------------------------------------------------------- profiles


async def test_profiles_save_list_get_activate_rename_delete(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    profiles = client.settings.profiles
    assert (await profiles.list()).profiles == []

    saved = await profiles.save("fast", model="openai/gpt-4o-mini", api_key="sk-fast")
    assert saved.name == "fast"
    await profiles.save("snapshot")  # no llm: the account's current LLM is saved
    listed = await profiles.list()
    assert [p.name for p in listed.profiles] == ["fast", "snapshot"]
    assert listed.profiles[0].api_key_set is True
    assert listed.profiles[1].model == "openai/fake"

    detail = await profiles.get("fast")
    assert detail.model == "openai/gpt-4o-mini"
    assert detail.config["api_key"] is None
    assert detail.api_key_set is True

    activated = await profiles.activate("fast")
    assert activated.model == "openai/gpt-4o-mini"
    settings = await client.settings.get()
    assert settings.llm_model == "openai/gpt-4o-mini"
    assert settings.active_profile == "fast"

    renamed = await profiles.rename("fast", "quick")
    assert renamed.name == "quick"
    assert (await profiles.list()).active_profile == "quick"
    # re-saving without a key keeps the stored one
    await profiles.save("quick", model="openai/gpt-5.5")
    assert cloud.account.profiles["quick"].llm["api_key"] == "sk-fast"

    await profiles.delete("quick")
    await profiles.delete("quick")  # idempotent on the server
    listed = await profiles.list()
    assert [p.name for p in listed.profiles] == ["snapshot"]
    assert listed.active_profile is None


async def test_profile_errors(client: oh.OpenHandsClient) -> None:
    profiles = client.settings.profiles
    with pytest.raises(oh.NotFoundError):
        await profiles.get("missing")
    with pytest.raises(oh.NotFoundError):
        await profiles.activate("missing")
    with pytest.raises(oh.NotFoundError):
        await profiles.rename("missing", "other")
    await profiles.save("a")
    await profiles.save("b")
    with pytest.raises(oh.ConflictError):
        await profiles.rename("a", "b")
    for bad in ("", "has space", "x" * 65, "slash/name"):
        with pytest.raises(ValueError, match="profile"):
            await profiles.get(bad)


async def test_profile_cap_is_a_conflict(client: oh.OpenHandsClient) -> None:
    for i in range(10):
        await client.settings.profiles.save(f"p{i}")
    with pytest.raises(oh.ConflictError):
        await client.settings.profiles.save("p10")
    await client.settings.profiles.save("p3", model="openai/x")  # overwriting is fine


# -------------------------------------------------------------------- secrets


async def test_secret_lifecycle_values_never_come_back(
    client: oh.OpenHandsClient, cloud: FakeCloud
) -> None:
    await client.secrets.create("GITHUB_TOKEN", "ghp_value_1", description="for pushes")
    await client.secrets.create("NPM_TOKEN", oh.SecretStr("npm_value_2"))
    listed = await client.secrets.search().to_list()
    assert [(s.name, s.description) for s in listed] == [
        ("GITHUB_TOKEN", "for pushes"),
        ("NPM_TOKEN", ""),
    ]
    assert "value" not in repr(listed)
    assert [s.name for s in await client.secrets.search(name_contains="npm").to_list()] == [
        "NPM_TOKEN"
    ]
    # paging walks the server's name cursor
    assert len(await client.secrets.search(page_size=1).to_list()) == 2

    await client.secrets.update("NPM_TOKEN", name="NPM_AUTH", description="registry")
    names = [s.name for s in await client.secrets.search().to_list()]
    assert names == ["GITHUB_TOKEN", "NPM_AUTH"]
    assert cloud.account.secrets["NPM_AUTH"].value == "npm_value_2"  # the value stayed

    await client.secrets.delete("GITHUB_TOKEN")
    assert [s.id for s in await client.secrets.search().to_list()] == ["NPM_AUTH"]


async def test_secret_errors(client: oh.OpenHandsClient) -> None:
    with pytest.raises(oh.NotFoundError):
        await client.secrets.delete("NOPE")
    with pytest.raises(oh.NotFoundError):
        await client.secrets.update("NOPE", name="X")
    await client.secrets.create("A", "1")
    await client.secrets.create("B", "2")
    with pytest.raises(oh.BadRequestError):
        await client.secrets.update("A", name="B")
    with pytest.raises(ValueError, match="secret name"):
        await client.secrets.create("", "x")
    with pytest.raises(oh.UnprocessableEntityError, match="Invalid secret name"):
        await client.secrets.create("not-an-env-name", "x")  # secrets become env variables


async def test_git_provider_tokens(client: oh.OpenHandsClient, cloud: FakeCloud) -> None:
    with pytest.raises(oh.PermissionDeniedError):
        await client.users.git_info()
    await client.secrets.set_git_provider("github", "ghp_tok", host="github.com")
    assert (await client.settings.get()).provider_tokens_set == {"github": "github.com"}
    assert (await client.users.git_info()).login == "developer"
    with pytest.raises(oh.UnprocessableEntityError):  # the server knows its providers
        await client.secrets.set_git_provider("nonsense-provider", "x")
    await client.secrets.delete_git_providers()
    assert cloud.account.provider_tokens == {}
    with pytest.raises(oh.PermissionDeniedError):
        await client.users.git_info()


# -------------------------------------------------------------------- org and key


async def test_org_id_is_sent_on_every_request(
    cloud: FakeCloud, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with oh.OpenHandsClient(
        api_key=cloud.api_key, base_url=cloud.base_url, org_id="org-42"
    ) as client:
        assert (await client.api_keys.current()).org_id == "org-42"
    monkeypatch.setenv("OPENHANDS_ORG_ID", "org-from-env")
    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        assert client.org_id == "org-from-env"
        key = await client.api_keys.current()
        assert (key.org_id, key.bound_org_id) == ("org-from-env", None)
    monkeypatch.delenv("OPENHANDS_ORG_ID")
    async with oh.OpenHandsClient(api_key=cloud.api_key, base_url=cloud.base_url) as client:
        assert client.org_id is None
        assert (await client.api_keys.current()).org_id == "fake-org-0001"
