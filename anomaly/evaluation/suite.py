"""A realistic long-series suite for false alerts and incident detection (issue #28).

The demo's generators (:mod:`anomaly.evaluation.synthetic`) give two weeks of
three related metrics; this module builds a labelled corpus of many long,
independent series that look like an SRE's dashboards, so the product's
defaults can be measured where they are used:

- **families** (:data:`FAMILIES`): request rate, CPU, latency, error counts,
  a queue with cron spikes, disk usage, a sensor, a batch job and a gauge
  with gaps, each with its own randomised parameters, 60-90 days at 1, 2 or
  5 minutes, daily and weekly cycles, trends, seasonality whose amplitude
  changes over weeks, heavy-tailed noise, normal bursts and missing rows;
- **clean** series (half of the suite): nothing abrupt ever happens, so every
  alert on them is false (:func:`false_alerts_per_week`);
- **incident** series (the other half): 1-4 labelled incidents each
  (:data:`SUITE_KINDS`), never in the first 14 days and never overlapping, of
  sizes in units of the series' own robust spread, some subtle, some obvious
  (:func:`incident_report`). Level shifts, drifts and regime changes (a
  deploy doubles the baseline) persist as the new normal; their label is
  only their onset, so an alert that lasts for days ends far from the label.

:func:`build_suite` is deterministic for a seed (every draw comes from a
seeded :class:`numpy.random.Generator`, never the global RNG), and
:func:`write_nab_layout` writes it where :class:`anomaly.Benchmark` reads a
corpus. Series are named ``s000``, ``s001``, ... in a seeded order: nothing the
detector sees carries the family or whether the series has incidents.
"""

from __future__ import annotations

import json
import math
import statistics
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from anomaly.core.data import as_utc
from anomaly.errors import DataError
from anomaly.evaluation.corpus import LABELS, BenchmarkError, CorpusFile, load_corpus, read_series
from anomaly.evaluation.metrics import Interval, overlaps, probation_length

__all__ = [
    "CATEGORIES",
    "FAMILIES",
    "SUITE_KINDS",
    "Family",
    "SeriesPlan",
    "SuiteIncident",
    "SuiteSeries",
    "build_series",
    "build_suite",
    "false_alerts_per_week",
    "incident_report",
    "plan_suite",
    "scored_span",
    "suite_counts",
    "write_nab_layout",
]

CATEGORIES: tuple[str, ...] = ("clean", "incidents")
SUITE_KINDS: tuple[str, ...] = (
    "spike",
    "dip",
    "level_shift",
    "drift",
    "flatline",
    "variance_change",
    "seasonality_break",
    "regime_change",
)
#: Kinds whose change stays after their label: the label is their onset (or ramp) only.
PERSISTING: frozenset[str] = frozenset({"level_shift", "drift", "regime_change"})

#: No incident starts before this much history, so a model has data to learn from.
HISTORY = pd.Timedelta(days=14)
#: Length of a series in days (drawn uniformly) and sampling intervals in minutes (mostly 5).
DAYS: tuple[float, float] = (60.0, 90.0)
INTERVALS: tuple[int, ...] = (1, 2, 5)
INTERVAL_WEIGHTS: tuple[float, ...] = (0.1, 0.15, 0.75)
#: Fewest days a series may have: the history plus two days for an incident and its aftermath.
MIN_DAYS = 16.0
#: Clean time kept around each labelled window, and between the last one and the series' end.
WINDOW_BUFFER = pd.Timedelta(hours=12)
END_MARGIN = pd.Timedelta(days=1)

# Incident sizes, drawn log-uniformly between the bounds: in robust spreads of the
# clean series (spike, dip, level shift, drift), as a noise multiplier (variance
# change) or as a factor on the level (regime change).
SPIKE_SPREADS = (2.0, 12.0)
DIP_SPREADS = (1.5, 8.0)
SHIFT_SPREADS = (1.0, 6.0)
DRIFT_SPREADS = (1.5, 8.0)
NOISE_FACTORS = (3.0, 10.0)
COLLAPSE_FACTOR = 0.05  # a variance collapse keeps this much of the noise
COLLAPSE_SHARE = 0.3
REGIME_FACTORS = (1.4, 2.5)

STAMP = "%Y-%m-%d %H:%M:%S"  # NAB's timestamp format (UTC), as the benchmark writes it
INCIDENTS = Path("labels") / "incidents.json"
SERIES = Path("labels") / "series.json"
ORIGIN = pd.Timestamp("2025-09-01", tz="UTC")  # a Monday; each series starts 0-27 days later

_MINUTE = pd.Timedelta(minutes=1)
_HOUR = pd.Timedelta(hours=1)
_DAY = pd.Timedelta(days=1)
_WEEK = pd.Timedelta(days=7)

# Purposes of each series' independent generators.
_PLAN, _VALUES, _INCIDENTS, _GAPS = 0, 1, 2, 3


# --------------------------------------------------------------------------- #
# Data classes
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class SuiteIncident:
    """One labelled incident: ``kind`` over ``[start, end]`` (inclusive, UTC).

    ``magnitude`` is in robust spreads (spike, dip, level shift, drift), a
    noise factor (variance change), a level factor (regime change), the lag
    in hours of a shifted daily pattern (seasonality break) or 0 (flatline).
    ``variant`` names the flavour: ``up``/``down``, ``inflate``/``collapse``,
    ``shift``/``flatten``/``stop``, ``quiet``/``busy``.
    """

    kind: str
    start: pd.Timestamp
    end: pd.Timestamp
    magnitude: float
    variant: str

    @property
    def duration(self) -> pd.Timedelta:
        return self.end - self.start

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "start": self.start.strftime(STAMP),
            "end": self.end.strftime(STAMP),
            "magnitude": round(self.magnitude, 4),
            "variant": self.variant,
        }


@dataclass(frozen=True)
class SeriesPlan:
    """What a series will be, drawn before its values: cheap to list for a whole suite."""

    position: int  # the key of its generators
    name: str
    category: str
    family: str
    interval: pd.Timedelta
    start: pd.Timestamp
    points: int
    kinds: tuple[str, ...]  # incidents to place (empty for a clean series)

    @property
    def days(self) -> float:
        return self.points * self.interval / _DAY


