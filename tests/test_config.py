"""Tests for anomaly.core.config: defaults, round-trips, replace, and every validation rule."""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml

from anomaly.core.config import (
    DetectorConfig,
    EventConfig,
    ModelConfig,
    Policy,
    PreprocessConfig,
    ScoringConfig,
    ThresholdConfig,
    TrainingConfig,
    WindowConfig,
)
from anomaly.errors import ConfigError

SECTIONS = ("preprocess", "window", "model", "training", "scoring", "threshold", "events")


def custom_config() -> DetectorConfig:
    """A config that differs from the defaults in every section (and has awkward floats)."""
    return DetectorConfig(
        preprocess=PreprocessConfig(freq="5min", aggregate="max", fill_limit=0, fill_method="ffill", scaler="robust"),
        window=WindowConfig(size=32, train_stride=2, score_stride=8, max_train_windows=None, aggregate="mean", score_batch_size=1),
        model=ModelConfig(hidden_size=8, latent_size=3, num_layers=2, bidirectional=True, dropout=0.25),
        training=TrainingConfig(
            epochs=2,
            batch_size=7,
            learning_rate=3.3e-7,
            validation_fraction=0.5,
            patience=1,
            min_delta=1e-9,
            grad_clip=0.1,
            seed=123,
            device="cpu",
            num_threads=1,
        ),
        scoring=ScoringConfig(error="squared", combine="max", smoothing_span=3, smoothing_time=None),
        threshold=ThresholdConfig(
            method="spot", quantile=0.5, k=0.0, z_min=0.0, z_max=0.0, z_step=0.1, risk=1.0, level=0.5, floor=0.0
        ),
        events=EventConfig(padding=2, merge_gap=4, min_length=3, prune=1.0),
    )


# --- defaults ---------------------------------------------------------------


def test_defaults_construct_with_documented_values() -> None:
    cfg = DetectorConfig()
    assert cfg.preprocess == PreprocessConfig()
    assert cfg.preprocess.freq is None
    assert cfg.preprocess.fill_limit == 3
    # The defaults the README documents: the configuration `anomaly benchmark` measured.
    assert cfg.window.size == 48 and cfg.window.score_stride == 10 and cfg.window.max_train_windows == 2000
    assert cfg.model.hidden_size == 32 and cfg.model.latent_size == 8
    assert cfg.training.epochs == 12 and cfg.training.batch_size == 64
    assert (cfg.training.learning_rate, cfg.training.schedule) == (1e-2, "one_cycle")
    assert (cfg.scoring.smoothing_span, cfg.scoring.smoothing_time, cfg.scoring.baseline) == (None, "600min", 1000)
    assert (cfg.scoring.error, cfg.scoring.error_power) == ("power", 1.5)
    assert (cfg.threshold.method, cfg.threshold.k) == ("fixed", 4.5)
    assert (cfg.events.padding, cfg.events.merge_gap) == (0, 200)
    assert cfg.events == EventConfig()
    assert DetectorConfig() == DetectorConfig()


def test_sections_are_frozen() -> None:
    cfg = DetectorConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.training.epochs = 3  # type: ignore[misc]


def test_from_empty_dict_is_defaults() -> None:
    assert DetectorConfig.from_dict({}) == DetectorConfig()
    assert DetectorConfig.from_dict({"training": {}}) == DetectorConfig()


# --- round trips --------------------------------------------------------------


@pytest.mark.parametrize("cfg", [DetectorConfig(), custom_config()], ids=["default", "custom"])
def test_dict_round_trip(cfg: DetectorConfig) -> None:
    data = cfg.to_dict()
    assert set(data) == set(SECTIONS)
    json.dumps(data)  # plain JSON types only
    back = DetectorConfig.from_dict(data)
    assert back == cfg
    assert back.to_dict() == data


@pytest.mark.parametrize("cfg", [DetectorConfig(), custom_config()], ids=["default", "custom"])
def test_json_file_round_trip(cfg: DetectorConfig, tmp_path: Path) -> None:
    path = tmp_path / "config.json"
    path.write_text(cfg.to_json())
    assert DetectorConfig.from_file(path) == cfg
    assert DetectorConfig.from_file(str(path)) == cfg


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
@pytest.mark.parametrize("cfg", [DetectorConfig(), custom_config()], ids=["default", "custom"])
def test_yaml_file_round_trip(cfg: DetectorConfig, suffix: str, tmp_path: Path) -> None:
    path = tmp_path / f"config{suffix}"
    path.write_text(yaml.safe_dump(cfg.to_dict()))
    assert DetectorConfig.from_file(path) == cfg


