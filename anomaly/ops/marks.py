"""Feedback on alerts: people mark an alert confirmed, false-positive or expected.

A mark is a record of who (default ``$USER``), when (UTC), what and why
(a note), optionally with a silence of the alert's series. Records are kept,
oldest first, in ``reports/marks.json`` (versioned, see
:mod:`anomaly.core.migrations`), rewritten atomically under a lock; the latest
record of an alert is its mark, the earlier ones its history. A mark names
the alert by id and keeps its model (group), metrics and span, never a model
version, so it survives retraining. What marks change:

- training (:func:`training_exclusions`, :func:`mask_spans`): the points of
  false-positive and expected alerts are kept out as missing;
- reports (:func:`silenced_until`, :func:`precision`): new alerts of a
  silenced series are listed as silenced, not announced, and each model's
  precision as marked is shown;
- the benchmark (:func:`export_labels`): confirmed marks become NAB-style
  anomaly windows beside the marked series' data.
"""

from __future__ import annotations

import getpass
import json
import os
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
from filelock import FileLock

from anomaly.core.data import MetricFrame
from anomaly.core.fileio import atomic_write_json, atomic_write_text, read_json
from anomaly.core.migrations import CURRENT, upgrade
from anomaly.errors import AnomalyError, DataError, excerpt
from anomaly.ops.workspace import Workspace

#: Version of the marks file's layout (see :mod:`anomaly.core.migrations`).
MARKS_VERSION = CURRENT["marks"]
CONFIRMED, FALSE_POSITIVE, EXPECTED = "confirmed", "false-positive", "expected"
KINDS: tuple[str, ...] = (CONFIRMED, FALSE_POSITIVE, EXPECTED)
#: Marks whose alert's points are kept out of later training data.
EXCLUDED_FROM_TRAINING = frozenset({FALSE_POSITIVE, EXPECTED})
#: The longest silence one mark may set: a forgotten silence must not hide a series for good.
MAX_SILENCE = pd.Timedelta("30D")
MAX_NOTE, MAX_NAME = 2_000, 100
LABELS_FILE = Path("labels") / "combined_windows.json"
_SAFE = re.compile(r"[^A-Za-z0-9_.-]")


@dataclass(frozen=True)
class Mark:
    """One person's verdict on one alert; times are ISO 8601 in UTC."""

    alert: str
    mark: str
    by: str
    at: str
    note: str
    model: str
    metrics: tuple[str, ...]
    start: str
    end: str
    silence_until: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "metrics": list(self.metrics)}

    @classmethod
    def from_json(cls, data: Any) -> Mark:
        """A record from its JSON, every field checked, so a damaged one is refused when read."""
        if not isinstance(data, Mapping):
            raise TypeError(f"a mark is a {type(data).__name__}, not a mapping")
        mark = cls(**{**data, "metrics": tuple(data["metrics"])})
        texts = (mark.alert, mark.mark, mark.by, mark.at, mark.note, mark.model, mark.start, mark.end, *mark.metrics)
        if not all(isinstance(t, str) for t in texts) or mark.mark not in KINDS:
            raise ValueError(f"mark of alert {excerpt(mark.alert)} has a field of the wrong kind")
        for stamp in (mark.at, mark.start, mark.end, mark.silence_until):
            if stamp is not None and pd.Timestamp(stamp).tzinfo is None:
                raise ValueError(f"time {excerpt(stamp)} has no time zone")
        return mark


@dataclass
class MarkBook:
    """Every mark ever made in a workspace, oldest first (the marks file's content)."""

    records: list[Mark] = field(default_factory=list)

    def current(self) -> dict[str, Mark]:
        """Each alert's mark: its latest record (a re-mark replaces the one before)."""
        return {m.alert: m for m in self.records}

    def history(self, alert: str) -> list[Mark]:
        """Every record of one alert, oldest first."""
        return [m for m in self.records if m.alert == alert]

    def to_json(self) -> dict[str, Any]:
        return {"format_version": MARKS_VERSION, "marks": [m.to_json() for m in self.records]}

    @classmethod
    def from_json(cls, data: Any, where: str) -> MarkBook:
        """Read a marks file of this layout or an earlier one; anything else is a one-line :class:`DataError` naming ``where``."""
        if not isinstance(data, Mapping):
            raise DataError(f"{where} is not a marks file: it holds a {type(data).__name__}, not a mapping")
        data = upgrade("marks", dict(data), data.get("format_version"), where)
        try:
            if not isinstance(data["marks"], list):
                raise TypeError(f"'marks' is a {type(data['marks']).__name__}, not a list")
            return cls([Mark.from_json(item) for item in data["marks"]])
        except AnomalyError:
            raise
        except (KeyError, TypeError, ValueError) as exc:
            problem = f"missing {excerpt(exc.args[0])}" if isinstance(exc, KeyError) else " ".join(str(exc).split())[:150]
            raise DataError(f"{where} is not a marks file: {problem}") from exc


