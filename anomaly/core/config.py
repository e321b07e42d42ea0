"""Typed configuration for the detector.

One frozen dataclass per concern (preprocessing, windows, model, training,
scoring, threshold, events), grouped in :class:`DetectorConfig`. Every section
checks its own fields in ``__post_init__`` so a bad value is reported with the
field's dotted name and the value received, whether it came from Python, YAML
or JSON. ``to_dict``/``from_dict`` round-trip through plain JSON types, which is
how a saved model records exactly what it was built with.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence, TypeVar, get_args, get_origin, get_type_hints

import yaml

from anomaly.errors import ConfigError, excerpt

if TYPE_CHECKING:  # pandas is imported where it is used: the command line starts without it
    import pandas as pd

T = TypeVar("T")

ScalerKind = Literal["minmax", "standard", "robust"]
AggregateKind = Literal["mean", "median", "max", "min", "sum", "last"]
FillMethod = Literal["linear", "ffill"]
ReconAggregate = Literal["median", "mean", "last"]
ErrorKind = Literal["power", "abs", "squared"]
CombineKind = Literal["mean", "max"]
ThresholdMethod = Literal["quantile", "sigma", "mad", "dynamic", "spot", "fixed"]
DeviceKind = Literal["auto", "cpu", "cuda"]
ScheduleKind = Literal["constant", "one_cycle"]


def _fail(section: str, name: str, expected: str, value: Any) -> None:
    raise ConfigError(f"{section}.{name} must be {expected}, got {value!r}")


def _check_int(section: str, name: str, value: Any, minimum: int, maximum: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        _fail(section, name, f"an integer >= {minimum}", value)
    if maximum is not None and value > maximum:
        _fail(section, name, f"an integer <= {maximum:,}", value)


# Upper bounds no real use reaches. They exist so a typo in ``--set`` or a hostile
# saved config.json is refused by name before anything is allocated, not after
# minutes of swapping: the default model has about 27,000 parameters and windows of 48.
MAX_LAYER_SIZE = 4096  # model.hidden_size and model.latent_size
MAX_LAYERS = 16  # model.num_layers
MAX_PARAMETERS = 100_000_000  # about 400 MB of float32 weights, before the optimiser's copies
MAX_WINDOW = 10_000  # window.size: a week of 1-minute points
MAX_TRAIN_WINDOWS = 10_000_000  # window.max_train_windows
MAX_BATCH = 65_536  # training.batch_size and window.score_batch_size
MAX_EPOCHS = 100_000  # training.epochs and training.patience
MAX_SEED = 2**63 - 1  # the largest seed torch accepts
MAX_THREADS = 1024  # training.num_threads


def _check_float(
    section: str, name: str, value: Any, low: float, high: float = math.inf, *, open_low: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    ok = ok and (value > low if open_low else value >= low) and value <= high
    if not ok:
        bound = f"> {low}" if open_low else f">= {low}"
        upper = "" if high == math.inf else f" and <= {high}"
        _fail(section, name, f"a finite number {bound}{upper}", value)


def _check_choice(section: str, name: str, value: Any, kind: Any) -> None:
    choices = get_args(kind)
    if value not in choices:
        _fail(section, name, "one of " + ", ".join(repr(c) for c in choices), value)


@dataclass(frozen=True)
class PreprocessConfig:
    """How raw points become a regular grid with a mask of what was really observed."""

    #: Grid interval as a pandas alias ("1min", "5min", "1h"); null infers it from the median spacing.
    freq: str | None = None
    #: How several readings in one grid slot (or duplicate timestamps) are combined.
    aggregate: AggregateKind = "mean"
    #: Interior gaps of at most this many points are filled (and never flagged); longer ones stay missing.
    fill_limit: int = 3
    #: How a short gap is filled: linear in time, or the last reading carried forward.
    fill_method: FillMethod = "linear"
    #: Per-metric scaling fitted on training data: minmax to [-1, 1], standard, or robust (median/IQR).
    scaler: ScalerKind = "minmax"

    def __post_init__(self) -> None:
        s = "preprocess"
        if self.freq is not None and not _is_positive_duration(self.freq, alias=True):
            _fail(s, "freq", "a fixed positive pandas frequency such as '1min' or '5min'", self.freq)
        _check_choice(s, "aggregate", self.aggregate, AggregateKind)
        _check_int(s, "fill_limit", self.fill_limit, 0)
        _check_choice(s, "fill_method", self.fill_method, FillMethod)
        _check_choice(s, "scaler", self.scaler, ScalerKind)


@dataclass(frozen=True)
class WindowConfig:
    """Sliding windows, for training and for reconstructing data to score."""

    #: Points per window: the context the autoencoder sees and rebuilds at once.
    size: int = 48
    #: Training takes a window every this many points (widened to respect ``max_train_windows``).
    train_stride: int = 1
    #: Scoring reconstructs a window every this many points; each point is rebuilt about size/stride times.
    score_stride: int = 10
    #: Most windows one fit trains on: bounds training time whatever the history's length.
    max_train_windows: int | None = 2_000
    #: How a point's overlapping reconstructions combine: median or mean; or ``last``, the one
    #: window ending at the point (causal: its score never depends on later points).
    aggregate: ReconAggregate = "median"
    #: Windows reconstructed per forward pass when scoring (memory, not results).
    score_batch_size: int = 256

    def __post_init__(self) -> None:
        s = "window"
        _check_int(s, "size", self.size, 2, MAX_WINDOW)
        _check_int(s, "train_stride", self.train_stride, 1)
        _check_int(s, "score_stride", self.score_stride, 1)
        if self.score_stride > self.size:
            _fail(s, "score_stride", f"<= window.size ({self.size})", self.score_stride)
        if self.max_train_windows is not None:
            _check_int(s, "max_train_windows", self.max_train_windows, 1, MAX_TRAIN_WINDOWS)
        _check_choice(s, "aggregate", self.aggregate, ReconAggregate)
        _check_int(s, "score_batch_size", self.score_batch_size, 1, MAX_BATCH)


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the LSTM autoencoder (see :mod:`anomaly.core.model`)."""

    #: LSTM units per layer, in the encoder and the decoder.
    hidden_size: int = 32
    #: Numbers in the code a window is squeezed through: smaller forgets more of what is unusual.
    latent_size: int = 8
    #: Stacked LSTM layers in the encoder and in the decoder.
    num_layers: int = 2
    #: Whether the encoder also reads each window backwards.
    bidirectional: bool = False
    #: Dropout between layers, on the code and on the decoder's output, while training only.
    dropout: float = 0.1

    def __post_init__(self) -> None:
        s = "model"
        _check_int(s, "hidden_size", self.hidden_size, 1, MAX_LAYER_SIZE)
        _check_int(s, "latent_size", self.latent_size, 1, MAX_LAYER_SIZE)
        _check_int(s, "num_layers", self.num_layers, 1, MAX_LAYERS)
        if not isinstance(self.bidirectional, bool):
            _fail(s, "bidirectional", "true or false", self.bidirectional)
        _check_float(s, "dropout", self.dropout, 0.0, 0.95)
        parameters = self.parameter_count(1)
        if parameters > MAX_PARAMETERS:
            raise ConfigError(
                f"model.hidden_size {self.hidden_size}, latent_size {self.latent_size} and num_layers "
                f"{self.num_layers} make {parameters:,} parameters, more than the {MAX_PARAMETERS:,} allowed"
            )

    def parameter_count(self, n_features: int) -> int:
        """Weights and biases of the autoencoder for ``n_features`` metrics, computed without building it."""
        directions = 2 if self.bidirectional else 1
        hidden, latent = self.hidden_size, self.latent_size

        def lstm(inputs: int, dirs: int) -> int:  # per layer and direction: 4 gates of W_ih, W_hh, b_ih, b_hh
            first = 4 * hidden * (inputs + hidden + 2)
            rest = 4 * hidden * (hidden * dirs + hidden + 2)
            return dirs * (first + (self.num_layers - 1) * rest)

        to_latent = hidden * directions * latent + latent
        head = hidden * n_features + n_features
        return lstm(n_features, directions) + to_latent + lstm(latent, 1) + head


