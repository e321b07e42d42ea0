"""Hostile input to the detector: extreme values, data on another interval, irregular series.

- Extreme values (issue 26, item 3): a value near ±1e308 or a series times
  1e40 must score as extreme and raise an event where it happens, whatever
  the post-processing (the default baseline rule, a fitted spot threshold);
  training data the scaler cannot represent is refused by metric and value.
- Silent regridding (item 9): data sampled more coarsely than the model's
  grid is refused unless allowed, in the API, the CLI and the scheduled
  score job; finer data is scored with a warning.
- Irregular series (item 10): a series with frequent gaps trains and scores,
  and a benchmark records a file that fails instead of aborting the run.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly.evaluation.benchmark import Benchmark, detect_stream
from anomaly.core.config import DetectorConfig
from anomaly.core.data import MetricFrame, normalise
from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.errors import DataError
from anomaly.ops.jobs import Group, score_group, score_groups
from anomaly.ops.workspace import SCORES, STORE
from anomaly.ops.registry import ModelRegistry
from anomaly.core.scaling import Scaler
from anomaly.io.store import RawStore
from anomaly.evaluation.synthetic import clean_metrics
from tests.adversarial.conftest import assert_one_line_error, run_cli, snapshot
from tests.conftest import TINY, TINY_SETTINGS, long_points

# The tiny model under the default post-processing: smoothing over time, the baseline rule, a fixed cut.
BASELINE = DetectorConfig().replace(**{s: TINY.to_dict()[s] for s in ("window", "model", "training")})
CONFIGS = {"baseline": BASELINE, "spot": TINY}
HISTORY_POINTS = 1152  # four days of 5-minute points to train on, then two more to score
SPIKE = 300  # the row of the scored days that a hostile value replaces


@pytest.fixture(scope="module")
def series() -> pd.DataFrame:
    return clean_metrics(HISTORY_POINTS + 576, metrics=("requests", "cpu"), seed=3)


@pytest.fixture(scope="module")
def detectors(series: pd.DataFrame) -> dict[str, LSTMAutoencoderDetector]:
    """One single-metric model per post-processing, and a two-metric one."""
    history = series.iloc[:HISTORY_POINTS]
    fitted = {name: LSTMAutoencoderDetector(cfg).fit(history[["requests"]], progress=False) for name, cfg in CONFIGS.items()}
    fitted["two"] = LSTMAutoencoderDetector(TINY).fit(history, progress=False)
    return fitted


def later(series: pd.DataFrame) -> pd.DataFrame:
    return series.iloc[HISTORY_POINTS:][["requests"]].copy()


def csv(frame: pd.DataFrame, path: Path) -> Path:
    frame.rename_axis("timestamp").reset_index().to_csv(path, index=False)
    return path


def event_at(events: pd.DataFrame, at: pd.Timestamp) -> bool:
    return bool(((events["start"] <= at) & (events["end"] >= at)).any())


# -- item 3: extreme values score as extreme ---------------------------------------------------


@pytest.mark.parametrize("config", sorted(CONFIGS))
@pytest.mark.parametrize("value", [1e40, 1e42, 1.7e308, -1.7e308], ids=["1e40", "1e42-past-float32-once-scaled", "1.7e308", "-1.7e308"])
def test_an_extreme_value_scores_as_extreme_and_raises_an_event(
    detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame, config: str, value: float
) -> None:
    det, data = detectors[config], later(series)
    data.iloc[SPIKE, 0] = value
    scores = det.score(data, context=series.iloc[:HISTORY_POINTS][["requests"]])
    at = data.index[SPIKE]
    assert not np.isinf(scores.score).any() and not np.isinf(scores.metric_scores.to_numpy()).any()
    assert np.isfinite(scores.score[at]) and scores.flags[at], scores.score.iloc[SPIKE - 2 : SPIKE + 3]
    assert scores.score[at] > 1000 * scores.threshold  # extreme, not merely above the cut
    assert scores.score.iloc[SPIKE:].nunique() > 10  # not frozen after it
    assert event_at(det.events(scores), at)


@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_a_series_multiplied_past_float32_is_flagged_from_its_first_point(
    detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame, config: str
) -> None:
    # requests spread about 60 in training: times 1e42 its scaled values pass float32's 3.4e38
    det, data = detectors[config], later(series) * 1e42
    scores = det.score(data, context=series.iloc[:HISTORY_POINTS][["requests"]])
    assert not np.isinf(scores.score).any()
    assert scores.flags.iloc[:3].all(), scores.score.iloc[:5]
    # as extreme as a score gets, not a value frozen wherever float32's inf left the model
    assert (scores.score.iloc[:3] > 1000 * scores.threshold).all(), scores.score.iloc[:5]
    assert event_at(det.events(scores), data.index[0])


def with_values(frame: pd.DataFrame, values: dict[int, float]) -> pd.DataFrame:
    out = frame.copy()
    for row, value in values.items():
        out.iloc[row, 0] = value
    return out


UNREPRESENTABLE = {
    "one 1.7e308": ({100: 1.7e308}, "1.7e+308"),
    "one -1.7e308": ({100: -1.7e308}, "-1.7e+308"),
    "a range past float64 (±1e308)": ({100: 1e308, 200: -1e308}, "1e+308"),
    "a 1e200 glitch": ({500: 1e200}, "1e+200"),
}


@pytest.mark.parametrize("case", list(UNREPRESENTABLE))
def test_training_data_the_scaler_cannot_represent_is_refused_by_metric_and_value(series: pd.DataFrame, case: str) -> None:
    values, shown = UNREPRESENTABLE[case]
    data = with_values(series.iloc[:HISTORY_POINTS][["requests"]], values)
    at = data.index[min(values)]
    with pytest.raises(DataError, match=re.escape(f"metric 'requests' has the value {shown} at {at} in the training data, beyond ±1e+150")):
        LSTMAutoencoderDetector(TINY).fit(data, progress=False)


def test_a_series_times_1e300_is_refused_but_times_1e40_trains_and_flags_a_spike(series: pd.DataFrame) -> None:
    history = series.iloc[:HISTORY_POINTS][["requests"]]
    with pytest.raises(DataError, match="metric 'requests' has the value .*e[+]302 at .*beyond ±1e[+]150"):
        LSTMAutoencoderDetector(TINY).fit(history * 1e300, progress=False)
    det = LSTMAutoencoderDetector(TINY).fit(history * 1e40, progress=False)
    data = later(series) * 1e40
    data.iloc[SPIKE, 0] *= 50
    scores = det.score(data, context=history * 1e40)
    assert scores.flags.iloc[SPIKE] and np.isfinite(scores.score).all()


def test_a_tampered_scaler_with_an_infinite_scale_is_refused() -> None:
    with pytest.raises(DataError, match="invalid scaler parameters"):
        Scaler.from_dict({"kind": "minmax", "center": [0.0], "scale": [float("inf")]})
    with pytest.raises(DataError, match="invalid scaler parameters"):
        Scaler.from_dict({"kind": "minmax", "center": [float("-inf")], "scale": [1.0]})


def test_cli_train_refuses_values_near_the_float64_limit_in_one_line(series: pd.DataFrame, tmp_path: Path) -> None:
    data = csv(with_values(series.iloc[:HISTORY_POINTS][["requests"]], {100: 1e308, 200: -1e308}), tmp_path / "x.csv")
    before = snapshot(tmp_path)
    outcome = run_cli(["train", str(data), "--out", str(tmp_path / "model"), *TINY_SETTINGS])
    assert_one_line_error(outcome, "metric 'requests'", "1e+308", "2026-01-05 08:20:00")
    assert snapshot(tmp_path) == before


def test_cli_detect_flags_a_value_near_1e308(
    detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame, tmp_path: Path
) -> None:
    model = detectors["baseline"].save(tmp_path / "model")
    data = later(series)
    data.iloc[SPIKE, 0] = 1.7e308
    outcome = run_cli(["detect", str(csv(data, tmp_path / "x.csv")), "--model", str(model),
                       "--context", str(csv(series.iloc[:HISTORY_POINTS][["requests"]], tmp_path / "ctx.csv")),
                       "--out", str(tmp_path / "out")])  # fmt: skip
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    events = pd.read_csv(tmp_path / "out" / "events.csv", parse_dates=["start", "end"])
    assert event_at(events, data.index[SPIKE]), events


# -- item 9: data on another interval ------------------------------------------------------------


def resampled(series: pd.DataFrame, freq: str, metrics: list[str]) -> pd.DataFrame:
    """The scored days' points every ``freq`` (the first of each), as a collector on that interval sends them."""
    return series.iloc[HISTORY_POINTS:][metrics].resample(freq).first().dropna(how="all")


