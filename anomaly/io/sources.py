"""Where metric points come from: the :class:`Source` contract, files, and :func:`ingest`.

An ingest flow calls ``ingest(source, store)``: the source is asked for
points newer than the store's watermarks and the store keeps the new ones.
Files come first; Prometheus and SQL sources implement the same protocol.

Errors are split by what a caller can do about them. Bad configuration or bad
content (a missing path, a file that is not CSV/Parquet, a non-numeric value)
raises :class:`~anomaly.errors.DataError`: retrying cannot help. An I/O
failure while listing or reading (network, permissions, a vanished mount)
raises :class:`SourceIOError`, which is also an ``OSError``: a flow may retry
those (``except OSError`` first). Sources never retry themselves; the flow's
task retries own that policy.
"""

from __future__ import annotations

import importlib
import logging
import posixpath
from dataclasses import dataclass
from typing import Any, Mapping, Protocol, Sequence, runtime_checkable

import fsspec
import pandas as pd
import pyarrow as pa
from fsspec.implementations.local import LocalFileSystem

from anomaly.core.data import COMPRESSION_SUFFIXES, LONG_COLUMNS, ReadBudget, as_utc, file_kind, read_frame, to_wide
from anomaly.errors import DataError, excerpt
from anomaly.io.catalogue import Series
from anomaly.io.store import (
    ORIGIN,
    AppendResult,
    RawStore,
    check_metric_name,
    empty_points,
    validate_points,
)

log = logging.getLogger(__name__)



class SourceIOError(DataError, OSError):
    """Listing or reading a source failed at the I/O level; the message names the path.

    A :class:`DataError` so the CLI reports it in one line, and an ``OSError``
    so a flow can tell it apart from bad data and retry it.
    """


@runtime_checkable
class Source(Protocol):
    """Anything that can return new metric points: files, Prometheus, SQL.

    Contract for ``fetch(watermarks)``:

    - ``watermarks`` maps a metric to the latest timestamp the store holds
      for it (UTC). Return points *newer* than that for each metric; for a
      metric without a watermark, return everything the source is meant to
      provide (its configured history). Returning some overlap is allowed
      (a query window rounded down, a file read whole): the store drops
      points it already has, first stored wins. Late points (older than the
      watermark) may be returned and are kept if new.
    - Return long form: columns ``metric``, ``timestamp``, ``value`` as
      :func:`anomaly.io.store.validate_points` accepts them (timestamps as UTC
      datetimes, ISO strings or epoch seconds; float values; NaN is "no
      reading" and is dropped). :func:`newer_than` does the filtering.
    - Metric names must pass :func:`anomaly.io.store.check_metric_name`. A
      source with label sets (Prometheus series, SQL dimensions) maps each
      series to a stable safe key (e.g. ``http_requests:job=api`` is *not*
      safe; ``http_requests.job_api`` is) and documents the mapping.
    - Optionally, ``fetched_series()`` returns the series the last fetch
      returned as ``{store name: Series}`` (:mod:`anomaly.io.catalogue`):
      their metric name and labels. :func:`ingest` records them in the
      store's series catalogue after the points are stored.
    - Nothing new is an empty DataFrame, not an error.
    - Optionally, ``fetch_by_origin(watermarks)`` returns the same points as
      ``[(origin, frame), ...]`` (e.g. one per file): :func:`ingest` then
      names each point's origin when the store quarantines it.
    - Raise :class:`DataError` for configuration or content problems and an
      ``OSError`` (e.g. :class:`SourceIOError`) for I/O that may succeed on a
      retry. Do not retry inside ``fetch``.
    - Be cheap to construct from plain parameters (URLs, queries, names), so
      a flow task can build one from its small inputs; hold no open
      connections between calls. ``name`` identifies the source in logs.
    """

    name: str

    def fetch(self, watermarks: Mapping[str, pd.Timestamp]) -> pd.DataFrame: ...


