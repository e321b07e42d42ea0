"""The harness itself: its limits must really bite, or every bounded test is unbounded."""

from __future__ import annotations

from pathlib import Path

from tests.adversarial.conftest import run_python, snapshot


def test_a_child_that_allocates_past_the_cap_fails_instead_of_growing() -> None:
    outcome = run_python("b = bytearray(3 * 1024**3)", memory_mb=1024, timeout_s=30)
    assert outcome.returncode != 0
    assert "MemoryError" in outcome.stderr


def test_snapshot_sees_a_changed_byte_and_a_new_file(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "f.json").write_text("{}")
    before = snapshot(tmp_path)
    (tmp_path / "a" / "f.json").write_text("{ }")
    assert snapshot(tmp_path) != before
    (tmp_path / "a" / "f.json").write_text("{}")
    assert snapshot(tmp_path) == before
    (tmp_path / "a" / ".f.json.tmp").write_text("")
    assert set(snapshot(tmp_path)) - set(before) == {"a/.f.json.tmp"}