@dataclass(frozen=True)
class TrainingConfig:
    """Adam on the reconstruction's MSE, with early stopping on a time-ordered validation split."""

    #: Most passes over the training windows.
    epochs: int = 12
    #: Windows per optimisation step.
    batch_size: int = 64
    #: The rate (the peak of a one-cycle schedule).
    learning_rate: float = 1e-2
    #: The newest share of windows held out for validation (no training window overlaps them).
    validation_fraction: float = 0.2
    #: Epochs without improvement on validation before stopping (the best weights are kept).
    patience: int = 5
    #: Improvement in validation loss that counts as one.
    min_delta: float = 0.0
    #: Gradient norm clip: keeps one odd batch from wrecking the weights.
    grad_clip: float = 1.0
    #: Seed of the initial weights and the shuffling: the same data and seed train the same model.
    seed: int = 0
    #: Where to train: auto uses a GPU when there is one.
    device: DeviceKind = "auto"
    #: Torch threads for training and scoring (null leaves torch's setting); set it when fits run side by side.
    num_threads: int | None = None
    #: The learning rate's course: ``constant``, or ``one_cycle`` (warm up over 30% of the steps, then anneal),
    #: which reaches a given loss in fewer epochs.
    schedule: ScheduleKind = "one_cycle"

    def __post_init__(self) -> None:
        s = "training"
        _check_int(s, "epochs", self.epochs, 1, MAX_EPOCHS)
        _check_int(s, "batch_size", self.batch_size, 1, MAX_BATCH)
        _check_float(s, "learning_rate", self.learning_rate, 0.0, open_low=True)
        _check_float(s, "validation_fraction", self.validation_fraction, 0.0, 0.5)
        _check_int(s, "patience", self.patience, 1, MAX_EPOCHS)
        _check_float(s, "min_delta", self.min_delta, 0.0)
        _check_float(s, "grad_clip", self.grad_clip, 0.0, open_low=True)
        _check_int(s, "seed", self.seed, 0, MAX_SEED)
        _check_choice(s, "device", self.device, DeviceKind)
        _check_choice(s, "schedule", self.schedule, ScheduleKind)
        if self.num_threads is not None:
            _check_int(s, "num_threads", self.num_threads, 1, MAX_THREADS)


