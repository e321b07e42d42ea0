"""Metric data in: read files, accept wide or long frames, normalise to a grid.

Everything downstream assumes the *metric frame* contract: a sorted, unique,
UTC ``DatetimeIndex`` on a regular grid with one float column per metric, and
a mask of which points were really observed. This module is the only place
that turns messy input into that shape, so every rejection of bad input lives
here and names the column and value at fault.
"""

from __future__ import annotations

import csv
import io
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Sequence

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pandas.tseries.frequencies import to_offset

from anomaly.core.config import PreprocessConfig
from anomaly.errors import ConfigError, DataError, excerpt

log = logging.getLogger(__name__)

TIME_COLUMNS: tuple[str, ...] = ("timestamp", "time", "datetime", "date", "ts")
LONG_COLUMNS: tuple[str, str] = ("metric", "value")
_EPOCH = pd.Timestamp(0, tz="UTC")
EARLY_TOLERANCE = 0.1  # fraction of a step a reading may arrive early and keep its slot

#: The years a timestamp may have: what a nanosecond timestamp holds (1677-09-21 to 2262-04-11).
NS_MIN, NS_MAX = pd.Timestamp.min.tz_localize("UTC"), pd.Timestamp.max.tz_localize("UTC")
_SECONDS_MIN, _SECONDS_MAX = math.ceil(NS_MIN.value / 1e9), math.floor(NS_MAX.value / 1e9)
_EPOCH_UNITS: tuple[tuple[str, int], ...] = (("milliseconds", 10**3), ("microseconds", 10**6), ("nanoseconds", 10**9))

#: Most metrics one frame may hold (columns of a wide file, names in a long one): each is a
#: column on the grid and a folder in the store, and no fleet's group needs more.
MAX_METRICS = 10_000
#: A grid may have at most GRID_FACTOR points per row of data, and always GRID_FLOOR: gaps and
#: sparse readings are normal, while a grid 20 times the data means a stray timestamp decades
#: away or a frequency far finer than the data's, which would exhaust memory.
GRID_FACTOR = 20
GRID_FLOOR = 1_000_000
#: Default MiB one run reads from data files (one CLI file; every file of a FileSource fetch):
#: a CSV takes 3-5 times its size in memory. ``$ANOMALY_MAX_READ_MB`` sets another limit.
MAX_READ_MB = 512
READ_LIMIT_ENV = "ANOMALY_MAX_READ_MB"
#: Longest text a timestamp may be: ISO with nanoseconds and an offset is 35 characters, and
#: the date parser would spend minutes on a 20 MB field.
MAX_TIMESTAMP_CHARS = 100
#: Longest CSV header line: 10,000 names of 200 characters fit, one 200 MB field does not.
MAX_HEADER_BYTES = 4 << 20
COMPRESSION_SUFFIXES: tuple[str, ...] = (".gz", ".bz2", ".xz", ".zst")


@dataclass(frozen=True)
class MetricFrame:
    """Values on a regular UTC grid plus what was observed and what was filled.

    ``values`` keeps NaN where a gap was too long to fill. ``filled`` marks
    points whose value was interpolated: they feed the model (a window needs
    every point) but are never reported as anomalies.
    """

    values: pd.DataFrame
    filled: pd.DataFrame
    freq: pd.Timedelta

    @property
    def metrics(self) -> list[str]:
        return [str(c) for c in self.values.columns]

    @property
    def index(self) -> pd.DatetimeIndex:
        return self.values.index  # type: ignore[return-value]

    @property
    def missing(self) -> pd.DataFrame:
        """Points with no value at all (gaps longer than the fill limit)."""
        return self.values.isna()

    def __len__(self) -> int:
        return len(self.values)

    def select(self, metrics: Sequence[str]) -> "MetricFrame":
        """The same frame restricted to ``metrics``, in that order; a missing one is an error."""
        absent = [m for m in metrics if m not in self.values.columns]
        if absent:
            raise DataError(
                f"metric {excerpt(absent[0])} is missing from the data; the model was trained on "
                f"{excerpt(list(metrics), 200)} and the data has {excerpt(self.metrics, 200)}"
            )
        cols = list(metrics)
        return MetricFrame(self.values[cols], self.filled[cols], self.freq)

    def split(self, at: pd.Timestamp) -> tuple["MetricFrame", "MetricFrame"]:
        """The points at or before ``at`` and those after it (e.g. context and new points)."""
        after = self.index > at
        return (
            MetricFrame(self.values[~after], self.filled[~after], self.freq),
            MetricFrame(self.values[after], self.filled[after], self.freq),
        )


