"""The alerts' state machine on hand-made events: one incident, one announcement.

An incident that outlasts the gap between score runs arrives as one event
per run. These cases pin down when such events are one alert (new, then
ongoing, then resolved) and when they are two, without any model in the way.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from anomaly.ops.alerts import LEDGER_VERSION, GroupInfo, Ledger, advance, alert_id, counts
from anomaly.errors import DataError

STEP = 300.0  # 5-minute data
GAP = 13 * STEP  # merge_gap 12 → an event starting within 13 steps of an alert's end continues it
T0 = pd.Timestamp("2026-03-02 10:00", tz="UTC")


def at(minutes: float) -> pd.Timestamp:
    return T0 + pd.Timedelta(minutes=minutes)


def event(start: float, end: float, peak: float = 1.2, model: str = "cpu", metric: str = "cpu", severity: str = "low", above: int | None = None, version: str = "000001") -> dict:
    n = int((end - start) / 5) + 1
    return {
        "start": at(start), "end": at(end), "metric": metric, "peak_score": peak, "threshold": 1.0, "severity": severity,
        "peak_time": at(end), "n_points": n, "n_above": n if above is None else above, "model": model, "version": version,
    }  # fmt: skip


def events(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=list(event(0, 0)))


def scored_to(minutes: float, sustained: int = 0) -> dict[str, GroupInfo]:
    return {"cpu": GroupInfo(at(minutes), STEP, GAP, sustained), "mem": GroupInfo(at(minutes), STEP, GAP, sustained)}


def states(changes: list) -> list[tuple[str, str]]:
    return [(c.state, c.alert.id) for c in changes]


def test_an_incident_over_three_runs_is_new_then_ongoing_then_resolved_once() -> None:
    ledger = Ledger()
    first = advance(ledger, events(event(20, 30)), scored_to(30), at(31))
    ((state, key),) = states(first)
    assert state == "new" and key == alert_id("cpu", at(20)) and first[0].alert.open
    # the next run's event starts one step after the last: the same incident, still going
    second = advance(ledger, events(event(35, 60, peak=1.3)), scored_to(60), at(61))
    assert states(second) == [("ongoing", key)] and second[0].extended
    alert = ledger.alerts[key]
    assert (pd.Timestamp(alert.start), pd.Timestamp(alert.end)) == (at(20), at(60)) and alert.n_points == 9
    assert alert.peak_score == 1.3 and alert.n_above == 3 + 6
    # a run with nothing flagged, but not yet past the merge gap: still ongoing, not extended
    third = advance(ledger, events(), scored_to(60 + 60), at(121))
    assert states(third) == [("ongoing", key)] and not third[0].extended
    # scored past end + gap without a continuation: resolved, reported once
    fourth = advance(ledger, events(), scored_to(60 + 70), at(131))
    assert states(fourth) == [("resolved", key)] and not ledger.alerts[key].open
    assert advance(ledger, events(), scored_to(200), at(201)) == []


def test_an_event_after_the_merge_gap_is_a_new_alert_and_one_that_ended_in_its_first_run_is_reported_once() -> None:
    ledger = Ledger()
    first = advance(ledger, events(event(0, 10)), scored_to(100), at(101))
    assert [c.state for c in first] == ["new"] and not first[0].alert.open  # already over: new, and closed
    assert advance(ledger, events(), scored_to(150), at(151)) == []
    later = advance(ledger, events(event(10 + 13 * 5 + 5, 200)), scored_to(200), at(201))
    assert [c.state for c in later] == ["new"] and later[0].alert.id != first[0].alert.id


def test_a_rescored_duplicate_of_a_reported_event_is_not_announced_again() -> None:
    """A score run that crashed after writing its events is re-run and writes them again."""
    ledger = Ledger()
    advance(ledger, events(event(20, 30)), scored_to(30), at(31))
    again = advance(ledger, events(event(20, 30), event(25, 30)), scored_to(30), at(32))
    assert [c.state for c in again] == ["ongoing"] and not again[0].extended
    assert len(ledger.alerts) == 1


def test_alerts_of_different_models_are_separate_and_ordered_most_severe_first() -> None:
    ledger = Ledger()
    changes = advance(
        ledger,
        events(event(0, 10, peak=1.1), event(0, 10, peak=5.0, model="mem", metric="mem", severity="critical"), event(40, 50, peak=2.5, severity="high")),
        scored_to(50),
        at(51),
    )
    assert [(c.alert.model, c.alert.severity) for c in changes] == [("mem", "critical"), ("cpu", "high")]
    # the two cpu events are 30 minutes apart, within the gap: one alert with the higher peak
    assert ledger.alerts[alert_id("cpu", at(0))].peak_ratio == 2.5
    assert counts(changes, "new") == {"critical": 1, "high": 1}


def test_an_ongoing_alert_whose_peak_rises_is_escalated_and_severity_never_drops() -> None:
    ledger = Ledger()
    advance(ledger, events(event(0, 10, peak=1.2)), scored_to(10), at(11))
    rose = advance(ledger, events(event(15, 20, peak=2.2, severity="high")), scored_to(20), at(21))
    assert rose[0].state == "ongoing" and rose[0].escalated_from == "low" and rose[0].alert.severity == "high"
    calmer = advance(ledger, events(event(25, 30, peak=1.1)), scored_to(30), at(31))
    assert calmer[0].escalated_from is None and calmer[0].alert.severity == "high"


def test_a_long_incident_is_raised_one_level_once_its_points_above_the_threshold_add_up() -> None:
    """Each run's event alone is short; together they stayed above the threshold for 12 points."""
    ledger = Ledger()
    sustained = scored_to(25, sustained=12)
    assert advance(ledger, events(event(0, 25)), sustained, at(26))[0].alert.severity == "low"  # 6 points
    longer = advance(ledger, events(event(30, 55)), scored_to(55, sustained=12), at(56))
    assert longer[0].alert.n_above == 12 and longer[0].alert.severity == "medium" and longer[0].escalated_from == "low"