@dataclass(frozen=True)
class ScoringConfig:
    """How reconstruction errors become per-point scores: error, combine, smooth, baseline (a policy section)."""

    #: Point-wise error in scaled units: |d| raised to ``error_power`` (``power``), or ``abs`` / ``squared``.
    #: A power above 1 lets one large miss count for more than several small ones.
    error: ErrorKind = "power"
    #: The exponent of ``error: power``.
    error_power: float = 1.5
    #: How several metrics' errors make one score: their mean or their max.
    combine: CombineKind = "mean"
    #: Smoothing span in points (0 for none); set this or ``smoothing_time``, the other null.
    smoothing_span: int | None = None
    #: Smoothing span as a duration, turned into points of each series' own interval (causal EWMA).
    smoothing_time: str | None = "600min"
    #: Points of recent scores the score is measured against (0 for none): the score is then how many
    #: of their standard deviations a point sits above their mean, so drifting error levels do not fire.
    baseline: int = 1000
    #: Least standard deviation of a baseline, in scaled units: a perfect fit must not turn rounding into alerts.
    baseline_floor: float = 1e-3
    #: Points scoring above this many σ stay out of later baselines (null for none), so one large
    #: event does not hide the next.
    baseline_exclude: float | None = 4.5
    #: How long after such a point the following points stay out too (the smoothed error decays).
    baseline_hold: str | None = "1000min"
    #: No score until the baseline holds this much history, so the first bursts of a quiet start do not alert.
    baseline_warmup: str | None = "36h"

    def __post_init__(self) -> None:
        s = "scoring"
        _check_choice(s, "error", self.error, ErrorKind)
        _check_float(s, "error_power", self.error_power, 0.0, 8.0, open_low=True)
        _check_choice(s, "combine", self.combine, CombineKind)
        if self.smoothing_span is not None:
            _check_int(s, "smoothing_span", self.smoothing_span, 0)
        if self.smoothing_time is not None and not _is_positive_duration(self.smoothing_time):
            _fail(s, "smoothing_time", "a positive duration such as '600min' or '3h'", self.smoothing_time)
        if self.smoothing_span is not None and self.smoothing_time is not None:
            raise ConfigError(
                f"scoring.smoothing_span ({self.smoothing_span!r}) and scoring.smoothing_time "
                f"({self.smoothing_time!r}) are both set; set one and the other to null"
            )
        _check_int(s, "baseline", self.baseline, 0)
        if self.baseline == 1:
            _fail(s, "baseline", "0 (none) or at least 2 points", self.baseline)
        _check_float(s, "baseline_floor", self.baseline_floor, 0.0, open_low=True)
        if self.baseline_exclude is not None:
            _check_float(s, "baseline_exclude", self.baseline_exclude, 0.0, open_low=True)
        for name in ("baseline_hold", "baseline_warmup"):
            value = getattr(self, name)
            if value is not None and not _is_positive_duration(value):
                _fail(s, name, "null or a positive duration such as '1000min' or '36h'", value)

    def span_points(self, freq: Any) -> int:
        """The smoothing span in points of a series sampled every ``freq`` (a Timedelta)."""
        if self.smoothing_time is None:
            return self.smoothing_span or 0
        import pandas as pd

        return max(1, round(pd.Timedelta(self.smoothing_time) / pd.Timedelta(freq)))

    def hold_points(self, freq: Any) -> int:
        """``baseline_hold`` in points of a series sampled every ``freq`` (0 for none)."""
        return _points(self.baseline_hold, freq)

    def warmup_points(self, freq: Any) -> int:
        """``baseline_warmup`` in points of a series sampled every ``freq`` (0 for none)."""
        return _points(self.baseline_warmup, freq)


