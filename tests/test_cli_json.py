"""``anomaly benchmark --json``: the summary as one JSON document on stdout (detect and models: test_registry_cli.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anomaly.cli import main
from tests.test_benchmark import SETTINGS, standard_corpus


def test_benchmark_json_is_the_summary_it_writes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    corpus, out = standard_corpus(tmp_path / "corpus"), tmp_path / "out"
    argv = ["benchmark", str(corpus), "--out", str(out), "--files", "cat_b/*", "--jobs", "1", "--no-progress", "--json"]
    assert main([*argv, *SETTINGS]) == 0
    document = json.loads(capsys.readouterr().out)  # the whole of stdout is one document
    assert document == json.loads((out / "summary.json").read_text())
    assert (document["protocol"], document["files"], document["failed"]) == ("batch", 1, 0)
    assert list(document["per_file"]) == ["cat_b/clean.csv"]
    assert document["categories"]["cat_b"]["recall"] is None, "a file without windows has no recall: null, not NaN"