def test_a_crashed_report_run_loses_nothing_because_alerts_are_new_until_reported() -> None:
    ledger = Ledger()
    advance(ledger, events(event(0, 10)), scored_to(10), at(11))
    on_disk = json.loads(json.dumps(ledger.to_json()))  # saved after the first run
    crashed = advance(ledger, events(event(100, 110)), scored_to(110), at(111))  # its ledger never saved
    assert [c.state for c in crashed] == ["new", "resolved"]
    retried = advance(Ledger.from_json(on_disk), events(event(100, 110)), scored_to(110), at(112))
    assert [(c.state, c.alert.id) for c in retried] == [(c.state, c.alert.id) for c in crashed]


def test_the_ledger_survives_a_round_trip_through_json_and_reads_the_first_layout() -> None:
    ledger = Ledger()
    advance(ledger, events(event(0, 10)), scored_to(10), at(11))
    ledger.processed_events.add("events/cpu/part-1.parquet")
    ledger.outbox.append({"key": "k", "payload": {}, "queued_at": at(11).isoformat(), "attempts": 1, "last_error": "down"})
    copy = Ledger.from_json(json.loads(json.dumps(ledger.to_json())))
    assert copy.to_json() == ledger.to_json() and copy.alerts == ledger.alerts
    old = Ledger.from_json({"reported": ["events/cpu/part-1.parquet"]})
    assert old.processed_events == {"events/cpu/part-1.parquet"} and not old.alerts


def test_a_ledger_from_a_newer_version_is_refused_by_name() -> None:
    with pytest.raises(DataError, match=f"ledger_version 99; this version reads {LEDGER_VERSION}"):
        Ledger.from_json({"ledger_version": 99, "alerts": {}})


def test_resolved_alerts_are_forgotten_after_a_week() -> None:
    ledger = Ledger()
    advance(ledger, events(event(0, 10)), scored_to(100), at(101))
    advance(ledger, events(), scored_to(100), at(101) + pd.Timedelta("6D"))
    assert len(ledger.alerts) == 1
    advance(ledger, events(), scored_to(100), at(101) + pd.Timedelta("8D"))
    assert ledger.alerts == {}
