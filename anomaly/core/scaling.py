"""Per-metric affine scaling fitted on training data only.

scikit-learn's ``MinMaxScaler``, ``StandardScaler`` and ``RobustScaler``
estimate the statistics; what is kept is two plain numbers per metric
(``center`` and ``scale``), so they serialise to JSON, can be read by a
person, and load without scikit-learn (nothing is pickled). A metric with no
spread in training (a constant series) keeps ``scale = 1``: it is only
shifted, never divided by zero, and any departure from the constant shows up
as error.

Scaled values are clipped to ±:data:`SCALED_LIMIT` before the float32 cast
the model takes, so a value far outside anything seen in training (1e40,
1e308) scores as the most extreme error there is rather than overflowing to
inf and freezing every score after it. Training values must lie within
±:data:`MAX_TRAINING_MAGNITUDE`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np

from anomaly.core.config import ScalerKind
from anomaly.errors import DataError, NotFittedError, excerpt

#: Largest magnitude a training value may have (default 1e150): beyond it the scaler's
#: float64 arithmetic (a range, a sum of squares) can overflow, and no measurement comes
#: near it: such a value is a sentinel or an overflowed counter, not a metric's level.
MAX_TRAINING_MAGNITUDE = 1e150
#: Scaled values are clipped to ±this many training spreads (default 1e6) before the float32
#: cast: far beyond any anomaly that still needs telling apart from another, yet small enough
#: that an error raised to the largest configurable power (8) and squared stays finite.
SCALED_LIMIT = 1e6


@dataclass
class Scaler:
    """``(x - center_) / scale_`` per metric; ``kind`` picks how they are estimated.

    - ``minmax``: maps the training range onto [-1, 1] (as Orion does).
    - ``standard``: zero mean, unit standard deviation.
    - ``robust``: median and IQR / 1.34898 (the IQR of a unit normal, scikit-learn's
      ``unit_variance``), unmoved by outliers in training data.
    """

    kind: ScalerKind = "minmax"
    center_: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]
    scale_: np.ndarray = field(default=None, repr=False)  # type: ignore[assignment]

    def fit(self, values: np.ndarray) -> "Scaler":
        """Estimate per-column parameters, ignoring NaN (gaps); values beyond ±1e150 are refused."""
        x = _as_2d(values)
        if np.isnan(x).all(axis=0).any():
            col = int(np.flatnonzero(np.isnan(x).all(axis=0))[0])
            raise DataError(f"cannot fit the scaler: column {col} has no values")
        beyond = first_beyond_magnitude(x)
        if beyond is not None:
            row, col = beyond
            raise DataError(
                f"cannot fit the scaler: column {col} has the value {x[row, col]:g} at row {row}, "
                f"beyond ±{MAX_TRAINING_MAGNITUDE:g}"
            )
        center, spread = _statistics(self.kind, x)
        self.center_ = np.asarray(center, dtype=np.float64)
        has_spread = spread > 1e-12 * np.maximum(1.0, np.abs(center))
        self.scale_ = np.where(has_spread, spread, 1.0).astype(np.float64)
        return self

    def transform(self, values: np.ndarray) -> np.ndarray:
        """Scaled float32 values, clipped to ±:data:`SCALED_LIMIT` (NaN stays NaN)."""
        self._check(values)
        with np.errstate(over="ignore"):  # a value near ±1e308 over a small scale: clipped below
            scaled = (_as_2d(values) - self.center_) / self.scale_
        return np.clip(scaled, -SCALED_LIMIT, SCALED_LIMIT).astype(np.float32)

    def inverse_transform(self, values: np.ndarray) -> np.ndarray:
        self._check(values)
        return _as_2d(values).astype(np.float64) * self.scale_ + self.center_

    def to_dict(self) -> dict[str, Any]:
        if self.center_ is None:
            raise NotFittedError("the scaler is not fitted yet")
        return {"kind": self.kind, "center": self.center_.tolist(), "scale": self.scale_.tolist()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Scaler":
        try:
            center = np.asarray(data["center"], dtype=np.float64)
            scale = np.asarray(data["scale"], dtype=np.float64)
            kind = data["kind"]
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"invalid scaler parameters: {exc}") from exc
        usable = np.all(scale > 0) and np.isfinite(center).all() and np.isfinite(scale).all()
        if center.shape != scale.shape or center.ndim != 1 or not usable:
            raise DataError(f"invalid scaler parameters: center {center.tolist()}, scale {scale.tolist()}")
        return cls(kind=kind, center_=center, scale_=scale)

    def _check(self, values: np.ndarray) -> None:
        if self.center_ is None:
            raise NotFittedError("the scaler is not fitted yet; call fit first")
        n = _as_2d(values).shape[1]
        if n != len(self.center_):
            raise DataError(f"the data has {n} metrics, but the scaler was fitted on {len(self.center_)}")


def first_beyond_magnitude(values: np.ndarray) -> tuple[int, int] | None:
    """Row and column of the first value beyond ±:data:`MAX_TRAINING_MAGNITUDE` (time order), or None."""
    x = _as_2d(values)
    with np.errstate(invalid="ignore"):
        rows, cols = np.nonzero(np.abs(x) > MAX_TRAINING_MAGNITUDE)
    return (int(rows[0]), int(cols[0])) if len(rows) else None


def _statistics(kind: str, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(center, spread)`` per column from the fitted scikit-learn estimator of ``kind`` (NaN ignored).

    The transform is ours, not the estimator's: ``MinMaxScaler.transform`` rounds
    differently in the last bit and maps a constant column to -1 rather than 0.
    """
    # imported here: only fitting needs scikit-learn (about a second), loading and scoring a model do not
    from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

    if kind == "minmax":
        minmax = MinMaxScaler(feature_range=(-1, 1)).fit(x)
        return (minmax.data_max_ + minmax.data_min_) / 2.0, minmax.data_range_ / 2.0
    if kind == "standard":
        standard = StandardScaler().fit(x)
        return standard.mean_, np.sqrt(standard.var_)
    if kind == "robust":
        robust = RobustScaler(unit_variance=True).fit(x)
        # a zero IQR is no spread (scale 1 in fit), not the 1 / 1.34898 the estimator puts there,
        # which would be a genuine IQR of 1 too: the quartiles tell the two apart
        q1, q3 = np.nanpercentile(x, [25, 75], axis=0)
        return robust.center_, np.where(q3 > q1, robust.scale_, 0.0)
    raise DataError(f"unknown scaler kind {excerpt(kind)}")


def _as_2d(values: np.ndarray | Sequence[float]) -> np.ndarray:
    x = np.asarray(values, dtype=np.float64)
    return x.reshape(-1, 1) if x.ndim == 1 else x
