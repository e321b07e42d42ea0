"""Every change to a stored format, in one place: a version per stored kind, a function per change.

A file written by an earlier release is read by upgrading it one step at a
time, ``STEPS[kind][v]`` taking version ``v`` to ``v + 1``, until it is at
:data:`CURRENT`; a file from a newer release is refused rather than guessed
at. Each step is tested on files the previous release wrote
(``tests/fixtures/release-0.1.0``).

Kinds:

- ``model``: a model folder's ``config.json`` and ``detector.json``, as
  ``{"config": ..., "state": ...}``; the version is ``state.format_version``.
- ``policy``: a registry model's ``policy.json``.
- ``score_state``: a group's ``scores/<group>/state.json``.
- ``alerts``: the rows of an ``events/<group>/part-*.parquet`` file, as a DataFrame.
- ``ledger``: the report ledger, ``reports/state.json``.
- ``marks``: people's marks on alerts, ``reports/marks.json``.
- ``series``: the raw store's series catalogue, ``store/series.json``
  (:mod:`anomaly.io.catalogue`); a store without one has no labels.
"""

from __future__ import annotations

from typing import Any, Callable

import pandas as pd

from anomaly.core.events import alert_id
from anomaly.errors import AnomalyError, excerpt

Step = Callable[[Any], Any]


class FormatError(AnomalyError, ValueError):
    """A stored file is of a format this library cannot read (too new, or not a version at all)."""


def _model_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """0.1.0 → 0.2.0: the reconstruction settings moved from ``scoring`` to ``window``; old defaults spelled out.

    Within format 1, configurations saved before a setting existed meant that
    setting's old behaviour, not today's default: no ``smoothing_time`` or
    ``baseline`` meant smoothing over ``smoothing_span`` points and no
    baseline; no ``baseline_exclude``/``baseline_warmup`` meant every point
    in the baseline, scored after a quarter of it; both smoothing keys set
    meant the time; no ``training.schedule`` meant a constant rate.
    """
    config = {k: dict(v) if isinstance(v, dict) else v for k, v in data["config"].items()}
    if isinstance(config.get("training"), dict):
        config["training"].setdefault("schedule", "constant")
    scoring = config.get("scoring")
    if isinstance(scoring, dict):
        window = config.setdefault("window", {})
        if "aggregate" in scoring:
            window["aggregate"] = scoring.pop("aggregate")
        if "batch_size" in scoring:
            window["score_batch_size"] = scoring.pop("batch_size")
        scoring.setdefault("smoothing_time", None)
        scoring.setdefault("baseline", 0)
        scoring.setdefault("baseline_exclude", None)
        scoring.setdefault("baseline_warmup", None)
        if scoring.get("smoothing_span") is not None and scoring["smoothing_time"] is not None:
            scoring["smoothing_span"] = None
    return {"config": config, "state": {**data["state"], "format_version": 2}}


def _score_state_1_to_2(state: dict[str, Any]) -> dict[str, Any]:
    """0.1.0 → 0.2.0: the alert tracker's open run joins the state (none was kept; none is open)."""
    return {**state, "format_version": 2, "open_run": None, "policy": None}


def _alerts_1_to_2(rows: pd.DataFrame) -> pd.DataFrame:
    """0.1.0 → 0.2.0: event parts become alert rows, each event its own alert that fired at its start.

    The oldest parts also lacked ``n_above`` (every point counted).
    """
    out = rows.copy()
    if "n_above" not in out.columns:
        out["n_above"] = out["n_points"]
    out["id"] = [alert_id(str(m), s) for m, s in zip(out["model"], out["start"])]
    out["onset"] = out["start"]
    out["closed"] = False
    return out


def _ledger_1_to_2(data: dict[str, Any]) -> dict[str, Any]:
    """The first layout listed only the event parts already reported."""
    return {
        "ledger_version": 2,
        "alerts": {},
        "processed_events": list(data.get("reported", [])),
        "processed_runs": [],
        "outbox": [],
        "last_report": None,
    }


def _ledger_2_to_3(data: dict[str, Any]) -> dict[str, Any]:
    """Deliveries a webhook refused for good are parked, not retried."""
    return {**data, "ledger_version": 3, "parked": []}


def _ledger_3_to_4(data: dict[str, Any]) -> dict[str, Any]:
    """Alerts are cut by the score runs' tracker, which also says when one is over.

    The ledger no longer needs each model's merge gap or sustained length,
    and an alert fires at its onset (its start, for alerts made before). An
    alert still open at the upgrade is closed by it: the tracker that would
    close it starts afresh, and an incident still going on is announced
    again as a new alert.
    """
    alerts = {}
    for key, alert in data["alerts"].items():
        kept = {k: v for k, v in dict(alert).items() if k not in {"gap_s", "sustained"}}
        kept.setdefault("onset", kept.get("start"))
        if kept.get("resolved_at") is None:
            kept["resolved_at"] = data.get("last_report") or kept.get("end")
        alerts[key] = kept
    return {**data, "ledger_version": 4, "alerts": alerts}


#: ``STEPS[kind][v]`` upgrades version ``v + 1`` to ``v + 2`` (the list is in order from version 1).
STEPS: dict[str, list[Step]] = {
    "model": [_model_1_to_2],
    "policy": [],
    "score_state": [_score_state_1_to_2],
    "alerts": [_alerts_1_to_2],
    "ledger": [_ledger_1_to_2, _ledger_2_to_3, _ledger_3_to_4],
    "marks": [],
    "series": [],
}
#: The version each kind is written in today.
CURRENT: dict[str, int] = {kind: len(steps) + 1 for kind, steps in STEPS.items()}


def upgrade(kind: str, data: Any, version: Any, where: str) -> Any:
    """``data`` of ``kind`` written in ``version``, brought to :data:`CURRENT`; a newer or odd version is refused."""
    current = CURRENT[kind]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise FormatError(f"{where} has no valid format version ({excerpt(version)})")
    if version > current:
        raise FormatError(
            f"{where} was written in {kind} format {version}, newer than this version of the library "
            f"reads ({current}); upgrade the anomaly package"
        )
    for step in STEPS[kind][version - 1 : current - 1]:
        data = step(data)
    return data
