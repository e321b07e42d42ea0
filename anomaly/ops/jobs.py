"""The units of scheduled work: train a group, score a group.

The Prefect flows in ``flows/`` call these functions from their tasks with
small arguments (folder paths, group names); the functions do the I/O
themselves so no DataFrame or model crosses a task boundary. Each returns a
small JSON-ready dict for the flow's summary. They work just as well from a
notebook or a cron job. Where things are kept is
:class:`anomaly.ops.workspace.Workspace`'s business.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd

from anomaly.core.config import DetectorConfig
from anomaly.core.data import MetricFrame, normalise
from anomaly.core.detector import LSTMAutoencoderDetector, check_intervals, context_points
from anomaly.core.events import ALERT_COLUMNS, SEVERITY_LEVELS, TrackerState
from anomaly.core.scoring import keep_out_of_baseline
from anomaly.core.stream import StreamState, carry_key, score_step
from anomaly.errors import DataError, excerpt
from anomaly.io.catalogue import Series, check_selector, series_of
from anomaly.io.store import RawStore
from anomaly.ops.latest import expected_band, latest_points, write_latest
from anomaly.ops.marks import Exclusion, mask_spans, training_exclusions
from anomaly.ops.registry import DEFAULT_ALIAS, LoadedModel, ModelRegistry, check_name
from anomaly.ops.workspace import ScoreState, Workspace

log = logging.getLogger(__name__)

_JUST_AFTER = pd.Timedelta(1, "ns")
#: Most severe first, for reports and summaries.
SEVERITY_RANK = {level: rank for rank, level in enumerate(reversed(SEVERITY_LEVELS))}
#: A new version is promoted when its error on the recent slice is at most this much worse.
PROMOTION_TOLERANCE = 0.10
#: A deployment's changes to the registry's policy: ``{section: {setting: value}}``.
PolicyOverrides = Mapping[str, Mapping[str, Any]]


@dataclass(frozen=True)
class Group:
    """Metrics modelled together by one registry model."""

    name: str
    metrics: tuple[str, ...]


#: A group's members: store names, or ``{"match": {label: value, ...}}`` (a label selector).
GroupSpec = Sequence[str] | Mapping[str, Mapping[str, str]]


def plan_groups(
    metrics: Sequence[str], groups: Mapping[str, GroupSpec] | None = None, catalogue: Mapping[str, Series] | None = None
) -> list[Group]:
    """One model per metric by default; configured groups model their metrics together.

    ``groups`` maps a model name to its metrics: a list of store names, or a
    label selector ``{"match": {"job": "checkout"}}`` meaning every stored
    metric whose series has all those labels with those values (``__name__``
    matches the series' metric name), from ``catalogue`` (the store's
    series catalogue; a metric it does not hold has no labels). A selector
    that matches nothing is an error naming it. Every metric not in a group
    gets a model of its own, named after it.
    """
    planned: list[Group] = []
    grouped: set[str] = set()
    for name, spec in (groups or {}).items():
        members = _members(name, spec, metrics, catalogue)
        planned.append(Group(check_name(name, "group name"), members))
        grouped.update(members)
    planned += [Group(_model_name(m), (m,)) for m in metrics if m not in grouped]
    seen: dict[str, Group] = {}
    for group in planned:
        if group.name in seen:  # two models would share a registry entry and a score state
            raise DataError(f"groups {seen[group.name].metrics} and {group.metrics} would share the model name {group.name!r}")
        seen[group.name] = group
    return planned


def _members(name: object, spec: object, metrics: Sequence[str], catalogue: Mapping[str, Series] | None) -> tuple[str, ...]:
    """A group's metrics: its list of names, or the stored metrics its label selector matches."""
    if isinstance(spec, Mapping):
        if set(spec) != {"match"}:
            raise DataError(f"group {excerpt(name)} must be a list of metrics or {{'match': {{label: value}}}}, got {excerpt(spec, 200)}")
        selector = check_selector(spec["match"], f"the label selector of group {excerpt(name)}")
        members = tuple(m for m in metrics if series_of(catalogue or {}, m).matches(selector))
        if not members:
            raise DataError(f"group {excerpt(name)}: the label selector {excerpt(selector, 200)} matches none of the {len(metrics)} stored metric(s)")
        return members
    if isinstance(spec, str) or not isinstance(spec, Sequence) or not all(isinstance(m, str) and m for m in spec):
        raise DataError(f"group {excerpt(name)} must be a list of metric names or {{'match': {{label: value}}}}, got {excerpt(spec, 200)}")
    if not spec:
        raise DataError(f"group {name!r} has no metrics")
    return tuple(spec)


