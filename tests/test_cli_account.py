"""The CLI's account commands against FakeCloud: `secrets list|set|delete`, `models`, and
`batch --check` (unknown llm_model / repository stop the batch; an unanswerable check warns)."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from openhands_async.testing import FakeCloud

from .test_cli import _env, auth, lines


async def _run(
    *argv: str, stdin: str = "", env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "openhands_async",
        *argv,
        env={**_env(), **(env or {})},
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_secrets_set_list_delete(cloud: FakeCloud) -> None:
    code, out, err = await _run("secrets", "set", "API_TOKEN", *auth(cloud), stdin="tok-123\n")
    assert code == 0, err
    assert "tok-123" not in out + err
    assert cloud.account.secrets["API_TOKEN"].value == "tok-123"
    code, out, _ = await _run(
        "secrets", "set", "OTHER", "--from-env", "MY_VAL", *auth(cloud), env={"MY_VAL": "v2"}
    )
    assert code == 0
    code, out, _ = await _run("secrets", "list", *auth(cloud))
    assert [row["name"] for row in lines(out)] == ["API_TOKEN", "OTHER"]
    assert "tok-123" not in out
    code, _, _ = await _run("secrets", "delete", "OTHER", *auth(cloud))
    assert code == 0
    assert list(cloud.account.secrets) == ["API_TOKEN"]
    code, _, err = await _run("secrets", "delete", "OTHER", *auth(cloud))
    assert code == 1
    assert "NotFoundError" in err


async def test_models(cloud: FakeCloud) -> None:
    code, out, _ = await _run("models", "gpt", "--provider", "openai", *auth(cloud))
    assert code == 0
    assert [row["name"] for row in lines(out)] == ["openai/gpt-5.5", "openai/gpt-4o-mini"]


async def test_batch_check(cloud: FakeCloud, tmp_path: Path) -> None:
    jobs = tmp_path / "jobs.jsonl"
    bad = [{"message": "a", "llm_model": "openai/nope"}, {"message": "b", "repository": "o/r"}]
    jobs.write_text("\n".join(json.dumps(j) for j in bad) + "\n")
    code, out, err = await _run("batch", str(jobs), "--check", *auth(cloud))
    assert code == 1, err
    assert "unknown llm_model 'openai/nope'" in out
    # no git provider connected: repositories are not checked, only warned about
    assert "repositories not checked" in err
    assert cloud.starts_received == 0
    cloud.account.provider_tokens["github"] = {"token": "t", "host": None, "user_id": None}
    good = [{"message": "a", "llm_model": "openai/gpt-5.5", "repository": "octo-org/service"}]
    jobs.write_text(json.dumps(good[0]) + "\n")
    code, _, err = await _run("batch", str(jobs), "--check", "--interval", "0.05", *auth(cloud))
    assert code == 0, err
    assert "warning" not in err
    missing = [{"message": "a", "repository": "octo-org/missing"}]
    jobs.write_text(json.dumps(missing[0]) + "\n")
    code, out, err = await _run("batch", str(jobs), "--check", *auth(cloud))
    assert code == 1
    assert "repository 'octo-org/missing' not found" in out
    assert cloud.starts_received == 0  # --check never starts anything
