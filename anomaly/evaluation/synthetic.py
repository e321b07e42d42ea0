"""Synthetic metric streams with labelled, injected incidents.

The demo and the detector's end-to-end tests need data that looks like what an
SRE sees on a dashboard (daily and weekly cycles, load-driven CPU, latency that
climbs steeply near saturation) *and* an exact answer key. This module builds
incident-free metrics (:func:`clean_metrics`), injects one incident at a time
into a copy (:func:`inject`), and assembles a full labelled data set
(:func:`generate`): clean history first, for training, then one incident of
each requested kind.

Everything is driven by seeded :class:`numpy.random.Generator` objects (never
the global RNG), so a given seed always produces the same data. Each metric's
noise comes from its own generator keyed by ``(seed, metric name)``, so adding
a metric to the list does not change the others.

Incident sizes are expressed in units of the metric's own *spread* (a robust
standard deviation, IQR / 1.349, of the rows outside the incident), so
``magnitude=1.0`` is equally obvious on requests/s, CPU percent or a sensor in
millivolts.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import pandas as pd

from anomaly.errors import DataError

__all__ = [
    "INCIDENT_KINDS",
    "INCIDENT_SPANS",
    "Incident",
    "SampleData",
    "clean_metrics",
    "generate",
    "inject",
]

INCIDENT_KINDS: tuple[str, ...] = (
    "spike",
    "dip",
    "level_shift",
    "variance_change",
    "flatline",
    "drift",
    "pattern_break",
)

# Where each kind is injected on a day of 5-minute points (offset, length in points),
# for suites that check one incident at a time: 09:00, while traffic is rising, so a
# stuck value departs from what the model expects; a pattern break takes the whole day.
INCIDENT_SPANS: dict[str, tuple[int, int]] = {
    "spike": (9 * 12, 3),
    "dip": (9 * 12, 3),
    "level_shift": (9 * 12, 48),
    "variance_change": (9 * 12, 48),
    "flatline": (9 * 12, 36),
    "drift": (9 * 12, 96),
    "pattern_break": (0, 288),
}

# Incident sizes at magnitude 1.0, in spreads (robust standard deviations of
# the whole series, seasonality included) or as a noise multiplier. They are
# chosen so that a human sees each incident at once on a two-week plot.
SPIKE_SPREADS = 6.0
# ... and a spike (dip) also clears the normal maximum (minimum) by this many
# spreads, so it stands out even at night on a right-skewed metric like latency.
SPIKE_CLEARANCE = 2.0
LEVEL_SHIFT_SPREADS = 3.0
DRIFT_SPREADS = 4.0
VARIANCE_FACTOR = 5.0
# A dip may not take a strictly positive quantity below this fraction of its
# normal value: an outage leaves a trickle of requests, latency is never 0 ms.
POSITIVE_FLOOR_FRACTION = 0.05

_DAY = pd.Timedelta(days=1)
_HALF_DAY = pd.Timedelta(hours=12)
_HOUR = pd.Timedelta(hours=1)

# Nominal traffic of the demo service, requests/s on a weekday at trend 1.
_BASE_REQUESTS = 250.0


# --------------------------------------------------------------------------- #
# Data classes
# --------------------------------------------------------------------------- #


def _utc(value: Any, name: str) -> pd.Timestamp:
    """Timestamp in UTC; naive values are taken to be UTC already."""
    try:
        ts = pd.Timestamp(value)
    except (ValueError, TypeError) as exc:
        raise DataError(f"{name} must be a timestamp, got {value!r}") from exc
    if ts is pd.NaT:
        raise DataError(f"{name} must be a timestamp, got {value!r}")
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")


@dataclass(frozen=True)
class Incident:
    """One labelled incident: ``kind`` on column ``metric`` over ``[start, end]``.

    ``end`` is inclusive (the last affected timestamp) so that a one-point
    spike has ``start == end``. Timestamps are normalised to UTC.
    """

    kind: str
    metric: str
    start: pd.Timestamp
    end: pd.Timestamp

    def __post_init__(self) -> None:
        _check_kind(self.kind)
        if not isinstance(self.metric, str) or not self.metric:
            raise DataError(f"metric must be a non-empty string, got {self.metric!r}")
        start = _utc(self.start, "start")
        end = _utc(self.end, "end")
        if end < start:
            raise DataError(f"end must not be before start ({start}), got {end}")
        object.__setattr__(self, "start", start)
        object.__setattr__(self, "end", end)


@dataclass(frozen=True)
class SampleData:
    """A wide metrics frame and the incidents injected into it (the answer key)."""

    frame: pd.DataFrame
    incidents: tuple[Incident, ...]

    def __post_init__(self) -> None:
        if not isinstance(self.frame, pd.DataFrame) or not isinstance(self.frame.index, pd.DatetimeIndex):
            raise DataError(f"frame must be a DataFrame with a DatetimeIndex, got {type(self.frame).__name__}")
        incidents = tuple(self.incidents)
        for inc in incidents:
            if not isinstance(inc, Incident):
                raise DataError(f"incidents must contain Incident objects, got {inc!r}")
            if inc.metric not in self.frame.columns:
                raise DataError(
                    f"incident metric {inc.metric!r} is not a column of frame; "
                    f"columns: {', '.join(map(str, self.frame.columns))}"
                )
        object.__setattr__(self, "incidents", incidents)

    def labels(self) -> pd.DataFrame:
        """Boolean frame shaped like ``frame``: True inside an incident of that metric."""
        out = pd.DataFrame(False, index=self.frame.index, columns=self.frame.columns)
        for inc in self.incidents:
            inside = (self.frame.index >= inc.start) & (self.frame.index <= inc.end)
            out.loc[inside, inc.metric] = True
        return out

    def incidents_frame(self) -> pd.DataFrame:
        """One row per incident: ``kind``, ``metric``, ``start``, ``end`` (UTC)."""
        return pd.DataFrame(
            {
                "kind": pd.Series([i.kind for i in self.incidents], dtype="object"),
                "metric": pd.Series([i.metric for i in self.incidents], dtype="object"),
                "start": pd.to_datetime(pd.Series([i.start for i in self.incidents], dtype="object"), utc=True),
                "end": pd.to_datetime(pd.Series([i.end for i in self.incidents], dtype="object"), utc=True),
            }
        )

    def to_long(self) -> pd.DataFrame:
        """Long form (``timestamp``, ``metric``, ``value``), metric by metric in column order.

        This is the shape most collectors export; pivoting it on ``timestamp``
        and ``metric`` gives ``frame`` back.
        """
        wide = self.frame.copy()
        wide.index = wide.index.rename("timestamp")
        wide.columns = [str(c) for c in wide.columns]
        long = wide.reset_index().melt(id_vars="timestamp", var_name="metric", value_name="value")
        long["value"] = long["value"].astype("float64")
        return long


# --------------------------------------------------------------------------- #
# Argument checks
# --------------------------------------------------------------------------- #


def _check_kind(kind: Any) -> None:
    if kind not in INCIDENT_KINDS:
        raise DataError(f"unknown incident kind {kind!r}; known kinds: {', '.join(INCIDENT_KINDS)}")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise DataError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_step(freq: Any) -> pd.Timedelta:
    """Grid spacing of a fixed pandas frequency such as '5min'."""
    try:
        step = pd.Timedelta(pd.tseries.frequencies.to_offset(freq))
    except (ValueError, TypeError):
        raise DataError(f"freq must be a fixed pandas frequency such as '5min', got {freq!r}") from None
    if step <= pd.Timedelta(0):
        raise DataError(f"freq must be a positive frequency, got {freq!r}")
    return step


def _check_metrics(metrics: Any) -> tuple[str, ...]:
    if isinstance(metrics, str):
        raise DataError(f"metrics must be a sequence of names, not a single string, got {metrics!r}")
    names = tuple(metrics)
    if not names:
        raise DataError("metrics must name at least one metric, got an empty sequence")
    for name in names:
        if not isinstance(name, str) or not name:
            raise DataError(f"metrics must be non-empty strings, got {name!r}")
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise DataError(f"metrics must be unique, got {dupes[0]!r} more than once")
    return names


def _check_magnitude(magnitude: Any) -> float:
    ok = isinstance(magnitude, (int, float, np.floating, np.integer)) and not isinstance(magnitude, bool)
    if not ok or not math.isfinite(magnitude) or magnitude <= 0:
        raise DataError(f"magnitude must be a finite number > 0, got {magnitude!r}")
    return float(magnitude)


# --------------------------------------------------------------------------- #
# Clean metrics
# --------------------------------------------------------------------------- #


def _name_key(name: str) -> int:
    """Stable integer for a name (``hash`` is salted per process, crc32 is not)."""
    return zlib.crc32(name.encode("utf-8"))


def _rng(seed: int, *keys: str) -> np.random.Generator:
    """Generator for one purpose, independent of every other purpose's draws."""
    return np.random.default_rng([seed, *(_name_key(k) for k in keys)])