def _points(duration: str | None, freq: Any) -> int:
    """How many points of a ``freq`` grid a duration spans, rounded (0 for None)."""
    import pandas as pd

    return 0 if duration is None else round(pd.Timedelta(duration) / pd.Timedelta(freq))


def _is_positive_duration(text: Any, *, alias: bool = False) -> bool:
    """Whether ``text`` is a string pandas reads as a positive duration ("200min", "3h").

    With ``alias`` it must be a fixed frequency alias (``to_offset``), which
    refuses calendar frequencies such as month ends.
    """
    import pandas as pd

    if not isinstance(text, str):
        return False
    try:
        value = pd.Timedelta(pd.tseries.frequencies.to_offset(text)) if alias else pd.Timedelta(text)
    except (ValueError, TypeError):
        return False
    return bool(value > pd.Timedelta(0))


@dataclass(frozen=True)
class ThresholdConfig:
    """Where a score becomes a flag (a policy section).

    ``fixed`` is ``k`` itself, for baseline scores ("k σ above the recent
    baseline"); the others are fitted on the training scores: ``quantile``,
    ``sigma`` (mean + kσ), ``mad`` (median + k·1.4826·MAD), ``dynamic``
    (Hundman et al., KDD 2018) and ``spot`` (peaks over threshold, Siffer
    et al., KDD 2017).
    """

    #: fixed, quantile, sigma, mad, dynamic or spot.
    method: ThresholdMethod = "fixed"
    #: The training scores' quantile (``quantile``).
    quantile: float = 0.99
    #: σ above the baseline (``fixed``), or the multiplier of ``sigma`` and ``mad``.
    k: float = 4.5
    #: The smallest z ``dynamic`` tries.
    z_min: float = 2.0
    #: The largest z ``dynamic`` tries.
    z_max: float = 10.0
    #: The step between the z values ``dynamic`` tries.
    z_step: float = 0.5
    #: ``spot``: the probability of a normal score above the threshold.
    risk: float = 1e-4
    #: ``spot``: the quantile where its tail fit starts.
    level: float = 0.98
    #: Least threshold, in score units, so a perfectly reconstructed series still has a usable one.
    floor: float = 1e-3

    def __post_init__(self) -> None:
        s = "threshold"
        _check_choice(s, "method", self.method, ThresholdMethod)
        _check_float(s, "quantile", self.quantile, 0.0, 1.0, open_low=True)
        _check_float(s, "k", self.k, 0.0)
        _check_float(s, "z_min", self.z_min, 0.0)
        _check_float(s, "z_max", self.z_max, self.z_min)
        _check_float(s, "z_step", self.z_step, 0.0, open_low=True)
        _check_float(s, "risk", self.risk, 0.0, 1.0, open_low=True)
        _check_float(s, "level", self.level, 0.0, 1.0, open_low=True)
        if self.level >= 1.0:
            _fail(s, "level", "a finite number > 0.0 and < 1.0", self.level)
        _check_float(s, "floor", self.floor, 0.0)


@dataclass(frozen=True)
class EventConfig:
    """How flagged points become events and alerts (a policy section)."""

    #: Points added before and after each flagged run (batch events only).
    padding: int = 0
    #: Flagged runs at most this many points apart are one event, and one alert.
    merge_gap: int = 200
    #: Flagged points a run needs before it is an event (the alert fires on the last of them).
    min_length: int = 1
    #: Hundman's pruning: drop events whose peak stands less than this (relative) above the next one's.
    prune: float = 0.0
    #: An event above the threshold for at least this many points is one severity level higher (0: off).
    sustained: int = 30
    #: An alert needs a point outside the metric's expected range, the reconstruction ± this quantile of the model's absolute training errors, within a smoothing span before its flags, e.g. 0.99 (null: the score alone decides).
    band: float | None = None

    def __post_init__(self) -> None:
        s = "events"
        _check_int(s, "padding", self.padding, 0)
        _check_int(s, "merge_gap", self.merge_gap, 0)
        _check_int(s, "min_length", self.min_length, 1)
        _check_float(s, "prune", self.prune, 0.0, 1.0)
        _check_int(s, "sustained", self.sustained, 0)
        if self.band is not None:
            _check_float(s, "band", self.band, 0.5, 1.0)


