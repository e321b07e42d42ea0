"""The raw store: an append-only, de-duplicated Parquet store of metric points.

Ingest flows append what a source returned; train and score flows read one
metric's history back. Points are long form ``(metric, timestamp, value)``
with UTC nanosecond timestamps and float64 values.

Layout (``root`` is any local folder)::

    <root>/raw/metric=<metric>/date=<YYYY-MM-DD>/part-<batch_id>.parquet
    <root>/commits/<batch_id>.json    the commit record: files, rows and time range per metric
    <root>/pending/<batch_id>.json    intent record of a batch being written (gone once committed)
    <root>/quarantine/<batch_id>.parquet  points refused as implausible, with the reason and origin
    <root>/watermarks.json            {metric: latest ISO timestamp}, derived from the commits
    <root>/series.json                each series' metric name and labels (:mod:`anomaly.io.catalogue`)
    <root>/.lock                      serialises writers across processes

Partitioning by metric and UTC day means reading one metric's recent history
opens only that metric's recent day folders. A part file holds all three
columns, so it is readable on its own; the folder names are for pruning.

Guarantees, each with a test:

- *Atomic batches.* Under the lock a writer records its intent (the files it
  will write) in ``pending/``, writes and fsyncs the part files, then writes
  ``commits/<batch_id>.json`` with ``os.replace``: that is the commit point. A
  part file is visible only when its batch (named in the file name) has a
  commit record, so a writer that raises or is killed before it leaves reads
  exactly as they were. Readers list ``commits/`` before the partitions, so a
  read is a consistent snapshot even while a writer commits. The next append
  removes the files of pending batches whose writer is gone (the batch id
  embeds the writer's pid); a writer that raises removes its own at once.
- *No lost or doubled points.* A point is identified by (metric, timestamp).
  Within one batch the last row wins; across batches the first stored wins
  (the store is append-only: a later pull never rewrites history). So re-runs
  and overlapping pulls neither lose nor double-count points, and late points
  (older than the watermark but new) are kept.
- *Watermarks are derived data.* ``watermarks.json`` is rewritten after each
  commit. A writer killed between the commit and that rewrite leaves it one
  batch behind, which :meth:`RawStore.watermarks` corrects from the newest
  commit record; a missing or unreadable file is recomputed from the data. A
  watermark that lags only makes a source fetch some overlap again, which is
  de-duplicated; it is never ahead of the data, which could skip points.
- *No point from the future.* A point far past the clock (a year 2262 typo)
  would move its metric's watermark past every real point to come, and a
  point decades before the metric's history is a bug, not data. Such points
  are quarantined (kept under ``quarantine/`` with the reason, never read as
  data) by the rule of :class:`TimeLimits`; a watermark past the clock (a
  store written before the rule) is not trusted, and :meth:`RawStore.repair`
  moves such points to quarantine, as crash-safely as an append.

Metric names become folder names, so they are restricted to letters, digits,
``_ . : -`` (see :func:`check_metric_name`); ``=`` and ``%`` are refused
because Hive-style readers split ``key=value`` and URL-decode folder names.
Sources with label sets (Prometheus series, SQL dimensions) map them to such
keys themselves and record each key's name and labels in the series
catalogue (:meth:`RawStore.record_series`).

The store is local-disk only: the commit protocol relies on ``os.replace``,
``fsync`` and ``flock``, which object stores and some network filesystems do
not provide.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import posixpath
import re
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from filelock import FileLock

from anomaly.core.data import (
    LONG_COLUMNS,
    MAX_METRICS,
    NS_MAX,
    NS_MIN,
    TIME_COLUMNS,
    as_utc,
    numeric_values,
    parse_timestamps,
    step_text,
)
from anomaly.errors import ConfigError, DataError, excerpt
from anomaly.core.fileio import atomic_write_json, fsync_dir, pid_alive
from anomaly.io.catalogue import CATALOGUE, Series, merge, read_catalogue, write_catalogue

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RAW, COMMITS, PENDING, WATERMARKS, LOCK = "raw", "commits", "pending", "watermarks.json", ".lock"
QUARANTINE = "quarantine"
#: Optional column of appended points naming where each came from (a file), for warnings and quarantine.
ORIGIN = "origin"
METRIC_PREFIX, DATE_PREFIX, PART_PREFIX, PART_SUFFIX = "metric=", "date=", "part-", ".parquet"
LOCK_TIMEOUT_S = 60.0
#: Times a read starts over when a file it listed was compacted away meanwhile.
READ_ATTEMPTS = 3
COLUMNS: tuple[str, str, str] = ("metric", "timestamp", "value")
TIMESTAMP_TYPE = pa.timestamp("ns", tz="UTC")
SCHEMA = pa.schema([("metric", pa.string()), ("timestamp", TIMESTAMP_TYPE), ("value", pa.float64())])
QUARANTINE_SCHEMA = pa.schema([*SCHEMA, ("reason", pa.string()), ("origin", pa.string())])
#: A quoted metric name is cut past this: an over-long (201+ character) name still shows whole.
NAME_CHARS = 250
_METRIC = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_.:-]{0,199}")
_BATCH = re.compile(r"\d{8}T\d{12}Z-(\d+)-[0-9a-f]{8}")
#: Defaults of :class:`TimeLimits` (see there for why).
DEFAULT_MAX_AHEAD = pd.Timedelta("1D")
DEFAULT_EARLIEST = pd.Timestamp("1970-01-01", tz="UTC")
DEFAULT_MAX_SPAN = pd.Timedelta(days=3652)
LIMIT_ENV = {
    "max_ahead": "ANOMALY_STORE_MAX_AHEAD",
    "earliest": "ANOMALY_STORE_EARLIEST",
    "max_span": "ANOMALY_STORE_MAX_SPAN",
}


# -- validation ----------------------------------------------------------------------


def check_metric_name(name: object) -> str:
    """Reject metric names that are unsafe or ambiguous as a ``metric=<name>`` folder.

    Allowed: 1-200 letters, digits, ``_ . : -``, starting with a letter, digit,
    ``_`` or ``:`` (so Prometheus metric names pass unchanged), without ``..``.
    Separators could escape the store; ``=``/``%`` confuse Hive-style readers.
    """
    if not isinstance(name, str) or not _METRIC.fullmatch(name) or ".." in name:
        raise DataError(
            f"invalid metric name {excerpt(name, NAME_CHARS)}: use 1-200 letters, digits, '_', '.', ':' or '-', starting "
            "with a letter, digit, '_' or ':', without '..', path separators, '=' or spaces"
        )
    return name


def empty_points() -> pd.DataFrame:
    """The long form with no rows, typed like every other result."""
    return pd.DataFrame(
        {
            "metric": pd.Series([], dtype=object).astype(str),
            "timestamp": pd.DatetimeIndex([], dtype="datetime64[ns, UTC]"),
            "value": np.array([], dtype=np.float64),
        }
    )


def validate_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Long-form points as ``metric`` (str), ``timestamp`` (ns UTC), ``value`` (float64).

    Accepts ``metric`` and ``value`` columns (any case) with timestamps in a
    DatetimeIndex or a column named like :data:`anomaly.core.data.TIME_COLUMNS`, as
    :func:`anomaly.core.data.to_wide` does; other columns are ignored. Timestamps
    and values go through :mod:`anomaly.core.data`'s parsers, so the rules (naive
    means UTC, numbers are epoch seconds, text or infinity is refused) are the
    same everywhere. Missing values stay NaN: a missing value is no point, and
    what to do about it is the caller's decision. Row order is kept.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame of points, got {type(frame).__name__}")
    if len(frame) == 0:
        return empty_points()
    lower = {str(c).lower(): c for c in frame.columns}
    time_col = next((lower[c] for c in TIME_COLUMNS if c in lower), None)
    has_time = isinstance(frame.index, pd.DatetimeIndex) or time_col is not None
    if not (has_time and all(c in lower for c in LONG_COLUMNS)):
        raise DataError(
            "expected long-form points with columns metric, timestamp, value (timestamps may also be "
            f"the index); got columns {excerpt([str(c) for c in frame.columns], 200)}"
        )
    raw_stamps = frame.index if isinstance(frame.index, pd.DatetimeIndex) else frame[time_col]
    stamps = pd.DatetimeIndex(parse_timestamps(raw_stamps).as_unit("ns"), name="timestamp")
    metrics = _metric_names(frame[lower["metric"]])
    values = _point_values(frame[lower["value"]], metrics, stamps)
    return pd.DataFrame({"metric": metrics, "timestamp": stamps, "value": values})


def _metric_names(column: pd.Series) -> np.ndarray:
    """Metric names as strings, each checked once: a bad one is named with its first row."""
    raw = pd.Series(column.to_numpy(dtype=object))
    if raw.isna().any():
        raise DataError(f"missing metric name at row {int(np.flatnonzero(raw.isna().to_numpy())[0])}")
    names = raw.astype(str).to_numpy(dtype=object)
    for name in pd.unique(names):
        try:
            check_metric_name(name)
        except DataError as exc:
            row = int(np.flatnonzero(names == name)[0])
            raise DataError(f"{exc} (row {row})") from None
    return names


def _point_values(column: pd.Series, metrics: np.ndarray, stamps: pd.DatetimeIndex) -> np.ndarray:
    """float64 values via :mod:`anomaly.core.data`'s check; on failure the message also names the metric."""
    try:
        return numeric_values(column, "value", stamps)
    except DataError:
        labels = pd.Index([f"{t} (metric {excerpt(m)})" for m, t in zip(metrics, stamps)])
        numeric_values(column, "value", labels)  # type: ignore[arg-type]  # raises the same error, better labelled
        raise


