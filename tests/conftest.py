"""Shared fixtures: tiny detector configurations and generated data.

Tests train tiny models for a few epochs on generated series, so the whole
suite runs in minutes on 2 CPU cores. Prefect (used by later flow tests) is
pointed at a throwaway home so nothing leaks between sessions.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

if "PREFECT_HOME" not in os.environ:
    _prefect_home = tempfile.mkdtemp(prefix="prefect-home-")
    os.environ["PREFECT_HOME"] = _prefect_home
    atexit.register(shutil.rmtree, _prefect_home, True)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")

# Parallel test workers each get one thread, so two workers use two cores.
if os.environ.get("PYTEST_XDIST_WORKER"):
    torch.set_num_threads(1)

from anomaly.core.config import DetectorConfig  # noqa: E402
from anomaly.evaluation.synthetic import clean_metrics  # noqa: E402

# A small model trained at a constant rate, with its post-processing pinned to a raw smoothed
# absolute error, a peaks-over-threshold cut and short merges (what the assertions on scores,
# thresholds and events lean on), whatever the defaults become; tests of the defaults' own
# baseline rule build their configuration themselves.
TINY = DetectorConfig().replace(
    window={"size": 32, "score_stride": 4, "max_train_windows": 20_000},
    model={"hidden_size": 16, "latent_size": 8, "num_layers": 1, "dropout": 0.0},
    training={"epochs": 4, "batch_size": 64, "learning_rate": 1e-2, "patience": 2, "schedule": "constant"},
    scoring={"error": "abs", "smoothing_span": 6, "smoothing_time": None, "baseline": 0},
    threshold={"method": "spot", "k": 4.0},
    events={"padding": 0, "merge_gap": 12},
)

# The same tiny model as command-line overrides, for CLI tests.
TINY_SETTINGS = [
    "--set", "window.size=32",
    "--set", "window.score_stride=4",
    "--set", "model.hidden_size=16",
    "--set", "model.latent_size=8",
    "--set", "model.num_layers=1",
    "--set", "model.dropout=0",
    "--set", "training.epochs=3",
    "--set", "training.learning_rate=1e-2",
    "--set", "training.schedule=constant",
    "--set", "window.max_train_windows=20000",
    "--set", "scoring.error=abs",
    "--set", "scoring.smoothing_span=6",
    "--set", "scoring.smoothing_time=null",
    "--set", "scoring.baseline=0",
    "--set", "threshold.method=spot",
    "--set", "events.merge_gap=12",
]  # fmt: skip


def long_points(frame: pd.DataFrame) -> pd.DataFrame:
    """A wide frame (one column per metric) as the store's long points."""
    return frame.rename_axis("timestamp").reset_index().melt("timestamp", var_name="metric", value_name="value")


@pytest.fixture
def tiny_config() -> DetectorConfig:
    """A model small enough to train in about a second."""
    return TINY


@pytest.fixture(scope="session")
def two_metrics() -> pd.DataFrame:
    """Four days of 5-minute requests and cpu, incident-free."""
    return clean_metrics(1152, metrics=("requests", "cpu"), seed=3)


@pytest.fixture(scope="session")
def prefect_harness():
    """One temporary Prefect API for every flow test of a session (each start costs seconds)."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=60):
        yield


#: Children that tests kill mid-write: one thread each, the repository importable.
REPO = Path(__file__).resolve().parents[1]
CHILD_ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


def kill_when_stalled(code: str, args: list[str], marker: Path, point: str, timeout_s: float = 120) -> int:
    """Run ``python -c code *args``, SIGKILL it once it creates ``marker`` (stalled at ``point``); return its pid.

    Crash-safety tests use this to stop a writer at an exact step, as a power
    cut or an OOM kill would, and then check what it left behind.
    """
    proc = subprocess.Popen(
        [sys.executable, "-c", code, *args],
        cwd=REPO, env=CHILD_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + timeout_s
        while not marker.exists():
            if proc.poll() is not None:
                out, err = proc.communicate()
                pytest.fail(f"child exited ({proc.returncode}) before stalling at {point}:\n{out}\n{err}")
            if time.monotonic() > deadline:
                pytest.fail(f"child never reached {point}")
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.communicate()
    assert proc.returncode == -signal.SIGKILL
    return proc.pid


def dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"], env=CHILD_ENV)
    proc.wait()
    return proc.pid


def read_parts(folder: Path) -> pd.DataFrame:
    """Every part file of a workspace's scores or events folder, oldest first, as one frame."""
    parts = sorted(folder.glob("part-*.parquet")) if folder.is_dir() else []
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True) if parts else pd.DataFrame()
