"""The raw store: exact round trips, de-duplication, partitions, atomic commits, watermarks."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import anomaly.io.store as store_module
from anomaly.core.data import normalise
from anomaly.errors import DataError
from anomaly.io.store import RawStore, check_metric_name, validate_points
from tests.conftest import dead_pid, kill_when_stalled

T0 = pd.Timestamp("2024-03-01 22:00", tz="UTC")  # batches of a few hours cross midnight


def points(metric: str, hours: range | list[int], values: list[float] | None = None) -> pd.DataFrame:
    """Long-form points of one metric at ``T0 + h hours``; values default to ``100 * h + 0.5``."""
    hours = list(hours)
    vals = [100.0 * h + 0.5 for h in hours] if values is None else values
    return pd.DataFrame({"metric": metric, "timestamp": [T0 + pd.Timedelta(hours=h) for h in hours], "value": vals})


def as_dict(frame: pd.DataFrame) -> dict[tuple[str, pd.Timestamp], float]:
    return {(m, t): v for m, t, v in zip(frame["metric"], frame["timestamp"], frame["value"])}


def part_files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in (root / "raw").rglob("*.parquet"))


def committed_files(root: Path) -> list[str]:
    return sorted(f for rec in (root / "commits").glob("*.json") for f in json.loads(rec.read_text())["files"])



@pytest.fixture
def store(tmp_path: Path) -> RawStore:
    return RawStore(tmp_path / "store")


# -- round trips, ordering, de-duplication -------------------------------------------------


def test_values_and_timestamps_round_trip_exactly(store: RawStore) -> None:
    stamps = pd.DatetimeIndex(
        ["2024-01-01 00:00:00.000000001", "2024-01-01 23:59:59.999999999", "2024-06-30 12:00:00.5"], tz="UTC"
    )
    values = [0.1 + 0.2, -0.0, 5e-324, 1.7976931348623157e308, -1 / 3, 2.0**53 + 1]
    frame = pd.DataFrame({"metric": ["x"] * 3 + ["y"] * 3, "timestamp": list(stamps) * 2, "value": values})
    store.append(frame)
    back = store.read()
    assert list(back.columns) == ["metric", "timestamp", "value"]
    assert str(back["timestamp"].dtype) == "datetime64[ns, UTC]" and back["value"].dtype == np.float64
    assert list(back["timestamp"]) == list(stamps) * 2
    assert np.array_equal(back["value"].to_numpy().view(np.int64), np.array(values).view(np.int64)), "bit-exact values"


def test_timestamps_in_any_accepted_form_mean_the_same_instant(store: RawStore) -> None:
    text = pd.DataFrame({"Metric": ["a", "a"], "TIME": ["2024-01-01T01:00:00+01:00", "2024-01-01 02:00"], "Value": ["1.5", 3]})
    epoch = pd.DataFrame({"metric": ["a"], "ts": [1704070800], "value": [2]})  # numbers are epoch seconds
    store.append(text)
    store.append(epoch)
    hours = [pd.Timestamp(f"2024-01-01 0{h}:00", tz="UTC") for h in range(3)]  # naive text is UTC
    assert list(store.read()["timestamp"]) == hours
    assert list(store.read()["value"]) == [1.5, 2.0, 3.0]


def test_reads_are_sorted_by_metric_then_time(store: RawStore) -> None:
    frame = pd.concat([points("b", [5, 1, 3]), points("a", [4, 0, 2])]).sample(frac=1, random_state=0)
    store.append(frame)
    back = store.read()
    assert list(back["metric"]) == ["a"] * 3 + ["b"] * 3
    assert list(back["timestamp"]) == [T0 + pd.Timedelta(hours=h) for h in (0, 2, 4, 1, 3, 5)]
    assert back.index.equals(pd.RangeIndex(6))


def test_reappending_the_same_batch_writes_nothing(store: RawStore) -> None:
    batch = pd.concat([points("cpu", range(6)), points("mem", range(6))])
    first = store.append(batch)
    files, commits = part_files(store.root), sorted((store.root / "commits").iterdir())
    again = store.append(batch)
    assert (first.rows_written, first.duplicates_dropped) == (12, 0)
    assert (again.batch_id, again.rows_in, again.rows_written, again.duplicates_dropped) == (None, 12, 0, 12)
    assert again.rows_by_metric == {} and again.watermarks == first.watermarks
    assert part_files(store.root) == files and sorted((store.root / "commits").iterdir()) == commits
    assert len(store.read()) == 12


def test_overlapping_pulls_store_the_union_once_and_the_first_value_wins(store: RawStore) -> None:
    store.append(points("cpu", range(6)))
    second = store.append(points("cpu", range(4, 10), values=[-1.0] * 6))  # 4, 5 overlap with other values
    assert (second.rows_in, second.rows_written, second.duplicates_dropped) == (6, 4, 2)
    back = store.read()
    assert list(back["timestamp"]) == [T0 + pd.Timedelta(hours=h) for h in range(10)]
    assert list(back["value"]) == [100.0 * h + 0.5 for h in range(6)] + [-1.0] * 4


def test_within_a_batch_the_last_duplicate_wins(store: RawStore) -> None:
    batch = pd.concat([points("cpu", [0, 1], [1.0, 2.0]), points("cpu", [1, 0], [20.0, 10.0]), points("cpu", [1], [200.0])])
    result = store.append(batch)
    assert (result.rows_written, result.duplicates_dropped) == (2, 3)
    assert list(store.read()["value"]) == [10.0, 200.0]


def test_late_points_are_stored_and_leave_the_watermark_alone(store: RawStore) -> None:
    store.append(points("cpu", [0, 2, 10]))
    late = store.append(points("cpu", [1, 2, 5]))  # 1 and 5 are new though older than the watermark
    assert (late.rows_written, late.duplicates_dropped) == (2, 1)
    assert late.watermarks == {"cpu": T0 + pd.Timedelta(hours=10)}
    assert list(store.read()["timestamp"]) == [T0 + pd.Timedelta(hours=h) for h in (0, 1, 2, 5, 10)]


def test_defensive_read_deduplicates_first_committed_wins(store: RawStore) -> None:
    """Duplicates cannot be committed through append; a hand-copied part file must not double reads."""
    store.append(points("cpu", [0, 1], [1.0, 2.0]))
    (original,) = (store.root / "raw").rglob("metric=cpu/date=2024-03-01/*.parquet")
    later = "99991231T235959999999Z-1-00000000"
    store_module._write_part(original.parent / f"part-{later}.parquet", points("cpu", [0], [99.0]).astype({"timestamp": "datetime64[ns, UTC]"}))
    (store.root / "commits" / f"{later}.json").write_text(json.dumps({"files": [], "metrics": {}}))
    assert list(store.read()["value"]) == [1.0, 2.0]


def test_missing_values_are_dropped_and_counted(store: RawStore) -> None:
    result = store.append(points("cpu", range(4), [1.0, np.nan, None, 4.0]))  # type: ignore[list-item]
    assert (result.rows_in, result.rows_written, result.missing_dropped, result.duplicates_dropped) == (4, 2, 2, 0)
    assert list(store.read()["value"]) == [1.0, 4.0]


@pytest.mark.parametrize("empty", [pd.DataFrame(), pd.DataFrame(columns=["metric", "timestamp", "value"])])
def test_an_empty_append_is_quiet_and_creates_nothing(store: RawStore, empty: pd.DataFrame) -> None:
    result = store.append(empty)
    assert (result.batch_id, result.rows_in, result.rows_written, result.duplicates_dropped) == (None, 0, 0, 0)
    assert not store.root.exists()
    assert store.metrics() == [] and store.watermarks() == {} and store.read().empty


def test_append_result_adds_up_and_is_plain_json(store: RawStore) -> None:
    batch = pd.concat([points("a", [0, 1, 1]), points("b", [0], [np.nan])])
    result = store.append(batch)
    assert result.rows_in == result.rows_written + result.duplicates_dropped + result.missing_dropped == 4
    assert result.rows_by_metric == {"a": 2}
    data = json.loads(json.dumps(result.as_dict()))
    assert data["watermarks"] == {"a": (T0 + pd.Timedelta(hours=1)).isoformat()} and data["batch_id"] == result.batch_id


def test_concurrent_appends_from_threads_store_each_point_once(store: RawStore) -> None:
    batches = [points("cpu", range(i, i + 8)) for i in range(0, 24, 4)]
    results: list[int] = []
    errors: list[Exception] = []

    def work() -> None:
        try:
            results.extend(store.append(b).rows_written for b in batches)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sum(results) == 28 and len(store.read()) == 28


# -- layout and partition pruning ----------------------------------------------------------


def test_partition_layout_and_commit_record_are_as_documented(store: RawStore) -> None:
    result = store.append(pd.concat([points("cpu", range(4)), points("node:load.1-m", [0])]))  # 22:00 .. 01:00
    b = result.batch_id
    assert b is not None
    expected = [
        f"raw/metric=cpu/date=2024-03-01/part-{b}.parquet",
        f"raw/metric=cpu/date=2024-03-02/part-{b}.parquet",
        f"raw/metric=node:load.1-m/date=2024-03-01/part-{b}.parquet",
    ]
    assert part_files(store.root) == expected
    record = json.loads((store.root / "commits" / f"{b}.json").read_text())
    assert sorted(record["files"]) == expected and record["rows"] == 5
    assert record["metrics"]["cpu"] == {"rows": 4, "first": T0.isoformat(), "last": (T0 + pd.Timedelta(hours=3)).isoformat()}
    assert json.loads((store.root / "watermarks.json").read_text()) == {
        "cpu": (T0 + pd.Timedelta(hours=3)).isoformat(), "node:load.1-m": T0.isoformat(),
    }  # fmt: skip
    assert (store.root / ".lock").exists() and list((store.root / "pending").iterdir()) == []
    day_two = pd.read_parquet(store.root / expected[1])
    assert list(day_two["metric"]) == ["cpu", "cpu"] and list(day_two["value"]) == [200.5, 300.5]


def test_reads_open_only_the_partitions_of_the_requested_metrics_and_days(
    store: RawStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append(pd.concat([points("cpu", range(0, 72, 6)), points("mem", range(0, 72, 6))]))  # 4 days each
    opened: list[str] = []
    original = store_module._read_parts

    def spy(files, *args, **kwargs):  # type: ignore[no-untyped-def]
        opened.extend(str(Path(f).relative_to(store.root)) for f in files)
        return original(files, *args, **kwargs)

    monkeypatch.setattr(store_module, "_read_parts", spy)
    back = store.read(["cpu"], start="2024-03-02 12:00", end="2024-03-03 06:00")
    assert [t.isoformat() for t in back["timestamp"]] == [
        "2024-03-02T16:00:00+00:00", "2024-03-02T22:00:00+00:00", "2024-03-03T04:00:00+00:00",
    ]  # fmt: skip
    assert sorted({p.rsplit("/", 1)[0] for p in opened}) == [
        "raw/metric=cpu/date=2024-03-02", "raw/metric=cpu/date=2024-03-03",
    ]  # fmt: skip

    opened.clear()
    store.append(points("mem", [73]))  # 2024-03-04 23:00: de-duplication reads that one partition
    assert opened == [p for p in opened if p.startswith("raw/metric=mem/date=2024-03-04/")] and opened


def test_reading_one_metric_never_needs_another_metrics_files(store: RawStore) -> None:
    store.append(pd.concat([points("cpu", range(5)), points("mem", range(5))]))
    import shutil

    shutil.rmtree(store.root / "raw" / "metric=mem")
    assert list(store.read("cpu")["value"]) == [100.0 * h + 0.5 for h in range(5)]
    assert store.read_wide(["cpu"]).shape == (5, 1)


def test_read_range_is_half_open_and_checked(store: RawStore) -> None:
    store.append(points("cpu", range(4)))
    t = [T0 + pd.Timedelta(hours=h) for h in range(4)]
    assert list(store.read("cpu", start=t[1], end=t[3])["timestamp"]) == t[1:3]
    assert store.read("cpu", start=t[2], end=t[2]).empty
    with pytest.raises(DataError, match="start .* is after end"):
        store.read("cpu", start=t[3], end=t[0])
    with pytest.raises(DataError, match="invalid start 'yesterday-ish'"):
        store.read("cpu", start="yesterday-ish")


def test_reading_an_unknown_metric_names_it_and_lists_the_known_ones(store: RawStore) -> None:
    store.append(points("cpu", [0]))
    with pytest.raises(DataError, match=r"metric 'cpux' is not in the store .*; metrics: cpu"):
        store.read(["cpu", "cpux"])


def test_read_wide_is_the_metric_frame_input_normalise_accepts(store: RawStore) -> None:
    store.append(pd.concat([points("cpu", range(6)), points("mem", [0, 1, 2, 4, 5])]))
    wide = store.read_wide(["mem", "cpu"])
    assert list(wide.columns) == ["mem", "cpu"]
    assert isinstance(wide.index, pd.DatetimeIndex) and str(wide.index.tz) == "UTC" and wide.index.is_monotonic_increasing
    assert np.isnan(wide.loc[T0 + pd.Timedelta(hours=3), "mem"])
    frame = normalise(wide)
    assert frame.freq == pd.Timedelta("1h") and frame.metrics == ["mem", "cpu"]
    assert frame.values["cpu"].tolist() == [100.0 * h + 0.5 for h in range(6)]
    assert bool(frame.filled.loc[T0 + pd.Timedelta(hours=3), "mem"]) is True


def test_metrics_lists_only_committed_data(store: RawStore) -> None:
    store.append(points("b", [0]))
    store.append(points("a", [0]))
    assert store.metrics() == ["a", "b"]


# -- validation ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["a/b", "..", "a..b", "", ".hidden", "-flag", "a b", "a=b", "x%2Fy", "a\\b", "é", "x" * 201]
)
def test_unsafe_metric_names_are_rejected_by_name_and_nothing_is_written(store: RawStore, name: str) -> None:
    batch = pd.concat([points("fine", [0]), points("x", [1]).assign(metric=name)])
    with pytest.raises(DataError, match=r"invalid metric name " + __import__("re").escape(repr(name)) + r".*\(row 1\)"):
        store.append(batch)
    assert not store.root.exists()


@pytest.mark.parametrize("name", ["cpu", "node_cpu_seconds:rate5m", "a.b-c", "_x", ":x", "9", "x" * 200])
def test_safe_metric_names_are_accepted(store: RawStore, name: str) -> None:
    assert check_metric_name(name) == name
    store.append(points(name, [0]))
    assert store.metrics() == [name] and (store.root / "raw" / f"metric={name}").is_dir()


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (points("cpu", [0, 1], ["1.0", "abc"]), r"non-numeric value 'abc' in column 'value' at 2024-03-01 23:00:00\+00:00 \(metric 'cpu'\)"),
        (points("mem", [0, 1], [1.0, float("inf")]), r"infinite value inf in column 'value' at .*\(metric 'mem'\)"),
        (points("cpu", [0]).assign(timestamp=["not a time"]), r"unparseable timestamp 'not a time' at row 0"),
        (points("cpu", [0, 1]).assign(timestamp=[T0, None]), r"missing timestamp at row 1"),
        (points("cpu", [0, 1]).assign(metric=["cpu", None]), r"missing metric name at row 1"),
        (points("cpu", [0]).assign(timestamp=[1.7e12]), r"outside the supported years 1677-2262 as epoch seconds; it looks like epoch milliseconds"),
        (pd.DataFrame({"timestamp": [T0], "cpu": [1.0]}), r"expected long-form points with columns metric, timestamp, value.*\['timestamp', 'cpu'\]"),
    ],
)  # fmt: skip
def test_bad_points_are_rejected_naming_the_value(store: RawStore, frame: pd.DataFrame, message: str) -> None:
    with pytest.raises(DataError, match=message):
        store.append(frame)
    assert not store.root.exists()


def test_a_non_frame_is_rejected(store: RawStore) -> None:
    with pytest.raises(DataError, match="expected a pandas DataFrame of points, got list"):
        store.append([("cpu", T0, 1.0)])  # type: ignore[arg-type]


def test_validate_points_accepts_a_datetime_index_and_keeps_row_order() -> None:
    frame = pd.DataFrame({"metric": ["b", "a"], "value": [1, 2]}, index=pd.DatetimeIndex(["2024-01-02", "2024-01-01"]))
    out = validate_points(frame)
    assert list(out["metric"]) == ["b", "a"] and list(out["value"]) == [1.0, 2.0]
    assert str(out["timestamp"].dtype) == "datetime64[ns, UTC]"


# -- crash safety --------------------------------------------------------------------------


def test_an_exception_before_the_commit_leaves_reads_unchanged_and_no_files(
    store: RawStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append(points("cpu", range(4)))
    before, marks, files = store.read(), store.watermarks(), part_files(store.root)
    seen: list[str] = []

    def fail(self, batch_id, rel_files, pts):  # type: ignore[no-untyped-def]
        seen.extend(rel_files)
        assert all((self.root / f).stat().st_size > 0 for f in rel_files), "part files are written before the commit"
        raise RuntimeError("injected before commit")

    monkeypatch.setattr(RawStore, "_commit", fail)
    with pytest.raises(RuntimeError, match="injected"):
        store.append(pd.concat([points("cpu", range(2, 8)), points("new", [0])]))
    assert seen and all(f not in files for f in seen)
    pd.testing.assert_frame_equal(store.read(), before)
    assert store.watermarks() == marks and store.metrics() == ["cpu"]
    assert part_files(store.root) == files, "the failing writer removes its own files"
    assert list((store.root / "pending").iterdir()) == [] and not (store.root / "raw" / "metric=new").exists()


def test_leftovers_this_process_could_not_remove_are_invisible_and_removed_next_time(
    store: RawStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append(points("cpu", range(4)))
    before, files = store.read(), part_files(store.root)
    with monkeypatch.context() as patch:
        patch.setattr(RawStore, "_commit", lambda *a: (_ for _ in ()).throw(OSError("disk went away")))
        patch.setattr(RawStore, "_discard", lambda *a: None)  # the clean-up fails too
        with pytest.raises(OSError, match="disk went away"):
            store.append(pd.concat([points("cpu", range(2, 8)), points("new", [0])]))
    orphans = sorted(set(part_files(store.root)) - set(files))
    assert len(orphans) == 2 and len(list((store.root / "pending").iterdir())) == 1
    pd.testing.assert_frame_equal(store.read(), before)
    assert store.metrics() == ["cpu"] and "new" not in store.watermarks()
    with pytest.raises(DataError, match="metric 'new' is not in the store"):
        store.read(["new"])

    result = store.append(points("cpu", [8]))
    assert result.rows_written == 1
    assert set(part_files(store.root)) == set(files) | set(committed_files(store.root)) and not set(orphans) & set(part_files(store.root))
    assert list((store.root / "pending").iterdir()) == [] and not (store.root / "raw" / "metric=new").exists()


def test_a_failure_just_after_the_commit_record_keeps_the_committed_batch(
    store: RawStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.append(points("cpu", range(2)))
    original = store_module._fsync_dirs

    def fail_on_commits(folders):  # type: ignore[no-untyped-def]
        folders = list(folders)
        if any(Path(f).name == "commits" for f in folders):
            raise OSError("fsync failed")
        original(folders)

    monkeypatch.setattr(store_module, "_fsync_dirs", fail_on_commits)
    with pytest.raises(OSError, match="fsync failed"):
        store.append(points("cpu", [5]))
    monkeypatch.setattr(store_module, "_fsync_dirs", original)
    assert list(store.read()["timestamp"]) == [T0, T0 + pd.Timedelta(hours=1), T0 + pd.Timedelta(hours=5)]
    assert part_files(store.root) == committed_files(store.root)
    assert store.watermarks() == {"cpu": T0 + pd.Timedelta(hours=5)}
    assert store.append(points("cpu", [5])).duplicates_dropped == 1, "a retry finds the point stored"


def _fake_pending_batch(store: RawStore, pid: int) -> tuple[str, Path]:
    """The leftovers of a writer with ``pid`` stopped before its commit: intent record and one part file."""
    batch_id = store_module._new_batch_id().split("-")[0] + f"-{pid}-abcdef01"
    rel = f"raw/metric=cpu/date=2024-03-01/part-{batch_id}.parquet"
    (store.root / rel).parent.mkdir(parents=True, exist_ok=True)
    store_module._write_part(store.root / rel, validate_points(points("cpu", [1], [-5.0])))
    (store.root / "pending").mkdir(exist_ok=True)
    (store.root / "pending" / f"{batch_id}.json").write_text(json.dumps({"batch_id": batch_id, "pid": pid, "files": [rel]}))
    return batch_id, store.root / rel


def test_uncommitted_files_of_a_live_writer_are_kept_and_of_a_dead_one_removed(store: RawStore) -> None:
    store.append(points("cpu", [0]))
    _, live_file = _fake_pending_batch(store, os.getppid())
    _, dead_file = _fake_pending_batch(store, dead_pid())
    assert list(store.read()["value"]) == [0.5], "uncommitted files are never read"
    store.append(points("cpu", [2]))
    assert live_file.exists() and not dead_file.exists()
    assert list(store.read()["value"]) == [0.5, 200.5]
    assert sorted(p.stem for p in (store.root / "pending").iterdir()) == [live_file.stem.removeprefix("part-")]


def test_a_damaged_intent_record_never_removes_anything_but_its_own_part_files(store: RawStore, tmp_path: Path) -> None:
    store.append(points("cpu", [0]))
    outside = tmp_path / "precious.txt"
    outside.write_text("keep me")
    committed = part_files(store.root)
    batch_id, own = _fake_pending_batch(store, dead_pid())
    record = store.root / "pending" / f"{batch_id}.json"
    listed = [str(own.relative_to(store.root)), "../precious.txt", committed[0], f"raw/metric=../date=2024-03-01/part-{batch_id}.parquet"]
    record.write_text(json.dumps({"files": listed}))
    store.append(points("cpu", [3]))
    assert outside.read_text() == "keep me" and not own.exists() and not record.exists()
    assert set(committed) <= set(part_files(store.root)) and list(store.read()["value"]) == [0.5, 300.5]


def test_temporary_files_of_interrupted_json_writes_are_removed(store: RawStore) -> None:
    store.append(points("cpu", [0]))
    leftovers = [store.root / ".watermarks.json.k2j3", store.root / "commits" / ".x.json.a1b2", store.root / "pending" / ".y.json.zz"]
    for path in leftovers:
        path.write_text("{half")
    unrelated = store.root / ".notes.json.bak"
    unrelated.write_text("mine")
    store.append(points("cpu", [1]))
    assert not any(p.exists() for p in leftovers) and unrelated.exists()


KILLED_WRITER = """
import sys, time
from pathlib import Path
import pandas as pd
import anomaly.io.store as store

