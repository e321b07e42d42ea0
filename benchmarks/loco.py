"""Leave-one-category-out choice of a policy on recorded benchmark runs, over several training seeds.

A default chosen on the whole development corpus fits that corpus. Here each
candidate policy is replayed on recordings of the corpus (``benchmarks/replay.py
record``, one folder per protocol and seed); for every category in turn the
candidate that does best on the *other* categories (pooled over the seeds) is
chosen, and its figures on the held-out category are what is reported. A
candidate that is best on every fold is a default the data did not have to be
fitted to.

    .venv/bin/python benchmarks/loco.py rec/batch-s0 rec/batch-s1 rec/batch-s2 --out loco-batch.json
    .venv/bin/python benchmarks/loco.py REC... --candidates my.json   # {"name": ["section.key=value", ...], ...}

Batch folds are chosen by pooled event F1 (tp/fp/fn over the other
categories, so events on anomaly-free files count as false); stream folds by
the pooled NAB standard score. Prints figures, never a verdict.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Sequence

from anomaly import AnomalyError, replay

#: Policies compared by default: no range gate (the score alone decides) and expected ranges of three widths. Every
#: candidate spells out its band, so a recording made under other defaults replays them as named.
CANDIDATES: dict[str, list[str]] = {
    "no-gate": ["events.band=null"],
    **{f"band{band}": [f"events.band={band}"] for band in ("0.99", "0.995", "0.999")},
}


def replay_one(job: tuple[str, str, list[str]]) -> tuple[str, str, dict[str, Any]]:
    folder, name, overrides = job
    return folder, name, replay(Path(folder), overrides)


def run_all(folders: Sequence[str], candidates: dict[str, list[str]], jobs: int) -> dict[str, dict[str, Any]]:
    """``{folder: {candidate: summary}}`` of every replay."""
    work = [(folder, name, overrides) for folder in folders for name, overrides in candidates.items()]
    out: dict[str, dict[str, Any]] = {folder: {} for folder in folders}
    with ProcessPoolExecutor(jobs) as pool:
        for folder, name, summary in pool.map(replay_one, work):
            out[folder][name] = summary
            print(f"replayed {name} on {folder}", file=sys.stderr, flush=True)
    return out


def pooled(summary: dict[str, Any], categories: set[str]) -> dict[str, float]:
    """Event precision/recall/F1 and NAB standard score of the files of ``categories``, pooled."""
    files = [v for k, v in summary["per_file"].items() if k.split("/")[0] in categories]
    tp, fp, fn = (sum(f[key] for f in files) for key in ("tp", "fp", "fn"))
    raw, windows = sum(f["nab_raw"] for f in files), tp + fn
    precision = tp / (tp + fp) if tp + fp else math.nan
    recall = tp / windows if windows else math.nan
    f1 = 2 * precision * recall / (precision + recall) if tp else (0.0 if windows else math.nan)
    nab = 100.0 * (raw + windows) / (windows + windows * 1.0) if windows else math.nan  # standard profile: fn -1, tp +1
    return {"precision": precision, "recall": recall, "f1": f1, "nab": nab, "events": sum(f["events"] for f in files), "fp": fp}


def choose(results: dict[str, dict[str, Any]], held_out: str, categories: set[str], objective: str) -> str:
    """The candidate with the best mean objective over the seeds on every category but ``held_out``."""
    others = categories - {held_out}

    def value(name: str) -> float:
        figures = [pooled(by_name[name], others)[objective] for by_name in results.values()]
        return statistics.fmean(f for f in figures if not math.isnan(f)) if any(not math.isnan(f) for f in figures) else -math.inf

    names = sorted(next(iter(results.values())))
    return max(names, key=value)


def folds(results: dict[str, dict[str, Any]], objective: str) -> list[dict[str, Any]]:
    """One row per held-out category: the candidate chosen without it, and its figures on it per recording."""
    first = next(iter(next(iter(results.values())).values()))
    categories = {k.split("/")[0] for k in first["per_file"]}
    rows = []
    for held_out in sorted(categories):
        chosen = choose(results, held_out, categories, objective)
        per_seed = [pooled(by_name[chosen], {held_out}) for by_name in results.values()]
        rows.append({"held_out": held_out, "chosen": chosen, "per_recording": per_seed})
    return rows


def markdown(rows: list[dict[str, Any]], folders: Sequence[str], objective: str) -> str:
    head = " | ".join(Path(f).name for f in folders)
    lines = [
        f"Chosen by pooled {objective} on the other categories; figures on the held-out one ({head}).",
        "",
        "| held out | chosen | F1 per recording | mean F1 | spread | precision (mean) | NAB (mean) | events (mean) |",
        "|---|---|---|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        figures = row["per_recording"]
        f1 = [r["f1"] for r in figures]
        valid = [x for x in f1 if not math.isnan(x)]
        spread = max(valid) - min(valid) if valid else math.nan
        lines.append(
            f"| {row['held_out']} | {row['chosen']} | {' / '.join(_f(x) for x in f1)} | {_f(_mean(f1))} | {_f(spread)} | "
            f"{_f(_mean([r['precision'] for r in figures]))} | {_f(_mean([r['nab'] for r in figures]), 1)} | "
            f"{_f(_mean([r['events'] for r in figures]), 1)} |"
        )
    return "\n".join(lines)


def _mean(values: Sequence[float]) -> float:
    valid = [v for v in values if not math.isnan(v)]
    return statistics.fmean(valid) if valid else math.nan


def _f(value: float, digits: int = 3) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.{digits}f}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("recordings", nargs="+", help="folders written by benchmarks/replay.py record (one protocol)")
    parser.add_argument("--candidates", type=Path, help="JSON {name: [section.key=value, ...]} (default: the built-in set)")
    parser.add_argument("--objective", choices=("f1", "nab"), default=None, help="default: f1 for batch, nab for stream")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write every replayed summary and the folds as JSON")
    args = parser.parse_args(argv)
    candidates = json.loads(args.candidates.read_text()) if args.candidates else CANDIDATES
    try:
        results = run_all(args.recordings, candidates, args.jobs)
    except AnomalyError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    protocol = next(iter(next(iter(results.values())).values()))["protocol"]
    objective = args.objective or ("f1" if protocol == "batch" else "nab")
    rows = folds(results, objective)
    print(markdown(rows, args.recordings, objective))
    print()
    print("| candidate | " + " | ".join(Path(f).name for f in args.recordings) + " |")
    print("|---|" + "---|" * len(args.recordings))
    for name in candidates:
        cells = []
        for folder in args.recordings:
            overall = results[folder][name]["overall"]
            cells.append(f"F1 {_f(overall['f1'])} P {_f(overall['precision'])} NAB {_f(overall['nab_score'], 1)}")
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.out:
        args.out.write_text(json.dumps({"results": results, "folds": rows}, indent=1, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
