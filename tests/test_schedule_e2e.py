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

import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest

from anomaly.io.store import RawStore
from tests.conftest import REPO
from tests.prefect_server import Server, child_env, process, running_server, tail

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


@pytest.fixture
def prefect_server(tmp_path: Path) -> Iterator[Server]:
    """``prefect server start`` on a free loopback port with a throwaway home (SQLite inside)."""
    with running_server(tmp_path, SERVER_ENV) as server:
        yield server


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
    env = child_env(client_home, {**SERVE_ENV, "PREFECT_API_URL": prefect_server.url})
    serve_log = tmp_path / "serve.log"
    args = [sys.executable, "-m", "flows.serve", "--file", str(REPO / "prefect.yaml"), "--only", "ingest"]
    args += ["--interval", str(INTERVAL_S)]

    def logs() -> str:
        return (
            f"\n--- serve log ({serve_log}) ---\n{tail(serve_log)}"
            f"\n--- server log ({prefect_server.log}) ---\n{tail(prefect_server.log, 30)}"
        )

    with process(args, env, work, serve_log) as serve, prefect_server.api() as http:
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
