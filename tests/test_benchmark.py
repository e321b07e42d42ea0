"""The NAB-layout benchmark: corpus loading, per-file outputs, both protocols, summary, resume, parallel runs, CLI.

Every test builds its own tiny corpus in a temporary folder (sine waves with
an injected spike or level shift inside a labelled window) and runs a tiny
model, so the assertions are structural: they hold whatever the model learns.
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch

from anomaly.evaluation import benchmark
from anomaly.evaluation.benchmark import (
    Benchmark,
    BenchmarkError,
    CorpusFile,
    FileResult,
    detect_stream,
    detector_of,
    load_corpus,
    read_series,
    run_file,
)
from anomaly.cli import main
from anomaly.core.config import DetectorConfig, EventConfig, ModelConfig, WindowConfig
from anomaly.core.events import AlertTracker
from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.errors import DataError
from anomaly.evaluation.metrics import nab_score, probation_length, score_events
from anomaly.core.model import LSTMAutoencoder
from anomaly.core.reconstruction import reconstruct
from tests.test_alerts import STEP, scores
from anomaly.core.windows import sliding_windows
from tests.conftest import TINY

# A tiny model with every setting the assertions lean on pinned, so they hold whatever the
# defaults become: a 0.98 quantile threshold flags about 2% of the training points.
OVERRIDES: dict[str, dict[str, Any]] = {
    "window": {"size": 16, "score_stride": 4, "max_train_windows": 20_000, "aggregate": "median"},
    "model": {"hidden_size": 16, "latent_size": 8, "num_layers": 1, "dropout": 0.0},
    "training": {"epochs": 2, "batch_size": 64, "learning_rate": 0.01, "patience": 2, "schedule": "constant"},
    "scoring": {"error": "abs", "smoothing_span": 6, "smoothing_time": None, "baseline": 0},
    "threshold": {"method": "quantile", "quantile": 0.98, "k": 4.0},
    "events": {"padding": 0, "merge_gap": 12, "min_length": 1, "prune": 0.0},
}
CONFIG = TINY.replace(**OVERRIDES)
SETTINGS = [
    arg
    for section, values in OVERRIDES.items()
    for key, value in values.items()
    for arg in ("--set", f"{section}.{key}={'null' if value is None else value}")
]
START = pd.Timestamp("2026-01-01 00:00:00")
STEP = pd.Timedelta("5min")
STAMP = "%Y-%m-%d %H:%M:%S"
KEYS = ["cat_a/shift.csv", "cat_a/spike.csv", "cat_b/clean.csv"]  # the standard corpus, sorted


# -- building corpora ---------------------------------------------------------------------------


def sine(n: int, seed: int = 0) -> pd.DataFrame:
    """``n`` naive (UTC) 5-minute timestamps and a daily-ish sine with noise."""
    rng = np.random.default_rng(seed)
    values = 10 + np.sin(np.arange(n) * 2 * np.pi / 48) + rng.normal(0, 0.1, n)
    return pd.DataFrame({"timestamp": START + STEP * np.arange(n), "value": values})


def spiky(n: int = 480, seed: int = 0) -> pd.DataFrame:
    """A spike at steps 330-335, a 2-step gap (filled), a 10-step gap (missing) and a duplicated timestamp."""
    frame = sine(n, seed)
    frame.loc[330:335, "value"] += 8.0  # rows are steps until the gaps and the duplicate go in
    duplicate = frame.loc[[150]].assign(value=lambda f: f.value + 0.05)
    frame = pd.concat([frame.loc[:150], duplicate, frame.loc[151:]])
    return frame.drop(index=[200, 201, *range(260, 270)]).reset_index(drop=True)


def shifted(n: int = 440, seed: int = 1) -> pd.DataFrame:
    """A level shift of +5 at steps 300-339."""
    frame = sine(n, seed)
    frame.loc[300:339, "value"] += 5.0
    return frame


def window(first: int, last: int) -> list[str]:
    """Steps ``first``..``last`` (from START) as a NAB label window."""
    return [(START + STEP * first).strftime(STAMP), (START + STEP * last).strftime(STAMP)]


def write_csv(path: Path, frame: pd.DataFrame) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.assign(timestamp=frame.timestamp.dt.strftime(STAMP)).to_csv(path, index=False)
    return path


def write_corpus(root: Path, files: dict[str, tuple[pd.DataFrame, list[list[str]]]], labels: Any = None) -> Path:
    """``root/data/<key>`` for each ``key`` (``category/file.csv``) and the labels (theirs, or ``labels``)."""
    for key, (frame, _) in files.items():
        write_csv(root / "data" / key, frame)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    document = {key: windows for key, (_, windows) in files.items()} if labels is None else labels
    text = document if isinstance(document, str) else json.dumps(document)
    (root / "labels" / "combined_windows.json").write_text(text)
    return root


def standard_corpus(root: Path) -> Path:
    """Two labelled files in cat_a (a spike, a level shift) and one clean file in cat_b (no windows)."""
    return write_corpus(
        root,
        {
            "cat_a/spike.csv": (spiky(), [window(320, 345)]),
            "cat_a/shift.csv": (shifted(), [window(295, 345)]),
            "cat_b/clean.csv": (sine(400, seed=2), []),
        },
    )


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    """Every file under ``folder`` with its content and modification time."""
    return {str(p.relative_to(folder)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.rglob("*")) if p.is_file()}


def per_file(summary: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The summary's per-file figures without the timings."""
    return {key: {k: v for k, v in row.items() if k != "seconds"} for key, row in summary["per_file"].items()}


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standard_corpus(tmp_path_factory.mktemp("corpus"))