def test_partial_yaml_file_fills_defaults(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("training:\n  epochs: 2\nwindow:\n  size: 20\n  score_stride: 4\n")
    cfg = DetectorConfig.from_file(path)
    assert cfg == DetectorConfig(
        training=TrainingConfig(epochs=2), window=WindowConfig(size=20, score_stride=4)
    )


def test_empty_yaml_file_is_defaults(tmp_path: Path) -> None:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    assert DetectorConfig.from_file(path) == DetectorConfig()


def test_yaml_scientific_notation_is_a_float(tmp_path: Path) -> None:
    # PyYAML (YAML 1.1) reads "1e-4" as a *string*; a hand-written config with
    # the natural spelling of the defaults must still load.
    path = tmp_path / "sci.yaml"
    path.write_text("training:\n  learning_rate: 1e-4\nthreshold:\n  risk: 1e-5\n")
    cfg = DetectorConfig.from_file(path)
    assert cfg.training.learning_rate == 1e-4
    assert cfg.threshold.risk == 1e-5


# --- replace ------------------------------------------------------------------


def test_replace_changes_only_the_named_fields() -> None:
    base = DetectorConfig()
    new = base.replace(training={"epochs": 2})
    assert new.training.epochs == 2
    assert new.training == dataclasses.replace(base.training, epochs=2)
    for name in SECTIONS:
        if name != "training":
            assert getattr(new, name) == getattr(base, name)
    assert base.training.epochs == 12  # original untouched


def test_replace_several_sections_and_keeps_previous_changes() -> None:
    cfg = DetectorConfig().replace(training={"epochs": 2}).replace(
        window={"size": 10, "score_stride": 10}, threshold={"method": "mad", "k": 3}
    )
    assert cfg.training.epochs == 2
    assert (cfg.window.size, cfg.window.score_stride) == (10, 10)
    assert cfg.threshold.method == "mad"
    assert cfg.threshold.k == 3.0 and isinstance(cfg.threshold.k, float)


def test_replace_validates() -> None:
    with pytest.raises(ConfigError, match=r"training\.epochs.*0"):
        DetectorConfig().replace(training={"epochs": 0})


def test_replace_unknown_section_lists_known() -> None:
    with pytest.raises(ConfigError, match="bogus") as info:
        DetectorConfig().replace(bogus={"x": 1})
    for name in SECTIONS:
        assert name in str(info.value)


def test_replace_unknown_key_named() -> None:
    with pytest.raises(ConfigError, match=r"training\.epoch\b") as info:
        DetectorConfig().replace(training={"epoch": 2})
    assert "epochs" in str(info.value)


# --- ints for floats ----------------------------------------------------------


def test_ints_accepted_for_float_fields_and_become_floats() -> None:
    cfg = DetectorConfig.from_dict(
        {
            "training": {"learning_rate": 1, "min_delta": 0, "grad_clip": 2, "validation_fraction": 0},
            "threshold": {"k": 3, "z_min": 1, "z_max": 5, "z_step": 1, "risk": 1, "quantile": 1, "floor": 0},
            "model": {"dropout": 0},
            "events": {"prune": 1},
        }
    )
    floats = {
        ("training", "learning_rate"): 1.0,
        ("training", "min_delta"): 0.0,
        ("training", "grad_clip"): 2.0,
        ("training", "validation_fraction"): 0.0,
        ("threshold", "k"): 3.0,
        ("threshold", "z_min"): 1.0,
        ("threshold", "z_max"): 5.0,
        ("threshold", "z_step"): 1.0,
        ("threshold", "risk"): 1.0,
        ("threshold", "quantile"): 1.0,
        ("threshold", "floor"): 0.0,
        ("model", "dropout"): 0.0,
        ("events", "prune"): 1.0,
    }
    for (section, name), expected in floats.items():
        value = getattr(getattr(cfg, section), name)
        assert type(value) is float, (section, name, value)
        assert value == expected
    # the int fields keep their type
    assert type(cfg.training.epochs) is int


def test_ints_accepted_for_float_fields_in_python() -> None:
    assert ThresholdConfig(k=3, floor=0).k == 3
    assert TrainingConfig(learning_rate=1).learning_rate == 1


# --- validation ----------------------------------------------------------------

NAN = float("nan")
INF = float("inf")

# (section, extra valid fields needed to reach the rule, field, bad value)
BAD_VALUES: list[tuple[str, dict[str, Any], str, Any]] = [
    ("preprocess", {}, "freq", "banana"),
    ("preprocess", {}, "freq", "1ME"),  # month ends are not a fixed interval
    ("preprocess", {}, "freq", 5),
    ("preprocess", {}, "freq", "0min"),
    ("preprocess", {}, "freq", "-5min"),
    ("preprocess", {}, "aggregate", "median2"),
    ("preprocess", {}, "fill_limit", -1),
    ("preprocess", {}, "fill_limit", True),
    ("preprocess", {}, "fill_limit", 1.5),
    ("preprocess", {}, "fill_method", "cubic"),
    ("preprocess", {}, "scaler", "zscore"),
    ("window", {}, "size", 1),
    ("window", {}, "size", 0),
    ("window", {}, "size", -10),
    ("window", {}, "size", True),
    ("window", {}, "size", 10.0),
    ("window", {}, "size", "100"),
    ("window", {}, "train_stride", 0),
    ("window", {}, "train_stride", -1),
    ("window", {}, "score_stride", 0),
    ("window", {"size": 10}, "score_stride", 11),
    ("window", {}, "max_train_windows", 0),
    ("window", {}, "max_train_windows", False),
    ("model", {}, "hidden_size", 0),
    ("model", {}, "hidden_size", True),
    ("model", {}, "latent_size", -1),
    ("model", {}, "num_layers", 0),
    ("model", {}, "bidirectional", 1),
    ("model", {}, "bidirectional", "yes"),
    ("model", {}, "dropout", -0.1),
    ("model", {}, "dropout", 0.96),
    ("model", {}, "dropout", NAN),
    ("model", {}, "dropout", True),
    ("training", {}, "epochs", 0),
    ("training", {}, "epochs", -1),
    ("training", {}, "epochs", True),
    ("training", {}, "epochs", 2.0),
    ("training", {}, "batch_size", 0),
    ("training", {}, "learning_rate", 0),
    ("training", {}, "learning_rate", -1e-3),
    ("training", {}, "learning_rate", NAN),
    ("training", {}, "learning_rate", INF),
    ("training", {}, "learning_rate", True),
    ("training", {}, "learning_rate", "0.1"),
    ("training", {}, "validation_fraction", 0.6),
    ("training", {}, "validation_fraction", -0.1),
    ("training", {}, "patience", 0),
    ("training", {}, "min_delta", -1.0),
    ("training", {}, "min_delta", NAN),
    ("training", {}, "grad_clip", 0.0),
    ("training", {}, "grad_clip", -INF),
    ("training", {}, "seed", -1),
    ("training", {}, "seed", True),
    ("training", {}, "device", "gpu"),
    ("training", {}, "schedule", "cosine"),
    ("training", {}, "num_threads", 0),
    ("window", {}, "aggregate", "max"),
    ("scoring", {}, "error", "mse"),
    ("scoring", {}, "error_power", 0.0),
    ("scoring", {}, "error_power", -1.5),
    ("scoring", {}, "error_power", float("nan")),
    ("scoring", {}, "error_power", 9.0),
    ("scoring", {}, "error_power", "1.5"),
    ("scoring", {}, "combine", "sum"),
    ("scoring", {}, "smoothing_span", -1),
    ("scoring", {}, "smoothing_span", False),
    ("scoring", {}, "smoothing_time", "soon"),
    ("scoring", {}, "baseline_exclude", 0.0),
    ("scoring", {}, "baseline_exclude", NAN),
    ("scoring", {}, "baseline_exclude", "4.5"),
    ("scoring", {}, "baseline_hold", "0min"),
    ("scoring", {}, "baseline_hold", "later"),
    ("scoring", {}, "baseline_hold", 200),
    ("scoring", {}, "baseline_warmup", "-1h"),
    ("scoring", {}, "baseline_warmup", 36),
    ("scoring", {}, "smoothing_time", "0min"),
    ("scoring", {}, "smoothing_time", "-5min"),
    ("scoring", {}, "baseline", -1),
    ("scoring", {}, "baseline", 1),
    ("scoring", {}, "baseline_floor", 0.0),
    ("scoring", {}, "baseline_floor", float("nan")),
    ("window", {}, "score_batch_size", 0),
    ("threshold", {}, "method", "nope"),
    ("threshold", {}, "quantile", 0.0),
    ("threshold", {}, "quantile", 1.5),
    ("threshold", {}, "quantile", NAN),
    ("threshold", {}, "k", -1.0),
    ("threshold", {}, "k", INF),
    ("threshold", {}, "z_min", -1.0),
    ("threshold", {"z_min": 5.0}, "z_max", 3.0),
    ("threshold", {}, "z_max", INF),
    ("threshold", {}, "z_step", 0.0),
    ("threshold", {}, "risk", 0.0),
    ("threshold", {}, "risk", 1.5),
    ("threshold", {}, "level", 1.0),
    ("threshold", {}, "level", 0.0),
    ("threshold", {}, "level", -INF),
    ("threshold", {}, "level", NAN),
    ("threshold", {}, "floor", -1e-3),
    ("events", {}, "padding", -1),
    ("events", {}, "merge_gap", -1),
    ("events", {}, "min_length", 0),
    ("events", {}, "prune", 1.5),
    ("events", {}, "prune", -0.1),
    ("events", {}, "prune", NAN),
]


def _case_id(case: tuple[str, dict[str, Any], str, Any]) -> str:
    section, _, name, value = case
    return f"{section}.{name}={value!r}"


@pytest.mark.parametrize("case", BAD_VALUES, ids=[_case_id(c) for c in BAD_VALUES])
def test_bad_value_rejected_by_name_and_value(case: tuple[str, dict[str, Any], str, Any]) -> None:
    section, extra, name, value = case
    pattern = re.escape(f"{section}.{name}") + r"\b.*" + re.escape(repr(value))
    with pytest.raises(ConfigError, match=pattern):
        DetectorConfig.from_dict({section: {**extra, name: value}})
    # the same rule applies when the section is built in Python
    cls = type(getattr(DetectorConfig(), section))
    with pytest.raises(ConfigError, match=pattern):
        cls(**{**extra, name: value})


@pytest.mark.parametrize(("freq", "points"), [("5min", 40), ("1h", 3), ("1D", 1), ("30s", 400)])
def test_smoothing_time_is_a_span_in_points_of_the_sampling_interval(freq: str, points: int) -> None:
    assert ScoringConfig(smoothing_time="200min").span_points(pd.Timedelta(freq)) == points
    assert ScoringConfig(smoothing_span=7, smoothing_time=None).span_points(pd.Timedelta(freq)) == 7  # the span as given
    assert ScoringConfig(smoothing_span=None, smoothing_time=None).span_points(pd.Timedelta(freq)) == 0  # neither: none


def test_a_fixed_threshold_without_a_baseline_is_refused_rather_than_never_flagging() -> None:
    with pytest.raises(ConfigError, match=r"threshold\.method 'fixed' .* k \(4\.5\) .* scoring\.baseline is 0"):
        DetectorConfig().replace(scoring={"baseline": 0})
    raw = DetectorConfig().replace(scoring={"baseline": 0}, threshold={"method": "spot"})
    assert (raw.scoring.baseline, raw.threshold.method) == (0, "spot")


def test_a_smoothing_span_and_a_smoothing_time_together_are_refused_naming_both() -> None:
    with pytest.raises(ConfigError, match=r"scoring\.smoothing_span \(6\) and scoring\.smoothing_time \('600min'\) are both set"):
        DetectorConfig().replace(scoring={"smoothing_span": 6})
    assert DetectorConfig().replace(scoring={"smoothing_span": 6, "smoothing_time": None}).scoring.span_points(pd.Timedelta("5min")) == 6


def test_score_stride_message_names_window_size() -> None:
    with pytest.raises(ConfigError, match=r"window\.score_stride must be <= window\.size \(10\), got 11"):
        WindowConfig(size=10, score_stride=11)
    assert WindowConfig(size=10, score_stride=10).score_stride == 10  # equal is fine


def test_threshold_level_just_below_one_is_fine() -> None:
    assert ThresholdConfig(level=0.999).level == 0.999


@pytest.mark.parametrize("freq", ["1s", "1min", "5min", "1h", "1D", "90s"])
def test_fixed_frequencies_accepted(freq: str) -> None:
    assert PreprocessConfig(freq=freq).freq == freq


def test_config_error_is_a_value_error() -> None:
    with pytest.raises(ValueError):
        TrainingConfig(epochs=0)


def test_section_of_wrong_type_rejected() -> None:
    with pytest.raises(ConfigError, match=r"config\.training.*TrainingConfig.*\{'epochs': 2\}"):
        DetectorConfig(training={"epochs": 2})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"training must be a mapping, got 5"):
        DetectorConfig.from_dict({"training": 5})