def newer_than(points: pd.DataFrame, watermarks: Mapping[str, pd.Timestamp]) -> pd.DataFrame:
    """Rows of ``points`` strictly after their metric's watermark; every row of a metric without one.

    ``points`` are as :func:`anomaly.io.store.validate_points` returns them; a
    naive watermark is taken as UTC, like naive timestamps everywhere else.
    """
    if points.empty or not watermarks:
        return points
    marks = pd.Series({str(m): as_utc(t) for m, t in watermarks.items()}, dtype="datetime64[ns, UTC]")
    limit = points["metric"].map(marks)
    keep = limit.isna().to_numpy() | (points["timestamp"] > limit).to_numpy()
    return points[keep]


def ingest(source: Source, store: RawStore) -> AppendResult:
    """Fetch what ``source`` has after the store's watermarks and append it.

    Safe to re-run: an overlapping or repeated fetch only adds duplicates,
    which the store drops.
    """
    points = _fetch_with_origin(source, store.watermarks())
    found = _fetched_series(source)
    if found:
        store.series()  # a damaged catalogue stops the ingest before anything is stored, naming the file
    result = store.append(points)
    if found:
        store.record_series(found.values())
    log.info(
        "ingest from %s into %s: %d rows in, %d new, %d duplicates, %d missing, %d quarantined",
        source.name, store.root, result.rows_in, result.rows_written, result.duplicates_dropped, result.missing_dropped,
        result.quarantined,
    )  # fmt: skip
    return result


def _fetched_series(source: Source) -> dict[str, Series]:
    """The series (name and labels) the source's last fetch returned, if it tells: ``{}`` for files."""
    method = getattr(source, "fetched_series", None)
    found = method() if callable(method) else {}
    if not isinstance(found, Mapping) or not all(isinstance(s, Series) for s in found.values()):
        raise DataError(f"source {excerpt(source.name)} returned {type(found).__name__} from fetched_series(), expected {{name: Series}}")
    return dict(found)


def _fetch_with_origin(source: Source, watermarks: Mapping[str, pd.Timestamp]) -> pd.DataFrame:
    """The source's new points with an :data:`~anomaly.io.store.ORIGIN` column: a file's name, else the source's."""
    by_origin = getattr(source, "fetch_by_origin", None)
    parts = by_origin(watermarks) if callable(by_origin) else [(str(source.name), source.fetch(watermarks))]
    for _, frame in parts:
        if not isinstance(frame, pd.DataFrame):
            raise DataError(f"source {excerpt(source.name)} returned {type(frame).__name__}, expected a pandas DataFrame")
    tagged = [frame.assign(**{ORIGIN: origin}) for origin, frame in parts if len(frame)]
    return pd.concat(tagged, ignore_index=True) if tagged else empty_points()


@dataclass(frozen=True)
class _File:
    """One data file found by a :class:`FileSource`: its filesystem, path and a name for people."""

    fs: fsspec.AbstractFileSystem
    path: str
    shown: str