def _check_sections(owner: Any, name: str) -> None:
    """Every field of a config dataclass holds an instance of its own section class."""
    hints = _hints(type(owner))
    for f in dataclasses.fields(owner):
        value, expected = getattr(owner, f.name), hints[f.name]
        if not isinstance(value, expected):
            _fail(name, f.name, f"a {expected.__name__}", value)


@dataclass(frozen=True)
class Policy:
    """What turns a model's reconstructions into alerts: scoring, threshold and events.

    A trained model version never changes; its policy can (``anomaly models
    policy set``), and takes effect on the next score run without retraining.
    """

    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    events: EventConfig = field(default_factory=EventConfig)

    def __post_init__(self) -> None:
        _check_sections(self, "policy")
        if self.threshold.method == "fixed" and self.scoring.baseline == 0:
            # k is in sigmas above the baseline; on a raw error in scaled units it would
            # (almost) never be reached, and the detector would stay silent without a word
            raise ConfigError(
                f"threshold.method 'fixed' flags scores more than k ({self.threshold.k}) standard deviations "
                "above the recent baseline, but scoring.baseline is 0 (no baseline, so the score is a raw "
                "reconstruction error); set scoring.baseline (the default is 1000) or a fitted threshold.method "
                "(spot, quantile, sigma, mad or dynamic)"
            )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def lookback(self, freq: Any) -> pd.Timedelta:
        """How far before its first flag an alert looks for the metric outside its range: the smoothing's span, which the score lags by."""
        import pandas as pd

        return self.scoring.span_points(freq) * pd.Timedelta(freq)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "Policy":
        """Build from nested mappings; unknown sections or keys are errors."""
        return _build(cls, data, "policy")

    def replace(self, **sections: Mapping[str, Any]) -> "Policy":
        """Copy with some fields of some sections changed, e.g. ``replace(threshold={"k": 5})``."""
        return Policy.from_dict(_merged(self.to_dict(), sections))


#: Sections of a :class:`DetectorConfig` that make up its :class:`Policy`.
POLICY_SECTIONS: tuple[str, ...] = tuple(f.name for f in dataclasses.fields(Policy))


@dataclass(frozen=True)
class DetectorConfig:
    """Everything needed to rebuild a detector: the model's sections, then its policy's."""

    preprocess: PreprocessConfig = field(default_factory=PreprocessConfig)
    window: WindowConfig = field(default_factory=WindowConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    events: EventConfig = field(default_factory=EventConfig)

    def __post_init__(self) -> None:
        _check_sections(self, "config")
        Policy(self.scoring, self.threshold, self.events)  # the policy's own rules

    @property
    def policy(self) -> Policy:
        """The scoring, threshold and events sections, which can change without retraining."""
        return Policy(self.scoring, self.threshold, self.events)

    def with_policy(self, policy: Policy) -> "DetectorConfig":
        """The same model sections under another policy."""
        return dataclasses.replace(self, scoring=policy.scoring, threshold=policy.threshold, events=policy.events)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-compatible dict, the inverse of :meth:`from_dict`."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "DetectorConfig":
        """Build from nested mappings; unknown sections or keys are errors."""
        return _build(cls, data, "config")

    @classmethod
    def from_file(cls, path: str | Path) -> "DetectorConfig":
        """Load YAML (``.yaml``/``.yml``) or JSON (anything else) from ``path``.

        The file is refused, in one line naming it, when it is over
        :data:`MAX_CONFIG_BYTES`, not UTF-8, not valid, nested or expanding
        past the YAML bounds, or not sections of single values.
        """
        p = Path(path)
        where = f"config file {excerpt(str(p), 300)}"  # a path is quoted whole unless absurd: the user must find it
        text = _read_config_text(p, where)
        if p.suffix in {".yaml", ".yml"}:
            data = _load_yaml(text, where)
        else:
            try:
                data = json.loads(text)
            except RecursionError as exc:
                raise ConfigError(f"{where} is nested more than {MAX_DEPTH} levels deep") from exc
            except ValueError as exc:  # JSONDecodeError, or an integer of more digits than Python converts
                raise ConfigError(f"{where} is not valid JSON: {_clip(str(exc))}") from exc
        data = {} if data is None else data
        _check_file_sections(data, where)
        return cls.from_dict(data)

    def replace(self, **sections: Mapping[str, Any]) -> "DetectorConfig":
        """Copy with some fields of some sections changed, e.g. ``replace(training={"epochs": 2})``."""
        return DetectorConfig.from_dict(_merged(self.to_dict(), sections))


def _merged(current: dict[str, Any], sections: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """``current`` with each named section updated by its mapping; an unknown section is an error."""
    merged = dict(current)
    for name, values in sections.items():
        if name not in merged:
            raise ConfigError(f"unknown config section {name!r}; known: {', '.join(merged)}")
        merged[name] = {**merged[name], **dict(values)}
    return merged


class _YamlLoader(yaml.SafeLoader):
    """Safe YAML that also reads ``1e-4`` as a float (YAML 1.1 insists on ``1.0e-4``)."""


_YamlLoader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:\d+\.?\d*|\.\d+)[eE][-+]?\d+$"),
    list("-+0123456789."),
)


