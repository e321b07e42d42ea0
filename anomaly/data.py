"""Metric data in: read files, accept wide or long frames, normalise to a grid.

Everything downstream assumes the *metric frame* contract: a sorted, unique,
UTC ``DatetimeIndex`` on a regular grid with one float column per metric, and
a mask of which points were really observed. This module is the only place
that turns messy input into that shape, so every rejection of bad input lives
here and names the column and value at fault.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from anomaly.config import PreprocessConfig
from anomaly.errors import DataError

log = logging.getLogger(__name__)

TIME_COLUMNS: tuple[str, ...] = ("timestamp", "time", "datetime", "date", "ts")
LONG_COLUMNS: tuple[str, str] = ("metric", "value")
_EPOCH = pd.Timestamp(0, tz="UTC")
EARLY_TOLERANCE = 0.1  # fraction of a step a reading may arrive early and keep its slot


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
                f"metric {absent[0]!r} is missing from the data; the model was trained on "
                f"{list(metrics)} and the data has {self.metrics}"
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


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a CSV or Parquet file as it is; the form is worked out by :func:`to_wide`."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"data file not found: {str(p)!r}")
    suffixes = "".join(p.suffixes[-2:]).lower()
    try:
        if p.suffix.lower() in {".parquet", ".pq"}:
            return pd.read_parquet(p)
        if suffixes.endswith((".csv", ".csv.gz", ".tsv", ".txt")):
            return pd.read_csv(p, sep="\t" if ".tsv" in suffixes else ",")
    except (ValueError, OSError, pd.errors.ParserError) as exc:
        raise DataError(f"cannot read {str(p)!r}: {exc}") from exc
    raise DataError(f"unsupported file type {p.suffix!r} for {str(p)!r}; expected .csv or .parquet")


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
            f"{list(TIME_COLUMNS)}; columns are {[str(c) for c in frame.columns]}"
        )
    index = parse_timestamps(stamps)
    body_lower = {str(c).lower(): c for c in body.columns}
    if all(c in body_lower for c in LONG_COLUMNS):
        metric_col, value_col = (body_lower[c] for c in LONG_COLUMNS)
        values = _numeric(body[value_col], "value", index)
        long = pd.DataFrame({"metric": body[metric_col].astype(str).to_numpy(), "value": values}, index=index)
        wide = long.pivot_table(index=long.index, columns="metric", values="value", aggfunc=aggregate, dropna=False)
        wide.columns = [str(c) for c in wide.columns]
    else:
        if body.shape[1] == 0:
            raise DataError("no metric columns: the data has only timestamps")
        wide = pd.DataFrame(
            {str(c): _numeric(body[c], str(c), index) for c in body.columns}, index=index
        )
        if not wide.index.is_unique:
            wide = wide.groupby(level=0).agg(aggregate)
    wide.index.name = "timestamp"
    return wide.sort_index()


def as_utc(stamp: object) -> pd.Timestamp:
    """One timestamp in UTC; a naive one is taken as UTC already, as everywhere in the project."""
    ts = pd.Timestamp(stamp)  # type: ignore[arg-type]
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


def grid_slots(stamps: pd.DatetimeIndex, step: pd.Timedelta) -> pd.DatetimeIndex:
    """The grid slot of each timestamp (see :func:`to_grid`): a reading a little early keeps its slot."""
    return (stamps + step * EARLY_TOLERANCE).floor(step)


def parse_timestamps(stamps: pd.Index | pd.Series) -> pd.DatetimeIndex:
    """UTC timestamps from strings, datetimes or epoch seconds; naive ones are taken as UTC."""
    raw = pd.Series(np.asarray(stamps, dtype=object) if not isinstance(stamps, pd.DatetimeIndex) else stamps)
    if raw.isna().any():
        raise DataError(f"missing timestamp at row {int(np.flatnonzero(raw.isna().to_numpy())[0])}")
    kind = pd.api.types.infer_dtype(raw, skipna=False)
    numeric = pd.to_numeric(raw, errors="coerce") if kind in {"integer", "floating", "mixed-integer-float", "string"} else None
    if numeric is not None and numeric.notna().all():
        parsed = pd.to_datetime(numeric, unit="s", utc=True)
    else:
        parsed = pd.to_datetime(raw, utc=True, errors="coerce", format="mixed")
    bad = parsed.isna().to_numpy()
    if bad.any():
        row = int(np.flatnonzero(bad)[0])
        raise DataError(f"unparseable timestamp {raw.iloc[row]!r} at row {row}")
    return pd.DatetimeIndex(parsed, name="timestamp")


def _numeric(column: pd.Series, name: str, index: pd.DatetimeIndex) -> np.ndarray:
    """Float values of one column; text or infinities are rejected by name and time."""
    values = pd.to_numeric(pd.Series(column.to_numpy()), errors="coerce").to_numpy(dtype=np.float64)
    was_value = pd.Series(column.to_numpy()).notna().to_numpy()
    bad = was_value & np.isnan(values)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise DataError(f"non-numeric value {column.iloc[i]!r} in column {name!r} at {index[i]}")
    inf = np.isinf(values)
    if inf.any():
        i = int(np.flatnonzero(inf)[0])
        raise DataError(f"infinite value {values[i]} in column {name!r} at {index[i]}")
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
    frame = read_table(data) if isinstance(data, (str, Path)) else data
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
    if slots.equals(wide.index) and wide.index.is_unique:
        grouped = wide  # already one reading per slot (the store's data): nothing to aggregate
    else:
        grouped = wide.groupby(slots).agg(aggregate)
        # An aggregate over no values (e.g. sum) must stay missing, not become 0.
        grouped = grouped.where(wide.notna().groupby(slots).sum() > 0)
    full = pd.date_range(grouped.index[0], grouped.index[-1], freq=step, name="timestamp")
    return grouped.reindex(full)


def _reject_empty_metrics(grid: pd.DataFrame) -> None:
    empty = [str(c) for c in grid.columns if grid[c].isna().all()]
    if empty:
        raise DataError(f"metric {empty[0]!r} has no values (all NaN)")


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
    grid = pd.date_range(ctx_values.index[0], frame.index[-1], freq=frame.freq, name="timestamp")
    values = pd.concat([ctx_values, frame.values]).reindex(grid)
    filled = pd.concat([ctx_filled, frame.filled]).reindex(grid, fill_value=False).astype(bool)
    return MetricFrame(values, filled, frame.freq)
