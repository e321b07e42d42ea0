"""An alert needs the metric outside its expected range: the ranges, each point's deviation, and the gate on events.

The range is the reconstruction ± a quantile (``events.band``) of the model's
own absolute training errors, per metric, so it calibrates itself to each
series. The tracker's side of the gate (firing, chunking, the carried state)
is tested in ``test_alerts.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly.core.config import EventConfig, Policy
from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.core.events import OpenRun, TrackerState, find_runs
from anomaly.core.scoring import deviation, expected_ranges
from anomaly.errors import ConfigError
from anomaly.ops.workspace import ScoreState
from tests.conftest import TINY


@pytest.fixture(scope="module")
def fitted(two_metrics: pd.DataFrame) -> LSTMAutoencoderDetector:
    return LSTMAutoencoderDetector(TINY.replace(events={"band": 0.99})).fit(two_metrics.iloc[:800], progress=False)  # opt-in


# -- ranges and deviations -----------------------------------------------------------------------


def test_expected_ranges_are_quantiles_of_the_observed_absolute_residuals() -> None:
    residuals = np.array([[1.0, -2.0], [-3.0, np.nan], [100.0, 4.0], [2.0, -1.0]])
    unobserved = np.array([[False, False], [False, False], [True, False], [False, False]])  # a filled 100 never counts
    assert expected_ranges(residuals, unobserved, 1.0).tolist() == [3.0, 4.0]
    assert expected_ranges(residuals, unobserved, 0.5).tolist() == [2.0, 2.0]
    assert np.isnan(expected_ranges(np.array([[np.nan]]), np.array([[False]]), 0.99)).all()


def test_deviation_is_the_largest_residual_over_the_metrics_in_their_ranges() -> None:
    ranges = np.array([2.0, 0.0])  # the second metric never moved in training
    residuals = np.array([[1.0, 0.0], [-3.0, 0.0], [0.0, 0.5], [np.nan, np.nan], [5.0, 0.0]])
    unobserved = np.zeros_like(residuals, dtype=bool)
    unobserved[4, 0] = True  # filled: its 5.0 is not the metric's
    far = deviation(residuals, unobserved, ranges)
    assert far[:3].tolist() == [0.5, 1.5, np.inf] and np.isnan(far[3]) and far[4] == 0.0


def test_a_point_at_the_range_is_inside_and_just_beyond_it_outside() -> None:
    far = deviation(np.array([[2.0], [2.0 + 1e-9]]), np.zeros((2, 1), dtype=bool), np.array([2.0]))
    assert far[0] == 1.0 and far[1] > 1.0


# -- the detector's scores ----------------------------------------------------------------------


def test_scores_say_how_far_each_point_is_from_what_the_model_expected(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame) -> None:
    scores = fitted.score(two_metrics.iloc[800:1000], context=two_metrics.iloc[:800])
    ranges = fitted.expected_ranges()
    assert scores.deviation is not None and ranges is not None and (ranges > 0).all()
    # the same figure from the metric's own units: |value - expected| / scaler's scale / range, largest metric
    units = (scores.values - scores.reconstruction).abs() / fitted.scaler_.scale_ / ranges
    np.testing.assert_allclose(scores.deviation.to_numpy(), units.max(axis=1).to_numpy(), rtol=1e-5)  # the model computes in float32


def test_about_one_training_point_in_a_hundred_is_outside_a_99_percent_range(fitted: LSTMAutoencoderDetector) -> None:
    far = fitted.training_deviation()
    assert far is not None and len(far) == 800
    outside = float((far > 1.0).mean())  # the larger of two metrics' deviations: between 1 % and 2 %
    assert 0.005 <= outside <= 0.02


def test_the_band_is_policy_a_wider_one_takes_no_retraining(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame) -> None:
    wider = fitted.with_policy(fitted.policy.replace(events={"band": 0.999}))
    assert wider.model_ is fitted.model_
    assert (wider.expected_ranges() > fitted.expected_ranges()).all()
    off = fitted.with_policy(fitted.policy.replace(events={"band": None}))
    assert off.expected_ranges() is None and off.training_deviation() is None
    assert off.score(two_metrics.iloc[800:900], context=two_metrics.iloc[:800]).deviation is None


def test_ranges_survive_a_save_and_load(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame, tmp_path: Path) -> None:
    loaded = LSTMAutoencoderDetector.load(fitted.save(tmp_path / "model"))
    np.testing.assert_array_equal(loaded.expected_ranges(), fitted.expected_ranges())
    new, context = two_metrics.iloc[800:900], two_metrics.iloc[:800]
    pd.testing.assert_series_equal(loaded.score(new, context=context).deviation, fitted.score(new, context=context).deviation)


def test_a_model_saved_without_residuals_has_no_ranges_and_scores_alone_decide(
    fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame, tmp_path: Path
) -> None:
    path = fitted.save(tmp_path / "model")
    (path / "residuals.npz").unlink()
    state = json.loads((path / "detector.json").read_text())
    (path / "detector.json").write_text(json.dumps({**state, "format_version": 1}))
    config = json.loads((path / "config.json").read_text())
    window = config["window"]
    config["scoring"].update(aggregate=window.pop("aggregate"), batch_size=window.pop("score_batch_size"))
    (path / "config.json").write_text(json.dumps(config))
    old = LSTMAutoencoderDetector.load(path)
    assert old.expected_ranges() is None
    assert old.score(two_metrics.iloc[800:900], context=two_metrics.iloc[:800]).deviation is None


# -- batch events -------------------------------------------------------------------------------


def test_batch_runs_are_kept_only_where_the_metric_left_its_range() -> None:
    flags = np.zeros(12, dtype=bool)
    flags[[1, 2, 7, 8]] = True
    score, config = flags * 2.0, EventConfig(merge_gap=0, min_length=1)
    outside = np.zeros(12, dtype=bool)
    outside[5] = True  # between the runs, two points before the second
    assert find_runs(flags, score, 1.0, config) == [(1, 3), (7, 9)]
    assert find_runs(flags, score, 1.0, config, outside, lookback=0) == []
    assert find_runs(flags, score, 1.0, config, outside, lookback=2) == [(7, 9)]
    outside[2] = True
    assert find_runs(flags, score, 1.0, config, outside, lookback=0) == [(1, 3)]


def test_the_lookback_is_the_smoothing_span_in_time() -> None:
    step = pd.Timedelta("5min")
    assert Policy().lookback(step) == pd.Timedelta("600min")
    assert Policy().replace(scoring={"smoothing_time": None, "smoothing_span": 12}).lookback(step) == pd.Timedelta("60min")
    assert Policy().replace(scoring={"smoothing_time": None, "smoothing_span": 0}).lookback(step) == pd.Timedelta(0)


# -- settings and state -------------------------------------------------------------------------


@pytest.mark.parametrize("band", [0.3, 1.5, "wide", float("nan")])
def test_a_band_outside_its_bounds_is_a_clear_error(band: object) -> None:
    with pytest.raises(ConfigError, match=r"events\.band") as error:
        EventConfig(band=band)  # type: ignore[arg-type]
    assert repr(band) in str(error.value) or str(band) in str(error.value)


def test_the_score_state_keeps_when_the_metric_last_left_its_range() -> None:
    t = pd.Timestamp("2026-03-02 10:00", tz="UTC")
    run = OpenRun(t, t, 1, None, 2.0, t, 1.0, ("cpu",))
    state = ScoreState(t, "000001", None, None, None, 300.0, 30, TrackerState(run, t - pd.Timedelta("5min")))
    back = ScoreState.from_json(json.loads(json.dumps(state.to_json())), "test")
    assert back == state
    older = {k: v for k, v in state.to_json().items() if k != "last_outside"}  # written before it was kept
    assert ScoreState.from_json(older, "test").tracker == TrackerState(run, None)
