"""What an alert report costs: a report with new alerts and their plots, and a quiet one, at many metrics.

Builds a workspace the way score runs leave it, through the library's own
:class:`anomaly.Workspace` (score parts, alert rows, score states and run
records for ``--metrics`` one-metric groups, ``--alerts`` of them with an
incident; alert rows come from :class:`anomaly.AlertTracker`, as in a score
run), then times report runs with :func:`anomaly.write_report`:

    .venv/bin/python benchmarks/reports.py --metrics 1000 --alerts 20

Prints the wall time of the report with the new alerts (plots included),
of the next one (the alerts ongoing and extended by another score run, so
drawn again), of the one after the alerts resolve, and of a quiet one, plus
the files' sizes. Nothing here is asserted: the figures go to the README.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from typing import Any

import numpy as np
import pandas as pd

from anomaly import AlertTracker, DetectorConfig, Scores, ScoreState, Workspace, write_report

STEP = pd.Timedelta("1min")
START = pd.Timestamp("2026-03-01", tz="UTC")
VERSION = "000001"
THRESHOLD = 0.5
EVENTS = DetectorConfig().events
#: Points of each score run after the first: flagged ones extend an open alert, quiet ones close it.
EXTEND_POINTS, QUIET_POINTS = 20, EVENTS.merge_gap + 2


def metric_names(metrics: int) -> list[str]:
    return [f"metric_{i:04d}" for i in range(metrics)]


def chunk_scores(name: str, index: pd.DatetimeIndex, rng: np.random.Generator, incident: bool) -> Scores:
    """One metric's scores over ``index``: a daily-ish wave under the threshold, or above it throughout an incident."""
    n = len(index)
    values = 50 + 10 * np.sin(np.arange(n) / 60) + rng.normal(0, 1, n)
    score = np.clip(np.abs(rng.normal(0, 0.1, n)), 0, 0.4)
    if incident:
        values += 40
        score += np.linspace(0.6, 3, n)
    flags = pd.Series(score > THRESHOLD, index=index)
    frame = pd.DataFrame({name: values}, index=index)
    return Scores(
        values=frame,
        reconstruction=frame - rng.normal(0, 1, (n, 1)),
        metric_scores=pd.DataFrame({name: score}, index=index),
        score=pd.Series(score, index=index, name="anomaly_score"),
        thresholds={name: THRESHOLD},
        threshold=THRESHOLD,
        metric_flags=pd.DataFrame({name: flags}),
        flags=flags,
        filled=pd.DataFrame({name: False}, index=index),
    )


def score_run(space: Workspace, names: list[str], points: int, incident: set[str], rng: np.random.Generator) -> list[dict[str, Any]]:
    """One score run over ``names``: each scores ``points`` new points after its state, as ``score_group`` commits them.

    Metrics in ``incident`` score above the threshold at the end of their
    chunk (the whole chunk after the first run). Returns the per-group
    results a score run records.
    """
    results = []
    for name in names:
        state = space.score_state(name)
        last = state.last_scored if state is not None else START - STEP
        index = pd.date_range(last + STEP, periods=points, freq=STEP, name="timestamp")
        scores = chunk_scores(name, index, rng, incident=False)
        if name in incident:  # the first run's incident starts 20 points before its end; later runs are in it throughout
            start = len(index) - 20 if state is None else 0
            tail = chunk_scores(name, index[start:], rng, incident=True)
            scores = concat_scores(scores, tail, start)
        tracker = AlertTracker(EVENTS, STEP, model=name, version=VERSION)
        alerts, tracked = tracker.advance(scores, state.tracker if state is not None else None)
        files = space.write_parts(name, last, scores.to_frame().reset_index(), alerts, None)
        space.write_score_state(
            name,
            ScoreState(
                last_scored=index[-1], version=VERSION, policy=None, carry=None, carry_key=None,
                step_s=STEP / pd.Timedelta("1s"), sustained=EVENTS.sustained, tracker=tracked,
            ),
        )  # fmt: skip
        results.append(
            {"group": name, "status": "scored", "metrics": [name], "version": VERSION, "points": points,
             "events": len(alerts), "from": index[0].isoformat(), "to": index[-1].isoformat(),
             "scores_file": str(files.scores), "events_file": str(files.alerts) if files.alerts else None}
        )  # fmt: skip
    return results


