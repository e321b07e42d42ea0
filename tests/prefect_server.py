"""A real ``prefect server start`` on loopback for end-to-end tests, and the child processes around it.

The tests' own Prefect settings are left alone: every child gets an
environment with the inherited ``PREFECT_*`` variables removed and a home
of its own, and the API is read with plain ``httpx``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import REPO

PREFECT = Path(sys.executable).parent / "prefect"
SERVER_START_TIMEOUT_S = 90.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def child_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any Prefect setting, plus a home of its own and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(extra, PREFECT_HOME=str(home), PYTHONPATH=str(REPO))
    return env


def tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
    """SIGTERM the process, SIGKILL it after ``grace_s``, then kill what is left of its group.

    Each child is started in a session of its own, so its group holds only
    what it spawned (the served runner's flow-run processes, for one).
    """
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


@contextlib.contextmanager
def process(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process whose output goes straight to ``log`` (no pipe to fill); always stopped."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    try:
        yield proc
    finally:
        stop(proc)


class Server:
    def __init__(self, url: str, log: Path, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.log, self.proc = url, log, proc

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)


def wait_healthy(proc: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
    """True once ``/health`` answers; False if the process exits first (a port taken, say)."""
    with httpx.Client(timeout=2.0, trust_env=False) as http:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            with contextlib.suppress(httpx.HTTPError):
                if http.get(f"{url}/health").status_code == 200:
                    return True
            time.sleep(0.5)
    raise AssertionError(f"the Prefect server at {url} did not answer /health in {SERVER_START_TIMEOUT_S:.0f} s")


@contextlib.contextmanager
def running_server(tmp_path: Path, server_env: dict[str, str]) -> Iterator[Server]:
    """``prefect server start`` on a free loopback port with a throwaway home (SQLite inside); always stopped."""
    home = tmp_path / "server-home"
    home.mkdir()
    env = child_env(home, server_env)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    for attempt in range(3):  # another process may take the free port before the server binds it
        port = free_port()
        url = f"http://127.0.0.1:{port}/api"
        log = tmp_path / f"server-{attempt}.log"
        args = [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
        with process(args, env, tmp_path, log) as proc:
            try:
                healthy = wait_healthy(proc, url, deadline)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- server log ---\n{tail(log)}") from None
            if healthy:
                yield Server(url, log, proc)
                return
        if time.monotonic() >= deadline:
            break
    pytest.fail(f"the Prefect server exited before answering /health\n--- server log ---\n{tail(log)}")