#: Longest ``--set`` value read (default 1,000 characters): every setting is a number, a word or a
#: duration, so a longer value is a mistake, and an error that quotes it stays one short line.
MAX_VALUE_CHARS = 1_000
#: Largest configuration file read (default 1 MiB): a complete configuration is about 1 KB.
MAX_CONFIG_BYTES = 1 << 20
#: Deepest nesting and most values (aliases expanded) a YAML text may hold: a configuration is two
#: levels of about fifty values, and these bounds refuse a "billion laughs" before it is built.
MAX_DEPTH, MAX_YAML_VALUES = 32, 10_000
#: Longest section or setting name: the longest real one has 19 characters.
MAX_NAME_CHARS = 100


def parse_value(text: str, where: str = "value") -> Any:
    """A command-line value read as safe YAML (numbers, booleans, null, lists), ``1e-4`` included.

    ``where`` names the value in errors (the CLI passes ``--set section.key``).
    A value longer than :data:`MAX_VALUE_CHARS`, invalid, or nested or
    expanding past the YAML bounds raises :class:`ConfigError`.
    """
    if len(text) > MAX_VALUE_CHARS:
        raise ConfigError(f"{where} is too long: {excerpt(text)}; the limit is {MAX_VALUE_CHARS:,} characters")
    return _load_yaml(text, f"{where} {excerpt(text)}")


def _read_config_text(path: Path, where: str) -> str:
    """The file's text, reading at most one byte past :data:`MAX_CONFIG_BYTES` (``/dev/zero`` ends too)."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError(f"cannot read {where}: {exc.strerror or type(exc).__name__}") from exc
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where} is larger than {MAX_CONFIG_BYTES:,} bytes; a configuration is a few lines")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where} is not UTF-8 text (byte {exc.start:,} is {raw[exc.start]:#04x})") from exc


def _load_yaml(text: str, where: str) -> Any:
    """Safe YAML, measured before it is built; every way it can fail is a one-line :class:`ConfigError`."""
    try:
        _check_yaml_size(text, where)
        return yaml.load(text, Loader=_YamlLoader)
    except ConfigError:
        raise
    except (yaml.YAMLError, ValueError, RecursionError) as exc:  # ValueError: a safe tag's constructor (a 13th month)
        raise ConfigError(f"{where} is not valid YAML: {_yaml_problem(exc)}") from exc


def _check_yaml_size(text: str, where: str) -> None:
    """Refuse YAML nested past :data:`MAX_DEPTH` or holding over :data:`MAX_YAML_VALUES` values once aliases expand.

    Reads the parser's event stream (no recursion, nothing built), counting
    each alias as the size of the node it names, so nine lists of nine
    aliases are refused after a few hundred bytes, not after a billion copies.
    """
    loader = _YamlLoader(text)
    try:
        sizes: dict[str, int] = {}
        open_nodes: list[list[Any]] = []  # [anchor, values so far] of each collection not yet ended
        total = 0
        while loader.check_event():
            event = loader.get_event()
            if isinstance(event, yaml.CollectionStartEvent):
                open_nodes.append([event.anchor, 1])
                if len(open_nodes) > MAX_DEPTH:
                    raise ConfigError(f"{where} is nested more than {MAX_DEPTH} levels deep")
                continue
            if isinstance(event, yaml.CollectionEndEvent):
                anchor, count = open_nodes.pop()
            elif isinstance(event, yaml.ScalarEvent):
                anchor, count = event.anchor, 1
            elif isinstance(event, yaml.AliasEvent):
                if any(node[0] == event.anchor for node in open_nodes):
                    raise ConfigError(f"{where} has an alias *{_clip(event.anchor, 40)} inside the node it names")
                anchor, count = None, sizes.get(event.anchor, 1)  # an undefined one fails when composed
            else:
                continue
            if anchor is not None:
                sizes[anchor] = count
            if open_nodes:
                open_nodes[-1][1] += count
            total += 0 if open_nodes else count
            if (open_nodes[-1][1] if open_nodes else total) > MAX_YAML_VALUES:
                raise ConfigError(f"{where} is refused: its aliases expand to more than {MAX_YAML_VALUES:,} values")
    finally:
        loader.dispose()


def _yaml_problem(exc: BaseException) -> str:
    """A YAML error in one short line: PyYAML's own text spans lines and quotes the input."""
    if isinstance(exc, RecursionError):
        return f"nested more than {MAX_DEPTH} levels deep"
    if isinstance(exc, yaml.MarkedYAMLError) and (exc.problem or exc.context):
        mark = exc.problem_mark or exc.context_mark
        at = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        return _clip(f"{exc.problem or exc.context}{at}")
    return _clip(" ".join(str(exc).split()))


