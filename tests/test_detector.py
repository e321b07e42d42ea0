"""The detector end to end: fit, score, detect, save/load, bad input, incidents."""

from __future__ import annotations

import copy
import itertools
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from anomaly.core.config import DetectorConfig
from anomaly.core.detector import LSTMAutoencoderDetector, context_points
from anomaly.errors import DataError, ModelFileError, NotFittedError
from anomaly.evaluation.synthetic import INCIDENT_KINDS, INCIDENT_SPANS, clean_metrics, inject

DAY = 288  # 5-minute points


# -- incidents ---------------------------------------------------------------------

INCIDENT_CONFIG = DetectorConfig()  # the defaults themselves: the configuration the benchmark measured
# benchmarks/incidents.py runs the same suite under any configuration and prints how it fares


@pytest.fixture(scope="module")
def week_and_after() -> tuple[pd.DataFrame, LSTMAutoencoderDetector]:
    """A detector fitted on a clean week of requests; two more clean days to test on."""
    frame = clean_metrics(DAY * 9, metrics=("requests",), seed=11)
    detector = LSTMAutoencoderDetector(INCIDENT_CONFIG).fit(frame.iloc[: DAY * 7], progress=False)
    return frame, detector


def test_clean_days_raise_at_most_two_events(week_and_after: tuple[pd.DataFrame, LSTMAutoencoderDetector]) -> None:
    """The false-alarm rate of the defaults, bounded where it is known, not a promise of silence.

    Measured with these defaults (12 one-cycle epochs) on nine realisations of
    the same two clean days (data seeds 1-8 and 11; ``benchmarks/incidents.py
    --data-seed N`` prints one) on an AMD EPYC with one thread: no event on
    seven, one on one, two on this realisation (peak 6.7 against 4.5), which
    also raises two with two threads (this suite's setting when run serially).
    The previous defaults (20 constant-rate epochs) raised one at most on an
    earlier AMD EPYC, and on a 2-core Intel Xeon two on this realisation with
    two threads (7.4) and none with one (4.2). Training amplifies float
    rounding, so which realisation crosses the cut moves with the machine and
    its thread count, and asserting silence, or the one-event bound that held
    on one machine, would test the machine. Two events in two days is the
    worst measured; more would be a real change in the false-alarm rate.
    """
    frame, detector = week_and_after
    events = detector.detect(frame.iloc[DAY * 7 :], context=frame.iloc[: DAY * 7])
    assert len(events) <= 2, events


@pytest.mark.parametrize("kind", INCIDENT_KINDS)
def test_each_incident_kind_is_detected_and_nothing_else(
    week_and_after: tuple[pd.DataFrame, LSTMAutoencoderDetector], kind: str
) -> None:
    frame, detector = week_and_after
    offset, length = INCIDENT_SPANS[kind]
    data, incident = inject(frame, kind, "requests", DAY * 7 + offset, length, seed=1)
    events = detector.detect(data.iloc[DAY * 7 :], context=data.iloc[: DAY * 7])

    overlapping = events[(events.start <= incident.end) & (events.end >= incident.start)]
    assert len(overlapping) >= 1, f"{kind} was not detected"
    # A window that covers the incident reconstructs badly as a whole, so an
    # event may reach up to one window beyond it, never further.
    reach = detector.freq_ * INCIDENT_CONFIG.window.size
    outside = events[(events.end < incident.start - reach) | (events.start > incident.end + reach)]
    assert outside.empty, f"false events away from the {kind}: {outside[['start', 'end']]}"
    assert set(overlapping.severity) <= {"low", "medium", "high", "critical"}
    assert (overlapping.peak_score > overlapping.threshold).all()


# -- fitted state and errors -------------------------------------------------------


@pytest.fixture(scope="module")
def fitted(two_metrics: pd.DataFrame) -> LSTMAutoencoderDetector:
    from tests.conftest import TINY

    return LSTMAutoencoderDetector(TINY).fit(two_metrics.iloc[:800], progress=False)