def read_table(path: str | Path, budget: ReadBudget | None = None) -> pd.DataFrame:
    """Read a CSV or Parquet file as it is; the form is worked out by :func:`to_wide`.

    The file's size is checked against ``budget`` (default: :func:`read_limit_bytes`)
    before it is opened, and a compressed CSV stops as soon as it expands past it.
    """
    p = Path(path)
    shown = str(p)
    if not p.exists():
        raise DataError(f"data file not found: {shown!r}")
    kind = file_kind(p.name)
    if kind is None:
        raise DataError(f"unsupported file type {excerpt(p.suffix)} for {shown!r}; expected .csv or .parquet")
    budget = budget or ReadBudget()
    try:
        budget.admit(p.stat().st_size, shown)
        with fsspec.open(str(p), "rb", compression="infer") as handle:
            return read_frame(handle, kind, shown, budget)
    except OSError as exc:
        raise DataError(f"cannot read {shown!r}: {one_line(exc)}") from exc


def file_kind(name: str) -> str | None:
    """``parquet``, ``csv`` or ``tsv`` from a file name (a compression suffix is looked through), else None."""
    lower = name.lower()
    if lower.endswith((".parquet", ".pq")):
        return "parquet"
    stem, ext = os.path.splitext(lower)
    if ext in COMPRESSION_SUFFIXES:
        lower = stem
    if lower.endswith(".tsv"):
        return "tsv"
    if lower.endswith((".csv", ".txt")):
        return "csv"
    return None



def read_limit_bytes() -> int:
    """The bytes one run may read: ``$ANOMALY_MAX_READ_MB`` MiB, else :data:`MAX_READ_MB`."""
    text = os.environ.get(READ_LIMIT_ENV, "").strip()
    if not text:
        return MAX_READ_MB << 20
    try:
        mib = float(text)
    except ValueError:
        mib = math.nan
    if not (math.isfinite(mib) and mib > 0):
        raise ConfigError(f"{READ_LIMIT_ENV} must be a positive number of MiB, got {excerpt(text)}")
    return int(mib * (1 << 20))


def size_text(n: int) -> str:
    """Bytes for people: ``2.0 GiB``, ``512 MiB``, ``900 bytes``."""
    if n >= 1 << 30:
        return f"{n / (1 << 30):.1f} GiB"
    if n >= 1 << 20:
        return f"{n / (1 << 20):.3g} MiB"
    return f"{n:,} bytes"


class ReadBudget:
    """The bytes one run may still read, charged by every file it reads (after decompression).

    One budget spans a run (a CLI command's file, or a whole FileSource fetch),
    so many files cannot add up to what one large file may not.
    """

    def __init__(self, limit: int | None = None) -> None:
        self.limit = read_limit_bytes() if limit is None else limit
        self.used = 0

    def admit(self, size: int, shown: str) -> None:
        """Refuse a file of ``size`` bytes before opening it when it cannot fit."""
        if self.used + size > self.limit:
            already = f" after {size_text(self.used)} of other files" if self.used else ""
            raise DataError(
                f"{shown!r} is {size_text(size)}, more than the {size_text(self.limit)} a run reads{already} "
                f"(set {READ_LIMIT_ENV} to allow more)"
            )

    def charge(self, n: int, shown: str) -> None:
        """Count ``n`` bytes read from ``shown``; past the limit the read stops."""
        self.used += n
        if self.used > self.limit:
            raise DataError(
                f"{shown!r} expands past the {size_text(self.limit)} a run reads "
                f"(set {READ_LIMIT_ENV} to allow more)"
            )


