"""Tests for anomaly.core.thresholds: exact values, edge cases, state round-trip, properties."""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
from typing import get_args

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from anomaly.core.config import ThresholdConfig, ThresholdMethod
from anomaly.errors import ConfigError, DataError, NotFittedError
from anomaly.core.thresholds import (
    THRESHOLDS,
    DynamicThreshold,
    FixedThreshold,
    MADThreshold,
    QuantileThreshold,
    SigmaThreshold,
    SPOTThreshold,
    Threshold,
    build_threshold,
)

#: The methods learned from training scores; ``fixed`` has tests of its own below.
METHODS = sorted(m for m, cls in THRESHOLDS.items() if cls.needs_scores)


def make(method: str, **fields: float) -> Threshold:
    return build_threshold(ThresholdConfig(method=method, **fields))  # type: ignore[arg-type]


def noisy_scores(seed: int = 0, n: int = 2000) -> np.ndarray:
    """Gamma-distributed scores with a few spikes: a plausible training series."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 0.05, n)
    x[rng.choice(n, 5, replace=False)] += 2.0
    return x


# --- exact values -----------------------------------------------------------


def test_quantile_exact_values() -> None:
    x = np.arange(11, dtype=float)  # 0..10
    assert make("quantile", quantile=0.95).fit(x).threshold_ == 9.5
    assert make("quantile", quantile=0.5).fit(np.array([10.0, 1.0, 3.0, 2.0])).threshold_ == 2.5
    assert make("quantile", quantile=1.0).fit(x).threshold_ == 10.0


def test_sigma_exact_values() -> None:
    x = np.array([2.0, 4, 4, 4, 5, 5, 7, 9])  # mean 5, population std 2
    t = make("sigma", k=3.0).fit(x)
    assert (t.threshold_, t.mean_, t.std_) == (11.0, 5.0, 2.0)
    assert make("sigma", k=0.0).fit(x).threshold_ == 5.0


def test_mad_exact_values() -> None:
    x = np.array([9.0, 1, 2, 1, 4, 6, 2])  # median 2, |x - 2| = 7 1 0 1 2 4 0 -> MAD 1
    t = make("mad", k=2.0).fit(x)
    assert (t.median_, t.mad_) == (2.0, 1.0)
    assert t.threshold_ == pytest.approx(2.0 + 2.0 * 1.4826, rel=1e-15)
    # the outlier 9 barely moves the MAD threshold but drags the sigma one up
    assert t.threshold_ < make("sigma", k=2.0).fit(x).threshold_


def test_threshold_is_python_float() -> None:
    for method in METHODS:
        t = make(method).fit(noisy_scores())
        assert type(t.threshold_) is float
        assert all(type(v) is float for v in t.get_state().values())


# --- floor and degenerate training data -------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_floor_on_all_zero_scores(method: str) -> None:
    t = make(method, floor=0.25).fit(np.zeros(200))
    assert t.threshold_ == 0.25
    assert not t.apply(np.zeros(10)).any()
    assert t.apply(np.array([0.2, 0.3])).tolist() == [False, True]


@pytest.mark.parametrize("method", METHODS)
def test_floor_on_constant_below_floor(method: str) -> None:
    assert make(method, floor=1e-3).fit(np.full(300, 1e-4)).threshold_ == 1e-3


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("value", [0.1, 0.7, 3.3])
def test_constant_above_floor_gives_that_constant(method: str, value: float) -> None:
    # 0.1, 0.7 and 3.3 are values whose np.mean over n copies is off by an ulp
    x = np.full(1000, value)
    t = make(method, k=0.0, z_min=0.0).fit(x)
    assert t.threshold_ == value
    assert not t.apply(x).any()  # training data is not flagged
    assert t.apply(np.array([np.nextafter(value, np.inf)])).all()


# --- NaN handling -----------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_nan_is_ignored_in_fit(method: str) -> None:
    x = noisy_scores()
    with_gaps = np.insert(x, [10, 10, 700, 1500], np.nan)  # gaps away from nothing in particular
    a, b = make(method).fit(x), make(method).fit(with_gaps)
    assert b.threshold_ == pytest.approx(a.threshold_, rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_nan_is_never_flagged(method: str) -> None:
    t = make(method).fit(noisy_scores())
    flags = t.apply(np.array([np.nan, 0.0, 1e6, np.nan]))
    assert flags.dtype == bool
    assert flags.tolist() == [False, False, True, False]


# --- bad inputs -------------------------------------------------------------

BAD_INPUTS = [
    (np.array([]), r"empty"),
    (np.array([np.nan, np.nan]), r"all NaN \(2 values\)"),
    (np.array([0.5, np.inf]), r"finite, got inf at index 1"),
    (np.array([0.5, 1.0, -0.25]), r"non-negative, got -0\.25 at index 2"),
    (np.ones((3, 2)), r"1-D, got shape \(3, 2\)"),
    (np.array(["a", "b"]), r"numbers, got dtype <U1"),
]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize(("scores", "message"), BAD_INPUTS)
def test_fit_rejects_bad_scores(method: str, scores: np.ndarray, message: str) -> None:
    with pytest.raises(DataError, match=message):
        make(method).fit(scores)


@pytest.mark.parametrize(("scores", "message"), BAD_INPUTS[2:])
def test_apply_rejects_bad_scores(scores: np.ndarray, message: str) -> None:
    t = make("sigma").fit(noisy_scores())
    with pytest.raises(DataError, match=message):
        t.apply(scores)


def test_apply_accepts_empty_and_integer_scores() -> None:
    t = make("quantile", quantile=0.5).fit(np.array([0, 1, 2, 3]))  # integers are fine
    assert t.threshold_ == 1.5
    assert t.apply(np.array([], dtype=float)).shape == (0,)
    assert t.apply(np.array([1, 2])).tolist() == [False, True]


@pytest.mark.parametrize("method", METHODS)
def test_not_fitted(method: str) -> None:
    t = make(method)
    with pytest.raises(NotFittedError, match="not fitted"):
        t.apply(np.zeros(3))
    with pytest.raises(NotFittedError, match="not fitted"):
        t.get_state()


# --- state round-trip -------------------------------------------------------


@pytest.mark.parametrize("method", METHODS)
def test_state_round_trip(method: str) -> None:
    config = ThresholdConfig(method=method)  # type: ignore[arg-type]
    fitted = build_threshold(config).fit(noisy_scores(seed=1))
    state = json.loads(json.dumps(fitted.get_state()))  # through JSON, as when saved
    assert "threshold" in state
    rebuilt = THRESHOLDS[method].from_state(config, state)
    new = np.concatenate([noisy_scores(seed=2), [fitted.threshold_, np.nextafter(fitted.threshold_, np.inf)]])
    assert np.array_equal(rebuilt.apply(new), fitted.apply(new))
    assert rebuilt.get_state() == fitted.get_state()
    assert rebuilt.apply(new[-2:]).tolist() == [False, True]


def test_from_state_does_not_refloor() -> None:
    fitted = make("sigma", floor=0.0).fit(np.array([0.0, 0.0, 0.0, 1e-6]))
    rebuilt = SigmaThreshold.from_state(ThresholdConfig(floor=1.0), fitted.get_state())
    assert rebuilt.threshold_ == fitted.threshold_ < 1.0


@pytest.mark.parametrize(
    ("cls", "state", "message"),
    [
        (SigmaThreshold, {"threshold": 1.0, "mean": 0.5}, r"missing \['std'\]"),
        (QuantileThreshold, {"threshold": 1.0, "mean": 0.5, "std": 0.1}, r"unknown \['mean', 'std'\]"),
        (QuantileThreshold, {"threshold": float("nan")}, r"threshold must be a finite number"),
        (QuantileThreshold, {"threshold": "1.0"}, r"finite number, got '1.0'"),
        (QuantileThreshold, {"threshold": -1.0}, r"threshold must be >= 0"),
        (QuantileThreshold, [1.0], r"expected a mapping"),
    ],
)
def test_from_state_rejects_bad_state(cls: type[Threshold], state: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        cls.from_state(ThresholdConfig(), state)  # type: ignore[arg-type]


# --- properties -------------------------------------------------------------

score_lists = st.lists(st.floats(min_value=0.0, max_value=1e6), min_size=1, max_size=60)
new_score_lists = st.lists(st.one_of(st.floats(min_value=0.0, max_value=1e6), st.just(math.nan)), max_size=30)
unit = st.floats(min_value=0.0, max_value=1.0, exclude_min=True)
ks = st.floats(min_value=0.0, max_value=100.0)


@settings(max_examples=150, deadline=None)
@given(scores=score_lists, q1=unit, q2=unit)
def test_higher_quantile_never_lowers_threshold(scores: list[float], q1: float, q2: float) -> None:
    lo, hi = sorted((q1, q2))
    x = np.array(scores)
    assert make("quantile", quantile=lo).fit(x).threshold_ <= make("quantile", quantile=hi).fit(x).threshold_


@settings(max_examples=150, deadline=None)
@given(scores=score_lists, k1=ks, k2=ks, method=st.sampled_from(["sigma", "mad"]))
def test_larger_k_never_lowers_threshold(scores: list[float], k1: float, k2: float, method: str) -> None:
    lo, hi = sorted((k1, k2))
    x = np.array(scores)
    assert make(method, k=lo).fit(x).threshold_ <= make(method, k=hi).fit(x).threshold_


@settings(max_examples=60, deadline=None)
@given(scores=score_lists, new=new_score_lists, method=st.sampled_from(METHODS))
def test_apply_flags_exactly_scores_above_threshold(scores: list[float], new: list[float], method: str) -> None:
    t = make(method).fit(np.array(scores))
    assert math.isfinite(t.threshold_) and t.threshold_ >= t.config.floor
    y = np.array(new, dtype=float)
    flags = t.apply(y)
    assert flags.dtype == bool and flags.shape == y.shape
    expected = [(not math.isnan(v)) and v > t.threshold_ for v in new]
    assert flags.tolist() == expected


# --- dynamic (Hundman) ------------------------------------------------------


def spiky_series(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0.0, 0.1, 1000)
    spikes = np.array([150, 420, 421, 800])
    x[spikes] = [3.0, 4.0, 4.5, 5.0]
    return x, spikes


def test_dynamic_separates_spikes_from_noise() -> None:
    x, spikes = spiky_series(seed=3)
    t = make("dynamic").fit(x)
    assert 0.1 < t.threshold_ < 3.0
    assert np.flatnonzero(t.apply(x)).tolist() == spikes.tolist()
    assert not t.apply(np.random.default_rng(4).uniform(0.0, 0.1, 5000)).any()
    # every z leaves the same spikes above epsilon; ties go to the largest such z
    grid = np.arange(2.0, 10.25, 0.5)
    assert t.z_ == max(z for z in grid if t.mean_ + z * t.std_ < x[spikes].min())
    assert t.threshold_ == t.mean_ + t.z_ * t.std_


def reference_epsilon(x: np.ndarray, z_min: float, z_max: float, z_step: float) -> float:
    """Straight transcription of Hundman's criterion (NaN: ignored, never above), ties to the larger z."""
    mean, std = float(np.nanmean(x)), float(np.nanstd(x))
    best_z, best = z_max, 0.0
    for z in np.arange(z_min, z_max + z_step / 2, z_step):
        eps = mean + z * std
        above = [v > eps for v in x]
        n_above = sum(above)
        if n_above == 0:
            continue
        n_seq = sum(1 for flag, _ in itertools.groupby(above) if flag)
        kept = x[x <= eps]
        score = ((mean - kept.mean()) / mean + (std - kept.std()) / std) / (n_above + n_seq**2)
        if score > 0 and score >= best:
            best_z, best = float(z), score
    return best_z


