"""The NAB standard-profile score on hand-made cases whose answers are worked out by hand.

NAB (Lavin & Ahmad 2015, nab/sweeper.py) rewards the earliest alert in each
anomaly window by a scaled sigmoid of its position, charges 1 per missed
window and 0.11 per alerted point outside the windows (less just after a
window), and ignores the first 15% of each file. The numbers below follow
from those rules with a 100-row file and one 10-row window at rows 50–59.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from anomaly.errors import DataError
from anomaly.evaluation.metrics import NabProfile, NabScore, nab_score, probation_length, scaled_sigmoid

INDEX = pd.date_range("2026-01-01", periods=100, freq="1min")
WINDOW = [(INDEX[50], INDEX[59])]
MAX_TP = 2 / (1 + math.exp(-5)) - 1  # the reward at a window's first row, before scaling to 1


def alerts_at(*rows: int, n: int = 100) -> np.ndarray:
    flags = np.zeros(n, dtype=bool)
    flags[list(rows)] = True
    return flags


def test_the_scaled_sigmoid_has_nabs_shape() -> None:
    assert scaled_sigmoid(-1.0) == pytest.approx(MAX_TP) == pytest.approx(0.98661, abs=1e-5)
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(3.0) == pytest.approx(2 / (1 + math.exp(15)) - 1)
    assert scaled_sigmoid(3.01) == -1.0  # far past a window: a plain false positive


def test_no_alerts_score_minus_one_per_window_and_normalise_to_zero() -> None:
    score = nab_score(INDEX, alerts_at(), WINDOW)
    assert (score.raw, score.windows, score.tp, score.fp, score.fn) == (-1.0, 1, 0, 0, 1)
    assert score.normalised == 0.0


def test_an_alert_on_the_windows_first_row_is_perfect() -> None:
    score = nab_score(INDEX, alerts_at(50), WINDOW)
    assert score.raw == pytest.approx(1.0) and score.normalised == pytest.approx(100.0) and score.tp == 1


def test_a_late_alert_earns_less_and_only_the_earliest_in_a_window_counts() -> None:
    last = (2 / (1 + math.exp(-5 * 0.1)) - 1) / MAX_TP  # position -(59-59+1)/10 = -0.1
    assert nab_score(INDEX, alerts_at(59), WINDOW).raw == pytest.approx(last) == pytest.approx(0.24824, abs=1e-5)
    middle = (2 / (1 + math.exp(-5 * 0.5)) - 1) / MAX_TP  # row 55: position -(59-55+1)/10 = -0.5
    assert nab_score(INDEX, alerts_at(55, 56, 59), WINDOW).raw == pytest.approx(middle)
    assert nab_score(INDEX, alerts_at(55, 56, 59), WINDOW).normalised == pytest.approx(50 * (middle + 1))


def test_false_positives_cost_point_eleven_each_and_less_just_after_a_window() -> None:
    before = nab_score(INDEX, alerts_at(20, 21), WINDOW)
    assert before.raw == pytest.approx(-1.0 - 2 * 0.11) and before.fp == 2
    just_after = 0.11 * (2 / (1 + math.exp(5 * 1 / 9)) - 1)  # row 60: |59-60| / (10-1)
    assert nab_score(INDEX, alerts_at(60), WINDOW).raw == pytest.approx(-1.0 + just_after)
    assert just_after == pytest.approx(-0.02979, abs=1e-5)
    assert nab_score(INDEX, alerts_at(99), WINDOW).raw == pytest.approx(-1.0 - 0.11)  # 40/9 > 3: a plain FP


def test_the_probationary_period_is_not_scored() -> None:
    assert probation_length(100) == 15 and probation_length(10_000) == 750 and probation_length(6) == 0
    assert nab_score(INDEX, alerts_at(0, 14), WINDOW).raw == -1.0  # both inside the first 15 rows
    assert nab_score(INDEX, alerts_at(15), WINDOW).raw == pytest.approx(-1.11)
    early = [(INDEX[5], INDEX[9]), *WINDOW]  # a window inside the probation is not scored either
    assert nab_score(INDEX, alerts_at(), early).windows == 1


def test_files_sum_before_normalising_and_windows_snap_to_rows() -> None:
    perfect, missed = nab_score(INDEX, alerts_at(50), WINDOW), nab_score(INDEX, alerts_at(), WINDOW)
    assert (perfect + missed).normalised == pytest.approx(50.0) and (perfect + missed).windows == 2
    between = [(INDEX[50] - pd.Timedelta("30s"), INDEX[59] + pd.Timedelta("30s"))]
    assert nab_score(INDEX, alerts_at(50), between).raw == pytest.approx(1.0)


def test_without_windows_only_false_positives_count_and_the_scale_is_undefined() -> None:
    score = nab_score(INDEX, alerts_at(40, 80), [])
    assert score.raw == pytest.approx(-0.22) and score.windows == 0 and math.isnan(score.normalised)


def test_other_profiles_weigh_differently_and_bad_input_is_named() -> None:
    reward_low_fp = NabProfile(tp=1.0, fp=0.055, fn=1.0)
    assert nab_score(INDEX, alerts_at(20), WINDOW, reward_low_fp).raw == pytest.approx(-1.055)
    assert isinstance(nab_score(INDEX, alerts_at(), WINDOW), NabScore)
    with pytest.raises(DataError, match="alerts has 3 values but there are 100 timestamps"):
        nab_score(INDEX, [True, False, True], WINDOW)
