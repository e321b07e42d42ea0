"""The train flow on a Dask cluster reached by address, as a user who outgrows one machine runs it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from distributed import Client, LocalCluster
from prefect.settings import PREFECT_API_URL
from prefect_dask import DaskTaskRunner

from anomaly.ops.workspace import STORE
from anomaly.ops.registry import ModelRegistry
from anomaly.io.store import RawStore
from anomaly.evaluation.synthetic import clean_metrics
from flows.common import task_runner
from flows.train import train_flow
from tests.conftest import TINY


@pytest.fixture
def cluster(prefect_harness: None, monkeypatch: pytest.MonkeyPatch):
    """Two single-threaded worker processes; they reach the harness's API through the environment."""
    monkeypatch.setenv("PREFECT_API_URL", PREFECT_API_URL.value())
    monkeypatch.setenv("ANOMALY_TORCH_THREADS", "1")
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as local:
        yield local


def test_the_train_flow_runs_its_groups_on_a_dask_cluster_by_address(cluster: LocalCluster, tmp_path: Path) -> None:
    series = clean_metrics(864, metrics=("requests", "cpu"), seed=8)
    RawStore(tmp_path / "ws" / STORE).append(
        series.rename_axis("timestamp").reset_index().melt("timestamp", var_name="metric", value_name="value")
    )
    config = tmp_path / "tiny.json"
    config.write_text(TINY.to_json())
    runner = task_runner(cluster.scheduler_address)
    assert isinstance(runner, DaskTaskRunner)
    flow = train_flow.with_options(task_runner=runner)
    results = flow(str(tmp_path / "ws"), str(tmp_path / "models"), None, str(config), "3D", "12h")
    assert sorted(r["group"] for r in results) == ["cpu", "requests"]
    registry = ModelRegistry(tmp_path / "models")
    assert all(registry.aliases(g) == {"production": "000001"} for g in ("cpu", "requests"))
    # the tasks ran in the cluster's worker processes, not in this one
    with Client(cluster.scheduler_address) as client:
        worker_pids = set(client.run(os.getpid).values())
        keys = client.run(lambda dask_worker: sorted({str(entry[0]) for entry in dask_worker.state.log}))
    assert os.getpid() not in worker_pids
    ran = [k for per_worker in keys.values() for k in per_worker if k.startswith("train_one")]
    assert len(ran) == 2, keys
