"""The pytest plugin, used as a user would: a test file in an empty directory, no conftest,
no configuration, pytest in a subprocess (pytest-asyncio in its default strict mode)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

USER_TESTS = """
import socket

import pytest

import openhands_async as oh
from openhands_async.testing import FakeCloud, Fault

PORTS = []


@pytest.mark.asyncio
async def test_defaults(fake_cloud, openhands_client):
    assert isinstance(fake_cloud, FakeCloud)
    assert isinstance(openhands_client, oh.OpenHandsClient)
    assert openhands_client.base_url.rstrip("/") == fake_cloud.base_url.rstrip("/")
    task = await openhands_client.conversations.start("hello")
    assert fake_cloud.starts_received == 1
    assert (await openhands_client.start_tasks.get_many([task.id]))[0].id == task.id
    PORTS.append(fake_cloud.port)


@pytest.mark.asyncio
@pytest.mark.fake_cloud(auth="session", api_key="session-key", time_scale=0.1)
@pytest.mark.openhands_client(max_retries=0)
async def test_markers_set_the_options(fake_cloud, openhands_client):
    assert (fake_cloud.auth, fake_cloud.api_key, fake_cloud.time_scale) == (
        "session", "session-key", 0.1
    )
    await openhands_client.users.me()  # the session key, not the environment's bearer key
    fake_cloud.add_fault(Fault(route="users_me", status=503, times=1))
    with pytest.raises(oh.ServiceUnavailableError):
        await openhands_client.users.me()
    assert fake_cloud.requests["users_me"] == 2  # max_retries=0: not retried


@pytest.mark.fake_cloud(api_key="class-key")
class TestClassMarker:
    @pytest.mark.asyncio
    async def test_class_marker(self, fake_cloud, openhands_client):
        assert fake_cloud.api_key == "class-key"
        assert await openhands_client.conversations.count() == 0

    @pytest.mark.asyncio
    @pytest.mark.fake_cloud(api_key="method-key")
    async def test_closest_marker_wins(self, fake_cloud):
        assert fake_cloud.api_key == "method-key"


@pytest.mark.asyncio
async def test_factory(make_fake_cloud):
    first = await make_fake_cloud()
    second = await make_fake_cloud(api_key=None)
    assert first.port != second.port and second.api_key is None
    PORTS.extend([first.port, second.port])


def test_every_fake_was_stopped():
    assert len(PORTS) == 3
    for port in PORTS:
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()


@pytest.mark.asyncio
@pytest.mark.fake_cloud("positional")
async def test_positional_marker_arguments_are_refused(fake_cloud):
    pass
"""


# schemathesis' own plugin costs seconds of start-up on a busy machine and is not used here.
QUIET = ["-p", "no:cacheprovider", "-p", "no:schemathesis"]


def _run(project: Path, *args: str, pythonpath: str = "") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENHANDS_", "PYTEST_"))}
    # A real-looking key in the environment: the fixtures must never pick it up.
    env["OPENHANDS_API_KEY"] = "sk-from-the-environment"
    env["PYTHONPATH"] = pythonpath
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *QUIET, "-W", "error", *args],
        cwd=project,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )


def test_fixtures_work_in_a_project_with_no_conftest(tmp_path: Path) -> None:
    (tmp_path / "test_user.py").write_text(USER_TESTS)
    # pytest-asyncio warns (an error here) when its loop-scope option is unset.
    done = _run(tmp_path, "-o", "asyncio_default_fixture_loop_scope=function")
    out = done.stdout + done.stderr
    assert "6 passed, 1 error" in out, out
    assert "takes keyword arguments only" in out, out
    assert not list(tmp_path.glob("conftest.py"))


def test_without_pytest_asyncio_the_fixtures_say_what_is_missing(tmp_path: Path) -> None:
    project = tmp_path / "project"
    project.mkdir()
    (project / "test_user.py").write_text(
        "def test_needs_a_cloud(fake_cloud):\n    pass\n"
        "def test_needs_a_client(openhands_client):\n    pass\n"
    )
    # An environment without pytest-asyncio: a package of that name that fails to import
    # comes first on the path, and pytest-asyncio's own plugin is not loaded.
    blocked = tmp_path / "blocked" / "pytest_asyncio"
    blocked.mkdir(parents=True)
    (blocked / "__init__.py").write_text("raise ImportError('pytest-asyncio is not installed')\n")
    # -rN: no short summary (its lines are cut to the terminal's width, or not).
    done = _run(project, "-p", "no:asyncio", "-rN", pythonpath=str(blocked.parent))
    out = done.stdout + done.stderr
    assert "2 errors" in out, out
    assert out.count("need pytest-asyncio: pip install pytest-asyncio") == 2, out
