"""The stream benchmark measures what users get: it raises the alerts the score flow raises.

One model, one series with an incident, and the same arrivals: the scheduled
score flow (store, registry, carry, score state, alert rows) and the stream
benchmark's scoring (:func:`anomaly.evaluation.benchmark.score_stream`) must
raise the same alerts, point for point, including one that spans runs.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from anomaly.core.data import normalise
from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.evaluation.benchmark import Fit, score_stream, stream_config
from anomaly.evaluation.synthetic import clean_metrics, inject
from anomaly.ops.registry import ModelRegistry
from anomaly.ops.workspace import Workspace
from flows.score import score_flow
from tests.conftest import TINY, long_points

pytestmark = pytest.mark.usefixtures("prefect_harness")

CONFIG = stream_config(TINY.replace(scoring={"baseline": 120, "baseline_warmup": "2h"}, threshold={"method": "fixed", "k": 3.0}))
TRAINED = 700
ARRIVALS = (760, 790, 830, 900)  # each score run sees the points up to the next arrival


def test_the_score_flow_and_the_stream_benchmark_raise_the_same_alerts(tmp_path: Path) -> None:
    series = clean_metrics(ARRIVALS[-1], metrics=("cpu",), seed=11)
    series, _ = inject(series, "level_shift", "cpu", 775, 30, magnitude=4.0, seed=2)  # spans the second and third runs
    detector = LSTMAutoencoderDetector(CONFIG).fit(series.iloc[:TRAINED], progress=False)

    registry = ModelRegistry(tmp_path / "models")
    registry.promote("cpu", registry.publish(detector, "cpu").version)
    workspace = Workspace(tmp_path / "ws")
    workspace.store().append(long_points(series.iloc[:TRAINED]))
    bounds = (TRAINED, *ARRIVALS)
    for a, b in zip(bounds, bounds[1:]):
        workspace.store().append(long_points(series.iloc[a:b]))
        state = score_flow(str(workspace.root), str(registry.root), report=False, return_state=True)
        assert state.is_completed(), state.message
    flow_alerts = workspace.alerts()

    frame = normalise(series, CONFIG.preprocess)
    loaded = registry.load("cpu").detector
    fits = [Fit(loaded, "000001", a, b) for a, b in zip(bounds, bounds[1:])]
    _, bench_alerts = score_stream(frame, fits, model="cpu")

    assert len(flow_alerts) >= 1, "the incident raises an alert"
    assert (flow_alerts["start"] < series.index[ARRIVALS[1]]).any() and (flow_alerts["end"] >= series.index[ARRIVALS[1]]).any(), (
        "an alert spans two score runs"
    )
    columns = ["id", "start", "end", "onset", "closed", "n_points", "n_above", "peak_time", "severity"]
    pd.testing.assert_frame_equal(
        flow_alerts[columns].reset_index(drop=True), bench_alerts[columns].reset_index(drop=True), check_dtype=False
    )
    pd.testing.assert_series_equal(
        flow_alerts["peak_score"].reset_index(drop=True), bench_alerts["peak_score"].reset_index(drop=True), check_dtype=False
    )