def _check_file_sections(data: Any, where: str) -> None:
    """Sections of settings, each a single value, as every field is; anything else is refused here, quoted short.

    What :meth:`DetectorConfig.from_dict` would otherwise echo whole (a
    100,000-item list) or fail to sort (names of mixed types) stops here.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where} must be a mapping of sections, got {_kind(data)}")
    for section, values in data.items():
        _check_name(section, "section", where)
        if not isinstance(values, Mapping):
            raise ConfigError(f"{where}: section {section!r} must be a mapping of settings, got {_kind(values)}")
        for name, value in values.items():
            _check_name(name, "setting", where)
            if isinstance(value, (Mapping, list, tuple, set)):
                raise ConfigError(f"{where}: {section}.{name} must be a single value, got {_kind(value)}")
            if isinstance(value, (str, bytes)) and len(value) > MAX_VALUE_CHARS:
                raise ConfigError(f"{where}: {section}.{name} is too long: {excerpt(value)}")


def _check_name(name: Any, what: str, where: str) -> None:
    if not isinstance(name, str) or len(name) > MAX_NAME_CHARS:
        raise ConfigError(f"{where}: {what} names must be text of at most {MAX_NAME_CHARS} characters, got {excerpt(name)}")


def _kind(value: Any) -> str:
    """What a value is, in a few words: ``a list of 100,000 items``, never the value itself."""
    if isinstance(value, Mapping):
        return f"a mapping of {len(value):,} keys"
    if isinstance(value, (list, tuple, set)):
        return f"a list of {len(value):,} items"
    return excerpt(value) if isinstance(value, (bool, int, float)) or value is None else f"a {type(value).__name__}"


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"


#: Settings that moved between sections: a configuration naming the old place is told the new one.
MOVED = {"scoring.aggregate": "window.aggregate", "scoring.batch_size": "window.score_batch_size"}


def _build(cls: type[T], data: Any, path: str) -> T:
    """Recursively build dataclass ``cls`` from ``data``, naming bad keys by dotted path."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path} must be a mapping, got {data!r}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - names)
    if unknown:
        key = f"{path}.{unknown[0]}"
        moved = f" (it moved to {MOVED[key]} in 0.2.0)" if key in MOVED else ""
        raise ConfigError(f"unknown key {key}{moved}; known keys: {', '.join(sorted(names))}")
    kwargs: dict[str, Any] = {}
    for name, value in data.items():
        hint = hints[name]
        if dataclasses.is_dataclass(hint):
            kwargs[name] = _build(hint, value, name if path in {"config", "policy"} else f"{path}.{name}")
        elif _accepts_float(hint) and isinstance(value, int) and not isinstance(value, bool):
            kwargs[name] = float(value)
        else:
            kwargs[name] = value
    return cls(**kwargs)


@functools.cache
def _hints(cls: type) -> dict[str, Any]:
    """Resolved field types of a config class; cached because every model load rebuilds its config."""
    return get_type_hints(cls)


def _accepts_float(hint: Any) -> bool:
    return hint is float or (get_origin(hint) is not Literal and float in get_args(hint))


#: A ``--set`` name: ``section`` or ``key``, letters, digits and ``_``.
_SETTING = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")


