"""The raw store: an append-only, de-duplicated Parquet store of metric points.

Ingest flows append what a source returned; train and score flows read one
metric's history back. Points are long form ``(metric, timestamp, value)``
with UTC nanosecond timestamps and float64 values.

Layout (``root`` is any local folder)::

    <root>/raw/metric=<metric>/date=<YYYY-MM-DD>/part-<batch_id>.parquet
    <root>/commits/<batch_id>.json    the commit record: files, rows and time range per metric
    <root>/pending/<batch_id>.json    intent record of a batch being written (gone once committed)
    <root>/watermarks.json            {metric: latest ISO timestamp}, derived from the commits
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

Metric names become folder names, so they are restricted to letters, digits,
``_ . : -`` (see :func:`check_metric_name`); ``=`` and ``%`` are refused
because Hive-style readers split ``key=value`` and URL-decode folder names.
Sources with label sets (Prometheus series, SQL dimensions) map them to such
keys themselves.

The store is local-disk only: the commit protocol relies on ``os.replace``,
``fsync`` and ``flock``, which object stores and some network filesystems do
not provide.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
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

from anomaly.data import LONG_COLUMNS, NS_MAX, NS_MIN, TIME_COLUMNS, numeric_values, parse_timestamps
from anomaly.errors import DataError
from anomaly.fileio import atomic_write_json, fsync_dir, pid_alive

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
RAW, COMMITS, PENDING, WATERMARKS, LOCK = "raw", "commits", "pending", "watermarks.json", ".lock"
METRIC_PREFIX, DATE_PREFIX, PART_PREFIX, PART_SUFFIX = "metric=", "date=", "part-", ".parquet"
LOCK_TIMEOUT_S = 60.0
#: Times a read starts over when a file it listed was compacted away meanwhile.
READ_ATTEMPTS = 3
COLUMNS: tuple[str, str, str] = ("metric", "timestamp", "value")
TIMESTAMP_TYPE = pa.timestamp("ns", tz="UTC")
SCHEMA = pa.schema([("metric", pa.string()), ("timestamp", TIMESTAMP_TYPE), ("value", pa.float64())])
_METRIC = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_.:-]{0,199}")
_BATCH = re.compile(r"\d{8}T\d{12}Z-(\d+)-[0-9a-f]{8}")


# -- validation ----------------------------------------------------------------------


def check_metric_name(name: object) -> str:
    """Reject metric names that are unsafe or ambiguous as a ``metric=<name>`` folder.

    Allowed: 1-200 letters, digits, ``_ . : -``, starting with a letter, digit,
    ``_`` or ``:`` (so Prometheus metric names pass unchanged), without ``..``.
    Separators could escape the store; ``=``/``%`` confuse Hive-style readers.
    """
    if not isinstance(name, str) or not _METRIC.fullmatch(name) or ".." in name:
        raise DataError(
            f"invalid metric name {name!r}: use 1-200 letters, digits, '_', '.', ':' or '-', starting "
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
    DatetimeIndex or a column named like :data:`anomaly.data.TIME_COLUMNS`, as
    :func:`anomaly.data.to_wide` does; other columns are ignored. Timestamps
    and values go through :mod:`anomaly.data`'s parsers, so the rules (naive
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
            f"the index); got columns {[str(c) for c in frame.columns]}"
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
    """float64 values via :mod:`anomaly.data`'s check; on failure the message also names the metric."""
    try:
        return numeric_values(column, "value", stamps)
    except DataError:
        labels = pd.Index([f"{t} (metric {m!r})" for m, t in zip(metrics, stamps)])
        numeric_values(column, "value", labels)  # type: ignore[arg-type]  # raises the same error, better labelled
        raise


# -- results -------------------------------------------------------------------------


