"""What an alert report costs: a report with new alerts and their plots, and a quiet one, at many metrics.

Builds a workspace the way score runs leave it (score parts, events, state
files and run records for ``--metrics`` one-metric groups, ``--alerts`` of
them with an incident), then times report runs with the library's
``write_report``:

    .venv/bin/python benchmarks/reports.py --metrics 1000 --alerts 20

Prints the wall time of the report with the new alerts (plots included),
of the next report (the alerts ongoing), and of a quiet one, plus the files'
sizes. Nothing here is asserted: the figures go to the README.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from anomaly.ops.jobs import EVENTS, RUNS, SCORES, STATE, record_run
from anomaly.ops.reports import write_report

STEP = pd.Timedelta("1min")
START = pd.Timestamp("2026-03-01", tz="UTC")


def build(root: Path, metrics: int, alerts: int, points: int, seed: int = 0) -> None:
    """One score run's parts for every metric; the first ``alerts`` metrics have an event at the end."""
    rng = np.random.default_rng(seed)
    index = pd.date_range(START, periods=points, freq=STEP)
    results = []
    for i in range(metrics):
        name = f"metric_{i:04d}"
        values = 50 + 10 * np.sin(np.arange(points) / 60) + rng.normal(0, 1, points)
        score = np.abs(rng.normal(0, 0.1, points))
        if i < alerts:
            values[-20:] += 40
            score[-20:] += np.linspace(0.5, 3, 20)
        frame = pd.DataFrame(
            {
                "timestamp": index, name: values, f"reconstruction_{name}": values - rng.normal(0, 1, points),
                "anomaly_score": score, "threshold": 0.5, "flag": score > 0.5, "filled": False,
            }
        )  # fmt: skip
        stamp = f"{(START - STEP).strftime('%Y%m%dT%H%M%S%f')}-{i:08x}"
        (root / SCORES / name).mkdir(parents=True)
        frame.to_parquet(root / SCORES / name / f"part-{stamp}.parquet", index=False)
        state = {"last_scored": index[-1].isoformat(), "version": "000001", "step_s": 60.0, "gap_s": 780.0, "sustained": 30}
        (root / SCORES / name / STATE).write_text(json.dumps(state))
        flagged = frame[frame["flag"]]
        if i < alerts:
            (root / EVENTS / name).mkdir(parents=True)
            peak = flagged.loc[flagged["anomaly_score"].idxmax()]
            event = {
                "start": flagged["timestamp"].iloc[0], "end": flagged["timestamp"].iloc[-1], "metric": name,
                "peak_score": float(peak["anomaly_score"]), "threshold": 0.5, "severity": "critical",
                "peak_time": peak["timestamp"], "n_points": len(flagged), "n_above": len(flagged), "model": name, "version": "000001",
            }  # fmt: skip
            pd.DataFrame([event]).to_parquet(root / EVENTS / name / f"part-{stamp}.parquet", index=False)
        results.append(
            {"group": name, "status": "scored", "metrics": [name], "version": "000001", "points": points,
             "events": int(i < alerts), "from": index[0].isoformat(), "to": index[-1].isoformat()}
        )  # fmt: skip
    for i in range(0, metrics, max(1, metrics // 64)):  # the flow records one run per batch of groups
        record_run(root, results[i : i + max(1, metrics // 64)])


def timed(root: Path, now: pd.Timestamp) -> tuple[float, dict]:
    began = time.perf_counter()
    report = write_report(root, now=now)
    return time.perf_counter() - began, {k: p.stat().st_size for k, p in report.paths.items()} | {"alerts": len(report.document["alerts"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--metrics", type=int, default=1000)
    parser.add_argument("--alerts", type=int, default=20)
    parser.add_argument("--points", type=int, default=120, help="points per metric in the scored period")
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="report-bench-"))
    try:
        began = time.perf_counter()
        build(root, args.metrics, args.alerts, args.points)
        print(f"workspace: {args.metrics} metrics, {args.alerts} with an incident, built in {time.perf_counter() - began:.1f} s")
        now = pd.Timestamp.now(tz="UTC")
        for label, moment in (("new alerts (plots)", now), ("ongoing (plots again)", now + pd.Timedelta("5min"))):
            seconds, sizes = timed(root, moment)
            print(f"report with {sizes['alerts']} {label}: {seconds:.2f} s; html {sizes['html'] / 1e6:.2f} MB, json {sizes['json'] / 1e3:.0f} kB, md {sizes['markdown'] / 1e3:.0f} kB")
        shutil.rmtree(root / EVENTS)
        for name in (root / SCORES).iterdir():  # everything scored on, so every alert resolves and then all is quiet
            state = json.loads((name / STATE).read_text())
            (name / STATE).write_text(json.dumps({**state, "last_scored": (START + STEP * (args.points + 60)).isoformat()}))
        for path in (root / RUNS).iterdir():
            path.unlink()
        seconds, sizes = timed(root, now + pd.Timedelta("10min"))
        print(f"report with {sizes['alerts']} resolved, no plots: {seconds:.2f} s")
        record_run(root, [{"group": f"metric_{i:04d}", "status": "no-new-data", "metrics": [f"metric_{i:04d}"]} for i in range(args.metrics)])
        seconds, sizes = timed(root, now + pd.Timedelta("15min"))
        print(f"quiet report over {args.metrics} metrics: {seconds:.2f} s; html {sizes['html'] / 1e3:.1f} kB")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
