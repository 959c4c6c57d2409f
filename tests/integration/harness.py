"""Run `tests/integration` against real open-source OpenHands app servers, then stop them.

`nox -s integration` runs this file with the session's Python. It:

1. makes sure the server (PyPI `openhands-ai` 1.11.0, Python 3.12) is installed in a cached
   virtualenv outside the clone, `${OPENHANDS_ASYNC_CACHE:-~/.cache/openhands-async}/ohserver/venv`,
   with `../shared/realserver/run_server.sh install` (only the first run pays for it);
2. starts two servers with `run_server.sh start`, each with a fresh temporary `OH_HOME`
   whose `venv` is a symlink to the cached one: a plain one on 127.0.0.1:3000 (fake LLM on
   18555) and one on 3001 (fake LLM on 18556) started with `SESSION_API_KEY`. A server that
   does not come up is stopped and started once more; the tail of its log is printed;
3. runs pytest on `tests/integration` with the servers' addresses in `OH_REAL_BASE_URL`,
   `OH_REAL_KEYED_BASE_URL` and `OH_REAL_SESSION_KEY` (and, for the test that kills the
   plain server and starts it again, its `OH_REAL_HOME`, `OH_REAL_RUN_SERVER`,
   `OH_REAL_LLM_PORT`);
4. always stops everything it started (`run_server.sh stop`, then the PIDs in
   `$OH_HOME/*.pid` and the process group of each start), and fails if a port it used is
   still listening afterwards.

Arguments are passed on to pytest (`nox -s integration -- -k errors -x`).
Environment knobs: `OH_REAL_PORT` / `OH_REAL_KEYED_PORT` (3000 / 3001),
`OH_REAL_LLM_PORT` / `OH_REAL_KEYED_LLM_PORT` (18555 / 18556), `PY312`,
`OPENHANDS_ASYNC_SHARED` (default: `../shared` next to the repository),
`OH_REAL_KEEP_HOME=1` keeps the servers' state directories.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SHARED = Path(os.environ.get("OPENHANDS_ASYNC_SHARED") or REPO.parent / "shared")
RUN_SERVER = SHARED / "realserver" / "run_server.sh"
CACHE = Path(os.environ.get("OPENHANDS_ASYNC_CACHE") or Path.home() / ".cache" / "openhands-async")
SERVER_HOME = CACHE / "ohserver"
CACHED_VENV = SERVER_HOME / "venv"
SERVER_VERSION = "1.11.0"

START_BOUND = 150.0  # seconds for run_server.sh start (it polls /alive for up to 120 s itself)
ALIVE_BOUND = 15.0  # seconds for our own /alive check once the script returned
STOP_BOUND = 90.0
PYTEST_BOUND = 900.0  # the whole test run; every wait inside it has its own, smaller bound
AGENT_PORTS = range(8100, 8200)
_SQL_ECHO = re.compile(
    r"\s(base|migration)\.py:\d+\s*$"
)  # the process sandbox's agent servers (OH_SANDBOX_BASE_PORT=8100)


def log(message: str) -> None:
    print(f"[integration] {message}", flush=True)


# --------------------------------------------------------------------------- install


def find_python312() -> str:
    candidates = [os.environ.get("PY312") or "", shutil.which("python3.12") or ""]
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(glob.glob(f"{pyenv_root}/versions/3.12*/bin/python3.12"), reverse=True)
    candidates += [*sorted(glob.glob("/usr/local/bin/python3.12")), "/usr/bin/python3.12"]
    for path in candidates:
        # A pyenv shim is executable but fails unless 3.12 is the selected version: run it.
        if path and os.access(path, os.X_OK) and _runs(path):
            return path
    raise SystemExit(
        "Python 3.12 not found (openhands-ai 1.x needs it): "
        "install it or set PY312=/path/to/python3.12"
    )


def _runs(python: str) -> bool:
    try:
        done = subprocess.run([python, "-V"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def installed_version() -> str | None:
    if not (CACHED_VENV / "bin" / "uvicorn").exists():
        return None
    out = subprocess.run(
        [str(CACHED_VENV / "bin" / "python"), "-m", "pip", "show", "openhands-ai"],
        capture_output=True,
        text=True,
        check=False,
    )
    for line in out.stdout.splitlines():
        if line.startswith("Version:"):
            return line.split(":", 1)[1].strip()
    return None


def ensure_server_installed() -> None:
    SERVER_HOME.mkdir(parents=True, exist_ok=True)
    # One installer at a time (two checkouts on one machine share the cache).
    with open(SERVER_HOME / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        version = installed_version()
        if version == SERVER_VERSION:
            log(f"reusing the cached server venv {CACHED_VENV} (openhands-ai {version})")
            return
        log(
            f"installing openhands-ai {SERVER_VERSION} into {CACHED_VENV} "
            f"(found {version or 'nothing'}); this takes minutes, once"
        )
        shutil.rmtree(CACHED_VENV, ignore_errors=True)
        env = {**os.environ, "OH_HOME": str(SERVER_HOME), "PY312": find_python312()}
        started = time.monotonic()
        subprocess.run(["bash", str(RUN_SERVER), "install"], env=env, check=True)
        version = installed_version()
        if version != SERVER_VERSION:
            raise SystemExit(f"install finished but openhands-ai is {version!r}")
        log(f"installed in {time.monotonic() - started:.0f}s")


# --------------------------------------------------------------------------- servers


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def alive(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/alive", timeout=2) as resp:
            return resp.status == 200
    except OSError:
        return False


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Server:
    """One `run_server.sh` server with its own fresh state directory."""

    def __init__(self, name: str, port: int, llm_port: int, session_key: str | None) -> None:
        self.name = name
        self.port = port
        self.llm_port = llm_port
        self.session_key = session_key
        self.home: Path | None = None
        self.homes: list[Path] = []
        self.proc: subprocess.Popen[str] | None = None
        self.pgids: list[int] = []

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        assert self.home is not None
        env = {k: v for k, v in os.environ.items() if not k.startswith(("OH_", "OPENHANDS_"))}
        env.pop("SESSION_API_KEY", None)
        env.update(OH_HOME=str(self.home), PORT=str(self.port), FAKE_LLM_PORT=str(self.llm_port))
        if self.session_key:
            env["SESSION_API_KEY"] = self.session_key
        return env

    def begin_start(self) -> None:
        for port in (self.port, self.llm_port):
            if port_in_use(port):
                raise SystemExit(
                    f"port {port} is already in use: stop whatever listens there "
                    f"(`ss -ltnp | grep {port}`) or set OH_REAL_*PORT"
                )
        self.home = Path(tempfile.mkdtemp(prefix=f"openhands-async-{self.name}-"))
        self.homes.append(self.home)
        (self.home / "venv").symlink_to(CACHED_VENV, target_is_directory=True)
        self.proc = subprocess.Popen(
            ["bash", str(RUN_SERVER), "start"],
            env=self.env(),
            cwd=self.home,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,  # its own process group: a backstop for the cleanup
        )
        self.pgids.append(self.proc.pid)
        log(f"{self.name}: starting on {self.base_url} (OH_HOME={self.home})")

    def finish_start(self, started: float) -> bool:
        """Wait (bounded) for the start script; True when the server is up and configured."""
        assert self.proc is not None
        assert self.home is not None
        deadline = started + START_BOUND
        gave_up = False
        while self.proc.poll() is None:
            server_pid = self._pid("server")
            if server_pid is not None and not pid_alive(server_pid):
                log(f"{self.name}: the app server (pid {server_pid}) died during start-up")
                gave_up = True
            elif time.monotonic() > deadline:
                log(f"{self.name}: start did not finish within {START_BOUND:.0f}s")
                gave_up = True
            if gave_up:
                self._kill_group(self.proc.pid)
                break
            time.sleep(0.5)
        try:
            output, _ = self.proc.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            output, _ = self.proc.communicate()
        output = output.strip()
        if output:
            log(f"{self.name}: " + output.replace("\n", " | "))
        deadline = time.monotonic() + (0 if gave_up else ALIVE_BOUND)
        while not alive(self.port) and time.monotonic() < deadline:
            time.sleep(0.5)
        if not alive(self.port):
            log(f"{self.name}: /alive does not answer on {self.base_url}")
            return False
        if "Settings stored" not in output:
            log(f"{self.name}: the fake LLM settings were not stored")
            return False
        log(f"{self.name}: up after {time.monotonic() - started:.1f}s")
        return True

    def _pid(self, name: str) -> int | None:
        assert self.home is not None
        try:
            return int((self.home / f"{name}.pid").read_text().strip())
        except (OSError, ValueError):
            return None

    def _kill_group(self, pgid: int, sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pgid, sig)

    def log_tail(self, lines: int = 60) -> str:
        if self.home is None:
            return ""
        path = self.home / "server.log"
        try:
            text = path.read_text(errors="replace").splitlines()
        except OSError:
            return f"(no {path})"
        # Leave out SQLAlchemy's echo (most of the log) and its wrapped continuation lines.
        # and the access-log lines of health checks, which would crowd out the errors.
        kept = [
            t
            for t in text
            if not _SQL_ECHO.search(t) and not t.startswith(" " * 29) and '"GET /alive' not in t
        ]
        return "\n".join(kept[-lines:])

    def print_log_tail(self, lines: int = 60) -> None:
        log(f"{self.name}: last {lines} lines of {self.home}/server.log:")
        print(self.log_tail(lines), flush=True)

    def agent_server_pids(self) -> list[int]:
        """Live agent servers of this server (cwd under $OH_HOME/sandboxes, as run_server.sh)."""
        assert self.home is not None
        sandboxes = str(self.home / "sandboxes") + "/"
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                cmdline = (entry / "cmdline").read_bytes()
                cwd = os.readlink(entry / "cwd")
            except OSError:  # gone, or a zombie (no cwd): nothing to stop
                continue
            if b"oh_loopback_agent_server" in cmdline and (cwd + "/").startswith(sandboxes):
                pids.append(int(entry.name))
        return pids

    def kill_agent_servers(self) -> None:
        """SIGKILL the agent servers. Once the app server is gone, a SIGTERM only sets them
        retrying their webhooks to it until run_server.sh's SIGKILL (~20 s); nothing of
        theirs outlives the run (their state is under $OH_HOME, a temporary directory)."""
        for pid in self.agent_server_pids():
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)

    def stop(self) -> None:
        """Stop everything this server's starts left running; safe to call more than once."""
        if self.home is None:
            return
        if self.proc is not None and self.proc.poll() is None:
            self._kill_group(self.proc.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=5)
        self.kill_agent_servers()
        try:
            done = subprocess.run(
                ["bash", str(RUN_SERVER), "stop"],
                env=self.env(),
                cwd=self.home,
                capture_output=True,
                text=True,
                timeout=STOP_BOUND,
                check=False,
            )
            log(f"{self.name}: stop: " + (done.stdout.strip().replace("\n", " | ") or "done"))
        except subprocess.TimeoutExpired:
            log(f"{self.name}: run_server.sh stop did not finish in {STOP_BOUND:.0f}s")
        for pidfile in self.home.glob("*.pid"):
            with contextlib.suppress(OSError, ValueError):
                pid = int(pidfile.read_text().strip())
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
                pidfile.unlink()
        # run_server.sh's background children (uvicorn, fake LLM) stay in the group of the
        # start script; agent servers are their children. Anything still there goes now.
        for pgid in self.pgids:
            self._kill_group(pgid, signal.SIGKILL)
        self.proc = None

    def move_on(self) -> None:
        """Forget the current state directory (after a failed start) so a retry gets a new one."""
        self.stop()
        self.home = None