def every(series: pd.DataFrame, freq: str, n: int) -> pd.DataFrame:
    """``n`` of the scored days' values, one every ``freq``: a collector on another interval."""
    index = pd.date_range(series.index[HISTORY_POINTS], periods=n, freq=freq, name="timestamp")
    return pd.DataFrame({"requests": series["requests"].to_numpy()[HISTORY_POINTS : HISTORY_POINTS + n]}, index=index)


@pytest.mark.parametrize("freq", ["15min", "1h", "6min", "1D"])
def test_data_coarser_than_the_model_is_refused_naming_both_intervals(
    detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame, freq: str
) -> None:
    with pytest.raises(DataError, match=rf"metric 'requests' in the data is sampled every {freq}, coarser than the model's 5min grid.*allow_resample=True"):
        detectors["spot"].score(every(series, freq, 60))


def test_jitter_and_an_outage_are_not_another_interval(
    detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    data = later(series)
    jitter = np.random.default_rng(0).integers(-25, 25, len(data))
    data.index = data.index + pd.to_timedelta(jitter, unit="s")
    data = data.drop(data.index[100:136])  # a three-hour outage
    with caplog.at_level(logging.WARNING, logger="anomaly.core.detector"):
        scores = detectors["spot"].score(data)
    assert len(scores.score) == len(later(series)) and not caplog.records


def test_allowing_it_scores_with_a_warning(
    detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    data = resampled(series, "15min", ["requests"])
    with caplog.at_level(logging.WARNING, logger="anomaly.core.detector"):
        scores = detectors["spot"].score(data, allow_resample=True)
    assert len(scores.score) == 3 * len(data) - 2  # on the model's 5-minute grid
    assert any("every 15min, coarser than the model's 5min grid" in r.getMessage() for r in caplog.records)


def test_finer_data_is_scored_with_a_warning(
    detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame, caplog: pytest.LogCaptureFixture
) -> None:
    coarse = later(series)
    fine = coarse.resample("1min").interpolate()
    with caplog.at_level(logging.WARNING, logger="anomaly.core.detector"):
        scores = detectors["spot"].score(fine)
    assert len(scores.score) == len(coarse)
    assert any("every 1min, finer than the model's 5min grid" in r.getMessage() for r in caplog.records)


def test_one_coarse_metric_among_several_is_named(detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame) -> None:
    data = series.iloc[HISTORY_POINTS:].copy()
    data.loc[data.index.minute != 0, "cpu"] = np.nan  # cpu only on the hour, requests every 5 minutes
    with pytest.raises(DataError, match="metric 'cpu' in the data is sampled every 1h"):
        detectors["two"].score(data)


def test_coarse_context_is_refused_too(detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame) -> None:
    context = series.iloc[:HISTORY_POINTS][["requests"]].resample("1h").first()
    with pytest.raises(DataError, match="metric 'requests' in the context is sampled every 1h"):
        detectors["spot"].score(later(series), context=context)


def test_a_metric_frame_on_another_grid_is_not_taken_as_the_models(
    detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame
) -> None:
    frame = normalise(resampled(series, "1h", ["requests"]))
    assert isinstance(frame, MetricFrame) and frame.freq == pd.Timedelta("1h")
    with pytest.raises(DataError, match="sampled every 1h, coarser than the model's 5min grid"):
        detectors["spot"].score(frame)


def test_cli_detect_refuses_hourly_data_for_a_5_minute_model_unless_allowed(
    detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame, tmp_path: Path
) -> None:
    model = detectors["spot"].save(tmp_path / "model")
    data = csv(resampled(series, "1h", ["requests"]).iloc[:40], tmp_path / "hourly.csv")
    before = snapshot(tmp_path)
    refused = run_cli(["detect", str(data), "--model", str(model), "--out", str(tmp_path / "out")])
    assert_one_line_error(refused, "'requests'", "every 1h", "model's 5min grid", "--allow-resample")
    assert snapshot(tmp_path) == before
    allowed = run_cli(["detect", str(data), "--model", str(model), "--out", str(tmp_path / "out"), "--allow-resample"])
    assert allowed.returncode == 0, allowed.stderr[-2000:]
    assert "coarser than the model's 5min grid" in allowed.stderr
    assert (tmp_path / "out" / "scores.csv").is_file()


def test_the_score_job_fails_the_group_with_the_reason_and_writes_nothing(
    detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame, tmp_path: Path
) -> None:
    workspace, registry = tmp_path / "ws", tmp_path / "models"
    published = ModelRegistry(registry).publish(detectors["spot"], "requests")
    ModelRegistry(registry).promote("requests", published.version)
    stored = pd.concat([series.iloc[:HISTORY_POINTS][["requests"]], resampled(series, "15min", ["requests"])])
    stored = stored[(stored.index.minute % 15 == 0)]  # the source sends every 15 minutes
    RawStore(workspace / STORE).append(long_points(stored))
    before = snapshot(workspace)
    [result] = score_groups([Group("requests", ("requests",))], workspace, registry)
    assert result["status"] == "failed"
    assert "DataError: metric 'requests' in the store (group 'requests') is sampled every 15min" in result["message"]
    assert not (workspace / SCORES).exists()
    assert {k: v for k, v in snapshot(workspace).items() if not k.startswith("runs/")} == before
    allowed = score_group(Group("requests", ("requests",)), workspace, registry, allow_resample=True)
    assert allowed["status"] == "scored" and allowed["points"] > 0



def test_a_retrain_after_the_source_changed_its_interval_is_not_blocked(
    detectors: dict[str, LSTMAutoencoderDetector], series: pd.DataFrame, tmp_path: Path
) -> None:
    """The daily retrain compares the new model with production on the newest day, now 15-minute data."""
    from anomaly.ops.jobs import train_group

    workspace, registry = tmp_path / "ws", tmp_path / "models"
    published = ModelRegistry(registry).publish(detectors["spot"], "requests")
    ModelRegistry(registry).promote("requests", published.version)
    newest = series.iloc[HISTORY_POINTS:][["requests"]]
    stored = pd.concat([series.iloc[:HISTORY_POINTS][["requests"]], newest[newest.index.minute % 15 == 0]])
    RawStore(workspace / STORE).append(long_points(stored))
    result = train_group(Group("requests", ("requests",)), workspace, registry, TINY, validation="1D")
    assert result["version"] == "000002"
    assert result["holdout_error"] is not None

# -- item 10: irregular series, and one file never aborts a benchmark ---------------------------

# the default window: short windows find gap-free stretches even in irregular data
IRREGULAR_CONFIG = TINY.replace(window={"size": 48})


def irregular(n: int = 1500, seed: int = 1, gap_share: float = 0.2) -> pd.DataFrame:
    """A real-looking irregular series: ``timestamp`` (naive UTC, whole minutes) and ``value``.

    Spacing is 10 minutes (9 or 11 one time in ten), with a fifth of the
    steps a 20-60 minute gap and four gaps of 2-8 hours; the values follow
    a daily cycle with noise. Its median spacing is 10 minutes, and gaps of
    more than 40 minutes (beyond the default fill of 3 points) come every 20
    points or so, so few 48-point windows are gap-free.
    """
    rng = np.random.default_rng(seed)
    steps = rng.choice([9, 10, 11], n - 1, p=[0.1, 0.8, 0.1]).astype(float)
    gappy = rng.random(n - 1) < gap_share
    steps[gappy] = rng.integers(20, 61, int(gappy.sum()))
    steps[rng.choice(n - 1, 4, replace=False)] = rng.integers(120, 480, 4)
    stamps = pd.Timestamp("2026-01-01") + pd.to_timedelta(np.concatenate(([0.0], np.cumsum(steps))), unit="min")
    days = np.asarray((stamps - stamps[0]) / pd.Timedelta("1D"))
    values = 50 + 10 * np.sin(2 * np.pi * days) + rng.normal(0, 1, n)
    return pd.DataFrame({"timestamp": stamps, "value": values})


def test_an_irregular_series_trains_where_no_window_is_gap_free() -> None:
    head = irregular().iloc[:225]  # the stream protocol's first fit: 15% of the file
    frame = normalise(head, IRREGULAR_CONFIG.preprocess)
    assert frame.freq == pd.Timedelta("10min") and frame.missing.to_numpy().sum() > 40
    det = LSTMAutoencoderDetector(IRREGULAR_CONFIG).fit(head, progress=False)
    assert np.isfinite(det.history_.train_loss).all() and det.threshold_ > 0
    scores = det.score(irregular().iloc[225:600], context=head)
    unobserved = scores.values.isna().to_numpy()[:, 0]
    assert np.isnan(scores.score.to_numpy()[unobserved]).all()  # missing points are never scored
    assert np.isfinite(scores.score.to_numpy()[~unobserved]).mean() > 0.9


def test_the_stream_protocol_runs_an_irregular_series() -> None:
    series = irregular(600).assign(timestamp=lambda f: f["timestamp"].dt.tz_localize("UTC"))  # no gap-free first fit
    detection = detect_stream(series, IRREGULAR_CONFIG)
    assert len(detection.score) == len(detection.grid) and np.isfinite(detection.score).all()


def write_corpus(root: Path, files: dict[str, str]) -> Path:
    """A NAB-layout corpus of ``{"category/name.csv": CSV text}``, no anomaly windows."""
    for key, text in files.items():
        (root / "data" / key).parent.mkdir(parents=True, exist_ok=True)
        (root / "data" / key).write_text(text)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    (root / "labels" / "combined_windows.json").write_text(json.dumps({key: [] for key in files}))
    return root


def nab_csv(frame: pd.DataFrame) -> str:
    return frame.assign(timestamp=frame["timestamp"].dt.strftime("%Y-%m-%d %H:%M:%S")).to_csv(index=False)


def regular(n: int = 400) -> pd.DataFrame:
    stamps = pd.date_range("2026-01-01", periods=n, freq="5min")
    return pd.DataFrame({"timestamp": stamps, "value": 10 + np.sin(np.arange(n) * 2 * np.pi / 48)})


BROKEN = {
    "bad/too_short.csv": "timestamp,value\n2026-01-01 00:00:00,1\n2026-01-01 00:05:00,2\n2026-01-01 00:10:00,3\n",
    "bad/garbage_value.csv": nab_csv(regular()).replace("\n2026-01-01 01:00:00,", "\n2026-01-01 01:00:00,abc", 1),
    "bad/header_only.csv": "timestamp,value\n",
    "bad/one_timestamp.csv": "timestamp,value\n" + "2026-01-01 00:00:00,1\n" * 100,
    "bad/no_value_column.csv": "timestamp,reading\n2026-01-01 00:00:00,1\n",
}


def test_a_benchmark_records_failed_files_and_runs_the_others(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", {**BROKEN, "good/irregular.csv": nab_csv(irregular(600)), "good/regular.csv": nab_csv(regular())})
    before = snapshot(corpus)
    summary = Benchmark(corpus, tmp_path / "out", "stream", IRREGULAR_CONFIG, jobs=1).run(progress=False)
    assert summary["files"] == 7 and summary["failed"] == len(BROKEN)
    assert set(summary["failures"]) == set(BROKEN) and set(summary["per_file"]) == {"good/irregular.csv", "good/regular.csv"}
    for failure in summary["failures"].values():
        assert failure["error"] == "DataError" and "\n" not in failure["message"] and failure["message"]
    assert summary["categories"]["bad"]["failed"] == 5 and summary["overall"]["failed"] == 5
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert written["failures"] == summary["failures"]
    markdown = (tmp_path / "out" / "summary.md").read_text()
    assert "| **overall** | 7 (5 failed) |" in markdown and "`bad/garbage_value.csv`: DataError:" in markdown
    assert not (tmp_path / "out" / "bad").exists()  # no result: a rerun tries them again
    assert snapshot(corpus) == before


def test_cli_benchmark_carries_on_past_failed_files_in_parallel(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path / "corpus", {"bad/too_short.csv": BROKEN["bad/too_short.csv"], "good/regular.csv": nab_csv(regular())})
    # the spawned workers inherit the address-space cap, and torch's CPU kernels want more than 2 GB of it
    outcome = run_cli(["benchmark", str(corpus), "--out", str(tmp_path / "out"), "--jobs", "2", "--no-progress",
                       "--protocol", "stream", *TINY_SETTINGS], timeout_s=120, memory_mb=4096)  # fmt: skip
    assert outcome.returncode == 0, outcome.stderr[-2000:]
    assert "| **overall** | 2 (1 failed) |" in outcome.stdout
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["failed"] == 1 and list(summary["per_file"]) == ["good/regular.csv"]
    assert summary["failures"]["bad/too_short.csv"]["error"] == "DataError"
