"""Each series' latest scored point, with what the model expected and a band around it.

A score run ends by keeping, per group, the last point it scored of each
metric (``scores/<group>/latest.json``): the observed value, the expected
value (the model's reconstruction, in the metric's units), the band's
half-width, the metric's score and threshold, and the model version. The
Prometheus exporter, the Pushgateway push and the Alertmanager annotations
read these small files, never the score parts.

**The band** is the metric's expected range, the one an alert needs the
metric to leave (``events.band``, see
:meth:`~anomaly.core.detector.LSTMAutoencoderDetector.expected_ranges`):
the policy's quantile (default 99%) of the version's absolute training
reconstruction errors of that metric, in the metric's units (filled points
left out). When a policy turns that gate off, the band is drawn at
:data:`BAND_QUANTILE`. A point outside it does not alert by itself: an
alert also needs the smoothed score above its threshold.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from anomaly.core.fileio import atomic_write_json, read_json
from anomaly.errors import DataError
from anomaly.io.catalogue import output_labels
from anomaly.ops.workspace import Workspace

if TYPE_CHECKING:  # only their attributes are read
    from anomaly.core.detector import LSTMAutoencoderDetector
    from anomaly.core.scoring import Scores

log = logging.getLogger(__name__)

#: The quantile of the training reconstruction errors that sets the band when the policy sets none.
BAND_QUANTILE = 0.99
#: Layout of ``latest.json``.
LATEST_VERSION = 1
#: The labels every exported series carries; a label set of the series' own can be added after them.
SERIES_LABELS = ("metric", "model", "version")
#: Labels Prometheus gives a scraped series itself (and a Pushgateway its group): a source's are renamed.
TARGET_LABELS = ("job", "instance")


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

    def labels(self, source: Mapping[str, str] | None = None) -> dict[str, str]:
        """The series' labels for Prometheus (see :data:`SERIES_LABELS`), with its own ``source`` labels added.

        A source label named like one of ours, ``job`` or ``instance`` is
        kept as ``exported_<name>``, as Prometheus renames it on a scrape
        (and a Pushgateway would refuse a ``job`` of another value); ``__``
        labels are dropped (:func:`anomaly.io.catalogue.output_labels`).
        """
        own = {"metric": self.metric, "model": self.model, "version": self.version}
        return output_labels(own, source or {}, TARGET_LABELS)

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


def expected_band(detector: LSTMAutoencoderDetector) -> dict[str, float]:
    """Each metric's band half-width in its own units: its expected range (the policy's, else :data:`BAND_QUANTILE`).

    Empty for a version saved without training residuals (release 0.1.0):
    it is exported without a band rather than with a made-up one.
    """
    scaled = detector.expected_ranges(detector.policy.events.band or BAND_QUANTILE)
    if scaled is None:
        return {}
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
    document = {"format_version": LATEST_VERSION, "model": group, "series": [asdict(p) for p in points]}
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