def one_line(exc: BaseException, limit: int = 200) -> str:
    """An exception's text on one line, cut to ``limit`` characters: parsers quote whole fields."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else f"{text[:limit]}… ({len(text):,} characters)"


class _Refused(Exception):
    """A read stopped on purpose (a NUL byte, a bad header); the reader adds the file name."""


def read_frame(handle: IO[bytes], kind: str, shown: str, budget: ReadBudget) -> pd.DataFrame:
    """One opened CSV/TSV/Parquet stream as a DataFrame, in bounded memory; errors name ``shown``.

    I/O errors (``OSError``) propagate for the caller to classify; bad content
    raises :class:`DataError` in one line.
    """
    try:
        if kind == "parquet":
            return _read_parquet(handle, shown, budget)
        return _read_csv(handle, "\t" if kind == "tsv" else ",", shown, budget)
    except DataError:
        raise
    except _Refused as exc:
        raise DataError(f"cannot read {shown!r} as {kind.upper()}: {exc}") from None
    except OSError:
        raise
    except (ValueError, pa.ArrowException, pd.errors.ParserError, EOFError) as exc:
        raise DataError(f"cannot read {shown!r} as {kind.upper()}: {one_line(exc)}") from exc


def _read_parquet(handle: IO[bytes], shown: str, budget: ReadBudget) -> pd.DataFrame:
    """Check the footer (columns, uncompressed size) before reading any data."""
    meta = pq.ParquetFile(handle).metadata
    if meta.num_columns > MAX_METRICS + 1:
        raise _Refused(_too_many_columns(meta.num_columns))
    budget.charge(sum(meta.row_group(i).total_byte_size for i in range(meta.num_row_groups)), shown)
    handle.seek(0)
    return pd.read_parquet(handle)


def _read_csv(handle: IO[bytes], sep: str, shown: str, budget: ReadBudget) -> pd.DataFrame:
    """Check the header line, then let pandas read through a stream that charges the budget."""
    head = handle.read(MAX_HEADER_BYTES)
    _check_header(head, sep)
    stream = io.BufferedReader(_GuardedStream(handle, head, budget, shown), buffer_size=1 << 20)
    return pd.read_csv(stream, sep=sep, encoding="utf-8")


def _check_header(head: bytes, sep: str) -> None:
    """Refuse binary data, an endless first line, too many, empty or repeated column names.

    pandas would read the first two whole, and rename the last two (``Unnamed: 1``,
    ``cpu.1``) into metrics nobody has.
    """
    if (nul := head.find(b"\0")) >= 0:
        raise _Refused(f"a NUL byte at byte {nul:,}: not a text file")
    end = head.find(b"\n")
    if end < 0 and len(head) >= MAX_HEADER_BYTES:
        raise _Refused(f"the header line is longer than {size_text(MAX_HEADER_BYTES)}: not a CSV header")
    try:
        text = head[: end if end >= 0 else len(head)].decode("utf-8-sig").rstrip("\r")
    except UnicodeDecodeError as exc:
        raise _Refused(f"the header is not UTF-8 text (byte {exc.start:,})") from None
    names = next(csv.reader([text], delimiter=sep), [])
    if len(names) > MAX_METRICS + 1:
        raise _Refused(_too_many_columns(len(names)))
    stripped = [n.strip() for n in names]
    if len(names) > 1 and "" in stripped:
        raise _Refused(f"empty column name at position {stripped.index('') + 1} of the header")
    seen: set[str] = set()
    for name in stripped:
        if name in seen:
            raise _Refused(f"duplicate column {excerpt(name)} in the header")
        seen.add(name)


def _too_many_columns(count: int) -> str:
    return f"{count:,} columns, more than {MAX_METRICS + 1:,} (a time column and {MAX_METRICS:,} metrics)"


class _GuardedStream(io.RawIOBase):
    """A file's bytes (the already-read ``head`` first), charged to a budget; a NUL byte stops it."""

    def __init__(self, handle: IO[bytes], head: bytes, budget: ReadBudget, shown: str) -> None:
        super().__init__()
        self._handle, self._head, self._budget, self._shown = handle, head, budget, shown
        self._offset = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        want = len(buffer)
        if self._head:
            chunk, self._head = self._head[:want], self._head[want:]
        else:
            chunk = self._handle.read(want)
        if (nul := chunk.find(b"\0")) >= 0:
            raise _Refused(f"a NUL byte at byte {self._offset + nul:,}: not a text file")
        self._budget.charge(len(chunk), self._shown)
        self._offset += len(chunk)
        buffer[: len(chunk)] = chunk
        return len(chunk)