def bursty_series(seed: int) -> np.ndarray:
    """Noise, a burst at the very start, and a few bursts of random length and height."""
    rng = np.random.default_rng(seed)
    x = rng.gamma(2.0, 0.05, 400)
    x[0 : rng.integers(1, 15)] += rng.uniform(0.5, 3.0)
    for _ in range(rng.integers(1, 6)):
        start = rng.integers(20, 390)
        x[start : start + rng.integers(1, 12)] += rng.uniform(0.3, 3.0)
    return x


# seeds where the choice is interior and changes if runs were counted
# linearly or the run at index 0 were missed
@pytest.mark.parametrize("seed", [1, 16, 44, 66])
@pytest.mark.parametrize("gaps", [False, True])
def test_dynamic_matches_reference_criterion(seed: int, gaps: bool) -> None:
    x = bursty_series(seed)
    if gaps:
        x[np.random.default_rng(seed).choice(x.size, 20, replace=False)] = np.nan
    cfg = {"z_min": 0.5, "z_max": 8.0, "z_step": 0.25}
    t = make("dynamic", **cfg).fit(x)
    expected = reference_epsilon(x, cfg["z_min"], cfg["z_max"], cfg["z_step"])
    assert t.z_ == expected
    assert 0.5 <= t.z_ < 8.0