class FileSource:
    """CSV/Parquet files, folders of them or glob patterns, local or any fsspec URL.

    ``paths`` entries may be files (``data/cpu.csv``), folders (their data
    files, non-recursive unless ``recursive=True``), glob patterns
    (``data/2024-*.parquet``, ``**`` for depth) or URLs (``memory://``,
    ``file://``, ``s3://bucket/prefix/`` with the matching fsspec driver
    installed; ``storage_options`` are passed to it). Each file may be wide
    (a time column or index, one column per metric) or long (``timestamp,
    metric, value``); parsing is :mod:`anomaly.core.data`'s. In folders and globs,
    files of other types and names starting with ``.`` or ``_`` are skipped;
    a file named explicitly must be CSV (``.csv``, ``.tsv``, ``.txt``,
    optionally compressed) or Parquet (``.parquet``, ``.pq``).

    Paths are expanded on every fetch, so files that appear later are picked
    up. Every matching file is read whole on every fetch and filtered by the
    watermarks: fine for a working set of files, not for an ever-growing
    archive (point the source at the recent files instead). One fetch reads
    at most ``max_read_mb`` MiB (default ``$ANOMALY_MAX_READ_MB``, else
    :data:`anomaly.core.data.MAX_READ_MB`), counted after decompression: a larger
    file is refused before it is opened. Files are read in
    path order, so where two files hold the same point in one fetch, the
    later path wins. Repeated timestamps inside one *wide* file are averaged
    (:func:`anomaly.core.data.to_wide`); inside a long file the last row wins.
    """

    def __init__(
        self,
        paths: str | Sequence[str],
        *,
        recursive: bool = False,
        name: str = "files",
        storage_options: Mapping[str, Any] | None = None,
        max_read_mb: float | None = None,
    ) -> None:
        self.paths = [paths] if isinstance(paths, str) else list(paths)
        self.recursive = recursive
        self.name = name
        self.storage_options = dict(storage_options or {})
        if not self.paths or not all(isinstance(p, str) and p for p in self.paths):
            raise DataError(f"FileSource needs one or more non-empty path strings, got {excerpt(paths)}")
        if max_read_mb is not None and not (isinstance(max_read_mb, (int, float)) and 0 < max_read_mb < float("inf")):
            raise DataError(f"max_read_mb must be a positive number of MiB, got {excerpt(max_read_mb)}")
        self.max_read_mb = max_read_mb

    def __repr__(self) -> str:
        return f"FileSource({self.paths!r}, recursive={self.recursive})"

    def fetch(self, watermarks: Mapping[str, pd.Timestamp]) -> pd.DataFrame:
        """Points of every matched file newer than their metric's watermark (see :class:`Source`)."""
        frames = [frame for _, frame in self.fetch_by_origin(watermarks)]
        return pd.concat(frames, ignore_index=True) if frames else empty_points()

    def fetch_by_origin(self, watermarks: Mapping[str, pd.Timestamp]) -> list[tuple[str, pd.DataFrame]]:
        """:meth:`fetch` file by file, as ``(file, points)`` for files with new points, in path order."""
        budget = ReadBudget(None if self.max_read_mb is None else int(self.max_read_mb * (1 << 20)))
        frames = [(file.shown, newer_than(self._read(file, budget), watermarks)) for file in self._expand_all()]
        return [(shown, frame) for shown, frame in frames if len(frame)]

    def files(self) -> list[str]:
        """The data files the paths match now, as fetch would read them (for logs and dry runs)."""
        return [f.shown for f in self._expand_all()]

    # -- finding files ---------------------------------------------------------------

    def _expand_all(self) -> list[_File]:
        found: dict[tuple[int, str], _File] = {}
        for spec in self.paths:
            for file in self._expand(spec):
                found.setdefault((id(file.fs), file.path), file)
        return sorted(found.values(), key=lambda f: f.shown)

    def _expand(self, spec: str) -> list[_File]:
        """The data files one path entry names: a file, a folder's data files or a glob's matches."""
        try:
            fs, path = fsspec.core.url_to_fs(spec, **self.storage_options)
        except (ImportError, ValueError) as exc:
            raise DataError(f"cannot open data path {spec!r}: {exc}") from exc
        try:
            if any(ch in path for ch in "*?["):
                entries = fs.glob(path, detail=True)
                what = f"match the pattern {spec!r}"
            elif fs.isdir(path):
                entries = fs.find(path, detail=True) if self.recursive else fs.ls(path, detail=True)
                what = f"in the folder {spec!r}" + ("" if self.recursive else " (not recursive)")
            elif fs.isfile(path):
                _kind(path, spec)  # a file named explicitly must be readable: refuse other types now
                return [_File(fs, path, _shown(fs, path, spec))]
            else:
                raise DataError(f"data path not found: {spec!r}")
        except OSError as exc:
            raise SourceIOError(f"cannot list data path {spec!r}: {exc}") from exc
        items = entries.values() if isinstance(entries, dict) else entries
        files = sorted(
            e["name"] for e in items if e.get("type") == "file" and _is_data_file(e["name"])
        )
        if not files:
            raise DataError(f"no data files (.csv, .tsv, .parquet, .pq) {what}")
        return [_File(fs, p, _shown(fs, p, spec)) for p in files]

    # -- reading files ---------------------------------------------------------------

    def _read(self, file: _File, budget: ReadBudget) -> pd.DataFrame:
        """One file as validated long-form points, without missing values; errors name the file.

        Its size is checked against ``budget`` before it is opened.
        """
        kind = _kind(file.path, file.shown)
        try:
            size = file.fs.size(file.path)
            if size is not None:
                budget.admit(int(size), file.shown)
            with file.fs.open(file.path, "rb", compression=None if kind == "parquet" else "infer") as handle:
                frame = read_frame(handle, kind, file.shown, budget)
        except OSError as exc:
            raise SourceIOError(f"cannot read {file.shown!r}: {exc}") from exc
        try:
            points = _to_points(frame)
        except DataError as exc:
            raise DataError(f"{file.shown!r}: {exc}") from exc
        return points[points["value"].notna().to_numpy()]