def start_all(servers: list[Server]) -> None:
    """Start the servers side by side; one retry for any that did not come up."""
    for attempt in (1, 2):
        pending = [s for s in servers if s.home is None]
        started = time.monotonic()
        for server in pending:
            server.begin_start()
        failed = [s for s in pending if not s.finish_start(started)]
        if not failed:
            return
        for server in failed:
            server.print_log_tail()
            if attempt == 1:
                log(f"{server.name}: retrying the start once")
                server.move_on()
    raise SystemExit("a real server did not start twice in a row (log tails above)")


def listening_ports(ports: set[int]) -> list[str]:
    """`ss -ltnp` lines for the given local ports on 127.0.0.1 (or all addresses)."""
    try:
        out = subprocess.run(["ss", "-ltnp"], capture_output=True, text=True, check=False).stdout
    except FileNotFoundError:
        return [f"port {p} (connect)" for p in sorted(ports) if port_in_use(p)]
    found = []
    for line in out.splitlines()[1:]:
        fields = line.split()
        if len(fields) < 4:
            continue
        port_text = fields[3].rsplit(":", 1)[-1]
        if port_text.isdigit() and int(port_text) in ports:
            found.append(line)
    return found


def check_nothing_left(servers: list[Server]) -> bool:
    ports = {p for s in servers for p in (s.port, s.llm_port)} | set(AGENT_PORTS)
    deadline = time.monotonic() + 10
    left = listening_ports(ports)
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = listening_ports(ports)
    if left:
        log("still listening after the stop:\n" + "\n".join(left))
        return False
    log("nothing left listening on the servers' ports")
    return True