def to_wide(frame: pd.DataFrame, aggregate: str = "mean") -> pd.DataFrame:
    """Wide float frame indexed by UTC timestamps (not yet on a grid).

    Accepts a frame indexed by timestamps, a wide frame with a time column, or
    long form with ``timestamp, metric, value`` columns. Duplicate timestamps
    are aggregated with ``aggregate``.
    """
    if not isinstance(frame, pd.DataFrame):
        raise DataError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    if frame.empty:
        raise DataError("the data is empty: no rows")
    lower = {str(c).lower(): c for c in frame.columns}
    time_col = next((lower[c] for c in TIME_COLUMNS if c in lower), None)
    if isinstance(frame.index, pd.DatetimeIndex):
        stamps, body = frame.index, frame
    elif time_col is not None:
        stamps, body = pd.Index(frame[time_col]), frame.drop(columns=[time_col])
    else:
        raise DataError(
            "no timestamps: expected a DatetimeIndex or a time column named one of "
            f"{list(TIME_COLUMNS)}; columns are {excerpt([str(c) for c in frame.columns], 200)}"
        )
    index = parse_timestamps(stamps)
    body_lower = {str(c).lower(): c for c in body.columns}
    if all(c in body_lower for c in LONG_COLUMNS):
        metric_col, value_col = (body_lower[c] for c in LONG_COLUMNS)
        values = numeric_values(body[value_col], "value", index)
        names = _long_metric_names(body[metric_col])
        _check_pivot(index, names)
        long = pd.DataFrame({"metric": names, "value": values}, index=index)
        wide = long.pivot_table(index=long.index, columns="metric", values="value", aggfunc=aggregate, dropna=False)
        wide.columns = [str(c) for c in wide.columns]
    else:
        if body.shape[1] == 0:
            raise DataError("no metric columns: the data has only timestamps")
        if body.shape[1] > MAX_METRICS:
            raise DataError(f"{body.shape[1]:,} metric columns, more than {MAX_METRICS:,}")
        wide = pd.DataFrame(
            {str(c): numeric_values(body[c], str(c), index) for c in body.columns}, index=index
        )
        if not wide.index.is_unique:
            wide = wide.groupby(level=0).agg(aggregate)
    wide.index.name = "timestamp"
    return wide.sort_index()


def _long_metric_names(column: pd.Series) -> np.ndarray:
    """Metric names of long-form rows as text; a missing or empty one is named by row, not made ``'nan'``."""
    raw = pd.Series(column.to_numpy(dtype=object))
    blank = raw.isna().to_numpy() | (raw.astype(str).str.strip() == "").to_numpy()
    if blank.any():
        raise DataError(f"missing metric name at row {int(np.flatnonzero(blank)[0])}")
    return raw.astype(str).to_numpy(dtype=object)


def _check_pivot(index: pd.DatetimeIndex, names: np.ndarray) -> None:
    """Refuse long form whose wide form would dwarf it (a new metric or timestamp on every row)."""
    metrics, times = len(pd.unique(names)), index.nunique()
    if metrics > MAX_METRICS:
        raise DataError(f"{len(names):,} rows name {metrics:,} metrics, more than {MAX_METRICS:,}")
    cells = times * metrics
    if cells > max(GRID_FLOOR, GRID_FACTOR * len(names)):
        raise DataError(
            f"{len(names):,} rows of {metrics:,} metrics at {times:,} distinct times would make "
            f"{cells:,} cells in wide form, more than {GRID_FACTOR} per row: the metrics' timestamps do not line up"
        )


def as_utc(stamp: object) -> pd.Timestamp:
    """One timestamp in UTC; a naive one is taken as UTC already, as everywhere in the project."""
    ts = pd.Timestamp(stamp)  # type: ignore[arg-type]
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def grid_slots(stamps: pd.DatetimeIndex, step: pd.Timedelta) -> pd.DatetimeIndex:
    """The grid slot of each timestamp (see :func:`to_grid`): a reading a little early keeps its slot."""
    return (stamps + step * EARLY_TOLERANCE).floor(step)


