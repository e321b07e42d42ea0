"""Tests for anomaly.core.data: every accepted input form, the grid, gap filling and every rejection."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly.core.config import PreprocessConfig
from anomaly.core.data import (
    MetricFrame,
    epoch_seconds,
    infer_freq,
    normalise,
    read_table,
    require_length,
    to_grid,
    with_context,
)
from anomaly.errors import DataError

T0 = pd.Timestamp("2024-01-01 00:00:00", tz="UTC")
MIN = pd.Timedelta("1min")


def grid(n: int, start: pd.Timestamp = T0, freq: str = "1min") -> pd.DatetimeIndex:
    return pd.date_range(start, periods=n, freq=freq, name="timestamp")


def wide_frame() -> pd.DataFrame:
    """Two metrics on a 1-minute naive DatetimeIndex."""
    idx = pd.date_range("2024-01-01", periods=5, freq="1min")
    return pd.DataFrame({"cpu": [1.0, 2.0, 3.0, 4.0, 5.0], "mem": [10.0, 20.0, 30.0, 40.0, 50.0]}, index=idx)


def long_frame() -> pd.DataFrame:
    """The same data as :func:`wide_frame` in long form, rows shuffled."""
    wide = wide_frame()
    rows = [
        {"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "metric": m, "value": wide.loc[ts, m]}
        for ts in wide.index
        for m in wide.columns
    ]
    order = [7, 0, 9, 3, 1, 8, 2, 6, 4, 5]
    return pd.DataFrame([rows[i] for i in order])


def assert_expected_wide(mf: MetricFrame) -> None:
    expected = pd.DataFrame(
        {"cpu": [1.0, 2.0, 3.0, 4.0, 5.0], "mem": [10.0, 20.0, 30.0, 40.0, 50.0]}, index=grid(5)
    )
    pd.testing.assert_frame_equal(mf.values, expected, check_freq=False)
    assert mf.freq == MIN
    assert mf.metrics == ["cpu", "mem"]
    assert not mf.filled.to_numpy().any()
    assert list(mf.filled.columns) == ["cpu", "mem"]
    assert mf.filled.index.equals(mf.values.index)
    assert len(mf) == 5


def assert_utc(index: pd.DatetimeIndex) -> None:
    assert isinstance(index, pd.DatetimeIndex)
    assert str(index.tz) == "UTC"
    assert index.is_monotonic_increasing and index.is_unique


# --- accepted forms -------------------------------------------------------------


def test_wide_frame_with_datetime_index() -> None:
    mf = normalise(wide_frame())
    assert_expected_wide(mf)
    assert_utc(mf.index)
    assert mf.index.name == "timestamp"
    assert all(dtype == np.float64 for dtype in mf.values.dtypes)


@pytest.mark.parametrize("name", ["timestamp", "Timestamp", "time", "datetime", "date", "ts"])
def test_wide_frame_with_time_column(name: str) -> None:
    frame = wide_frame().reset_index(names=name)
    frame[name] = frame[name].dt.strftime("%Y-%m-%dT%H:%M:%S")
    mf = normalise(frame)
    assert_expected_wide(mf)


def test_wide_frame_with_datetime64_time_column() -> None:
    mf = normalise(wide_frame().reset_index(names="timestamp"))
    assert_expected_wide(mf)


def test_long_form() -> None:
    assert_expected_wide(normalise(long_frame()))


def test_long_form_column_names_are_case_insensitive() -> None:
    frame = long_frame().rename(columns={"timestamp": "Time", "metric": "Metric", "value": "VALUE"})
    assert_expected_wide(normalise(frame))


def test_integer_columns_become_float() -> None:
    frame = pd.DataFrame({"timestamp": ["2024-01-01 00:00", "2024-01-01 00:01"], "n": [1, 2]})
    mf = normalise(frame)
    assert mf.values["n"].dtype == np.float64
    assert mf.values["n"].tolist() == [1.0, 2.0]


def test_metric_frame_passes_through() -> None:
    mf = normalise(wide_frame())
    assert normalise(mf) is mf


@pytest.mark.parametrize("form", ["wide", "long"])
def test_csv_file(tmp_path: Path, form: str) -> None:
    path = tmp_path / "data.csv"
    frame = wide_frame().reset_index(names="timestamp") if form == "wide" else long_frame()
    frame.to_csv(path, index=False)
    assert_expected_wide(normalise(path))
    assert_expected_wide(normalise(str(path)))


def test_tsv_and_gzipped_csv(tmp_path: Path) -> None:
    tsv = tmp_path / "data.tsv"
    wide_frame().reset_index(names="timestamp").to_csv(tsv, index=False, sep="\t")
    assert_expected_wide(normalise(tsv))
    gz = tmp_path / "data.csv.gz"
    long_frame().to_csv(gz, index=False)
    assert_expected_wide(normalise(gz))


@pytest.mark.parametrize("form", ["wide-index", "wide-column", "long"])
def test_parquet_file(tmp_path: Path, form: str) -> None:
    path = tmp_path / "data.parquet"
    if form == "wide-index":
        frame = wide_frame()
        frame.index = frame.index.tz_localize("UTC")
        frame.to_parquet(path)
    elif form == "wide-column":
        wide_frame().reset_index(names="timestamp").to_parquet(path, index=False)
    else:
        long_frame().to_parquet(path, index=False)
    assert_expected_wide(normalise(path))


def test_read_table_returns_file_as_is(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    long_frame().to_csv(path, index=False)
    pd.testing.assert_frame_equal(read_table(path), pd.read_csv(path))


# --- timestamps ----------------------------------------------------------------------


def test_naive_timestamps_are_utc() -> None:
    frame = pd.DataFrame({"timestamp": ["2024-01-01 12:00:00", "2024-01-01 12:01:00"], "a": [1.0, 2.0]})
    mf = normalise(frame)
    assert_utc(mf.index)
    assert list(mf.index) == [pd.Timestamp("2024-01-01 12:00", tz="UTC"), pd.Timestamp("2024-01-01 12:01", tz="UTC")]


def test_naive_datetime_objects_are_utc() -> None:
    # an object column of naive datetimes (e.g. rows from a database driver)
    stamps = pd.Series([dt.datetime(2024, 1, 1, 0, i) for i in range(3)], dtype=object)
    mf = normalise(pd.DataFrame({"timestamp": stamps, "a": [1.0, 2.0, 3.0]}))
    assert list(mf.index) == list(grid(3))
    assert mf.values["a"].tolist() == [1.0, 2.0, 3.0]


def test_offset_timestamps_converted_to_utc() -> None:
    frame = pd.DataFrame(
        {"timestamp": ["2024-01-01T02:00:00+02:00", "2024-01-01T02:01:00+02:00", "2024-01-01T02:02:00+02:00"], "a": [1.0, 2.0, 3.0]}
    )
    mf = normalise(frame)
    assert_utc(mf.index)
    assert list(mf.index) == list(grid(3))


def test_mixed_offsets_across_dst_are_one_continuous_utc_series() -> None:
    frame = pd.DataFrame(
        {
            "timestamp": ["2024-03-31T01:58:00+01:00", "2024-03-31T01:59:00+01:00", "2024-03-31T03:00:00+02:00", "2024-03-31T03:01:00+02:00"],
            "a": [1.0, 2.0, 3.0, 4.0],
        }
    )
    mf = normalise(frame)
    assert list(mf.index) == list(grid(4, pd.Timestamp("2024-03-31 00:58", tz="UTC")))
    assert mf.values["a"].tolist() == [1.0, 2.0, 3.0, 4.0]
    assert not mf.filled.to_numpy().any()


def test_tz_aware_datetime_index_converted_to_utc() -> None:
    frame = wide_frame()
    frame.index = frame.index.tz_localize("Europe/Berlin")  # UTC+1 in January
    mf = normalise(frame)
    assert list(mf.index) == list(grid(5, pd.Timestamp("2023-12-31 23:00", tz="UTC")))


@pytest.mark.parametrize("dtype", ["int64", "float64", "str"])
def test_epoch_seconds_timestamps(dtype: str) -> None:
    stamps = pd.Series([1704067200, 1704067260, 1704067320]).astype(dtype)
    mf = normalise(pd.DataFrame({"timestamp": stamps, "a": [1.0, 2.0, 3.0]}))
    assert list(mf.index) == list(grid(3))


def test_unsorted_input_is_sorted() -> None:
    frame = pd.DataFrame(
        {"timestamp": ["2024-01-01 00:03", "2024-01-01 00:00", "2024-01-01 00:02", "2024-01-01 00:01"], "a": [3.0, 0.0, 2.0, 1.0]}
    )
    mf = normalise(frame)
    assert list(mf.index) == list(grid(4))
    assert mf.values["a"].tolist() == [0.0, 1.0, 2.0, 3.0]


# --- duplicates and the grid ----------------------------------------------------------


def dup_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "timestamp": ["2024-01-01 00:00", "2024-01-01 00:00", "2024-01-01 00:01", "2024-01-01 00:02", "2024-01-01 00:02", "2024-01-01 00:02"],
            "a": [1.0, 3.0, 5.0, 7.0, 2.0, 9.0],
        }
    )


def test_duplicate_timestamps_mean_by_default() -> None:
    assert normalise(dup_frame()).values["a"].tolist() == [2.0, 5.0, 6.0]


@pytest.mark.parametrize(("how", "expected"), [("max", [3.0, 5.0, 9.0]), ("min", [1.0, 5.0, 2.0]), ("median", [2.0, 5.0, 7.0]), ("last", [3.0, 5.0, 9.0])])
def test_duplicate_timestamps_aggregate_honoured(how: str, expected: list[float]) -> None:
    mf = normalise(dup_frame(), PreprocessConfig(aggregate=how))  # type: ignore[arg-type]
    assert mf.values["a"].tolist() == expected


def test_duplicate_timestamps_in_long_form() -> None:
    frame = pd.DataFrame(
        {
            "timestamp": ["2024-01-01 00:01", "2024-01-01 00:00", "2024-01-01 00:00", "2024-01-01 00:01", "2024-01-01 00:00"],
            "metric": ["a", "a", "b", "b", "a"],
            "value": [2.0, 1.0, 10.0, 20.0, 5.0],
        }
    )
    mean = normalise(frame).values
    assert mean["a"].tolist() == [3.0, 2.0] and mean["b"].tolist() == [10.0, 20.0]
    mx = normalise(frame, PreprocessConfig(aggregate="max")).values
    assert mx["a"].tolist() == [5.0, 2.0] and mx["b"].tolist() == [10.0, 20.0]


def test_frequency_inferred() -> None:
    idx = pd.date_range("2024-01-01", periods=6, freq="5min")
    mf = normalise(pd.DataFrame({"a": np.arange(6.0)}, index=idx))
    assert mf.freq == pd.Timedelta("5min")
    assert list(mf.index) == list(grid(6, freq="5min"))


def test_infer_freq_uses_median_spacing_and_ignores_a_gap() -> None:
    idx = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 00:01", "2024-01-01 00:02", "2024-01-01 00:10", "2024-01-01 00:11"])
    assert infer_freq(idx) == MIN


def test_infer_freq_needs_two_timestamps() -> None:
    with pytest.raises(DataError, match="1 distinct"):
        infer_freq(pd.DatetimeIndex(["2024-01-01", "2024-01-01"]))


def test_frequency_from_config_aggregates_into_coarser_bins() -> None:
    idx = pd.date_range("2024-01-01", periods=6, freq="1min")
    frame = pd.DataFrame({"a": [1.0, 3.0, 5.0, 7.0, 9.0, 11.0]}, index=idx)
    mf = normalise(frame, PreprocessConfig(freq="2min"))
    assert mf.freq == pd.Timedelta("2min")
    assert list(mf.index) == list(grid(3, freq="2min"))
    assert mf.values["a"].tolist() == [2.0, 6.0, 10.0]
    mx = normalise(frame, PreprocessConfig(freq="2min", aggregate="max"))
    assert mx.values["a"].tolist() == [3.0, 7.0, 11.0]


def test_freq_argument_overrides_config() -> None:
    idx = pd.date_range("2024-01-01", periods=4, freq="1min")
    frame = pd.DataFrame({"a": [1.0, 3.0, 5.0, 7.0]}, index=idx)
    mf = normalise(frame, PreprocessConfig(freq="1min"), freq="2min")
    assert mf.freq == pd.Timedelta("2min")
    assert mf.values["a"].tolist() == [2.0, 6.0]
    assert normalise(frame, freq=pd.Timedelta("2min")).values["a"].tolist() == [2.0, 6.0]


def test_grid_is_anchored_at_the_epoch() -> None:
    idx = pd.date_range("2024-01-01 00:03", periods=4, freq="5min")  # 00:03, 00:08, ...
    mf = normalise(pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0]}, index=idx), PreprocessConfig(freq="5min"))
    assert list(mf.index) == list(grid(4, freq="5min"))
    assert mf.values["a"].tolist() == [1.0, 2.0, 3.0, 4.0]


def test_late_jitter_lands_on_the_grid() -> None:
    offsets = [0, 60, 123, 180, 240, 302, 360, 420]  # some readings a few seconds late
    idx = T0 + pd.to_timedelta(offsets, unit="s")
    mf = normalise(pd.DataFrame({"a": np.arange(8.0)}, index=idx))
    assert mf.freq == MIN
    assert list(mf.index) == list(grid(8))
    assert mf.values["a"].tolist() == list(np.arange(8.0))
    assert not mf.filled.to_numpy().any()


def test_jitter_either_side_lands_on_the_nearest_grid_point() -> None:
    # readings due every minute, each up to 3 s early or late
    offsets = [0, 57, 123, 180, 241, 298, 360]
    idx = T0 + pd.to_timedelta(offsets, unit="s")
    mf = normalise(pd.DataFrame({"a": np.arange(7.0)}, index=idx), PreprocessConfig(freq="1min"))
    assert list(mf.index) == list(grid(7))
    assert mf.values["a"].tolist() == list(np.arange(7.0))
    assert not mf.filled.to_numpy().any()


def test_inferred_frequency_of_randomly_jittered_data() -> None:
    rng = np.random.default_rng(0)
    offsets = np.arange(300) * 60 + rng.integers(-5, 6, 300)
    idx = T0 + pd.to_timedelta(offsets, unit="s")
    mf = normalise(pd.DataFrame({"a": np.arange(300.0)}, index=idx))
    assert mf.freq == MIN


def test_sum_of_an_empty_bin_is_missing_not_zero() -> None:
    idx = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 00:01", "2024-01-01 00:03"])
    frame = pd.DataFrame({"a": [1.0, 2.0, 4.0]}, index=idx)
    mf = normalise(frame, PreprocessConfig(freq="1min", aggregate="sum", fill_limit=0))
    values = mf.values["a"].to_numpy()
    assert values[:2].tolist() == [1.0, 2.0] and np.isnan(values[2]) and values[3] == 4.0


# --- gap filling -------------------------------------------------------------------------


def gappy() -> pd.DataFrame:
    v = [np.nan, 1.0, 2.0, np.nan, np.nan, 5.0, 6.0, np.nan, np.nan, np.nan, np.nan, 11.0, 12.0, np.nan]
    return pd.DataFrame({"a": v}, index=grid(len(v)))


def test_short_gap_filled_linearly_long_gap_kept_whole() -> None:
    mf = normalise(gappy(), PreprocessConfig(fill_limit=3))
    values, filled = mf.values["a"].to_numpy(), mf.filled["a"].to_numpy()
    expected = [np.nan, 1, 2, 3, 4, 5, 6, np.nan, np.nan, np.nan, np.nan, 11, 12, np.nan]
    np.testing.assert_array_equal(values, np.array(expected, dtype=float))
    assert np.flatnonzero(filled).tolist() == [3, 4]
    assert mf.missing["a"].to_numpy().tolist() == np.isnan(np.array(expected, dtype=float)).tolist()


def test_gap_exactly_fill_limit_is_filled() -> None:
    mf = normalise(gappy(), PreprocessConfig(fill_limit=4))
    values = mf.values["a"].to_numpy()
    np.testing.assert_allclose(values[7:11], [7.0, 8.0, 9.0, 10.0])
    assert np.flatnonzero(mf.filled["a"].to_numpy()).tolist() == [3, 4, 7, 8, 9, 10]
    assert np.isnan(values[0]) and np.isnan(values[-1])  # edges never filled


def test_fill_limit_zero_fills_nothing() -> None:
    mf = normalise(gappy(), PreprocessConfig(fill_limit=0))
    np.testing.assert_array_equal(mf.values["a"].to_numpy(), gappy()["a"].to_numpy())
    assert not mf.filled.to_numpy().any()


@pytest.mark.parametrize("method", ["linear", "ffill"])
def test_leading_and_trailing_gaps_never_filled(method: str) -> None:
    v = [np.nan, np.nan, 1.0, 2.0, np.nan, 4.0, np.nan, np.nan]
    frame = pd.DataFrame({"a": v}, index=grid(len(v)))
    mf = normalise(frame, PreprocessConfig(fill_limit=10, fill_method=method))  # type: ignore[arg-type]
    values = mf.values["a"].to_numpy()
    assert np.isnan(values[[0, 1, 6, 7]]).all()
    assert values[4] == (3.0 if method == "linear" else 2.0)
    assert np.flatnonzero(mf.filled["a"].to_numpy()).tolist() == [4]


def test_linear_fill_is_linear_in_time() -> None:
    # missing grid rows (absent timestamps), not NaN values
    idx = pd.DatetimeIndex(["2024-01-01 00:00", "2024-01-01 00:01", "2024-01-01 00:04", "2024-01-01 00:05"])
    frame = pd.DataFrame({"a": [0.0, 1.0, 10.0, 20.0]}, index=idx)
    mf = normalise(frame, PreprocessConfig(freq="1min", fill_limit=2))
    assert mf.values["a"].tolist() == [0.0, 1.0, 4.0, 7.0, 10.0, 20.0]
    assert mf.filled["a"].tolist() == [False, False, True, True, False, False]


def test_gaps_filled_per_metric() -> None:
    frame = pd.DataFrame(
        {"a": [1.0, np.nan, 3.0, 4.0, 5.0], "b": [1.0, np.nan, np.nan, np.nan, 5.0]}, index=grid(5)
    )
    mf = normalise(frame, PreprocessConfig(fill_limit=2))
    assert mf.values["a"].tolist() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert mf.filled["a"].tolist() == [False, True, False, False, False]
    assert np.isnan(mf.values["b"].to_numpy()[1:4]).all()
    assert not mf.filled["b"].any()


# --- rejections ------------------------------------------------------------------------------


@pytest.mark.parametrize("frame", [pd.DataFrame(), pd.DataFrame({"timestamp": [], "a": []})], ids=["no-columns", "no-rows"])
def test_empty_frame(frame: pd.DataFrame) -> None:
    with pytest.raises(DataError, match="empty"):
        normalise(frame)


def test_not_a_frame() -> None:
    with pytest.raises(DataError, match="expected a pandas DataFrame, got list"):
        normalise([1, 2, 3])  # type: ignore[arg-type]


def test_no_timestamp_column_lists_columns() -> None:
    frame = pd.DataFrame({"when": ["2024-01-01"], "cpu": [1.0]})
    with pytest.raises(DataError, match=r"no timestamps.*\['when', 'cpu'\]"):
        normalise(frame)


def test_only_timestamps() -> None:
    with pytest.raises(DataError, match="no metric columns"):
        normalise(pd.DataFrame({"timestamp": ["2024-01-01", "2024-01-02"]}))


def test_unparseable_timestamp_named() -> None:
    frame = pd.DataFrame({"timestamp": ["2024-01-01 00:00", "2024-01-01 00:01", "yesterday-ish"], "a": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"unparseable timestamp 'yesterday-ish' at row 2"):
        normalise(frame)


@pytest.mark.parametrize("missing", [None, np.nan, pd.NaT, ""], ids=["None", "nan", "NaT", "empty"])
def test_missing_timestamp(missing: object) -> None:
    frame = pd.DataFrame({"timestamp": ["2024-01-01 00:00", missing, "2024-01-01 00:02"], "a": [1.0, 2.0, 3.0]})
    with pytest.raises(DataError, match=r"(missing|unparseable) timestamp.*row 1"):
        normalise(frame)


def test_non_numeric_value_names_column_and_value() -> None:
    frame = pd.DataFrame({"timestamp": ["2024-01-01 00:00", "2024-01-01 00:01"], "cpu": [1.0, 2.0], "mem": ["1.5", "lots"]})
    with pytest.raises(DataError, match=r"non-numeric value 'lots' in column 'mem' at 2024-01-01 00:01:00\+00:00"):
        normalise(frame)


def test_non_numeric_value_in_long_form() -> None:
    frame = pd.DataFrame({"timestamp": ["2024-01-01 00:00", "2024-01-01 00:01"], "metric": ["a", "a"], "value": [1.0, "n/a?"]})
    with pytest.raises(DataError, match=r"non-numeric value 'n/a\?' in column 'value'"):
        normalise(frame)


def test_non_numeric_value_in_csv(tmp_path: Path) -> None:
    path = tmp_path / "d.csv"
    path.write_text("timestamp,cpu\n2024-01-01 00:00,1\n2024-01-01 00:01,oops\n")
    with pytest.raises(DataError, match=r"'oops' in column 'cpu'"):
        normalise(path)


@pytest.mark.parametrize("bad", [np.inf, -np.inf])
def test_infinite_value_names_column(bad: float) -> None:
    frame = pd.DataFrame({"timestamp": ["2024-01-01 00:00", "2024-01-01 00:01"], "cpu": [1.0, 2.0], "disk": [1.0, bad]})
    with pytest.raises(DataError, match=re.escape(f"infinite value {bad} in column 'disk'")):
        normalise(frame)


def test_all_nan_metric_named() -> None:
    frame = pd.DataFrame({"timestamp": ["2024-01-01 00:00", "2024-01-01 00:01"], "cpu": [1.0, 2.0], "mem": [np.nan, np.nan]})
    with pytest.raises(DataError, match=r"metric 'mem' has no values"):
        normalise(frame)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(DataError, match=r"not found: " + re.escape(repr(str(path)))):
        normalise(path)


@pytest.mark.parametrize("name", ["data.xlsx", "data.json", "data"])
def test_unsupported_suffix(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("timestamp,a\n2024-01-01,1\n")
    with pytest.raises(DataError, match=r"unsupported file type " + re.escape(repr(path.suffix))):
        normalise(path)


def test_corrupt_parquet(tmp_path: Path) -> None:
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"cannot read " + re.escape(repr(str(path)))):
        normalise(path)


def test_require_length_names_both_numbers() -> None:
    mf = normalise(wide_frame())
    with pytest.raises(DataError, match=r"has 5 points.*window\.size=10"):
        require_length(mf, 10)
    with pytest.raises(DataError, match=r"^the new data has 5 points"):
        require_length(mf, 6, "the new data")
    require_length(mf, 5)  # exactly one window is enough


def test_select_reorders_and_rejects_missing_metric() -> None:
    mf = normalise(wide_frame())
    sub = mf.select(["mem", "cpu"])
    assert sub.metrics == ["mem", "cpu"]
    assert list(sub.filled.columns) == ["mem", "cpu"]
    assert sub.values["mem"].tolist() == [10.0, 20.0, 30.0, 40.0, 50.0]
    with pytest.raises(DataError, match=r"metric 'disk' is missing"):
        mf.select(["cpu", "disk"])


# --- epoch seconds ------------------------------------------------------------------------


@pytest.mark.parametrize("unit", ["s", "ms", "us", "ns"])
def test_epoch_seconds_any_resolution(unit: str) -> None:
    idx = pd.DatetimeIndex(["1970-01-01 00:00:00", "2024-01-01 00:00:00", "2024-01-01 00:01:01", "1969-12-31 23:59:59"], tz="UTC")
    out = epoch_seconds(idx.as_unit(unit))
    assert out.dtype == np.int64
    assert out.tolist() == [0, 1704067200, 1704067261, -1]


def test_epoch_seconds_of_parsed_timestamps() -> None:
    seconds = pd.to_datetime(["2024-01-01 00:00:05"], utc=True)
    nanos = pd.to_datetime(["2024-01-01 00:00:05.000000001"], utc=True)
    assert nanos.unit == "ns"
    assert epoch_seconds(pd.DatetimeIndex(seconds)).tolist() == [1704067205]
    assert epoch_seconds(pd.DatetimeIndex(nanos)).tolist() == [1704067205]
    assert epoch_seconds(normalise(wide_frame()).index).tolist() == [1704067200 + 60 * i for i in range(5)]


# --- context -------------------------------------------------------------------------------


def frame_at(start_minute: int, values: list[float], filled: list[bool] | None = None) -> MetricFrame:
    idx = grid(len(values), T0 + start_minute * MIN)
    v = pd.DataFrame({"a": values}, index=idx)
    f = pd.DataFrame({"a": filled or [False] * len(values)}, index=idx)
    return MetricFrame(v, f, MIN)


def test_with_context_joins_before_data() -> None:
    context = frame_at(0, [0.0, 1.0, 2.0, 3.0, 4.0], [False, False, False, True, False])
    data = frame_at(5, [50.0, 60.0])
    out = with_context(context, data, 3)
    assert list(out.index) == list(grid(5, T0 + 2 * MIN))
    assert out.values["a"].tolist() == [2.0, 3.0, 4.0, 50.0, 60.0]
    assert out.filled["a"].tolist() == [False, True, False, False, False]
    assert out.freq == MIN


def test_with_context_drops_overlapping_context() -> None:
    context = frame_at(0, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    data = frame_at(3, [30.0, 40.0, 50.0, 60.0])
    out = with_context(context, data, 10)
    assert list(out.index) == list(grid(7))
    assert out.values["a"].tolist() == [0.0, 1.0, 2.0, 30.0, 40.0, 50.0, 60.0]  # new data wins


def test_with_context_gap_becomes_missing_rows() -> None:
    context = frame_at(0, [0.0, 1.0, 2.0, 3.0, 4.0])
    data = frame_at(7, [70.0, 80.0])
    out = with_context(context, data, 2)
    assert list(out.index) == list(grid(6, T0 + 3 * MIN))
    values = out.values["a"].to_numpy()
    assert values[[0, 1, 4, 5]].tolist() == [3.0, 4.0, 70.0, 80.0]
    assert np.isnan(values[[2, 3]]).all()
    assert not out.filled["a"].any()
    assert out.filled["a"].dtype == bool


def test_with_context_keep_zero_or_nothing_before_returns_data() -> None:
    context = frame_at(0, [0.0, 1.0, 2.0])
    data = frame_at(5, [5.0])
    assert with_context(context, data, 0) is data
    assert with_context(frame_at(5, [1.0, 2.0]), data, 5) is data


def test_with_context_rejects_other_interval() -> None:
    idx = grid(3, freq="5min")
    context = MetricFrame(pd.DataFrame({"a": [1.0, 2.0, 3.0]}, index=idx), pd.DataFrame({"a": [False] * 3}, index=idx), pd.Timedelta("5min"))
    with pytest.raises(DataError, match=r"context interval 0 days 00:05:00 differs from the data's 0 days 00:01:00"):
        with_context(context, frame_at(20, [1.0]), 3)


@pytest.mark.parametrize("aggregate", ["mean", "median", "max", "min", "sum", "last"])
def test_data_already_on_the_grid_takes_the_short_path_with_the_same_result(aggregate: str) -> None:
    step = pd.Timedelta("1min")
    index = pd.date_range("2026-01-05", periods=6, freq=step, tz="UTC").as_unit("ns").delete(3)  # and a missing slot
    wide = pd.DataFrame({"cpu": [1.0, np.nan, 3.0, 4.0, 5.0], "mem": [2.0, 2.5, np.nan, np.nan, 1.0]}, index=index)
    on_grid = to_grid(wide, step, aggregate)
    # a nanosecond off the grid forces the binning path
    binned = to_grid(wide.set_axis(index + pd.Timedelta(1, "ns")), step, aggregate)
    pd.testing.assert_frame_equal(on_grid, binned, check_freq=False)
    assert len(on_grid) == 6 and on_grid.iloc[3].isna().all()