def test_dynamic_falls_back_to_largest_epsilon_when_nothing_exceeds() -> None:
    x = np.array([0.2, 0.2, 0.2, 0.2, 0.3])  # mean 0.22, std 0.04: 0.3 is only 2 std out
    t = make("dynamic", z_min=2.5, z_max=6.0, z_step=0.5).fit(x)
    assert t.z_ == 6.0
    assert t.threshold_ == pytest.approx(0.22 + 6.0 * 0.04, rel=1e-12)


# --- SPOT -------------------------------------------------------------------


def test_spot_close_to_theoretical_quantile_on_exponential_data() -> None:
    rate, risk, n = 2.0, 1e-4, 100_000
    x = np.random.default_rng(2).exponential(1.0 / rate, n)
    t = make("spot", risk=risk, level=0.98).fit(x)
    truth = -math.log(risk) / rate  # P(X > truth) = risk
    assert t.threshold_ == pytest.approx(truth, rel=0.05)
    assert t.excess_threshold_ == pytest.approx(np.quantile(x, 0.98), rel=0.02)
    assert t.sigma_ == pytest.approx(1.0 / rate, rel=0.1)  # exponential tail: GPD(gamma=0, sigma=1/rate)
    assert abs(t.gamma_) < 0.1
    assert t.n_excesses_ == pytest.approx(0.02 * n, rel=0.05) and t.n_ == n
    # independent POT estimate: scipy's GPD fit on all excesses over the same t
    # (within 1% only if libspot fits all of them, not just its default last 500)
    excesses = x[x > t.excess_threshold_] - t.excess_threshold_
    gamma, _, sigma = stats.genpareto.fit(excesses, floc=0.0)
    z_scipy = t.excess_threshold_ + sigma / gamma * ((risk * n / excesses.size) ** -gamma - 1.0)
    assert t.threshold_ == pytest.approx(z_scipy, rel=0.01)


