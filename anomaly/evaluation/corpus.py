"""A labelled corpus in the NAB layout: its files, their anomaly windows, and how a file is read.

A corpus is ``data/<category>/<file>.csv`` (``timestamp,value``) with
``labels/combined_windows.json`` mapping ``"<category>/<file>.csv"`` to its
anomaly windows (``[]`` for a file without anomalies).
"""

from __future__ import annotations

import fnmatch
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd

from anomaly.core.data import as_utc, parse_timestamps
from anomaly.errors import AnomalyError, DataError
from anomaly.evaluation.metrics import Interval

LABELS = Path("labels") / "combined_windows.json"


class BenchmarkError(AnomalyError):
    """A corpus or output folder the benchmark cannot use."""


@dataclass(frozen=True)
class CorpusFile:
    """One labelled series: where it is and its anomaly windows (inclusive)."""

    category: str
    name: str
    path: Path
    windows: tuple[Interval, ...]

    @property
    def key(self) -> str:
        return f"{self.category}/{self.name}"

    @property
    def stem(self) -> str:
        return Path(self.name).stem


def load_corpus(root: str | Path, patterns: Sequence[str] = ()) -> list[CorpusFile]:
    """The corpus's files (those matching any glob in ``patterns`` on ``category/file.csv``), sorted.

    Every data file must have an entry in the labels (``[]`` when it has no
    anomaly): a file the labels forget would otherwise be scored as clean.
    """
    root = Path(root)
    data = root / "data"
    if not data.is_dir():
        raise BenchmarkError(f"corpus {str(root)!r} has no data/ folder (expected data/<category>/<file>.csv)")
    labels = _read_labels(root / LABELS)
    paths = sorted(p for p in data.glob("*/*.csv") if p.is_file())
    files = []
    for path in paths:
        key = f"{path.parent.name}/{path.name}"
        if patterns and not any(fnmatch.fnmatch(key, p) for p in patterns):
            continue
        if key not in labels:
            raise BenchmarkError(f"{key!r} has no entry in {LABELS} (use [] for a file without anomalies)")
        files.append(CorpusFile(path.parent.name, path.name, path, labels[key]))
    if not files:
        what = f" matching {', '.join(map(repr, patterns))}" if patterns else ""
        raise BenchmarkError(f"no data/<category>/<file>.csv files{what} in corpus {str(root)!r}")
    return files


def _read_labels(path: Path) -> dict[str, tuple[Interval, ...]]:
    try:
        raw = json.loads(path.read_text())
    except OSError as exc:
        raise BenchmarkError(f"cannot read the labels {str(path)!r}: {exc.strerror}") from exc
    except json.JSONDecodeError as exc:
        raise BenchmarkError(f"labels {str(path)!r} are not valid JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise BenchmarkError(f"labels {str(path)!r} must map 'category/file.csv' to windows, got {type(raw).__name__}")
    return {key: _windows(key, value) for key, value in raw.items()}


def _windows(key: str, value: Any) -> tuple[Interval, ...]:
    try:
        windows = tuple((as_utc(a), as_utc(b)) for a, b in value)
    except (TypeError, ValueError) as exc:
        raise BenchmarkError(f"labels for {key!r} must be a list of [start, end] timestamps, got {value!r}") from exc
    for a, b in windows:
        if b < a:
            raise BenchmarkError(f"labels for {key!r} have a window ending before it starts: [{a}, {b}]")
    return windows


def read_series(path: Path) -> pd.DataFrame:
    """A NAB file as ``timestamp`` (parsed) and ``value`` (float), in file order."""
    try:
        frame = pd.read_csv(path)
    except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise DataError(f"cannot read {str(path)!r}: {exc}") from exc
    missing = [c for c in ("timestamp", "value") if c not in frame.columns]
    if missing:
        raise DataError(f"{str(path)!r} has no {missing[0]!r} column (columns: {', '.join(map(str, frame.columns))})")
    try:
        stamps = pd.Series(parse_timestamps(frame["timestamp"]))
    except DataError as exc:
        raise DataError(f"{str(path)!r}: {exc}") from exc
    values = pd.to_numeric(frame["value"], errors="coerce")
    bad = values.isna() & frame["value"].notna()
    if bad.any():
        raise DataError(f"{str(path)!r} has a non-numeric value {frame['value'][bad].iloc[0]!r} at row {int(np.flatnonzero(bad)[0]) + 2}")
    return pd.DataFrame({"timestamp": stamps, "value": values.astype(np.float64)})