def test_not_fitted_is_a_clear_error(two_metrics: pd.DataFrame) -> None:
    with pytest.raises(NotFittedError, match="not fitted yet"):
        LSTMAutoencoderDetector().score(two_metrics)


def test_constructor_only_stores_the_config(tiny_config: DetectorConfig) -> None:
    detector = LSTMAutoencoderDetector(tiny_config)
    assert detector.config is tiny_config
    assert not [k for k in vars(detector) if k.endswith("_")]


def test_fit_learns_state_in_trailing_underscore_attributes(
    fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame
) -> None:
    assert fitted.metrics_ == ["requests", "cpu"]
    assert fitted.freq_ == pd.Timedelta("5min")
    assert set(fitted.thresholds_.per_metric) == {"requests", "cpu"}
    assert fitted.threshold_ == fitted.thresholds_.combined.threshold_ > 0
    assert fitted.residuals_.shape == (800, 2)
    assert len(fitted.decision_scores_) == len(fitted.labels_) == 800
    assert fitted.labels_.dtype == bool
    assert fitted.training_data_["rows"] == 800
    assert len(fitted.history_.train_loss) >= 1


def test_scores_follow_the_data_contract(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame) -> None:
    new = two_metrics.iloc[800:1000]
    scores = fitted.score(new, context=two_metrics.iloc[:800])
    assert scores.score.index.equals(new.index)
    assert list(scores.metric_scores.columns) == ["requests", "cpu"]
    assert np.isfinite(scores.score).all(), "context must let the first points be scored"
    assert scores.flags.dtype == bool
    assert set(scores.thresholds) == {"requests", "cpu"}
    frame = scores.to_frame()
    assert {"requests", "cpu", "score_requests", "score_cpu", "anomaly_score", "flag"} <= set(frame.columns)
    # The reconstruction is in the metrics' own units and follows the data.
    for metric in ("requests", "cpu"):
        assert scores.reconstruction[metric].corr(scores.values[metric]) > 0.8
        assert abs(scores.reconstruction[metric].mean() / scores.values[metric].mean() - 1) < 0.1


def test_context_only_changes_the_first_window(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame) -> None:
    whole = fitted.score(two_metrics.iloc[700:1000])
    split = fitted.score(two_metrics.iloc[850:1000], context=two_metrics.iloc[700:850])
    tail = whole.score.loc[split.score.index]
    size = fitted.config.window.size
    np.testing.assert_allclose(split.score.to_numpy()[2 * size :], tail.to_numpy()[2 * size :], rtol=1e-5)


@pytest.fixture(scope="module")
def baselined(two_metrics: pd.DataFrame) -> LSTMAutoencoderDetector:
    """The tiny model with scores in sigmas above a 200-point baseline, flagged at 3 sigma."""
    from tests.conftest import TINY

    config = TINY.replace(
        scoring={"smoothing_span": 12, "baseline": 200, "baseline_warmup": None}, threshold={"method": "fixed", "k": 3.0}
    )
    return LSTMAutoencoderDetector(config).fit(two_metrics.iloc[:800], progress=False)


def test_baseline_scores_with_context_equal_scores_of_the_whole(
    baselined: LSTMAutoencoderDetector, two_metrics: pd.DataFrame
) -> None:
    # the context a score run reads is enough for the baseline too: the split run sees what the whole one sees
    whole = baselined.score(two_metrics.iloc[:1000])
    split = baselined.score(two_metrics.iloc[900:1000], context=two_metrics.iloc[:900])
    np.testing.assert_allclose(split.score.to_numpy(), whole.score.iloc[900:].to_numpy(), rtol=1e-5)
    np.testing.assert_allclose(split.metric_scores.to_numpy(), whole.metric_scores.iloc[900:].to_numpy(), rtol=1e-5)
    assert split.flags.equals(whole.flags.iloc[900:])
    assert baselined.threshold_ == 3.0 and baselined.thresholds_.per_metric["cpu"].threshold_ == 3.0