# -- which timestamps are plausible ------------------------------------------------------


@dataclass(frozen=True)
class TimeLimits:
    """Which timestamps :meth:`RawStore.append` stores; other points are quarantined, not stored.

    - ``max_ahead`` (default 1 day): how far past the clock a point may be.
      Clock skew is seconds and a naive local time read as UTC is at most 14
      hours ahead (UTC+14); a point further ahead would move its metric's
      watermark past every real point to come, silencing it.
    - ``earliest`` (default 1970-01-01): no collector reports before the Unix
      epoch; such times are sign errors or two-digit years.
    - ``max_span`` (default 10 years): how far before its metric's newest point
      (stored, or in the same batch) a point may be: a zero timestamp among
      this year's data is a bug, not history.

    ``None`` turns a check off. :meth:`from_env` reads ``ANOMALY_STORE_MAX_AHEAD``
    (e.g. ``2D``), ``ANOMALY_STORE_EARLIEST`` (e.g. ``2000-01-01``) and
    ``ANOMALY_STORE_MAX_SPAN`` (e.g. ``7300D``); ``off`` turns one off.
    """

    max_ahead: pd.Timedelta | None = DEFAULT_MAX_AHEAD
    earliest: pd.Timestamp | None = DEFAULT_EARLIEST
    max_span: pd.Timedelta | None = DEFAULT_MAX_SPAN

    @classmethod
    def off(cls) -> "TimeLimits":
        """No checks: every storable timestamp is stored (as before the rule existed)."""
        return cls(None, None, None)

    @classmethod
    def from_env(cls) -> "TimeLimits":
        """The defaults, each replaced by its environment variable when set; a bad value is a ConfigError."""
        values = {
            name: _limit_setting(env, text, is_date=name == "earliest")
            for name, env in LIMIT_ENV.items()
            if (text := os.environ.get(env, "").strip())
        }
        return cls(**values)

    def latest(self, now: pd.Timestamp) -> pd.Timestamp | None:
        """The latest timestamp a point may have at ``now`` (None: no limit)."""
        return None if self.max_ahead is None else now + self.max_ahead

    def reasons(self, points: pd.DataFrame, marks: Mapping[str, pd.Timestamp], now: pd.Timestamp) -> np.ndarray:
        """Per point, why it is implausible, or ``""``; ``marks`` are the stored watermarks."""
        stamps = points["timestamp"]
        out = np.full(len(points), "", dtype=object)
        latest = self.latest(now)
        if latest is not None:
            ahead = step_text(self.max_ahead)  # type: ignore[arg-type]  # set, as latest is
            out[(stamps > latest).to_numpy()] = f"more than {ahead} ahead of the clock ({now:%Y-%m-%d %H:%M} UTC)"
        if self.earliest is not None:
            out[(out == "") & (stamps < self.earliest).to_numpy()] = f"before {self.earliest:%Y-%m-%d}"
        if self.max_span is not None:
            ok = out == ""
            newest = stamps[ok].groupby(points["metric"][ok]).max().to_dict()
            for metric, mark in marks.items():
                newest[metric] = max(mark, newest.get(metric, mark))
            floor = points["metric"].map({m: t - self.max_span for m, t in newest.items()})
            too_old = ok & (stamps < pd.DatetimeIndex(floor, dtype=stamps.dtype)).to_numpy()
            out[too_old] = f"more than {self.max_span.days:,} days older than its metric's newest point"
        return out