def load_marks(workspace: Workspace | str | Path) -> MarkBook:
    """The workspace's marks (none yet: an empty book); a damaged file is a :class:`DataError` naming it, left as it is."""
    path = _space(workspace).marks_path
    if not path.exists():
        return MarkBook()
    return MarkBook.from_json(read_json(path, DataError, 64 << 20), excerpt(str(path), 300))


def parse_silence(text: str | None) -> pd.Timedelta | None:
    """``6h``, ``30min``, ``2d`` as a duration; a bad, non-positive or too long one is a :class:`DataError` naming it."""
    if text is None:
        return None
    try:
        duration = pd.Timedelta(str(text).strip())
    except (ValueError, TypeError) as exc:
        raise DataError(f"silence {excerpt(text)} is not a duration like '6h', '30min' or '2d'") from exc
    if pd.isna(duration) or duration <= pd.Timedelta(0) or duration > MAX_SILENCE:
        raise DataError(f"silence {excerpt(text)} must be more than 0 and at most {MAX_SILENCE.days} days")
    return duration


def mark_alert(
    workspace: Workspace | str | Path,
    alert: str,
    mark: str,
    *,
    note: str = "",
    silence: str | None = None,
    by: str | None = None,
    now: datetime | None = None,
) -> Mark:
    """Record ``mark`` on alert ``alert`` and return the record; earlier marks of it stay in its history.

    Everything is checked before the file is touched: an unknown kind, id,
    author or duration, or a damaged marks file, is a one-line
    :class:`DataError` and leaves the marks as they were.
    """
    if mark not in KINDS:
        raise DataError(f"mark {excerpt(mark)} is not one of {', '.join(KINDS)}")
    author = _author(by)
    if len(note) > MAX_NOTE:
        raise DataError(f"note of {len(note):,} characters is longer than the {MAX_NOTE:,} allowed")
    duration = parse_silence(silence)
    space = _space(workspace)
    if not space.root.is_dir():
        raise DataError(f"workspace {excerpt(str(space.root), 300)} is not a folder")
    moment = pd.Timestamp(now or datetime.now(timezone.utc)).tz_convert("UTC")
    space.reports_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(space.marks_lock_path):
        book = load_marks(space)
        row = find_alert(space, alert)
        record = Mark(
            alert=str(row["id"]),
            mark=mark,
            by=author,
            at=moment.isoformat(),
            note=note,
            model=str(row["model"]),
            metrics=tuple(m for m in str(row["metric"]).split(",") if m),
            start=pd.Timestamp(row["start"]).isoformat(),
            end=pd.Timestamp(row["end"]).isoformat(),
            silence_until=(moment + duration).isoformat() if duration is not None else None,
        )
        book.records.append(record)
        atomic_write_json(space.marks_path, book.to_json())
    return record


def _author(by: str | None) -> str:
    """Who marks: ``by``, else ``$USER`` (else the login name, else ``unknown``); one line of at most :data:`MAX_NAME` characters."""
    name = (by if by is not None else os.environ.get("USER") or _login()).strip()
    if not name or len(name) > MAX_NAME or not name.isprintable():
        raise DataError(f"--by {excerpt(by)} must be a name of 1 to {MAX_NAME} printable characters")
    return name


def _login() -> str:
    """The login name where ``$USER`` is not set (a service's worker), else ``unknown``."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def find_alert(workspace: Workspace | str | Path, alert: str) -> pd.Series:
    """The latest row of alert ``alert`` from the score runs' alert rows; an unknown id is a :class:`DataError` naming it."""
    space = _space(workspace)
    rows = space.alerts()
    found = rows[rows["id"].astype(str) == str(alert)]
    if found.empty:
        raise DataError(f"no alert {excerpt(alert)} in workspace {excerpt(str(space.root), 300)} ('anomaly alerts list' shows the ids)")
    return found.iloc[-1]