root, point, marker = sys.argv[1:4]


def stall(*args, **kwargs):
    Path(marker).write_text("stalled")
    time.sleep(300)


if point == "before-commit":  # part files written and fsynced, under the lock, no commit record
    store.RawStore._commit = stall
elif point == "after-commit":  # committed, watermarks.json not yet updated
    store.RawStore._update_watermarks = stall
else:
    raise SystemExit(f"unknown point {point}")
t0 = pd.Timestamp("2024-03-01 22:00", tz="UTC")
batch = pd.DataFrame({"metric": ["cpu"] * 6 + ["new"], "timestamp": [t0 + pd.Timedelta(hours=h) for h in range(2, 8)] + [t0],
                      "value": [-1.0] * 7})
store.RawStore(root).append(batch)
print("appended; should have been killed", flush=True)
"""


def _start_and_kill(root: Path, point: str, marker: Path) -> int:
    """Run an appending child, SIGKILL it once it stalls at ``point``; return its (now dead) pid."""
    return kill_when_stalled(KILLED_WRITER, [str(root), point, str(marker)], marker, point, timeout_s=60)


def test_a_writer_killed_before_its_commit_changes_nothing_and_is_cleaned_up(store: RawStore, tmp_path: Path) -> None:
    store.append(points("cpu", range(4)))
    before, marks, files = store.read(), store.watermarks(), part_files(store.root)

    pid = _start_and_kill(store.root, "before-commit", tmp_path / "stalled")

    orphans = sorted(set(part_files(store.root)) - set(files))
    assert len(orphans) == 2 and all(f"-{pid}-" in f for f in orphans), orphans
    assert [p.name.split("-")[1] for p in (store.root / "pending").iterdir()] == [str(pid)]
    pd.testing.assert_frame_equal(store.read(), before)
    assert store.watermarks() == marks and store.metrics() == ["cpu"]

    started = time.monotonic()
    result = store.append(points("cpu", [5, 9]))
    assert time.monotonic() - started < 30, "a lock held by a killed writer is released"
    assert (result.rows_written, result.duplicates_dropped) == (2, 0), "the killed batch's point 5 was never stored"
    assert not set(orphans) & set(part_files(store.root)) and list((store.root / "pending").iterdir()) == []
    assert part_files(store.root) == committed_files(store.root)
    assert list(store.read()["timestamp"]) == [T0 + pd.Timedelta(hours=h) for h in (0, 1, 2, 3, 5, 9)]


def test_a_writer_killed_after_its_commit_leaves_its_batch_and_correct_watermarks(store: RawStore, tmp_path: Path) -> None:
    store.append(points("cpu", range(4)))
    stale = json.loads((store.root / "watermarks.json").read_text())

    _start_and_kill(store.root, "after-commit", tmp_path / "stalled")

    assert json.loads((store.root / "watermarks.json").read_text()) == stale, "the file was not updated"
    assert store.watermarks() == {"cpu": T0 + pd.Timedelta(hours=7), "new": T0}, "the newest commit is folded in"
    assert len(store.read("cpu")) == 8 and store.metrics() == ["cpu", "new"]
    store.append(points("other", [0]))
    assert json.loads((store.root / "watermarks.json").read_text()) == {
        "cpu": (T0 + pd.Timedelta(hours=7)).isoformat(), "new": T0.isoformat(), "other": T0.isoformat(),
    }  # fmt: skip
    assert list((store.root / "pending").iterdir()) == []


# -- watermarks ----------------------------------------------------------------------------


def test_watermarks_are_per_metric(store: RawStore) -> None:
    first = store.append(pd.concat([points("cpu", range(5)), points("mem", range(2))]))
    assert first.watermarks == {"cpu": T0 + pd.Timedelta(hours=4), "mem": T0 + pd.Timedelta(hours=1)}
    second = store.append(points("mem", [30]))
    assert second.watermarks == {"mem": T0 + pd.Timedelta(hours=30)}
    assert store.watermarks() == {"cpu": T0 + pd.Timedelta(hours=4), "mem": T0 + pd.Timedelta(hours=30)}
    assert all(str(t.tz) == "UTC" for t in store.watermarks().values())


@pytest.mark.parametrize("damage", ["delete", "garbage", "not-an-object"])
def test_a_missing_or_unreadable_watermarks_file_is_recomputed_from_the_data(store: RawStore, damage: str) -> None:
    store.append(pd.concat([points("cpu", range(30)), points("mem", [0, 3])]))
    store.append(points("cpu", [2]).assign(value=7.0))  # nothing new, no commit
    expected = {"cpu": T0 + pd.Timedelta(hours=29), "mem": T0 + pd.Timedelta(hours=3)}
    path = store.root / "watermarks.json"
    {"delete": path.unlink, "garbage": lambda: path.write_text("{not json"), "not-an-object": lambda: path.write_text("[1]")}[damage]()
    assert store.watermarks() == expected
    store.append(points("mem", [1]))  # a late point: the file is rewritten whole
    assert json.loads(path.read_text()) == {m: t.isoformat() for m, t in expected.items()}


def test_a_watermark_write_failing_after_the_commit_is_logged_and_repaired(
    store: RawStore, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    store.append(points("cpu", range(2)))
    original = store_module.atomic_write_json

    def failing(path: Path, data: object) -> None:
        if path.name == "watermarks.json":
            raise OSError("no space left on device")
        original(path, data)

    monkeypatch.setattr(store_module, "atomic_write_json", failing)
    result = store.append(points("cpu", [5]))
    assert result.rows_written == 1 and result.watermarks == {"cpu": T0 + pd.Timedelta(hours=5)}
    assert "could not be updated" in caplog.text
    monkeypatch.setattr(store_module, "atomic_write_json", original)
    assert json.loads((store.root / "watermarks.json").read_text()) == {"cpu": (T0 + pd.Timedelta(hours=1)).isoformat()}
    assert store.watermarks()["cpu"] == T0 + pd.Timedelta(hours=5)
    store.append(points("mem", [0]))
    assert json.loads((store.root / "watermarks.json").read_text())["cpu"] == (T0 + pd.Timedelta(hours=5)).isoformat()


def test_rebuild_watermarks_repairs_a_hand_edited_file(store: RawStore) -> None:
    store.append(points("cpu", range(3)))
    store.append(points("cpu", range(3, 6)))
    store.append(points("mem", [0]))
    (store.root / "watermarks.json").write_text(json.dumps({"cpu": T0.isoformat()}))
    assert store.rebuild_watermarks() == {"cpu": T0 + pd.Timedelta(hours=5), "mem": T0}
    assert store.watermarks() == {"cpu": T0 + pd.Timedelta(hours=5), "mem": T0}


# -- the de-duplication rule as a property -------------------------------------------------

ROWS = st.lists(
    st.tuples(st.sampled_from(["a", "b", "c"]), st.integers(0, 60), st.floats(allow_nan=False, allow_infinity=False)),
    max_size=12,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(batches=st.lists(ROWS, min_size=1, max_size=4))
def test_the_store_holds_the_deduplicated_union_of_every_batch(batches: list[list[tuple[str, int, float]]]) -> None:
    """Rule: within a batch the last row of a (metric, timestamp) wins; across batches the first stored wins."""
    expected: dict[tuple[str, pd.Timestamp], float] = {}
    with tempfile.TemporaryDirectory() as folder:
        store = RawStore(folder)
        for rows in batches:
            frame = pd.DataFrame(rows, columns=["metric", "hour", "value"])
            frame = pd.DataFrame(
                {"metric": frame["metric"], "timestamp": T0 + pd.to_timedelta(frame["hour"], unit="h"), "value": frame["value"]}
            )
            last_in_batch = {(m, T0 + pd.Timedelta(hours=h)): v for m, h, v in rows}
            new = {k: v for k, v in last_in_batch.items() if k not in expected}
            result = store.append(frame)
            expected.update(new)
            assert result.rows_written == len(new) and result.duplicates_dropped == len(rows) - len(new)
        back = store.read()
        assert not back.duplicated(["metric", "timestamp"]).any()
        got = as_dict(back)
        assert got.keys() == expected.keys()
        assert all(np.float64(got[k]).view(np.int64) == np.float64(v).view(np.int64) for k, v in expected.items())
        marks = {m: max(t for mm, t in expected if mm == m) for m, _ in expected}
        assert store.watermarks() == marks


# -- compaction ---------------------------------------------------------------------


def files_per_day(store: RawStore, metric: str) -> dict[str, int]:
    """Part files per day folder of one metric."""
    folder = store.root / "raw" / f"metric={metric}"
    return {d.name: len(list(d.glob("part-*.parquet"))) for d in sorted(folder.iterdir())}


def test_compaction_merges_closed_days_into_one_file_and_reads_the_same(store: RawStore) -> None:
    for h in range(0, 30, 2):  # two-hourly ingests from 22:00 on day 1 to 03:00 on day 3
        store.append(pd.concat([points("cpu", [h, h + 1]), points("mem", [h])]))
    before_points, before_marks = store.read(), store.watermarks()
    assert files_per_day(store, "cpu") == {"date=2024-03-01": 1, "date=2024-03-02": 12, "date=2024-03-03": 2}
    records = len(list((store.root / "commits").glob("*.json")))

    result = store.compact(before="2024-03-03")
    assert result["partitions"] == 2 and result["files_replaced"] == 12 + 12  # cpu and mem on 03-02
    assert files_per_day(store, "cpu") == {"date=2024-03-01": 1, "date=2024-03-02": 1, "date=2024-03-03": 2}
    pd.testing.assert_frame_equal(store.read(), before_points)
    assert store.watermarks() == before_marks
    # batches that only wrote to 03-02 are gone; those with files elsewhere stay, plus the compaction's
    assert len(list((store.root / "commits").glob("*.json"))) < records
    # the store still refuses points it already has, and takes new ones
    assert store.append(points("cpu", range(0, 30))).rows_written == 0
    assert store.append(points("cpu", [40])).rows_written == 1
    # a second compaction finds nothing left to merge before that day
    assert store.compact(before="2024-03-03")["partitions"] == 0


def test_compaction_leaves_today_alone_by_default(store: RawStore) -> None:
    # the first seconds of today (UTC), so all three are today whatever the time of day
    today = pd.Timestamp.now(tz="UTC").floor("D")
    for k in range(3):
        store.append(pd.DataFrame({"metric": "cpu", "timestamp": [today + pd.Timedelta(seconds=k)], "value": [1.0 * k]}))
    assert store.compact() == {"partitions": 0, "files_replaced": 0, "records_removed": 0}
    assert sum(files_per_day(store, "cpu").values()) == 3


def test_a_read_that_finds_a_file_compacted_away_starts_again(store: RawStore, monkeypatch: pytest.MonkeyPatch) -> None:
    store.append(points("cpu", range(3)))
    expected = store.read("cpu")
    original, calls = store_module._read_parts, []

    def vanished_once(*args: object, **kwargs: object) -> pd.DataFrame:
        calls.append(1)
        if len(calls) == 1:
            raise FileNotFoundError("part file removed by a compaction")
        return original(*args, **kwargs)

    monkeypatch.setattr(store_module, "_read_parts", vanished_once)
    pd.testing.assert_frame_equal(store.read("cpu"), expected)
    assert len(calls) == 2
