"""A series scored as it arrives, chunk by chunk: what the scheduled score runs and the stream benchmark share.

One :func:`score_step` scores a chunk of new points with a fitted detector
(continuing the previous chunk's carry when the same model and scoring made
it) and advances the :class:`~anomaly.core.events.AlertTracker` over the
chunk's flags. The score flow runs one step per group per run; the stream
benchmark runs one per chunk of a file. Both therefore raise the same alerts
from the same data: the benchmark measures what users get.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import pandas as pd

from anomaly.core.data import MetricFrame
from anomaly.core.detector import DataLike, LSTMAutoencoderDetector
from anomaly.core.events import AlertTracker, TrackerState
from anomaly.core.scoring import Scores


@dataclass(frozen=True)
class StreamState:
    """What a chunk leaves for the next: the scorer's carry (and what made it) and the alert tracker's state."""

    carry: pd.DataFrame | None = None
    carry_key: str | None = None
    tracker: TrackerState = TrackerState()


@dataclass(frozen=True)
class StepResult:
    """One chunk's scores, the alert rows it touched, and the state for the next chunk."""

    scores: Scores
    alerts: pd.DataFrame
    state: StreamState


def carry_key(detector: LSTMAutoencoderDetector, version: str) -> str:
    """What a carry is valid for: the model version and the scoring that smoothed it."""
    scoring = json.dumps(detector.get_config().scoring.__dict__, sort_keys=True, default=str)
    return f"{version}:{hashlib.sha256(scoring.encode()).hexdigest()[:12]}"


def score_step(
    detector: LSTMAutoencoderDetector,
    new: DataLike,
    *,
    context: MetricFrame | pd.DataFrame | None = None,
    state: StreamState = StreamState(),
    model: str = "",
    version: str = "",
    allow_resample: bool = False,
) -> StepResult:
    """Score ``new`` after ``context`` and follow its flags into alerts.

    ``state.carry`` is used only when it was made by this version under this
    scoring (:func:`carry_key`); otherwise the context must cover the
    smoothing and the baseline too (see
    :func:`anomaly.core.detector.context_points`). The tracker's state (an
    open alert, the metric's last point outside its range) continues
    whatever model scores the chunk.
    """
    key = carry_key(detector, version)
    carry = state.carry if state.carry_key == key else None
    scores = detector.score(new, context=context, carry=carry, allow_resample=allow_resample)
    policy = detector.policy
    tracker = AlertTracker(policy.events, detector.freq_, model=model, version=version, lookback=policy.lookback(detector.freq_))
    alerts, tracked = tracker.advance(scores, state.tracker)
    return StepResult(scores, alerts, StreamState(scores.carry, key, tracked))