def alerts_table(workspace: Workspace | str | Path, *, model: str | None = None, limit: int | None = None) -> pd.DataFrame:
    """One row per alert the score runs raised, newest first, with its current mark: what ``alerts list`` prints."""
    space = _space(workspace)
    rows = space.alerts()
    if model is not None:
        rows = rows[rows["model"].astype(str) == model]
    rows = rows.iloc[::-1].iloc[:limit] if limit else rows.iloc[::-1]
    current = load_marks(space).current()
    return pd.DataFrame(
        [
            {
                "id": str(r.id), "model": str(r.model), "metrics": str(r.metric),
                "start": _short(r.start), "end": _short(r.end), "open": not bool(r.closed), "severity": str(r.severity),
                "mark": current[str(r.id)].mark if str(r.id) in current else "-",
                "by": current[str(r.id)].by if str(r.id) in current else "-",
            }  # fmt: skip
            for r in rows.itertuples(index=False)
        ],
        columns=["id", "model", "metrics", "start", "end", "open", "severity", "mark", "by"],
    )


def _short(stamp: Any) -> str:
    return pd.Timestamp(stamp).tz_convert("UTC").strftime("%Y-%m-%d %H:%M")


# -- training -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Exclusion:
    """A span of some metrics kept out of training, and the marked alert it comes from."""

    alert: str
    metrics: tuple[str, ...]
    start: pd.Timestamp
    end: pd.Timestamp


def training_exclusions(workspace: Workspace | str | Path, model: str, metrics: Sequence[str]) -> list[Exclusion]:
    """The spans of ``model``'s false-positive and expected alerts, on the marked metrics of ``metrics``.

    An alert marked while still open may have grown since: its span is
    taken from its latest alert row when the score runs still keep one.
    An alert that names no metric of the group covers all of them.
    """
    space = _space(workspace)
    marked = [m for m in load_marks(space).current().values() if m.model == model and m.mark in EXCLUDED_FROM_TRAINING]
    if not marked:
        return []
    rows = space.read_alert_rows([p for p in space.alert_parts() if Path(p).parts[1] == model])
    latest = rows.drop_duplicates("id", keep="last").set_index("id") if len(rows) else None
    out = []
    for m in marked:
        start, end = pd.Timestamp(m.start), pd.Timestamp(m.end)
        if latest is not None and m.alert in latest.index:
            start, end = min(start, pd.Timestamp(latest.at[m.alert, "start"])), max(end, pd.Timestamp(latest.at[m.alert, "end"]))
        chosen = tuple(x for x in metrics if x in m.metrics) if m.metrics else tuple(metrics)
        out.append(Exclusion(m.alert, chosen, start, end))
    return out


def mask_spans(frame: MetricFrame, exclusions: Iterable[Exclusion]) -> tuple[MetricFrame, int]:
    """``frame`` with the excluded points missing (not filled, so out of the loss), and how many were masked."""
    masked = pd.DataFrame(False, index=frame.values.index, columns=frame.values.columns)
    for ex in exclusions:
        inside = (frame.values.index >= ex.start) & (frame.values.index <= ex.end)
        for metric in ex.metrics:
            if metric in masked.columns:
                masked.loc[inside, metric] = True
    hidden = masked & frame.values.notna()
    return MetricFrame(frame.values.mask(masked), frame.filled & ~masked, frame.freq), int(hidden.to_numpy().sum())


# -- reports ------------------------------------------------------------------------------


def silenced_until(book: MarkBook, model: str, metrics: Sequence[str], moment: str | pd.Timestamp | None) -> str | None:
    """When the silence covering a new alert of ``model``/``metrics`` first reported at ``moment`` ends; None if none does.

    A silence covers its alert's model and metrics (all of the model's when
    the alert named none) from its mark's time until it ends.
    """
    if moment is None:
        return None
    when = pd.Timestamp(moment)
    ends = [
        m.silence_until
        for m in book.current().values()
        if m.silence_until is not None and m.model == model and (not m.metrics or not metrics or set(m.metrics) & set(metrics))
        and pd.Timestamp(m.at) <= when < pd.Timestamp(m.silence_until)
    ]
    return max(ends, key=pd.Timestamp) if ends else None