def has_selector(groups: Mapping[str, GroupSpec] | None) -> bool:
    """Whether any group is a label selector (and so needs the series catalogue)."""
    return any(isinstance(spec, Mapping) for spec in (groups or {}).values())


def plan_store_groups(store: RawStore, groups: Mapping[str, GroupSpec] | None = None) -> list[Group]:
    """:func:`plan_groups` over the store's metrics, reading its series catalogue only when a group selects by labels."""
    return plan_groups(store.metrics(), groups, store.series() if has_selector(groups) else None)


def _model_name(metric: str) -> str:
    """A registry-safe model name for a metric (store names are already nearly safe)."""
    return check_name(re.sub(r"[^A-Za-z0-9_.-]", "_", metric).strip("._-") or "metric", "model name")


# -- training ----------------------------------------------------------------------------


def train_group(
    group: Group,
    workspace: str | Path,
    registry_root: str | Path,
    config: DetectorConfig | None = None,
    *,
    history: pd.Timedelta | str = "14D",
    validation: pd.Timedelta | str = "1D",
    tolerance: float = PROMOTION_TOLERANCE,
    run_id: str | None = None,
) -> dict[str, Any]:
    """Fit on recent history, publish a version, promote it when it earns it.

    The newest ``validation`` of data is held out and the new model is fitted
    on the rest of the newest ``history``. Both it and the current production model
    reconstruct the held-out slice (see :func:`holdout_error`); the new
    version is promoted when there is no production model yet or its error
    there is at most ``tolerance`` worse, so a retrain on fresh data replaces
    an older model unless it fits recent behaviour clearly worse. Otherwise
    it is published but left unpromoted, for a person to review. The spans
    of alerts people marked false-positive or expected
    (:mod:`anomaly.ops.marks`) are kept out of the fit as missing points.
    """
    space, registry = Workspace(workspace), ModelRegistry(registry_root)
    store = space.store()
    end = _latest(store, group)
    # "the last day" is the points after end - 1 day: a day's worth, not a day plus one point
    holdout_start = end - _duration(validation, "validation") + _JUST_AFTER
    train_start = end - _duration(history, "history") + _JUST_AFTER
    train = store.read_wide(list(group.metrics), start=train_start, end=holdout_start)
    if train.empty:
        raise DataError(
            f"group {group.name!r}: no points to train on from {train_start} to {holdout_start} "
            f"(history {history} less the newest {validation} held out); the newest point is {end}"
        )
    recent = store.read_wide(list(group.metrics), start=holdout_start)
    if not recent.empty:  # held-out data that cannot be put on a grid fails now, not after minutes of training
        normalise(recent, (config or DetectorConfig()).preprocess)
    exclusions = training_exclusions(space, group.name, group.metrics)
    fit_on, masked = masked_training_frame(train, exclusions, config) if exclusions else (train, 0)
    try:
        detector = LSTMAutoencoderDetector(config).fit(fit_on, progress=False)
    except DataError as exc:
        if not masked:
            raise
        raise DataError(f"{exc} ({masked} of those points belong to alerts marked false-positive or expected)") from exc
    new_error = holdout_error(detector, recent, train)
    current = _production(registry, group.name)
    current_error = holdout_error(current.detector, recent, train) if current is not None else None
    promote, reason = promotion(new_error, current_error, tolerance)
    evaluation = {
        "holdout_start": holdout_start.isoformat(),
        "holdout_end": end.isoformat(),
        "holdout_points": len(recent),
        "holdout_error": new_error,
        "production_holdout_error": current_error,
        "production_version": current.version.version if current is not None else None,
        "promoted": promote,
        "reason": reason,
        "excluded_alerts": [e.alert for e in exclusions],
        "excluded_points": masked,
    }
    published = registry.publish(detector, group.name, evaluation=evaluation, run_id=run_id)
    if promote:
        registry.promote(group.name, published.version)
    log.info("trained %s version %s: %s", group.name, published.version, reason)
    return {
        "group": group.name,
        "metrics": list(group.metrics),
        "version": published.version,
        "path": str(published.path),
        "promoted": promote,
        "reason": reason,
        "holdout_error": new_error,
        "train_points": len(train),
        "excluded_points": masked,
        "epochs": len(detector.history_.train_loss),
    }