def _ar1(rng: np.random.Generator, n: int, sd: float, phi: float) -> np.ndarray:
    """Stationary AR(1) noise: slow wobble that makes days differ from each other."""
    innovations = rng.normal(0.0, sd * math.sqrt(1.0 - phi * phi), n)
    innovations[0] = rng.normal(0.0, sd)
    out = np.empty(n)
    acc = 0.0
    for i, e in enumerate(innovations):
        acc = phi * acc + e if i else e
        out[i] = acc
    return out


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _hour_of_day(index: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray(index.hour + index.minute / 60.0 + index.second / 3600.0, dtype=float)


def _weekend_weight(index: pd.DatetimeIndex) -> np.ndarray:
    """0 on weekdays, 1 on Saturday/Sunday, with ~1.5 h smooth edges at midnight.

    A hard step would put a visible cliff at midnight that real traffic never has.
    """
    h = np.asarray(index.day_of_week * 24.0, dtype=float) + _hour_of_day(index)
    tau = 1.5
    return _sigmoid((h - 120.0) / tau) - _sigmoid((h - 168.0) / tau) + 1.0 - _sigmoid(h / tau)


def _daily_traffic(hod: np.ndarray) -> np.ndarray:
    """Daily shape: quiet around 04:00, a broad busy afternoon peaking ~15:00.

    Two harmonics, so the night is flatter and the afternoon sharper than a sine.
    """
    return (
        1.0
        + 0.42 * np.cos(2 * np.pi * (hod - 15.0) / 24.0)
        + 0.12 * np.cos(4 * np.pi * (hod - 14.0) / 24.0)
    )


def _load(index: pd.DatetimeIndex, step: pd.Timedelta, seed: int) -> np.ndarray:
    """Requests/s: daily x weekly x trend x multiplicative noise; strictly positive.

    It is computed even when ``requests`` is not asked for, because CPU and
    latency are driven by it.
    """
    rng = _rng(seed, "requests")
    n = len(index)
    days = np.asarray((index - index[0]) / _DAY, dtype=float)
    weekly = 1.0 - 0.35 * _weekend_weight(index)
    trend = 1.0 + 0.004 * days  # about +12 % a month
    phi = math.exp(-(step / pd.Timedelta(hours=8)))
    wobble = _ar1(rng, n, 0.04, phi)
    jitter = rng.normal(0.0, 0.035, n)
    return _BASE_REQUESTS * _daily_traffic(_hour_of_day(index)) * weekly * trend * np.exp(wobble + jitter)


def _cpu(load: np.ndarray, seed: int) -> np.ndarray:
    """CPU percent: idle floor plus a linear cost per request, clipped to [0, 100]."""
    rng = _rng(seed, "cpu")
    raw = 5.0 + 38.0 * load / _BASE_REQUESTS + rng.normal(0.0, 1.2, len(load))
    return np.clip(raw, 0.0, 100.0)


def _latency(load: np.ndarray, seed: int) -> np.ndarray:
    """Latency in ms: a fixed part plus an M/M/1-like ``1 / (1 - utilisation)`` part.

    It barely moves at night and climbs steeply at the afternoon peak, with a
    lognormal (light right tail) multiplicative noise.
    """
    rng = _rng(seed, "latency_ms")
    utilisation = np.clip(0.45 * load / _BASE_REQUESTS, 0.0, 0.95)
    base = 18.0 + 14.0 / (1.0 - utilisation)
    return base * np.exp(rng.normal(0.0, 0.04, len(load)))


def _generic(name: str, index: pd.DatetimeIndex, step: pd.Timedelta, seed: int) -> np.ndarray:
    """A sensor-like series whose scale, phase and trend come from (name, seed).

    Two metrics with different names get visibly different curves, and the
    same name always gets the same curve for a seed.
    """
    params = _rng(seed, name, "params")
    noise = _rng(seed, name)
    n = len(index)
    scale = 10.0 ** params.uniform(0.0, 2.0)
    level = scale * params.uniform(3.0, 6.0)
    amplitude = scale * params.uniform(0.6, 1.2)
    phase = params.uniform(0.0, 24.0)
    phase2 = params.uniform(0.0, 12.0)
    trend_per_day = level * params.uniform(0.002, 0.006) * params.choice([-1.0, 1.0])
    hod = _hour_of_day(index)
    days = np.asarray((index - index[0]) / _DAY, dtype=float)
    seasonal = amplitude * (
        np.cos(2 * np.pi * (hod - phase) / 24.0) + 0.3 * np.cos(4 * np.pi * (hod - phase2) / 24.0)
    )
    phi = math.exp(-(step / pd.Timedelta(hours=6)))
    wobble = _ar1(noise, n, 0.15 * amplitude, phi)
    return level + seasonal + trend_per_day * days + wobble + noise.normal(0.0, 0.08 * amplitude, n)


def clean_metrics(
    n_points: int = 4032,
    *,
    freq: str = "5min",
    start: str = "2026-01-05",
    metrics: Sequence[str] = ("requests", "cpu", "latency_ms"),
    seed: int = 0,
) -> pd.DataFrame:
    """Incident-free correlated metrics.

    ``requests`` (req/s, > 0), ``cpu`` (percent in [0, 100], linear in load)
    and ``latency_ms`` (> 0, non-linear in load) share one traffic signal, so
    they move together like a real service's. Any other name gets a generic
    seasonal sensor series. The default is two weeks of 5-minute points
    starting on a Monday. Times of day are UTC (treated as the service's local
    business hours). Returns a float64 frame on a regular UTC grid with
    ``freq`` set and the index named ``timestamp``.
    """
    n = _check_int("n_points", n_points, 2)
    step = _check_step(freq)
    names = _check_metrics(metrics)
    seed = _check_int("seed", seed, 0)
    first = _utc(start, "start")
    index = pd.date_range(first, periods=n, freq=step, name="timestamp")

    load = _load(index, step, seed)
    columns: dict[str, np.ndarray] = {}
    for name in names:
        if name == "requests":
            columns[name] = load
        elif name == "cpu":
            columns[name] = _cpu(load, seed)
        elif name == "latency_ms":
            columns[name] = _latency(load, seed)
        else:
            columns[name] = _generic(name, index, step, seed)
    return pd.DataFrame({k: v.astype("float64") for k, v in columns.items()}, index=index)


# --------------------------------------------------------------------------- #
# Incident injection
# --------------------------------------------------------------------------- #


def _robust_spread(values: np.ndarray) -> float:
    """IQR / 1.349 (a standard deviation for normal data), with fallbacks for flat data.

    Robust so that incidents already present elsewhere in the column barely
    change the scale of the next one.
    """
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return 1.0
    q75, q25 = np.percentile(finite, [75, 25])
    spread = (q75 - q25) / 1.349
    if not spread > 0:
        spread = float(np.std(finite))
    if not spread > 0:
        spread = 0.1 * max(abs(float(np.median(finite))), 1.0)
    return float(spread)


def _noise_sd(values: np.ndarray, spread: float) -> float:
    """Point-to-point noise, from the MAD of first differences (the cycle barely moves in one step)."""
    diffs = np.diff(values[np.isfinite(values)])
    if diffs.size == 0:
        return 0.1 * spread
    mad = float(np.median(np.abs(diffs - np.median(diffs))))
    sd = 1.4826 * mad / math.sqrt(2.0)
    return sd if sd > 0 else 0.1 * spread


def _upper_bound(metric: str, column: np.ndarray) -> float:
    """Percent-like metrics (``cpu``, ``*_pct``, ``*_percent``) cannot exceed 100.

    Only when the data agrees: a column that already goes above 100 is not a
    percentage whatever its name.
    """
    percent_name = metric == "cpu" or metric.endswith(("_pct", "_percent"))
    return 100.0 if percent_name and not (column > 100.0).any() else math.inf


def _apply_bounds(new: np.ndarray, original: np.ndarray, column: np.ndarray, metric: str) -> np.ndarray:
    """Keep injected values physically valid for this metric.

    A column that is never negative stays non-negative, one that is strictly
    positive keeps at least ``POSITIVE_FLOOR_FRACTION`` of the normal value,
    and percentages stay at or below 100.
    """
    finite = column[np.isfinite(column)]
    out = np.minimum(new, _upper_bound(metric, finite))
    if finite.size and finite.min() > 0:
        out = np.maximum(out, POSITIVE_FLOOR_FRACTION * np.maximum(original, 0.0))
    elif finite.size and finite.min() >= 0:
        out = np.maximum(out, 0.0)
    return out


def _burst_shape(length: int) -> np.ndarray:
    """Weights in [0.6, 1] peaking mid-burst: a spike rises and falls, it is not a box."""
    i = np.arange(length)
    return 0.6 + 0.4 * np.sin(np.pi * (i + 0.5) / length)


def _daily_harmonics(index: pd.DatetimeIndex, hours_shift: float = 0.0) -> np.ndarray:
    """Columns cos/sin of the 24 h and 12 h harmonics of the time of day (shifted by ``hours_shift``)."""
    angle = 2 * np.pi * (_hour_of_day(index) + hours_shift) / 24.0
    return np.column_stack([np.cos(angle), np.sin(angle), np.cos(2 * angle), np.sin(2 * angle)])


def _half_day_shift(index: pd.DatetimeIndex, column: np.ndarray, start: int, length: int) -> np.ndarray:
    """How much each span row must move for its daily cycle to run 12 h out of phase.

    The daily cycle is fitted (two harmonics, level and linear trend, least
    squares) on the rows outside the span, so the span itself does not bias
    it. Moving the fitted cycle by 12 h (rather than copying values from half
    a day earlier) keeps the break visible even on a quiet weekend, and a
    whole day of it has the same mean as the normal cycle.
    """
    rows = np.ones(len(index), dtype=bool)
    rows[start : start + length] = False
    rows &= np.isfinite(column)
    if len(index) > 1:
        step = (index[1:] - index[:-1]).median()
        if step > _HALF_DAY:
            raise DataError(f"pattern_break needs a grid step of at most 12 h to have a daily cycle, got {step}")
    covered = index[rows].max() - index[rows].min() if rows.sum() >= 2 else pd.Timedelta(0)
    if covered < _DAY:
        raise DataError(
            f"pattern_break needs at least 24 h of data outside the span to learn the daily cycle; "
            f"the rows outside [{start}, {start + length}) cover {covered}"
        )
    days = np.asarray((index - index[0]) / _DAY, dtype=float)
    design = np.column_stack([np.ones(len(index)), days, _daily_harmonics(index)])
    coef, *_ = np.linalg.lstsq(design[rows], column[rows], rcond=None)
    span_index = index[start : start + length]
    cycle = coef[2:]
    return (_daily_harmonics(span_index, 12.0) - _daily_harmonics(span_index)) @ cycle


def inject(
    frame: pd.DataFrame,
    kind: str,
    metric: str,
    start: int,
    length: int,
    *,
    magnitude: float = 1.0,
    seed: int = 0,
) -> tuple[pd.DataFrame, Incident]:
    """Return a COPY of `frame` with one incident of `kind` on `metric` over positional rows [start, start+length), and its label. Never mutates the input.

    Sizes (``magnitude`` scales them; ``s`` is the metric's robust spread over
    the rows outside the span):

    - ``spike``: a burst ``+6 s`` at its peak (``+3.6 s`` at its edges), and
      at least ``2 s`` above the highest value outside the span;
    - ``dip``: the same downwards (``2 s`` below the lowest value), floored so
      values stay physically valid;
    - ``level_shift``: ``+3 s`` on every row;
    - ``variance_change``: noise standard deviation multiplied by ``1 + 4 m`` (x5);
    - ``flatline``: stuck at the last value before the span (the first value
      when the span starts at row 0); ``magnitude`` is ignored;
    - ``drift``: a linear ramp reaching ``+4 s`` on the last row;
    - ``pattern_break``: the daily cycle (fitted on the rows outside the span)
      is moved 12 h out of phase, so the busy afternoon becomes quiet and the
      night busy while the daily mean level stays normal; ``magnitude``
      scales the move. Needs 24 h of data outside the span.

    Values are kept valid: non-negative columns stay non-negative, strictly
    positive ones stay positive, ``cpu``/``*_pct``/``*_percent`` stay <= 100.
    ``seed`` drives the random noise of ``variance_change``.
    """
    if not isinstance(frame, pd.DataFrame) or not isinstance(frame.index, pd.DatetimeIndex):
        raise DataError(f"frame must be a DataFrame with a DatetimeIndex, got {type(frame).__name__}")
    _check_kind(kind)
    if metric not in frame.columns:
        raise DataError(
            f"metric {metric!r} is not a column of frame; columns: {', '.join(map(str, frame.columns))}"
        )
    n = len(frame)
    if n == 0:
        raise DataError("frame must have at least one row, got an empty frame")
    if isinstance(start, bool) or not isinstance(start, (int, np.integer)) or not 0 <= start < n:
        raise DataError(f"start must be an integer row position in [0, {n - 1}], got {start!r}")
    start = int(start)
    if isinstance(length, bool) or not isinstance(length, (int, np.integer)) or not 1 <= length <= n - start:
        raise DataError(
            f"length must be an integer in [1, {n - start}] (rows left after start={start}), got {length!r}"
        )
    length = int(length)
    m = _check_magnitude(magnitude)
    seed = _check_int("seed", seed, 0)

    column = frame[metric].to_numpy(dtype="float64", copy=True)
    span = slice(start, start + length)
    original = column[span].copy()
    outside = np.concatenate([column[:start], column[start + length :]])
    reference = outside if np.isfinite(outside).sum() >= 2 else column
    s = _robust_spread(reference)

    if kind == "spike":
        shape = _burst_shape(length)
        top = float(np.nanmax(reference))
        new = np.maximum(original + m * SPIKE_SPREADS * s * shape, top + m * SPIKE_CLEARANCE * s * shape)
    elif kind == "dip":
        shape = _burst_shape(length)
        bottom = float(np.nanmin(reference))
        new = np.minimum(original - m * SPIKE_SPREADS * s * shape, bottom - m * SPIKE_CLEARANCE * s * shape)
    elif kind == "level_shift":
        new = original + m * LEVEL_SHIFT_SPREADS * s
    elif kind == "variance_change":
        factor = 1.0 + (VARIANCE_FACTOR - 1.0) * m
        # Noise of the span itself: multiplicative noise (requests, latency) is
        # larger at the peak than the column's typical noise.
        sd = _noise_sd(original, s) if length >= 12 else _noise_sd(reference, s)
        rng = np.random.default_rng([seed, _name_key(metric), start, length])
        new = original + rng.normal(0.0, sd * math.sqrt(factor * factor - 1.0), length)
    elif kind == "flatline":
        new = np.full(length, column[start - 1] if start > 0 else column[0])
    elif kind == "drift":
        ramp = np.arange(1, length + 1) / length
        new = original + m * DRIFT_SPREADS * s * ramp
    else:  # pattern_break
        new = original + m * _half_day_shift(frame.index, column, start, length)

    if kind != "flatline":  # a stuck sensor repeats a real value, already valid
        new = _apply_bounds(new, original, reference, metric)
    column[span] = new

    out = frame.copy()
    out[metric] = column
    incident = Incident(kind=kind, metric=metric, start=frame.index[start], end=frame.index[start + length - 1])
    return out, incident


# --------------------------------------------------------------------------- #
# Full labelled data set
# --------------------------------------------------------------------------- #

# Typical duration of each kind; spikes and dips are drawn as 1-5 points.
_DURATION: dict[str, pd.Timedelta] = {
    "level_shift": pd.Timedelta(hours=6),
    "variance_change": pd.Timedelta(hours=6),
    "flatline": pd.Timedelta(hours=3),
    "drift": pd.Timedelta(hours=12),
    "pattern_break": pd.Timedelta(hours=24),
}
# Fewest points per kind, so coarse grids still give a recognisable shape.
_MIN_POINTS: dict[str, int] = {
    "level_shift": 6,
    "variance_change": 12,
    "flatline": 6,
    "drift": 8,
    "pattern_break": 4,
}
# Clean time kept between incidents (and before the first / after the last),
# so a windowed detector sees each incident against normal context.
_MIN_GAP = pd.Timedelta(hours=3)


def _incident_length(kind: str, step: pd.Timedelta, rng: np.random.Generator) -> int:
    if kind in ("spike", "dip"):
        return int(rng.integers(1, 6))
    return max(_MIN_POINTS[kind], int(round(_DURATION[kind] / step)))


def _check_fraction(clean_fraction: Any) -> float:
    ok = isinstance(clean_fraction, (int, float, np.floating)) and not isinstance(clean_fraction, bool)
    if not ok or not math.isfinite(clean_fraction) or not 0.0 < clean_fraction < 1.0:
        raise DataError(f"clean_fraction must be a number strictly between 0 and 1, got {clean_fraction!r}")
    return float(clean_fraction)


def _check_kinds(kinds: Any) -> tuple[str, ...]:
    if isinstance(kinds, str):
        raise DataError(f"kinds must be a sequence of incident kinds, not a single string, got {kinds!r}")
    out = tuple(kinds)
    for kind in out:
        _check_kind(kind)
    return out


def generate(
    n_points: int = 4032,
    *,
    freq: str = "5min",
    start: str = "2026-01-05",
    metrics: Sequence[str] = ("requests", "cpu", "latency_ms"),
    kinds: Sequence[str] = INCIDENT_KINDS,
    clean_fraction: float = 0.5,
    seed: int = 0,
) -> SampleData:
    """Clean history for the first `clean_fraction` of points (for training), then one incident of each kind in `kinds`, spread over the rest, non-overlapping with clean gaps between them, each on a metric chosen by the seeded RNG (round-robin is fine).

    The incidents come in a seeded random order, separated (and bracketed) by
    at least 3 h of clean data with the slack spread at random. Metrics are
    assigned round-robin from a seeded starting metric, so every metric gets
    an incident when there are at least as many kinds as metrics. Durations:
    spike/dip 1-5 points, flatline 3 h, level shift and variance change 6 h,
    drift 12 h, pattern break 24 h (never fewer than a handful of points).
    """
    n = _check_int("n_points", n_points, 2)
    step = _check_step(freq)
    names = _check_metrics(metrics)
    kinds_t = _check_kinds(kinds)
    fraction = _check_fraction(clean_fraction)
    seed = _check_int("seed", seed, 0)
    if "pattern_break" in kinds_t and step > _HALF_DAY:
        raise DataError(f"freq must be at most 12h when kinds include 'pattern_break', got {freq!r}")

    frame = clean_metrics(n, freq=freq, start=start, metrics=names, seed=seed)
    rng = _rng(seed, "generate")
    n_clean = max(1, int(round(n * fraction)))
    if not kinds_t:
        return SampleData(frame=frame, incidents=())

    order = [kinds_t[i] for i in rng.permutation(len(kinds_t))]
    lengths = [_incident_length(k, step, rng) for k in order]
    min_gap = max(1, int(math.ceil(_MIN_GAP / step)))
    slots = len(order) + 1
    needed = sum(lengths) + slots * min_gap
    available = n - n_clean
    if available < needed:
        minimum = int(math.ceil(needed / (1.0 - fraction))) + 1
        raise DataError(
            f"n_points={n} is too small for {len(order)} incidents after clean_fraction={fraction}: "
            f"they need {needed} points ({sum(lengths)} incident + {slots} gaps of {min_gap}) "
            f"but only {available} are left; use n_points >= {minimum}"
        )

    slack = available - needed
    shares = rng.dirichlet(np.ones(slots)) * slack
    extra = np.floor(shares).astype(int)
    extra[: slack - int(extra.sum())] += 1  # hand out the rounding remainder
    first_metric = int(rng.integers(len(names)))

    incidents: list[Incident] = []
    position = n_clean
    for i, (kind, length) in enumerate(zip(order, lengths)):
        position += min_gap + int(extra[i])
        metric = names[(first_metric + i) % len(names)]
        frame, incident = inject(
            frame, kind, metric, position, length, seed=int(rng.integers(0, 2**31 - 1))
        )
        incidents.append(incident)
        position += length
    return SampleData(frame=frame, incidents=tuple(incidents))
