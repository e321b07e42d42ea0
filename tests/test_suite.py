"""Tests for anomaly.evaluation.suite: the long-series suite, its NAB layout, and the reports on a benchmark run."""

from __future__ import annotations

import dataclasses
import json
import re
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly.core.data import infer_freq
from anomaly.errors import DataError
from anomaly.evaluation.corpus import BenchmarkError, load_corpus, read_series
from anomaly.evaluation.suite import (
    CATEGORIES,
    FAMILIES,
    HISTORY,
    PERSISTING,
    SUITE_KINDS,
    SuiteSeries,
    build_series,
    build_suite,
    false_alerts_per_week,
    incident_report,
    plan_suite,
    suite_counts,
    write_nab_layout,
)

SHORT = (16.0, 17.0)  # days: the history and room for an incident or two
T0 = pd.Timestamp("2026-01-05", tz="UTC")
STAMP = "%Y-%m-%d %H:%M:%S"


@lru_cache(maxsize=None)
def default_suite() -> tuple[SuiteSeries, ...]:
    """The default suite (100 series of 60-90 days), built once: it takes about a second."""
    return tuple(build_suite())


@lru_cache(maxsize=None)
def small_suite(seed: int = 0) -> tuple[SuiteSeries, ...]:
    return tuple(build_suite(6, seed, days=SHORT))


def windows(series: SuiteSeries) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    return [(i.start, i.end) for i in series.incidents]


# -- building ----------------------------------------------------------------------------------


def test_the_same_seed_builds_identical_series_and_another_seed_different_ones() -> None:
    again = build_suite(6, 0, days=SHORT)
    for a, b in zip(small_suite(0), again):
        assert (a.name, a.category, a.family, a.interval, a.incidents) == (b.name, b.category, b.family, b.interval, b.incidents)
        pd.testing.assert_frame_equal(a.frame, b.frame)
    other = small_suite(1)
    assert any(len(a.frame) != len(b.frame) or not np.array_equal(a.frame["value"], b.frame["value"]) for a, b in zip(small_suite(0), other))


def test_the_default_plan_has_100_series_half_clean_every_family_in_both_halves() -> None:
    plans = plan_suite()
    assert len(plans) == 100
    assert sum(p.category == "clean" for p in plans) == 50
    for category in CATEGORIES:
        counts = pd.Series([p.family for p in plans if p.category == category]).value_counts()
        assert set(counts.index) == set(FAMILIES) and counts.max() - counts.min() <= 1
    assert all(60.0 <= p.days <= 90.0 for p in plans)
    minutes = pd.Series([p.interval / pd.Timedelta(minutes=1) for p in plans])
    assert set(minutes) <= {1, 2, 5} and (minutes == 5).mean() > 0.5 and (minutes < 5).any()
    assert all(p.kinds == () for p in plans if p.category == "clean")
    assert all(1 <= len(p.kinds) <= 4 and len(set(p.kinds)) == len(p.kinds) for p in plans if p.category == "incidents")
    assert all(set(p.kinds) <= set(FAMILIES[p.family].kinds) for p in plans)


def test_the_default_suite_spans_60_to_90_days_and_every_kind_is_there() -> None:
    suite = default_suite()
    counts = suite_counts(suite)
    assert counts["series"] == {"clean": 50, "incidents": 50}
    assert 60.0 <= counts["days"]["min"] and counts["days"]["max"] <= 90.0
    assert set(counts["incidents"]) == set(SUITE_KINDS) and min(counts["incidents"].values()) >= 10
    assert all(s.incidents for s in suite if s.category == "incidents")
    assert all(not s.incidents for s in suite if s.category == "clean")


def test_incidents_start_after_the_history_never_overlap_and_lie_inside_the_data() -> None:
    for s in default_suite():
        stamps = s.frame["timestamp"]
        spans = sorted(windows(s))
        for start, end in spans:
            assert start >= stamps.iloc[0] + HISTORY
            assert end <= stamps.iloc[-1]
            assert ((stamps >= start) & (stamps <= end)).any(), (s.key, start, end)
        assert all(b[0] > a[1] for a, b in zip(spans, spans[1:])), s.key


def test_sizes_range_from_subtle_to_obvious() -> None:
    incidents = [i for s in default_suite() for i in s.incidents]
    spikes = [i.magnitude for i in incidents if i.kind == "spike"]
    shifts = [i.magnitude for i in incidents if i.kind == "level_shift"]
    assert min(spikes) < 4.0 and max(spikes) > 8.0
    assert min(shifts) < 2.0 and max(shifts) > 3.0
    onsets = [i.duration for i in incidents if i.kind in ("level_shift", "regime_change")]
    assert all(pd.Timedelta(minutes=55) <= d <= pd.Timedelta(hours=2, minutes=5) for d in onsets)


def test_names_say_nothing_about_the_family_or_the_category() -> None:
    suite = default_suite()
    assert all(re.fullmatch(r"s\d{3}", s.name) for s in suite)
    assert len({s.name for s in suite}) == len(suite)
    first = [s.category for s in sorted(suite, key=lambda s: s.name)[:20]]
    assert set(first) == set(CATEGORIES)  # the numbering is shuffled, not clean first