@pytest.fixture(scope="module")
def batch_run(corpus: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """One finished batch benchmark of the corpus, run in this process: its output folder and summary."""
    out = tmp_path_factory.mktemp("batch") / "out"
    summary = Benchmark(corpus, out, "batch", CONFIG, jobs=1).run(progress=False)
    return out, summary


def outputs(out: Path, key: str) -> tuple[pd.DataFrame, pd.DataFrame, dict[str, Any]]:
    """A file's events.csv, scores.csv and result.json."""
    category, name = key.split("/")
    stem = out / category / Path(name).stem
    events = pd.read_csv(Path(f"{stem}.events.csv"))
    scores = pd.read_csv(Path(f"{stem}.scores.csv"))
    return events, scores, json.loads(Path(f"{stem}.result.json").read_text())


def utc(stamps: pd.Series) -> pd.DatetimeIndex:
    return pd.DatetimeIndex(pd.to_datetime(stamps, format=STAMP)).tz_localize("UTC")


# -- load_corpus and read_series -------------------------------------------------------------------


def test_load_corpus_lists_files_sorted_by_category_and_name(tmp_path: Path) -> None:
    frame = sine(40)
    files = {key: (frame, []) for key in ["zeta/b.csv", "alpha/z.csv", "zeta/a.csv", "alpha/m.csv"]}
    corpus = write_corpus(tmp_path, files)
    found = load_corpus(corpus)
    assert [f.key for f in found] == ["alpha/m.csv", "alpha/z.csv", "zeta/a.csv", "zeta/b.csv"]
    first = found[0]
    assert (first.category, first.name, first.stem, first.path) == ("alpha", "m.csv", "m", corpus / "data" / "alpha" / "m.csv")


def test_load_corpus_keeps_only_files_matching_any_pattern(tmp_path: Path) -> None:
    frame = sine(40)
    corpus = write_corpus(tmp_path, {key: (frame, []) for key in ["aws/cpu.csv", "aws/net.csv", "tweets/cpu.csv", "art/x.csv"]})
    assert [f.key for f in load_corpus(corpus, ["aws/*"])] == ["aws/cpu.csv", "aws/net.csv"]
    assert [f.key for f in load_corpus(corpus, ["*/cpu.csv"])] == ["aws/cpu.csv", "tweets/cpu.csv"]
    assert [f.key for f in load_corpus(corpus, ["tweets/*", "art/*"])] == ["art/x.csv", "tweets/cpu.csv"]


def test_label_windows_come_back_as_utc_timestamps(tmp_path: Path) -> None:
    frame = sine(40)
    labels = {"a/f.csv": [["2026-01-01 01:00:00", "2026-01-01 02:00:00"], ["2026-01-01 05:00:00+02:00", "2026-01-01 04:00:00+01:00"]]}
    corpus = write_corpus(tmp_path, {"a/f.csv": (frame, [])}, labels=labels)
    (file,) = load_corpus(corpus)
    assert all(str(t.tzinfo) == "UTC" for pair in file.windows for t in pair)
    assert file.windows == (
        (pd.Timestamp("2026-01-01 01:00", tz="UTC"), pd.Timestamp("2026-01-01 02:00", tz="UTC")),
        (pd.Timestamp("2026-01-01 03:00", tz="UTC"), pd.Timestamp("2026-01-01 03:00", tz="UTC")),
    )


def test_a_corpus_without_a_data_folder_is_refused_by_name(tmp_path: Path) -> None:
    (tmp_path / "labels").mkdir()
    with pytest.raises(BenchmarkError, match="has no data/ folder") as info:
        load_corpus(tmp_path)
    assert repr(str(tmp_path)) in str(info.value)


def test_a_data_file_missing_from_the_labels_is_refused(tmp_path: Path) -> None:
    frame = sine(40)
    corpus = write_corpus(tmp_path, {"a/listed.csv": (frame, []), "a/forgotten.csv": (frame, [])}, labels={"a/listed.csv": []})
    with pytest.raises(BenchmarkError) as info:
        load_corpus(corpus)
    message = str(info.value)
    assert "'a/forgotten.csv' has no entry in labels/combined_windows.json" in message and "use []" in message


def test_labels_that_are_not_json_are_refused(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path, {"a/f.csv": (sine(40), [])}, labels='{"a/f.csv": [')
    with pytest.raises(BenchmarkError, match="are not valid JSON") as info:
        load_corpus(corpus)
    assert str(corpus / "labels" / "combined_windows.json") in str(info.value)


def test_a_window_ending_before_it_starts_is_refused(tmp_path: Path) -> None:
    labels = {"a/f.csv": [["2026-01-01 02:00:00", "2026-01-01 01:00:00"]]}
    corpus = write_corpus(tmp_path, {"a/f.csv": (sine(40), [])}, labels=labels)
    with pytest.raises(BenchmarkError) as info:
        load_corpus(corpus)
    message = str(info.value)
    assert "'a/f.csv'" in message and "window ending before it starts" in message
    assert "2026-01-01 02:00:00+00:00" in message and "2026-01-01 01:00:00+00:00" in message


def test_no_file_matching_the_patterns_is_an_error_naming_them(tmp_path: Path) -> None:
    corpus = write_corpus(tmp_path, {"a/f.csv": (sine(40), [])})
    with pytest.raises(BenchmarkError) as info:
        load_corpus(corpus, ["nope/*", "none*"])
    message = str(info.value)
    assert "no data/<category>/<file>.csv files matching 'nope/*', 'none*'" in message and repr(str(corpus)) in message


def test_read_series_names_the_file_missing_a_value_column(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("timestamp,reading\n2026-01-01 00:00:00,1\n")
    with pytest.raises(DataError) as info:
        read_series(path)
    assert str(info.value) == f"{str(path)!r} has no 'value' column (columns: timestamp, reading)"


def test_read_series_names_the_file_value_and_row_of_a_non_numeric_value(tmp_path: Path) -> None:
    path = tmp_path / "f.csv"
    path.write_text("timestamp,value\n2026-01-01 00:00:00,1\n2026-01-01 00:05:00,2\n2026-01-01 00:10:00,oops\n")
    with pytest.raises(DataError) as info:
        read_series(path)
    assert str(info.value) == f"{str(path)!r} has a non-numeric value 'oops' at row 4"


def test_read_series_parses_naive_timestamps_as_utc_in_file_order(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "f.csv", sine(5).iloc[[2, 0, 1]])
    series = read_series(path)
    assert list(series.columns) == ["timestamp", "value"] and series["value"].dtype == np.float64
    assert list(series.timestamp) == [pd.Timestamp(START + STEP * i, tz="UTC") for i in (2, 0, 1)]


# -- one file, batch protocol -----------------------------------------------------------------------


def test_batch_writes_events_scores_and_result_per_file(batch_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = batch_run
    for key in KEYS:
        events, scores, result = outputs(out, key)
        assert list(events.columns) == ["start", "end", "score"]
        assert list(scores.columns) == ["timestamp", "value", "anomaly_score", "flag", "label"]
        assert result["key"] == key and result["version"] == 1 and result["events"] == len(events)
    assert len(outputs(out, "cat_a/spike.csv")[0]) >= 1, "a 0.98 quantile threshold on the training data flags something"


def test_scores_csv_has_one_row_per_input_row_in_input_order(corpus: Path, batch_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = batch_run
    for key in KEYS:
        source = pd.read_csv(corpus / "data" / key)
        _, scores, result = outputs(out, key)
        assert result["rows"] == len(source) == len(scores)
        assert list(scores.timestamp) == list(source.timestamp)
        np.testing.assert_array_equal(scores.value.to_numpy(), source.value.to_numpy())
    spike = pd.read_csv(corpus / "data" / "cat_a" / "spike.csv")
    assert spike.timestamp.duplicated().sum() == 1 and len(spike) == 480 + 1 - 12, "the irregular file is as built"


def test_scores_are_bounded_and_flags_and_labels_are_zero_or_one(batch_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = batch_run
    for key in KEYS:
        _, scores, _ = outputs(out, key)
        assert scores.anomaly_score.between(0.0, 1.0).all() and scores.anomaly_score.notna().all()
        assert set(scores.flag) <= {0, 1} and set(scores.label) <= {0, 1}


def test_batch_labels_mark_the_first_input_row_of_each_event_only(batch_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = batch_run
    for key in KEYS:
        events, scores, _ = outputs(out, key)
        firsts = {int(np.flatnonzero(scores.timestamp.to_numpy() == start)[0]) for start in events.start}
        assert set(np.flatnonzero(scores.label.to_numpy() == 1).tolist()) == firsts
        assert len(firsts) == len(events), "every event starts on an input row"


def test_labelled_rows_are_flagged_and_flagged_rows_lie_inside_an_event(batch_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = batch_run
    for key in KEYS:
        events, scores, _ = outputs(out, key)
        assert (scores.flag[scores.label == 1] == 1).all()
        stamps = utc(scores.timestamp)
        inside = np.zeros(len(scores), dtype=bool)
        for start, end in zip(utc(events.start), utc(events.end)):
            inside |= (stamps >= start) & (stamps <= end)
        np.testing.assert_array_equal(scores.flag.to_numpy() == 1, inside)


def test_result_event_scores_are_the_overlap_rule_on_events_csv(corpus: Path, batch_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = batch_run
    for file in load_corpus(corpus):
        events, _, result = outputs(out, file.key)
        expected = score_events(list(file.windows), list(zip(utc(events.start), utc(events.end))))
        assert result["event_scores"] == {"tp": expected.tp, "fp": expected.fp, "fn": expected.fn}
        assert expected.tp + expected.fn == len(file.windows)


def test_result_nab_score_is_nab_of_the_label_column(corpus: Path, batch_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = batch_run
    for file in load_corpus(corpus):
        _, scores, result = outputs(out, file.key)
        expected = nab_score(utc(scores.timestamp), scores.label.to_numpy() == 1, list(file.windows))
        assert result["nab"]["raw"] == pytest.approx(expected.raw, abs=1e-12)
        assert (result["nab"]["tp"], result["nab"]["fp"], result["nab"]["fn"]) == (expected.tp, expected.fp, expected.fn)
        assert result["nab"]["windows"] == expected.windows == len(file.windows)


# -- stream protocol -----------------------------------------------------------------------------


def stream_scores(tmp_path: Path, name: str, frame: pd.DataFrame, config: DetectorConfig = CONFIG) -> pd.DataFrame:
    """scores.csv of a stream run of ``frame`` as ``s/<name>.csv``."""
    path = write_csv(tmp_path / "data" / "s" / f"{name}.csv", frame)
    run_file(CorpusFile("s", f"{name}.csv", path, ()), "stream", config, tmp_path / "out")
    return pd.read_csv(tmp_path / "out" / "s" / f"{name}.scores.csv")


# Scores in sigmas above a trailing baseline, as the defaults measure: the baseline is causal too.
BASELINED = CONFIG.replace(scoring={"baseline": 60}, threshold={"method": "fixed", "k": 4.0})


@pytest.mark.parametrize("config", [CONFIG, BASELINED], ids=["fitted-threshold", "baseline"])
def test_stream_scores_and_alerts_never_depend_on_later_points(tmp_path: Path, config: DetectorConfig) -> None:
    original = shifted()
    change = int(0.8 * len(original))
    changed = original.copy()
    changed.loc[change:, "value"] = 1000.0 + 37.0 * np.arange(len(original) - change)
    before = stream_scores(tmp_path, "original", original, config)
    after = stream_scores(tmp_path, "changed", changed, config)
    past = slice(0, change)
    pd.testing.assert_series_equal(before.anomaly_score[past], after.anomaly_score[past])
    pd.testing.assert_series_equal(before.label[past], after.label[past])
    # A flag marks membership of an event, and a run starting after the change may merge
    # back over a gap of up to merge_gap points; further back nothing may differ.
    settled = slice(0, change - CONFIG.events.merge_gap)
    pd.testing.assert_series_equal(before.flag[settled], after.flag[settled])
    assert not before.anomaly_score[change:].equals(after.anomaly_score[change:]), "the change reaches the detector"
    assert after.flag[change:].sum() >= 1, "the wild tail is flagged"


def test_stream_raises_no_flag_or_alert_in_the_probationary_period(tmp_path: Path) -> None:
    frame = sine(480, seed=5)
    frame.loc[30:35, "value"] += 8.0  # an obvious anomaly, but inside what the first model learns from
    scores = stream_scores(tmp_path, "early", frame)
    probation = probation_length(len(frame))
    assert probation == 72
    assert (scores.flag[:probation] == 0).all() and (scores.label[:probation] == 0).all()
    assert (scores.anomaly_score[:probation] > 0.5).any(), "scores there do cross the threshold"
    assert len(scores) == len(frame) and scores.anomaly_score.between(0.0, 1.0).all()


def test_a_short_files_points_the_first_model_learnt_from_never_alert(tmp_path: Path) -> None:
    frame = sine(150, seed=6)  # probation 22 rows, fewer than the 32-point window the first fit needs
    frame.loc[24:27, "value"] += 8.0
    config = CONFIG.replace(window={"size": 32})
    path = write_csv(tmp_path / "data" / "s" / "short.csv", frame)
    detection = detect_stream(read_series(path), config)
    assert probation_length(len(frame)) == 22
    assert not detection.flags[:32].any() and not detection.onsets[:32].any()
    assert len(detection.score) == 150


def test_the_daily_stream_refits_once_a_day_of_the_files_time_on_all_history_so_far(tmp_path: Path) -> None:
    """``stream-daily`` mirrors the daily train flow; ``stream`` refits when the history has grown by half."""
    frame = sine(3 * 288 + 40, seed=3)  # three days and a bit of 5-minute points
    path = write_csv(tmp_path / "data" / "s" / "daily.csv", frame)
    fits: dict[str, list[tuple[int, int]]] = {"stream": [], "stream-daily": []}
    for protocol, seen in fits.items():
        detector_of(protocol)(read_series(path), CONFIG, lambda det, _frame, stop, seen=seen: seen.append((det.training_data_["rows"], stop)))
    first = probation_length(len(frame))
    daily = fits["stream-daily"]
    assert [trained for trained, _ in daily] == [first + 288 * i for i in range(len(daily))]  # trained on all rows so far
    assert [stop for _, stop in daily] == [min(len(frame), first + 288 * (i + 1)) for i in range(len(daily))]
    assert daily[-1][1] == len(frame) and len(daily) == 3  # 135 probationary rows, then 288, 288 and the last 193
    assert [trained for trained, _ in fits["stream"]] == [135, 203, 305, 458, 687]  # grows by half each time


def test_stream_alerts_fall_on_the_first_point_of_each_event(tmp_path: Path) -> None:
    frame = shifted()
    frame.loc[380:, "value"] += 30.0
    path = write_csv(tmp_path / "data" / "s" / "f.csv", frame)
    detection = detect_stream(read_series(path), CONFIG)
    assert len(detection.events) >= 1
    starts = np.flatnonzero(np.diff(np.concatenate(([0], detection.flags.astype(np.int8)))) == 1)
    np.testing.assert_array_equal(np.flatnonzero(detection.onsets), starts)  # min_length 1: the alert is the run's first point
    assert list(detection.events.start) == list(detection.grid[starts])


def causal_runs(flags: np.ndarray, gap: int, min_length: int) -> list[tuple[int, int, int]]:
    """``(start, stop, alert)`` positions of the alerts the stream's tracker raises on ``flags``."""
    chunk = scores([2.0 if f else 0.0 for f in flags])
    alerts, _ = AlertTracker(EventConfig(merge_gap=gap, min_length=min_length), STEP).advance(chunk)
    position = chunk.score.index.get_loc
    return [(position(a), position(b) + 1, position(o)) for a, b, o in zip(alerts["start"], alerts["end"], alerts["onset"])]


@pytest.mark.parametrize(
    ("flags", "gap", "min_length", "runs"),
    [
        ("##..#...#", 2, 1, [(0, 5, 0), (8, 9, 8)]),  # a 2-point gap merges, a 3-point gap does not
        ("##..#...#", 3, 1, [(0, 9, 0)]),
        ("##..#...#", 0, 1, [(0, 2, 0), (4, 5, 4), (8, 9, 8)]),
        ("##..#...#", 0, 2, [(0, 2, 1)]),  # runs with fewer flagged points are dropped
        ("##..#...#", 2, 2, [(0, 5, 1)]),
        ("##..#...#", 2, 3, [(0, 5, 4)]),  # the alert is the third flagged point, not a gap point
        ("#..#.", 2, 3, []),  # two flags and a gap are not three flagged points
        ("...###....", 1, 3, [(3, 6, 5)]),
        ("...###....", 1, 4, []),
        ("..........", 5, 1, []),
        ("##########", 0, 10, [(0, 10, 9)]),
    ],
)
def test_causal_runs_merge_over_short_gaps_and_alert_on_the_min_length_th_flag(
    flags: str, gap: int, min_length: int, runs: list[tuple[int, int, int]]
) -> None:
    assert causal_runs(np.array([c == "#" for c in flags]), gap, min_length) == runs


def test_a_stream_alert_is_known_when_its_point_arrives() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        flags = rng.random(40) < 0.3
        gap, min_length = int(rng.integers(0, 4)), int(rng.integers(1, 4))
        for _, _, alert in causal_runs(flags, gap, min_length):
            known = causal_runs(flags[: alert + 1], gap, min_length)
            assert alert in [at for _, _, at in known], f"alert at {alert} needs later flags: {flags.astype(int)}"


# -- causal reconstruction -------------------------------------------------------------------------


def test_a_last_aggregate_score_does_not_change_when_later_points_do() -> None:
    frame = sine(400, seed=7).set_index("timestamp").tz_localize("UTC")
    config = CONFIG.replace(window={"aggregate": "last"})
    detector = LSTMAutoencoderDetector(config).fit(frame.iloc[:300], progress=False)
    change = 320
    changed = frame.copy()
    changed.iloc[change:, 0] = np.linspace(50.0, -50.0, len(frame) - change)
    before, after = detector.score(frame).score, detector.score(changed).score
    pd.testing.assert_series_equal(before.iloc[:change], after.iloc[:change])
    assert not np.allclose(before.iloc[change:], after.iloc[change:])


def test_causal_reconstruction_is_the_window_ending_at_each_point() -> None:
    torch.manual_seed(0)
    model = LSTMAutoencoder(2, ModelConfig(hidden_size=8, latent_size=4)).eval()
    size, n = 10, 57
    scaled = np.random.default_rng(0).normal(size=(n, 2))
    views = sliding_windows(scaled, size)
    out = reconstruct(model, scaled, WindowConfig(size=size, aggregate="last", score_batch_size=7), chunk_points=13)
    assert out.shape == (n, 2)
    with torch.inference_mode():
        windows = model(torch.from_numpy(np.ascontiguousarray(views, dtype=np.float32))).numpy()
    for t in range(n):
        start = max(t - size + 1, 0)
        position = t - start  # the window's last point once a full window ends at t
        np.testing.assert_allclose(out[t], windows[start][position], rtol=0, atol=1e-6)
    in_one_batch = reconstruct(model, scaled, WindowConfig(size=size, score_stride=5, aggregate="last"))
    np.testing.assert_allclose(in_one_batch, out, rtol=0, atol=1e-6)


# -- the whole corpus -------------------------------------------------------------------------------


def test_summary_sums_the_per_file_results(batch_run: tuple[Path, dict[str, Any]]) -> None:
    out, returned = batch_run
    summary = json.loads((out / "summary.json").read_text())
    results = {key: FileResult.from_dict(outputs(out, key)[2]) for key in KEYS}
    assert summary["protocol"] == "batch" and summary["files"] == 3 and set(summary["per_file"]) == set(KEYS)
    groups = {"cat_a": ["cat_a/shift.csv", "cat_a/spike.csv"], "cat_b": ["cat_b/clean.csv"]}
    assert list(summary["categories"]) == ["cat_a", "cat_b"]
    for row, keys in [*((summary["categories"][c], k) for c, k in groups.items()), (summary["overall"], KEYS)]:
        files = [results[k] for k in keys]
        for name in ("tp", "fp", "fn"):
            assert row[name] == sum(getattr(r.event_scores, name) for r in files)
        assert row["files"] == len(keys) and row["events"] == sum(r.events for r in files)
        assert row["windows"] == row["tp"] + row["fn"]
        assert row["nab_raw"] == pytest.approx(sum(r.nab.raw for r in files))
        assert row["median_seconds_per_file"] == pytest.approx(float(np.median([r.seconds for r in files])))
    assert summary["per_file"] == returned["per_file"]


def test_summary_precision_recall_and_f1_follow_from_the_counts(batch_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = batch_run
    summary = json.loads((out / "summary.json").read_text())
    for row in (summary["categories"]["cat_a"], summary["overall"]):
        tp, fp, fn = row["tp"], row["fp"], row["fn"]
        assert tp + fn == 2
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn)
        assert row["precision"] == pytest.approx(precision) and row["recall"] == pytest.approx(recall)
        assert row["f1"] == pytest.approx(2 * precision * recall / (precision + recall) if precision + recall else 0.0)
        assert 0.0 <= row["f1"] <= 1.0 and row["nab_score"] is not None and math.isfinite(row["nab_score"])


def test_a_category_without_windows_has_null_recall_f1_and_nab_score(batch_run: tuple[Path, dict[str, Any]]) -> None:
    out, _ = batch_run
    clean = json.loads((out / "summary.json").read_text())["categories"]["cat_b"]
    assert clean["windows"] == 0 and clean["tp"] == 0 and clean["fn"] == 0
    assert clean["recall"] is None and clean["f1"] is None and clean["nab_score"] is None
    assert clean["precision"] == (None if clean["fp"] == 0 else 0.0)


def test_summary_markdown_has_a_row_per_category_and_an_overall_row(batch_run: tuple[Path, dict[str, Any]]) -> None:
    out, summary = batch_run
    text = (out / "summary.md").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ") and not line.startswith("| category")]
    assert [row.split(" | ")[0] for row in rows] == ["| cat_a", "| cat_b", "| **overall**"]
    cat_a, cat_b, overall = (row.strip("| ").split(" | ") for row in rows)
    assert cat_a[1:7] == [str(summary["categories"]["cat_a"][k]) for k in ("files", "windows", "events", "tp", "fp", "fn")]
    assert cat_b[8:11] == ["–", "–", "–"], "recall, F1 and NAB score are undefined without windows"
    assert overall[1] == "3" and "batch protocol (3 files)" in text


# -- resuming and refusing to mix runs ---------------------------------------------------------------


@pytest.fixture
def finished(batch_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> Path:
    """A private copy of the finished batch run's output folder."""
    return Path(shutil.copytree(batch_run[0], tmp_path / "out"))


@pytest.fixture
def counted(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The keys of the files the benchmark runs (run_file still runs them)."""
    calls: list[str] = []

    def counting(file: CorpusFile, *args: Any) -> FileResult:
        calls.append(file.key)
        return run_file(file, *args)

    monkeypatch.setattr(benchmark, "run_file", counting)
    return calls


def test_a_second_run_does_not_redo_finished_files(corpus: Path, finished: Path, counted: list[str], batch_run: tuple[Path, dict[str, Any]]) -> None:
    before = {k: v for k, v in snapshot(finished).items() if not k.startswith("summary")}
    summary = Benchmark(corpus, finished, "batch", CONFIG, jobs=1).run(progress=False)
    assert counted == []
    assert {k: v for k, v in snapshot(finished).items() if not k.startswith("summary")} == before
    assert summary["per_file"] == batch_run[1]["per_file"]


def test_a_file_whose_result_was_deleted_is_redone(corpus: Path, finished: Path, counted: list[str]) -> None:
    (finished / "cat_b" / "clean.result.json").unlink()
    kept = snapshot(finished / "cat_a")
    on_file: list[str] = []
    summary = Benchmark(corpus, finished, "batch", CONFIG, jobs=1).run(progress=False, on_file=lambda r: on_file.append(r.key))
    assert counted == on_file == ["cat_b/clean.csv"]
    assert (finished / "cat_b" / "clean.result.json").is_file() and summary["files"] == 3
    assert snapshot(finished / "cat_a") == kept


@pytest.mark.parametrize(
    ("protocol", "change"),
    [("stream", {}), ("batch", {"training": {"epochs": 3}})],
    ids=["another-protocol", "another-config"],
)
def test_a_run_with_other_settings_refuses_the_folder_and_changes_nothing(
    corpus: Path, finished: Path, counted: list[str], protocol: str, change: dict[str, Any]
) -> None:
    before = snapshot(finished)
    with pytest.raises(BenchmarkError) as info:
        Benchmark(corpus, finished, protocol, CONFIG.replace(**change), jobs=1).run(progress=False)  # type: ignore[arg-type]
    message = str(info.value)
    assert repr(str(finished)) in message and "holds a 'batch' run of config" in message
    assert "use another --out" in message
    assert counted == [] and snapshot(finished) == before


def test_an_unknown_protocol_is_refused_before_anything_is_written(corpus: Path, tmp_path: Path) -> None:
    with pytest.raises(BenchmarkError, match="protocol must be one of batch, stream, stream-daily, got .online."):
        Benchmark(corpus, tmp_path / "out", "online", CONFIG).run(progress=False)  # type: ignore[arg-type]
    assert not (tmp_path / "out").exists()


# -- parallel ---------------------------------------------------------------------------------------


def test_parallel_files_give_the_same_results_as_one_at_a_time(corpus: Path, batch_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> None:
    out = tmp_path / "parallel"
    summary = Benchmark(corpus, out, "batch", CONFIG, jobs=2).run(progress=False)
    assert per_file(summary) == per_file(batch_run[1])
    for key in KEYS:
        events, _, _ = outputs(out, key)
        pd.testing.assert_frame_equal(events, outputs(batch_run[0], key)[0])


def test_a_worker_pays_torchs_lazy_start_up_before_its_first_file() -> None:
    # A fresh interpreter: in this one the tests' optimisers have imported torch._dynamo already.
    code = (
        "import sys, torch\n"
        "from anomaly.evaluation.benchmark import worker_init\n"
        "assert 'torch._dynamo' not in sys.modules\n"
        "worker_init(1)\n"
        "assert 'torch._dynamo' in sys.modules, 'not imported'\n"
        "assert torch.get_num_threads() == 1, torch.get_num_threads()\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr


# -- command line -----------------------------------------------------------------------------------


def test_cli_benchmark_prints_the_table_and_writes_the_summary(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    argv = ["benchmark", str(corpus), "--out", str(out), "--protocol", "batch", "--jobs", "1", "--no-progress", "--files", "cat_b/*", *SETTINGS]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "| category | files |" in printed and "| cat_b | 1 |" in printed and "| **overall** | 1 |" in printed
    assert f"summary: {out / 'summary.json'}  (1 files)" in printed
    summary = json.loads((out / "summary.json").read_text())
    assert summary["files"] == 1 and list(summary["per_file"]) == ["cat_b/clean.csv"]
    manifest = json.loads((out / "benchmark.json").read_text())
    assert manifest["protocol"] == "batch" and manifest["config"] == CONFIG.to_dict()


def test_cli_benchmark_without_a_data_folder_exits_2_naming_the_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", str(tmp_path), "--out", str(tmp_path / "out"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ") and "has no data/ folder" in err[0] and str(tmp_path) in err[0]


def test_cli_benchmark_refuses_negative_jobs(corpus: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["benchmark", str(corpus), "--out", str(tmp_path / "out"), "--jobs", "-1"]) == 2
    assert "error: --jobs must be 0 (one per core) or more, got -1" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
