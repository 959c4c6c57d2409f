"""Developer and CI sessions. `nox -s tests` is the README's test command."""

from __future__ import annotations

import nox

nox.options.default_venv_backend = "venv"
nox.options.reuse_existing_virtualenvs = True
nox.options.sessions = ["tests", "lint", "typecheck"]


@nox.session
def tests(session: nox.Session) -> None:
    """Install the package with its test extra and run the suite (warnings are errors)."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", *session.posargs)


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
