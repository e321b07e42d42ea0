"""Tests for anomaly.evaluation.synthetic: realistic clean metrics, injected incidents, labelled sets."""

from __future__ import annotations

import dataclasses
import re
from functools import lru_cache

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from anomaly.evaluation.synthetic import (
    INCIDENT_KINDS,
    Incident,
    SampleData,
    clean_metrics,
    generate,
    inject,
)

METRICS = ("requests", "cpu", "latency_ms", "temp_c")
FIVE_MIN = pd.Timedelta(minutes=5)
DAY_ROWS = 288  # 5-minute rows in a day


@lru_cache(maxsize=None)
def _clean(seed: int = 0) -> pd.DataFrame:
    """Two weeks of clean 5-minute data with the three service metrics and a generic one."""
    return clean_metrics(metrics=METRICS, seed=seed)


def clean(seed: int = 0) -> pd.DataFrame:
    return _clean(seed).copy()


def assert_same_frame(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Exact equality of index (incl. freq), columns, dtypes and values.

    ``pd.testing.assert_frame_equal`` boxes every timestamp of a tz-aware
    index one by one, which makes it far too slow for a file that must run
    in seconds.
    """
    assert a.index.equals(b.index) and a.index.freq == b.index.freq and str(a.index.tz) == str(b.index.tz)
    assert list(a.columns) == list(b.columns)
    assert list(a.dtypes) == list(b.dtypes)
    np.testing.assert_array_equal(a.to_numpy(), b.to_numpy())


def _row(frame: pd.DataFrame, when: str) -> int:
    return int(frame.index.get_loc(pd.Timestamp(when, tz="UTC")))


def spread(values: pd.Series | np.ndarray) -> float:
    q75, q25 = np.percentile(np.asarray(values, dtype=float), [75, 25])
    return float((q75 - q25) / 1.349)


@lru_cache(maxsize=None)
def _sample(seed: int = 0) -> SampleData:
    return generate(metrics=METRICS, seed=seed)


# --------------------------------------------------------------------------- #
# Clean metrics
# --------------------------------------------------------------------------- #


def test_clean_metrics_is_deterministic_for_a_seed() -> None:
    assert_same_frame(clean_metrics(metrics=METRICS, seed=7), clean_metrics(metrics=METRICS, seed=7))


def test_clean_metrics_differs_across_seeds() -> None:
    a, b = clean_metrics(metrics=METRICS, seed=1), clean_metrics(metrics=METRICS, seed=2)
    for name in METRICS:
        assert not np.allclose(a[name], b[name]), name


def test_adding_a_metric_does_not_change_the_others() -> None:
    small = clean_metrics(metrics=("requests", "cpu"), seed=3)
    big = clean_metrics(metrics=("requests", "cpu", "latency_ms", "disk_io"), seed=3)
    assert_same_frame(small, big[["requests", "cpu"]])


def test_index_is_a_regular_sorted_unique_utc_grid() -> None:
    frame = clean_metrics(500, freq="15min", start="2026-03-02 06:00", seed=0)
    idx = frame.index
    assert isinstance(idx, pd.DatetimeIndex)
    assert str(idx.tz) == "UTC"
    assert idx.is_unique and idx.is_monotonic_increasing
    assert idx.freq == pd.tseries.frequencies.to_offset("15min")
    assert (idx[1:] - idx[:-1] == pd.Timedelta(minutes=15)).all()
    assert idx[0] == pd.Timestamp("2026-03-02 06:00", tz="UTC")
    assert len(frame) == 500
    assert list(frame.columns) == ["requests", "cpu", "latency_ms"]
    assert (frame.dtypes == np.float64).all()


def test_tz_aware_start_is_converted_to_utc() -> None:
    frame = clean_metrics(10, start="2026-01-05 01:00+01:00")
    assert frame.index[0] == pd.Timestamp("2026-01-05 00:00", tz="UTC")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_are_finite_and_physically_valid(seed: int) -> None:
    frame = clean(seed)
    assert np.isfinite(frame.to_numpy()).all()
    assert (frame["requests"] > 0).all()
    assert frame["cpu"].between(0, 100).all()
    assert (frame["latency_ms"] > 0).all()


def test_cpu_follows_requests() -> None:
    frame = clean()
    assert frame["cpu"].corr(frame["requests"]) > 0.8
    # Own noise: cpu is not an exact linear function of requests.
    assert frame["cpu"].corr(frame["requests"]) < 0.9999


def test_latency_rises_non_linearly_with_load() -> None:
    frame = clean()
    load = frame["requests"]
    latency = frame["latency_ms"]
    assert latency.corr(load) > 0.5
    low, mid, high = load.quantile([0.1, 0.5, 0.95])
    lat_low = latency[load <= low].median()
    lat_mid = latency[(load - mid).abs() < 10].median()
    lat_high = latency[load >= high].median()
    # Queueing: the same step in load costs much more latency near saturation.
    slope_low = (lat_mid - lat_low) / (mid - low)
    slope_high = (lat_high - lat_mid) / (high - mid)
    assert slope_high > 2 * slope_low > 0


def test_latency_has_a_right_tail() -> None:
    latency = clean()["latency_ms"]
    residual = latency / latency.rolling(13, center=True, min_periods=1).median()
    assert residual.skew() > 0


def test_weekends_are_lower_than_weekdays() -> None:
    requests = clean()["requests"]
    weekend = requests.index.day_of_week >= 5
    ratio = requests[weekend].mean() / requests[~weekend].mean()
    assert 0.55 < ratio < 0.8


def test_daily_cycle_is_busy_in_the_afternoon_and_quiet_at_night() -> None:
    requests = clean()["requests"]
    hour = requests.index.hour
    weekday = requests.index.day_of_week < 5
    afternoon = requests[weekday & (hour >= 13) & (hour < 17)].mean()
    night = requests[weekday & (hour >= 2) & (hour < 5)].mean()
    assert afternoon > 1.8 * night


def test_daily_cycle_is_not_a_pure_sine() -> None:
    requests = clean()["requests"]
    profile = requests.groupby(requests.index.hour).mean().to_numpy()
    spectrum = np.abs(np.fft.rfft(profile - profile.mean()))
    # A second harmonic (12 h) well above the noise of the higher ones.
    assert spectrum[2] > 0.1 * spectrum[1]
    assert spectrum[2] > 3 * spectrum[4:].max()


def test_requests_trend_upwards() -> None:
    requests = clean_metrics(8 * 7 * DAY_ROWS, metrics=("requests",), seed=0)["requests"]
    first, last = requests.iloc[: 7 * DAY_ROWS].mean(), requests.iloc[-7 * DAY_ROWS :].mean()
    assert 1.08 < last / first < 1.5


def test_generic_metric_has_a_daily_cycle_and_a_name_dependent_shape() -> None:
    frame = clean_metrics(metrics=("temp_c", "pressure"), seed=0)
    temp = frame["temp_c"]
    assert np.isfinite(temp).all()
    assert temp.autocorr(DAY_ROWS) > 0.7
    assert temp.autocorr(DAY_ROWS) > temp.autocorr(DAY_ROWS // 2) + 0.3
    # Different names get a different phase/scale, not just different noise.
    assert abs(frame["temp_c"].corr(frame["pressure"])) < 0.95
    assert not np.isclose(frame["temp_c"].median(), frame["pressure"].median(), rtol=0.05)
    again = clean_metrics(metrics=("pressure",), seed=0)["pressure"]
    np.testing.assert_array_equal(again.to_numpy(), frame["pressure"].to_numpy())


def test_noise_is_modest_next_to_the_daily_swing() -> None:
    frame = clean()
    for name in METRICS:
        values = frame[name]
        noise = values.diff().abs().median()
        swing = values.quantile(0.99) - values.quantile(0.01)
        assert noise < 0.08 * swing, name


# --------------------------------------------------------------------------- #
# inject: general contract
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize("kind", INCIDENT_KINDS)
@pytest.mark.parametrize("metric", METRICS)
def test_inject_changes_only_the_span_of_one_metric_and_labels_it(kind: str, metric: str) -> None:
    frame = clean()
    before = frame.copy()
    start, length = _row(frame, "2026-01-13 10:00"), 36
    out, incident = inject(frame, kind, metric, start, length, seed=4)

    assert_same_frame(frame, before)  # input untouched
    assert out is not frame
    assert out.index.equals(frame.index) and list(out.columns) == list(frame.columns)
    assert out.index.freq == frame.index.freq
    assert (out.dtypes == np.float64).all()
    assert_same_frame(out.drop(columns=metric), frame.drop(columns=metric))
    inside = np.zeros(len(frame), dtype=bool)
    inside[start : start + length] = True
    np.testing.assert_array_equal(out[metric].to_numpy()[~inside], frame[metric].to_numpy()[~inside])
    changed = out[metric].to_numpy()[inside] != frame[metric].to_numpy()[inside]
    assert changed.mean() > 0.9
    assert np.isfinite(out[metric]).all()

    assert incident == Incident(kind, metric, frame.index[start], frame.index[start + length - 1])
    assert incident.start == pd.Timestamp("2026-01-13 10:00", tz="UTC")
    assert incident.end == incident.start + (length - 1) * FIVE_MIN
    assert str(incident.start.tz) == "UTC" and str(incident.end.tz) == "UTC"


@lru_cache(maxsize=None)
def _hypothesis_frame() -> pd.DataFrame:
    return clean_metrics(3 * DAY_ROWS, metrics=METRICS, seed=5)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    kind=st.sampled_from(INCIDENT_KINDS),
    metric=st.sampled_from(METRICS),
    start=st.integers(0, 3 * DAY_ROWS - 1),
    length=st.integers(1, 100),
    magnitude=st.floats(0.1, 5.0),
    seed=st.integers(0, 2**16),
)
def test_inject_is_local_valid_and_deterministic(
    kind: str, metric: str, start: int, length: int, magnitude: float, seed: int
) -> None:
    frame = _hypothesis_frame()
    length = min(length, len(frame) - start)
    if kind == "pattern_break" and len(frame) - length < DAY_ROWS + 2:
        return  # needs a day of data outside the span, checked in the error tests
    before = frame.copy()
    out, incident = inject(frame, kind, metric, start, length, magnitude=magnitude, seed=seed)
    again, _ = inject(frame, kind, metric, start, length, magnitude=magnitude, seed=seed)
    assert_same_frame(frame, before)
    assert_same_frame(out, again)
    diff = (out != frame).to_numpy()
    rows, cols = np.nonzero(diff)
    assert set(cols) <= {list(frame.columns).index(metric)}
    assert ((rows >= start) & (rows < start + length)).all()
    assert incident.start == frame.index[start] and incident.end == frame.index[start + length - 1]
    assert np.isfinite(out.to_numpy()).all()
    assert (out["requests"] > 0).all() and (out["latency_ms"] > 0).all()
    assert out["cpu"].between(0, 100).all()


def test_inject_accepts_numpy_integers_and_int_columns() -> None:
    frame = pd.DataFrame({"x": np.arange(50)}, index=pd.date_range("2026-01-01", periods=50, freq="1min", tz="UTC"))
    out, incident = inject(frame, "level_shift", "x", np.int64(10), np.int64(5))
    assert out["x"].dtype == np.float64
    assert (out["x"].iloc[10:15] > frame["x"].iloc[10:15]).all()
    assert frame["x"].dtype == np.int64  # input untouched
    assert incident.start == frame.index[10]


def test_inject_variance_change_depends_on_seed_only() -> None:
    frame = clean()
    start = _row(frame, "2026-01-13 10:00")
    a, _ = inject(frame, "variance_change", "requests", start, 72, seed=1)
    b, _ = inject(frame, "variance_change", "requests", start, 72, seed=1)
    c, _ = inject(frame, "variance_change", "requests", start, 72, seed=2)
    assert_same_frame(a, b)
    assert not np.allclose(a["requests"], c["requests"])


# --------------------------------------------------------------------------- #
# inject: each kind is visible
# --------------------------------------------------------------------------- #

# Night, morning and afternoon positions on a weekday, and a weekend afternoon.
POSITIONS = ("2026-01-13 03:00", "2026-01-13 09:00", "2026-01-13 15:00", "2026-01-11 15:00")


@pytest.mark.parametrize("when", POSITIONS)
@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("length", [1, 3, 5])
def test_spike_rises_well_above_the_clean_maximum(when: str, metric: str, length: int) -> None:
    frame = clean()
    start = _row(frame, when)
    out, _ = inject(frame, "spike", metric, start, length)
    span = out[metric].iloc[start : start + length]
    s = spread(frame[metric])
    assert (span > frame[metric].iloc[start : start + length]).all()
    if metric == "cpu":
        assert span.max() >= min(100.0, frame["cpu"].max() + 2 * s) - 1e-9
    else:
        assert span.max() > frame[metric].max() + 1.5 * s
        assert (span - frame[metric].iloc[start : start + length] > 3 * s).all()


@pytest.mark.parametrize("when", POSITIONS)
@pytest.mark.parametrize("metric", METRICS)
def test_dip_falls_below_the_clean_minimum_but_stays_valid(when: str, metric: str) -> None:
    frame = clean()
    start = _row(frame, when)
    out, _ = inject(frame, "dip", metric, start, 3)
    span = out[metric].iloc[start : start + 3]
    assert span.min() < frame[metric].min()
    assert (span < frame[metric].iloc[start : start + 3]).all()
    if metric != "temp_c":
        assert (span > 0).all() if metric != "cpu" else (span >= 0).all()


def test_dip_with_a_huge_magnitude_keeps_positive_metrics_positive() -> None:
    frame = clean()
    start = _row(frame, "2026-01-13 15:00")
    for metric in ("requests", "latency_ms", "cpu"):
        out, _ = inject(frame, "dip", metric, start, 5, magnitude=50.0)
        assert (out[metric] > 0).all(), metric


def test_spike_on_cpu_is_capped_at_100() -> None:
    frame = clean()
    out, _ = inject(frame, "spike", "cpu", _row(frame, "2026-01-13 15:00"), 5, magnitude=10.0)
    assert out["cpu"].max() == 100.0


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("when", POSITIONS)
def test_flatline_is_stuck_at_the_last_value_before_the_span(metric: str, when: str) -> None:
    frame = clean()
    start = _row(frame, when)
    out, _ = inject(frame, "flatline", metric, start, 36)
    span = out[metric].iloc[start : start + 36]
    assert span.nunique() == 1
    assert span.iloc[0] == frame[metric].iloc[start - 1]
    assert frame[metric].iloc[start : start + 36].std() > 0  # it really was moving


def test_flatline_at_row_zero_repeats_the_first_value() -> None:
    frame = clean()
    out, _ = inject(frame, "flatline", "requests", 0, 10)
    assert (out["requests"].iloc[:10] == frame["requests"].iloc[0]).all()


@pytest.mark.parametrize("metric", ["requests", "latency_ms", "temp_c"])
@pytest.mark.parametrize("when", POSITIONS)
def test_level_shift_moves_the_mean_by_several_spreads(metric: str, when: str) -> None:
    frame = clean()
    start = _row(frame, when)
    out, _ = inject(frame, "level_shift", metric, start, 72)
    delta = out[metric].iloc[start : start + 72] - frame[metric].iloc[start : start + 72]
    s = spread(frame[metric])
    assert 2.5 * s < delta.mean() < 3.5 * s
    assert delta.std() < 0.05 * s  # a step, not noise


def test_level_shift_scales_with_magnitude() -> None:
    frame = clean()
    start = _row(frame, "2026-01-13 09:00")
    one, _ = inject(frame, "level_shift", "requests", start, 72, magnitude=1.0)
    half, _ = inject(frame, "level_shift", "requests", start, 72, magnitude=0.5)
    d1 = (one["requests"] - frame["requests"]).iloc[start : start + 72]
    d_half = (half["requests"] - frame["requests"]).iloc[start : start + 72]
    np.testing.assert_allclose(d_half, 0.5 * d1, rtol=1e-9)


def test_level_shift_on_cpu_stays_within_100() -> None:
    frame = clean()
    start = _row(frame, "2026-01-13 12:00")
    out, _ = inject(frame, "level_shift", "cpu", start, 72, magnitude=3.0)
    assert out["cpu"].max() == 100.0
    assert out["cpu"].between(0, 100).all()


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("when", POSITIONS)
def test_variance_change_multiplies_the_noise(metric: str, when: str) -> None:
    frame = clean()
    start = _row(frame, when)
    out, _ = inject(frame, "variance_change", metric, start, 72, seed=3)
    inside = out[metric].iloc[start : start + 72].diff().dropna()
    normal = frame[metric].iloc[start : start + 72].diff().dropna()
    assert inside.var() > 8 * normal.var()
    # Around the normal pattern: the span mean barely moves.
    shift = out[metric].iloc[start : start + 72].mean() - frame[metric].iloc[start : start + 72].mean()
    assert abs(shift) < 0.5 * spread(frame[metric])


@pytest.mark.parametrize("metric", ["requests", "latency_ms", "temp_c"])
@pytest.mark.parametrize("when", POSITIONS)
def test_drift_is_a_monotone_ramp_reaching_several_spreads(metric: str, when: str) -> None:
    frame = clean()
    start, length = _row(frame, when), 144
    out, _ = inject(frame, "drift", metric, start, length)
    delta = (out[metric] - frame[metric]).iloc[start : start + length].to_numpy()
    s = spread(frame[metric])
    assert (np.diff(delta) > 0).all()
    assert delta[0] < 0.1 * s
    assert 3.5 * s < delta[-1] < 4.5 * s
    # The ramp is straight: equal steps.
    np.testing.assert_allclose(np.diff(delta), delta[-1] / length, rtol=1e-6)


@pytest.mark.parametrize("metric", METRICS)
@pytest.mark.parametrize("when", ["2026-01-13 00:00", "2026-01-13 14:00", "2026-01-10 06:00"])
def test_pattern_break_inverts_the_daily_cycle_at_a_plausible_level(metric: str, when: str) -> None:
    frame = clean()
    start, length = _row(frame, when), DAY_ROWS
    out, _ = inject(frame, "pattern_break", metric, start, length)
    broken = out[metric].iloc[start : start + length]
    normal = frame[metric].iloc[start : start + length]
    s = spread(frame[metric])
    assert (broken - normal).abs().mean() > 0.8 * s  # clearly different
    assert broken.corr(normal) < 0  # the afternoon peak became a trough
    assert abs(broken.mean() - normal.mean()) < 0.2 * s  # same level over the day
    low, high = frame[metric].quantile([0.01, 0.99])
    assert low - 2 * s < broken.min() and broken.max() < high + 2 * s


def test_pattern_break_magnitude_blends_towards_the_break() -> None:
    frame = clean()
    start = _row(frame, "2026-01-13 00:00")
    full, _ = inject(frame, "pattern_break", "requests", start, DAY_ROWS, magnitude=1.0)
    half, _ = inject(frame, "pattern_break", "requests", start, DAY_ROWS, magnitude=0.5)
    d_full = (full["requests"] - frame["requests"]).iloc[start : start + DAY_ROWS]
    d_half = (half["requests"] - frame["requests"]).iloc[start : start + DAY_ROWS]
    np.testing.assert_allclose(d_half, 0.5 * d_full, rtol=1e-9)


# --------------------------------------------------------------------------- #
# generate
# --------------------------------------------------------------------------- #


def test_generate_is_deterministic_and_seed_dependent() -> None:
    a, b = generate(metrics=METRICS, seed=11), generate(metrics=METRICS, seed=11)
    assert_same_frame(a.frame, b.frame)
    assert a.incidents == b.incidents
    c = generate(metrics=METRICS, seed=12)
    assert a.incidents != c.incidents
    assert not np.allclose(a.frame.to_numpy(), c.frame.to_numpy())


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_generate_places_one_incident_per_kind_after_the_clean_part(seed: int) -> None:
    sample = _sample(seed)
    incidents = sample.incidents
    assert sorted(i.kind for i in incidents) == sorted(INCIDENT_KINDS)
    assert {i.metric for i in incidents} == set(METRICS)  # 7 kinds over 4 metrics, round-robin
    boundary = sample.frame.index[len(sample.frame) // 2]
    ordered = sorted(incidents, key=lambda i: i.start)
    assert ordered[0].start > boundary  # a clean gap after the training part too
    for prev, nxt in zip(ordered, ordered[1:]):
        assert nxt.start > prev.end + FIVE_MIN  # non-overlapping, with clean rows between
    assert ordered[-1].end < sample.frame.index[-1]
    for inc in incidents:
        assert inc.start in sample.frame.index and inc.end in sample.frame.index


@pytest.mark.parametrize("seed", [0, 1])
def test_generate_changes_exactly_the_labelled_cells(seed: int) -> None:
    sample = _sample(seed)
    frame = sample.frame
    base = clean(seed)
    labels = sample.labels()
    assert labels.index.equals(frame.index) and list(labels.columns) == list(frame.columns)
    assert (labels.dtypes == bool).all()
    changed = frame != base
    assert not (changed & ~labels).to_numpy().any()  # nothing outside incidents moved
    for inc in sample.incidents:
        cells = changed.loc[inc.start : inc.end, inc.metric]
        assert cells.mean() > 0.9, inc
        assert labels.loc[inc.start : inc.end, inc.metric].all()
    expected = sum(len(frame.loc[i.start : i.end]) for i in sample.incidents)
    assert labels.to_numpy().sum() == expected


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_generated_values_stay_physically_valid(seed: int) -> None:
    frame = _sample(seed).frame
    assert np.isfinite(frame.to_numpy()).all()
    assert (frame["requests"] > 0).all()
    assert frame["cpu"].between(0, 100).all()
    assert (frame["latency_ms"] > 0).all()
    idx = frame.index
    assert str(idx.tz) == "UTC" and idx.freq == FIVE_MIN and idx.is_unique and idx.is_monotonic_increasing


def test_incidents_frame_matches_incidents() -> None:
    sample = _sample(0)
    table = sample.incidents_frame()
    assert list(table.columns) == ["kind", "metric", "start", "end"]
    assert len(table) == len(sample.incidents)
    for row, inc in zip(table.itertuples(index=False), sample.incidents):
        assert (row.kind, row.metric, row.start, row.end) == (inc.kind, inc.metric, inc.start, inc.end)
    assert str(table["start"].dt.tz) == "UTC"


def test_empty_sample_tables() -> None:
    sample = generate(1000, kinds=(), seed=0)
    assert sample.incidents == ()
    assert not sample.labels().to_numpy().any()
    assert list(sample.incidents_frame().columns) == ["kind", "metric", "start", "end"]
    assert len(sample.incidents_frame()) == 0
    assert_same_frame(sample.frame, clean_metrics(1000, seed=0))


def test_long_form_round_trips_to_wide() -> None:
    sample = _sample(0)
    long = sample.to_long()
    assert list(long.columns) == ["timestamp", "metric", "value"]
    assert len(long) == sample.frame.size
    assert set(long["metric"]) == set(METRICS)
    assert long["value"].dtype == np.float64
    wide = long.pivot(index="timestamp", columns="metric", values="value")[list(METRICS)]
    wide.columns.name = None
    wide.index.freq = FIVE_MIN
    assert_same_frame(wide, sample.frame)


def test_generate_with_a_subset_of_kinds_and_other_options() -> None:
    sample = generate(
        24 * 20, freq="1h", metrics=("requests", "queue_depth"), kinds=("spike", "drift"), clean_fraction=0.6, seed=2
    )
    assert sorted(i.kind for i in sample.incidents) == ["drift", "spike"]
    assert {i.metric for i in sample.incidents} == {"requests", "queue_depth"}
    assert all(i.start >= sample.frame.index[int(0.6 * 24 * 20)] for i in sample.incidents)
    assert sample.frame.index.freq == pd.Timedelta(hours=1)


def test_generate_with_the_minimum_length_works_and_one_less_fails() -> None:
    with pytest.raises(ValueError, match=r"n_points=300 is too small") as info:
        generate(300, seed=0)
    minimum = int(re.search(r"use n_points >= (\d+)", str(info.value)).group(1))
    sample = generate(minimum, seed=0)
    assert len(sample.incidents) == len(INCIDENT_KINDS)
    # Even with no slack left, incidents keep 3 h of clean data around them.
    idx = sample.frame.index
    gap = pd.Timedelta(hours=3)
    ordered = sorted(sample.incidents, key=lambda i: i.start)
    assert ordered[0].start - idx[int(round(minimum * 0.5))] >= gap
    for prev, nxt in zip(ordered, ordered[1:]):
        assert nxt.start - prev.end > gap
    assert idx[-1] - ordered[-1].end >= gap


def test_sample_data_rejects_incidents_on_unknown_metrics() -> None:
    frame = clean_metrics(10)
    bad = Incident("spike", "nope", frame.index[1], frame.index[1])
    with pytest.raises(ValueError, match="'nope'"):
        SampleData(frame, (bad,))


# --------------------------------------------------------------------------- #
# Incident
# --------------------------------------------------------------------------- #


def test_incident_is_frozen_and_normalises_to_utc() -> None:
    inc = Incident("drift", "cpu", pd.Timestamp("2026-01-05 10:00"), pd.Timestamp("2026-01-05 12:00+01:00"))
    assert inc.start == pd.Timestamp("2026-01-05 10:00", tz="UTC")
    assert inc.end == pd.Timestamp("2026-01-05 11:00", tz="UTC")
    with pytest.raises(dataclasses.FrozenInstanceError):
        inc.kind = "spike"  # type: ignore[misc]


def test_incident_rejects_bad_values() -> None:
    t = pd.Timestamp("2026-01-05", tz="UTC")
    with pytest.raises(ValueError, match="'boom'.*spike, dip"):
        Incident("boom", "cpu", t, t)
    with pytest.raises(ValueError, match="end must not be before start"):
        Incident("spike", "cpu", t, t - FIVE_MIN)


# --------------------------------------------------------------------------- #
# Bad arguments
# --------------------------------------------------------------------------- #


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "meltdown"}, "unknown incident kind 'meltdown'; known kinds: spike, dip, level_shift"),
        ({"metric": "disk"}, "metric 'disk' is not a column"),
        ({"start": -1}, "start must be an integer row position in [0, 99], got -1"),
        ({"start": 100}, "got 100"),
        ({"start": 1.5}, "got 1.5"),
        ({"length": 0}, "length must be an integer in [1, 90] (rows left after start=10), got 0"),
        ({"length": 91}, "got 91"),
        ({"magnitude": 0.0}, "magnitude must be a finite number > 0, got 0.0"),
        ({"magnitude": float("nan")}, "got nan"),
        ({"seed": -3}, "seed must be an integer >= 0, got -3"),
    ],
)
def test_inject_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    frame = clean_metrics(100)
    args = {"kind": "spike", "metric": "cpu", "start": 10, "length": 5} | kwargs
    magnitude = args.pop("magnitude", 1.0)
    seed = args.pop("seed", 0)
    with pytest.raises(ValueError, match=re.escape(message)):
        inject(frame, args["kind"], args["metric"], args["start"], args["length"], magnitude=magnitude, seed=seed)


def test_inject_rejects_a_frame_without_datetime_index() -> None:
    with pytest.raises(ValueError, match="DatetimeIndex"):
        inject(pd.DataFrame({"x": [1.0, 2.0]}), "spike", "x", 0, 1)


def test_pattern_break_needs_a_day_of_context() -> None:
    frame = clean_metrics(DAY_ROWS)
    with pytest.raises(ValueError, match="at least 24 h of data outside the span"):
        inject(frame, "pattern_break", "requests", 100, 50)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"clean_fraction": 0.0}, "clean_fraction must be a number strictly between 0 and 1, got 0.0"),
        ({"clean_fraction": 1.0}, "got 1.0"),
        ({"clean_fraction": 1.5}, "got 1.5"),
        ({"kinds": ("spike", "explosion")}, "unknown incident kind 'explosion'; known kinds: spike"),
        ({"kinds": "spike"}, "kinds must be a sequence of incident kinds, not a single string, got 'spike'"),
        ({"n_points": 200}, "n_points=200 is too small for 7 incidents"),
        ({"n_points": 1}, "n_points must be an integer >= 2, got 1"),
        ({"freq": "1D"}, "freq must be at most 12h when kinds include 'pattern_break', got '1D'"),
        ({"metrics": ("cpu", "cpu")}, "metrics must be unique, got 'cpu' more than once"),
    ],
)
def test_generate_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        generate(**kwargs)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"n_points": 0}, "n_points must be an integer >= 2, got 0"),
        ({"n_points": True}, "got True"),
        ({"freq": "bogus"}, "freq must be a fixed pandas frequency such as '5min', got 'bogus'"),
        ({"freq": "1MS"}, "got '1MS'"),
        ({"metrics": ()}, "metrics must name at least one metric"),
        ({"metrics": "cpu"}, "not a single string, got 'cpu'"),
        ({"metrics": ("cpu", "")}, "metrics must be non-empty strings, got ''"),
        ({"seed": -1}, "seed must be an integer >= 0, got -1"),
        ({"start": "not a date"}, "start must be a timestamp, got 'not a date'"),
    ],
)
def test_clean_metrics_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        clean_metrics(**kwargs)
