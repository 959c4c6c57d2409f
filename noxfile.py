"""Developer and CI sessions. `nox -s tests` is the README's test command (and CI's)."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import nox

# uv where it is installed (the README's command installs it): it builds a session's venv in
# seconds where venv + pip take ~40 s, nine times in a CI run. Plain venv otherwise.
nox.options.default_venv_backend = "uv|venv"
# Never fetch a Python from the internet (uv would, from GitHub): only the registries are
# reachable, and a missing version is skipped (an error on CI), as with venv.
nox.options.download_python = "never"
os.environ.setdefault("UV_PYTHON_DOWNLOADS", "never")
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]


# Every Python the package supports (requires-python >= 3.10). `nox -s tests` runs the suite
# on each one installed here and skips (with a note) the ones that are not; on CI (the `CI`
# variable set) a missing one is an error.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# The whole suite runs on the oldest and the newest: that is where version problems show.
# In between, a core selection runs: the pure rules, the models and converter, the client,
# the stream parser, the poller and the journal (what touches the language and asyncio
# most), so CI (the README's command, every version) stays well inside its time budget.
MIDDLE = [
    "tests/test_models.py",
    "tests/test_to_dict.py",
    "tests/test_sansio.py",
    "tests/test_sansio_rules.py",
    "tests/test_inputs.py",
    "tests/test_retry_policy.py",
    "tests/test_safe_start.py",
    "tests/test_batch_reads.py",
    "tests/test_client.py",
    "tests/test_security.py",
    "tests/test_stream_prefix.py",
    "tests/test_stream_parser_rules.py",
    "tests/test_stream_fast_paths.py",
    "tests/test_poller_schedule.py",
    "tests/test_poller_read_path.py",
    "tests/test_journal_rules.py",
    "tests/test_follow.py",
]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Install the package with its test extras and run the suite (warnings are errors);
    arguments after `--` go to pytest (and then the whole suite is selected by them)."""
    session.install("-e", ".[test,postgres]")
    args = list(session.posargs)
    if not args and session.python not in (PYTHONS[0], PYTHONS[-1]):
        args = MIDDLE
    # Tests wait on loopback servers more than they compute: two workers (at most four on a
    # big machine, where timing-sensitive tests would otherwise crowd each other).
    session.run("python", "-m", "pytest", "-q", "-n", "auto", "--maxprocesses", "4", *args)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff, then import-linter: the layer contracts in pyproject.toml (no import cycles,
    aiohttp only at the HTTP edge, the fake server apart from the SDK)."""
    # import-linter reads the installed package's import graph.
    session.install("-e", ".", "ruff", "import-linter")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")
    session.run("lint-imports")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test,postgres]", "mypy")
    session.run("mypy")


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (mkdocs.yml) into site/, in strict mode: a broken
    cross-reference, a page missing from nav or a bad docstring fails the build."""
    # ruff formats the signatures mkdocstrings renders (separate_signature).
    session.install("-e", ".[docs]", "ruff")
    # Never -q: it hides the warnings, and then strict mode has nothing to fail on.
    session.run(
        "mkdocs", "build", "--strict", "--site-dir", "site", env={"NO_MKDOCS_2_WARNING": "1"}
    )


@nox.session
def integration(session: nox.Session) -> None:
    """Run tests/integration against real open-source OpenHands servers on loopback.

    The server (openhands-ai 1.11.0, Python 3.12) is installed once into a cached venv
    outside the clone; tests/integration/harness.py starts it fresh for each run (needs
    ../shared/realserver next to the repository), runs pytest, and always stops it.
    Not in the default sessions: it needs the servers and takes a few minutes.
    """
    session.install("-e", ".[test]")
    session.run(
        "python",
        "tests/integration/harness.py",
        *session.posargs,
        # On Ctrl-C give the harness time to stop the servers before nox escalates.
        interrupt_timeout=120.0,
        terminate_timeout=30.0,
    )


@nox.session
def build(session: nox.Session) -> None:
    """Build the sdist and the wheel (into dist/, emptied first), check them with twine, and
    check the wheel ships the type marker and the license but no tests."""
    session.install("build", "twine")
    dist = Path("dist")
    for old in dist.glob("*"):
        old.unlink()
    session.run("python", "-m", "build", "--outdir", str(dist))
    session.run("twine", "check", "--strict", *(str(p) for p in sorted(dist.iterdir())))
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    problems = []
    if "openhands_async/py.typed" not in names:
        problems.append("no openhands_async/py.typed")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        problems.append("no LICENSE in the dist-info")
    not_shipped = ("tests/", "examples/", "benchmarks/")
    problems += [f"ships {n}" for n in names if n.startswith(not_shipped)]
    if problems:
        session.error(f"{wheel.name}: " + "; ".join(problems))
    session.log(f"{wheel.name}: {len(names)} files, py.typed and LICENSE present, no tests")


# One version: mutmut 3's mutant names, config keys and results layout changed across 3.x.
MUTMUT = "mutmut==3.8.1"


@nox.session
def mutation(session: nox.Session) -> None:
    """Mutation testing of the pure core (mutmut 3, configured in pyproject.toml).

    `nox -s mutation` runs every module in [tool.mutmut] only_mutate; one module at a time:
    `nox -s mutation -- "openhands_async._sansio.*"` (mutmut's mutant-name globs). Then a
    killed/total line per module. `mutmut results` / `mutmut show NAME` (in the nox venv)
    list and show the survivors. Slow and CPU-heavy: not in the default sessions or CI.
    """
    session.install("-e", ".[test]", MUTMUT)
    # Two workers: the machines have two cores; mutmut forks one process per mutant.
    session.run("mutmut", "run", "--max-children", "2", *session.posargs)
    _mutation_scores(session, session.posargs)


def _mutation_scores(session: nox.Session, globs: list[str]) -> None:
    """killed/total per module from mutmut's results (mutants/**/*.meta)."""
    import fnmatch
    import json
    from pathlib import Path

    # mutmut's exit codes: 1 and 3 killed, 36/24/-24/152/255 timeout (counted as killed:
    # the mutant made the tests hang), 0 survived, 5/33 no test reached it, None not run.
    killed = {1, 3, 36, 24, -24, 152, 255, 37}
    for meta in sorted(Path("mutants").rglob("*.py.meta")):
        codes = json.loads(meta.read_text())["exit_code_by_key"]
        if globs:
            codes = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, g) for g in globs)}
        run = {k: v for k, v in codes.items() if v is not None}
        if not run:
            continue
        dead = sum(1 for v in run.values() if v in killed)
        survived = sorted(k for k, v in run.items() if v not in killed)
        module = str(meta.relative_to("mutants"))[: -len(".meta")]
        session.log(f"{module}: {dead}/{len(run)} killed ({100 * dead / len(run):.1f}%)")
        for name in survived:
            session.log(f"  survived (or no test): {name}")