# --------------------------------------------------------------------------- main


def run_pytest(servers: list[Server], args: list[str]) -> int:
    plain, keyed = servers
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENHANDS_")}
    assert plain.home is not None
    env.update(
        OH_REAL_BASE_URL=plain.base_url,
        OH_REAL_KEYED_BASE_URL=keyed.base_url,
        OH_REAL_SESSION_KEY=keyed.session_key or "",
        # For the test that SIGKILLs the plain server and starts it again (same state).
        OH_REAL_HOME=str(plain.home),
        OH_REAL_RUN_SERVER=str(RUN_SERVER),
        OH_REAL_LLM_PORT=str(plain.llm_port),
    )
    cmd = [
        sys.executable,
        "-m",
        "pytest",
        str(REPO / "tests" / "integration"),
        # Only this directory's conftest: the unit suite's fixtures are not needed here.
        "--confcutdir",
        str(REPO / "tests" / "integration"),
        "-p",
        "no:cacheprovider",
        "-v",
        "--durations=8",
        *args,
    ]
    log("running " + " ".join(cmd[1:]))
    try:
        return subprocess.run(cmd, env=env, cwd=REPO, check=False, timeout=PYTEST_BOUND).returncode
    except subprocess.TimeoutExpired:
        log(f"pytest did not finish within {PYTEST_BOUND:.0f}s: killed")
        return 1