def parse_timestamps(stamps: pd.Index | pd.Series) -> pd.DatetimeIndex:
    """UTC timestamps from strings, datetimes or epoch seconds; naive ones are taken as UTC.

    Years 1677-2262 (:data:`NS_MIN` to :data:`NS_MAX`, so any result converts to
    nanoseconds, as the store keeps them) are accepted; a number
    outside them as epoch seconds is refused naming the unit it looks like
    (epoch milliseconds are a common export). Errors name the value and row.
    """
    raw = pd.Series(np.asarray(stamps, dtype=object) if not isinstance(stamps, pd.DatetimeIndex) else stamps)
    if raw.isna().any():
        raise DataError(f"missing timestamp at row {int(np.flatnonzero(raw.isna().to_numpy())[0])}")
    kind = pd.api.types.infer_dtype(raw, skipna=False)
    numeric = pd.to_numeric(raw, errors="coerce") if kind in {"integer", "floating", "mixed-integer-float", "string"} else None
    if numeric is not None and numeric.notna().all():
        _check_epoch_seconds(numeric, raw)
        parsed = pd.to_datetime(numeric, unit="s", utc=True)
    else:
        _check_text_length(raw, kind)
        parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"unparseable timestamp {excerpt(raw.iloc[row])} at row {row}")
    index = pd.DatetimeIndex(parsed, name="timestamp")
    outside = np.asarray((index < NS_MIN) | (index > NS_MAX))
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise DataError(
            f"timestamp {index[row]} at row {row} is outside the supported years {NS_MIN.year}-{NS_MAX.year}"
        )
    return index


def _check_text_length(raw: pd.Series, kind: str) -> None:
    """Refuse text far longer than any timestamp before the (slow) date parser sees it."""
    if kind not in {"string", "mixed", "mixed-integer"}:
        return
    lengths = raw.map(lambda v: len(v) if isinstance(v, str) else 0).to_numpy()
    if (lengths > MAX_TIMESTAMP_CHARS).any():
        row = int(np.flatnonzero(lengths > MAX_TIMESTAMP_CHARS)[0])
        raise DataError(f"unparseable timestamp {excerpt(raw.iloc[row])} at row {row}")


def _check_epoch_seconds(numbers: pd.Series, raw: pd.Series) -> None:
    """Refuse epoch numbers outside 1677-2262 as seconds, saying which unit the first one looks like."""
    values = numbers.to_numpy(dtype=np.float64)
    outside = ~((values >= _SECONDS_MIN) & (values <= _SECONDS_MAX))
    if not outside.any():
        return
    row = int(np.flatnonzero(outside)[0])
    fits = [(name, scale) for name, scale in _EPOCH_UNITS if _SECONDS_MIN <= values[row] / scale <= _SECONDS_MAX]
    hint = f"; it looks like epoch {fits[0][0]}: divide by {fits[0][1]:,}" if fits else ""
    raise DataError(
        f"timestamp {excerpt(raw.iloc[row])} at row {row} is outside the supported years "
        f"{NS_MIN.year}-{NS_MAX.year} as epoch seconds{hint}"
    )


def numeric_values(column: pd.Series, name: str, index: pd.DatetimeIndex) -> np.ndarray:
    """Float values of one column; text or infinities are rejected by name and time."""
    values = pd.to_numeric(pd.Series(column.to_numpy()), errors="coerce").to_numpy(dtype=np.float64)
    was_value = pd.Series(column.to_numpy()).notna().to_numpy()
    bad = was_value & np.isnan(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"non-numeric value {excerpt(column.iloc[i])} in column {excerpt(name)} at {index[i]}")
    inf = np.isinf(values)
    if inf.any():
        i = int(np.flatnonzero(inf)[0])
        raise DataError(f"infinite value {values[i]} in column {excerpt(name)} at {index[i]}")
    return values


