"""Tests for the pure maths of anomaly.core.scoring: point errors, combining metrics, smoothing."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from anomaly.core.scoring import (
    baseline_minimum,
    baseline_scores,
    combine,
    last_observed,
    point_errors,
    smooth,
    standardise,
)

NAN = np.nan


# --- point_errors ------------------------------------------------------------------------


def test_point_errors_abs_exact() -> None:
    scaled = np.array([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.0]], dtype=np.float32)
    recon = np.array([[0.5, 2.5], [3.0, 6.0], [1.0, -0.25]])
    out = point_errors(scaled, recon, "abs")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [[0.5, 0.5], [0.0, 2.0], [2.0, 0.25]])


def test_point_errors_squared_exact() -> None:
    scaled = np.array([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.0]])
    recon = np.array([[0.5, 2.5], [3.0, 6.0], [1.0, -0.25]])
    np.testing.assert_array_equal(point_errors(scaled, recon, "squared"), [[0.25, 0.25], [0.0, 4.0], [4.0, 0.0625]])


def test_point_errors_power_raises_the_absolute_difference() -> None:
    scaled = np.array([[1.0, 2.0], [3.0, 4.0], [-1.0, 0.0]])
    recon = np.array([[0.75, 2.0], [3.0, 7.0], [1.0, -0.25]])
    out = point_errors(scaled, recon, "power", 1.5)
    np.testing.assert_allclose(out, [[0.125, 0.0], [0.0, 3.0**1.5], [2.0**1.5, 0.125]], rtol=1e-12)
    # powers 1 and 2 are the other two kinds, and a larger miss gains on a smaller one as the power grows
    np.testing.assert_allclose(point_errors(scaled, recon, "power", 1.0), point_errors(scaled, recon, "abs"))
    np.testing.assert_allclose(point_errors(scaled, recon, "power", 2.0), point_errors(scaled, recon, "squared"))
    assert out[1, 1] / out[0, 0] > 3.0 / 0.25


def test_point_errors_default_is_abs_and_nan_propagates() -> None:
    out = point_errors(np.array([[1.0], [NAN]]), np.array([[3.0], [0.0]]))
    assert out[0, 0] == 2.0 and np.isnan(out[1, 0])


# --- combine -------------------------------------------------------------------------------

ERRORS = np.array([[1.0, 3.0, 2.0], [NAN, 2.0, 4.0], [NAN, NAN, NAN], [4.0, 0.0, NAN], [NAN, NAN, 5.0]])


def test_combine_mean_exact_with_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = combine(ERRORS, "mean")
    np.testing.assert_array_equal(out, [2.0, 3.0, NAN, 2.0, 5.0])


def test_combine_max_exact_with_nan() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = combine(ERRORS, "max")
    np.testing.assert_array_equal(out, [3.0, 4.0, NAN, 4.0, 5.0])


def test_combine_default_is_mean() -> None:
    np.testing.assert_array_equal(combine(ERRORS), combine(ERRORS, "mean"))


def test_combine_single_metric_is_a_copy() -> None:
    errors = np.array([[1.0], [NAN], [3.0]])
    out = combine(errors, "max")
    np.testing.assert_array_equal(out, [1.0, NAN, 3.0])
    out[0] = 99.0
    assert errors[0, 0] == 1.0


def test_combine_leaves_warning_filters_alone() -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        combine(ERRORS, "mean")
        combine(ERRORS, "max")
        np.nanmean(np.array([NAN, NAN]))  # outside combine, the warning is still raised
    assert len(caught) == 1 and issubclass(caught[0].category, RuntimeWarning)


# --- smooth -----------------------------------------------------------------------------------


@pytest.mark.parametrize("span", [0, 1])
def test_smooth_span_zero_or_one_is_identity(span: int) -> None:
    x = np.array([[0.0, 1.0], [4.0, NAN], [8.0, 2.0]])
    out = smooth(x, span)
    np.testing.assert_array_equal(out, x)
    assert out.shape == x.shape


def test_smooth_exact_span_three() -> None:
    # span 3 -> alpha 0.5: y_t = 0.5 x_t + 0.5 y_{t-1}, y_0 = x_0
    x = np.array([[0.0, 8.0], [4.0, 0.0], [8.0, 0.0], [0.0, 4.0]])
    out = smooth(x, 3)
    np.testing.assert_array_equal(out, [[0.0, 8.0], [2.0, 4.0], [5.0, 2.0], [2.5, 3.0]])


def test_smooth_equals_pandas_ewm_adjust_false() -> None:
    x = np.random.default_rng(0).gamma(2.0, 0.1, size=(200, 3))
    for span in (2, 5, 30):
        expected = pd.DataFrame(x).ewm(span=span, adjust=False).mean().to_numpy()
        np.testing.assert_allclose(smooth(x, span), expected, rtol=1e-14)


def test_smooth_nan_positions_stay_nan_and_are_skipped() -> None:
    x = np.array([[NAN], [0.0], [NAN], [4.0], [8.0], [NAN]])
    out = smooth(x, 3)
    assert np.isnan(out[[0, 2, 5], 0]).all()
    # NaN rows are skipped: 0 -> (0.5*4 + 0.5*0) = 2 -> (0.5*8 + 0.5*2) = 5
    np.testing.assert_array_equal(out[[1, 3, 4], 0], [0.0, 2.0, 5.0])


def test_smooth_does_not_modify_input() -> None:
    x = np.array([[1.0], [NAN], [3.0]])
    before = x.copy()
    smooth(x, 4)
    np.testing.assert_array_equal(x, before)


def reference_ewm(x: np.ndarray, span: int) -> np.ndarray:
    """Plain recursion, per column, skipping NaN."""
    alpha = 2.0 / (span + 1.0)
    out = np.full_like(x, np.nan)
    for j in range(x.shape[1]):
        prev = np.nan
        for i in range(x.shape[0]):
            if np.isnan(x[i, j]):
                continue
            prev = x[i, j] if np.isnan(prev) else alpha * x[i, j] + (1 - alpha) * prev
            out[i, j] = prev
    return out


values = st.floats(0.0, 1e3, allow_nan=False, allow_subnormal=False)
maybe_nan = st.one_of(values, st.just(np.nan))


@settings(max_examples=150, deadline=None)
@given(
    x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=40), elements=maybe_nan),
    span=st.integers(2, 50),
)
def test_smooth_matches_recursion_property(x: np.ndarray, span: int) -> None:
    out = smooth(x, span)
    assert out.shape == x.shape
    assert np.isnan(out).tolist() == np.isnan(x).tolist()
    np.testing.assert_allclose(out, reference_ewm(x, span), rtol=1e-9, atol=1e-9)


@settings(max_examples=150, deadline=None)
@given(
    x=hnp.arrays(np.float64, st.tuples(st.integers(2, 60), st.integers(1, 3)), elements=maybe_nan),
    span=st.integers(2, 50),
    data=st.data(),
)
def test_smooth_is_causal(x: np.ndarray, span: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(x) - 1), label="changed row")
    new = data.draw(maybe_nan, label="new value")
    col = data.draw(st.integers(0, x.shape[1] - 1), label="column")
    changed = x.copy()
    changed[k:, col] = new  # change the row and everything after it
    before, after = smooth(x, span), smooth(changed, span)
    np.testing.assert_array_equal(after[:k], before[:k])


# --- standardise (scores relative to the recent baseline) --------------------


def reference_standardise(x: np.ndarray, window: int, floor: float) -> np.ndarray:
    """Each point against the observed scores among the ``window`` before it, by hand."""
    out = np.full(len(x), np.nan)
    for i in range(len(x)):
        past = x[max(0, i - window) : i]
        past = past[~np.isnan(past)]
        if np.isnan(x[i]) or len(past) < baseline_minimum(window):
            continue
        out[i] = max((x[i] - past.mean()) / max(past.std(), floor), 0.0)
    return out


def test_standardise_exact_small_case() -> None:
    x = np.array([1.0, 3.0, 1.0, 3.0, 7.0, 0.0])
    z = standardise(x, 4, 1e-3)
    # window 4 needs 2 earlier points; point 4 sees [1, 3, 1, 3]: mean 2, std 1
    np.testing.assert_allclose(z, [np.nan, np.nan, 0.0, (4 / 3) / np.sqrt(8 / 9), 5.0, 0.0], equal_nan=True)
    assert np.isnan(z[:2]).all() and z[-1] == 0.0  # below the baseline is not anomalous


def test_standardise_floor_caps_the_score_of_a_flat_baseline() -> None:
    x = np.r_[np.full(20, 0.2), 0.25]
    assert standardise(x, 10, 0.01)[-1] == pytest.approx(5.0)  # 0.05 above, std 0 -> floor 0.01


@settings(max_examples=100, deadline=None)
@given(
    x=hnp.arrays(np.float64, st.integers(1, 80), elements=st.one_of(st.floats(0.0, 10.0), st.just(np.nan))),
    window=st.integers(2, 30),
    floor=st.sampled_from([1e-3, 0.1]),
)
def test_standardise_matches_reference(x: np.ndarray, window: int, floor: float) -> None:
    np.testing.assert_allclose(standardise(x, window, floor), reference_standardise(x, window, floor), rtol=1e-6, atol=1e-9, equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(
    x=hnp.arrays(np.float64, st.tuples(st.integers(2, 60), st.integers(1, 3)), elements=maybe_nan),
    window=st.integers(2, 20),
    data=st.data(),
)
def test_standardise_is_causal_and_per_column(x: np.ndarray, window: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(0, len(x) - 1), label="changed row")
    changed = x.copy()
    changed[k:, 0] = data.draw(maybe_nan, label="new value")
    before, after = standardise(x, window, 1e-3), standardise(changed, window, 1e-3)
    assert before.shape == x.shape
    np.testing.assert_array_equal(after[:k], before[:k])
    np.testing.assert_array_equal(after[:, 1:], before[:, 1:])


@given(
    x=hnp.arrays(np.float64, (40, 2), elements=st.floats(0, 10) | st.just(np.nan)),
    split=st.integers(1, 39),
    span=st.integers(2, 12),
)
def test_smoothing_continued_from_the_last_observed_value_equals_smoothing_everything(
    x: np.ndarray, split: int, span: int
) -> None:
    whole = smooth(x, span)
    continued = smooth(x[split:], span, start=last_observed(whole[:split]))
    np.testing.assert_allclose(continued, whole[split:], rtol=1e-12, equal_nan=True)


def test_last_observed_skips_missing_values_per_column() -> None:
    rows = np.array([[1.0, 5.0], [2.0, np.nan], [np.nan, np.nan]])
    np.testing.assert_array_equal(last_observed(rows), [2.0, 5.0])
    assert np.isnan(last_observed(np.full((3, 1), np.nan))).all()
    assert np.isnan(last_observed(np.empty((0, 2)))).all() and last_observed(np.empty((0, 2))).shape == (2,)


# --- points kept out of the baseline, and its warm-up -------------------------------------


def reference_excluding(x: np.ndarray, window: int, floor: float, exclude: float, hold: int, minimum: int) -> np.ndarray:
    """By hand, one point at a time: a point above ``exclude`` leaves later baselines, with the ``hold`` points after it."""
    out = np.full(len(x), np.nan)
    kept = np.zeros(len(x), dtype=bool)
    last = -(10**9)
    for i in range(len(x)):
        lo = max(0, i - window)
        past = x[lo:i][kept[lo:i]]
        if not np.isnan(x[i]) and len(past) >= minimum:
            out[i] = max((x[i] - past.mean()) / max(past.std(), floor), 0.0)
        if out[i] > exclude:
            last = i
        kept[i] = not np.isnan(x[i]) and i - last > hold
    return out


def test_a_small_spike_after_a_large_one_is_measured_against_the_baseline_before_both() -> None:
    x = np.r_[np.tile([1.0, 1.2], 30), 50.0, np.tile([1.0, 1.2], 10), 2.0, np.tile([1.0, 1.2], 5)]
    small = 60 + 1 + 20
    everything = standardise(x, 40, 1e-3)
    excluding = standardise(x, 40, 1e-3, exclude=4.5, hold=2)
    assert everything[small] < 1.0  # the large spike's square dominates the deviation: the small one hides
    kept = np.r_[x[small - 40 : 60], x[63:small]]  # the spike and the 2 points of its hold are out
    assert excluding[small] == pytest.approx((2.0 - kept.mean()) / kept.std()) and excluding[small] > 8.5
    np.testing.assert_array_equal(excluding[:61], everything[:61])  # nothing changes before the first exclusion


@settings(max_examples=150, deadline=None)
@given(
    x=hnp.arrays(np.float64, st.integers(1, 120), elements=st.one_of(st.floats(0.0, 10.0), st.floats(20.0, 100.0), st.just(np.nan))),
    window=st.integers(2, 30),
    exclude=st.floats(0.5, 5.0),
    hold=st.integers(0, 15),
    minimum=st.integers(2, 12),
)
def test_excluding_matches_reference(x: np.ndarray, window: int, exclude: float, hold: int, minimum: int) -> None:
    minimum = min(minimum, window)
    got = standardise(x, window, 1e-3, minimum=minimum, exclude=exclude, hold=hold)
    np.testing.assert_allclose(got, reference_excluding(x, window, 1e-3, exclude, hold, minimum), rtol=1e-6, atol=1e-9, equal_nan=True)


@settings(max_examples=100, deadline=None)
@given(
    x=hnp.arrays(np.float64, (90, 2), elements=st.one_of(st.floats(0.0, 10.0), st.floats(20.0, 100.0), st.just(np.nan))),
    split=st.integers(1, 89),
    hold=st.integers(0, 15),
)
def test_excluding_continued_from_the_held_counts_equals_one_pass(x: np.ndarray, split: int, hold: int) -> None:
    window = 20
    whole, counts = baseline_scores(x, window, 1e-3, exclude=2.0, hold=hold)
    a = max(0, split - window)  # what a carry keeps: the last window of points and their counts
    continued, _ = baseline_scores(x[a:], window, 1e-3, exclude=2.0, hold=hold, held=counts[a:split])
    np.testing.assert_allclose(continued[split - a :], whole[split:], rtol=1e-9, atol=1e-12, equal_nan=True)
    assert (counts[~np.isnan(whole) & (whole > 2.0)] == hold + 1).all()  # each point above starts a full hold


def test_baseline_warmup_delays_the_first_score_but_never_past_the_window() -> None:
    assert baseline_minimum(1000) == 250 and baseline_minimum(1000, 432) == 432 and baseline_minimum(1000, 2160) == 1000
    x = np.abs(np.sin(np.arange(200.0)))
    z = standardise(x, 100, 1e-3, minimum=baseline_minimum(100, 60))
    assert np.isnan(z[:60]).all() and not np.isnan(z[60:]).any()