def test_spot_risk_orders_thresholds() -> None:
    x = np.random.default_rng(8).exponential(1.0, 20_000)
    z = [make("spot", risk=r).fit(x).threshold_ for r in (1e-2, 1e-3, 1e-4)]
    assert z[0] < z[1] < z[2]
    assert z[0] == pytest.approx(math.log(100), rel=0.1)


@pytest.mark.parametrize(
    "scores",
    [np.array([1.0, 2.0, 3.0]), np.array([1.0, 2.0] * 50), np.full(500, 0.4)],
    ids=["too-short", "two-valued", "constant"],
)
def test_spot_degenerate_tail_falls_back_to_max(scores: np.ndarray) -> None:
    # libspot raises on the short and constant series, and on the two-valued
    # one returns 1.999999999999997 (all excesses ~0, sigma = -0.0), which
    # would flag half of the training data
    t = make("spot").fit(scores)
    assert t.threshold_ == scores.max()
    assert (t.sigma_, t.gamma_, t.n_excesses_, t.excess_threshold_) == (0.0, 0.0, 0.0, scores.max())
    assert not t.apply(scores).any()


def test_spot_single_excess_is_modelled_not_fallen_back() -> None:
    x = np.r_[np.full(999, 0.4), 0.6]
    t = make("spot").fit(x)
    assert t.n_excesses_ == 1.0 and t.sigma_ > 0.0
    assert t.threshold_ > 0.6