def infer_freq(index: pd.DatetimeIndex) -> pd.Timedelta:
    """The sampling interval: the median spacing of distinct timestamps.

    The median tolerates jitter and occasional gaps, which real collectors have.
    """
    unique = index.unique().sort_values()
    if len(unique) < 2:
        raise DataError(f"cannot infer the sampling interval from {len(unique)} distinct timestamp(s)")
    step = pd.Series(unique).diff().dropna().median()
    if step <= pd.Timedelta(0):
        raise DataError(f"cannot infer the sampling interval: median spacing is {step}")
    seconds = step / pd.Timedelta("1s")
    return pd.Timedelta(seconds=round(seconds)) if seconds >= 1 else step


def normalise(
    data: pd.DataFrame | MetricFrame | str | Path,
    config: PreprocessConfig | None = None,
    *,
    freq: pd.Timedelta | str | None = None,
) -> MetricFrame:
    """Turn a file or frame (wide or long) into a :class:`MetricFrame`.

    ``freq`` overrides ``config.freq``; a fitted detector passes its training
    interval so new data lands on the same grid.
    """
    if isinstance(data, MetricFrame):
        return data
    cfg = config or PreprocessConfig()
    if not isinstance(data, (str, Path)):
        return _normalise_frame(data, cfg, freq)
    frame = read_table(data)
    try:
        return _normalise_frame(frame, cfg, freq)
    except DataError as exc:  # a file's content error names the file, as a read error does
        raise DataError(f"{str(data)!r}: {exc}") from exc


def _normalise_frame(frame: pd.DataFrame, cfg: PreprocessConfig, freq: pd.Timedelta | str | None) -> MetricFrame:
    wide = to_wide(frame, cfg.aggregate)
    step = pd.Timedelta(freq or cfg.freq) if (freq or cfg.freq) else infer_freq(wide.index)
    grid = to_grid(wide, step, cfg.aggregate)
    _reject_empty_metrics(grid)
    filled_values, filled = fill_short_gaps(grid, cfg.fill_limit, cfg.fill_method)
    return MetricFrame(filled_values.astype(np.float64), filled, step)


def to_grid(wide: pd.DataFrame, step: pd.Timedelta, aggregate: str) -> pd.DataFrame:
    """Bin timestamps onto a grid anchored at the epoch, aggregate, and fill out the grid.

    A slot ``t`` takes readings in ``[t - 10% of step, t + 90% of step)``: the
    usual bin below, except that a reading arriving a little early (collector
    jitter) still lands in its own slot instead of the previous one. The epoch
    anchor puts every file and every run of the same metric on the same grid.
    """
    slots = grid_slots(wide.index, step)
    check_grid(slots[0], slots[-1], step, len(wide))
    if slots.equals(wide.index) and wide.index.is_unique:
        grouped = wide  # already one reading per slot (the store's data): nothing to aggregate
    else:
        grouped = wide.groupby(slots).agg(aggregate)
        # An aggregate over no values (e.g. sum) must stay missing, not become 0.
        grouped = grouped.where(wide.notna().groupby(slots).sum() > 0)
    full = pd.date_range(grouped.index[0], grouped.index[-1], freq=step, name="timestamp")
    return grouped.reindex(full)


def check_grid(first: pd.Timestamp, last: pd.Timestamp, step: pd.Timedelta, rows: int) -> None:
    """Refuse, before allocating, a grid from ``first`` to ``last`` far larger than ``rows`` justify.

    At most ``max(GRID_FLOOR, GRID_FACTOR * rows)`` points: gappy or sparse data
    passes, one timestamp decades off or a frequency far finer than the data's
    does not. Integer nanoseconds: a 585-year span overflows a Timedelta.
    """
    points = (int(last.value) - int(first.value)) // int(step.value) + 1
    limit = max(GRID_FLOOR, GRID_FACTOR * rows)
    if points > limit:
        raise DataError(
            f"{rows:,} rows span {first} to {last}: a {step_text(step)} grid over that span would have "
            f"{points:,} points, more than {limit:,} ({GRID_FACTOR} per row, at least {GRID_FLOOR:,}); "
            "a timestamp far from the rest, or a frequency finer than the data's"
        )