def test_values_keep_their_family_bounds_resolution_and_interval() -> None:
    for s in default_suite():
        family = FAMILIES[s.family]
        values = s.frame["value"].to_numpy()
        assert np.isfinite(values).all()
        assert values.min() >= family.lower and values.max() <= family.upper
        steps = values / family.quantum
        assert np.allclose(steps, np.round(steps), atol=1e-6), s.key
        assert infer_freq(pd.DatetimeIndex(s.frame["timestamp"])) == s.interval, s.key
        assert s.frame["timestamp"].is_monotonic_increasing


def test_some_series_have_gaps_and_the_gauges_have_jittered_stamps() -> None:
    suite = default_suite()
    gaps = [s for s in suite if (s.frame["timestamp"].diff() > 1.5 * s.interval).any()]
    assert any(s.family == "gauge" for s in gaps) and any(s.family != "gauge" for s in gaps)
    for s in suite:
        stamps = pd.DatetimeIndex(s.frame["timestamp"])
        off_grid = stamps != stamps.round(s.interval)
        assert off_grid.any() == (s.family == "gauge"), s.key


def test_incidents_change_the_series_only_in_their_windows_and_persisting_ones_after() -> None:
    plans = [p for p in plan_suite(12, 2, days=(20.0, 22.0)) if p.kinds]
    for plan in plans:
        hit = build_series(plan, 2)
        clean = build_series(dataclasses.replace(plan, kinds=()), 2)
        both = hit.frame.merge(clean.frame, on="timestamp", suffixes=("", "_clean"))
        changed = both["value"] != both["value_clean"]
        first = min(i.start for i in hit.incidents)
        assert not changed[both["timestamp"] < first].any(), plan.name
        for i in hit.incidents:
            inside = (both["timestamp"] >= i.start) & (both["timestamp"] <= i.end)
            after = both["timestamp"] > i.end
            assert changed[inside].any() or changed[after].any(), (plan.name, i)
            if i.kind in PERSISTING:
                assert changed[after].mean() > 0.5, (plan.name, i)


def test_bad_arguments_are_refused_naming_the_value() -> None:
    with pytest.raises(DataError, match="n_series must be an integer >= 2, got 1"):
        build_suite(1)
    with pytest.raises(DataError, match=r"days must satisfy 16 <= shortest <= longest <= 400, got \(10, 20\)"):
        plan_suite(4, days=(10, 20))
    with pytest.raises(DataError, match="seed must be an integer >= 0, got -1"):
        plan_suite(4, -1)


# -- the NAB layout ------------------------------------------------------------------------------


def test_the_nab_layout_round_trips_through_load_corpus(tmp_path: Path) -> None:
    suite = small_suite()
    write_nab_layout(suite, tmp_path)
    files = {f.key: f for f in load_corpus(tmp_path)}
    assert set(files) == {s.key for s in suite}
    kinds = json.loads((tmp_path / "labels" / "incidents.json").read_text())
    for s in suite:
        f = files[s.key]
        assert f.category == s.category and f.stem == s.name
        assert list(f.windows) == [(i.start.floor("s"), i.end.floor("s")) for i in s.incidents]
        assert [k["kind"] for k in kinds[s.key]] == [i.kind for i in s.incidents]
        back = read_series(f.path)
        assert back["timestamp"].equals(s.frame["timestamp"].dt.floor("s"))
        np.testing.assert_allclose(back["value"], s.frame["value"], atol=FAMILIES[s.family].quantum / 2)
    about = json.loads((tmp_path / "labels" / "series.json").read_text())
    assert {k: v["family"] for k, v in about.items()} == {s.key: s.family for s in suite}


def test_the_layout_refuses_a_folder_holding_another_corpus(tmp_path: Path) -> None:
    (tmp_path / "data" / "other").mkdir(parents=True)
    (tmp_path / "data" / "other" / "x.csv").write_text("timestamp,value\n")
    with pytest.raises(BenchmarkError, match="already holds data files of another corpus, such as 'other/x.csv'"):
        write_nab_layout(small_suite(), tmp_path)


# -- reading a benchmark run ---------------------------------------------------------------------


