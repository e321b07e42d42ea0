"""A schedule fires on its own: a real Prefect server, ``python -m flows.serve``, nothing triggered by hand.

Flow tests call flows against the ephemeral API, where schedules never fire
(DESIGN.md §4). This test runs the production path instead: ``prefect server
start`` (API and scheduler) in one process, ``python -m flows.serve --only
ingest --interval 5`` in another, from a working folder holding
``incoming/metrics.csv``. It then waits, only reading the REST API, until the
scheduler has created an ``ingest`` run and the served runner has completed
it, and checks the raw store under ``data/`` holds the CSV's points.

The test process's own Prefect settings are left alone: the API is read with
plain ``httpx``, and both child processes get an environment with every
inherited ``PREFECT_*`` variable removed and their own temporary homes.
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
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from anomaly.store import RawStore

REPO = Path(__file__).resolve().parent.parent
PREFECT = Path(sys.executable).parent / "prefect"

SERVER_START_TIMEOUT_S = 90.0
RUN_TIMEOUT_S = 120.0
INTERVAL_S = 5

#: Server settings. The main scheduler loop runs every 60 s by default; a
#: second loop (every 5 s) schedules deployments updated in the last ~6 s,
#: which a loaded machine can miss. A 2 s main loop picks the new deployment
#: up quickly either way. No UI, no analytics, no network.
SERVER_ENV = {
    "PREFECT_SERVER_SERVICES_SCHEDULER_LOOP_SECONDS": "2",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_UI_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}
#: The served runner polls for due runs every 10 s by default; 1 s keeps the test short.
SERVE_ENV = {
    "PREFECT_RUNNER_POLL_FREQUENCY": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}

TERMINAL_FAILURES = {"FAILED", "CRASHED", "CANCELLED"}


# -- helpers -------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _child_env(home: Path, extra: dict[str, str]) -> dict[str, str]:
    """This process's environment without any Prefect setting, plus a home of its own and ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(extra, PREFECT_HOME=str(home), PYTHONPATH=str(REPO))
    return env


def _tail(path: Path, lines: int = 60) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"<cannot read {path}: {exc}>"
    return "\n".join(text.splitlines()[-lines:])


