"""Every ```python block of the README runs as written, against FakeCloud with no API key.

A whole program (one that calls `asyncio.run`) runs as a script, the way the README says to
run the tour: `OPENHANDS_BASE_URL` pointing at a FakeCloud. A test file runs under pytest
(asyncio_mode=auto, as the README says) with the plugin's fixtures. Every other block is a snippet
that the README says runs in Python's asyncio REPL after `import openhands_async as oh` and
`client = oh.OpenHandsClient()`: it is run that way, compiled with top-level await as
`python -m asyncio` does. Each block gets its own fresh FakeCloud and working directory.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import pytest

from openhands_async.testing import FakeCloud

from .postgres.conftest import pg_cluster, pg_dsn  # noqa: F401 (fixtures for the DSN blocks)

README = Path(__file__).resolve().parents[1] / "README.md"
FENCE = re.compile(r"^```python\n(.*?)^```$", re.DOTALL | re.MULTILINE)
HEADING = re.compile(r"^#+ (.+)$", re.MULTILINE)

DSN = re.compile(r"postgresql://[^\"'\s]+")
PYTEST_FILE = re.compile(r"^(async )?def test_", re.MULTILINE)
PYTEST_OPTIONS = ["-o", "asyncio_mode=auto", "-o", "asyncio_default_fixture_loop_scope=function"]
PYTEST_OPTIONS += ["-p", "no:schemathesis"]  # seconds of start-up, and unused here

# What the README promises a snippet has: the asyncio REPL's `asyncio`, plus `oh` and `client`.
REPL = """
import ast
import asyncio
import sys

import openhands_async as oh


async def main() -> None:
    client = oh.OpenHandsClient()
    namespace = {"__name__": "__main__", "asyncio": asyncio, "oh": oh, "client": client}
    with open(sys.argv[1]) as f:
        code = compile(f.read(), sys.argv[1], "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    try:
        result = eval(code, namespace)  # a coroutine when the snippet awaits
        if result is not None:
            await result
    finally:
        await client.aclose()


asyncio.run(main())
"""


def _blocks() -> list[tuple[str, str]]:
    text = README.read_text(encoding="utf-8")
    found = []
    for n, match in enumerate(FENCE.finditer(text), 1):
        headings = HEADING.findall(text, 0, match.start())
        section = headings[-1] if headings else "top"
        slug = re.sub(r"[^a-z0-9]+", "-", section.lower()).strip("-")
        found.append((f"{n}-{slug}", match.group(1)))
    return found


BLOCKS = _blocks()


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    # The tour, streaming, fan-out, the poller and FakeCloud at least: a broken fence or a
    # renamed language tag must not turn this test into a no-op.
    assert len(BLOCKS) >= 5
    assert sum("asyncio.run(" in code for _, code in BLOCKS) >= 1


@pytest.mark.parametrize(("name", "code"), BLOCKS, ids=[name for name, _ in BLOCKS])
async def test_readme_block_runs(
    name: str, code: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    # A shared-batch block names a PostgreSQL DSN: it runs against the tests' own cluster
    # (a real server on loopback), its DSN put in place of the README's example one.
    for dsn in set(DSN.findall(code)):
        code = code.replace(dsn, request.getfixturevalue("pg_dsn"))
    # Blocks that read a jobs file find one, as a user's working directory would hold it.
    (tmp_path / "jobs.jsonl").write_text(
        '{"key": "readme", "message": "Fix the README typos"}\n{"message": "Add a test"}\n',
        encoding="utf-8",
    )
    block = tmp_path / f"block_{name}.py"
    block.write_text(code, encoding="utf-8")
    if "asyncio.run(" in code:
        command = [str(block)]
    elif PYTEST_FILE.search(code):  # a test file, run as the README says: pytest, auto mode
        block = block.rename(tmp_path / f"test_{name.replace('-', '_')}.py")
        command = ["-m", "pytest", "-q", "-p", "no:cacheprovider", *PYTEST_OPTIONS, str(block)]
    else:
        runner = tmp_path / "repl.py"
        runner.write_text(REPL, encoding="utf-8")
        command = [str(runner), str(block)]
    async with FakeCloud(api_key=None) as cloud:  # `python -m openhands_async.testing --no-auth`
        env = {k: v for k, v in os.environ.items() if not k.startswith("OPENHANDS_")}
        env["OPENHANDS_BASE_URL"] = cloud.base_url
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-W",
            "error",  # a README that teaches a deprecated call fails here
            *command,
            cwd=tmp_path,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            out, err = await asyncio.wait_for(process.communicate(), timeout=120)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
    assert process.returncode == 0, f"README block {name}:\n{code}\n{out.decode()}{err.decode()}"
    if "FakeCloud(" not in code and not PYTEST_FILE.search(code):  # those use their own fakes
        assert cloud.requests.total() > 0, f"README block {name} sent no request"
