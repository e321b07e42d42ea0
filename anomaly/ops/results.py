"""Writing detection results: scores and events as CSV and versioned JSON.

The CLI, the demo and the flows all write the same files with the same
columns, so scripts that read them work whichever front end produced them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from anomaly.errors import ConfigError, excerpt
from anomaly.core.events import EVENT_COLUMNS

EVENTS_SCHEMA_VERSION = 1
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def check_out_folder(out: Path, option: str = "output folder") -> None:
    """Refuse, before any work, a folder to write into that is a file, lies under one, or cannot be written.

    ``option`` names it in the error (the CLI passes ``--out``). Nothing is
    created: a run that fails later leaves no empty folder behind.
    """
    where = f"{option} {excerpt(str(out), 300)}"
    try:
        if out.exists() and not out.is_dir():
            raise ConfigError(f"{where} is a file, not a folder")
        nearest = out if out.exists() else next(p for p in out.absolute().parents if p.exists())
    except OSError as exc:
        raise ConfigError(f"{where} cannot be checked: {exc.strerror or type(exc).__name__}") from exc
    if not nearest.is_dir():
        raise ConfigError(f"{where} cannot be created: {excerpt(str(nearest), 300)} is a file, not a folder")
    if not os.access(nearest, os.W_OK | os.X_OK):
        raise ConfigError(f"{where} cannot be written: no permission to write in {excerpt(str(nearest), 300)}")


def write_results(scores: pd.DataFrame, events: pd.DataFrame, out: Path) -> list[Path]:
    """scores.csv, events.csv and events.json in ``out`` (refused first if ``out`` cannot be a folder)."""
    check_out_folder(out)
    out.mkdir(parents=True, exist_ok=True)
    scores_path, csv_path, json_path = out / "scores.csv", out / "events.csv", out / "events.json"
    scores.to_csv(scores_path, date_format=_TIME_FORMAT)
    events[list(EVENT_COLUMNS)].to_csv(csv_path, index=False, date_format=_TIME_FORMAT)
    json_path.write_text(json.dumps(events_to_json(events), indent=2) + "\n")
    return [scores_path, csv_path, json_path]


def events_to_json(events: pd.DataFrame) -> dict[str, Any]:
    """The documented events document: ``{"schema_version": 1, "events": [...]}``."""
    items = []
    for row in events.itertuples(index=False):
        items.append(
            {
                "start": pd.Timestamp(row.start).isoformat(),
                "end": pd.Timestamp(row.end).isoformat(),
                "metrics": [m for m in str(row.metric).split(",") if m],
                "peak_score": float(row.peak_score),
                "peak_time": pd.Timestamp(row.peak_time).isoformat(),
                "threshold": float(row.threshold),
                "severity": row.severity,
                "n_points": int(row.n_points),
                "n_above": int(row.n_above),
                "model": row.model,
                "version": row.version,
            }
        )
    return {"schema_version": EVENTS_SCHEMA_VERSION, "events": items}


def write_table(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix.lower() in {".parquet", ".pq"}:
        frame.to_parquet(path, index=False)
    else:
        frame.to_csv(path, index=False)