def _stop(proc: subprocess.Popen[bytes], grace_s: float = 15.0) -> None:
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
def _process(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """A child process whose output goes straight to ``log`` (no pipe to fill); always stopped."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            args, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=out, start_new_session=True
        )
    try:
        yield proc
    finally:
        _stop(proc)


class Server:
    def __init__(self, url: str, log: Path, proc: subprocess.Popen[bytes]) -> None:
        self.url, self.log, self.proc = url, log, proc

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)


def _wait_healthy(proc: subprocess.Popen[bytes], url: str, deadline: float) -> bool:
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


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[Server]:
    """``prefect server start`` on a free loopback port with a throwaway home (SQLite inside)."""
    home = tmp_path / "server-home"
    home.mkdir()
    env = _child_env(home, SERVER_ENV)
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    for attempt in range(3):  # another process may take the free port before the server binds it
        port = _free_port()
        url = f"http://127.0.0.1:{port}/api"
        log = tmp_path / f"server-{attempt}.log"
        args = [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port), "--no-ui"]
        with _process(args, env, tmp_path, log) as proc:
            try:
                healthy = _wait_healthy(proc, url, deadline)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n--- server log ---\n{_tail(log)}") from None
            if healthy:
                yield Server(url, log, proc)
                return
        if time.monotonic() >= deadline:
            break
    pytest.fail(f"the Prefect server exited before answering /health\n--- server log ---\n{_tail(log)}")


def _write_csv(path: Path, rows: int = 50) -> pd.DataFrame:
    """A wide CSV (``timestamp,cpu,mem``) at 1-minute steps; returns what was written."""
    stamps = pd.date_range("2024-03-01T00:00:00Z", periods=rows, freq="1min")
    frame = pd.DataFrame(
        {
            "timestamp": [t.isoformat() for t in stamps],
            "cpu": np.round(20 + 10 * np.sin(np.arange(rows) / 5), 3),
            "mem": np.round(512 + 0.5 * np.arange(rows), 3),
        }
    )
    path.parent.mkdir(parents=True)
    frame.to_csv(path, index=False)
    return frame


def _flow_runs(http: httpx.Client, deployment_id: str) -> list[dict[str, Any]]:
    response = http.post(
        "/flow_runs/filter",
        json={"deployments": {"id": {"any_": [deployment_id]}}, "sort": "EXPECTED_START_TIME_ASC", "limit": 200},
    )
    response.raise_for_status()
    return response.json()


# -- the test ------------------------------------------------------------------------


def test_interval_schedule_runs_ingest_by_itself(prefect_server: Server, tmp_path: Path) -> None:
    work = tmp_path / "work"
    work.mkdir()
    written = _write_csv(work / "incoming" / "metrics.csv")
    client_home = tmp_path / "serve-home"
    client_home.mkdir()
    env = _child_env(client_home, {**SERVE_ENV, "PREFECT_API_URL": prefect_server.url})
    serve_log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "flows.serve", "--file", str(REPO / "prefect.yaml"), "--only", "ingest"]
    args += ["--interval", str(INTERVAL_S)]

    def logs() -> str:
        return (
            f"\n--- serve log ({serve_log}) ---\n{_tail(serve_log)}"
            f"\n--- server log ({prefect_server.log}) ---\n{_tail(prefect_server.log, 30)}"
        )

    with _process(args, env, work, serve_log) as serve, prefect_server.api() as http:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        deployment = None
        done: dict[str, Any] | None = None
        runs: list[dict[str, Any]] = []
        while time.monotonic() < deadline:
            assert serve.poll() is None, f"flows.serve exited with {serve.returncode}{logs()}"
            if deployment is None:
                response = http.get("/deployments/name/ingest/ingest")
                if response.status_code == 200:
                    deployment = response.json()
            if deployment is not None:
                runs = _flow_runs(http, deployment["id"])
                failed = [r for r in runs if r["state_type"] in TERMINAL_FAILURES]
                assert not failed, f"ingest run {failed[0]['name']} ended {failed[0]['state_name']}{logs()}"
                done = next((r for r in runs if r["state_type"] == "COMPLETED"), None)
                if done is not None:
                    break
            time.sleep(1.0)
        states = [(r["name"], r["state_name"]) for r in runs]
        assert deployment is not None, f"flows.serve registered no 'ingest' deployment in {RUN_TIMEOUT_S:.0f} s{logs()}"
        assert done is not None, f"no ingest run completed in {RUN_TIMEOUT_S:.0f} s; runs: {states}{logs()}"

    # The deployment carries the --interval schedule and the prefect.yaml parameters ...
    schedules = deployment["schedules"]
    assert [s["schedule"].get("interval") for s in schedules] == [INTERVAL_S], schedules
    assert all(s["active"] for s in schedules)
    assert deployment["parameters"] == {"source": "incoming", "workspace": "data"}
    # ... and the completed run came from that schedule, not from anyone asking for it.
    assert done["auto_scheduled"] is True, done
    assert done["created_by"]["type"] == "SCHEDULE", done["created_by"]
    assert done["created_by"]["id"] == schedules[0]["id"], (done["created_by"], schedules)
    assert done["parameters"] == {"source": "incoming", "workspace": "data"}

    # The run ingested the CSV into <work>/data/store: 50 rows x 2 metrics, the same values.
    store = RawStore(work / "data" / "store")
    assert store.metrics() == ["cpu", "mem"]
    points = store.read()
    assert len(points) == 100
    expected = written.melt(id_vars="timestamp", var_name="metric", value_name="value")
    expected["timestamp"] = pd.to_datetime(expected["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    expected = expected.sort_values(["metric", "timestamp"], kind="stable").reset_index(drop=True)
    pd.testing.assert_frame_equal(points[["metric", "timestamp", "value"]], expected[["metric", "timestamp", "value"]])
    last = pd.Timestamp(written["timestamp"].iloc[-1])
    assert store.watermarks() == {"cpu": last, "mem": last}