def masked_training_frame(
    train: pd.DataFrame, exclusions: Sequence[Exclusion], config: DetectorConfig | None
) -> tuple[MetricFrame, int]:
    """The training data on its grid with the marked spans missing (kept out of the loss), and how many points that hid.

    Put on the grid here, as :meth:`LSTMAutoencoderDetector.fit` would, so a
    marked span is missing rather than bridged by the short-gap filling.
    """
    preprocess = (config or DetectorConfig()).preprocess
    if preprocess.freq is not None:
        check_intervals(train, pd.Timedelta(preprocess.freq), allow_resample=True, what="the training data")
    return mask_spans(normalise(train, preprocess), exclusions)


def _latest(store: RawStore, group: Group) -> pd.Timestamp:
    """The newest point of the group's metrics: training windows are measured back from it."""
    marks = store.watermarks()
    missing = [m for m in group.metrics if m not in marks]
    if missing:
        raise DataError(f"group {group.name!r}: no stored points for {missing}; stored metrics: {sorted(marks)}")
    return max(marks[m] for m in group.metrics)


def _duration(value: pd.Timedelta | str, what: str) -> pd.Timedelta:
    try:
        duration = pd.Timedelta(value)
    except ValueError as exc:
        raise DataError(f"{what} {value!r} is not a duration like '14D' or '6h'") from exc
    if duration <= pd.Timedelta(0):
        raise DataError(f"{what} must be a positive duration, got {value!r}")
    return duration


def _production(registry: ModelRegistry, name: str) -> LoadedModel | None:
    if DEFAULT_ALIAS not in registry.aliases(name):
        return None
    return registry.load(name, alias=DEFAULT_ALIAS)


def holdout_error(detector: LSTMAutoencoderDetector, recent: pd.DataFrame, context: pd.DataFrame) -> float | None:
    """Mean reconstruction error on ``recent`` in units of each metric's spread there.

    Two models are compared on the same points in the same units: each
    model's own scaled score would not do, since a retrain refits the
    scaler. None when there is nothing observed to compare on. A metric
    whose interval changed is still compared (with the scorer's warning):
    refusing here would stop the retrain that adapts to the new interval.
    """
    if recent.empty:
        return None
    scores = detector.score(recent, context=context if not context.empty else None, allow_resample=True)
    observed = ~scores.filled.to_numpy() & np.isfinite(scores.values.to_numpy())
    spread = np.nanstd(np.where(observed, scores.values.to_numpy(), np.nan), axis=0)
    spread = np.where(np.isfinite(spread) & (spread > 1e-12), spread, 1.0)
    error = np.abs(scores.values.to_numpy() - scores.reconstruction.to_numpy()) / spread
    error = error[observed & np.isfinite(error)]
    return float(error.mean()) if error.size else None


def promotion(new: float | None, current: float | None, tolerance: float) -> tuple[bool, str]:
    """Whether a new version replaces production, and the reason in words (kept in its metadata)."""
    if current is None:
        return True, "first model for this group: promoted"
    if new is None:
        return False, "no recent data to compare with production: left for review"
    if new <= current * (1 + tolerance):
        return True, f"holdout error {new:.4g} vs production {current:.4g}: promoted"
    return False, f"holdout error {new:.4g} is more than {tolerance:.0%} above production's {current:.4g}: left for review"


# -- scoring -----------------------------------------------------------------------------