def test_baseline_needs_history_before_it_scores(baselined: LSTMAutoencoderDetector, two_metrics: pd.DataFrame) -> None:
    scores = baselined.score(two_metrics.iloc[:300])
    assert scores.score.iloc[:50].isna().all()  # fewer than 200 // 4 earlier points: no baseline yet
    assert scores.score.iloc[51:].notna().all() and (scores.score.iloc[51:] >= 0).all()
    assert not scores.flags.iloc[:50].any()
    # the training scores are baseline-relative too, so the first of them are missing as well
    assert baselined.decision_scores_.iloc[:50].isna().all()


def test_a_saved_baselined_detector_scores_the_same(
    baselined: LSTMAutoencoderDetector, two_metrics: pd.DataFrame, tmp_path: Path
) -> None:
    loaded = LSTMAutoencoderDetector.load(baselined.save(tmp_path / "model"))
    assert loaded.config == baselined.config and loaded.threshold_ == 3.0
    data, context = two_metrics.iloc[900:1000], two_metrics.iloc[:900]
    expected = baselined.score(data, context=context)
    got = loaded.score(data, context=context)
    np.testing.assert_allclose(got.score.to_numpy(), expected.score.to_numpy(), rtol=1e-6)
    assert got.flags.equals(expected.flags)


def _excluding(detector: LSTMAutoencoderDetector, **scoring: Any) -> LSTMAutoencoderDetector:
    """The same fitted model, scored with other baseline settings (they change no fitted state here)."""
    variant = copy.copy(detector)
    variant.config = detector.config.replace(scoring=scoring)
    return variant


@pytest.mark.parametrize("exclude", [None, 4.5, 1.0])
def test_scores_continued_from_a_carry_equal_one_score_over_everything(
    baselined: LSTMAutoencoderDetector, two_metrics: pd.DataFrame, exclude: float | None
) -> None:
    """Three runs, each given the last one's carry and only the windows' context, score as one run does,

    except the last window of points of each run, which are scored with the windows that exist then.
    With points kept out of the baseline (at 1σ, many are), the carry says which, and for how long.
    """
    baselined = _excluding(baselined, baseline_exclude=exclude, baseline_hold="60min")
    window = baselined.config.window.size
    bounds = [900, 940, 975, 1000]
    whole = baselined.score(two_metrics.iloc[900:1000], context=two_metrics.iloc[:900])
    parts, carry, held = [], None, []
    for start, stop in itertools.pairwise(bounds):
        context = two_metrics.iloc[:start] if carry is None else two_metrics.iloc[start - 2 * window : start]
        scores = baselined.score(two_metrics.iloc[start:stop], context=context, carry=carry)
        parts.append(scores)
        carry = scores.carry
        # the carry holds the baseline's points, and stops one window before the last point scored
        assert len(carry) == 200 and carry.index[-1] == two_metrics.index[stop - 1 - window]
        columns = ["requests", "cpu", "anomaly_score"]
        assert list(carry.columns) == (columns if exclude is None else columns + ["held:" + c for c in columns])
        held.append(carry.filter(like="held:").to_numpy())
    settled = np.ones(100, dtype=bool)
    for stop in bounds[1:-1]:
        settled[stop - 900 - window : stop - 900] = False
    for got, expected in [
        (pd.concat([p.score for p in parts]), whole.score),
        (pd.concat([p.metric_scores for p in parts]), whole.metric_scores),
    ]:
        np.testing.assert_allclose(got.to_numpy()[settled], expected.to_numpy()[settled], rtol=1e-6, atol=1e-9)
    if exclude == 1.0:  # the carries did hold points out (12 points of hold after each)
        assert all((h > 0).any() and h.max() <= 13 for h in held)
    # without the carry, the windows' context alone is too short a baseline: the scores differ
    alone = baselined.score(two_metrics.iloc[940:1000], context=two_metrics.iloc[940 - 2 * window : 940])
    assert not np.allclose(alone.score.to_numpy(), whole.score.iloc[40:].to_numpy(), rtol=1e-3)
    assert context_points(baselined.config, pd.Timedelta("5min"), carried=True) == 2 * window


