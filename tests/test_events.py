"""Tests for anomaly.core.events and anomaly.evaluation.metrics on hand-written cases with exact answers."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pandas as pd
import pytest

from anomaly.core.config import EventConfig
from anomaly.evaluation.metrics import EventScores, intervals, overlaps, score_events, score_events_per_metric
from anomaly.core.events import (
    EVENT_COLUMNS,
    contributing_metrics,
    find_events,
    find_runs,
    flag_runs,
    merge_runs,
    pad_runs,
    prune_runs,
    severity,
)
from anomaly.core.scoring import Scores

T0 = pd.Timestamp("2024-01-01 00:00", tz="UTC")


def t(i: int) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=i)


# --- flag_runs ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ([], []),
        ([False, False, False], []),
        ([True], [(0, 1)]),
        ([True, True, True, True], [(0, 4)]),
        ([True, True, False, True, False, False, True], [(0, 2), (3, 4), (6, 7)]),
        ([False, True, True, False], [(1, 3)]),
        ([0, 1, 0, 1, 1], [(1, 2), (3, 5)]),
    ],
)
def test_flag_runs(flags: list, expected: list) -> None:
    assert flag_runs(np.array(flags)) == expected


def test_flag_runs_returns_python_ints() -> None:
    runs = flag_runs(np.array([False, True]))
    assert all(type(x) is int for run in runs for x in run)


# --- pad_runs ----------------------------------------------------------------------------


def test_pad_runs_clipped_at_both_ends() -> None:
    assert pad_runs([(0, 2), (5, 6), (8, 10)], 2, 10) == [(0, 4), (3, 8), (6, 10)]
    assert pad_runs([(1, 2)], 5, 4) == [(0, 4)]


def test_pad_zero_is_identity() -> None:
    runs = [(0, 1), (3, 7)]
    assert pad_runs(runs, 0, 7) == runs


# --- merge_runs ----------------------------------------------------------------------------


def test_merge_gap_exactly_equal_to_limit_merges() -> None:
    runs = [(0, 2), (4, 5)]  # two points (2, 3) between them
    assert merge_runs(runs, 2) == [(0, 5)]
    assert merge_runs(runs, 1) == [(0, 2), (4, 5)]
    assert merge_runs(runs, 0) == [(0, 2), (4, 5)]


def test_merge_overlapping_adjacent_nested_and_unsorted() -> None:
    assert merge_runs([(3, 8), (0, 4)], 0) == [(0, 8)]  # overlapping, given out of order
    assert merge_runs([(0, 2), (2, 4)], 0) == [(0, 4)]  # touching
    assert merge_runs([(0, 10), (2, 3), (11, 12)], 0) == [(0, 10), (11, 12)]  # nested kept whole
    assert merge_runs([(0, 10), (2, 3), (11, 12)], 1) == [(0, 12)]
    assert merge_runs([], 3) == []


def test_merge_chains() -> None:
    assert merge_runs([(0, 1), (2, 3), (4, 5), (9, 10)], 1) == [(0, 5), (9, 10)]


# --- prune_runs -------------------------------------------------------------------------------


def test_prune_zero_keeps_everything() -> None:
    runs = [(0, 1), (3, 4), (6, 8)]
    assert prune_runs(runs, [1.01, 1.02, 1.03], 1.0, 0.0) == runs
    assert prune_runs([], [], 1.0, 0.5) == []


def test_prune_drops_weak_tail_hundman() -> None:
    runs = [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)]
    peaks = [4.8, 10.0, 5.0, 9.5, 4.6]
    # ladder 10, 9.5, 5, 4.8, 4.6, 4.5 -> drops .05, .4737, .04, .0417, .0217
    # last drop > 0.1 is 9.5 -> 5: keep the 10 and 9.5 runs, in time order
    assert prune_runs(runs, peaks, 4.5, 0.1) == [(2, 3), (6, 7)]


def test_prune_keeps_weak_run_when_a_later_drop_is_large() -> None:
    # ladder 10, 9.5, 5, 4.8, 4 -> drops .05, .47, .04, .167: the last rung counts
    runs = [(0, 1), (2, 3), (4, 5), (6, 7)]
    assert prune_runs(runs, [10.0, 9.5, 5.0, 4.8], 4.0, 0.1) == runs


def test_prune_can_drop_every_run() -> None:
    # ladder 4.6, 4.55, 4.5 -> drops 0.011, 0.011: nothing stands out
    assert prune_runs([(0, 1), (3, 4)], [4.6, 4.55], 4.5, 0.1) == []


def test_prune_single_strong_run() -> None:
    assert prune_runs([(5, 9)], [3.0], 1.0, 0.5) == [(5, 9)]  # drop 1 - 1/3 = .67
    assert prune_runs([(5, 9)], [1.2], 1.0, 0.5) == []  # drop 1 - 1/1.2 = .17


# --- severity -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("peak", "threshold", "expected"),
    [
        (1.0, 1.0, "low"),
        (1.49, 1.0, "low"),
        (1.5, 1.0, "medium"),
        (1.99, 1.0, "medium"),
        (2.0, 1.0, "high"),
        (3.99, 1.0, "high"),
        (4.0, 1.0, "critical"),
        (100.0, 1.0, "critical"),
        (0.5, 1.0, "low"),
        (3.0, 2.0, "medium"),
        (1.0, 0.0, "critical"),
    ],
)
def test_severity(peak: float, threshold: float, expected: str) -> None:
    assert severity(peak, threshold) == expected


@pytest.mark.parametrize(
    ("peak", "above", "sustained", "expected"),
    [
        (1.2, 29, 30, "low"),  # not long enough
        (1.2, 30, 30, "medium"),  # as long as "sustained": one level up
        (2.5, 100, 30, "critical"),
        (5.0, 100, 30, "critical"),  # never above critical
        (1.2, 1000, 0, "low"),  # 0 turns the rule off
    ],
)
def test_a_sustained_excursion_is_one_level_more_severe(peak: float, above: int, sustained: int, expected: str) -> None:
    assert severity(peak, 1.0, above, sustained) == expected


def test_events_count_the_points_above_the_threshold_and_long_ones_are_raised() -> None:
    # padding widens the runs to (0,5) and (6,12), each holding 3 points above the threshold
    padded = find_events(scores(), EventConfig(padding=1, merge_gap=0, sustained=3))
    assert padded["n_points"].tolist() == [5, 6] and padded["n_above"].tolist() == [3, 3]
    assert padded["severity"].tolist() == ["critical", "critical"]  # high raised to critical; critical stays
    merged = find_events(scores(), EventConfig(padding=0, merge_gap=1, sustained=3))
    assert merged["n_above"].tolist() == [3, 1, 2] and merged["severity"].tolist() == ["critical", "low", "critical"]


# --- find_events -----------------------------------------------------------------------------------


def build_scores(
    cpu: list[float], mem: list[float], score: list[float], threshold: float = 1.0, thresholds: dict | None = None
) -> Scores:
    n = len(score)
    idx = pd.date_range(T0, periods=n, freq="1min", name="timestamp")
    th = thresholds or {"cpu": 1.0, "mem": 2.0}
    ms = pd.DataFrame({"cpu": cpu, "mem": mem}, index=idx)
    s = pd.Series(score, index=idx)
    values = pd.DataFrame({"cpu": np.arange(n, dtype=float), "mem": np.arange(n, dtype=float)}, index=idx)
    return Scores(
        values=values,
        reconstruction=values.copy(),
        metric_scores=ms,
        score=s,
        thresholds=th,
        threshold=threshold,
        metric_flags=ms.gt(pd.Series(th)),
        flags=s > threshold,
        filled=pd.DataFrame(False, index=idx, columns=["cpu", "mem"]),
    )


#            0    1    2    3    4    5    6    7    8    9    10   11
CPU = [1.3, 0.1, 1.2, 2.0, 0.1, 0.1, 0.1, 0.9, 0.1, 0.1, 3.0, 6.0]
MEM = [0.5, 0.1, 2.5, 5.0, 0.1, 0.1, 0.1, 1.9, 0.1, 0.1, 0.1, 2.2]
SCORE = [1.1, 0.2, 1.5, 3.0, 0.3, 0.2, 0.1, 1.2, 0.4, 0.1, 4.5, 5.0]


def scores() -> Scores:
    return build_scores(CPU, MEM, SCORE)


def test_find_events_exact() -> None:
    ev = find_events(scores(), EventConfig(padding=0, merge_gap=0), model="lstm", version="v3")
    assert list(ev.columns) == list(EVENT_COLUMNS)
    expected = pd.DataFrame(
        {
            "start": [t(0), t(2), t(7), t(10)],
            "end": [t(0), t(3), t(7), t(11)],
            "metric": ["cpu", "mem,cpu", "mem", "cpu,mem"],
            "peak_score": [1.1, 3.0, 1.2, 5.0],
            "threshold": [1.0, 1.0, 1.0, 1.0],
            "severity": ["low", "high", "low", "critical"],
            "peak_time": [t(0), t(3), t(7), t(11)],
            "n_points": [1, 2, 1, 2],
            "n_above": [1, 2, 1, 2],
            "model": ["lstm"] * 4,
            "version": ["v3"] * 4,
        }
    )
    pd.testing.assert_frame_equal(ev.reset_index(drop=True), expected, check_dtype=False, check_index_type=False)


def test_find_events_padding_clipped_and_merged() -> None:
    ev = find_events(scores(), EventConfig(padding=1, merge_gap=0))
    # runs (0,1)(2,4)(7,8)(10,12) -> padded (0,2)(1,5)(6,9)(9,12) -> merged (0,5)(6,12)
    assert ev["start"].tolist() == [t(0), t(6)]
    assert ev["end"].tolist() == [t(4), t(11)]
    assert ev["n_points"].tolist() == [5, 6]
    assert ev["peak_score"].tolist() == [3.0, 5.0]
    assert ev["peak_time"].tolist() == [t(3), t(11)]
    assert ev["metric"].tolist() == ["mem,cpu", "cpu,mem"]


def test_find_events_merge_gap() -> None:
    ev = find_events(scores(), EventConfig(padding=0, merge_gap=1))
    # (0,1) and (2,4) are one point apart; (7,8) and (10,12) two
    assert list(zip(ev["start"], ev["end"])) == [(t(0), t(3)), (t(7), t(7)), (t(10), t(11))]
    assert ev["n_points"].tolist() == [4, 1, 2]


def test_find_events_min_length_and_prune() -> None:
    ev = find_events(scores(), EventConfig(padding=0, min_length=2, merge_gap=0))
    assert list(zip(ev["start"], ev["end"])) == [(t(2), t(3)), (t(10), t(11))]
    # peaks 1.1, 3.0, 1.2, 5.0 over threshold 1: ladder 5, 3, 1.2, 1.1, 1 -> drops .4, .6, .083, .091
    ev = find_events(scores(), EventConfig(padding=0, prune=0.3, merge_gap=0))
    assert list(zip(ev["start"], ev["end"])) == [(t(2), t(3)), (t(10), t(11))]
    assert ev["peak_score"].tolist() == [3.0, 5.0]


def test_find_runs_in_time_order() -> None:
    s = np.array(SCORE)
    assert find_runs(s > 1.0, s, 1.0, EventConfig(padding=0, merge_gap=0)) == [(0, 1), (2, 4), (7, 8), (10, 12)]


def test_find_events_none_flagged_is_empty_with_columns() -> None:
    ev = find_events(build_scores([0.1] * 5, [0.1] * 5, [0.2] * 5), EventConfig(padding=0, merge_gap=0))
    assert ev.empty
    assert list(ev.columns) == list(EVENT_COLUMNS)


def test_contributing_metrics_ordered_by_ratio() -> None:
    s = scores()
    assert contributing_metrics(s, 2, 4) == ["mem", "cpu"]  # 5.0/2 = 2.5 beats 2.0/1
    assert contributing_metrics(s, 10, 12) == ["cpu", "mem"]  # 6 beats 1.1
    assert contributing_metrics(s, 0, 1) == ["cpu"]  # only cpu crossed
    assert contributing_metrics(s, 0, 12) == ["cpu", "mem"]


def test_contributing_metrics_falls_back_to_closest() -> None:
    s = scores()
    assert contributing_metrics(s, 7, 8) == ["mem"]  # 1.9/2 = .95 beats .9/1, neither crossed
    s2 = build_scores(CPU, MEM, SCORE, thresholds={"cpu": 1.0, "mem": 2.5})
    assert contributing_metrics(s2, 7, 8) == ["cpu"]  # .9 beats 1.9/2.5 = .76


@pytest.mark.parametrize("order", [["cpu", "mem"], ["mem", "cpu"]])
def test_contributing_metrics_ignores_metric_with_no_data_in_span(order: list[str]) -> None:
    # mem is missing throughout the span (a gap), cpu came close without crossing
    mem = MEM.copy()
    mem[6:9] = [np.nan] * 3
    s = build_scores(CPU, mem, SCORE)
    s = dataclasses.replace(
        s, values=s.values[order], metric_scores=s.metric_scores[order], metric_flags=s.metric_flags[order]
    )
    assert s.metrics == order
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert contributing_metrics(s, 7, 8) == ["cpu"]


def test_find_events_with_a_metric_missing_in_an_event_warns_nothing() -> None:
    cpu, mem = CPU.copy(), MEM.copy()
    mem[10:12] = [np.nan, np.nan]
    s = build_scores(cpu, mem, SCORE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ev = find_events(s, EventConfig(padding=0, merge_gap=0))
    assert ev["metric"].tolist()[-1] == "cpu"


# --- evaluation ------------------------------------------------------------------------------------


def test_overlaps_inclusive() -> None:
    assert overlaps((t(0), t(5)), (t(5), t(8)))
    assert overlaps((t(5), t(8)), (t(0), t(5)))
    assert overlaps((t(0), t(10)), (t(3), t(4)))
    assert not overlaps((t(0), t(2)), (t(3), t(4)))
    assert not overlaps((t(3), t(4)), (t(0), t(2)))


def test_single_shared_instant_counts() -> None:
    s = score_events([(t(0), t(5))], [(t(5), t(8))])
    assert (s.tp, s.fp, s.fn) == (1, 0, 0)
    assert (s.precision, s.recall, s.f1) == (1.0, 1.0, 1.0)
    near_miss = score_events([(t(0), t(5))], [(t(5) + pd.Timedelta("1s"), t(8))])
    assert (near_miss.tp, near_miss.fp, near_miss.fn) == (0, 1, 1)


def test_one_event_overlapping_two_windows() -> None:
    s = score_events([(t(0), t(2)), (t(5), t(7))], [(t(1), t(6))])
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)
    assert (s.precision, s.recall, s.f1) == (1.0, 1.0, 1.0)


def test_two_events_in_one_window() -> None:
    s = score_events([(t(0), t(10))], [(t(1), t(2)), (t(5), t(6))])
    assert (s.tp, s.fp, s.fn) == (1, 0, 0)
    assert s.precision == 1.0 and s.recall == 1.0


def test_mixed_case_exact_scores() -> None:
    s = score_events([(t(0), t(2)), (t(10), t(12))], [(t(1), t(1)), (t(5), t(6)), (t(20), t(21))])
    assert (s.tp, s.fp, s.fn) == (1, 2, 1)
    assert s.precision == pytest.approx(1 / 3)
    assert s.recall == 0.5
    assert s.f1 == pytest.approx(0.4)
    assert s.to_dict() == {"tp": 1, "fp": 2, "fn": 1, "precision": s.precision, "recall": 0.5, "f1": s.f1}


def test_no_events() -> None:
    s = score_events([(t(0), t(2)), (t(5), t(6))], [])
    assert (s.tp, s.fp, s.fn) == (0, 0, 2)
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)


def test_no_windows() -> None:
    s = score_events([], [(t(0), t(2)), (t(5), t(6))])
    assert (s.tp, s.fp, s.fn) == (0, 2, 0)
    assert (s.precision, s.recall, s.f1) == (0.0, 0.0, 0.0)
    empty = score_events([], [])
    assert (empty.tp, empty.fp, empty.fn, empty.f1) == (0, 0, 0, 0.0)


def test_event_scores_add() -> None:
    total = EventScores(1, 2, 3) + EventScores(4, 0, 1)
    assert total == EventScores(5, 2, 4)
    assert total.precision == 5 / 7
    assert total.recall == 5 / 9
    assert total.f1 == pytest.approx(2 * (5 / 7) * (5 / 9) / (5 / 7 + 5 / 9))
    assert EventScores(0, 0, 0) + EventScores(2, 1, 0) == EventScores(2, 1, 0)


def test_intervals_from_events_frame() -> None:
    ev = find_events(scores(), EventConfig(padding=0, min_length=2, merge_gap=0))
    assert intervals(ev) == [(t(2), t(3)), (t(10), t(11))]
    frame = pd.DataFrame({"from": ["2024-01-01 00:00Z"], "to": ["2024-01-01 00:05Z"]})
    assert intervals(frame, "from", "to") == [(t(0), t(5))]
    # events scored against themselves are perfect
    s = score_events(intervals(ev), intervals(ev))
    assert (s.tp, s.fp, s.fn) == (2, 0, 0)


def test_events_match_incidents_only_on_the_metric_they_name() -> None:
    """The demo's quality line: an event overlapping an incident on another metric is false, and misses it."""
    t = pd.Timestamp("2026-01-01", tz="UTC")
    hour = pd.Timedelta("1h")
    incidents = pd.DataFrame({"metric": ["cpu", "latency"], "start": [t, t + 10 * hour], "end": [t + 2 * hour, t + 12 * hour]})
    events = pd.DataFrame({
        "metric": ["cpu", "errors", "latency,cpu", "cpu"],
        "start": [t + hour, t + 10 * hour, t + 11 * hour, t + 20 * hour],
        "end": [t + hour, t + 11 * hour, t + 11 * hour, t + 21 * hour],
    })  # fmt: skip
    q = score_events_per_metric(incidents, events)
    assert (q.tp, q.fp, q.fn) == (2, 2, 0)  # the errors event and the late cpu one are false
    only_wrong = score_events_per_metric(incidents, events.iloc[[1]])
    assert (only_wrong.tp, only_wrong.fp, only_wrong.fn) == (0, 1, 2)
    assert score_events(intervals(incidents), intervals(events.iloc[[1]])).tp == 1, "the overlap rule alone would count it"