def score_group(
    group: Group,
    workspace: str | Path,
    registry_root: str | Path,
    *,
    policy: PolicyOverrides | None = None,
    allow_resample: bool = False,
) -> dict[str, Any]:
    """Score the points that arrived since the last scored one with the production model, and follow its alerts.

    The first run of a group starts after the data its model was trained on.
    The model's window of earlier points is read as context so the first new
    points are scored fully; nothing already scored is scored again. The
    smoothing and the baseline continue from the carry the previous run left
    when the same version scored it under the same scoring; otherwise the
    context also covers the smoothing's memory and the baseline. The model
    scores under its registry policy (``anomaly models policy``), with the
    deployment's ``policy`` changes on top. Scores, alert rows and the next
    carry are written, then the state moves forward (the commit point:
    after a crash before it, the next run scores the same points again and
    replaces what the crashed run wrote, so nothing is skipped or doubled).
    Last, each metric's latest point is kept for the outputs
    (:mod:`anomaly.ops.latest`). A metric stored more coarsely than the
    model's interval fails the group with that reason unless
    ``allow_resample`` (see :func:`anomaly.core.detector.check_intervals`).
    """
    space, registry = Workspace(workspace), ModelRegistry(registry_root)
    if DEFAULT_ALIAS not in registry.aliases(group.name):
        return {"group": group.name, "status": "no-model", "message": f"no {DEFAULT_ALIAS} model {group.name!r} in {str(registry.root)!r}"}
    loaded = registry.load(group.name, alias=DEFAULT_ALIAS, overrides=policy)
    detector, version = loaded.detector, loaded.version.version
    state = space.score_state(group.name)
    last = state.last_scored if state is not None else pd.Timestamp(detector.training_data_["end"])
    key = carry_key(detector, version)
    # people's false-positive and expected marks keep those points out of the baseline the scores are measured against
    marked = [(e.start, e.end, e.metrics) for e in training_exclusions(space, group.name, group.metrics)]
    carry = space.read_carry(group.name, state, key, detector.carry_columns)
    carry = keep_out_of_baseline(carry, marked) if carry is not None and marked else carry
    # one read covers the new points and the context before them
    step = detector.freq_
    keep = context_points(detector.get_config(), step, carried=carry is not None)
    recent = space.store().read_wide(list(group.metrics), start=last - keep * step + _JUST_AFTER)
    if not (recent.index > last).any():
        return {"group": group.name, "status": "no-new-data", "version": version, "points": 0, "events": 0}
    check_intervals(recent, step, allow_resample=allow_resample, what=f"the store (group {group.name!r})")
    # normalised once, then split: gaps across the boundary are filled as in one series
    context, new = normalise(recent, detector.get_config().preprocess, freq=step).split(last)
    previous = StreamState(carry, key if carry is not None else None, state.tracker if state is not None else TrackerState())
    step_result = score_step(detector, new, context=context if len(context) else None, state=previous, model=group.name, version=version)
    scores, alerts = step_result.scores, step_result.alerts
    onward = keep_out_of_baseline(scores.carry, marked) if scores.carry is not None and marked else scores.carry
    files = space.write_parts(group.name, last, scores.to_frame().reset_index(), alerts, onward)
    space.write_score_state(
        group.name,
        ScoreState(
            last_scored=scores.score.index[-1],
            version=version,
            policy=loaded.policy_id,
            carry=files.carry.name if files.carry else None,
            carry_key=step_result.state.carry_key if files.carry else None,
            step_s=step / pd.Timedelta("1s"),
            sustained=detector.policy.events.sustained,
            tracker=step_result.state.tracker,
        ),
    )
    space.remove_stale_carries(group.name, files.carry)  # committed: older carries go
    # what the exporter and Alertmanager show: derived, so written after the commit point
    write_latest(space, group.name, latest_points(scores, expected_band(detector), group.name, version))
    return {
        "group": group.name,
        "status": "scored",
        "version": version,
        "policy": loaded.policy_id,
        "points": len(scores.score),
        "events": len(alerts),
        "from": scores.score.index[0].isoformat(),
        "to": scores.score.index[-1].isoformat(),
        "scores_file": str(files.scores),
        "events_file": str(files.alerts) if files.alerts else None,
    }


def score_groups(
    groups: Sequence[Group], workspace: str | Path, registry_root: str | Path, *, policy: PolicyOverrides | None = None
) -> list[dict[str, Any]]:
    """Score several groups one after another, each isolated from the others' failures.

    A group that raises gets ``status: failed`` and the error in one line
    (the traceback goes to the log); the rest are scored as usual. Flows
    give each task a batch of groups this way when there are many, because
    a task of its own per group costs more in orchestration than scoring a
    metric's new points does.
    """
    results = []
    for group in groups:
        try:
            results.append({"metrics": list(group.metrics), **score_group(group, workspace, registry_root, policy=policy)})
        except Exception as exc:  # the isolation boundary: one group's failure is its own
            log.exception("scoring group %s failed", group.name)
            results.append(
                {"group": group.name, "status": "failed", "metrics": list(group.metrics), "message": f"{type(exc).__name__}: {exc}"}
            )
    record_run(workspace, results)
    return results


def record_run(workspace: str | Path, results: Sequence[Mapping[str, Any]], now: datetime | None = None) -> Path:
    """Keep what a score run did for the next report (see :meth:`Workspace.record_run`).

    The report runs on its own schedule, so the groups that could not be
    scored, the versions used and the time covered reach it on disk. Scores
    and alert rows are committed before this; a crash before it loses only
    the summary lines, never an alert.
    """
    return Workspace(workspace).record_run(results, now)


def new_events(results: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The events a score run wrote, from its groups' results, most severe first."""
    files = [r["events_file"] for r in results if r.get("events_file")]
    if not files:
        return pd.DataFrame(columns=list(ALERT_COLUMNS))
    events = pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)
    rank = events["severity"].map(SEVERITY_RANK)
    return events.assign(_rank=rank).sort_values(["_rank", "peak_score"], ascending=[True, False]).drop(columns="_rank")