def _to_points(frame: pd.DataFrame) -> pd.DataFrame:
    """Long-form points from a wide or long frame, parsed by :mod:`anomaly.core.data`."""
    if len(frame) == 0:
        return empty_points()
    lower = {str(c).lower() for c in frame.columns}
    if all(c in lower for c in LONG_COLUMNS):
        return validate_points(frame)
    wide = to_wide(frame)
    for column in wide.columns:
        try:
            check_metric_name(column)
        except DataError as exc:
            raise DataError(f"column {excerpt(column)} cannot be a metric: {exc}") from None
    long = wide.rename_axis(columns="metric").stack(future_stack=True).rename("value").reset_index()
    return validate_points(long)


def _kind(path: str, shown: str) -> str:
    """``parquet``, ``csv`` or ``tsv`` from the file name; anything else is refused by name."""
    kind = file_kind(posixpath.basename(path))
    if kind is None:
        raise DataError(
            f"unsupported file type for {shown!r}: expected .csv, .tsv, .txt (optionally compressed) or .parquet"
        )
    return kind


def _is_data_file(path: str) -> bool:
    """Whether a folder or glob entry is data: CSV/TSV/Parquet, not hidden, not ``_SUCCESS``-like.

    ``.txt`` counts only when named explicitly, so a folder's README.txt is not read as data.
    """
    base = posixpath.basename(path).lower()
    stem, ext = posixpath.splitext(base)
    if base.startswith((".", "_")) or (stem if ext in COMPRESSION_SUFFIXES else base).endswith(".txt"):
        return False
    try:
        _kind(path, path)
    except DataError:
        return False
    return True


def _shown(fs: fsspec.AbstractFileSystem, path: str, spec: str) -> str:
    """The path as a person gave it: plain for local paths, a URL for other filesystems."""
    if isinstance(fs, LocalFileSystem) and "://" not in spec:
        return path
    return fs.unstrip_protocol(path)


#: Source kinds a spec may name, as ``module:Class``; imported only when used, so a
#: deployment reading files never needs a database driver.
SOURCE_KINDS: dict[str, str] = {
    "files": "anomaly.io.sources:FileSource",
    "sql": "anomaly.io.sql:SQLSource",
    "prometheus": "anomaly.io.prometheus:PrometheusSource",
}


def build_source(spec: str | Sequence[str] | Mapping[str, Any]) -> Source:
    """A source from the plain parameters a flow or ``prefect.yaml`` carries.

    A path or a list of paths means files. A mapping names its ``kind``
    (``files`` by default) and passes the rest to that source, e.g.
    ``{"kind": "files", "paths": ["s3://bucket/metrics/"], "recursive": true}``.
    Parameters are small and JSON-shaped so a scheduled run can carry them.
    """
    if isinstance(spec, str) or (isinstance(spec, Sequence) and not isinstance(spec, Mapping)):
        return FileSource(spec)
    if not isinstance(spec, Mapping):
        raise DataError(f"a source is a path, a list of paths or a mapping with a 'kind', got {excerpt(spec)}")
    options = dict(spec)
    kind = options.pop("kind", "files")
    if kind not in SOURCE_KINDS:
        raise DataError(f"unknown source kind {excerpt(kind)}; expected one of {sorted(SOURCE_KINDS)}")
    module, _, attribute = SOURCE_KINDS[kind].partition(":")
    try:
        return getattr(importlib.import_module(module), attribute)(**options)
    except TypeError as exc:
        raise DataError(f"bad options for a {kind!r} source {sorted(options)}: {exc}") from exc


__all__ = ["FileSource", "SOURCE_KINDS", "Source", "SourceIOError", "build_source", "ingest", "newer_than"]