# --- unknown names --------------------------------------------------------------


def test_unknown_section_named_and_known_listed() -> None:
    with pytest.raises(ConfigError, match=r"unknown key config\.trainnig") as info:
        DetectorConfig.from_dict({"trainnig": {"epochs": 2}})
    for name in SECTIONS:
        assert name in str(info.value)


def test_unknown_key_named_with_section_and_known_listed() -> None:
    with pytest.raises(ConfigError, match=r"unknown key window\.stride\b") as info:
        DetectorConfig.from_dict({"window": {"stride": 2}})
    for name in ("size", "train_stride", "score_stride", "max_train_windows"):
        assert name in str(info.value)


# --- files -------------------------------------------------------------------------


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    with pytest.raises(ConfigError, match=re.escape(repr(str(path)))):
        DetectorConfig.from_file(path)


def test_directory_is_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape(repr(str(tmp_path)))):
        DetectorConfig.from_file(tmp_path)


@pytest.mark.parametrize(("name", "text"), [("c.json", "{"), ("c.json", "epochs: 2"), ("c.yaml", "a: [1, 2"), ("c.yml", "a: b: c")])
def test_invalid_file_syntax(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=re.escape(repr(str(path))) + " is not valid"):
        DetectorConfig.from_file(path)


@pytest.mark.parametrize(("name", "text"), [("c.json", "[1, 2]"), ("c.json", "[]"), ("c.json", "0"), ("c.yaml", "- a\n"), ("c.yaml", "false")])
def test_file_that_is_not_a_mapping(tmp_path: Path, name: str, text: str) -> None:
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match="must be a mapping"):
        DetectorConfig.from_file(path)