def test_a_carry_from_elsewhere_is_refused(baselined: LSTMAutoencoderDetector, two_metrics: pd.DataFrame) -> None:
    carry = baselined.score(two_metrics.iloc[900:950], context=two_metrics.iloc[:900]).carry
    data = two_metrics.iloc[950:1000]
    with pytest.raises(DataError, match=r"columns \['requests', 'cpu', 'anomaly_score', 'held:requests', .*\], got \['cpu'\]"):
        baselined.score(data, context=two_metrics.iloc[:950], carry=carry[["cpu"]])
    with pytest.raises(DataError, match="the carry reaches .* but the data to score starts at"):
        baselined.score(two_metrics.iloc[900:950], context=two_metrics.iloc[:900], carry=carry)


def test_smoothing_time_smooths_over_that_many_points_of_the_grid(
    baselined: LSTMAutoencoderDetector, two_metrics: pd.DataFrame
) -> None:
    # one hour on a 5-minute grid is the 12-point span the fixture was fitted with
    by_time = copy.copy(baselined)
    by_time.config = baselined.config.replace(scoring={"smoothing_span": None, "smoothing_time": "1h"})
    data, context = two_metrics.iloc[900:1000], two_metrics.iloc[:900]
    expected = baselined.score(data, context=context)
    np.testing.assert_array_equal(by_time.score(data, context=context).score.to_numpy(), expected.score.to_numpy())
    assert context_points(by_time.config, pd.Timedelta("5min")) == 2 * 32 + 10 * 12 + 200
    assert context_points(by_time.config, pd.Timedelta("1h")) == 2 * 32 + 10 * 1 + 200


def test_short_data_needs_context(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame) -> None:
    short = two_metrics.iloc[800:810]
    with pytest.raises(DataError, match=r"10 points .* fewer than one window \(window.size=32\)"):
        fitted.score(short)
    assert len(fitted.score(short, context=two_metrics.iloc[:800]).score) == 10


def test_a_metric_missing_at_scoring_is_named(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="metric 'cpu' is missing"):
        fitted.score(two_metrics[["requests"]])


def test_extra_metrics_at_scoring_are_ignored(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame) -> None:
    data = two_metrics.iloc[800:1000].assign(extra=1.0)
    assert list(fitted.score(data).metric_scores.columns) == ["requests", "cpu"]


def test_training_data_shorter_than_a_window(tiny_config: DetectorConfig, two_metrics: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="fewer than one window"):
        LSTMAutoencoderDetector(tiny_config).fit(two_metrics.iloc[:20])


def test_filled_points_are_never_flagged(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame) -> None:
    data = two_metrics.iloc[800:1000].copy()
    data.iloc[100:104, :] = data.iloc[100:104, :] * 6  # a burst ...
    data = data.drop(data.index[101:103])  # ... whose middle is a short gap, filled by interpolation
    scores = fitted.score(data, context=two_metrics.iloc[:800])
    filled = scores.filled.any(axis=1)
    assert filled.sum() == 2
    assert (scores.score[filled] > scores.threshold).all(), "the fabricated values do look anomalous"
    assert not scores.flags[filled].any()
    assert scores.flags.iloc[100] and scores.flags.iloc[103]


def test_constant_series_is_valid_and_departures_are_flagged(tiny_config: DetectorConfig) -> None:
    index = pd.date_range("2026-01-01", periods=400, freq="1min", tz="UTC")
    constant = pd.DataFrame({"temp": 21.5}, index=index)
    detector = LSTMAutoencoderDetector(tiny_config).fit(constant.iloc[:300], progress=False)
    assert detector.scaler_.scale_[0] == 1.0
    assert np.isfinite(detector.threshold_)
    quiet = detector.score(constant.iloc[300:], context=constant.iloc[:300])
    assert not quiet.flags.any()
    bumped = constant.iloc[300:].copy()
    bumped.iloc[50:55] = 23.0
    flags = detector.score(bumped, context=constant.iloc[:300]).flags
    assert flags.iloc[50:55].all()
    assert not flags.iloc[:40].any()


