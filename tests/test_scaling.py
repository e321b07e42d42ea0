"""Tests for anomaly.core.scaling: exact parameters per kind, edge cases, serialisation, round trips."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from sklearn.preprocessing import MinMaxScaler, RobustScaler, StandardScaler

from anomaly.errors import DataError, NotFittedError
from anomaly.core.scaling import SCALED_LIMIT, Scaler

KINDS = ["minmax", "standard", "robust"]


def test_minmax_maps_training_range_to_minus_one_one() -> None:
    x = np.array([[0.0, -3.0], [10.0, 5.0], [2.5, 1.0], [7.5, -1.0]])
    s = Scaler("minmax").fit(x)
    np.testing.assert_array_equal(s.center_, [5.0, 1.0])
    np.testing.assert_array_equal(s.scale_, [5.0, 4.0])
    z = s.transform(x)
    assert z.dtype == np.float32
    np.testing.assert_array_equal(z, [[-1.0, -1.0], [1.0, 1.0], [-0.5, 0.0], [0.5, -0.5]])
    assert z.min(axis=0).tolist() == [-1.0, -1.0] and z.max(axis=0).tolist() == [1.0, 1.0]
    # outside the training range goes outside [-1, 1]
    np.testing.assert_array_equal(s.transform(np.array([[15.0, 9.0]])), [[2.0, 2.0]])


def test_standard_gives_zero_mean_unit_std() -> None:
    x = np.array([2.0, 4, 4, 4, 5, 5, 7, 9])  # mean 5, population std 2
    s = Scaler("standard").fit(x)
    assert s.center_.tolist() == [5.0] and s.scale_.tolist() == [2.0]
    z = s.transform(x)
    assert z.shape == (8, 1)
    np.testing.assert_array_equal(z[:, 0], [-1.5, -0.5, -0.5, -0.5, 0.0, 0.0, 1.0, 2.0])
    assert z.mean() == 0.0 and z.std() == 1.0


def test_standard_random_data_has_mean_zero_std_one() -> None:
    x = np.random.default_rng(1).normal(40.0, 7.0, size=(500, 3))
    z = Scaler("standard").fit(x).transform(x).astype(np.float64)
    np.testing.assert_allclose(z.mean(axis=0), 0.0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=0), 1.0, atol=1e-6)


#: The IQR of a unit normal, Φ⁻¹(0.75) - Φ⁻¹(0.25): what scikit-learn's ``unit_variance`` divides by.
NORMAL_IQR = 1.3489795003921634


def test_robust_uses_median_and_iqr() -> None:
    x = np.array([1.0, 2.0, 3.0, 4.0, 100.0])  # q1 2, median 3, q3 4
    s = Scaler("robust").fit(x)
    assert s.center_.tolist() == [3.0]
    assert s.scale_[0] == pytest.approx(2.0 / NORMAL_IQR, rel=1e-15)
    z = s.transform(np.array([3.0, 5.0]))
    np.testing.assert_allclose(z[:, 0], [0.0, NORMAL_IQR], rtol=1e-6)


def test_robust_zero_iqr_is_no_spread_but_an_iqr_of_one_is_kept() -> None:
    spiky = np.array([0.0] * 9 + [50.0])  # varies, but its quartiles are equal
    s = Scaler("robust").fit(np.column_stack([spiky, [0.0, 1, 1, 1, 1.5, 2, 2, 2, 2, 3]]))  # IQR 1
    assert s.scale_[0] == 1.0
    assert s.scale_[1] == pytest.approx(1.0 / NORMAL_IQR, rel=1e-15)


def test_state_is_the_sklearn_estimators_statistics() -> None:
    x = np.random.default_rng(5).gamma(2.0, 3.0, size=(300, 2)) + [0.0, 1e4]
    x[::7, 0] = np.nan  # gaps are ignored by both
    minmax = MinMaxScaler(feature_range=(-1, 1)).fit(x)
    s = Scaler("minmax").fit(x)
    np.testing.assert_array_equal(s.center_, (minmax.data_min_ + minmax.data_max_) / 2)
    np.testing.assert_array_equal(s.scale_, minmax.data_range_ / 2)
    standard = StandardScaler().fit(x)
    s = Scaler("standard").fit(x)
    np.testing.assert_array_equal(s.center_, standard.mean_)
    np.testing.assert_array_equal(s.scale_, np.sqrt(standard.var_))
    robust = RobustScaler(unit_variance=True).fit(x)
    s = Scaler("robust").fit(x)
    np.testing.assert_array_equal(s.center_, robust.center_)
    np.testing.assert_array_equal(s.scale_, robust.scale_)


def test_minmax_transform_within_one_ulp_of_sklearns() -> None:
    x = np.random.default_rng(6).normal(3.0, 2.0, size=(200, 2))
    ours = Scaler("minmax").fit(x).transform(x)
    theirs = MinMaxScaler(feature_range=(-1, 1)).fit(x).transform(x).astype(np.float32)
    np.testing.assert_array_max_ulp(ours, theirs, maxulp=1)


def test_a_saved_scaler_loads_and_transforms_without_sklearn() -> None:
    code = (
        "import sys, numpy as np; from anomaly.core.scaling import Scaler; "
        "s = Scaler.from_dict({'kind': 'minmax', 'center': [5.0], 'scale': [2.5]}); "
        "assert s.transform(np.array([10.0]))[0, 0] == 2.0; assert 'sklearn' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_robust_is_unmoved_by_an_outlier() -> None:
    a = Scaler("robust").fit(np.array([1.0, 2.0, 3.0, 4.0, 5.0]))
    b = Scaler("robust").fit(np.array([1.0, 2.0, 3.0, 4.0, 1e9]))
    assert a.center_.tolist() == b.center_.tolist()
    assert a.scale_.tolist() == b.scale_.tolist()


@pytest.mark.parametrize("kind", KINDS)
def test_nan_ignored_in_fit(kind: str) -> None:
    clean = np.array([[0.0, 1.0], [4.0, 3.0], [10.0, 2.0], [6.0, 8.0]])
    gappy = np.array([[0.0, np.nan], [np.nan, 1.0], [4.0, 3.0], [10.0, 2.0], [6.0, 8.0], [np.nan, np.nan]])
    a, b = Scaler(kind).fit(clean), Scaler(kind).fit(gappy)  # type: ignore[arg-type]
    np.testing.assert_array_equal(a.center_, b.center_)
    np.testing.assert_array_equal(a.scale_, b.scale_)
    z = b.transform(gappy)
    assert np.isnan(z).tolist() == np.isnan(gappy).tolist()  # NaN stays NaN


@pytest.mark.parametrize("kind", KINDS)
def test_constant_series_has_unit_scale(kind: str) -> None:
    x = np.array([[5.0, 1.0], [5.0, 2.0], [5.0, 3.0]])
    s = Scaler(kind).fit(x)  # type: ignore[arg-type]
    assert s.center_[0] == 5.0 and s.scale_[0] == 1.0
    z = s.transform(np.array([[5.0, 2.0], [7.5, 2.0], [4.0, 2.0]]))
    assert np.isfinite(z).all()
    np.testing.assert_array_equal(z[:, 0], [0.0, 2.5, -1.0])  # departures show up, unscaled


@pytest.mark.parametrize("kind", KINDS)
def test_large_constant_series_has_unit_scale(kind: str) -> None:
    s = Scaler(kind).fit(np.full(10, 1e9))  # type: ignore[arg-type]
    assert s.scale_.tolist() == [1.0]
    assert s.transform(np.array([1e9 + 3.0]))[0, 0] == 3.0


def test_all_nan_column_cannot_be_fitted() -> None:
    with pytest.raises(DataError, match="column 1 has no values"):
        Scaler().fit(np.array([[1.0, np.nan], [2.0, np.nan]]))


def test_unknown_kind() -> None:
    with pytest.raises(DataError, match="unknown scaler kind 'zscore'"):
        Scaler("zscore").fit(np.arange(3.0))  # type: ignore[arg-type]


@pytest.mark.parametrize("kind", KINDS)
def test_to_dict_is_plain_json_and_round_trips_exactly(kind: str) -> None:
    x = np.random.default_rng(3).normal(size=(50, 3)) * [1.0, 1e-3, 1e5] + [0.1, -7.3, 1e7]
    s = Scaler(kind).fit(x)  # type: ignore[arg-type]
    d = s.to_dict()
    assert set(d) == {"kind", "center", "scale"}
    assert d["kind"] == kind
    assert all(type(v) is float for v in d["center"] + d["scale"])
    text = json.dumps(d)
    back = Scaler.from_dict(json.loads(text))
    assert back.kind == kind
    assert back.center_.dtype == np.float64
    np.testing.assert_array_equal(back.center_, s.center_)
    np.testing.assert_array_equal(back.scale_, s.scale_)
    np.testing.assert_array_equal(back.transform(x), s.transform(x))


@pytest.mark.parametrize(
    ("data", "pattern"),
    [
        ({"kind": "minmax", "center": [0.0]}, "invalid scaler parameters"),
        ({"kind": "minmax", "center": [0.0], "scale": [0.0]}, r"scale \[0\.0\]"),
        ({"kind": "minmax", "center": [0.0], "scale": [-1.0]}, r"scale \[-1\.0\]"),
        ({"kind": "minmax", "center": [0.0, 1.0], "scale": [1.0]}, r"center \[0\.0, 1\.0\], scale \[1\.0\]"),
        ({"kind": "minmax", "center": ["a"], "scale": [1.0]}, "invalid scaler parameters"),
    ],
)
def test_from_dict_rejects_bad_parameters(data: dict, pattern: str) -> None:
    with pytest.raises(DataError, match=pattern):
        Scaler.from_dict(data)


@pytest.mark.parametrize("kind", KINDS)
def test_inverse_transform_inverts_transform(kind: str) -> None:
    x = np.array([[0.0, 100.0], [1.0, 150.0], [4.0, 125.0], [2.0, 175.0], [3.0, 110.0]])
    s = Scaler(kind).fit(x)  # type: ignore[arg-type]
    back = s.inverse_transform(s.transform(x))
    assert back.dtype == np.float64
    np.testing.assert_allclose(back, x, rtol=1e-6, atol=1e-6)  # float32 in between


def test_inverse_transform_exact_values() -> None:
    s = Scaler("minmax").fit(np.array([0.0, 10.0]))
    np.testing.assert_array_equal(s.inverse_transform(np.array([-1.0, 0.0, 1.0, 3.0]))[:, 0], [0.0, 5.0, 10.0, 20.0])


@pytest.mark.parametrize("method", ["transform", "inverse_transform"])
def test_wrong_number_of_metrics_names_both_counts(method: str) -> None:
    s = Scaler().fit(np.zeros((4, 2)) + np.arange(4)[:, None])
    with pytest.raises(DataError, match=r"the data has 3 metrics, but the scaler was fitted on 2"):
        getattr(s, method)(np.zeros((4, 3)))
    with pytest.raises(DataError, match=r"has 1 metrics.*fitted on 2"):
        getattr(s, method)(np.zeros(4))


@pytest.mark.parametrize("method", ["transform", "inverse_transform", "to_dict"])
def test_not_fitted(method: str) -> None:
    s = Scaler()
    with pytest.raises(NotFittedError, match="not fitted"):
        if method == "to_dict":
            s.to_dict()
        else:
            getattr(s, method)(np.zeros((3, 1)))


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@settings(max_examples=200, deadline=None)
@given(
    x=hnp.arrays(np.float64, hnp.array_shapes(min_dims=2, max_dims=2, min_side=1, max_side=20), elements=finite),
    kind=st.sampled_from(KINDS),
)
def test_round_trip_property(x: np.ndarray, kind: str) -> None:
    s = Scaler(kind).fit(x)  # type: ignore[arg-type]
    assert np.all(s.scale_ > 0) and np.isfinite(s.scale_).all() and np.isfinite(s.center_).all()
    z = s.transform(x)
    assert np.isfinite(z).all()
    if kind == "minmax":
        assert z.min() >= -1.0 and z.max() <= 1.0
    back = s.inverse_transform(z)
    # the transform is float32 (what the model eats): exact up to float32 rounding within
    # ±SCALED_LIMIT spreads, and saturated there beyond it (a robust scale can be tiny)
    within = np.abs((x - s.center_) / s.scale_) < SCALED_LIMIT
    tol = 1e-6 * (np.abs(x - s.center_) + s.scale_)
    assert np.all((np.abs(back - x) <= tol)[within])
    assert np.all(np.abs(z[~within]) == np.float32(SCALED_LIMIT))
