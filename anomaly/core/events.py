"""Flagged points become anomaly events.

An operator wants one alert per incident, not one per point. Runs of flagged
points are padded, nearby runs merged, short ones dropped and weak ones pruned
(Hundman et al.'s rule), then each run is described: which metrics, when, how
far above the threshold, and a severity. The helpers work on plain arrays so
they are tested on hand-written cases.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import pandas as pd

from anomaly.core.config import EventConfig
from anomaly.core.scoring import Scores

EVENT_COLUMNS: tuple[str, ...] = (
    "start",
    "end",
    "metric",
    "peak_score",
    "threshold",
    "severity",
    "peak_time",
    "n_points",
    "n_above",
    "model",
    "version",
)

Run = tuple[int, int]  # [start, stop) positions

SEVERITY_LEVELS: tuple[str, ...] = ("low", "medium", "high", "critical")
# (peak score / threshold) at or above which a level starts; read with SEVERITY_LEVELS.
SEVERITY_RATIOS: tuple[float, ...] = (1.0, 1.5, 2.0, 4.0)


def flag_runs(flags: np.ndarray) -> list[Run]:
    """Contiguous runs of True as ``[start, stop)`` pairs."""
    f = np.asarray(flags, dtype=bool)
    edges = np.diff(np.concatenate(([0], f.astype(np.int8), [0])))
    return list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))


def pad_runs(runs: Sequence[Run], padding: int, n: int) -> list[Run]:
    """Widen each run by ``padding`` points on both sides, within ``[0, n)``."""
    return [(max(0, a - padding), min(n, b + padding)) for a, b in runs]


def merge_runs(runs: Sequence[Run], gap: int) -> list[Run]:
    """Merge runs that overlap or are separated by at most ``gap`` points."""
    merged: list[Run] = []
    for a, b in sorted(runs):
        if merged and a - merged[-1][1] <= gap:
            merged[-1] = (merged[-1][0], max(merged[-1][1], b))
        else:
            merged.append((a, b))
    return merged


def prune_runs(runs: Sequence[Run], peaks: Sequence[float], threshold: float, min_drop: float) -> list[Run]:
    """Keep the runs whose peak stands out (Hundman et al., KDD 2018, §3.2).

    Peaks are sorted descending with the threshold appended; walking down,
    the relative drop ``1 - next / current`` is computed; every run up to the
    last drop larger than ``min_drop`` is kept, the rest are reclassified as
    nominal. ``min_drop = 0`` keeps everything.
    """
    if min_drop <= 0 or not runs:
        return list(runs)
    order = np.argsort(-np.asarray(peaks, dtype=np.float64), kind="stable")
    ladder = np.append(np.asarray(peaks, dtype=np.float64)[order], threshold)
    with np.errstate(divide="ignore", invalid="ignore"):
        drops = np.where(ladder[:-1] > 0, 1.0 - ladder[1:] / ladder[:-1], 0.0)
    significant = np.flatnonzero(drops > min_drop)
    keep = set(order[: significant[-1] + 1].tolist()) if len(significant) else set()
    return [run for i, run in enumerate(runs) if i in keep]


def severity(peak: float, threshold: float, above: int = 0, sustained: int = 0) -> str:
    """Level from how far and how long the score rose above the threshold.

    The peak's ratio to the threshold picks the level (see SEVERITY_RATIOS);
    ``above`` points over the threshold, when at least ``sustained`` (> 0),
    raise it one level, up to critical.
    """
    ratio = peak / threshold if threshold > 0 else float("inf")
    level = max(int(np.searchsorted(SEVERITY_RATIOS, ratio, side="right")) - 1, 0)
    if sustained > 0 and above >= sustained:
        level += 1
    return SEVERITY_LEVELS[min(level, len(SEVERITY_LEVELS) - 1)]


def find_runs(flags: np.ndarray, score: np.ndarray, threshold: float, config: EventConfig) -> list[Run]:
    """Flag runs after padding, merging, minimum length and pruning, in time order."""
    runs = merge_runs(pad_runs(flag_runs(flags), config.padding, len(flags)), config.merge_gap)
    runs = [(a, b) for a, b in runs if b - a >= config.min_length]
    peaks = [float(np.nanmax(score[a:b])) for a, b in runs]
    return prune_runs(runs, peaks, threshold, config.prune)


def find_events(
    scores: Scores, config: EventConfig, model: str = "", version: str = ""
) -> pd.DataFrame:
    """One row per event (columns :data:`EVENT_COLUMNS`), most recent last."""
    score = scores.score.to_numpy(dtype=np.float64)
    runs = find_runs(scores.flags.to_numpy(dtype=bool), score, scores.threshold, config)
    rows = [_describe(scores, a, b, model, version, config.sustained) for a, b in runs]
    return pd.DataFrame(rows, columns=list(EVENT_COLUMNS))


def _describe(scores: Scores, a: int, b: int, model: str, version: str, sustained: int) -> dict[str, object]:
    span = scores.score.iloc[a:b]
    peak_at = int(np.nanargmax(span.to_numpy()))
    peak = float(span.iloc[peak_at])
    above = int(scores.flags.iloc[a:b].sum())
    return {
        "start": scores.score.index[a],
        "end": scores.score.index[b - 1],
        "metric": ",".join(contributing_metrics(scores, a, b)),
        "peak_score": peak,
        "peak_time": span.index[peak_at],
        "threshold": scores.threshold,
        "severity": severity(peak, scores.threshold, above, sustained),
        "n_points": b - a,
        "n_above": above,
        "model": model,
        "version": version,
    }


def contributing_metrics(scores: Scores, a: int, b: int) -> list[str]:
    """Metrics behind an event, strongest first.

    Those whose own score crossed their own threshold inside the span; if
    none did on its own, the one that came closest. A metric with no data in
    the span is never named.
    """
    ratios: dict[str, float] = {}
    for m in scores.metrics:
        span = scores.metric_scores[m].iloc[a:b].to_numpy(dtype=np.float64)
        if not np.isnan(span).all():
            ratios[m] = float(np.nanmax(span)) / max(scores.thresholds[m], 1e-12)
    crossed = [m for m in ratios if bool(scores.metric_flags[m].iloc[a:b].any())]
    chosen = crossed or ([max(ratios, key=ratios.__getitem__)] if ratios else [])
    return sorted(chosen, key=lambda m: -ratios[m])