def concat_scores(head: Scores, tail: Scores, start: int) -> Scores:
    """``head``'s first ``start`` points followed by ``tail`` (which covers the rest)."""

    def join(a: Any, b: Any) -> Any:
        return pd.concat([a.iloc[:start], b])

    return Scores(
        values=join(head.values, tail.values), reconstruction=join(head.reconstruction, tail.reconstruction),
        metric_scores=join(head.metric_scores, tail.metric_scores), score=join(head.score, tail.score),
        thresholds=head.thresholds, threshold=head.threshold, metric_flags=join(head.metric_flags, tail.metric_flags),
        flags=join(head.flags, tail.flags), filled=join(head.filled, tail.filled),
    )  # fmt: skip


def record(space: Workspace, names: list[str], results: list[dict[str, Any]]) -> None:
    """The run records a score flow leaves: one per batch of groups (about 64 batches), groups without new points included."""
    scored = {r["group"] for r in results}
    every = results + [{"group": n, "status": "no-new-data", "metrics": [n], "version": VERSION, "points": 0, "events": 0}
                       for n in names if n not in scored]  # fmt: skip
    size = max(1, len(every) // 64)
    for i in range(0, len(every), size):
        space.record_run(every[i : i + size])


def timed(space: Workspace, now: pd.Timestamp) -> tuple[float, dict[str, Any]]:
    began = time.perf_counter()
    report = write_report(space.root, now=now)
    seconds = time.perf_counter() - began
    states = [a["state"] for a in report.document["alerts"]]
    return seconds, {k: p.stat().st_size for k, p in report.paths.items()} | {"alerts": len(states), "states": states}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=int, default=1000)
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--points", type=int, default=120, help="points per metric in the first scored period")
    args = parser.parse_args()
    if not 0 <= args.alerts <= args.metrics or args.points < 21:
        parser.error("--alerts must be between 0 and --metrics, and --points at least 21")
    space = Workspace(tempfile.mkdtemp(prefix="report-bench-"))
    rng = np.random.default_rng(0)
    names = metric_names(args.metrics)
    alerted = names[: args.alerts]
    try:
        began = time.perf_counter()
        record(space, names, score_run(space, names, args.points, set(alerted), rng))
        print(f"workspace: {args.metrics} metrics, {args.alerts} with an incident, built in {time.perf_counter() - began:.1f} s")
        now = pd.Timestamp.now(tz="UTC")
        seconds, sizes = timed(space, now)
        print(f"report with {sizes['states'].count('new')} new alerts (plots): {seconds:.2f} s; html {sizes['html'] / 1e6:.2f} MB, "
              f"json {sizes['json'] / 1e3:.0f} kB, md {sizes['markdown'] / 1e3:.0f} kB")

        record(space, names, score_run(space, alerted, EXTEND_POINTS, set(alerted), rng))
        seconds, sizes = timed(space, now + pd.Timedelta("5min"))
        print(f"report with {sizes['states'].count('ongoing')} ongoing alerts, extended (plots again): {seconds:.2f} s; "
              f"html {sizes['html'] / 1e6:.2f} MB")

        record(space, names, score_run(space, alerted, QUIET_POINTS, set(), rng))
        seconds, sizes = timed(space, now + pd.Timedelta("10min"))
        print(f"report with {sizes['states'].count('resolved')} resolved, no plots: {seconds:.2f} s")

        record(space, names, [])
        seconds, sizes = timed(space, now + pd.Timedelta("15min"))
        print(f"quiet report over {args.metrics} metrics: {seconds:.2f} s; html {sizes['html'] / 1e3:.1f} kB")
    finally:
        shutil.rmtree(space.root, ignore_errors=True)


if __name__ == "__main__":
    main()