# --- fixed -----------------------------------------------------------------


@pytest.mark.parametrize("scores", [noisy_scores(), np.zeros(50), np.array([]), np.array([np.nan, np.nan])])
def test_fixed_is_k_whatever_the_training_scores(scores: np.ndarray) -> None:
    # it needs no data: a baseline-relative score is in sigmas before any fit
    t = make("fixed", k=6.0).fit(scores)
    assert t.threshold_ == 6.0 and t.get_state() == {"threshold": 6.0}
    assert t.apply(np.array([5.9, 6.0, 6.1, np.nan])).tolist() == [False, False, True, False]


def test_fixed_is_raised_to_the_floor_and_round_trips() -> None:
    assert make("fixed", k=0.0, floor=0.5).fit(np.ones(3)).threshold_ == 0.5
    config = ThresholdConfig(method="fixed", k=3.0)
    fitted = build_threshold(config).fit(noisy_scores())
    rebuilt = FixedThreshold.from_state(config, json.loads(json.dumps(fitted.get_state())))
    assert rebuilt.threshold_ == 3.0


def test_fixed_still_rejects_bad_scores() -> None:
    with pytest.raises(DataError, match=r"non-negative, got -1\.0 at index 0"):
        make("fixed").fit(np.array([-1.0]))


# --- build_threshold --------------------------------------------------------


def test_thresholds_cover_every_config_method() -> None:
    assert set(THRESHOLDS) == set(get_args(ThresholdMethod))
    expected = {
        "quantile": QuantileThreshold,
        "sigma": SigmaThreshold,
        "mad": MADThreshold,
        "dynamic": DynamicThreshold,
        "spot": SPOTThreshold,
        "fixed": FixedThreshold,
    }
    assert THRESHOLDS == expected
    assert [m for m, cls in THRESHOLDS.items() if not cls.needs_scores] == ["fixed"]


@pytest.mark.parametrize("method", get_args(ThresholdMethod))
def test_build_threshold_picks_class(method: str) -> None:
    config = ThresholdConfig(method=method)  # type: ignore[arg-type]
    t = build_threshold(config)
    assert type(t) is THRESHOLDS[method] and t.method == method and t.config is config
    assert not hasattr(t, "threshold_")  # __init__ learns nothing
    assert t.fit(noisy_scores()).threshold_ > 0.0


def test_build_threshold_rejects_unknown_method() -> None:
    config = ThresholdConfig()
    object.__setattr__(config, "method", "bogus")  # bypass the config's own check
    with pytest.raises(ConfigError, match="'bogus'"):
        build_threshold(config)


def test_class_ignores_config_method() -> None:
    # parameters come from the config, the method from the class
    config = dataclasses.replace(ThresholdConfig(), method="sigma", quantile=0.5)
    assert QuantileThreshold(config).fit(np.array([1.0, 2.0, 3.0])).threshold_ == 2.0