def setting_overrides(items: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``["section.key=value", ...]`` (the CLI's ``--set``) as ``{section: {key: value}}``, values read as YAML."""
    sections: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not _SETTING.fullmatch(section) or not _SETTING.fullmatch(name):
            raise ConfigError(f"--set expects SECTION.KEY=VALUE, got {excerpt(item)}")
        sections.setdefault(section, {})[name] = parse_value(raw, f"--set {section}.{name}")
    return sections


def load_config(path: str | Path | None, overrides: Sequence[str] = (), base: DetectorConfig | None = None) -> DetectorConfig:
    """Config from file (or ``base``, or the defaults) with ``section.key=value`` overrides applied."""
    config = DetectorConfig.from_file(path) if path else base or DetectorConfig()
    sections = setting_overrides(overrides)
    return config.replace(**sections) if sections else config


def reference_markdown(config: type = DetectorConfig) -> str:
    """docs/configuration.md: every section of ``config`` in order, its purpose and a table of its settings.

    Each setting's text is the ``#:`` comment above its field; a field without one
    raises :class:`ConfigError`, so a new setting cannot go undocumented.
    """
    policy = ", ".join(f"`{name}`" for name in POLICY_SECTIONS[:-1]) + f" and `{POLICY_SECTIONS[-1]}`"
    sections = [_section_markdown(f.name, _hints(config)[f.name]) for f in dataclasses.fields(config)]
    return _REFERENCE_HEADER.replace("{policy}", policy) + "\n".join(sections)


_REFERENCE_HEADER = """\
# Configuration reference

<!-- Generated from the `#:` comments in anomaly/core/config.py: edit them there, then run
.venv/bin/python -c "from anomaly.core.config import reference_markdown; print(reference_markdown(), end='')" > docs/configuration.md -->

Every setting has a default; set only the ones you change, in any of three ways:

- a YAML or JSON file of sections, passed with `--config detector.yaml`:

  ```yaml
  training:
    epochs: 20
  threshold:
    k: 5
  ```

- one setting on the command line with `--set section.key=value` (repeatable, and applied on top
  of `--config`), e.g. `--set training.epochs=20`; the value is read as YAML, so `null`, `true`
  and `1e-4` work;
- in Python, `DetectorConfig().replace(training={"epochs": 20})`.

The {policy} sections, marked *(policy)* below, are the
**policy**: how scores become alerts. A registered model's policy changes without retraining,
e.g. `anomaly models policy set NAME --set threshold.k=5`, from its next score run on. The other
sections shape the trained model and change only with a new training run.

"""


def _section_markdown(name: str, cls: type) -> str:
    """One section's heading, the first paragraph of its docstring, and its settings' table."""
    import inspect

    summary = " ".join(inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0].split())
    heading = f"## {name} *(policy)*" if name in POLICY_SECTIONS else f"## {name}"
    rows = [
        f"| `{f.name}` | {_yaml_default(f.default, default)} | {_cell(doc)} |"
        for f, (doc, default) in zip(dataclasses.fields(cls), _field_comments(cls))
    ]
    table = ["| setting | default | what it does |", "| --- | --- | --- |", *rows]
    return "\n".join([heading, "", _markdown(summary), "", *table, ""])


def _field_comments(cls: type) -> list[tuple[str, str]]:
    """``(#: comment, default's source text)`` of each field of dataclass ``cls``, in field order.

    A field is a statement ``name: type = default`` directly in the class body;
    the ``#:`` lines just above it, joined, are its comment.
    """
    import inspect
    import io
    import textwrap
    import tokenize

    tokens = list(tokenize.generate_tokens(io.StringIO(textwrap.dedent(inspect.getsource(cls))).readline))
    found: dict[str, tuple[str, str]] = {}
    pending: list[str] = []
    depth, line_start = 0, True
    for token, following in zip(tokens, tokens[1:]):
        if token.type == tokenize.COMMENT:
            if token.string.startswith("#:"):
                pending.append(token.string[2:].strip())
        elif token.type in (tokenize.INDENT, tokenize.DEDENT, tokenize.NEWLINE):
            depth += {tokenize.INDENT: 1, tokenize.DEDENT: -1}.get(token.type, 0)
            line_start = True
        elif token.type != tokenize.NL and line_start:  # the first token of a statement
            if depth == 1 and token.type == tokenize.NAME and following.string == ":" and pending:
                default = token.line.split("=", 1)[1].strip() if "=" in token.line else ""
                found[token.string] = (" ".join(pending), default)
            pending, line_start = [], False
    missing = [f.name for f in dataclasses.fields(cls) if f.name not in found]
    if missing:
        raise ConfigError(f"{cls.__name__}.{missing[0]} has no #: comment above it to document it")
    return [found[f.name] for f in dataclasses.fields(cls)]


def _yaml_default(value: Any, source: str) -> str:
    """A default as YAML writes it (``null``, ``true``, words unquoted); a float as the source gives it (``1e-2``)."""
    if value is None or isinstance(value, bool):
        return "null" if value is None else str(value).lower()
    if isinstance(value, float):
        return source if _float_text(source) == value else repr(value)
    return str(value)


def _float_text(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _markdown(text: str) -> str:
    """reST in a docstring or comment as Markdown: ``code`` and :role:`target` become `code`."""
    return re.sub(r":\w+:`([^`]+)`", r"`\1`", text.replace("``", "`"))


def _cell(text: str) -> str:
    """Text for a Markdown table cell: a ``|`` would end the cell."""
    return _markdown(text).replace("|", "\\|")