@dataclass(frozen=True)
class SuiteSeries:
    """One series of the suite: its values (``timestamp``, ``value``; gaps are missing rows) and its incidents."""

    name: str
    category: str
    family: str
    interval: pd.Timedelta
    frame: pd.DataFrame
    incidents: tuple[SuiteIncident, ...]

    @property
    def key(self) -> str:
        """Its key in the NAB layout's labels: ``<category>/<name>.csv``."""
        return f"{self.category}/{self.name}.csv"


# --------------------------------------------------------------------------- #
# Shared shapes
# --------------------------------------------------------------------------- #


def _days(index: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray((index - index[0]) / _DAY, dtype=float)


def _hour_of_day(index: pd.DatetimeIndex) -> np.ndarray:
    return np.asarray(index.hour + index.minute / 60.0, dtype=float)


def _step(index: pd.DatetimeIndex) -> pd.Timedelta:
    return index[1] - index[0]


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A draw spread evenly over orders of magnitude: as many subtle sizes as obvious ones."""
    return float(math.exp(rng.uniform(math.log(bounds[0]), math.log(bounds[1]))))


def _wobble(days: np.ndarray, rng: np.random.Generator, sd: float, hours: float) -> np.ndarray:
    """Smooth stationary noise (AR(1) on knots, interpolated) with a correlation time of ``hours``.

    It makes days differ from each other the way real load does, at the cost
    of a few thousand knots rather than a loop over every point.
    """
    spacing = hours / 24.0 / 3.0
    knots = int(days[-1] / spacing) + 2
    phi = math.exp(-1.0 / 3.0)
    shocks = rng.normal(0.0, sd * math.sqrt(1.0 - phi * phi), knots)
    path = np.empty(knots)
    path[0] = rng.normal(0.0, sd)
    for i in range(1, knots):
        path[i] = phi * path[i - 1] + shocks[i]
    return np.interp(days, np.arange(knots) * spacing, path)


def _edge(hours: np.ndarray) -> np.ndarray:
    """A step from 0 to 1 at hour 0, smoothed over about 1.5 h: real traffic has no cliff at midnight."""
    return 0.5 * (1.0 + np.tanh(0.5 * hours / 1.5))


def _weekend(index: pd.DatetimeIndex) -> np.ndarray:
    """0 on weekdays, 1 on Saturday and Sunday, with smooth edges at midnight."""
    hours = np.asarray(index.day_of_week * 24.0, dtype=float) + _hour_of_day(index)
    return _edge(hours - 120.0) - _edge(hours - 168.0) + 1.0 - _edge(hours)


def _daily(index: pd.DatetimeIndex, peak: float, sharpness: float) -> np.ndarray:
    """A daily cycle in [-1.3, 1.3] peaking at ``peak`` o'clock; ``sharpness`` flattens the night."""
    hod = _hour_of_day(index)
    return np.cos(2 * np.pi * (hod - peak) / 24.0) + sharpness * np.cos(4 * np.pi * (hod - peak + 1.0) / 24.0)


def _traffic(index: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """Relative load (about 1 on average): daily and weekly cycles, a trend, and amplitude that changes over weeks."""
    days = _days(index)
    amplitude = rng.uniform(0.25, 0.55) * (1.0 + rng.uniform(0.0, 0.3) * np.sin(2 * np.pi * days / rng.uniform(25, 70) + rng.uniform(0, 2 * np.pi)))
    daily = 1.0 + amplitude * _daily(index, rng.uniform(8.0, 22.0), rng.uniform(0.0, 0.3))
    weekly = 1.0 - rng.uniform(0.05, 0.45) * _weekend(index)
    trend = np.maximum(1.0 + rng.uniform(-0.003, 0.006) * days, 0.5)
    return np.maximum(daily, 0.05) * weekly * trend


def _bursts(index: pd.DatetimeIndex, rng: np.random.Generator, per_week: float, minutes: tuple[float, float]) -> np.ndarray:
    """Weights in [0, 1] of short, normal bursts (GC pauses, retries, batch traffic): a fast rise and a decay."""
    out = np.zeros(len(index))
    step = _step(index)
    count = rng.poisson(per_week * (index[-1] - index[0]) / _WEEK)
    for start in rng.integers(0, len(index), count):
        rows = max(1, int(round(rng.uniform(*minutes) * _MINUTE / step)))
        shape = np.exp(-2.5 * np.arange(rows) / rows) * rng.uniform(0.5, 1.0)
        end = min(len(index), start + rows)
        out[start:end] = np.maximum(out[start:end], shape[: end - start])
    return out


# --------------------------------------------------------------------------- #
# Families: (index, rng) -> values, on a regular grid without gaps
# --------------------------------------------------------------------------- #


def request_rate(index: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """Requests/s: daily and weekly cycles with a weekend dip, multiplicative noise, Poisson counts at low rates."""
    base = 10.0 ** rng.uniform(0.5, 3.5)
    days = _days(index)
    noise = np.exp(_wobble(days, rng, rng.uniform(0.02, 0.07), 6.0) + rng.normal(0.0, rng.uniform(0.01, 0.06), len(index)))
    surge = 1.0 + rng.uniform(0.3, 1.0) * _bursts(index, rng, rng.uniform(0.0, 1.5), (5.0, 40.0))
    rate = base * _traffic(index, rng) * noise * surge
    seconds = _step(index).total_seconds()
    return rng.poisson(rate * seconds) / seconds


def cpu(index: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """CPU percent: an idle floor plus a cost per unit of load, GC bursts, bounded to [0, 100]."""
    load = _traffic(index, rng)
    idle = rng.uniform(2.0, 12.0)
    cost = (rng.uniform(25.0, 80.0) - idle) / float(np.percentile(load, 99))
    wobble = np.exp(_wobble(_days(index), rng, rng.uniform(0.02, 0.06), 4.0))
    gc = rng.uniform(5.0, 25.0) * _bursts(index, rng, rng.uniform(1.0, 10.0), (1.0, 10.0))
    noise = rng.normal(0.0, rng.uniform(0.5, 3.0), len(index))
    return np.clip(idle + cost * load * wobble + gc + noise, 0.0, 100.0)


def latency(index: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """Latency in ms: a floor, a queueing part that climbs with load, Student-t tails and normal slow bursts."""
    load = _traffic(index, rng)
    utilisation = np.clip(rng.uniform(0.35, 0.85) * load / float(np.percentile(load, 99)), 0.0, 0.95)
    floor = rng.uniform(5.0, 80.0)
    base = floor + floor * rng.uniform(0.2, 1.0) / (1.0 - utilisation)
    tails = np.minimum(rng.uniform(0.03, 0.12) * rng.standard_t(rng.uniform(2.0, 5.0), len(index)), 2.5)
    slow = 1.0 + rng.uniform(0.5, 2.0) * _bursts(index, rng, rng.uniform(1.0, 6.0), (5.0, 45.0))
    return np.maximum(base * np.exp(tails) * slow, floor)


def error_count(index: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """Errors per interval: low-rate Poisson following the load, with occasional normal bursts."""
    per_minute = 10.0 ** rng.uniform(-2.0, 0.0)
    bursts = 1.0 + rng.uniform(5.0, 30.0) * _bursts(index, rng, rng.uniform(0.5, 4.0), (2.0, 20.0))
    lam = per_minute * (_step(index) / _MINUTE) * _traffic(index, rng) * bursts
    return rng.poisson(lam).astype(float)


def queue_depth(index: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """Queue depth with a cron job's spike every few hours: regular, so normal behaviour, not an incident."""
    period = float(rng.choice([1, 2, 3, 4, 6, 12, 24])) * 60.0  # minutes
    step = _step(index) / _MINUTE
    length = max(2.0 * step, min(45.0, rng.uniform(0.1, 0.3) * period))
    minutes = np.asarray((index - index[0]) / _MINUTE, dtype=float) - rng.uniform(0.0, period)
    phase = np.mod(minutes, period)
    run = np.floor(minutes / period).astype(int)
    heights = rng.uniform(20.0, 500.0) * rng.lognormal(0.0, 0.2, run.max() - run.min() + 1)[run - run.min()]
    spikes = np.where(phase < length, heights * np.exp(-3.0 * phase / length), 0.0)
    background = rng.uniform(0.5, 10.0) * _traffic(index, rng)
    return rng.poisson(background + spikes).astype(float)


def disk_usage(index: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """Disk percent: a slow fill, faster growth between cleanups and a drop at each cleanup (a sawtooth)."""
    days = _days(index)
    period = float(rng.choice([1.0, 2.0, 7.0]))
    since = np.mod(days - rng.uniform(0.0, period), period) / period
    sawtooth = rng.uniform(0.5, 8.0) * since
    trend = rng.uniform(15.0, 55.0) + rng.uniform(0.0, 0.15) * days
    noise = _wobble(days, rng, rng.uniform(0.02, 0.2), 3.0) + rng.normal(0.0, rng.uniform(0.005, 0.05), len(index))
    return np.clip(trend + sawtooth + noise, 0.0, 100.0)


def sensor(index: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """A temperature-like sensor: a daily cycle, a slow drift over days and small measurement noise."""
    days = _days(index)
    amplitude = rng.uniform(0.5, 6.0) * (1.0 + rng.uniform(0.0, 0.4) * np.sin(2 * np.pi * days / rng.uniform(20, 60)))
    cycle = amplitude * _daily(index, rng.uniform(12.0, 17.0), rng.uniform(0.0, 0.2))
    drift = rng.uniform(-0.05, 0.05) * days + _wobble(days, rng, rng.uniform(0.3, 2.0), 48.0)
    return rng.uniform(15.0, 60.0) + cycle + drift + rng.normal(0.0, rng.uniform(0.02, 0.3), len(index))


def batch_job(index: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """A batch job's throughput: on for part of every period, off in between, runs of slightly varying length."""
    period = float(rng.choice([2, 3, 4, 6, 8, 12, 24])) * 60.0  # minutes
    minutes = np.asarray((index - index[0]) / _MINUTE, dtype=float) - rng.uniform(0.0, period)
    phase = np.mod(minutes, period)
    run = np.floor(minutes / period).astype(int)
    duty = rng.uniform(0.15, 0.5) * rng.uniform(0.9, 1.1, run.max() - run.min() + 1)[run - run.min()]
    edge = max(_step(index) / _MINUTE, 2.0)
    on = np.clip(np.minimum(phase / edge, (duty * period - phase) / edge), 0.0, 1.0)
    high = 10.0 ** rng.uniform(1.0, 2.5)
    low = high * rng.uniform(0.0, 0.05)
    noise = np.exp(rng.normal(0.0, rng.uniform(0.02, 0.08), len(index)))
    return low + (high - low) * on * noise


def gauge(index: pd.DatetimeIndex, rng: np.random.Generator) -> np.ndarray:
    """A quantised gauge (connections, replicas): a level following the load, rounded to whole units later."""
    level = rng.uniform(3.0, 40.0)
    load = _traffic(index, rng)
    return level * load + rng.normal(0.0, rng.uniform(0.3, 1.5), len(index))


@dataclass(frozen=True)
class Family:
    """A kind of metric: how its values are drawn, their resolution and bounds, and what can go wrong on it."""

    name: str
    make: Callable[[pd.DatetimeIndex, np.random.Generator], np.ndarray]
    quantum: float  # values are multiples of this
    lower: float  # physical bounds
    upper: float
    kinds: tuple[str, ...]  # incident kinds that make sense on it
    breaks: tuple[str, ...]  # how its daily pattern can break
    gaps_per_week: tuple[float, float]  # missing stretches per week, drawn per series
    gap_minutes: tuple[float, float]  # length of each, log-uniform
    jitter: bool = False  # irregular sampling times


_ALL = SUITE_KINDS
_NO_BREAK = tuple(k for k in SUITE_KINDS if k != "seasonality_break")
_FEW_GAPS, _SHORT_GAPS = (0.0, 0.3), (2.0, 60.0)

FAMILIES: dict[str, Family] = {
    f.name: f
    for f in (
        Family("request_rate", request_rate, 0.01, 0.0, math.inf, _ALL, ("shift", "flatten"), _FEW_GAPS, _SHORT_GAPS),
        Family("cpu", cpu, 0.1, 0.0, 100.0, _ALL, ("shift", "flatten"), _FEW_GAPS, _SHORT_GAPS),
        Family("latency", latency, 0.1, 0.0, math.inf, _ALL, ("shift", "flatten"), _FEW_GAPS, _SHORT_GAPS),
        Family(
            "error_count", error_count, 1.0, 0.0, math.inf,
            ("spike", "level_shift", "drift", "variance_change", "regime_change"), (), _FEW_GAPS, _SHORT_GAPS,
        ),
        Family(
            "queue_depth", queue_depth, 1.0, 0.0, math.inf,
            ("spike", "level_shift", "drift", "flatline", "variance_change", "regime_change"), (), _FEW_GAPS, _SHORT_GAPS,
        ),
        Family("disk_usage", disk_usage, 0.01, 0.0, 100.0, _NO_BREAK, (), _FEW_GAPS, _SHORT_GAPS),
        Family("sensor", sensor, 0.01, -math.inf, math.inf, _ALL, ("shift", "flatten"), _FEW_GAPS, _SHORT_GAPS),
        Family("batch_job", batch_job, 0.1, 0.0, math.inf, _ALL, ("stop",), _FEW_GAPS, _SHORT_GAPS),
        Family("gauge", gauge, 1.0, 0.0, math.inf, _ALL, ("shift", "flatten"), (2.0, 6.0), (3.0, 360.0), jitter=True),
    )
}


# --------------------------------------------------------------------------- #
# Planning the suite
# --------------------------------------------------------------------------- #


def _rng(seed: int, position: int, purpose: int) -> np.random.Generator:
    """The generator of one purpose of one series, independent of every other."""
    return np.random.default_rng([seed, position, purpose])


def _check_args(n_series: Any, seed: Any, days: Any) -> tuple[float, float]:
    if isinstance(n_series, bool) or not isinstance(n_series, (int, np.integer)) or n_series < 2:
        raise DataError(f"n_series must be an integer >= 2, got {n_series!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise DataError(f"seed must be an integer >= 0, got {seed!r}")
    try:
        low, high = (float(d) for d in days)
    except (TypeError, ValueError):
        raise DataError(f"days must be a (shortest, longest) pair of numbers, got {days!r}") from None
    if not MIN_DAYS <= low <= high <= 400.0:
        raise DataError(f"days must satisfy {MIN_DAYS:g} <= shortest <= longest <= 400, got {days!r}")
    return low, high


def _balanced(items: Sequence[str], count: int, rng: np.random.Generator) -> list[str]:
    """``count`` items, each used as evenly as possible, in a seeded order."""
    offset = int(rng.integers(len(items)))
    chosen = [items[(offset + i) % len(items)] for i in range(count)]
    return [chosen[i] for i in rng.permutation(count)]


def _deal_kinds(families: Sequence[str], rng: np.random.Generator) -> list[tuple[str, ...]]:
    """1-4 distinct kinds per incident series, dealt from shuffled decks so every kind is about as common."""
    deck: list[str] = []
    dealt = []
    for family in families:
        allowed = FAMILIES[family].kinds
        kinds: list[str] = []
        for _ in range(int(rng.integers(1, 5))):
            if not any(k in allowed and k not in kinds for k in deck):
                deck += [SUITE_KINDS[i] for i in rng.permutation(len(SUITE_KINDS))]
            kind = next(k for k in deck if k in allowed and k not in kinds)
            deck.remove(kind)
            kinds.append(kind)
        dealt.append(tuple(kinds))
    return dealt


def _draw_shape(seed: int, position: int, days: tuple[float, float]) -> tuple[pd.Timedelta, pd.Timestamp, int]:
    """A series' interval, first timestamp (midnight of one of 28 days, plus a whole number of intervals) and length."""
    rng = _rng(seed, position, _PLAN)
    interval = int(rng.choice(INTERVALS, p=INTERVAL_WEIGHTS)) * _MINUTE
    per_day = int(_DAY / interval)
    start = ORIGIN + int(rng.integers(0, 28)) * _DAY + int(rng.integers(0, per_day)) * interval
    points = int(round(rng.uniform(*days) * per_day))
    return interval, start, points


def plan_suite(n_series: int = 100, seed: int = 0, *, days: tuple[float, float] = DAYS) -> list[SeriesPlan]:
    """What :func:`build_suite` builds, sorted by name, without drawing a single value.

    Half the series are clean (the odd one out has incidents); each half
    holds every family about equally often; names are a seeded permutation,
    so neither a name nor its rank says anything about the series.
    """
    low, high = _check_args(n_series, seed, days)
    rng = np.random.default_rng([seed, n_series])
    n_clean = n_series // 2
    width = max(3, len(str(n_series - 1)))
    names = [f"s{i:0{width}d}" for i in rng.permutation(n_series)]
    clean_families = _balanced(list(FAMILIES), n_clean, rng)
    incident_families = _balanced(list(FAMILIES), n_series - n_clean, rng)
    kinds: list[tuple[str, ...]] = [()] * n_clean + _deal_kinds(incident_families, rng)
    categories = ["clean"] * n_clean + ["incidents"] * (n_series - n_clean)
    plans = []
    for position, (name, category, family, series_kinds) in enumerate(zip(names, categories, clean_families + incident_families, kinds)):
        interval, start, points = _draw_shape(seed, position, (low, high))
        plans.append(SeriesPlan(position, name, category, family, interval, start, points, series_kinds))
    return sorted(plans, key=lambda p: p.name)


def build_suite(n_series: int = 100, seed: int = 0, *, days: tuple[float, float] = DAYS) -> list[SuiteSeries]:
    """The suite: ``n_series`` series of ``days`` days (60-90 by default), half clean, sorted by name.

    Deterministic for a seed; ``days`` exists so tests can build short ones.
    """
    return [build_series(plan, seed) for plan in plan_suite(n_series, seed, days=days)]


# --------------------------------------------------------------------------- #
# Building one series
# --------------------------------------------------------------------------- #


@dataclass(frozen=True)
class _Placement:
    """Where an incident goes, in rows of the regular grid: it affects ``[start, stop)``, its label is ``[start, label_end]``."""

    kind: str
    start: int
    stop: int
    label_end: int
    variant: str


def build_series(plan: SeriesPlan, seed: int) -> SuiteSeries:
    """One series from its plan: clean values, its incidents, then gaps, jitter and quantisation."""
    family = FAMILIES[plan.family]
    index = pd.date_range(plan.start, periods=plan.points, freq=plan.interval, name="timestamp")
    clean = family.make(index, _rng(seed, plan.position, _VALUES)).astype(float)
    rng = _rng(seed, plan.position, _INCIDENTS)
    placements = _place(plan.kinds, index, clean, family, rng)
    values, applied = _inject_all(clean, placements, index, family, rng)
    values = np.clip(np.round(values / family.quantum) * family.quantum, family.lower, family.upper)
    keep, stamps = _observe(index, placements, family, _rng(seed, plan.position, _GAPS))
    frame = pd.DataFrame({"timestamp": stamps[keep], "value": values[keep]})
    incidents = tuple(_label(p, index, stamps, *done) for p, done in zip(placements, applied))
    return SuiteSeries(plan.name, plan.category, plan.family, plan.interval, frame.reset_index(drop=True), incidents)


def _rows(duration: pd.Timedelta, step: pd.Timedelta) -> int:
    return max(1, int(round(duration / step)))


def _duration_rows(kind: str, step: pd.Timedelta, rng: np.random.Generator) -> tuple[int, int]:
    """Rows an incident affects (to the series' end for a persisting one: 0 here) and rows its label covers."""
    if kind == "spike":
        rows = int(rng.integers(1, _rows(20 * _MINUTE, step) + 1))
        return rows, rows
    if kind in ("level_shift", "regime_change"):
        return 0, _rows(rng.uniform(1.0, 2.0) * _HOUR, step)
    hours = {"dip": (1 / 12, 2.0), "drift": (2.0, 24.0), "flatline": (0.5, 8.0), "variance_change": (1.0, 12.0)}
    if kind == "seasonality_break":
        rows = _rows(_DAY, step)
    else:
        rows = _rows(_log_uniform(rng, hours[kind]) * _HOUR, step)
    return rows, rows


def _quiet_hour(index: pd.DatetimeIndex, clean: np.ndarray) -> int:
    """The hour of day with the lowest mean value: where a stuck value is hardest to see."""
    means = pd.Series(clean).groupby(np.asarray(index.hour)).mean()
    return int(means.idxmin())


def _place(kinds: Sequence[str], index: pd.DatetimeIndex, clean: np.ndarray, family: Family, rng: np.random.Generator) -> list[_Placement]:
    """Non-overlapping places after the history, in time order; an incident that finds no room is left out."""
    step = _step(index)
    first = int(index.searchsorted(index[0] + HISTORY))
    last = int(index.searchsorted(index[-1] - END_MARGIN))
    buffer = _rows(WINDOW_BUFFER, step)
    quiet = _quiet_hour(index, clean)
    taken: list[tuple[int, int]] = []
    placed = []
    for kind in kinds:
        rows, label = _duration_rows(kind, step, rng)
        variant = _variant(kind, family, rng)
        for _ in range(200):
            start = int(rng.integers(first, max(first + 1, last - max(rows, label))))
            if kind == "flatline" and variant == "quiet":
                start = _at_hour(index, start, quiet)
            end = start + max(rows, label) - 1
            if start >= first and end < last and all(end + buffer < a or start > b + buffer for a, b in taken):
                taken.append((start, end))
                stop = len(index) if kind in PERSISTING and kind != "drift" else start + rows
                placed.append(_Placement(kind, start, stop, start + label - 1, variant))
                break
    return sorted(placed, key=lambda p: p.start)


def _at_hour(index: pd.DatetimeIndex, row: int, hour: int) -> int:
    """The row at ``hour`` o'clock on the day of ``row``."""
    day = index[row].normalize()
    return int(index.searchsorted(day + hour * _HOUR))


def _variant(kind: str, family: Family, rng: np.random.Generator) -> str:
    if kind in ("level_shift", "drift", "regime_change"):
        return str(rng.choice(["up", "down"]))
    if kind == "variance_change":
        return "collapse" if rng.uniform() < COLLAPSE_SHARE else "inflate"
    if kind == "flatline":
        return str(rng.choice(["quiet", "busy"]))
    if kind == "seasonality_break":
        return str(rng.choice(list(family.breaks)))
    return "up" if kind == "spike" else "down"


# --------------------------------------------------------------------------- #
# Incidents
# --------------------------------------------------------------------------- #


def _robust_spread(values: np.ndarray) -> float:
    """IQR / 1.349 (a standard deviation for normal data), with fallbacks for mostly-constant data."""
    finite = values[np.isfinite(values)]
    q75, q25 = np.percentile(finite, [75, 25])
    spread = float((q75 - q25) / 1.349)
    if not spread > 0:
        spread = float(np.std(finite))
    return spread if spread > 0 else 0.1 * max(abs(float(np.median(finite))), 1.0)


def _smooth(values: np.ndarray, step: pd.Timedelta) -> np.ndarray:
    """A centred rolling median over about 30 minutes: the level without the point-to-point noise."""
    window = max(5, _rows(30 * _MINUTE, step) | 1)
    return pd.Series(values).rolling(window, center=True, min_periods=1).median().to_numpy()


def _burst(rows: int) -> np.ndarray:
    """Weights in [0.6, 1] peaking mid-burst: a spike rises and falls, it is not a box."""
    return 0.6 + 0.4 * np.sin(np.pi * (np.arange(rows) + 0.5) / rows)


def _level(values: np.ndarray, start: int, step: pd.Timedelta) -> float:
    """The median of the day before ``start``."""
    return float(np.median(values[max(0, start - _rows(_DAY, step)) : start + 1]))


def _direction(level: float, delta: float, family: Family, variant: str) -> float:
    """``delta`` signed by the variant, or the other way when that runs into a bound; cut to fit when neither way does."""
    room = {"up": family.upper - level, "down": level - family.lower}
    other = "down" if variant == "up" else "up"
    way = variant if delta < 0.9 * room[variant] else other if delta < 0.9 * room[other] else max(room, key=room.__getitem__)
    size = min(delta, 0.8 * room[way])
    return size if way == "up" else -size


def _inject_all(
    clean: np.ndarray, placements: Sequence[_Placement], index: pd.DatetimeIndex, family: Family, rng: np.random.Generator
) -> tuple[np.ndarray, list[tuple[float, str]]]:
    """The values with every incident applied in time order, and each incident's size and variant as applied."""
    values = clean.copy()
    spread = _robust_spread(clean)
    step = _step(index)
    applied = []
    for p in placements:
        applied.append(_inject(values, p, spread, step, family, rng))
        values = np.clip(values, family.lower, family.upper)
    return values, applied


def _inject(
    values: np.ndarray, p: _Placement, spread: float, step: pd.Timedelta, family: Family, rng: np.random.Generator
) -> tuple[float, str]:
    """Apply one incident to ``values`` in place; return its size and variant (see :class:`SuiteIncident`)."""
    span = slice(p.start, p.stop)
    if p.kind in ("spike", "dip"):
        size = _log_uniform(rng, SPIKE_SPREADS if p.kind == "spike" else DIP_SPREADS)
        sign = 1.0 if p.kind == "spike" else -1.0
        values[span] += sign * size * spread * _burst(p.stop - p.start)
        return size, p.variant
    if p.kind in ("level_shift", "drift"):
        bounds = SHIFT_SPREADS if p.kind == "level_shift" else DRIFT_SPREADS
        delta = _direction(_level(values, p.start, step), _log_uniform(rng, bounds) * spread, family, p.variant)
        ramp = np.arange(1, p.stop - p.start + 1) / (p.stop - p.start) if p.kind == "drift" else 1.0
        values[span] += delta * ramp
        values[p.stop :] += delta
        return abs(delta) / spread, "up" if delta > 0 else "down"
    if p.kind == "regime_change":
        return _regime_change(values, p, _level(values, p.start, step), family, rng)
    if p.kind == "flatline":
        values[span] = values[p.start - 1]
        return 0.0, p.variant
    if p.kind == "variance_change":
        return _variance_change(values, p, spread, step, rng), p.variant
    return _seasonality_break(values, p, step, rng), p.variant


def _regime_change(values: np.ndarray, p: _Placement, level: float, family: Family, rng: np.random.Generator) -> tuple[float, str]:
    """The new normal after a deploy: everything from the onset on scaled by a factor, pattern included."""
    factor = _log_uniform(rng, REGIME_FACTORS)
    reference = family.lower if math.isfinite(family.lower) else 0.0
    up_fits = reference + (level - reference) * factor < 0.9 * family.upper
    if p.variant == "down" or not up_fits:
        factor = 1.0 / factor
    values[p.start :] = reference + (values[p.start :] - reference) * factor
    return factor, "up" if factor > 1 else "down"


def _variance_change(values: np.ndarray, p: _Placement, spread: float, step: pd.Timedelta, rng: np.random.Generator) -> float:
    """Noise around the local level multiplied by 3-10 (``inflate``) or nearly gone (``collapse``).

    Where the series barely has noise (a job's idle level), inflation starts
    from a tenth of a spread, or a tenfold of nothing would still be nothing.
    """
    margin = _rows(_HOUR, step)
    a, b = max(0, p.start - margin), min(len(values), p.stop + margin)
    level = _smooth(values[a:b], step)[p.start - a : p.stop - a]
    noise = values[p.start : p.stop] - level
    if p.variant == "collapse":
        values[p.start : p.stop] = level + COLLAPSE_FACTOR * noise
        return COLLAPSE_FACTOR
    factor = _log_uniform(rng, NOISE_FACTORS)
    sd = 1.4826 * float(np.median(np.abs(noise)))
    floor = 0.1 * spread
    if sd < floor:
        noise = noise + rng.normal(0.0, math.sqrt(floor * floor - sd * sd), len(noise))
    values[p.start : p.stop] = level + factor * noise
    return factor


def _seasonality_break(values: np.ndarray, p: _Placement, step: pd.Timedelta, rng: np.random.Generator) -> float:
    """A day whose pattern is shifted by 6-18 h, flattened to the previous day's mean, or stopped (its low level)."""
    rows = p.stop - p.start
    day = values[max(0, p.start - _rows(_DAY, step)) : p.start]
    noise = values[p.start : p.stop] - _smooth(values[p.start : p.stop], step)
    if p.variant == "shift":
        lag = _rows(rng.uniform(6.0, 18.0) * _HOUR, step)
        values[p.start : p.stop] = values[p.start - lag : p.start - lag + rows].copy()
        return lag * step / _HOUR
    level = float(np.mean(day)) if p.variant == "flatten" else float(np.percentile(day, 5))
    values[p.start : p.stop] = level + (noise if p.variant == "flatten" else 0.2 * noise)
    return 0.0


# --------------------------------------------------------------------------- #
# Gaps, jitter and labels
# --------------------------------------------------------------------------- #


def _observe(index: pd.DatetimeIndex, placements: Sequence[_Placement], family: Family, rng: np.random.Generator) -> tuple[np.ndarray, pd.DatetimeIndex]:
    """Which rows a collector kept (gaps of minutes to hours, never near a label) and when it stamped them."""
    step = _step(index)
    keep = np.ones(len(index), dtype=bool)
    guard = _rows(2 * _HOUR, step)
    protected = [(p.start - guard, p.label_end + guard) for p in placements]
    count = rng.poisson(rng.uniform(*family.gaps_per_week) * (index[-1] - index[0]) / _WEEK)
    for start in rng.integers(1, len(index) - 1, count):
        rows = _rows(_log_uniform(rng, family.gap_minutes) * _MINUTE, step)
        end = min(start + rows, len(index) - 1)
        if all(end < a or start > b for a, b in protected):
            keep[start:end] = False
    return keep, _jitter(index, rng) if family.jitter else index


def _jitter(index: pd.DatetimeIndex, rng: np.random.Generator) -> pd.DatetimeIndex:
    """Sampling times as a collector stamps them: most on time, some late by up to a quarter of the interval, a few early."""
    seconds = _step(index).total_seconds()
    late = np.where(rng.uniform(size=len(index)) < 0.3, rng.integers(1, max(2, int(0.25 * seconds)), len(index)), 0)
    early = np.where(rng.uniform(size=len(index)) < 0.02, rng.integers(1, max(2, int(0.05 * seconds)), len(index)), 0)
    return index + pd.to_timedelta(late - early, unit="s")


def _label(p: _Placement, grid: pd.DatetimeIndex, stamps: pd.DatetimeIndex, size: float, variant: str) -> SuiteIncident:
    """The label of a placement: its first and last rows, wide enough to hold both their stamps and grid slots."""
    start = min(grid[p.start], stamps[p.start])
    end = max(grid[p.label_end], stamps[p.label_end])
    return SuiteIncident(p.kind, start, end, float(size), variant)


# --------------------------------------------------------------------------- #
# The NAB layout
# --------------------------------------------------------------------------- #


def _decimals(quantum: float) -> int:
    return max(0, -int(math.floor(math.log10(quantum) + 1e-9)))


def _csv(series: SuiteSeries) -> str:
    """``timestamp,value`` text; values printed to their family's resolution, so the file is small."""
    stamps = np.datetime_as_string(series.frame["timestamp"].dt.tz_convert(None).to_numpy().astype("datetime64[s]"), unit="s")
    digits = _decimals(FAMILIES[series.family].quantum)
    frame = pd.DataFrame({"timestamp": np.char.replace(stamps, "T", " "), "value": series.frame["value"]})
    return frame.to_csv(index=False, float_format=f"%.{digits}f", lineterminator="\n")


def write_nab_layout(series: Sequence[SuiteSeries], root: str | Path) -> Path:
    """Write the suite where :class:`anomaly.Benchmark` reads a corpus, and return ``root``.

    ``data/<category>/<name>.csv`` per series, ``labels/combined_windows.json``
    (the benchmark's windows, ``[]`` for a clean series),
    ``labels/incidents.json`` (each window's kind, size and variant) and
    ``labels/series.json`` (family, interval and rows: for breakdowns, never
    read by the detector). Refuses a folder holding other data files.
    """
    root = Path(root)
    keys = {s.key for s in series}
    strays = sorted(f"{p.parent.name}/{p.name}" for p in (root / "data").glob("*/*.csv") if f"{p.parent.name}/{p.name}" not in keys)
    if strays:
        raise BenchmarkError(f"{str(root)!r} already holds data files of another corpus, such as {strays[0]!r}; use an empty folder")
    for s in series:
        path = root / "data" / s.category / f"{s.name}.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(_csv(s))
    ordered = sorted(series, key=lambda s: s.key)
    labels = {s.key: [[i.start.strftime(STAMP), i.end.strftime(STAMP)] for i in s.incidents] for s in ordered}
    kinds = {s.key: [i.to_dict() for i in s.incidents] for s in ordered}
    about = {s.key: {"family": s.family, "interval_minutes": int(s.interval / _MINUTE), "rows": len(s.frame)} for s in ordered}
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for path, content in ((LABELS, labels), (INCIDENTS, kinds), (SERIES, about)):
        (root / path).write_text(json.dumps(content, indent=1) + "\n")
    return root


def scored_span(timestamps: pd.Series | pd.DatetimeIndex, protocol: str = "stream") -> tuple[pd.Timestamp, pd.Timestamp]:
    """The time a protocol scores: after the probationary rows for ``stream``, all of it for ``batch``.

    Each row stands for the interval before it, so a stream scores from the
    last probationary row's time to the last row's; a batch run also scores
    the first row (one median interval before it).
    """
    stamps = pd.DatetimeIndex(timestamps)
    if len(stamps) < 2:
        raise DataError(f"a series needs at least 2 rows to have a scored span, got {len(stamps)}")
    if protocol not in ("stream", "stream-daily", "batch"):
        raise DataError(f"protocol must be 'stream', 'stream-daily' or 'batch', got {protocol!r}")
    first = probation_length(len(stamps)) if protocol.startswith("stream") else 0
    begin = stamps[first - 1] if first else stamps[0] - pd.Series(stamps).diff().median()
    return begin, stamps[-1]


def suite_counts(series: Sequence[SuiteSeries]) -> dict[str, Any]:
    """What a suite holds: series per category and family, points, metric-weeks (all, and scored by a stream), incidents per kind."""
    weeks: Counter[str] = Counter()
    scored: Counter[str] = Counter()
    points: Counter[str] = Counter()
    for s in series:
        stamps = s.frame["timestamp"]
        begin, end = scored_span(stamps)
        weeks[s.category] += (stamps.iloc[-1] - stamps.iloc[0] + s.interval) / _WEEK
        scored[s.category] += (end - begin) / _WEEK
        points[s.category] += len(s.frame)
    return {
        "series": dict(sorted(Counter(s.category for s in series).items())),
        "families": {c: dict(sorted(Counter(s.family for s in series if s.category == c).items())) for c in CATEGORIES},
        "intervals_minutes": dict(sorted(Counter(int(s.interval / _MINUTE) for s in series).items())),
        "days": {"min": min(_span_days(s) for s in series), "max": max(_span_days(s) for s in series)},
        "points": dict(sorted(points.items())),
        "weeks": {c: round(w, 2) for c, w in sorted(weeks.items())},
        "scored_weeks": {c: round(w, 2) for c, w in sorted(scored.items())},
        "incidents": dict(sorted(Counter(i.kind for s in series for i in s.incidents).items())),
    }


def _span_days(series: SuiteSeries) -> float:
    stamps = series.frame["timestamp"]
    return round(float((stamps.iloc[-1] - stamps.iloc[0] + series.interval) / _DAY), 2)


# --------------------------------------------------------------------------- #
# Reading a finished benchmark run
# --------------------------------------------------------------------------- #


def _run_events(out: Path, corpus: str | Path, pattern: str) -> tuple[list[tuple[CorpusFile, list[Interval]]], list[str]]:
    """The run's alerts for each corpus file matching ``pattern``, and the keys of those it has no events file for."""
    found, missing = [], []
    for file in load_corpus(corpus, [pattern]):
        events = _events(out, file.category, file.stem)
        if events is None:
            missing.append(file.key)
        else:
            found.append((file, events))
    return found, missing


def _protocol(out: Path) -> str:
    """The protocol of a benchmark output folder, from its ``benchmark.json``."""
    path = out / "benchmark.json"
    try:
        protocol = json.loads(path.read_text()).get("protocol")
    except (OSError, ValueError, AttributeError):
        raise BenchmarkError(f"{str(out)!r} is not a benchmark output folder: cannot read {str(path)!r}") from None
    if protocol not in ("stream", "stream-daily", "batch"):
        raise BenchmarkError(f"{str(path)!r} names an unknown protocol {protocol!r}")
    return str(protocol)


def _events(out: Path, category: str, stem: str) -> list[Interval] | None:
    """A file's alerts (``start``, ``end``) from ``<out>/<category>/<stem>.events.csv``; None when the run has none."""
    path = out / category / f"{stem}.events.csv"
    if not path.is_file():
        return None
    table = pd.read_csv(path)
    return [(as_utc(a), as_utc(b)) for a, b in zip(table["start"], table["end"])]


def _percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else math.nan


def false_alerts_per_week(benchmark_out: str | Path, corpus: str | Path) -> dict[str, Any]:
    """False alerts per metric-week on the clean series: alerts over the weeks each series was scored.

    Every alert on a clean series is false. The scored span is the stream
    protocol's rows after the probationary period (all rows for ``batch``);
    an alert counts when it reaches into it. Gives each series' figures and
    their mean, median, 95th percentile and maximum across series, plus the
    pooled rate (all alerts over all weeks). Series the run has no events
    file for (failed, or not run yet) are listed under ``missing``.
    """
    out = Path(benchmark_out)
    protocol = _protocol(out)
    per_series: dict[str, dict[str, float]] = {}
    found, missing = _run_events(out, corpus, "clean/*")
    for file, events in found:
        begin, end = scored_span(read_series(file.path)["timestamp"], protocol)
        count = sum(1 for _, b in events if b > begin)
        weeks = (end - begin) / _WEEK
        per_series[file.key] = {"alerts": count, "weeks": weeks, "per_week": count / weeks}
    if not per_series:
        raise BenchmarkError(f"{str(out)!r} has no events file for any clean series of {str(corpus)!r}")
    rates = [r["per_week"] for r in per_series.values()]
    alerts, weeks = sum(r["alerts"] for r in per_series.values()), sum(r["weeks"] for r in per_series.values())
    return {
        "protocol": protocol,
        "series": len(per_series),
        "alerts": alerts,
        "weeks": weeks,
        "pooled": alerts / weeks,
        "mean": statistics.fmean(rates),
        "median": statistics.median(rates),
        "p95": _percentile(rates, 95),
        "max": max(rates),
        "per_series": per_series,
        "missing": missing,
    }


def _incidents(corpus: Path) -> dict[str, list[dict[str, Any]]]:
    """Each incident series' labelled incidents, from ``labels/incidents.json``."""
    path = corpus / INCIDENTS
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError):
        raise BenchmarkError(f"cannot read the incident kinds {str(path)!r} (write the suite with write_nab_layout)") from None
    return {key: [{**i, "start": as_utc(i["start"]), "end": as_utc(i["end"])} for i in items] for key, items in raw.items()}


def _end_error(incident: dict[str, Any], events: Sequence[Interval]) -> tuple[bool, float] | None:
    """Whether the alerts overlapping an incident end close to its end, and by how many minutes; None when none does.

    The alert's end is the latest end of the events that overlap the window;
    close is within max(1 h, 25 % of the incident's duration).
    """
    window = (incident["start"], incident["end"])
    ends = [b for a, b in events if overlaps(window, (a, b))]
    if not ends:
        return None
    error = abs(max(ends) - window[1])
    tolerance = max(_HOUR, 0.25 * (window[1] - window[0]))
    return error <= tolerance, error / _MINUTE


def _kind_row(outcomes: Sequence[tuple[bool, float] | None]) -> dict[str, Any]:
    caught = [o for o in outcomes if o is not None]
    return {
        "incidents": len(outcomes),
        "caught": len(caught),
        "recall": len(caught) / len(outcomes) if outcomes else math.nan,
        "end_within": sum(o[0] for o in caught) / len(caught) if caught else math.nan,
        "median_end_error_minutes": statistics.median(o[1] for o in caught) if caught else math.nan,
    }


def incident_report(benchmark_out: str | Path, corpus: str | Path) -> dict[str, Any]:
    """Per incident kind: recall, and how close the caught incidents' alerts end to their true end; per metric: precision.

    An incident is caught when an alert overlaps its window. ``end_within``
    is the share of caught incidents whose alert ends within max(1 h, 25 %
    of the incident's duration) of the window's end. An alert overlapping no
    window of its series is false; a series' precision is its true alerts
    over its alerts (undefined, NaN, without alerts).
    """
    out, corpus = Path(benchmark_out), Path(corpus)
    labelled = _incidents(corpus)
    by_kind: dict[str, list[tuple[bool, float] | None]] = {}
    per_series: dict[str, dict[str, Any]] = {}
    found, missing = _run_events(out, corpus, "incidents/*")
    for file, events in found:
        incidents = labelled.get(file.key, [])
        for incident in incidents:
            by_kind.setdefault(incident["kind"], []).append(_end_error(incident, events))
        windows = [(i["start"], i["end"]) for i in incidents]
        true = sum(1 for e in events if any(overlaps(e, w) for w in windows))
        per_series[file.key] = {"alerts": len(events), "true": true, "precision": true / len(events) if events else math.nan}
    if not per_series:
        raise BenchmarkError(f"{str(out)!r} has no events file for any incident series of {str(corpus)!r}")
    outcomes = [o for kind in by_kind.values() for o in kind]
    alerts, true = sum(r["alerts"] for r in per_series.values()), sum(r["true"] for r in per_series.values())
    precisions = [r["precision"] for r in per_series.values() if r["alerts"]]
    return {
        "kinds": {kind: _kind_row(by_kind[kind]) for kind in sorted(by_kind)},
        "overall": _kind_row(outcomes),
        "alerts": alerts,
        "true_alerts": true,
        "precision": true / alerts if alerts else math.nan,
        "median_series_precision": statistics.median(precisions) if precisions else math.nan,
        "per_series": per_series,
        "missing": missing,
    }
