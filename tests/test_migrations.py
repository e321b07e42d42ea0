"""Files written by release 0.1.0 are read by today's code, each through its kind's migrations.

``tests/fixtures/release-0.1.0`` holds a registry and a workspace exactly as
that release wrote them (see its README). Every stored kind is loaded here,
and then the scheduled work carries on from them: score the next points,
report, publish a new version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly.core.detector import LSTMAutoencoderDetector
from anomaly.core.migrations import CURRENT, STEPS, FormatError, upgrade
from anomaly.errors import ModelFileError
from anomaly.evaluation.synthetic import clean_metrics
from anomaly.ops.alerts import Ledger
from anomaly.ops.jobs import Group, score_group
from anomaly.ops.registry import ModelRegistry
from anomaly.ops.reports import write_report
from anomaly.ops.workspace import Workspace
from tests.conftest import long_points

RELEASE = Path(__file__).parent / "fixtures" / "release-0.1.0"


@pytest.fixture
def old(tmp_path: Path) -> tuple[Workspace, ModelRegistry]:
    """A copy of what release 0.1.0 left: its workspace and its registry."""
    shutil.copytree(RELEASE / "workspace", tmp_path / "workspace")
    shutil.copytree(RELEASE / "models", tmp_path / "models")
    return Workspace(tmp_path / "workspace"), ModelRegistry(tmp_path / "models")


def test_every_kind_has_a_version_and_one_step_per_past_change() -> None:
    assert set(CURRENT) == {"model", "policy", "score_state", "alerts", "ledger", "marks", "series"}
    assert all(CURRENT[kind] == len(steps) + 1 for kind, steps in STEPS.items())
    with pytest.raises(FormatError, match="newer than this version of the library reads"):
        upgrade("ledger", {}, CURRENT["ledger"] + 1, "a ledger")
    with pytest.raises(FormatError, match="no valid format version"):
        upgrade("model", {}, "2", "a model")


def test_a_release_01_version_loads_verified_and_scores(old: tuple[Workspace, ModelRegistry]) -> None:
    _, registry = old
    loaded = registry.load("cpu", alias="production")
    detector = loaded.detector
    assert loaded.version.version == "000001" and loaded.policy is None and loaded.policy_id == "trained"
    config = detector.get_config()
    assert config.window.aggregate == "median" and config.window.score_batch_size == 256  # moved out of scoring
    assert detector.residuals_ is None  # 0.1.0 kept no training residuals
    history = clean_metrics(3 * 288, metrics=("cpu",), seed=5)
    scores = detector.score(history.iloc[-100:], context=history.iloc[:-100])
    assert len(scores.score) == 100 and scores.score.notna().any()


def test_a_release_01_version_takes_a_new_fixed_policy_but_says_why_not_a_fitted_one(old: tuple[Workspace, ModelRegistry]) -> None:
    _, registry = old
    detector = registry.load("cpu").detector
    registry.set_policy("cpu", detector.policy.replace(threshold={"k": 3.0}), note="quieter")
    assert registry.load("cpu").detector.threshold_ == 3.0
    registry.set_policy("cpu", detector.policy.replace(threshold={"method": "spot"}))
    with pytest.raises(ModelFileError, match="saved before training residuals were kept"):
        registry.load("cpu")


def test_the_release_01_ledger_is_upgraded_and_keeps_its_outbox(old: tuple[Workspace, ModelRegistry]) -> None:
    workspace, _ = old
    raw = json.loads(workspace.ledger_path.read_text())
    assert raw["ledger_version"] == 2
    ledger = Ledger.from_json(raw)
    assert len(ledger.alerts) == 4 and len(ledger.outbox) == 4 and ledger.parked == []
    assert all(a.onset == a.start for a in ledger.alerts.values())
    assert ledger.to_json()["ledger_version"] == CURRENT["ledger"]


def test_an_alert_still_open_at_the_upgrade_is_closed_by_it(old: tuple[Workspace, ModelRegistry]) -> None:
    workspace, _ = old
    raw = json.loads(workspace.ledger_path.read_text())
    key = next(iter(raw["alerts"]))
    raw["alerts"][key]["resolved_at"] = None
    alert = Ledger.from_json(raw).alerts[key]
    assert not alert.open and alert.resolved_at == raw["last_report"]


def test_release_01_event_parts_read_as_alert_rows(old: tuple[Workspace, ModelRegistry]) -> None:
    workspace, _ = old
    rows = workspace.read_alert_rows(workspace.alert_parts())
    assert len(rows) == 4 and {"id", "onset", "closed"} <= set(rows.columns)
    assert (rows["onset"] == rows["start"]).all() and not rows["closed"].any()


def test_the_scheduled_work_carries_on_from_a_release_01_workspace(old: tuple[Workspace, ModelRegistry]) -> None:
    """Score state, carry, store and ledger of 0.1.0: the next score run and report just work."""
    workspace, registry = old
    state = workspace.score_state("cpu")
    assert state is not None and state.tracker.run is None and state.carry_key is None  # the old carry is not trusted
    later = clean_metrics(3 * 288 + 24, metrics=("cpu",), seed=5).iloc[-24:]
    later.index = pd.date_range(state.last_scored + pd.Timedelta("5min"), periods=24, freq="5min", name="timestamp")
    workspace.store().append(long_points(later))
    result = score_group(Group("cpu", ("cpu",)), workspace.root, registry.root)
    assert result["status"] == "scored" and result["points"] == 24 and result["version"] == "000001"
    moved = workspace.score_state("cpu")
    assert moved is not None and moved.last_scored == later.index[-1] and moved.carry_key is not None
    report = write_report(workspace.root, now=pd.Timestamp("2026-12-05T00:00:00Z").to_pydatetime())
    assert report.paths["json"].is_file()
    assert json.loads(workspace.ledger_path.read_text())["ledger_version"] == CURRENT["ledger"]


def test_publishing_after_a_release_01_version_continues_its_numbers(old: tuple[Workspace, ModelRegistry]) -> None:
    _, registry = old
    detector = registry.load("cpu").detector
    history = clean_metrics(3 * 288, metrics=("cpu",), seed=5)
    fresh = LSTMAutoencoderDetector(detector.get_config()).fit(history, progress=False)
    published = registry.publish(fresh, "cpu")
    assert published.version == "000002" and (published.path / "residuals.npz").is_file()
    np.testing.assert_array_equal(registry.load("cpu", "000002").detector.residuals_, fresh.residuals_)