def run_once(servers: list[Server], argv: list[str]) -> tuple[int, bool]:
    """Start the servers, run pytest, always stop them; (pytest status, nothing left over)."""
    began = time.monotonic()
    status = 1
    clean = False
    try:
        start_all(servers)
        log(f"servers up after {time.monotonic() - began:.1f}s")
        status = run_pytest(servers, argv)
        if status != 0:
            for server in servers:
                server.print_log_tail(40)
    finally:
        stop_began = time.monotonic()
        stoppers = [threading.Thread(target=server.stop) for server in servers]
        for thread in stoppers:
            thread.start()
        for thread in stoppers:
            thread.join()
        clean = check_nothing_left(servers)
        log(f"stopped in {time.monotonic() - stop_began:.1f}s")
        keep = os.environ.get("OH_REAL_KEEP_HOME") == "1" or status != 0
        for server in servers:
            for home in server.homes:
                if keep:
                    log(f"{server.name}: state kept in {home}")
                else:
                    shutil.rmtree(home, ignore_errors=True)
    return status, clean


def main(argv: list[str]) -> int:
    if not RUN_SERVER.exists():
        raise SystemExit(f"{RUN_SERVER} not found: set OPENHANDS_ASYNC_SHARED to the shared/ dir")

    def on_term(signum: int, frame: object) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, on_term)
    began = time.monotonic()
    ensure_server_installed()
    servers = [
        Server(
            "plain",
            int(os.environ.get("OH_REAL_PORT", 3000)),
            int(os.environ.get("OH_REAL_LLM_PORT", 18555)),
            None,
        ),
        Server(
            "keyed",
            int(os.environ.get("OH_REAL_KEYED_PORT", 3001)),
            int(os.environ.get("OH_REAL_KEYED_LLM_PORT", 18556)),
            "itest-" + secrets.token_hex(8),
        ),
    ]
    status = 1
    clean = True
    # The open-source process sandbox sometimes fails an agent server's start-up on a loaded
    # 2-core machine ("500: Agent Server Failed to start properly"): one more run with fresh
    # servers and fresh state tells that apart from a real failure, which fails twice.
    for attempt in (1, 2):
        status, clean = run_once(servers, argv)
        if status == 0 or attempt == 2:
            break
        log("attempt 1 failed; running the whole suite once more with fresh servers")
        for server in servers:
            server.home = None  # already stopped by run_once: the next start gets a new home
    log(f"integration run took {time.monotonic() - began:.1f}s")
    if not clean:
        return status or 1
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