def precision(book: MarkBook, models: Iterable[str] | None = None) -> list[dict[str, Any]]:
    """Per model: confirmed, false-positive and expected marks, and confirmed / (confirmed + false-positive).

    Expected marks are counted apart: the model was right that something
    happened, and nobody needed paging. ``precision`` is None with no
    confirmed or false-positive mark. ``models`` limits and orders the rows.
    """
    tallies: dict[str, dict[str, int]] = {}
    for m in book.current().values():
        tallies.setdefault(m.model, dict.fromkeys(KINDS, 0))[m.mark] += 1
    names = sorted(tallies) if models is None else list(models)
    rows = []
    for name in names:
        t = tallies.get(name, dict.fromkeys(KINDS, 0))
        judged = t[CONFIRMED] + t[FALSE_POSITIVE]
        rows.append({
            "model": name, "confirmed": t[CONFIRMED], "false_positive": t[FALSE_POSITIVE], "expected": t[EXPECTED],
            "precision": round(t[CONFIRMED] / judged, 4) if judged else None,
        })  # fmt: skip
    return rows


def precision_text(row: Mapping[str, Any]) -> str:
    """``67% (2 confirmed, 1 false positive; 1 expected)``, or ``no marks`` / ``n/a (…)`` when nothing is judged."""
    counts = f"{row['confirmed']} confirmed, {row['false_positive']} false positive; {row['expected']} expected"
    if not (row["confirmed"] or row["false_positive"] or row["expected"]):
        return "no marks"
    return f"{row['precision']:.0%} ({counts})" if row["precision"] is not None else f"n/a ({counts})"


def marks_since(book: MarkBook, since: str | None) -> list[Mark]:
    """The records made after ``since`` (every record when None), oldest first."""
    return [m for m in book.records if since is None or pd.Timestamp(m.at) > pd.Timestamp(since)]


# -- export -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Export:
    """What ``export_labels`` wrote: the labels file, the series' data files, and the anomaly windows."""

    labels: Path
    files: list[Path]
    windows: int


def export_labels(workspace: Workspace | str | Path, out: str | Path) -> Export:
    """Write the marked series as a labelled corpus in the NAB layout (:mod:`anomaly.evaluation.corpus`).

    ``OUT/data/<model>/<metric>.csv`` holds each marked metric's stored
    points; ``OUT/labels/combined_windows.json`` its confirmed marks' spans
    as anomaly windows (``[]`` when it only has other marks), so the
    benchmark measures the product on a team's own marked history.
    """
    space, root = _space(workspace), Path(out)
    by_series: dict[tuple[str, str], list[Mark]] = {}
    for m in load_marks(space).current().values():
        for metric in m.metrics:
            by_series.setdefault((m.model, metric), []).append(m)
    store = space.store()
    stored = set(store.metrics())
    labels: dict[str, list[list[str]]] = {}
    files, names = [], {}
    for (model, metric), marks in sorted(by_series.items()):
        if metric not in stored:
            continue
        key = f"{model}/{_SAFE.sub('_', metric)}.csv"
        if key in names:
            raise DataError(f"metrics {names[key]!r} and {metric!r} would both be written as {key!r}")
        names[key] = metric
        points = store.read_wide([metric])[metric].dropna()
        path = root / "data" / key
        path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, pd.DataFrame({"timestamp": _nab_times(points.index), "value": points.to_numpy()}).to_csv(index=False))
        files.append(path)
        windows = sorted((pd.Timestamp(m.start), pd.Timestamp(m.end)) for m in marks if m.mark == CONFIRMED)
        labels[key] = [[_nab_time(a), _nab_time(b)] for a, b in windows]
    path = root / LABELS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps(labels, indent=2, sort_keys=True) + "\n")
    return Export(path, files, sum(len(w) for w in labels.values()))


def _nab_time(stamp: pd.Timestamp) -> str:
    """NAB's timestamp text: naive UTC with microseconds."""
    return stamp.tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S.%f")


def _nab_times(index: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray(index.tz_convert("UTC").strftime("%Y-%m-%d %H:%M:%S"))


def _space(workspace: Workspace | str | Path) -> Workspace:
    return workspace if isinstance(workspace, Workspace) else Workspace(workspace)