def step_text(step: pd.Timedelta) -> str:
    """An interval as pandas writes a frequency, always with its count: ``5min``, ``1s``, ``1ns``, ``2D``."""
    days, rest = divmod(step, pd.Timedelta("1D"))
    if days and not rest:
        return f"{days}D"
    text = to_offset(step).freqstr
    return text if text[:1].isdigit() else f"1{text}"


def _reject_empty_metrics(grid: pd.DataFrame) -> None:
    empty = [str(c) for c in grid.columns if grid[c].isna().all()]
    if empty:
        raise DataError(f"metric {excerpt(empty[0])} has no values (all NaN)")


def fill_short_gaps(grid: pd.DataFrame, limit: int, method: str = "linear") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Fill interior gaps of at most ``limit`` points; return values and the filled mask.

    pandas' ``limit`` would half-fill a longer gap; here a gap is filled whole
    or not at all, so a long outage never gets a fabricated start.
    """
    missing = grid.isna()
    if limit == 0 or not missing.any().any():
        return grid, pd.DataFrame(False, index=grid.index, columns=grid.columns)
    short = missing.apply(lambda col: _short_gap_mask(col.to_numpy(), limit))
    if method == "linear":
        candidate = grid.interpolate(method="time", limit_area="inside")
    else:
        candidate = grid.ffill()
    filled = short & candidate.notna()
    return grid.where(~filled, candidate), filled


def _short_gap_mask(missing: np.ndarray, limit: int) -> np.ndarray:
    """True on missing points that belong to an interior run of at most ``limit``."""
    edges = np.diff(np.concatenate(([0], missing.astype(np.int8), [0])))
    starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
    keep = (starts > 0) & (ends < len(missing)) & (ends - starts <= limit)
    out = np.zeros(len(missing), dtype=bool)
    for a, b in zip(starts[keep], ends[keep]):
        out[a:b] = True
    return out


def require_length(frame: MetricFrame, window: int, what: str = "the data") -> None:
    """Fail clearly when there is not even one window of points."""
    if len(frame) < window:
        raise DataError(
            f"{what} has {len(frame)} points on its {frame.freq} grid, fewer than one window "
            f"(window.size={window})"
        )


def grid_phase(index: pd.DatetimeIndex, freq: pd.Timedelta) -> int:
    """Minus the grid position of the first timestamp: the ``phase`` for strided windows.

    Scoring windows placed at multiples of the stride in absolute grid time
    are the same whatever history precedes the data, so an incremental run
    agrees with scoring everything at once.
    """
    return int(-((index[0] - _EPOCH) // freq))


def epoch_nanoseconds(index: pd.DatetimeIndex) -> np.ndarray:
    """Integer epoch nanoseconds, whatever resolution pandas parsed at."""
    return np.asarray((index - _EPOCH) // pd.Timedelta(1, "ns"), dtype=np.int64)


def epoch_seconds(index: pd.DatetimeIndex) -> np.ndarray:
    """Integer epoch seconds, independent of the resolution pandas chose to parse at."""
    return np.asarray((index - _EPOCH) // pd.Timedelta("1s"), dtype=np.int64)


def with_context(context: MetricFrame, frame: MetricFrame, keep: int) -> MetricFrame:
    """``frame`` preceded by at most ``keep`` points of ``context`` on one continuous grid.

    Context points at or after the frame's first timestamp are dropped (the
    new data wins); a gap between the two becomes missing points.
    """
    if context.freq != frame.freq:
        raise DataError(f"context interval {context.freq} differs from the data's {frame.freq}")
    before = context.values.index < frame.index[0]
    ctx_values = context.values[before].iloc[-keep:] if keep > 0 else context.values[before].iloc[:0]
    ctx_filled = context.filled[before].iloc[-keep:] if keep > 0 else context.filled[before].iloc[:0]
    if ctx_values.empty:
        return frame
    check_grid(ctx_values.index[0], frame.index[-1], frame.freq, len(ctx_values) + len(frame))
    grid = pd.date_range(ctx_values.index[0], frame.index[-1], freq=frame.freq, name="timestamp")
    values = pd.concat([ctx_values, frame.values]).reindex(grid)
    filled = pd.concat([ctx_filled, frame.filled]).reindex(grid, fill_value=False).astype(bool)
    return MetricFrame(values, filled, frame.freq)
