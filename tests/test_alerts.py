"""Flags become alerts (the tracker), and alerts are announced once (the report ledger).

The tracker is the one route from flags to alerts that the score runs and
the stream benchmark share: these cases pin down when flagged runs are one
alert, when it fires and when it is over, whatever the chunks the points
arrive in. The ledger then folds the score runs' alert rows: new, ongoing,
resolved, each reported once, a repeated row changing nothing.
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly.core.config import EventConfig
from anomaly.core.events import ALERT_COLUMNS, AlertTracker, OpenRun, TrackerState, alert_id
from anomaly.core.scoring import Scores
from anomaly.errors import DataError
from anomaly.ops.alerts import LEDGER_VERSION, Ledger, advance, counts

STEP = pd.Timedelta("5min")
T0 = pd.Timestamp("2026-03-02 10:00", tz="UTC")
EVENTS = EventConfig(merge_gap=3, min_length=2, sustained=4)


def at(i: int) -> pd.Timestamp:
    return T0 + i * STEP


def scores(
    score: list[float],
    first: int = 0,
    threshold: float = 1.0,
    metrics: tuple[str, ...] = ("cpu",),
    deviation: list[float] | None = None,
) -> Scores:
    """Hand-made scores of one or more metrics (each metric scoring as the combined score) from point ``first`` on.

    ``deviation``: how far the metric is from its reconstruction, in expected ranges (None: the model keeps none).
    """
    index = pd.date_range(at(first), periods=len(score), freq=STEP, name="timestamp")
    values = np.asarray(score, dtype=np.float64)
    per_metric = pd.DataFrame({m: values for m in metrics}, index=index)
    return Scores(
        values=per_metric,
        reconstruction=per_metric,
        metric_scores=per_metric,
        score=pd.Series(values, index, name="anomaly_score"),
        thresholds={m: threshold for m in metrics},
        threshold=threshold,
        metric_flags=per_metric > threshold,
        flags=pd.Series(values > threshold, index, name="flag"),
        filled=pd.DataFrame(False, index=index, columns=list(metrics)),
        deviation=None if deviation is None else pd.Series(deviation, index, dtype=np.float64),
    )


def track(
    chunks: list[Scores], config: EventConfig = EVENTS, lookback: pd.Timedelta = pd.Timedelta(0)
) -> tuple[pd.DataFrame, OpenRun | None]:
    """The alert rows of the chunks fed in turn, and the run left open."""
    rows, state = track_state(chunks, config, lookback)
    return rows, state.run


def track_state(
    chunks: list[Scores], config: EventConfig = EVENTS, lookback: pd.Timedelta = pd.Timedelta(0)
) -> tuple[pd.DataFrame, TrackerState]:
    tracker, state, rows = AlertTracker(config, STEP, model="cpu", version="000001", lookback=lookback), TrackerState(), []
    for chunk in chunks:
        found, state = tracker.advance(chunk, state)
        rows.append(found)
    found = [r for r in rows if len(r)]
    return (pd.concat(found, ignore_index=True) if found else rows[0]), state


# -- the tracker ---------------------------------------------------------------------------------


def test_runs_within_the_gap_are_one_alert_firing_on_its_second_flagged_point() -> None:
    #            0    1    2    3    4    5    6    7    8    9   10   11
    rows, run = track([scores([0.0, 2.0, 0.0, 0.0, 0.0, 3.0, 1.5, 0.0, 0.0, 0.0, 0.0, 0.0])])
    ((alert,),) = [rows.to_dict("records")]
    assert alert["id"] == alert_id("cpu", at(1))
    # the flags at 1 and 5 are 4 steps apart (3 quiet points: within merge_gap 3), so one run firing at 5
    assert (alert["start"], alert["end"], alert["onset"]) == (at(1), at(6), at(5))
    assert alert["closed"] and run is None
    assert alert["peak_score"] == 3.0 and alert["peak_time"] == at(5) and alert["n_above"] == 3 and alert["n_points"] == 6


def test_a_run_longer_apart_than_the_gap_is_another_alert_and_one_flag_alone_never_fires() -> None:
    #                 0    1    2    3    4    5    6    7    8    9   10   11   12
    rows, _ = track([scores([2.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0, 0.0, 0.0, 0.0, 0.0, 0.0])])
    assert list(rows["start"]) == [at(0)]  # the lone flag at 7 came after 5 quiet points and had no second
    assert list(rows["closed"]) == [True]


def test_an_alert_open_at_the_end_of_a_chunk_continues_into_the_next() -> None:
    first, run = track([scores([0.0, 2.0, 2.0, 0.0])])
    assert list(first["closed"]) == [False] and run is not None and run.last == at(2)
    rows, state = AlertTracker(EVENTS, STEP, model="cpu").advance(scores([0.0, 5.0, 0.0, 0.0, 0.0, 0.0], first=4), TrackerState(run))
    ((alert,),) = [rows.to_dict("records")]
    assert (alert["start"], alert["end"], alert["onset"]) == (at(1), at(5), at(2))
    assert alert["closed"] and alert["n_above"] == 3 and state.run is None


def test_an_alert_is_over_once_merge_gap_plus_one_points_have_passed_without_a_flag() -> None:
    _, run = track([scores([2.0, 2.0, 0.0, 0.0, 0.0])])  # last flag at 1; points 2-4 quiet: a flag at 5 could still join
    assert run is not None
    rows, state = AlertTracker(EVENTS, STEP, model="cpu").advance(scores([0.0], first=5), TrackerState(run))
    assert list(rows["closed"]) == [True] and state.run is None


def test_severity_rises_one_level_once_the_points_above_add_up_to_sustained() -> None:
    rows, _ = track([scores([1.2, 1.2, 1.2, 0.0, 0.0, 0.0, 0.0, 0.0])])
    assert rows["severity"].tolist() == ["low"]
    rows, _ = track([scores([1.2, 1.2, 1.2, 1.2, 0.0, 0.0, 0.0, 0.0])])
    assert rows["severity"].tolist() == ["medium"]


def test_the_alert_rows_follow_the_events_contract() -> None:
    rows, _ = track([scores([2.0, 2.0], metrics=("cpu", "mem"))])
    assert list(rows.columns) == list(ALERT_COLUMNS)
    assert rows["metric"].tolist() == ["cpu,mem"] and rows["model"].tolist() == ["cpu"] and rows["version"].tolist() == ["000001"]


# -- the range gate: an alert needs the metric outside its expected range ------------------------------


def test_a_run_while_the_metric_stays_in_its_range_never_fires() -> None:
    rows, run = track([scores([0.0, 2.0, 3.0, 2.0, 0.0], deviation=[0.2, 0.5, 0.9, 1.0, 0.1])])
    assert rows.empty and run is not None and run.onset is None  # open, flagged three times, never an alert


def test_the_alert_fires_on_the_first_flagged_point_once_the_metric_has_left_its_range() -> None:
    #                    0    1    2    3    4    5    6    7    8    9   10
    rows, _ = track([scores([0.0, 2.0, 2.0, 2.0, 0.0, 2.0, 2.0, 0.0, 0.0, 0.0, 0.0], deviation=[0, 0, 0, 0, 1.5, 0, 0, 0, 0, 0, 0])])
    ((alert,),) = [rows.to_dict("records")]
    # the metric left its range at 4 (an unflagged point of the run): the next flagged point, 5, fires it
    assert (alert["start"], alert["onset"], alert["end"], alert["closed"]) == (at(1), at(5), at(6), True)


def test_the_metric_leaving_its_range_shortly_before_the_flags_counts() -> None:
    """The smoothed score lags the metric: a point outside up to ``lookback`` before the run arms it."""
    deviation = [3.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]
    flags = [0.0, 0.0, 0.0, 2.0, 2.0, 0.0, 0.0]
    near, _ = track([scores(flags, deviation=deviation)], lookback=3 * STEP)
    assert near["onset"].tolist() == [at(4)]  # the second flagged point, as without a gate
    far, _ = track([scores(flags, deviation=deviation)], lookback=2 * STEP)
    assert far.empty  # outside 3 steps before the run's start: too long ago


def test_without_ranges_the_score_alone_decides() -> None:
    gated, _ = track([scores([0.0, 2.0, 2.0, 0.0], deviation=[0.0, 0.0, 0.0, 0.0])])
    free, _ = track([scores([0.0, 2.0, 2.0, 0.0])])
    assert gated.empty and free["onset"].tolist() == [at(2)]


def test_when_the_metric_last_left_its_range_is_carried_between_chunks() -> None:
    """A point outside at the end of one score run arms a run that starts in the next."""
    tracker = AlertTracker(EVENTS, STEP, model="cpu", lookback=2 * STEP)
    _, state = tracker.advance(scores([0.0, 0.0], deviation=[0.0, 4.0]))
    assert state.last_outside == at(1) and state.run is None
    rows, _ = tracker.advance(scores([2.0, 2.0, 0.0], first=2, deviation=[0.0, 0.0, 0.0]), state)
    assert rows["onset"].tolist() == [at(3)]
    rows, _ = tracker.advance(scores([2.0, 2.0, 0.0], first=2, deviation=[0.0, 0.0, 0.0]), TrackerState())
    assert rows.empty


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from([0.0, 0.0, 0.0, 1.5, 3.0]), st.sampled_from([0.0, 0.5, 0.5, 1.5])), min_size=1, max_size=60),
    st.lists(st.integers(1, 20), min_size=1, max_size=8),
    st.integers(0, 4),
    st.integers(1, 3),
    st.sampled_from([None, 0, 3]),
)
def test_any_chunking_of_a_series_gives_the_alerts_of_the_whole(
    points: list[tuple[float, float]], cuts: list[int], gap: int, length: int, lookback: int | None
) -> None:
    """The tracker is causal: what it says of a point depends only on what came before it (with and without ranges)."""
    config = EventConfig(merge_gap=gap, min_length=length)
    score, far = [p[0] for p in points], (None if lookback is None else [p[1] for p in points])
    back = (lookback or 0) * STEP

    def part(a: int, b: int) -> Scores:
        return scores(score[a:b], first=a, deviation=None if far is None else far[a:b])

    bounds = sorted({0, len(score), *np.cumsum(cuts).clip(0, len(score)).tolist()})
    whole, whole_state = track_state([part(0, len(score))], config, back)
    parts, parts_state = track_state([part(a, b) for a, b in zip(bounds, bounds[1:]) if b > a], config, back)
    final = parts.drop_duplicates("id", keep="last").reset_index(drop=True)
    expected = whole.drop_duplicates("id", keep="last").reset_index(drop=True)
    pd.testing.assert_frame_equal(final, expected, check_dtype=False)
    assert parts_state == whole_state


def test_an_open_run_survives_a_round_trip_through_json() -> None:
    _, run = track([scores([0.0, 2.0, 3.0])])
    assert run is not None and OpenRun.from_json(json.loads(json.dumps(run.to_json()))) == run


# -- the ledger ----------------------------------------------------------------------------------


def row(start: int, end: int, *, onset: int | None = None, closed: bool = False, peak: float = 1.2, severity: str = "low",
        model: str = "cpu", above: int | None = None, version: str = "000001") -> dict:
    n = end - start + 1
    return {
        "id": alert_id(model, at(start)), "start": at(start), "end": at(end), "metric": model, "peak_score": peak,
        "threshold": 1.0, "severity": severity, "peak_time": at(end), "n_points": n, "n_above": n if above is None else above,
        "model": model, "version": version, "onset": at(start if onset is None else onset), "closed": closed,
    }  # fmt: skip


def rows(*items: dict) -> pd.DataFrame:
    return pd.DataFrame(list(items), columns=list(ALERT_COLUMNS))


STEPS = {"cpu": STEP.total_seconds(), "mem": STEP.total_seconds()}


def states(changes: list) -> list[tuple[str, str]]:
    return [(c.state, c.alert.id) for c in changes]


def test_an_alert_over_three_runs_is_new_then_ongoing_then_resolved_once() -> None:
    ledger = Ledger()
    first = advance(ledger, rows(row(4, 6)), STEPS, at(7))
    ((state, key),) = states(first)
    assert state == "new" and key == alert_id("cpu", at(4)) and first[0].alert.open
    second = advance(ledger, rows(row(4, 12, peak=1.3)), STEPS, at(13))
    assert states(second) == [("ongoing", key)] and second[0].extended
    alert = ledger.alerts[key]
    assert (pd.Timestamp(alert.start), pd.Timestamp(alert.end), alert.n_points, alert.peak_score) == (at(4), at(12), 9, 1.3)
    third = advance(ledger, rows(), STEPS, at(14))
    assert states(third) == [("ongoing", key)] and not third[0].extended
    fourth = advance(ledger, rows(row(4, 12, peak=1.3, closed=True)), STEPS, at(30))
    assert states(fourth) == [("resolved", key)] and not ledger.alerts[key].open
    assert advance(ledger, rows(), STEPS, at(40)) == []


def test_a_row_written_again_by_a_retried_run_changes_nothing() -> None:
    ledger = Ledger()
    advance(ledger, rows(row(4, 6)), STEPS, at(7))
    before = json.dumps(ledger.to_json()["alerts"])
    again = advance(ledger, rows(row(4, 6), row(4, 6)), STEPS, at(8))
    assert [c.state for c in again] == ["ongoing"] and not again[0].extended
    assert json.dumps(ledger.to_json()["alerts"]) == before


def test_alerts_of_different_models_are_separate_and_ordered_most_severe_first() -> None:
    ledger = Ledger()
    changes = advance(ledger, rows(row(0, 2, peak=1.1), row(0, 2, peak=5.0, model="mem", severity="critical")), STEPS, at(3))
    assert [(c.alert.model, c.alert.severity) for c in changes] == [("mem", "critical"), ("cpu", "low")]
    assert counts(changes, "new") == {"critical": 1, "low": 1}


def test_an_ongoing_alert_whose_severity_rises_is_escalated_and_severity_never_drops() -> None:
    ledger = Ledger()
    advance(ledger, rows(row(0, 2, peak=1.2)), STEPS, at(3))
    rose = advance(ledger, rows(row(0, 4, peak=2.2, severity="high")), STEPS, at(5))
    assert rose[0].state == "ongoing" and rose[0].escalated_from == "low" and rose[0].alert.severity == "high"
    calmer = advance(ledger, rows(row(0, 6, peak=2.2, severity="medium")), STEPS, at(7))
    assert calmer[0].escalated_from is None and calmer[0].alert.severity == "high"


def test_a_crashed_report_run_loses_nothing_because_alerts_are_new_until_reported() -> None:
    ledger = Ledger()
    advance(ledger, rows(row(0, 2)), STEPS, at(3))
    on_disk = json.loads(json.dumps(ledger.to_json()))  # saved after the first run
    crashed = advance(ledger, rows(row(0, 2, closed=True), row(40, 42)), STEPS, at(43))  # its ledger never saved
    retried = advance(Ledger.from_json(on_disk), rows(row(0, 2, closed=True), row(40, 42)), STEPS, at(44))
    assert [(c.state, c.alert.id) for c in retried] == [(c.state, c.alert.id) for c in crashed] != []


def test_the_ledger_survives_a_round_trip_through_json_and_reads_the_first_layout() -> None:
    ledger = Ledger()
    advance(ledger, rows(row(0, 2)), STEPS, at(3))
    ledger.processed_events.add("events/cpu/part-1.parquet")
    ledger.outbox.append({"key": "k", "payload": {}, "queued_at": at(3).isoformat(), "attempts": 1, "last_error": "down"})
    copy = Ledger.from_json(json.loads(json.dumps(ledger.to_json())))
    assert copy.to_json() == ledger.to_json() and copy.alerts == ledger.alerts
    old = Ledger.from_json({"reported": ["events/cpu/part-1.parquet"]})
    assert old.processed_events == {"events/cpu/part-1.parquet"} and not old.alerts


def test_a_ledger_from_a_newer_version_is_refused_by_name() -> None:
    with pytest.raises(DataError, match=f"ledger_version 99; this version reads {LEDGER_VERSION}"):
        Ledger.from_json({"ledger_version": 99, "alerts": {}})


def test_resolved_alerts_are_forgotten_after_a_week() -> None:
    ledger = Ledger()
    advance(ledger, rows(row(0, 2, closed=True)), STEPS, at(3))
    advance(ledger, rows(), STEPS, at(3) + pd.Timedelta("6D"))
    assert len(ledger.alerts) == 1
    advance(ledger, rows(), STEPS, at(3) + pd.Timedelta("8D"))
    assert ledger.alerts == {}