def test_gaps_longer_than_the_fill_limit_are_left_out(tiny_config: DetectorConfig, two_metrics: pd.DataFrame) -> None:
    data = two_metrics.drop(two_metrics.index[300:320])
    detector = LSTMAutoencoderDetector(tiny_config).fit(data.iloc[:900], progress=False)
    scores = detector.score(data.iloc[:900])
    gap = scores.values["requests"].isna()
    assert gap.sum() == 20
    assert scores.score[gap].isna().all() and not scores.flags[gap].any()


def test_multivariate_events_name_the_metric_that_moved(
    fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame
) -> None:
    data, incident = inject(two_metrics, "level_shift", "cpu", 900, 40, magnitude=3.0)
    events = fitted.detect(data.iloc[800:], context=data.iloc[:800])
    hit = events[(events.start <= incident.end) & (events.end >= incident.start)]
    assert len(hit) >= 1
    assert hit.iloc[0].metric.split(",")[0] == "cpu"


# -- determinism and persistence ---------------------------------------------------


def test_same_seed_same_model_other_seed_other_model(tiny_config: DetectorConfig, two_metrics: pd.DataFrame) -> None:
    data = two_metrics.iloc[:500]
    a = LSTMAutoencoderDetector(tiny_config).fit(data, progress=False)
    b = LSTMAutoencoderDetector(tiny_config).fit(data, progress=False)
    c = LSTMAutoencoderDetector(tiny_config.replace(training={"seed": 1})).fit(data, progress=False)
    assert a.history_.train_loss == b.history_.train_loss
    for (name, wa), wb in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
        assert torch.equal(wa, wb), name
    np.testing.assert_array_equal(a.decision_scores_, b.decision_scores_)
    assert a.history_.train_loss != c.history_.train_loss


def test_fit_does_not_disturb_the_callers_random_state(tiny_config: DetectorConfig, two_metrics: pd.DataFrame) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    LSTMAutoencoderDetector(tiny_config).fit(two_metrics.iloc[:300], progress=False)
    assert torch.equal(torch.rand(3), expected)


def test_fits_in_parallel_threads_give_the_models_they_give_alone(tiny_config: DetectorConfig, two_metrics: pd.DataFrame) -> None:
    """Flows train groups in threads; torch's generator is shared, so seeding must not interleave."""
    from concurrent.futures import ThreadPoolExecutor

    data = [two_metrics.iloc[:400], two_metrics.iloc[100:500], two_metrics.iloc[200:600], two_metrics.iloc[:600]]
    configs = [tiny_config.replace(training={"seed": seed}) for seed in (0, 1, 2, 3)]
    alone = [LSTMAutoencoderDetector(c).fit(d, progress=False) for c, d in zip(configs, data)]
    for _ in range(2):
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(lambda cd: LSTMAutoencoderDetector(cd[0]).fit(cd[1], progress=False), zip(configs, data)))
        for a, b in zip(alone, together):
            assert a.history_.train_loss == b.history_.train_loss
            for (name, wa), wb in zip(a.model_.state_dict().items(), b.model_.state_dict().values()):
                assert torch.equal(wa, wb), name


def as_release_01(path: Path) -> dict[str, Any]:
    """Turn a saved model folder into what release 0.1.0 wrote (format 1); return its config to edit."""
    state = json.loads((path / "detector.json").read_text())
    (path / "detector.json").write_text(json.dumps({**state, "format_version": 1}))
    (path / "residuals.npz").unlink()
    config = json.loads((path / "config.json").read_text())
    window = config["window"]
    config["scoring"].update(aggregate=window.pop("aggregate"), batch_size=window.pop("score_batch_size"))
    return config


