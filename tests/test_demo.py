"""The built-in demo runs end to end through the registry (tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from anomaly.core.config import DetectorConfig
from anomaly.demo import DEMO_MODEL, run_demo
from anomaly.ops.registry import ModelRegistry


def test_demo_publishes_promotes_loads_and_scores(tmp_path: Path, tiny_config: DetectorConfig) -> None:
    registry = tmp_path / "registry"
    summary = run_demo(tmp_path / "out", config=tiny_config, registry=registry)

    store = ModelRegistry(registry)
    assert store.versions(DEMO_MODEL) == [summary.version] == ["000001"]
    assert store.aliases(DEMO_MODEL) == {"production": "000001"}
    evaluation = store.get(DEMO_MODEL).metadata["evaluation"]["labelled_events"]
    assert set(evaluation) >= {"tp", "fp", "fn", "precision", "recall", "f1"}

    scores = pd.read_csv(summary.results[0])
    assert len(scores) > 1000 and {"anomaly_score", "flag"} <= set(scores.columns)
    events = json.loads(summary.results[2].read_text())["events"]
    assert summary.n_events == len(events)
    assert all(e["model"] == DEMO_MODEL and e["version"] == "000001" for e in events)
    assert summary.n_incidents == 7
    assert summary.quality.tp + summary.quality.fn == 7
    assert len(summary.missed) == summary.quality.fn  # the missed list and the score match incidents alike
    lines = "\n".join(summary.lines())
    assert str(summary.model) in lines and "precision" in lines

    again = run_demo(tmp_path / "out2", config=tiny_config, registry=registry)
    assert again.version == "000002"
    assert store.get(DEMO_MODEL, "000002").metadata["parent_version"] == "000001"
