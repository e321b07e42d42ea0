"""Each series' latest scored point, with what the model expected and a band around it.

A score run ends by keeping, per group, the last point it scored of each
metric (``scores/<group>/latest.json``): the observed value, the expected
value (the model's reconstruction, in the metric's units), the band's
half-width, the metric's score and threshold, and the model version. The
Prometheus exporter, the Pushgateway push and the Alertmanager annotations
read these small files, never the score parts.

**The band.** Its half-width is the :data:`BAND_QUANTILE` (99%) quantile of
the version's absolute training reconstruction error of that metric, in the
metric's units: the residuals every version keeps, times the scaler's
scale, filled points left out. 99% of the training points lay that close to
their reconstruction, so the band says how far from "expected" the model
was used to being. It belongs to the version (it moves with a retrain, not
with a policy change). A point outside it is unusual, but does not alert by
itself: alerts come from the smoothed score against its threshold. The band
the threshold implies is not used: the score is a smoothed error measured
against its own recent baseline, which has no fixed width in the metric's
units.
"""

from __future__ import annotations

import logging
import math
import warnings
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from anomaly.core.fileio import atomic_write_json, read_json
from anomaly.errors import DataError
from anomaly.ops.workspace import Workspace

if TYPE_CHECKING:  # only their attributes are read
    from anomaly.core.detector import LSTMAutoencoderDetector
    from anomaly.core.scoring import Scores

log = logging.getLogger(__name__)

#: The quantile of the training reconstruction errors that sets the band's half-width (default 0.99).
BAND_QUANTILE = 0.99
#: Layout of ``latest.json``.
LATEST_VERSION = 1
#: The labels every exported series carries; a label set of the series' own can be added after them.
SERIES_LABELS = ("metric", "model", "version")


@dataclass(frozen=True)
class SeriesPoint:
    """One metric's latest scored point; numbers are ``None`` where not finite (not yet scored, no band)."""

    metric: str
    model: str
    version: str
    timestamp: str
    value: float | None
    expected: float | None
    band: float | None
    score: float | None
    threshold: float | None
    flag: bool

    @property
    def lower(self) -> float | None:
        return None if self.expected is None or self.band is None else self.expected - self.band

    @property
    def upper(self) -> float | None:
        return None if self.expected is None or self.band is None else self.expected + self.band

    def labels(self) -> dict[str, str]:
        """The series' labels for Prometheus and Alertmanager (see :data:`SERIES_LABELS`)."""
        return {"metric": self.metric, "model": self.model, "version": self.version}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SeriesPoint:
        numbers = {k: _number(data.get(k)) for k in ("value", "expected", "band", "score", "threshold")}
        return cls(str(data["metric"]), str(data["model"]), str(data["version"]), str(data["timestamp"]), flag=bool(data["flag"]), **numbers)


def _number(value: Any) -> float | None:
    """A finite float, or ``None`` (JSON has no NaN; a missing value stays missing)."""
    if value is None or isinstance(value, bool):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def expected_band(detector: LSTMAutoencoderDetector, quantile: float = BAND_QUANTILE) -> dict[str, float]:
    """Each metric's band half-width in its own units: the ``quantile`` of its absolute training errors.

    Empty for a version saved without training residuals (release 0.1.0):
    it is exported without a band rather than with a made-up one.
    """
    residuals = getattr(detector, "residuals_", None)
    if residuals is None:
        return {}
    errors = np.abs(np.asarray(residuals, dtype=np.float64))
    filled = getattr(detector, "training_filled_", None)
    if filled is not None and np.shape(filled) == errors.shape:
        errors[np.asarray(filled, dtype=bool)] = np.nan  # interpolated points say nothing about the model's fit
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a metric with no observed training point: NaN, left out
        scaled = np.nanquantile(errors, quantile, axis=0)
    units = scaled * np.abs(np.asarray(detector.scaler_.scale_, dtype=np.float64))
    return {str(m): float(u) for m, u in zip(detector.metrics_, units) if math.isfinite(float(u))}


def latest_points(scores: Scores, band: Mapping[str, float], model: str, version: str) -> list[SeriesPoint]:
    """The last scored point of each metric of ``scores``: its value, expected value, band, own score and threshold."""
    if len(scores.values.index) == 0:
        return []
    at = scores.values.index[-1]
    return [
        SeriesPoint(
            metric=metric,
            model=model,
            version=version,
            timestamp=at.isoformat(),
            value=_number(scores.values.at[at, metric]),
            expected=_number(scores.reconstruction.at[at, metric]),
            band=_number(band.get(metric)),
            score=_number(scores.metric_scores.at[at, metric]),
            threshold=_number(scores.thresholds.get(metric, scores.threshold)),
            flag=bool(scores.metric_flags.at[at, metric]),
        )
        for metric in scores.metrics
    ]


def write_latest(space: Workspace, group: str, points: Sequence[SeriesPoint]) -> None:
    """Replace the group's latest points, atomically: a reader sees the previous run's or this one's."""
    document = {"format_version": LATEST_VERSION, "model": group, "band_quantile": BAND_QUANTILE, "series": [asdict(p) for p in points]}
    atomic_write_json(space.latest_path(group), document)


def read_latest(space: Workspace) -> list[SeriesPoint]:
    """Every group's latest points; a damaged file is skipped with a warning naming it, never fatal to the others."""
    points: list[SeriesPoint] = []
    for path in space.latest_paths():
        try:
            document = read_json(path, DataError)
            points += [SeriesPoint.from_json(item) for item in document["series"]]
        except (DataError, KeyError, TypeError, ValueError) as exc:
            log.warning("skipping %s: not a latest-points file (%s)", path, exc)
    return points
