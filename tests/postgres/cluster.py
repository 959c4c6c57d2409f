"""A throw-away PostgreSQL cluster on a loopback port, for tests and benchmarks.

The server binaries come from the system (Debian's `postgresql` package puts them in
/usr/lib/postgresql/<version>/bin, off PATH); `.ci/run` installs them when missing.
PostgreSQL refuses to run as root, and CI runs as root: then the cluster belongs to an
unprivileged user (`nobody`) and initdb / pg_ctl run as that user through `runuser`.
Settings trade durability for speed (fsync off): the data is thrown away at the end.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

_TOOLS = ("initdb", "pg_ctl", "postgres")
#: Set to a directory holding initdb / pg_ctl / postgres to use those binaries.
BINDIR_ENV = "OPENHANDS_TEST_PG_BINDIR"
#: Set (to anything but "" or "0") to make a missing server a failure rather than a skip;
#: `.ci/run` sets it, so CI never silently skips the PostgreSQL tests.
REQUIRE_ENV = "OPENHANDS_REQUIRE_POSTGRES"


def postgres_required() -> bool:
    return os.environ.get(REQUIRE_ENV, "") not in ("", "0")


def find_bindir() -> Path | None:
    """The directory of the newest PostgreSQL server binaries found, or None."""
    candidates: list[str] = []
    if os.environ.get(BINDIR_ENV):
        candidates.append(os.environ[BINDIR_ENV])

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(p) for p in name.split(".") if p.isdigit())

    candidates += sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True)
    candidates += glob.glob("/usr/pgsql-*/bin")  # RPM layout
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["pg_config", "--bindir"], capture_output=True, text=True, check=True, timeout=10
        )
        candidates.append(out.stdout.strip())
    if shutil.which("initdb"):
        candidates.append(str(Path(shutil.which("initdb") or "").resolve().parent))
    for candidate in candidates:
        path = Path(candidate)
        if all(os.access(path / tool, os.X_OK) for tool in _TOOLS):
            return path
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Cluster:
    """`with Cluster(bindir) as cluster:` an initialised, running server; `cluster.dsn("db")`.

    Trust authentication on 127.0.0.1 only (no password), superuser `postgres`.
    """

    def __init__(self, bindir: Path, *, run_as: str = "nobody") -> None:
        self.bindir = bindir
        self.port = 0
        self._user: pwd.struct_passwd | None = pwd.getpwnam(run_as) if os.geteuid() == 0 else None
        self.root = Path(tempfile.mkdtemp(prefix="openhands-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        if self._user is not None:
            os.chown(self.root, self._user.pw_uid, self._user.pw_gid)

    def _run(self, *args: str) -> None:
        command = [str(self.bindir / args[0]), *args[1:]]
        if self._user is not None:
            command = ["runuser", "-u", self._user.pw_name, "--", *command]
        result = subprocess.run(
            command, cwd=self.root, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            log = self.log.read_text(errors="replace") if self.log.exists() else ""
            raise RuntimeError(
                f"{' '.join(command)} failed ({result.returncode}):\n"
                f"{result.stdout}\n{result.stderr}\n{log[-2000:]}"
            )

    def start(self) -> Cluster:
        self._run(
            "initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust",
            "-E", "UTF8", "--locale=C", "--no-sync",
        )  # fmt: skip
        for attempt in range(3):  # the free port can be taken between picking and binding
            self.port = _free_port()
            options = (
                f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.root} "
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=300"
            )
            try:
                self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log),
                          "-o", options, "-w", "-t", "60", "start")  # fmt: skip
                return self
            except RuntimeError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def stop(self) -> None:
        with contextlib.suppress(RuntimeError, subprocess.SubprocessError):
            if (self.data / "postmaster.pid").exists():
                self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"

    def __enter__(self) -> Cluster:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc: object) -> None:
        self.stop()
