"""Every example runs to the end against FakeCloud (no API key in the environment)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SCRIPTS = sorted(p for p in EXAMPLES.glob("*.py") if not p.name.startswith(("_", "test_")))


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENHANDS_")}
    env["PYTHONPATH"] = os.pathsep.join([str(EXAMPLES), env.get("PYTHONPATH", "")])
    return env


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_example_runs_against_fakecloud(script: Path) -> None:
    done = subprocess.run(
        [sys.executable, str(script)], env=_env(), capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "FakeCloud" in done.stdout


def test_fakecloud_example_tests_pass() -> None:
    # schemathesis' plugin: seconds of start-up, and unused by the example.
    plugins = ["-p", "no:cacheprovider", "-p", "no:schemathesis"]
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", *plugins, str(EXAMPLES)],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "3 passed" in done.stdout


def test_follow_up_with_an_id_but_no_key_explains_instead_of_crashing() -> None:
    cid = "0" * 31 + "1"
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "follow_up.py"), cid, "Now add tests"],
        env=_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    assert "OPENHANDS_API_KEY" in done.stderr
    assert cid in done.stderr
    assert "without an id" in done.stderr