def test_bad_value_in_file_named(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("threshold:\n  method: nope\n")
    with pytest.raises(ConfigError, match=r"threshold\.method.*'nope'"):
        DetectorConfig.from_file(path)


def test_nan_in_json_file_rejected(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    path.write_text('{"training": {"learning_rate": NaN}}')
    with pytest.raises(ConfigError, match=r"training\.learning_rate.*nan"):
        DetectorConfig.from_file(path)


@pytest.mark.parametrize(("freq", "hold", "warmup"), [("5min", 200, 432), ("1h", 17, 36), ("1min", 1000, 2160)])
def test_baseline_hold_and_warmup_are_durations_in_points_of_the_sampling_interval(freq: str, hold: int, warmup: int) -> None:
    scoring = ScoringConfig()
    assert (scoring.baseline_hold, scoring.baseline_warmup, scoring.baseline_exclude) == ("1000min", "36h", 4.5)
    assert (scoring.hold_points(pd.Timedelta(freq)), scoring.warmup_points(pd.Timedelta(freq))) == (hold, warmup)
    off = ScoringConfig(baseline_hold=None, baseline_warmup=None)
    assert (off.hold_points(pd.Timedelta(freq)), off.warmup_points(pd.Timedelta(freq))) == (0, 0)


# --- the policy: scoring, threshold and events, apart from the model ---------


def test_the_policy_is_the_scoring_threshold_and_events_sections() -> None:
    config = custom_config()
    policy = config.policy
    assert (policy.scoring, policy.threshold, policy.events) == (config.scoring, config.threshold, config.events)
    other = policy.replace(threshold={"k": 6.0}, events={"merge_gap": 9})
    changed = config.with_policy(other)
    assert changed.threshold.k == 6.0 and changed.events.merge_gap == 9
    assert (changed.preprocess, changed.window, changed.model, changed.training) == (
        config.preprocess, config.window, config.model, config.training,
    )  # fmt: skip


def test_a_policy_round_trips_through_plain_json() -> None:
    policy = custom_config().policy
    assert Policy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy


def test_a_policy_refuses_model_sections_and_a_fixed_cut_without_a_baseline() -> None:
    with pytest.raises(ConfigError, match="unknown config section 'training'"):
        Policy().replace(training={"epochs": 3})
    with pytest.raises(ConfigError, match="threshold.method 'fixed'.*scoring.baseline is 0"):
        Policy().replace(scoring={"baseline": 0})


@pytest.mark.parametrize(("old", "new"), [("scoring.aggregate", "window.aggregate"), ("scoring.batch_size", "window.score_batch_size")])
def test_a_setting_that_moved_says_where_it_went(old: str, new: str) -> None:
    section, name = old.split(".")
    with pytest.raises(ConfigError, match=rf"unknown key {old} \(it moved to {new} in 0.2.0\)"):
        DetectorConfig.from_dict({section: {name: 1}})
