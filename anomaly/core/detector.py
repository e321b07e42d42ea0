"""The LSTM-autoencoder detector, scikit-learn style.

Configuration goes in the constructor and is only stored there; ``fit``
learns the scaler, the model and the thresholds; ``score`` and ``detect``
use that fitted state only, never refitting, so a model trained yesterday
scores today's data (with the tail of yesterday's as ``context`` so today's
first points are covered by full windows). Learned state ends in ``_``.

The model and its *policy* (scoring, threshold, events) are apart:
:meth:`LSTMAutoencoderDetector.with_policy` gives the same trained model
under another policy, its thresholds refitted from the stored training
residuals, without retraining.

Data sampled more coarsely than the model's grid is refused by ``score``
unless ``allow_resample`` (see :func:`check_intervals`): regridding it would
interpolate or leave missing most points, and those are never flagged.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from anomaly.core.config import DetectorConfig, Policy
from anomaly.core.data import (
    MetricFrame,
    epoch_nanoseconds,
    grid_phase,
    infer_freq,
    normalise,
    read_table,
    require_length,
    to_wide,
    with_context,
)
from anomaly.core.events import find_events
from anomaly.core.model import LSTMAutoencoder
from anomaly.core.persistence import ModelState, build_model, read_model, save_model
from anomaly.core.reconstruction import Reconstruction, reconstruct
from anomaly.core.scaling import MAX_TRAINING_MAGNITUDE, Scaler, first_beyond_magnitude
from anomaly.core.scoring import Scorer, Scores, ScoreFrame, deviation, expected_ranges
from anomaly.core.thresholds import FittedThresholds, build_threshold
from anomaly.core.training import (
    RNG_LOCK,
    EpochCallback,
    History,
    kept_rng,
    resolve_device,
    split_train_validation,
    torch_threads,
    train_model,
)
from anomaly.core.windows import MAX_MISSING_FRACTION, missing_counts, sliding_windows, training_starts
from anomaly.errors import ConfigError, DataError, ModelFileError, NotFittedError, excerpt

log = logging.getLogger(__name__)

DataLike = pd.DataFrame | MetricFrame | str | Path
#: How much longer (or shorter) than the model's interval a metric's own sampling interval may
#: be and still count as the same (default 10%): collectors jitter, and the median spacing
#: of real data sits a little off the nominal interval.
INTERVAL_TOLERANCE = 0.1


class LSTMAutoencoderDetector:
    """Detects anomalies in one or several metrics by reconstruction error.

    >>> det = LSTMAutoencoderDetector(DetectorConfig()).fit(history)   # doctest: +SKIP
    >>> events = det.detect(today, context=history)                    # doctest: +SKIP

    Fitted attributes: ``metrics_``, ``freq_``, ``scaler_``, ``model_``,
    ``history_``, ``thresholds_`` (per metric and combined), ``threshold_``
    (the combined one's value), ``training_data_`` (time range and size of
    what it was fitted on), ``residuals_`` (the training reconstruction's
    residuals, from which another policy's thresholds are fitted), and after
    ``fit`` ``decision_scores_`` and ``labels_`` (the training data's
    combined scores and flags).
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config

    # -- fitting -----------------------------------------------------------------

    def fit(
        self, data: DataLike, *, callbacks: Sequence[EpochCallback] = (), progress: bool | None = None
    ) -> "LSTMAutoencoderDetector":
        """Learn scaler, model and thresholds from ``data`` (assumed mostly normal)."""
        cfg = self.get_config()
        frame = self._training_frame(data)
        require_length(frame, cfg.window.size, "the training data")
        _check_magnitudes(frame)
        self.metrics_ = frame.metrics
        self.freq_ = frame.freq
        self.scaler_ = Scaler(cfg.preprocess.scaler).fit(frame.values.to_numpy())
        scaled = self.scaler_.transform(_model_input(frame))
        missing = frame.missing.to_numpy()
        starts = training_starts(len(frame), cfg.window, missing.any(axis=1))
        if len(starts) == 0:
            raise DataError(
                f"no training window of {cfg.window.size} points with at most {MAX_MISSING_FRACTION:.0%} of them "
                f"missing: the training data has {int(missing.any(axis=1).sum())} missing points of {len(frame)} "
                f"on its {_duration(frame.freq)} grid"
            )
        # windows with missing points (see training_starts) learn from their observed points only
        gappy = missing_counts(starts, cfg.window.size, missing.any(axis=1)).any()
        observed = sliding_windows(~missing, cfg.window.size) if gappy else None
        train, val = split_train_validation(starts, cfg.window.size, cfg.training.validation_fraction)
        self.device_ = resolve_device(cfg.training.device)
        # seeding and drawing the initial weights must not interleave with another thread's fit
        with RNG_LOCK, kept_rng():
            torch.manual_seed(cfg.training.seed)
            self.model_ = LSTMAutoencoder(len(self.metrics_), cfg.model)
        with kept_rng():
            self.history_: History = train_model(
                self.model_,
                sliding_windows(scaled, cfg.window.size),
                train,
                val,
                cfg.training,
                callbacks,
                progress=progress,
                observed=observed,
            )
        recon = self.reconstruct(frame)
        self.training_data_ = _describe_data(frame)
        self.residuals_ = recon.residuals()
        self.training_filled_ = recon.filled
        training, _ = Scorer(cfg.scoring).score(recon)
        self.thresholds_ = FittedThresholds.fit(cfg.threshold, training)
        flags = self.thresholds_.flags(training)[1]
        self.decision_scores_ = pd.Series(training.score, index=frame.index, name="anomaly_score")
        self.labels_ = pd.Series(flags, index=frame.index)
        return self

    def _training_frame(self, data: DataLike) -> MetricFrame:
        """The training data on its grid; a configured grid that differs from the data's own interval is logged."""
        cfg = self.get_config().preprocess
        if cfg.freq is None or isinstance(data, MetricFrame):
            return normalise(data, cfg)
        wide = _wide(data, cfg.aggregate)
        check_intervals(wide, pd.Timedelta(cfg.freq), allow_resample=True, what="the training data")
        return normalise(wide, cfg)

    @property
    def threshold_(self) -> float:
        """The combined score's threshold."""
        return self.thresholds_.value

    # -- the policy ----------------------------------------------------------------

    @property
    def policy(self) -> Policy:
        """The scoring, threshold and events settings this detector scores with."""
        return self.get_config().policy

    def with_policy(self, policy: Policy) -> "LSTMAutoencoderDetector":
        """This trained model under ``policy``: the same weights and scaler, thresholds refitted.

        A fitted threshold (anything but ``fixed``) is refitted on the
        training residuals kept with the model, so a policy change takes
        effect without retraining; a model saved before residuals were kept
        can only take a ``fixed`` threshold under a new policy.
        """
        self.check_fitted()
        if policy == self.policy:
            return self
        other = LSTMAutoencoderDetector(self.get_config().with_policy(policy))
        for name, value in vars(self).items():
            if name.endswith("_") and name not in {"thresholds_", "decision_scores_", "labels_"}:
                setattr(other, name, value)
        needs_scores = build_threshold(policy.threshold).needs_scores
        if needs_scores and self.residuals_ is None:
            raise ModelFileError(
                f"this model was saved before training residuals were kept, so its {policy.threshold.method!r} "
                "threshold cannot be refitted under a new policy: retrain it, or use threshold.method 'fixed'"
            )
        recon = self.training_reconstruction()
        scores = Scorer(policy.scoring).score(recon)[0] if needs_scores and recon is not None else _no_scores(self.metrics_)
        other.thresholds_ = FittedThresholds.fit(policy.threshold, scores)
        return other

    def training_reconstruction(self) -> Reconstruction | None:
        """The training data's reconstruction as far as scoring can tell, rebuilt from the stored residuals."""
        if self.residuals_ is None:
            return None
        data = self.training_data_
        index = pd.date_range(pd.Timestamp(data["start"]), periods=int(data["rows"]), freq=self.freq_, name="timestamp")
        return Reconstruction.from_residuals(index, self.freq_, tuple(self.metrics_), self.residuals_, self.training_filled_)

    def expected_ranges(self, band: float | None = None) -> np.ndarray | None:
        """Each metric's expected range (± around the reconstruction, scaled units): ``band`` or the policy's ``events.band``.

        None when neither sets a band or the model keeps no training
        residuals (saved before they were kept): the score alone decides then.
        """
        band = band if band is not None else self.policy.events.band
        if band is None or self.residuals_ is None:
            return None
        ranges = expected_ranges(self.residuals_, np.isnan(self.residuals_) | self.training_filled_, band)
        return ranges if np.isfinite(ranges).any() else None

    def training_deviation(self) -> pd.Series | None:
        """The training data's :func:`~anomaly.core.scoring.deviation` (None without ranges): what batch events are gated on."""
        ranges = self.expected_ranges()
        recon = self.training_reconstruction()
        if ranges is None or recon is None:
            return None
        return pd.Series(deviation(recon.residuals(), recon.unobserved, ranges), recon.index, name="deviation")

    # -- scoring -----------------------------------------------------------------

    def score(
        self,
        data: DataLike,
        *,
        context: DataLike | None = None,
        carry: pd.DataFrame | None = None,
        allow_resample: bool = False,
    ) -> Scores:
        """Score every point of ``data`` with the fitted state; ``context`` is earlier history.

        With context, the first points of ``data`` are scored with full windows
        reaching back into it; only ``data``'s own points are returned.
        ``carry`` is the ``Scores.carry`` of this model's previous score, which
        must end before ``data`` starts: smoothing and baseline continue from
        it, so the context need only cover the windows, not the baseline.
        A metric sampled more coarsely than the model's grid is refused unless
        ``allow_resample`` (see :func:`check_intervals`).
        """
        self.check_fitted()
        cfg = self.get_config()
        frame = self._prepare(data, allow_resample, "the data")
        if carry is not None and len(carry) and carry.index[-1] >= frame.index[0]:
            raise DataError(
                f"the carry reaches {carry.index[-1]}, but the data to score starts at {frame.index[0]}: "
                "a carry must end before the data it continues into"
            )
        full = frame
        if context is not None:
            keep = context_points(cfg, self.freq_, carried=carry is not None)
            full = with_context(self._prepare(context, allow_resample, "the context"), frame, keep)
        require_length(full, cfg.window.size, "the data to score (with its context)")
        recon = self.reconstruct(full)
        frame_scores, next_carry = Scorer(cfg.scoring).score(recon, carry, unsettled=cfg.window.size)
        return self._to_scores(full, recon, frame_scores, next_carry, len(full) - len(frame))

    def reconstruct(self, frame: MetricFrame) -> Reconstruction:
        """The model's reconstruction of a frame already on its grid (see :meth:`score` for raw data)."""
        self.check_fitted()
        cfg = self.get_config()
        scaled = self.scaler_.transform(_model_input(frame))
        with torch_threads(cfg.training.num_threads):
            rebuilt = reconstruct(self.model_, scaled, cfg.window, self.device_, phase=grid_phase(frame.index, frame.freq))
        return Reconstruction(
            frame.index, frame.freq, tuple(frame.metrics), scaled, rebuilt, frame.missing.to_numpy(), frame.filled.to_numpy()
        )

    def detect(self, data: DataLike, *, context: DataLike | None = None, allow_resample: bool = False) -> pd.DataFrame:
        """Events in ``data`` (see :data:`anomaly.core.events.EVENT_COLUMNS`)."""
        return self.events(self.score(data, context=context, allow_resample=allow_resample))

    def events(self, scores: Scores, *, model: str = "", version: str = "") -> pd.DataFrame:
        """Events from already computed scores."""
        policy = self.policy
        return find_events(scores, policy.events, model=model, version=version, lookback=policy.lookback(self.freq_))

    def _prepare(self, data: DataLike, allow_resample: bool, what: str) -> MetricFrame:
        """Normalise onto the training grid and select the trained metrics, in order.

        A frame already on the model's grid is taken as it is; anything else has
        its metrics' own sampling intervals checked against the grid first.
        """
        cfg = self.get_config().preprocess
        if isinstance(data, MetricFrame) and data.freq == self.freq_:
            return data.select(self.metrics_)
        wide = _wide(data, cfg.aggregate)
        trained = wide[[m for m in self.metrics_ if m in wide.columns]]
        check_intervals(trained, self.freq_, allow_resample=allow_resample, what=what)
        return normalise(wide, cfg, freq=self.freq_).select(self.metrics_)

    @property
    def carry_columns(self) -> list[str]:
        """The columns of this detector's carries (see :meth:`anomaly.core.scoring.Scorer.carry_columns`)."""
        return Scorer(self.get_config().scoring).carry_columns(self.metrics_)

    def _to_scores(
        self, frame: MetricFrame, recon: Reconstruction, scores: ScoreFrame, carry: pd.DataFrame | None, first: int
    ) -> Scores:
        """The public :class:`Scores` of rows ``first:`` (the data's own, after its context)."""
        rows = slice(first, len(frame))
        units = pd.DataFrame(self.scaler_.inverse_transform(recon.reconstructed[rows]), frame.index[rows], self.metrics_)
        out = self.thresholds_.apply(
            scores, rows, values=frame.values.iloc[rows], reconstruction=units, filled=frame.filled.iloc[rows], carry=carry
        )
        ranges = self.expected_ranges()
        if ranges is None:
            return out
        far = deviation(recon.residuals()[rows], recon.unobserved[rows], ranges)
        return dataclasses.replace(out, deviation=pd.Series(far, frame.index[rows], name="deviation"))

    # -- persistence -------------------------------------------------------------

    def to_state(self) -> ModelState:
        """The fitted detector as plain values (what a model folder holds)."""
        self.check_fitted()
        return ModelState(
            config=self.get_config(),
            metrics=list(self.metrics_),
            freq=self.freq_,
            scaler=self.scaler_,
            thresholds=self.thresholds_,
            training_data=self.training_data_,
            history=self.history_,
            weights=self.model_.state_dict(),
            residuals=self.residuals_,
            filled=self.training_filled_,
        )

    @classmethod
    def from_state(cls, state: ModelState) -> "LSTMAutoencoderDetector":
        """A fitted detector from :meth:`to_state`'s record (as read from a model folder)."""
        detector = cls(state.config)
        detector.metrics_ = list(state.metrics)
        detector.freq_ = state.freq
        detector.scaler_ = state.scaler
        detector.thresholds_ = state.thresholds
        detector.training_data_ = state.training_data
        detector.history_ = state.history
        detector.residuals_ = state.residuals
        detector.training_filled_ = state.filled
        detector.device_ = resolve_device(state.config.training.device)
        detector.model_ = build_model(state, detector.device_)
        return detector

    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to folder ``path`` (see :mod:`anomaly.core.persistence`)."""
        return save_model(self.to_state(), path)

    @classmethod
    def load(cls, path: str | Path) -> "LSTMAutoencoderDetector":
        """Rebuild a detector saved with :meth:`save`; nothing is unpickled."""
        return cls.from_state(read_model(path))

    # -- helpers -----------------------------------------------------------------

    def get_config(self) -> DetectorConfig:
        """The configuration in use: the one given, else the defaults."""
        cfg = DetectorConfig() if self.config is None else self.config
        if not isinstance(cfg, DetectorConfig):
            raise ConfigError(f"config must be a DetectorConfig, got {type(cfg).__name__}")
        return cfg

    @property
    def is_fitted(self) -> bool:
        return hasattr(self, "model_")

    def check_fitted(self) -> None:
        """Raise :class:`NotFittedError` unless ``fit`` (or a load) has run."""
        if not self.is_fitted:
            raise NotFittedError(
                "This LSTMAutoencoderDetector is not fitted yet. Call 'fit' with training data first."
            )

    def __repr__(self) -> str:
        state = f"fitted on {self.metrics_}" if self.is_fitted else "not fitted"
        return f"LSTMAutoencoderDetector({state})"


def _no_scores(metrics: Sequence[str]) -> ScoreFrame:
    """An empty score frame: what a threshold that reads no scores is fitted on."""
    empty = np.empty((0, len(metrics)))
    return ScoreFrame(pd.DatetimeIndex([], tz="UTC"), tuple(metrics), empty, np.empty(0), empty.astype(bool))


def check_intervals(
    wide: pd.DataFrame, freq: pd.Timedelta, *, allow_resample: bool = False, what: str = "the data"
) -> None:
    """Compare each metric's own sampling interval with a model's grid ``freq``, before regridding.

    A metric's interval is the median spacing of its observed timestamps
    (:func:`anomaly.core.data.infer_freq`), so jitter and outages do not move it.
    One more than :data:`INTERVAL_TOLERANCE` coarser than the grid would
    leave most grid points interpolated (never flagged) or missing (never
    scored): that is a DataError unless ``allow_resample``, which logs a
    warning instead. A finer one is averaged onto the grid (``preprocess.aggregate``),
    which can dilute a short spike: a warning. Metrics with fewer than two
    timestamps have no interval and pass.
    """
    for metric in wide.columns:
        stamps = pd.DatetimeIndex(wide.index[wide[metric].notna().to_numpy()])
        if stamps.nunique() < 2:
            continue
        own = infer_freq(stamps)
        name, model = excerpt(str(metric)), _duration(freq)
        if own > freq * (1 + INTERVAL_TOLERANCE):
            if not allow_resample:
                raise DataError(
                    f"metric {name} in {what} is sampled every {_duration(own)}, coarser than the model's "
                    f"{model} grid: most points would be interpolated or missing, and those are never flagged; "
                    f"resample it to {model}, use a model trained on it, or allow it (allow_resample=True, "
                    "anomaly detect --allow-resample)"
                )
            log.warning("metric %s in %s is sampled every %s, coarser than the model's %s grid: "
                        "scoring it resampled (allowed)", name, what, _duration(own), model)
        elif own * (1 + INTERVAL_TOLERANCE) < freq:
            log.warning("metric %s in %s is sampled every %s, finer than the model's %s grid: "
                        "its points are aggregated onto the grid", name, what, _duration(own), model)


def _duration(step: pd.Timedelta) -> str:
    """A sampling interval as a person writes it: ``15min``, ``1h``, ``90s``, ``1D``."""
    for unit, size in (("D", "1D"), ("h", "1h"), ("min", "1min"), ("s", "1s")):
        count, rest = divmod(step, pd.Timedelta(size))
        if count and not rest:
            return f"{count}{unit}"
    return str(step)


def _wide(data: DataLike, aggregate: str) -> pd.DataFrame:
    """Any input as a wide frame on its own timestamps (a MetricFrame: its observed points)."""
    if isinstance(data, MetricFrame):
        return data.values.where(~data.filled).dropna(how="all")
    return to_wide(read_table(data) if isinstance(data, (str, Path)) else data, aggregate)


def _check_magnitudes(frame: MetricFrame) -> None:
    """Observed training values must lie within ±MAX_TRAINING_MAGNITUDE: name the first that does not."""
    beyond = first_beyond_magnitude(frame.values.where(~frame.filled).to_numpy(dtype=np.float64))
    if beyond is not None:
        row, col = beyond
        raise DataError(
            f"metric {excerpt(frame.metrics[col])} has the value {frame.values.iat[row, col]:g} at "
            f"{frame.index[row]} in the training data, beyond ±{MAX_TRAINING_MAGNITUDE:g} (the most the scaler "
            "can represent): a sentinel or an overflowed counter, not a level; drop it or make it missing (NaN)"
        )


def context_points(config: DetectorConfig, freq: pd.Timedelta, *, carried: bool = False) -> int:
    """Earlier points a score needs on a ``freq`` grid: full windows, the smoothing's memory and the baseline.

    With a carry from the previous score (``carried``) only the windows are
    needed: the smoothing and the baseline continue from the carry.
    """
    scoring = config.scoring
    windows = 2 * config.window.size
    return windows if carried else windows + 10 * scoring.span_points(freq) + scoring.baseline


def _model_input(frame: MetricFrame) -> np.ndarray:
    """Values with long gaps bridged so windows can run; those points are masked later."""
    return frame.values.ffill().bfill().to_numpy(dtype=np.float64)


def _describe_data(frame: MetricFrame) -> dict[str, Any]:
    """Time range, size and content hash of the data, recorded with the fitted model.

    The hash covers the grid timestamps, the metric names and the values as
    normalised, so two training runs on the same data share a fingerprint
    whatever file format or row order it came in.
    """
    digest = hashlib.sha256()
    digest.update(json.dumps(frame.metrics).encode())
    digest.update(np.ascontiguousarray(epoch_nanoseconds(frame.index)).tobytes())
    digest.update(np.ascontiguousarray(frame.values.to_numpy(dtype=np.float64)).tobytes())
    return {
        "start": frame.index[0].isoformat(),
        "end": frame.index[-1].isoformat(),
        "rows": len(frame),
        "freq_seconds": frame.freq / pd.Timedelta("1s"),
        "metrics": frame.metrics,
        "sha256": digest.hexdigest(),
    }