@pytest.mark.parametrize(
    ("saved", "expected"),
    [
        ({"smoothing_span": 6}, (6, None, 0, None, None)),  # before smoothing_time and baseline existed
        ({"smoothing_span": 6, "smoothing_time": "200min", "baseline": 1000}, (None, "200min", 1000, None, None)),  # time won then
        ({"smoothing_span": None, "smoothing_time": "600min", "baseline": 1000}, (None, "600min", 1000, None, None)),
        (
            {"smoothing_span": None, "smoothing_time": "600min", "baseline": 1000, "baseline_exclude": 4.5, "baseline_warmup": "36h"},
            (None, "600min", 1000, 4.5, "36h"),
        ),  # today's
    ],
    ids=["no-time-no-baseline", "span-and-time", "before-exclusion", "current"],
)
def test_a_saved_model_loads_with_the_scoring_it_was_saved_with_not_todays_defaults(
    fitted: LSTMAutoencoderDetector, tmp_path: Path, saved: dict[str, object], expected: tuple[object, ...]
) -> None:
    path = fitted.save(tmp_path / "model")
    config = as_release_01(path)
    newer = ("smoothing_span", "smoothing_time", "baseline", "baseline_exclude", "baseline_warmup")
    config["scoring"] = {k: v for k, v in config["scoring"].items() if k not in newer}
    (path / "config.json").write_text(json.dumps({**config, "scoring": {**config["scoring"], **saved}}))
    scoring = LSTMAutoencoderDetector.load(path).config.scoring
    assert tuple(getattr(scoring, k) for k in newer) == expected


def test_a_model_saved_before_error_power_existed_keeps_scoring_absolute_errors(
    fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame, tmp_path: Path
) -> None:
    """Its config.json names ``error: abs`` and has no ``error_power``: today's power-1.5 default must not apply."""
    assert fitted.config is not None and fitted.config.scoring.error == "abs"
    path = fitted.save(tmp_path / "model")
    config = as_release_01(path)
    del config["scoring"]["error_power"]
    (path / "config.json").write_text(json.dumps(config))
    loaded = LSTMAutoencoderDetector.load(path)
    assert loaded.config.scoring.error == "abs"
    new, context = two_metrics.iloc[800:1000], two_metrics.iloc[:800]
    np.testing.assert_array_equal(loaded.score(new, context=context).score, fitted.score(new, context=context).score)


def test_a_model_saved_before_the_schedule_existed_records_its_constant_rate(
    fitted: LSTMAutoencoderDetector, tmp_path: Path
) -> None:
    """It was trained at a constant rate; today's one-cycle default must not be read into its record."""
    path = fitted.save(tmp_path / "model")
    config = as_release_01(path)
    assert config["training"]["schedule"] == fitted.config.training.schedule
    del config["training"]["schedule"]
    (path / "config.json").write_text(json.dumps(config))
    assert LSTMAutoencoderDetector.load(path).config.training.schedule == "constant"
    assert LSTMAutoencoderDetector.load(fitted.save(tmp_path / "again")).config.training == fitted.config.training


def test_save_load_scores_identically(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame, tmp_path: Path) -> None:
    new = two_metrics.iloc[800:]
    path = fitted.save(tmp_path / "model")
    loaded = LSTMAutoencoderDetector.load(path)
    original, again = fitted.score(new, context=two_metrics.iloc[:800]), loaded.score(new, context=two_metrics.iloc[:800])
    pd.testing.assert_series_equal(original.score, again.score)
    pd.testing.assert_series_equal(original.flags, again.flags)
    assert loaded.thresholds_.per_metric["cpu"].threshold_ == fitted.thresholds_.per_metric["cpu"].threshold_
    np.testing.assert_array_equal(loaded.residuals_, fitted.residuals_)
    assert loaded.config == fitted.config
    assert loaded.freq_ == fitted.freq_


def test_scores_match_in_another_process(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame, tmp_path: Path) -> None:
    model = fitted.save(tmp_path / "model")
    data = tmp_path / "new.csv"
    two_metrics.iloc[800:].to_csv(data, index_label="timestamp")
    script = (
        "import sys; from anomaly.core.detector import LSTMAutoencoderDetector as D; "
        "s = D.load(sys.argv[1]).score(sys.argv[2]).score; s.to_csv(sys.argv[3])"
    )
    out = tmp_path / "scores.csv"
    subprocess.run([sys.executable, "-c", script, str(model), str(data), str(out)], check=True)
    theirs = pd.read_csv(out, index_col=0)["anomaly_score"].to_numpy()
    np.testing.assert_array_equal(theirs, fitted.score(data).score.to_numpy())