@dataclass(frozen=True)
class AppendResult:
    """What one :meth:`RawStore.append` did; ``rows_in`` = written + duplicates + missing.

    ``batch_id`` is None when nothing was new (no commit record is written).
    ``watermarks`` holds the watermark of every metric in the input after the
    append, so a flow can log how far each metric now reaches.
    """

    batch_id: str | None
    rows_in: int
    rows_written: int
    duplicates_dropped: int
    missing_dropped: int
    rows_by_metric: dict[str, int] = field(default_factory=dict)
    watermarks: dict[str, pd.Timestamp] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON-ready values, small enough to pass between flow tasks or show in an artifact."""
        return {
            "batch_id": self.batch_id,
            "rows_in": self.rows_in,
            "rows_written": self.rows_written,
            "duplicates_dropped": self.duplicates_dropped,
            "missing_dropped": self.missing_dropped,
            "rows_by_metric": dict(self.rows_by_metric),
            "watermarks": {m: t.isoformat() for m, t in self.watermarks.items()},
        }


# -- the store -----------------------------------------------------------------------


class RawStore:
    """Append-only Parquet store of long-form points under one local folder (see the module doc)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RawStore({str(self.root)!r})"

    # -- writing ---------------------------------------------------------------------

    def append(self, points: pd.DataFrame) -> AppendResult:
        """Store the points not already stored; return what happened.

        Rows with a missing value are dropped (and counted): they are not
        observations. Within the batch the last row of a (metric, timestamp)
        wins; a point already stored is kept and the new one dropped. Nothing
        new is a normal, quiet result with ``batch_id`` None.

        Bad input raises :class:`DataError` before anything is written. Waiting
        more than ``LOCK_TIMEOUT_S`` for another writer raises
        ``filelock.Timeout``, an ``OSError`` like other I/O failures: callers
        may retry those, and a retry after a failure past the commit point
        only finds duplicates.
        """
        frame = validate_points(points)
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
            new = self._drop_stored(unique, self._committed())
            batch_id = self._write_batch(new) if len(new) else None
            after = self._update_watermarks(before, new) if batch_id else before
        counts = {str(m): int(n) for m, n in new["metric"].value_counts(sort=False).items()}
        batch_metrics = [str(m) for m in pd.unique(unique["metric"])]
        return AppendResult(
            batch_id,
            rows_in,
            len(new),
            in_batch + len(unique) - len(new),
            missing,
            dict(sorted(counts.items())),
            {m: after[m] for m in sorted(batch_metrics) if m in after},
        )

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

    def _write_batch(self, points: pd.DataFrame) -> str:
        """Write one batch and commit it; return its id. Called under the lock.

        Order: intent record, part files (fsynced), commit record (the commit
        point), intent record removed. Anything raised before the commit
        removes what this batch wrote and leaves the store as it was.
        """
        batch_id = _new_batch_id()
        groups = _partitions(points)
        files = [f"{RAW}/{METRIC_PREFIX}{m}/{_day_dir(day)}/{PART_PREFIX}{batch_id}{PART_SUFFIX}" for (m, day), _ in groups]
        intent = self.root / PENDING / f"{batch_id}.json"
        record = self.root / COMMITS / f"{batch_id}.json"
        try:
            intent.parent.mkdir(exist_ok=True)
            atomic_write_json(intent, {"batch_id": batch_id, "pid": os.getpid(), "files": files})
            for rel, (_, part) in zip(files, groups):
                path = self.root / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                _write_part(path, part)
            folders = {(self.root / rel).parent for rel in files} | {(self.root / rel).parent.parent for rel in files}
            _fsync_dirs(folders | {self._raw, self.root})
            self._commit(batch_id, files, points)
            _fsync_dirs([record.parent])
        except BaseException:
            if not record.exists():  # the record on disk, not a flag, says whether the commit happened
                with contextlib.suppress(OSError):
                    self._discard(files, intent)
            raise
        with contextlib.suppress(OSError):
            intent.unlink()
        return batch_id

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
            for folder in (path.parent, path.parent.parent):
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

        This is the form :func:`anomaly.data.normalise` accepts. Columns follow
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
                listing = ", ".join(self.metrics()) or "none"
                raise DataError(f"metric {name!r} is not in the store {str(self.root)!r}; metrics: {listing}")
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
        return dict(sorted(stored.items()))

    def _watermarks_from_data(self, committed: set[str]) -> dict[str, pd.Timestamp]:
        """Latest timestamp per metric, reading only each metric's newest day partition."""
        marks = {}
        for metric in self._metric_dirs():
            files = self._newest_files(metric, committed)
            if files:
                stamps = _read_parts(files, columns=["timestamp"])["timestamp"]
                marks[metric] = pd.Timestamp(stamps.max())
        return marks


# -- helpers -------------------------------------------------------------------------


def _partitions(points: pd.DataFrame) -> list[tuple[tuple[str, pd.Timestamp], pd.DataFrame]]:
    """The batch split by (metric, UTC day), each part sorted by time."""
    days = points["timestamp"].dt.floor("D")
    return [
        ((str(metric), pd.Timestamp(day)), part.sort_values("timestamp", kind="stable"))
        for (metric, day), part in points.groupby([points["metric"], days], sort=True)
    ]


def _is_part_of(rel: object, batch_id: str) -> bool:
    """Whether ``rel`` is ``raw/metric=<valid name>/date=<YYYY-MM-DD>/part-<batch_id>.parquet``."""
    if not isinstance(rel, str):
        return False
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


def _day_dir(stamp: pd.Timestamp) -> str:
    return f"{DATE_PREFIX}{stamp.strftime('%Y-%m-%d')}"


def _write_part(path: Path, points: pd.DataFrame) -> None:
    """One part file, fsynced: it must be durable before the commit record names it."""
    table = pa.Table.from_pandas(points[list(COLUMNS)], schema=SCHEMA, preserve_index=False)
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
        raise DataError(f"invalid {what} {value!r}: {exc}") from exc


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
    """A temporary file of :func:`anomaly.fileio.atomic_write_json`: ``.<target>.<random>`` (any ``.json`` target when empty)."""
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
