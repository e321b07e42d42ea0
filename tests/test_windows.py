"""Tests for anomaly.core.windows: views not copies, window starts, and mapping windows back to points."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from anomaly.core.config import WindowConfig
from anomaly.errors import DataError
from anomaly.core.windows import (
    MAX_MISSING_FRACTION,
    aggregate_points,
    coverage_capacity,
    missing_counts,
    sliding_windows,
    training_starts,
    window_starts,
)

FAST = settings(max_examples=150, deadline=None)


def base_chain_contains(view: np.ndarray, target: np.ndarray) -> bool:
    b = view
    while b is not None:
        if b is target:
            return True
        b = getattr(b, "base", None)
    return False


def coverage(n: int, size: int, starts: np.ndarray) -> np.ndarray:
    cov = np.zeros(n, dtype=int)
    for s in starts:
        cov[s : s + size] += 1
    return cov


# --- sliding_windows ------------------------------------------------------------------


def test_sliding_windows_1d_contents_and_view() -> None:
    x = np.arange(6.0)
    w = sliding_windows(x, 3)
    assert w.shape == (4, 3, 1)
    expected = np.array([[0, 1, 2], [1, 2, 3], [2, 3, 4], [3, 4, 5]], dtype=float)[:, :, None]
    np.testing.assert_array_equal(w, expected)
    assert np.shares_memory(w, x)
    assert base_chain_contains(w, x)
    assert not w.flags.writeable
    x[3] = 99.0  # a view sees later changes to the series
    assert w[1, 2, 0] == 99.0 and w[3, 0, 0] == 99.0 and w[2, 1, 0] == 99.0


def test_sliding_windows_2d_contents() -> None:
    x = np.stack([np.arange(5.0), 10 * np.arange(5.0)], axis=1)  # (5, 2)
    w = sliding_windows(x, 2)
    assert w.shape == (4, 2, 2)
    for i in range(4):
        np.testing.assert_array_equal(w[i], [[i, 10 * i], [i + 1, 10 * (i + 1)]])
    assert np.shares_memory(w, x)
    assert base_chain_contains(w, x)


def test_sliding_windows_one_window_when_size_equals_length() -> None:
    x = np.arange(4.0)
    w = sliding_windows(x, 4)
    assert w.shape == (1, 4, 1)
    np.testing.assert_array_equal(w[0, :, 0], x)


def test_sliding_windows_too_short() -> None:
    with pytest.raises(DataError, match=r"3 points are fewer than one window \(size 5\)"):
        sliding_windows(np.zeros(3), 5)


def test_sliding_windows_of_a_long_series_allocate_nothing_big() -> None:
    n, size = 1_000_000, 100
    x = np.zeros(n, dtype=np.float32)
    tracemalloc.start()
    try:
        w = sliding_windows(x, size)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert w.shape == (n - size + 1, size, 1)
    assert w.dtype == np.float32
    assert np.shares_memory(w, x)
    assert base_chain_contains(w, x)
    # a copy would be ~400 MB (n * size * 4 bytes); a view costs a few hundred bytes
    assert peak < 2_000_000
    assert w.nbytes > 99 * x.nbytes  # nominal size is huge, yet nothing was allocated


@FAST
@given(n=st.integers(1, 300), data=st.data(), m=st.integers(1, 3))
def test_number_of_windows(n: int, data: st.DataObject, m: int) -> None:
    size = data.draw(st.integers(1, n))
    x = np.arange(n * m, dtype=float).reshape(n, m)
    w = sliding_windows(x, size)
    assert w.shape == (n - size + 1, size, m)
    i = data.draw(st.integers(0, n - size))
    np.testing.assert_array_equal(w[i], x[i : i + size])


# --- window_starts ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("n", "size", "stride", "expected"),
    [
        (10, 4, 1, [0, 1, 2, 3, 4, 5, 6]),
        (10, 4, 2, [0, 2, 4, 6]),
        (10, 4, 3, [0, 3, 6]),
        (10, 4, 4, [0, 4, 6]),  # final window added, aligned to the end
        (11, 4, 5, [0, 5, 7]),
        (10, 10, 5, [0]),
        (10, 10, 1, [0]),
        (7, 3, 3, [0, 3, 4]),
        (100, 10, 7, [0, 7, 14, 21, 28, 35, 42, 49, 56, 63, 70, 77, 84, 90]),
    ],
)
def test_window_starts_exact(n: int, size: int, stride: int, expected: list[int]) -> None:
    starts = window_starts(n, size, stride)
    assert starts.dtype == np.int64
    assert starts.tolist() == expected


@pytest.mark.parametrize(
    ("args", "pattern"),
    [
        ((3, 5, 1), r"3 points are fewer than one window \(size 5\)"),
        ((10, 4, 0), r"stride=0"),
        ((10, 4, -2), r"stride=-2"),
        ((10, 0, 1), r"size=0"),
    ],
)
def test_window_starts_errors(args: tuple[int, int, int], pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        window_starts(*args)


@pytest.mark.parametrize(("size", "stride", "expected"), [(10, 1, 12), (10, 5, 4), (10, 3, 6), (10, 10, 3), (3, 2, 4)])
def test_coverage_capacity_exact(size: int, stride: int, expected: int) -> None:
    assert coverage_capacity(size, stride) == expected


@pytest.mark.parametrize(
    ("n", "size", "stride", "phase", "expected"),
    [(10, 4, 3, 0, [0, 3, 6]), (10, 4, 3, 1, [0, 1, 4, 6]), (10, 4, 3, 2, [0, 2, 5, 6]), (10, 4, 3, -1, [0, 2, 5, 6])],
)
def test_window_starts_with_phase(n: int, size: int, stride: int, phase: int, expected: list[int]) -> None:
    assert window_starts(n, size, stride, phase).tolist() == expected


@FAST
@given(n=st.integers(30, 300), shift=st.integers(0, 20), data=st.data())
def test_phase_aligns_windows_to_absolute_positions(n: int, shift: int, data: st.DataObject) -> None:
    """Series starting ``shift`` points later, with phase -shift, share all interior windows."""
    size = data.draw(st.integers(2, 10))
    stride = data.draw(st.integers(1, size))
    whole = set(window_starts(n, size, stride).tolist())
    later = {s + shift for s in window_starts(n - shift, size, stride, phase=-shift).tolist()} if n - shift >= size else set()
    interior = {s for s in later if s >= shift + size and s + size <= n - size}
    assert interior <= whole


@FAST
@given(n=st.integers(2, 400), phase=st.integers(-50, 50), data=st.data())
def test_every_point_covered_within_capacity(n: int, phase: int, data: st.DataObject) -> None:
    size = data.draw(st.integers(1, n))
    stride = data.draw(st.integers(1, size))
    starts = window_starts(n, size, stride, phase)
    assert starts[0] == 0 and starts[-1] == n - size
    assert np.all(np.diff(starts) > 0) and np.all(np.diff(starts) <= stride)
    cov = coverage(n, size, starts)
    assert cov.min() >= 1
    assert cov.max() <= coverage_capacity(size, stride)


# --- aggregate_points -------------------------------------------------------------------------


def index_windows(k: int, size: int, f=lambda i: float(i)) -> np.ndarray:
    """Window i filled with f(i) everywhere; metric 2 is the negative of metric 1."""
    vals = np.array([f(i) for i in range(k)], dtype=float)
    one = np.repeat(vals[:, None], size, axis=1)
    return np.stack([one, -one], axis=2)  # (k, size, 2)


def test_aggregate_median_exact() -> None:
    # n=6, size=3, stride 1: windows 0..3; window i holds i**2
    recon = index_windows(4, 3, lambda i: float(i * i))
    out = aggregate_points(recon, np.arange(4), 0, 6, "median")
    # point p is covered by windows max(0, p-2)..min(p, 3)
    expected = [0.0, 0.5, 1.0, 4.0, 6.5, 9.0]
    assert out.shape == (6, 2)
    np.testing.assert_array_equal(out[:, 0], expected)
    np.testing.assert_array_equal(out[:, 1], -np.array(expected))


def test_aggregate_mean_exact() -> None:
    recon = index_windows(4, 3, lambda i: float(i * i))
    out = aggregate_points(recon, np.arange(4), 0, 6, "mean")
    expected = [0.0, 0.5, 5 / 3, 14 / 3, 6.5, 9.0]
    np.testing.assert_allclose(out[:, 0], expected, rtol=1e-15)
    np.testing.assert_allclose(out[:, 1], -np.array(expected), rtol=1e-15)


def test_aggregate_uses_position_within_window() -> None:
    # recon[i, j] = 10*i + j, starts 0, 2, 3 (size 3, n 6)
    starts = np.array([0, 2, 3])
    recon = (10 * np.arange(3)[:, None] + np.arange(3)[None, :]).astype(float)[:, :, None]
    # point 0: w0 j0 -> 0; 1: w0 j1 -> 1; 2: w0 j2=2, w1 j0=10; 3: w1 j1=11, w2 j0=20;
    # 4: w1 j2=12, w2 j1=21; 5: w2 j2=22
    out = aggregate_points(recon, starts, 0, 6, "median")
    np.testing.assert_array_equal(out[:, 0], [0.0, 1.0, 6.0, 15.5, 16.5, 22.0])
    mean = aggregate_points(recon, starts, 0, 6, "mean")
    np.testing.assert_array_equal(mean[:, 0], [0.0, 1.0, 6.0, 15.5, 16.5, 22.0])


def test_aggregate_median_of_odd_and_even_counts() -> None:
    # three windows all covering point 2 (size 3, starts 0,1,2), values 5, 1, 3 -> median 3
    recon = np.array([5.0, 1.0, 3.0])[:, None, None] * np.ones((1, 3, 1))
    out = aggregate_points(recon, np.array([0, 1, 2]), 0, 5, "median")
    np.testing.assert_array_equal(out[:, 0], [5.0, 3.0, 3.0, 2.0, 3.0])


def test_points_covered_by_no_window_are_nan() -> None:
    recon = index_windows(2, 2)  # windows at 0 and 5, size 2, over 8 points
    for method in ("median", "mean"):
        out = aggregate_points(recon, np.array([0, 5]), 0, 8, method)  # type: ignore[arg-type]
        assert np.isnan(out[[2, 3, 4, 7]]).all()
        np.testing.assert_array_equal(out[[0, 1, 5, 6], 0], [0.0, 0.0, 1.0, 1.0])


def test_aggregate_with_offset_and_partial_windows() -> None:
    # windows start at 0, 2, 4 (size 3) over 7 points; ask for points 3..5 only
    recon = index_windows(3, 3)
    out = aggregate_points(recon, np.array([0, 2, 4]), 3, 3, "median")
    # point 3: w1; point 4: w1, w2; point 5: w2
    np.testing.assert_array_equal(out[:, 0], [1.0, 1.5, 2.0])


def test_aggregate_no_windows_is_all_nan() -> None:
    out = aggregate_points(np.empty((0, 4, 2)), np.array([], dtype=np.int64), 0, 5)
    assert out.shape == (5, 2) and np.isnan(out).all()


def test_aggregate_mismatched_starts() -> None:
    with pytest.raises(DataError, match=r"2 window starts for 3 reconstructions"):
        aggregate_points(np.zeros((3, 4, 1)), np.array([0, 1]), 0, 6)


def test_aggregate_nan_reconstruction_ignored_by_median() -> None:
    recon = np.array([1.0, np.nan, 5.0])[:, None, None] * np.ones((1, 3, 1))
    out = aggregate_points(recon, np.array([0, 1, 2]), 0, 5, "median")
    # point 2 is covered by all three: median of 1 and 5, the NaN window skipped
    np.testing.assert_array_equal(out[:, 0], [1.0, 1.0, 3.0, 5.0, 5.0])


def brute_force(recon: np.ndarray, starts: np.ndarray, n: int, method: str) -> np.ndarray:
    k, size, m = recon.shape
    out = np.full((n, m), np.nan)
    for p in range(n):
        vals = [recon[i, p - s] for i, s in enumerate(starts) if s <= p < s + size]
        if vals:
            out[p] = np.median(vals, axis=0) if method == "median" else np.mean(vals, axis=0)
    return out


@settings(max_examples=120, deadline=None)
@given(
    n=st.integers(2, 80),
    data=st.data(),
    m=st.integers(1, 2),
    method=st.sampled_from(["median", "mean"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_aggregate_matches_brute_force(n: int, data: st.DataObject, m: int, method: str, seed: int) -> None:
    size = data.draw(st.integers(1, n))
    stride = data.draw(st.integers(1, size))
    starts = window_starts(n, size, stride)
    recon = np.random.default_rng(seed).normal(size=(len(starts), size, m))
    out = aggregate_points(recon, starts, 0, n, method)  # type: ignore[arg-type]
    np.testing.assert_allclose(out, brute_force(recon, starts, n, method), rtol=1e-12, atol=1e-12)


@settings(max_examples=150, deadline=None)
@given(
    n=st.integers(2, 200),
    data=st.data(),
    m=st.integers(1, 2),
    method=st.sampled_from(["median", "mean"]),
    seed=st.integers(0, 2**32 - 1),
)
def test_chunked_equals_whole(n: int, data: st.DataObject, m: int, method: str, seed: int) -> None:
    size = data.draw(st.integers(1, n), label="size")
    stride = data.draw(st.integers(1, size), label="stride")
    chunk = data.draw(st.integers(1, n), label="chunk")
    starts = window_starts(n, size, stride)
    cap = coverage_capacity(size, stride)
    recon = np.random.default_rng(seed).normal(size=(len(starts), size, m))
    whole = aggregate_points(recon, starts, 0, n, method, cap)  # type: ignore[arg-type]
    assert not np.isnan(whole).any()
    parts = []
    for a in range(0, n, chunk):  # exactly as anomaly.core.scoring.reconstruct slices
        b = min(a + chunk, n)
        lo = int(np.searchsorted(starts, a - size + 1))
        hi = int(np.searchsorted(starts, b))
        parts.append(aggregate_points(recon[lo:hi], starts[lo:hi], a, b - a, method, cap))  # type: ignore[arg-type]
    np.testing.assert_allclose(np.concatenate(parts), whole, rtol=1e-12, atol=1e-12)


# --- training_starts with gaps ------------------------------------------------------------


def test_training_starts_keep_only_gap_free_windows_while_they_are_most() -> None:
    window = WindowConfig(size=10, train_stride=1, max_train_windows=None)
    missing = np.zeros(100, dtype=bool)
    missing[[20, 60]] = True  # 20 of the 91 windows hold a gap
    starts = training_starts(100, window, missing)
    assert starts.tolist() == [s for s in range(91) if not (s <= 20 < s + 10 or s <= 60 < s + 10)]
    np.testing.assert_array_equal(training_starts(100, window), np.arange(91))  # gap-free data: every window


def test_training_starts_admit_windows_with_a_few_missing_points_when_gaps_are_everywhere() -> None:
    window = WindowConfig(size=20, train_stride=1, max_train_windows=None)
    missing = np.zeros(200, dtype=bool)
    missing[::15] = True  # no 20-point window is gap-free; each misses 1 or 2 points
    missing[100:110] = True  # a long outage: windows over it miss more than a quarter
    starts = training_starts(200, window, missing)
    counts = missing_counts(starts, 20, missing)
    assert len(starts) > 100 and counts.min() >= 1 and counts.max() <= MAX_MISSING_FRACTION * 20
    everything = np.arange(181)
    assert set(everything) - set(starts) == {s for s in everything if missing_counts(np.array([s]), 20, missing)[0] > 5}
