"""The long-series suite (issue #28): write it as a labelled corpus, and read a benchmark run over it.

    .venv/bin/python benchmarks/suite.py generate --out suite/                  # 100 series, seed 0
    .venv/bin/anomaly benchmark suite/ --protocol stream --out bench-suite/
    .venv/bin/python benchmarks/suite.py report bench-suite/ --corpus suite/
    .venv/bin/python benchmarks/suite.py report bench-a/ bench-b/ --corpus suite/   # one row per run

``generate`` writes the NAB layout (:func:`anomaly.evaluation.suite.write_nab_layout`)
and prints what it holds: series per category and family, points,
metric-weeks, incidents per kind. ``report`` prints, as Markdown, the false
alerts per metric-week on the clean series and, on the incident series,
recall per kind, how close each caught incident's alert ends to the true end,
and precision. Runs of several alert budgets are compared side by side.
Prints figures, never a verdict.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Sequence

from anomaly import AnomalyError, build_suite, false_alerts_per_week, incident_report, suite_counts, write_nab_layout


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    gen = sub.add_parser("generate", help="write the suite in the NAB layout and print its counts")
    gen.add_argument("--out", type=Path, required=True, help="an empty (or absent) folder")
    gen.add_argument("--series", type=int, default=100, help="series in the suite, half of them clean (default 100)")
    gen.add_argument("--seed", type=int, default=0)
    rep = sub.add_parser("report", help="false alerts and incident detection of finished benchmark runs over the suite")
    rep.add_argument("runs", type=Path, nargs="+", metavar="BENCH_OUT", help="benchmark output folders (one per alert budget)")
    rep.add_argument("--corpus", type=Path, required=True, help="the suite's folder")
    args = parser.parse_args(argv)
    try:
        return generate(args.out, args.series, args.seed) if args.command == "generate" else report(args.runs, args.corpus)
    except AnomalyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def generate(out: Path, series: int, seed: int) -> int:
    started = time.perf_counter()
    suite = build_suite(series, seed)
    built = time.perf_counter()
    write_nab_layout(suite, out)
    written = time.perf_counter()
    counts = suite_counts(suite)
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"# Suite: {len(suite)} series, seed {seed}, in {out}\n")
    print(_table(["category", "series", "points", "metric-weeks", "scored weeks (stream)"], [
        [c, counts["series"].get(c, 0), f"{counts['points'].get(c, 0):,}", counts["weeks"].get(c, 0), counts["scored_weeks"].get(c, 0)]
        for c in counts["families"]
    ]))
    families = sorted({f for per in counts["families"].values() for f in per})
    print(_table(["family", *counts["families"]], [[f, *(per.get(f, 0) for per in counts["families"].values())] for f in families]))
    print(_table(["incident kind", "incidents"], [[k, n] for k, n in counts["incidents"].items()] + [["**all**", sum(counts["incidents"].values())]]))
    intervals = ", ".join(f"{m} min: {n}" for m, n in counts["intervals_minutes"].items())
    print(f"intervals: {intervals}; days: {counts['days']['min']}-{counts['days']['max']}")
    print(f"built in {built - started:.1f} s, written in {written - built:.1f} s; {size / 1e6:.1f} MB on disk")
    return 0


def report(runs: Sequence[Path], corpus: Path) -> int:
    alerts = [false_alerts_per_week(run, corpus) for run in runs]
    incidents = [incident_report(run, corpus) for run in runs]
    print(f"# Suite report: {corpus}\n")
    print("## False alerts per metric-week (clean series)\n")
    print(_table(["run", "protocol", "series", "alerts", "weeks", "pooled", "mean", "median", "p95", "max"], [
        [run, a["protocol"], a["series"], a["alerts"], _f(a["weeks"], 1), _f(a["pooled"]), _f(a["mean"]), _f(a["median"]), _f(a["p95"]), _f(a["max"])]
        for run, a in zip(runs, alerts)
    ]))
    by_family = _by_family(alerts, corpus)
    if by_family:
        print("Mean false alerts per metric-week, by family:\n")
        print(_table(["family", *map(str, runs)], [[f, *map(_f, rates)] for f, rates in by_family.items()]))
    for run, r in zip(runs, incidents):
        print(f"## Incidents: {run}\n")
        rows = [[k, v["incidents"], v["caught"], _f(v["recall"]), _f(v["end_within"]), _f(v["median_end_error_minutes"], 0)] for k, v in r["kinds"].items()]
        o = r["overall"]
        rows.append(["**all**", o["incidents"], o["caught"], _f(o["recall"]), _f(o["end_within"]), _f(o["median_end_error_minutes"], 0)])
        print(_table(["kind", "incidents", "caught", "recall", "end within", "median end error (min)"], rows))
        print(f"alerts {r['alerts']}, true {r['true_alerts']}: precision {_f(r['precision'])}, median per series {_f(r['median_series_precision'])}\n")
    print("Caught: an alert overlaps the incident's window. End within: the alert ends within max(1 h, 25 % of the")
    print("incident's duration) of the window's end (persisting changes are labelled on their onset only).")
    for run, a, r in zip(runs, alerts, incidents):
        if a["missing"] or r["missing"]:
            print(f"\n{run}: no events file for {len(a['missing']) + len(r['missing'])} series (failed or not run), left out.")
    return 0


def _by_family(alerts: Sequence[dict[str, Any]], corpus: Path) -> dict[str, list[float]]:
    """Each family's mean false-alert rate in each run, from the suite's ``labels/series.json``."""
    path = corpus / "labels" / "series.json"
    if not path.is_file():
        return {}
    family = {key: about["family"] for key, about in json.loads(path.read_text()).items()}
    names = sorted({family[k] for a in alerts for k in a["per_series"] if k in family})
    return {
        name: [statistics.fmean([r["per_week"] for k, r in a["per_series"].items() if family.get(k) == name] or [math.nan]) for a in alerts]
        for name in names
    }


def _f(value: float, digits: int = 3) -> str:
    return "–" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(map(str, header)) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
