"""Developer and CI sessions. `nox -s tests` is the README's test command (and CI's)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]


# Every Python the package supports (requires-python >= 3.10). `nox -s tests` runs the suite
# on each one installed here and skips (with a note) the ones that are not; on CI (the `CI`
# variable set) a missing one is an error.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]
# The whole suite runs on the oldest and the newest: that is where version problems show.
# In between, the slowest files are left out (about three quarters of the suite's time):
# generated spec and hostile-body runs, and tests that start pytest, the CLI or the README's
# programs in subprocesses. They test FakeCloud, the docs and the CLI more than the
# interpreter, and leaving them out keeps `nox -s tests` (CI's first step) near ten minutes.
ENDS_ONLY = [
    "tests/test_hostile.py",
    "tests/test_spec_conformance.py",
    "tests/test_faults.py",
    "tests/test_readme.py",
    "tests/test_cli.py",
    "tests/test_pytest_plugin.py",
    "tests/test_examples.py",
]


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Install the package with its test extra and run the suite (warnings are errors);
    arguments after `--` go to pytest (and then the whole suite is selected by them)."""
    session.install("-e", ".[test]")
    args = list(session.posargs)
    if not args and session.python not in (PYTHONS[0], PYTHONS[-1]):
        args = [f"--ignore={path}" for path in ENDS_ONLY]
    session.run("python", "-m", "pytest", "-q", *args)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test]", "mypy")
    session.run("mypy")


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