def test_failed_save_keeps_the_existing_model(
    fitted: LSTMAutoencoderDetector, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = fitted.save(tmp_path / "model")
    before = {p.name: p.read_bytes() for p in path.iterdir()}

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken)
    with pytest.raises(OSError, match="disk full"):
        fitted.save(path)
    assert {p.name: p.read_bytes() for p in path.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir()] == ["model"], "no staging folder left behind"


def test_loading_a_damaged_model_folder_is_a_clear_error(fitted: LSTMAutoencoderDetector, tmp_path: Path) -> None:
    path = fitted.save(tmp_path / "model")
    (path / "scaler.json").unlink()
    with pytest.raises(ModelFileError, match="missing 'scaler.json'"):
        LSTMAutoencoderDetector.load(path)


def test_a_newer_format_is_refused(fitted: LSTMAutoencoderDetector, tmp_path: Path) -> None:
    import json

    path = fitted.save(tmp_path / "model")
    state = json.loads((path / "detector.json").read_text())
    state["format_version"] = 99
    (path / "detector.json").write_text(json.dumps(state))
    with pytest.raises(ModelFileError, match="format 99, newer than this version"):
        LSTMAutoencoderDetector.load(path)


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_weights_are_never_unpickled(fitted: LSTMAutoencoderDetector, tmp_path: Path) -> None:
    import pickle

    path = fitted.save(tmp_path / "model")
    marker = tmp_path / "pwned"

    class Exploit:
        def __reduce__(self) -> tuple[object, tuple[str]]:
            return (marker.touch, ())  # type: ignore[return-value]

    (path / "weights.pt").write_bytes(pickle.dumps(Exploit()))
    with pytest.raises(ModelFileError, match="cannot load weights"):
        LSTMAutoencoderDetector.load(path)
    assert not marker.exists()


# -- the policy apart from the model ---------------------------------------------------------


def test_the_same_policy_is_the_same_detector(fitted: LSTMAutoencoderDetector) -> None:
    assert fitted.with_policy(fitted.policy) is fitted


def test_a_changed_policy_scores_as_a_model_trained_under_it(fitted: LSTMAutoencoderDetector, two_metrics: pd.DataFrame) -> None:
    """The weights do not depend on the policy, so fitting under B equals fitting under A then switching to B:
    the thresholds refitted from the stored residuals are the ones a fit under B learns."""
    other = fitted.policy.replace(threshold={"method": "quantile", "quantile": 0.97}, scoring={"smoothing_span": 12}, events={"merge_gap": 3})
    switched = fitted.with_policy(other)
    trained = LSTMAutoencoderDetector(fitted.get_config().with_policy(other)).fit(two_metrics.iloc[:800], progress=False)
    assert switched.model_ is fitted.model_ and switched.policy == other
    assert switched.threshold_ == trained.threshold_ != fitted.threshold_
    assert {m: t.threshold_ for m, t in switched.thresholds_.per_metric.items()} == {
        m: t.threshold_ for m, t in trained.thresholds_.per_metric.items()
    }
    new, context = two_metrics.iloc[800:1000], two_metrics.iloc[:800]
    a, b = switched.score(new, context=context), trained.score(new, context=context)
    pd.testing.assert_series_equal(a.score, b.score)
    pd.testing.assert_series_equal(a.flags, b.flags)
    pd.testing.assert_frame_equal(switched.events(a), trained.events(b))


def test_a_release_01_model_takes_a_fixed_threshold_policy_but_not_a_fitted_one(
    baselined: LSTMAutoencoderDetector, tmp_path: Path
) -> None:
    path = baselined.save(tmp_path / "model")
    config = as_release_01(path)
    (path / "config.json").write_text(json.dumps(config))
    old = LSTMAutoencoderDetector.load(path)
    assert old.residuals_ is None
    assert old.with_policy(old.policy.replace(threshold={"k": 5.0})).threshold_ == 5.0
    with pytest.raises(ModelFileError, match="saved before training residuals were kept"):
        old.with_policy(old.policy.replace(threshold={"method": "spot"}))
