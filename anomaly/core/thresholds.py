"""Thresholds that turn per-point anomaly scores into flags.

Each method is fitted once on the scores of the training series (the
reconstruction error of data assumed mostly normal) and then applied, frozen,
to new scores: a point is flagged when its score is strictly above
``threshold_``. Learned values are plain floats so a fitted threshold can be
saved as JSON (:meth:`Threshold.get_state`) and rebuilt without the data
(:meth:`Threshold.from_state`).

Every fitted value is raised to at least ``ThresholdConfig.floor``: a series
that the model reconstructs perfectly (all scores 0, e.g. a constant metric)
would otherwise get a threshold of 0 and flag any rounding noise. The same
reason makes every method safe when the spread is zero (std = 0, MAD = 0).

NaN scores mark points that were gap-filled; they are left out of fitting and
are never flagged.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Self

import numpy as np
import pandas as pd

from anomaly.core.config import ThresholdConfig
from anomaly.core.scoring import ScoreFrame, Scores
from anomaly.errors import ConfigError, DataError, NotFittedError

#: Makes the MAD a consistent estimator of the standard deviation for normal data.
MAD_TO_STD = 1.4826


class Threshold(ABC):
    """Base class: validation, floor, state round-trip; subclasses supply ``_fit``.

    The class decides the method; ``config`` only supplies its parameters, so
    ``QuantileThreshold(ThresholdConfig(quantile=0.95))`` works whatever
    ``config.method`` says (:func:`build_threshold` is what reads ``method``).
    """

    method: ClassVar[str]
    #: Learned values kept besides ``threshold``, each stored as attribute ``<key>_``.
    state_keys: ClassVar[tuple[str, ...]] = ()
    #: Whether fitting reads the scores (a fixed threshold fits on no data at all).
    needs_scores: ClassVar[bool] = True

    threshold_: float

    def __init__(self, config: ThresholdConfig) -> None:
        self.config = config

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.config!r})"

    def fit(self, scores: np.ndarray) -> Self:
        """Learn the threshold from 1-D training scores; NaNs (filled gaps) are ignored."""
        x = _check_scores(scores, context="fit")
        if self.needs_scores and np.isnan(x).all():
            what = "are empty" if x.size == 0 else f"are all NaN ({x.size} values)"
            raise DataError(f"cannot fit a {self.method!r} threshold: the training scores {what}")
        value, learned = self._fit(x)
        self.threshold_ = max(float(value), float(self.config.floor))
        for key in self.state_keys:
            setattr(self, f"{key}_", float(learned[key]))
        return self

    def apply(self, scores: np.ndarray) -> np.ndarray:
        """Boolean flags, same shape as ``scores``: True where score > ``threshold_`` (NaN -> False)."""
        self._check_fitted()
        x = _check_scores(scores, context="apply")
        return x > self.threshold_  # NaN compares False

    def get_state(self) -> dict[str, float]:
        """Learned values as plain floats, ``threshold`` included; the input of :meth:`from_state`."""
        self._check_fitted()
        state = {"threshold": self.threshold_}
        state.update({key: getattr(self, f"{key}_") for key in self.state_keys})
        return state

    @classmethod
    def from_state(cls, config: ThresholdConfig, state: Mapping[str, float]) -> Self:
        """Rebuild a fitted threshold from :meth:`get_state` output, without data.

        The stored threshold is used as is (not re-floored with ``config.floor``)
        so that a reloaded threshold flags exactly what the fitted one did.
        """
        expected = ("threshold", *cls.state_keys)
        _check_state(cls.method, state, expected)
        obj = cls(config)
        obj.threshold_ = float(state["threshold"])
        for key in cls.state_keys:
            setattr(obj, f"{key}_", float(state[key]))
        return obj

    @abstractmethod
    def _fit(self, scores: np.ndarray) -> tuple[float, dict[str, float]]:
        """Return (threshold before the floor, other learned values by ``state_keys``).

        ``scores`` is 1-D float64, non-negative and finite except for NaNs
        (gaps, kept in place so positions still mean time), with at least one
        non-NaN value unless the class does not need scores.
        """

    def _check_fitted(self) -> None:
        if not hasattr(self, "threshold_"):
            raise NotFittedError(f"this {type(self).__name__} is not fitted yet; call fit(scores) first")


class QuantileThreshold(Threshold):
    """The ``config.quantile`` of the training scores (numpy's linear interpolation).

    Flags about ``1 - quantile`` of normal-looking data, whatever its shape.
    """

    method = "quantile"

    def _fit(self, scores: np.ndarray) -> tuple[float, dict[str, float]]:
        return float(np.quantile(_observed(scores), self.config.quantile)), {}


class SigmaThreshold(Threshold):
    """``mean + k * std`` of the training scores (population std, ``ddof=0``)."""

    method = "sigma"
    state_keys = ("mean", "std")
    mean_: float
    std_: float

    def _fit(self, scores: np.ndarray) -> tuple[float, dict[str, float]]:
        mean, std = _mean_std(_observed(scores))
        return mean + self.config.k * std, {"mean": mean, "std": std}


class MADThreshold(Threshold):
    """``median + k * 1.4826 * MAD``: like sigma, but not dragged up by anomalies in training."""

    method = "mad"
    state_keys = ("median", "mad")
    median_: float
    mad_: float

    def _fit(self, scores: np.ndarray) -> tuple[float, dict[str, float]]:
        x = _observed(scores)
        median = float(np.median(x))
        mad = float(np.median(np.abs(x - median)))
        return median + self.config.k * MAD_TO_STD * mad, {"median": median, "mad": mad}


class DynamicThreshold(Threshold):
    """Nonparametric threshold of Hundman et al. (KDD 2018), as in telemanom's ``find_epsilon``.

    Candidates are ``eps = mean + z * std`` for z on the config grid. Each is
    scored by how much removing the points above it lowers the mean and std,
    relative, divided by ``|E_a| + |E_seq|**2`` (points above, and their
    contiguous runs, so many scattered exceedances are penalised). The best
    candidate wins; ties go to the larger z, as in telemanom. When no candidate
    scores above 0 (nothing exceeds any of them, e.g. constant scores) the
    largest, ``z_max``, is used.

    Differences from telemanom: a point is "above" when ``score > eps`` (the
    same rule as :meth:`apply`); there is no error buffer around exceedances,
    and no cap on the number of sequences, both of which belong to telemanom's
    per-window use; NaN gaps split runs, as they do when flags become events.
    Pruning of weak sequences is ``events.prune``.
    """

    method = "dynamic"
    state_keys = ("z", "mean", "std")
    z_: float
    mean_: float
    std_: float

    def _fit(self, scores: np.ndarray) -> tuple[float, dict[str, float]]:
        x = _observed(scores)
        mean, std = _mean_std(x)
        cfg = self.config
        grid = np.minimum(np.arange(cfg.z_min, cfg.z_max + cfg.z_step / 2.0, cfg.z_step), cfg.z_max)
        best_z, best_score = float(cfg.z_max), 0.0
        for z in grid:
            score = _hundman_score(scores, x, mean, std, mean + float(z) * std)
            if score > 0.0 and score >= best_score:
                best_z, best_score = float(z), score
        return mean + best_z * std, {"z": best_z, "mean": mean, "std": std}


class SPOTThreshold(Threshold):
    """Peaks-over-threshold (Siffer et al., KDD 2017) with the ``libspot`` package.

    ``libspot.Spot`` is calibrated on the training scores: its initial
    threshold ``t`` is libspot's own estimate of the ``config.level``
    quantile (close to, not equal to, numpy's), a generalised Pareto
    distribution is fitted to the excesses over ``t``, and ``threshold_`` is
    the score exceeded with probability ``config.risk`` under that model. It
    is not updated by new data (no streaming SPOT), so it applies like the
    other methods.

    All excesses of the training series are kept for the fit (libspot's
    default keeps only the latest 500, which suits streaming, not one-off
    calibration). When the tail cannot be modelled (too few points, constant
    or two-valued scores: no excesses, or a GPD with zero scale) the threshold
    falls back to the largest training score, recorded as a degenerate tail
    (``sigma = gamma = 0``, ``excess_threshold`` = that maximum).
    """

    method = "spot"
    state_keys = ("excess_threshold", "gamma", "sigma", "n_excesses", "n")
    excess_threshold_: float
    gamma_: float
    sigma_: float
    n_excesses_: float
    n_: float

    def _fit(self, scores: np.ndarray) -> tuple[float, dict[str, float]]:
        x = np.ascontiguousarray(_observed(scores))
        try:
            import libspot
        except ImportError as exc:  # pragma: no cover - depends on the environment
            raise ImportError("the 'spot' threshold needs the libspot package: pip install libspot") from exc
        spot = libspot.Spot(q=self.config.risk, level=self.config.level, max_excess=max(int(x.size), 1))
        try:
            spot.fit(x)
            fitted = _spot_result(spot)
        except RuntimeError:  # libspot: "... threshold has not been initialized"
            fitted = None
        if fitted is None:
            top = float(np.max(x))
            fitted = (top, {"excess_threshold": top, "gamma": 0.0, "sigma": 0.0, "n_excesses": 0.0})
        value, learned = fitted
        return value, {**learned, "n": float(x.size)}


class FixedThreshold(Threshold):
    """``config.k``, whatever the training scores: meant for scores in standard deviations.

    With ``scoring.baseline`` a score already says how unusual a point is
    against recent behaviour, so the cut is a stated number of sigmas rather
    than something learned from (possibly contaminated) training scores.
    """

    method = "fixed"
    needs_scores = False

    def _fit(self, scores: np.ndarray) -> tuple[float, dict[str, float]]:
        return float(self.config.k), {}


def _spot_result(spot: Any) -> tuple[float, dict[str, float]] | None:
    """The calibrated z_q and GPD parameters, or None when the tail fit is degenerate."""
    z_q, t = float(spot.anomaly_threshold), float(spot.excess_threshold)
    gamma, sigma, n_excesses = float(spot.gamma), float(spot.sigma), int(spot.Nt)
    if n_excesses == 0 or not sigma > 0.0 or not all(map(math.isfinite, (z_q, t, gamma, sigma))):
        return None
    return z_q, {"excess_threshold": t, "gamma": gamma, "sigma": sigma, "n_excesses": float(n_excesses)}


THRESHOLDS: dict[str, type[Threshold]] = {
    cls.method: cls
    for cls in (QuantileThreshold, SigmaThreshold, MADThreshold, DynamicThreshold, SPOTThreshold, FixedThreshold)
}


def build_threshold(config: ThresholdConfig) -> Threshold:
    """An unfitted threshold of the class named by ``config.method``."""
    try:
        cls = THRESHOLDS[config.method]
    except KeyError:
        raise ConfigError(
            f"threshold.method must be one of {', '.join(map(repr, THRESHOLDS))}, got {config.method!r}"
        ) from None
    return cls(config)


def _hundman_score(scores: np.ndarray, observed: np.ndarray, mean: float, std: float, eps: float) -> float:
    """Hundman's criterion for ``eps``; 0 when nothing is above it (no information)."""
    above = scores > eps  # NaN -> False, so gaps split runs
    n_above = int(np.count_nonzero(above))
    if n_above == 0:
        return 0.0
    n_runs = int(above[0]) + int(np.count_nonzero(above[1:] & ~above[:-1]))
    kept = observed[observed <= eps]  # never empty: eps >= mean >= min (see _mean_std)
    d_mean = (mean - float(np.mean(kept))) / mean if mean > 0.0 else 0.0
    d_std = (std - float(np.std(kept))) / std if std > 0.0 else 0.0
    return (d_mean + d_std) / (n_above + n_runs**2)


def _mean_std(x: np.ndarray) -> tuple[float, float]:
    """Mean and population std, exact for constant data.

    ``np.mean`` of n copies of 0.1 can land an ulp below 0.1 (with a matching
    non-zero std), which would make ``mean + k * std`` flag every training
    point when k < 1; clamping the mean into [min, max] and zeroing the spread
    of constant data rules that out.
    """
    lo, hi = float(np.min(x)), float(np.max(x))
    if lo == hi:
        return lo, 0.0
    return min(max(float(np.mean(x)), lo), hi), float(np.std(x))


def _observed(scores: np.ndarray) -> np.ndarray:
    return scores[~np.isnan(scores)]


def _check_scores(scores: Any, *, context: str) -> np.ndarray:
    """1-D float64 copy of ``scores``; DataError naming the first bad value otherwise."""
    x = np.asarray(scores)
    if x.dtype.kind not in "iuf":
        raise DataError(f"{context}: scores must be numbers, got dtype {x.dtype}")
    if x.ndim != 1:
        raise DataError(f"{context}: scores must be 1-D, got shape {x.shape}")
    x = x.astype(np.float64)
    bad = np.flatnonzero(np.isinf(x))
    if bad.size:
        raise DataError(f"{context}: scores must be finite, got {x[bad[0]]} at index {bad[0]}")
    bad = np.flatnonzero(x < 0)
    if bad.size:
        raise DataError(f"{context}: scores must be non-negative, got {x[bad[0]]} at index {bad[0]}")
    return x


def _check_state(method: str, state: Mapping[str, float], expected: tuple[str, ...]) -> None:
    """DataError unless ``state`` has exactly ``expected`` keys, all finite numbers."""
    if not isinstance(state, Mapping):
        raise DataError(f"invalid {method!r} threshold state: expected a mapping, got {state!r}")
    missing = [k for k in expected if k not in state]
    unknown = sorted(set(state) - set(expected))
    if missing or unknown:
        raise DataError(
            f"invalid {method!r} threshold state: missing {missing}, unknown {unknown}; "
            f"expected keys {list(expected)}"
        )
    for key in expected:
        value = state[key]
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if not ok:
            raise DataError(f"invalid {method!r} threshold state: {key} must be a finite number, got {value!r}")
    if state["threshold"] < 0:
        raise DataError(f"invalid {method!r} threshold state: threshold must be >= 0, got {state['threshold']!r}")


@dataclass
class FittedThresholds:
    """One fitted threshold per metric and one on the combined score, applied together."""

    per_metric: dict[str, Threshold]
    combined: Threshold

    @classmethod
    def fit(cls, config: ThresholdConfig, scores: ScoreFrame) -> "FittedThresholds":
        """Fit on the observed points of training scores (a point filled or missing in any metric is left out)."""
        clean = np.where(scores.unobserved, np.nan, scores.metric_scores)
        combined = np.where(scores.unobserved.any(axis=1), np.nan, scores.score)
        per_metric = {m: build_threshold(config).fit(clean[:, j]) for j, m in enumerate(scores.metrics)}
        return cls(per_metric, build_threshold(config).fit(combined))

    @property
    def value(self) -> float:
        """The combined score's threshold."""
        return self.combined.threshold_

    def flags(self, scores: ScoreFrame) -> tuple[np.ndarray, np.ndarray]:
        """Per-metric flags ``(n, m)`` and combined flags ``(n,)``; an unobserved point is never flagged."""
        metric_flags = np.column_stack(
            [self.per_metric[m].apply(scores.metric_scores[:, j]) for j, m in enumerate(scores.metrics)]
        ) & ~scores.unobserved
        return metric_flags, self.combined.apply(scores.score) & ~scores.unobserved.any(axis=1)

    def apply(
        self,
        scores: ScoreFrame,
        rows: slice = slice(None),
        *,
        values: pd.DataFrame | None = None,
        reconstruction: pd.DataFrame | None = None,
        filled: pd.DataFrame | None = None,
        carry: pd.DataFrame | None = None,
    ) -> Scores:
        """The public :class:`Scores` of ``rows`` of a score frame: scores, thresholds and flags on their timestamps.

        ``values``, ``reconstruction`` (in the metrics' units) and ``filled``
        are the data those rows were scored on; without them the frames are empty.
        """
        metric_flags, flags = self.flags(scores)
        index, cols = scores.index[rows], list(scores.metrics)
        blank = pd.DataFrame(index=index, columns=cols, dtype=float)
        return Scores(
            values=blank if values is None else values,
            reconstruction=blank if reconstruction is None else reconstruction,
            metric_scores=pd.DataFrame(scores.metric_scores[rows], index, cols),
            score=pd.Series(scores.score[rows], index, name="anomaly_score"),
            thresholds={m: t.threshold_ for m, t in self.per_metric.items()},
            threshold=self.value,
            metric_flags=pd.DataFrame(metric_flags[rows], index, cols),
            flags=pd.Series(flags[rows], index, name="flag"),
            filled=pd.DataFrame(False, index, cols) if filled is None else filled,
            carry=carry,
        )

    def to_state(self) -> dict[str, Any]:
        """Plain JSON: the method, each metric's learned values, the combined one's."""
        return {
            "threshold_method": self.combined.method,
            "thresholds": {m: t.get_state() for m, t in self.per_metric.items()},
            "combined_threshold": self.combined.get_state(),
        }

    @classmethod
    def from_state(cls, config: ThresholdConfig, state: Mapping[str, Any]) -> "FittedThresholds":
        """Rebuild from :meth:`to_state` without data; the method must be ``config``'s."""
        method = state["threshold_method"]
        if method not in THRESHOLDS:
            raise DataError(f"unknown threshold method {method!r}; known: {', '.join(THRESHOLDS)}")
        kind = THRESHOLDS[method]
        per_metric = {str(m): kind.from_state(config, s) for m, s in dict(state["thresholds"]).items()}
        return cls(per_metric, kind.from_state(config, state["combined_threshold"]))