def _limit_setting(env: str, text: str, *, is_date: bool) -> Any:
    """One :class:`TimeLimits` setting from its environment variable: a date, a positive duration, or ``off``."""
    if text.lower() in {"off", "none"}:
        return None
    form = "a date such as '1970-01-01'" if is_date else "a positive duration such as '1D'"
    try:
        value = as_utc(text).as_unit("ns") if is_date else pd.Timedelta(text)
    except (ValueError, TypeError):
        value = None
    if value is None or (not is_date and value <= pd.Timedelta(0)):
        raise ConfigError(f"{env} must be {form} or 'off', got {excerpt(text)}")
    return value


# -- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendResult:
    """What one :meth:`RawStore.append` did; ``rows_in`` = written + duplicates + missing + quarantined.

    ``batch_id`` is None when nothing was new (no commit record is written).
    ``watermarks`` holds the watermark of every metric in the input after the
    append, so a flow can log how far each metric now reaches. ``quarantined``
    counts the points refused by :class:`TimeLimits` (kept in quarantine once).
    """

    batch_id: str | None
    rows_in: int
    rows_written: int
    duplicates_dropped: int
    missing_dropped: int
    rows_by_metric: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, pd.Timestamp] = field(default_factory=dict)
    quarantined: int = 0

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, small enough to pass between flow tasks or show in an artifact."""
        return {
            "batch_id": self.batch_id,
            "rows_in": self.rows_in,
            "rows_written": self.rows_written,
            "duplicates_dropped": self.duplicates_dropped,
            "missing_dropped": self.missing_dropped,
            "quarantined": self.quarantined,
            "rows_by_metric": dict(self.rows_by_metric),
            "watermarks": {m: t.isoformat() for m, t in self.watermarks.items()},
        }


@dataclass(frozen=True)
class RepairResult:
    """What one :meth:`RawStore.repair` did: points moved to quarantine, by metric, and the watermarks after."""

    batch_id: str | None
    removed: int
    removed_by_metric: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, pd.Timestamp] = field(default_factory=dict)


# -- the store -----------------------------------------------------------------------


class RawStore:
    """Append-only Parquet store of long-form points under one local folder (see the module doc)."""

    def __init__(self, root: str | Path, limits: TimeLimits | None = None) -> None:
        """``limits`` None: :meth:`TimeLimits.from_env`, read when first needed."""
        self.root = Path(root)
        self._limits = limits

    @property
    def limits(self) -> TimeLimits:
        """The plausibility rule this store applies (see :class:`TimeLimits`)."""
        return self._limits if self._limits is not None else TimeLimits.from_env()

    @classmethod
    def existing(cls, root: str | Path, limits: TimeLimits | None = None) -> "RawStore":
        """A store that must already exist (for commands that inspect or repair one)."""
        store = cls(root, limits)
        if not (store.root / COMMITS).is_dir():
            raise DataError(f"{str(store.root)!r} is not a raw store: it has no {COMMITS}/ folder")
        return store

    def __repr__(self) -> str:
        return f"RawStore({str(self.root)!r})"

    # -- writing ---------------------------------------------------------------------

    def append(self, points: pd.DataFrame) -> AppendResult:
        """Store the points not already stored; return what happened.

        Rows with a missing value are dropped (and counted): they are not
        observations. Within the batch the last row of a (metric, timestamp)
        wins; a point already stored is kept and the new one dropped. Nothing
        new is a normal, quiet result with ``batch_id`` None.

        Points outside :attr:`limits` (far past the clock, before 1970,
        decades before their metric's history) are quarantined: kept under
        ``quarantine/`` with the reason and the ``origin`` column's value (a
        file name, when the points carry one), logged as a warning, never
        read as data, and counted once however often they are appended.

        Bad input raises :class:`DataError` before anything is written. Waiting
        more than ``LOCK_TIMEOUT_S`` for another writer raises
        ``filelock.Timeout``, an ``OSError`` like other I/O failures: callers
        may retry those, and a retry after a failure past the commit point
        only finds duplicates.
        """
        frame = validate_points(points)
        frame[ORIGIN] = _origins(points, len(frame))
        limits = self.limits
        if (count := frame["metric"].nunique()) > MAX_METRICS:
            raise DataError(f"{count:,} metrics in one append, more than {MAX_METRICS:,}: each is a store folder")
        rows_in = len(frame)
        present = frame[frame["value"].notna().to_numpy()]
        missing = rows_in - len(present)
        unique = present.drop_duplicates(["metric", "timestamp"], keep="last")
        in_batch = len(present) - len(unique)
        if unique.empty:
            return AppendResult(None, rows_in, 0, in_batch, missing)
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            before = self._recover()
            committed = self._committed()
            reasons = limits.reasons(unique, before, pd.Timestamp.now(tz="UTC"))
            held = unique[reasons != ""].assign(reason=reasons[reasons != ""])
            new = self._drop_stored(unique[reasons == ""], committed)
            fresh = self._drop_quarantined(held, committed)
            batch_id = self._write_batch(new, fresh) if len(new) or len(fresh) else None
            after = self._update_watermarks(before, new) if len(new) else before
        _warn_quarantined(fresh)
        counts = {str(m): int(n) for m, n in new["metric"].value_counts(sort=False).items()}
        batch_metrics = [str(m) for m in pd.unique(unique["metric"])]
        return AppendResult(
            batch_id,
            rows_in,
            len(new),
            in_batch + len(unique) - len(held) - len(new),
            missing,
            dict(sorted(counts.items())),
            {m: after[m] for m in sorted(batch_metrics) if m in after},
            len(held),
        )

    def _drop_quarantined(self, held: pd.DataFrame, committed: set[str]) -> pd.DataFrame:
        """``held`` less the points already in quarantine: a file re-read every run adds its bad point once."""
        if held.empty:
            return held
        stored = self._read_quarantine(committed, columns=["metric", "timestamp"])
        if stored.empty:
            return held
        keys = pd.MultiIndex.from_arrays([held["metric"], held["timestamp"]])
        return held[~keys.isin(pd.MultiIndex.from_arrays([stored["metric"], stored["timestamp"]]))]

    def _drop_stored(self, points: pd.DataFrame, committed: set[str]) -> pd.DataFrame:
        """``points`` less those whose (metric, timestamp) is already committed.

        Only the (metric, day) partitions the batch touches are read, and only
        their key columns.
        """
        days = points["timestamp"].dt.floor("D")
        files = [
            file
            for metric, day in sorted(set(zip(points["metric"], days)))
            for file in self._partition_files(self._raw / f"{METRIC_PREFIX}{metric}" / _day_dir(day), committed)
        ]
        if not files:
            return points
        stored = _read_parts(files, columns=["metric", "timestamp"])
        stored_keys = pd.MultiIndex.from_arrays([stored["metric"], stored["timestamp"]])
        keys = pd.MultiIndex.from_arrays([points["metric"], points["timestamp"]])
        return points[~keys.isin(stored_keys)]

    def _write_batch(self, points: pd.DataFrame, held: pd.DataFrame | None = None, replaces: Sequence[str] = ()) -> str:
        """Write one batch and commit it; return its id. Called under the lock.

        Order: intent record, part files and the quarantine file of ``held``
        (fsynced), commit record (the commit point), intent record removed.
        Anything raised before the commit removes what this batch wrote and
        leaves the store as it was. A batch that ``replaces`` part files (a
        repair) keeps its intent record until :meth:`_retire` has removed them,
        so a writer killed in between has the next writer finish the job.
        """
        batch_id = _new_batch_id()
        groups = _partitions(points)
        files = [f"{RAW}/{METRIC_PREFIX}{m}/{_day_dir(day)}/{PART_PREFIX}{batch_id}{PART_SUFFIX}" for (m, day), _ in groups]
        if held is not None and len(held):
            files.append(f"{QUARANTINE}/{batch_id}{PART_SUFFIX}")
        intent = self.root / PENDING / f"{batch_id}.json"
        record = self.root / COMMITS / f"{batch_id}.json"
        try:
            intent.parent.mkdir(exist_ok=True)
            intent_record = {"batch_id": batch_id, "pid": os.getpid(), "files": files, "replaces": list(replaces)}
            atomic_write_json(intent, intent_record)
            for rel, (_, part) in zip(files, groups):
                path = self.root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_part(path, part)
            if held is not None and len(held):
                (self.root / QUARANTINE).mkdir(exist_ok=True)
                _write_part(self.root / files[-1], held, QUARANTINE_SCHEMA)
            folders = {(self.root / rel).parent for rel in files} | {(self.root / rel).parent.parent for rel in files}
            _fsync_dirs(folders | {self._raw, self.root} if groups else folders | {self.root})
            self._commit(batch_id, files, points)
            _fsync_dirs([record.parent])
        except BaseException:
            if not record.exists():  # the record on disk, not a flag, says whether the commit happened
                with contextlib.suppress(OSError):
                    self._discard(files, intent)
            raise
        if replaces:
            self._retire(intent, list(replaces))
        else:
            with contextlib.suppress(OSError):
                intent.unlink()
        return batch_id

    def _retire(self, intent: Path, replaces: list[str]) -> None:
        """Finish a committed repair: remove the part files it replaced, recompute the watermarks, drop the intent.

        Idempotent, so the next writer redoes it after a crash. Only paths
        shaped like committed part files are removed.
        """
        for rel in replaces:
            if not _is_part_of(rel, _batch_of(rel)):
                log.warning("not removing %s listed in %s: not a part file", excerpt(rel), intent)
                continue
            path = self.root / rel
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            for folder in (path.parent, path.parent.parent):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only succeeds when empty
        metric_folders = {(self.root / rel).parent.parent for rel in replaces}
        _fsync_dirs({folder for folder in metric_folders if folder.exists()} | {self._raw})
        atomic_write_json(self.root / WATERMARKS, _iso(self._watermarks_from_data(self._committed())))
        with contextlib.suppress(FileNotFoundError):
            intent.unlink()

    def _commit(self, batch_id: str, files: list[str], points: pd.DataFrame) -> None:
        """Write the commit record: once it exists the batch is visible, and not before."""
        grouped = points.groupby("metric", sort=True)["timestamp"]
        record = {
            "format_version": FORMAT_VERSION,
            "batch_id": batch_id,
            "created_at": datetime.now(timezone.utc).isoformat(),
            "pid": os.getpid(),
            "rows": len(points),
            "files": files,
            "metrics": {
                str(m): {"rows": len(ts), "first": ts.min().isoformat(), "last": ts.max().isoformat()}
                for m, ts in grouped
            },
        }
        folder = self.root / COMMITS
        folder.mkdir(exist_ok=True)
        atomic_write_json(folder / f"{batch_id}.json", record)

    def _discard(self, files: Iterable[str], intent: Path) -> None:
        """Remove an uncommitted batch's part files, its emptied folders, then its intent record.

        Only paths shaped like this batch's part files are touched, so a
        damaged intent record can never remove anything else.
        """
        batch_id = intent.name.removesuffix(".json")
        for rel in files:
            if not _is_part_of(rel, batch_id):
                log.warning("not removing %r listed in %s: not a part file of that batch", rel, intent)
                continue
            path = self.root / rel
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            for folder in (path.parent, path.parent.parent) if rel.startswith(RAW) else ():
                with contextlib.suppress(OSError):
                    folder.rmdir()  # only succeeds when empty
        with contextlib.suppress(FileNotFoundError):
            intent.unlink()

    def _recover(self) -> dict[str, pd.Timestamp]:
        """Undo what dead writers left and bring ``watermarks.json`` up to date. Called under the lock.

        A pending batch is removed when it is uncommitted and its writer is
        gone; one of this very process is gone too (we hold the lock, so it is
        not mid-write: an earlier append raised and could not clean up). Temp
        files of interrupted atomic writes are removed: all such writes happen
        under the lock. Returns the current watermarks.
        """
        committed = self._committed()
        for folder, target in ((self.root / PENDING, ""), (self.root / COMMITS, ""), (self.root, WATERMARKS)):
            for entry in _scandir(folder):
                if _is_temp(entry.name, target):
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
        for entry in _scandir(self.root / PENDING):
            batch_id = entry.name.removesuffix(".json")
            if not entry.name.endswith(".json") or not _BATCH.fullmatch(batch_id):
                continue
            if batch_id in committed:
                record = _read_json(Path(entry.path))
                replaces = record.get("replaces") if isinstance(record, dict) else None
                if replaces and isinstance(replaces, list):
                    log.warning("finishing repair %s of a writer that died after committing it", batch_id)
                    self._retire(Path(entry.path), [str(r) for r in replaces])
                else:
                    with contextlib.suppress(OSError):
                        os.unlink(entry.path)
            elif not _writer_alive(batch_id):
                record = _read_json(Path(entry.path))
                log.warning("removing batch %s of a writer that died before committing", batch_id)
                self._discard(record.get("files", []) if isinstance(record, dict) else [], Path(entry.path))
        current = self._current_watermarks(committed)
        if current != self._watermarks_file():
            atomic_write_json(self.root / WATERMARKS, _iso(current))
        return current

    def _update_watermarks(self, before: dict[str, pd.Timestamp], points: pd.DataFrame) -> dict[str, pd.Timestamp]:
        """Advance the watermarks past a committed batch.

        The batch is already committed, so an I/O failure here is logged, not
        raised: the file is derived and the next append or read repairs it.
        """
        after = dict(before)
        for metric, last in points.groupby("metric", sort=False)["timestamp"].max().items():
            after[str(metric)] = max(last, after.get(str(metric), last))
        try:
            atomic_write_json(self.root / WATERMARKS, _iso(after))
        except OSError as exc:
            log.warning("batch committed but %s could not be updated (%s); it will be recomputed", WATERMARKS, exc)
        return after

    def rebuild_watermarks(self) -> dict[str, pd.Timestamp]:
        """Recompute ``watermarks.json`` from the committed data and rewrite it.

        Needed only after the file was edited or restored by hand; crashes are
        repaired without it.
        """
        if not self.root.is_dir():
            return {}
        with self._lock():
            current = self._watermarks_from_data(self._committed())
            atomic_write_json(self.root / WATERMARKS, _iso(current))
        return current

    def compact(self, before: object = None) -> dict[str, int]:
        """Merge each closed day's part files into one file per metric; what reads return is unchanged.

        Every ingest run adds a part file per metric and day (288 a day at a
        5-minute schedule), and a read opens each one. Compaction rewrites the
        partitions of days before ``before`` (default: today, UTC) that hold
        more than one file as one committed batch per day, removes the files
        it replaced, then the commit records none of whose files remain.
        Until the old files are gone a read may see both copies; reads drop
        duplicates, first stored wins, and the values are the same. The train
        flow runs it before training. Returns counts for the flow's summary.
        """
        cutoff = _day_dir(pd.Timestamp.now(tz="UTC") if before is None else _bound(before, "before"))
        merged = replaced = 0
        if not self.root.is_dir():
            return {"partitions": 0, "files_replaced": 0, "records_removed": 0}
        with self._lock():
            self._recover()
            committed = self._committed()
            days = sorted({d for m in self._metric_dirs() for d in self._day_dirs(m) if d < cutoff})
            for day in days:
                files = [
                    fs
                    for m in self._metric_dirs()
                    if len(fs := self._partition_files(self._raw / f"{METRIC_PREFIX}{m}" / day, committed)) > 1
                ]
                if not files:
                    continue
                points = _read_parts([f for fs in files for f in fs])
                points = points.drop_duplicates(["metric", "timestamp"], keep="first")
                self._write_batch(points)
                for f in (f for fs in files for f in fs):
                    f.unlink()
                merged, replaced = merged + len(files), replaced + sum(len(fs) for fs in files)
            removed = self._drop_empty_commits() if replaced else 0
        log.info("compacted %d partition(s) of %d file(s) in %s; %d commit record(s) removed", merged, replaced, self.root, removed)
        return {"partitions": merged, "files_replaced": replaced, "records_removed": removed}

    def _drop_empty_commits(self) -> int:
        """Remove commit records none of whose files exist any more. Called under the lock.

        The newest record stays whatever it lists: the watermarks are folded from it.
        """
        records = sorted(self._committed())[:-1]
        removed = 0
        for batch_id in records:
            path = self.root / COMMITS / f"{batch_id}.json"
            record = _read_json(path)
            files = record.get("files", []) if isinstance(record, dict) else None
            if files is not None and not any((self.root / f).exists() for f in files):
                path.unlink()
                removed += 1
        if removed:
            fsync_dir(self.root / COMMITS)
        return removed

    # -- repairing ------------------------------------------------------------------

    def repair(
        self, metrics: Sequence[str] | str | None = None, *, after: object = None, before: object = None
    ) -> RepairResult:
        """Move stored points later than ``after`` or earlier than ``before`` to quarantine.

        For a store poisoned before :class:`TimeLimits` existed (a point in
        2262 held its metric's watermark there). Defaults: ``after`` is the
        clock plus ``limits.max_ahead``, ``before`` is ``limits.earliest``.
        Only the day partitions that can hold such points are read. Under the
        lock, the kept points of those partitions and the removed ones (in
        quarantine, with the reason) are committed as one batch, then the
        replaced files are removed and the watermarks recomputed: a writer
        killed midway leaves the store reading as before the repair, and the
        next append, compaction or repair finishes it.
        """
        limits = self.limits
        hi = _bound(after, "drop_after") if after is not None else limits.latest(pd.Timestamp.now(tz="UTC"))
        lo = _bound(before, "drop_before") if before is not None else limits.earliest
        if hi is not None and lo is not None and lo > hi:
            raise DataError(f"drop_before {lo} is after drop_after {hi}: that would remove every point")
        with self._lock():
            self._recover()
            committed = self._committed()
            names = self._requested(metrics, committed)
            kept, removed, replaced = self._outside(names, lo, hi, committed)
            if removed.empty:
                return RepairResult(None, 0, {}, self._current_watermarks(committed))
            late = (removed["timestamp"] > hi).to_numpy() if hi is not None else np.zeros(len(removed), dtype=bool)
            reasons = np.where(late, f"removed by repair: after {hi}", f"removed by repair: before {lo}")
            held = removed.assign(reason=reasons, origin="repair")
            batch_id = self._write_batch(kept, held, replaced)
            marks = self._current_watermarks(self._committed())
        counts = {str(m): int(n) for m, n in removed["metric"].value_counts().sort_index().items()}
        log.warning("repair of %s moved %d point(s) to quarantine: %s", self.root, len(removed), counts)
        return RepairResult(batch_id, len(removed), counts, marks)

    def _outside(
        self, names: list[str], lo: pd.Timestamp | None, hi: pd.Timestamp | None, committed: set[str]
    ) -> tuple[pd.DataFrame, pd.DataFrame, list[str]]:
        """Points of the partitions holding any point outside ``[lo, hi]``: kept, removed, and those files."""
        kept, removed, replaced = [], [], []
        first, last = (_day_dir(lo) if lo is not None else None), (_day_dir(hi) if hi is not None else None)
        for metric in names:
            folder = self._raw / f"{METRIC_PREFIX}{metric}"
            for day in self._day_dirs(metric):
                if not ((first is not None and day <= first) or (last is not None and day >= last)):
                    continue
                files = self._partition_files(folder / day, committed)
                if not files:
                    continue
                points = _read_parts(files).drop_duplicates(["metric", "timestamp"], keep="first")
                outside = np.zeros(len(points), dtype=bool)
                if lo is not None:
                    outside |= (points["timestamp"] < lo).to_numpy()
                if hi is not None:
                    outside |= (points["timestamp"] > hi).to_numpy()
                if outside.any():
                    kept.append(points[~outside])
                    removed.append(points[outside])
                    replaced += [str(f.relative_to(self.root)) for f in files]
        if not removed:
            return empty_points(), empty_points(), []
        return pd.concat(kept, ignore_index=True), pd.concat(removed, ignore_index=True), replaced

    def quarantined(self) -> pd.DataFrame:
        """Every quarantined point: metric, timestamp, value, reason, origin, sorted by metric and time."""
        frame = self._read_quarantine(self._committed())
        return frame.sort_values(["metric", "timestamp"], kind="stable").reset_index(drop=True)

    def _read_quarantine(self, committed: set[str], columns: Sequence[str] | None = None) -> pd.DataFrame:
        files = sorted(
            self.root / QUARANTINE / e.name
            for e in _scandir(self.root / QUARANTINE)
            if e.name.endswith(PART_SUFFIX) and e.name.removesuffix(PART_SUFFIX) in committed
        )
        names = list(columns or QUARANTINE_SCHEMA.names)
        if not files:
            return pd.DataFrame({c: pd.Series([], dtype=object) for c in names}).astype(
                {"timestamp": "datetime64[ns, UTC]"} if "timestamp" in names else {}
            )
        table = ds.dataset([str(f) for f in files], schema=QUARANTINE_SCHEMA, format="parquet").to_table(columns=names)
        return table.to_pandas()

    def summary(self) -> pd.DataFrame:
        """One row per metric: first and last stored point, the watermark, and a note when it needs a repair."""
        committed = self._committed()
        marks = self._current_watermarks(committed)
        latest = self.limits.latest(pd.Timestamp.now(tz="UTC"))
        rows = []
        for metric in self.metrics():
            first, last = self._stored_range(metric, committed)
            note = "points past the clock: run 'anomaly store repair'" if latest is not None and last > latest else ""
            rows.append({"metric": metric, "first": first, "last": last, "watermark": marks.get(metric), "note": note})
        return pd.DataFrame(rows, columns=["metric", "first", "last", "watermark", "note"])

    def _stored_range(self, metric: str, committed: set[str]) -> tuple[pd.Timestamp, pd.Timestamp]:
        """The first and last stored timestamps of ``metric``, from its oldest and newest day partitions."""
        folder = self._raw / f"{METRIC_PREFIX}{metric}"
        days = [d for d in self._day_dirs(metric) if self._partition_files(folder / d, committed)]
        oldest = _read_parts(self._partition_files(folder / days[0], committed), columns=["timestamp"])["timestamp"]
        newest = _read_parts(self._partition_files(folder / days[-1], committed), columns=["timestamp"])["timestamp"]
        return pd.Timestamp(oldest.min()), pd.Timestamp(newest.max())

    # -- the series catalogue -----------------------------------------------------------

    @property
    def catalogue_path(self) -> Path:
        return self.root / CATALOGUE

    def series(self) -> dict[str, Series]:
        """``{store name: Series}`` of the series a source recorded labels for; a damaged file is a one-line DataError."""
        return read_catalogue(self.catalogue_path)

    def record_series(self, found: Iterable[Series]) -> int:
        """Merge ``found`` into the catalogue under the store's lock; how many entries were added or changed.

        A series recorded before with other labels takes the new ones, with a
        warning naming both. A damaged catalogue raises before anything is
        written. The file is rewritten only when something changed.
        """
        found = list(found)
        if not found:
            return 0
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            current = self.series()
            merged, changed = merge(current, found)
            for old, new in changed:
                log.warning("series %s now has name %r and labels %s (was %r, %s)", new.key, new.name, dict(new.labels), old.name, dict(old.labels))
            added = len(merged) - len(current) + len(changed)
            if added:
                write_catalogue(self.catalogue_path, merged)
        return added

    # -- reading ---------------------------------------------------------------------

    def metrics(self) -> list[str]:
        """Metrics with at least one committed point, sorted."""
        committed = self._committed()
        return [m for m in self._metric_dirs() if self._newest_files(m, committed)]

    def watermarks(self) -> dict[str, pd.Timestamp]:
        """``{metric: latest stored timestamp}``: what a source should fetch after."""
        return self._current_watermarks(self._committed())

    def read(
        self,
        metrics: Sequence[str] | str | None = None,
        start: object = None,
        end: object = None,
    ) -> pd.DataFrame:
        """Committed points in ``[start, end)`` as long form, sorted by metric and timestamp.

        ``metrics`` None means all. Only the partitions of those metrics and
        days are opened. A metric the store has never held is an error (a
        typo should not look like an empty history). Duplicates cannot be
        committed, but are dropped here too, first stored wins.
        """
        committed = self._committed()
        return self._read(self._requested(metrics, committed), start, end, committed)

    def read_wide(
        self,
        metrics: Sequence[str] | str | None = None,
        start: object = None,
        end: object = None,
    ) -> pd.DataFrame:
        """The same points as a wide frame: UTC DatetimeIndex, one float column per metric.

        This is the form :func:`anomaly.core.data.normalise` accepts. Columns follow
        ``metrics`` (sorted when None); a timestamp a metric lacks is NaN.
        """
        committed = self._committed()
        names = self._requested(metrics, committed)
        long = self._read(names, start, end, committed)
        if len(names) == 1:  # one metric: its points are already unique and sorted
            wide = pd.DataFrame({names[0]: long["value"].to_numpy()}, index=pd.Index(long["timestamp"]))
        else:
            wide = long.pivot(index="timestamp", columns="metric", values="value").reindex(columns=names)
            wide.columns = pd.Index([str(c) for c in wide.columns])
        wide.index = pd.DatetimeIndex(wide.index, dtype="datetime64[ns, UTC]", name="timestamp")
        return wide.astype(np.float64)

    def _read(self, names: list[str], start: object, end: object, committed: set[str]) -> pd.DataFrame:
        """Committed points of ``names`` in ``[start, end)``, from one listing of the commits.

        A compaction may remove a file between listing and opening it; the
        read then starts again from a fresh listing, where its merged copy is.
        """
        for _ in range(READ_ATTEMPTS - 1):
            try:
                return self._read_once(names, start, end, committed)
            except FileNotFoundError:
                committed = self._committed()
        return self._read_once(names, start, end, committed)

    def _read_once(self, names: list[str], start: object, end: object, committed: set[str]) -> pd.DataFrame:
        lo, hi = _bound(start, "start"), _bound(end, "end")
        if lo is not None and hi is not None and lo > hi:
            raise DataError(f"start {lo} is after end {hi}")
        files = [f for m in names for f in self._metric_files(m, committed, lo, hi)]
        if not files:
            return empty_points()
        condition = None
        if lo is not None:
            condition = ds.field("timestamp") >= pa.scalar(lo, type=TIMESTAMP_TYPE)
        if hi is not None:
            upper = ds.field("timestamp") < pa.scalar(hi, type=TIMESTAMP_TYPE)
            condition = upper if condition is None else condition & upper
        frame = _read_parts(files, condition=condition)
        frame = frame.sort_values(["metric", "timestamp"], kind="stable")
        return frame.drop_duplicates(["metric", "timestamp"], keep="first").reset_index(drop=True)

    # -- internals -------------------------------------------------------------------

    @property
    def _raw(self) -> Path:
        return self.root / RAW

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with FileLock(str(self.root / LOCK), timeout=LOCK_TIMEOUT_S):
            yield

    def _committed(self) -> set[str]:
        """Ids of committed batches. Listed before any partition, so a read is a consistent snapshot."""
        return {
            e.name.removesuffix(".json")
            for e in _scandir(self.root / COMMITS)
            if e.name.endswith(".json") and _BATCH.fullmatch(e.name.removesuffix(".json"))
        }

    def _requested(self, metrics: Sequence[str] | str | None, committed: set[str]) -> list[str]:
        """The metrics to read, each checked to hold committed data (only those folders are looked at)."""
        if metrics is None:
            return self.metrics()
        names = list(dict.fromkeys([metrics] if isinstance(metrics, str) else metrics))
        for name in names:
            check_metric_name(name)
            if not self._newest_files(name, committed):
                known = self.metrics()
                listing = ", ".join(known[:20]) + (f" and {len(known) - 20:,} more" if len(known) > 20 else "")
                raise DataError(
                    f"metric {excerpt(name, NAME_CHARS)} is not in the store {str(self.root)!r}; "
                    f"metrics: {listing or 'none'}"
                )
        return names

    def _metric_dirs(self) -> list[str]:
        names = []
        for entry in _scandir(self._raw):
            name = entry.name.removeprefix(METRIC_PREFIX)
            if entry.name.startswith(METRIC_PREFIX) and entry.is_dir() and _METRIC.fullmatch(name) and ".." not in name:
                names.append(name)
        return sorted(names)

    def _day_dirs(self, metric: str) -> list[str]:
        folder = self._raw / f"{METRIC_PREFIX}{metric}"
        return sorted(e.name for e in _scandir(folder) if e.name.startswith(DATE_PREFIX) and e.is_dir())

    def _partition_files(self, folder: Path, committed: set[str]) -> list[Path]:
        """Committed part files of one partition, oldest batch first."""
        names = [
            e.name
            for e in _scandir(folder)
            if e.name.startswith(PART_PREFIX)
            and e.name.endswith(PART_SUFFIX)
            and e.name[len(PART_PREFIX) : -len(PART_SUFFIX)] in committed
        ]
        return [folder / n for n in sorted(names)]

    def _metric_files(
        self, metric: str, committed: set[str], lo: pd.Timestamp | None, hi: pd.Timestamp | None
    ) -> list[Path]:
        """Committed files of ``metric`` in the day partitions that can hold ``[lo, hi)``."""
        first = _day_dir(lo) if lo is not None else None
        last = _day_dir(hi - pd.Timedelta(1, "ns")) if hi is not None else None
        folder = self._raw / f"{METRIC_PREFIX}{metric}"
        return [
            file
            for day in self._day_dirs(metric)
            if (first is None or day >= first) and (last is None or day <= last)
            for file in self._partition_files(folder / day, committed)
        ]

    def _newest_files(self, metric: str, committed: set[str]) -> list[Path]:
        """Committed files of the newest day partition of ``metric`` that has any."""
        folder = self._raw / f"{METRIC_PREFIX}{metric}"
        for day in reversed(self._day_dirs(metric)):
            files = self._partition_files(folder / day, committed)
            if files:
                return files
        return []

    def _watermarks_file(self) -> dict[str, pd.Timestamp] | None:
        """The stored watermarks, or None when missing or unreadable (then they are recomputed)."""
        path = self.root / WATERMARKS
        if not path.exists():
            return None
        data = _read_json(path)
        try:
            if not isinstance(data, dict):
                raise TypeError(f"expected an object, got {type(data).__name__}")
            return {str(m): _utc(t) for m, t in data.items()}
        except (TypeError, ValueError) as exc:
            log.warning("ignoring unreadable %s (%s); recomputing from the data", path, exc)
            return None

    def _current_watermarks(self, committed: set[str]) -> dict[str, pd.Timestamp]:
        """The file folded with the newest commit record, or recomputed from the data.

        Each append folds in the previous commit before committing its own,
        so at most the newest record can be missing from the file.
        """
        if not committed:
            return {}
        stored = self._watermarks_file()
        if stored is None:
            return self._watermarks_from_data(committed)
        newest = _read_json(self.root / COMMITS / f"{max(committed)}.json")
        for metric, info in (newest.get("metrics", {}) if isinstance(newest, dict) else {}).items():
            last = _utc(info["last"])
            stored[metric] = max(last, stored.get(metric, last))
        return self._within_clock(dict(sorted(stored.items())), committed)

    def _watermarks_from_data(self, committed: set[str]) -> dict[str, pd.Timestamp]:
        """Latest timestamp per metric, reading only each metric's newest day partition."""
        marks = {}
        for metric in self._metric_dirs():
            files = self._newest_files(metric, committed)
            if files:
                stamps = _read_parts(files, columns=["timestamp"])["timestamp"]
                marks[metric] = pd.Timestamp(stamps.max())
        return self._within_clock(marks, committed)

    def _within_clock(self, marks: dict[str, pd.Timestamp], committed: set[str]) -> dict[str, pd.Timestamp]:
        """Watermarks no later than the clock allows: one past it (stored before the rule) is not trusted.

        Such a metric's watermark is its latest point within the limit (none: the
        metric is fetched as new); the store keeps the far point until
        :meth:`repair` moves it, and says so.
        """
        latest = self.limits.latest(pd.Timestamp.now(tz="UTC"))
        if latest is None or all(t <= latest for t in marks.values()):
            return marks
        out = {}
        for metric, mark in marks.items():
            if mark <= latest:
                out[metric] = mark
                continue
            real = self._latest_until(metric, latest, committed)
            log.warning(
                "metric %s has points up to %s, past the clock; its watermark is taken as %s until "
                "'anomaly store repair %s' moves them to quarantine", excerpt(metric), mark, real, self.root,
            )  # fmt: skip
            if real is not None:
                out[metric] = real
        return out

    def _latest_until(self, metric: str, latest: pd.Timestamp, committed: set[str]) -> pd.Timestamp | None:
        """The newest stored point of ``metric`` at or before ``latest``, reading day partitions newest first."""
        folder = self._raw / f"{METRIC_PREFIX}{metric}"
        for day in reversed(self._day_dirs(metric)):
            if day > _day_dir(latest):
                continue
            files = self._partition_files(folder / day, committed)
            stamps = _read_parts(files, columns=["timestamp"])["timestamp"] if files else pd.Series([], dtype=object)
            stamps = stamps[stamps <= latest]
            if len(stamps):
                return pd.Timestamp(stamps.max())
        return None


# -- helpers -------------------------------------------------------------------------


def _partitions(points: pd.DataFrame) -> list[tuple[tuple[str, pd.Timestamp], pd.DataFrame]]:
    """The batch split by (metric, UTC day), each part sorted by time."""
    days = points["timestamp"].dt.floor("D")
    return [
        ((str(metric), pd.Timestamp(day)), part.sort_values("timestamp", kind="stable"))
        for (metric, day), part in points.groupby([points["metric"], days], sort=True)
    ]


def _is_part_of(rel: object, batch_id: str) -> bool:
    """Whether ``rel`` is ``raw/metric=<name>/date=<YYYY-MM-DD>/part-<batch_id>.parquet`` or its quarantine file."""
    if not isinstance(rel, str):
        return False
    if rel == f"{QUARANTINE}/{batch_id}{PART_SUFFIX}":
        return bool(_BATCH.fullmatch(batch_id))
    parts = rel.split("/")
    if len(parts) != 4 or parts[0] != RAW or parts[3] != f"{PART_PREFIX}{batch_id}{PART_SUFFIX}":
        return False
    name = parts[1].removeprefix(METRIC_PREFIX)
    return (
        parts[1].startswith(METRIC_PREFIX)
        and bool(_METRIC.fullmatch(name))
        and ".." not in name
        and bool(re.fullmatch(rf"{DATE_PREFIX}\d{{4}}-\d{{2}}-\d{{2}}", parts[2]))
    )


def _batch_of(rel: str) -> str:
    """The batch id in a part file's name (``""`` when it has none)."""
    name = posixpath.basename(rel)
    if not (name.startswith(PART_PREFIX) and name.endswith(PART_SUFFIX)):
        return ""
    return name[len(PART_PREFIX) : -len(PART_SUFFIX)]


def _origins(points: object, rows: int) -> np.ndarray:
    """The :data:`ORIGIN` column of the input as text, or ``""`` for every row."""
    if isinstance(points, pd.DataFrame) and ORIGIN in points.columns and len(points) == rows:
        return points[ORIGIN].fillna("").astype(str).to_numpy(dtype=object)
    return np.full(rows, "", dtype=object)


def _warn_quarantined(held: pd.DataFrame) -> None:
    """One warning per metric, origin and reason, naming the first point refused."""
    for (metric, origin, reason), group in held.groupby(["metric", ORIGIN, "reason"], sort=True):
        first = group.iloc[0]
        log.warning(
            "quarantined %d point(s) of metric %s%s: %s; first at %s, value %s ('anomaly store quarantine' lists them)",
            len(group), excerpt(metric), f" from {origin!r}" if origin else "", reason, first["timestamp"],
            first["value"],
        )  # fmt: skip


def _day_dir(stamp: pd.Timestamp) -> str:
    return f"{DATE_PREFIX}{stamp.strftime('%Y-%m-%d')}"


def _write_part(path: Path, points: pd.DataFrame, schema: pa.Schema = SCHEMA) -> None:
    """One part (or quarantine) file, fsynced: it must be durable before the commit record names it."""
    table = pa.Table.from_pandas(points[schema.names], schema=schema, preserve_index=False)
    with open(path, "wb") as handle:
        pq.write_table(table, handle)
        handle.flush()
        os.fsync(handle.fileno())


def _read_parts(
    files: Sequence[Path], columns: Sequence[str] | None = None, condition: ds.Expression | None = None
) -> pd.DataFrame:
    """Read part files in the given order (earlier files first), with typed, index-free columns.

    Every file a read touches goes through here, which is what the pruning
    tests watch.
    """
    dataset = ds.dataset([str(f) for f in files], schema=SCHEMA, format="parquet")
    table = dataset.to_table(columns=list(columns) if columns else None, filter=condition)
    frame = table.to_pandas()
    if "metric" in frame:
        frame["metric"] = frame["metric"].astype(str)
    return frame


def _bound(value: object, what: str) -> pd.Timestamp | None:
    """A read bound parsed like any timestamp (str, datetime, epoch seconds), as ns UTC."""
    if value is None:
        return None
    if isinstance(value, pd.Timestamp) and value.tzinfo is not None and NS_MIN <= value <= NS_MAX:
        return value.tz_convert("UTC").as_unit("ns")  # the common case, without the parser's cost
    try:
        return parse_timestamps(pd.Index([value])).as_unit("ns")[0]
    except DataError as exc:
        raise DataError(f"invalid {what} {excerpt(value)}: {exc}") from exc


def _utc(text: object) -> pd.Timestamp:
    stamp = pd.Timestamp(text)  # type: ignore[arg-type]
    if stamp.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no time zone")
    return stamp.tz_convert("UTC").as_unit("ns")


def _iso(marks: Mapping[str, pd.Timestamp]) -> dict[str, str]:
    return {m: t.isoformat() for m, t in sorted(marks.items())}


def _new_batch_id() -> str:
    """``<UTC time to the µs>-<pid>-<random>``: sorts in commit order, names its writer."""
    now = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{now}-{os.getpid()}-{uuid.uuid4().hex[:8]}"


def _writer_alive(batch_id: str) -> bool:
    """Whether the process that wrote ``batch_id`` may still be writing it.

    Called under the lock, so this process is not mid-write: its own
    leftovers count as dead. A pid that cannot be signalled (another user's)
    counts as alive: keeping a few files is the safe mistake.
    """
    match = _BATCH.fullmatch(batch_id)
    if match is None:
        return False
    pid = int(match.group(1))
    return pid != os.getpid() and pid_alive(pid)


def _scandir(folder: Path) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as entries:
            return list(entries)
    except (FileNotFoundError, NotADirectoryError):
        return []


def _is_temp(name: str, target: str = "") -> bool:
    """A temporary file of :func:`anomaly.core.fileio.atomic_write_json`: ``.<target>.<random>`` (any ``.json`` target when empty)."""
    if target:
        return name.startswith(f".{target}.")
    return name.startswith(".") and ".json." in name


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        log.warning("cannot read %s: %s", path, exc)
        return None


def _fsync_dirs(folders: Iterable[Path]) -> None:
    """fsync folders so new entries (files, sub-folders, renames) survive a power cut."""
    for folder in folders:
        fsync_dir(folder)