def hours(n: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(hours=n)


def write_file(root: Path, key: str, rows: int) -> None:
    path = root / "data" / key
    path.parent.mkdir(parents=True, exist_ok=True)
    stamps = pd.date_range(T0, periods=rows, freq="1h").strftime(STAMP)
    pd.DataFrame({"timestamp": stamps, "value": np.zeros(rows)}).to_csv(path, index=False)


def write_events(out: Path, key: str, spans: list[tuple[float, float]]) -> None:
    path = out / key.replace(".csv", ".events.csv")
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [{"start": hours(a).strftime(STAMP), "end": hours(b).strftime(STAMP), "score": 0.9} for a, b in spans]
    pd.DataFrame(rows, columns=["start", "end", "score"]).to_csv(path, index=False)


@pytest.fixture
def run(tmp_path: Path) -> tuple[Path, Path]:
    """A hand-made corpus of hourly files and a stream run over it.

    Stream probation is 15 % of the rows, so 197 rows score 168 (one week)
    and 395 rows score 336 (two weeks).
    """
    corpus, out = tmp_path / "corpus", tmp_path / "out"
    for key, rows in {"clean/a.csv": 197, "clean/b.csv": 395, "clean/c.csv": 197, "incidents/x.csv": 400, "incidents/y.csv": 400}.items():
        write_file(corpus, key, rows)
    incidents = {
        "incidents/x.csv": [("spike", 100, 100), ("spike", 150, 150), ("level_shift", 200, 202), ("drift", 300, 340)],
        "incidents/y.csv": [("dip", 100, 101)],
    }
    labels = {k: [] for k in ("clean/a.csv", "clean/b.csv", "clean/c.csv")}
    labels |= {k: [[hours(a).strftime(STAMP), hours(b).strftime(STAMP)] for _, a, b in v] for k, v in incidents.items()}
    kinds = {k: [{"kind": kind, "start": hours(a).strftime(STAMP), "end": hours(b).strftime(STAMP)} for kind, a, b in v] for k, v in incidents.items()}
    (corpus / "labels").mkdir()
    (corpus / "labels" / "combined_windows.json").write_text(json.dumps(labels))
    (corpus / "labels" / "incidents.json").write_text(json.dumps(kinds))
    out.mkdir()
    (out / "benchmark.json").write_text(json.dumps({"protocol": "stream"}))
    write_events(out, "clean/a.csv", [(2, 3), (40, 41), (100, 102), (190, 196)])  # the first is in the probation
    write_events(out, "clean/b.csv", [(300, 310)])
    write_events(out, "clean/c.csv", [])
    write_events(out, "incidents/x.csv", [(99, 101), (201, 260), (310, 315), (330, 348), (50, 52), (380, 381)])
    return out, corpus


def test_false_alerts_per_metric_week_on_hand_made_events(run: tuple[Path, Path]) -> None:
    report = false_alerts_per_week(*run)
    assert {k: (r["alerts"], r["weeks"], r["per_week"]) for k, r in report["per_series"].items()} == {
        "clean/a.csv": (3, 1.0, 3.0),
        "clean/b.csv": (1, 2.0, 0.5),
        "clean/c.csv": (0, 1.0, 0.0),
    }
    assert (report["series"], report["alerts"], report["weeks"], report["pooled"]) == (3, 4, 4.0, 1.0)
    assert report["mean"] == pytest.approx(3.5 / 3)
    assert (report["median"], report["p95"], report["max"]) == (0.5, pytest.approx(2.75), 3.0)
    assert report["missing"] == [] and report["protocol"] == "stream"


def test_a_batch_run_scores_the_whole_file_and_missing_files_are_listed(run: tuple[Path, Path]) -> None:
    out, corpus = run
    (out / "benchmark.json").write_text(json.dumps({"protocol": "batch"}))
    (out / "clean" / "c.events.csv").unlink()
    report = false_alerts_per_week(out, corpus)
    assert report["per_series"]["clean/a.csv"]["per_week"] == pytest.approx(4 / (197 / 168))
    assert report["missing"] == ["clean/c.csv"]


def test_a_folder_without_a_benchmark_manifest_is_refused(run: tuple[Path, Path]) -> None:
    out, corpus = run
    (out / "benchmark.json").unlink()
    with pytest.raises(BenchmarkError, match="is not a benchmark output folder: cannot read"):
        false_alerts_per_week(out, corpus)


def test_incident_report_on_hand_made_events(run: tuple[Path, Path]) -> None:
    report = incident_report(*run)
    assert report["kinds"] == {
        # the spike's alert ends 60 min after it: within the 1 h floor, inclusive
        "spike": {"incidents": 2, "caught": 1, "recall": 0.5, "end_within": 1.0, "median_end_error_minutes": 60.0},
        # onset labelled 2 h, alert lasting 58 h past it
        "level_shift": {"incidents": 1, "caught": 1, "recall": 1.0, "end_within": 0.0, "median_end_error_minutes": 3480.0},
        # two alerts overlap: the later end counts, 8 h past a 40 h ramp (25 % is 10 h)
        "drift": {"incidents": 1, "caught": 1, "recall": 1.0, "end_within": 1.0, "median_end_error_minutes": 480.0},
    }
    assert report["overall"] == {
        "incidents": 4, "caught": 3, "recall": 0.75, "end_within": pytest.approx(2 / 3), "median_end_error_minutes": 480.0,
    }
    assert (report["alerts"], report["true_alerts"], report["precision"]) == (6, 4, pytest.approx(4 / 6))
    assert report["per_series"]["incidents/x.csv"]["precision"] == pytest.approx(4 / 6)
    assert report["missing"] == ["incidents/y.csv"]
