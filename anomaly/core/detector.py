"""The LSTM-autoencoder detector, scikit-learn style.

Configuration goes in the constructor and is only stored there; ``fit``
learns the scaler, the model and the thresholds; ``score`` and ``detect``
use that fitted state only, never refitting, so a model trained yesterday
scores today's data (with the tail of yesterday's as ``context`` so today's
first points are covered by full windows). Learned state ends in ``_``.

Data sampled more coarsely than the model's grid is refused by ``score``
unless ``allow_resample`` (see :func:`check_intervals`): regridding it would
interpolate or leave missing most points, and those are never flagged.
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import pandas as pd
import torch

from anomaly.core.config import DetectorConfig
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
from anomaly.errors import ConfigError, DataError, NotFittedError, excerpt
from anomaly.core.events import find_events
from anomaly.core.model import LSTMAutoencoder
from anomaly.core.scaling import MAX_TRAINING_MAGNITUDE, Scaler, first_beyond_magnitude
from anomaly.core.scoring import (
    COMBINED,
    HELD,
    Scores,
    against_baseline,
    combine,
    last_observed,
    point_errors,
    reconstruct,
    smooth,
)
from anomaly.core.thresholds import Threshold, build_threshold
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

log = logging.getLogger(__name__)

DataLike = pd.DataFrame | MetricFrame | str | Path
#: How much longer (or shorter) than the model's interval a metric's own sampling interval may
#: be and still count as the same (default 10%): collectors jitter, and the median spacing
#: of real data sits a little off the nominal interval.
INTERVAL_TOLERANCE = 0.1


@dataclass(frozen=True)
class _RawScores:
    """Scores before thresholds, on the frame being scored."""

    reconstruction: np.ndarray  # (n, m) scaled units
    metric_scores: np.ndarray  # (n, m), NaN where missing
    score: np.ndarray  # (n,)
    unobserved: np.ndarray  # (n, m) filled or missing: never flagged
    carry: pd.DataFrame | None  # smoothed errors before the baseline, last settled points (see Scores.carry)


class LSTMAutoencoderDetector:
    """Detects anomalies in one or several metrics by reconstruction error.

    >>> det = LSTMAutoencoderDetector(DetectorConfig()).fit(history)   # doctest: +SKIP
    >>> events = det.detect(today, context=history)                    # doctest: +SKIP

    Fitted attributes: ``metrics_``, ``freq_``, ``scaler_``, ``model_``,
    ``history_``, ``thresholds_`` (per metric), ``combined_threshold_``,
    ``threshold_`` (its value), ``decision_scores_`` and ``labels_`` (the
    training data's combined scores and flags), ``training_data_``
    (time range and size of what it was fitted on).
    """

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config

    # -- fitting -----------------------------------------------------------------

    def fit(
        self, data: DataLike, *, callbacks: Sequence[EpochCallback] = (), progress: bool | None = None
    ) -> "LSTMAutoencoderDetector":
        """Learn scaler, model and thresholds from ``data`` (assumed mostly normal)."""
        cfg = self._checked_config()
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
        raw = self._raw_scores(frame)
        self._fit_thresholds(raw)
        self.decision_scores_ = pd.Series(raw.score, index=frame.index, name="anomaly_score")
        self.labels_ = pd.Series(
            self.combined_threshold_.apply(raw.score) & ~raw.unobserved.any(axis=1), index=frame.index
        )
        self.training_data_ = _describe_data(frame)
        return self

    def _training_frame(self, data: DataLike) -> MetricFrame:
        """The training data on its grid; a configured grid that differs from the data's own interval is logged."""
        cfg = self._checked_config().preprocess
        if cfg.freq is None or isinstance(data, MetricFrame):
            return normalise(data, cfg)
        wide = _wide(data, cfg.aggregate)
        check_intervals(wide, pd.Timedelta(cfg.freq), allow_resample=True, what="the training data")
        return normalise(wide, cfg)

    def _fit_thresholds(self, raw: _RawScores) -> None:
        """Fit one threshold per metric and one on the combined score, on observed points only."""
        cfg = self._checked_config().threshold
        clean = np.where(raw.unobserved, np.nan, raw.metric_scores)
        combined = np.where(raw.unobserved.any(axis=1), np.nan, raw.score)
        self.thresholds_: dict[str, Threshold] = {
            m: build_threshold(cfg).fit(clean[:, j]) for j, m in enumerate(self.metrics_)
        }
        self.combined_threshold_: Threshold = build_threshold(cfg).fit(combined)
        self.threshold_ = self.combined_threshold_.threshold_

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
        self._check_fitted()
        cfg = self._checked_config()
        frame = self._prepare(data, allow_resample, "the data")
        if carry is not None:
            self._check_carry(carry, frame)
        full = frame
        if context is not None:
            keep = context_points(cfg, self.freq_, carried=carry is not None)
            full = with_context(self._prepare(context, allow_resample, "the context"), frame, keep)
        require_length(full, cfg.window.size, "the data to score (with its context)")
        raw = self._raw_scores(full, carry)
        rows = slice(len(full) - len(frame), len(full))
        return self._to_scores(full, raw, rows)

    def detect(self, data: DataLike, *, context: DataLike | None = None, allow_resample: bool = False) -> pd.DataFrame:
        """Events in ``data`` (see :data:`anomaly.core.events.EVENT_COLUMNS`)."""
        return self.events(self.score(data, context=context, allow_resample=allow_resample))

    def events(self, scores: Scores, *, model: str = "", version: str = "") -> pd.DataFrame:
        """Events from already computed scores."""
        return find_events(scores, self._checked_config().events, model=model, version=version)

    def _prepare(self, data: DataLike, allow_resample: bool, what: str) -> MetricFrame:
        """Normalise onto the training grid and select the trained metrics, in order.

        A frame already on the model's grid is taken as it is; anything else has
        its metrics' own sampling intervals checked against the grid first.
        """
        cfg = self._checked_config().preprocess
        if isinstance(data, MetricFrame) and data.freq == self.freq_:
            return data.select(self.metrics_)
        wide = _wide(data, cfg.aggregate)
        trained = wide[[m for m in self.metrics_ if m in wide.columns]]
        check_intervals(trained, self.freq_, allow_resample=allow_resample, what=what)
        return normalise(wide, cfg, freq=self.freq_).select(self.metrics_)

    @property
    def carry_columns(self) -> list[str]:
        """The columns of this detector's carries: its metrics, then the combined score.

        With ``scoring.baseline_exclude``, then the same again prefixed with
        :data:`HELD`: how many points from each on stay out of the baseline
        (see :func:`anomaly.core.scoring.baseline_scores`).
        """
        columns = [*self.metrics_, COMBINED]
        scoring = self._checked_config().scoring
        if scoring.baseline and scoring.baseline_exclude is not None:
            columns += [HELD + c for c in columns]
        return columns

    def _check_carry(self, carry: pd.DataFrame, frame: MetricFrame) -> None:
        """A carry must come from a model like this one and end before the data to score."""
        expected = self.carry_columns
        if list(carry.columns) != expected or not isinstance(carry.index, pd.DatetimeIndex) or carry.empty:
            raise DataError(f"a carry needs a time index and the columns {expected}, got {list(carry.columns)}")
        if carry.index[-1] >= frame.index[0]:
            raise DataError(
                f"the carry reaches {carry.index[-1]}, but the data to score starts at {frame.index[0]}: "
                "a carry must end before the data it continues into"
            )

    def _raw_scores(self, frame: MetricFrame, carry: pd.DataFrame | None = None) -> _RawScores:
        """Errors, smoothed and measured against the baseline, for every point after the carry.

        Points the carry already covers (context that an earlier score saw)
        keep NaN scores: their smoothed errors come from the carry instead.
        """
        cfg = self._checked_config()
        scoring = cfg.scoring
        scaled = self.scaler_.transform(_model_input(frame))
        with torch_threads(cfg.training.num_threads):
            recon = reconstruct(self.model_, scaled, cfg.window, scoring, self.device_, phase=grid_phase(frame.index, frame.freq))
        missing = frame.missing.to_numpy()
        errors = point_errors(scaled, recon, scoring.error, scoring.error_power)
        errors[missing] = np.nan
        errors = np.column_stack([errors, combine(errors, scoring.combine)])
        keep = max(scoring.baseline, 1)
        past, fresh = _carried(carry, frame.index, frame.freq, keep, self.carry_columns)
        width = errors.shape[1]
        before, held = past.iloc[:, :width].to_numpy(), past.iloc[:, width:].fillna(0).to_numpy(dtype=np.int64)
        smoothed = smooth(errors[fresh:], scoring.span_points(frame.freq), start=last_observed(before))
        series, counts = np.vstack([before, smoothed]), None
        if scoring.baseline:
            series, counts = against_baseline(series, scoring, frame.freq, held if held.shape[1] else None)
        scores = np.full_like(errors, np.nan)
        scores[fresh:] = series[len(past) :]
        # the last window of points may still be reconstructed differently once later points
        # exist, so the carry stops before them and the next score smooths them again
        settled = max(len(frame) - cfg.window.size - fresh, 0)
        new_rows = smoothed[:settled]
        if counts is not None and past.shape[1] > width:  # how long each settled point keeps later ones out of the baseline
            new_rows = np.column_stack([new_rows, counts[len(past) : len(past) + settled]])
        carried = pd.concat([past, pd.DataFrame(new_rows, frame.index[fresh : fresh + settled], past.columns)])
        next_carry = carried.iloc[-keep:] if len(carried) else None
        unobserved = missing | frame.filled.to_numpy()
        return _RawScores(recon, scores[:, :-1], scores[:, -1], unobserved, next_carry)

    def _to_scores(self, frame: MetricFrame, raw: _RawScores, rows: slice) -> Scores:
        index = frame.index[rows]
        unobserved = raw.unobserved[rows]
        metric_scores = raw.metric_scores[rows]
        metric_flags = np.column_stack(
            [self.thresholds_[m].apply(metric_scores[:, j]) for j, m in enumerate(self.metrics_)]
        ) & ~unobserved
        flags = self.combined_threshold_.apply(raw.score[rows]) & ~unobserved.any(axis=1)
        cols = self.metrics_
        return Scores(
            values=frame.values.iloc[rows],
            reconstruction=pd.DataFrame(self.scaler_.inverse_transform(raw.reconstruction[rows]), index, cols),
            metric_scores=pd.DataFrame(metric_scores, index, cols),
            score=pd.Series(raw.score[rows], index, name="anomaly_score"),
            thresholds={m: t.threshold_ for m, t in self.thresholds_.items()},
            threshold=self.threshold_,
            metric_flags=pd.DataFrame(metric_flags, index, cols),
            flags=pd.Series(flags, index, name="flag"),
            filled=frame.filled.iloc[rows],
            carry=raw.carry,
        )

    # -- persistence -------------------------------------------------------------

    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to folder ``path`` (see :mod:`anomaly.core.persistence`)."""
        from anomaly.core.persistence import save_detector

        return save_detector(self, path)

    @classmethod
    def load(cls, path: str | Path) -> "LSTMAutoencoderDetector":
        """Rebuild a detector saved with :meth:`save`; nothing is unpickled."""
        from anomaly.core.persistence import load_detector

        return load_detector(path)

    # -- helpers -----------------------------------------------------------------

    def _checked_config(self) -> DetectorConfig:
        cfg = DetectorConfig() if self.config is None else self.config
        if not isinstance(cfg, DetectorConfig):
            raise ConfigError(f"config must be a DetectorConfig, got {type(cfg).__name__}")
        return cfg

    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise NotFittedError(
                "This LSTMAutoencoderDetector is not fitted yet. Call 'fit' with training data first."
            )

    def __repr__(self) -> str:
        state = f"fitted on {self.metrics_}" if hasattr(self, "model_") else "not fitted"
        return f"LSTMAutoencoderDetector({state})"


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


def _carried(
    carry: pd.DataFrame | None, index: pd.DatetimeIndex, freq: pd.Timedelta, keep: int, columns: list[str]
) -> tuple[pd.DataFrame, int]:
    """The ``keep`` grid points of carry before the first point it does not cover, and that point's row.

    Slots the carry has no value for (a gap before the data) are NaN, as a
    missing point would be in one continuous series.
    """
    if carry is None:
        return pd.DataFrame(np.empty((0, len(columns))), pd.DatetimeIndex([], tz=index.tz), columns), 0
    fresh = int(index.searchsorted(carry.index[-1], side="right"))
    grid = pd.date_range(end=index[fresh] - freq, periods=keep, freq=freq, name=index.name)
    return carry.reindex(grid), fresh


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
