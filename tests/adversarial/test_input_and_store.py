"""Hostile and awkward input data and the raw store (issue 26, items 1, 2, 6 and epoch milliseconds).

Each case asserts the exact error class (or the exact quarantine) and, where
anything was stored before, that the store is byte-identical after a refusal.
Cases that could allocate without bound or hang run in a bounded child.
"""

from __future__ import annotations

import gzip
import json
import logging
import subprocess
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from anomaly.core.data import normalise, parse_timestamps, read_table
from anomaly.errors import ConfigError, DataError
from anomaly.ops.jobs import Group, train_group
from anomaly.ops.workspace import STORE
from anomaly.io.sources import FileSource, ingest
from anomaly.io.store import RawStore, TimeLimits
from tests.adversarial.conftest import assert_one_line_error, run_cli, run_python, snapshot
from tests.conftest import TINY, TINY_SETTINGS, kill_when_stalled

#: Recent 5-minute points: the store's clock check must accept them.
NOW = pd.Timestamp.now(tz="UTC").floor("h")
STEP = pd.Timedelta("5min")
BOUNDED = {"memory_mb": 1500, "timeout_s": 60}
#: Ingest a path into a store in a child; a DataError is printed as one line.
INGEST = (
    "import sys\nfrom anomaly.io.sources import FileSource, ingest\nfrom anomaly.io.store import RawStore\n"
    "from anomaly.errors import DataError\n"
    "try:\n    ingest(FileSource(sys.argv[1]), RawStore(sys.argv[2]))\nexcept DataError as exc:\n"
    "    print(type(exc).__name__, exc)\n"
)


def wide_csv(path: Path, stamps: list[object] | pd.DatetimeIndex, values: list[float] | np.ndarray | None = None) -> Path:
    """``timestamp,cpu`` rows; values default to a smooth daily wave."""
    n = len(stamps)
    values = np.sin(np.arange(n) * 2 * np.pi / 288) * 10 + 50 if values is None else values
    pd.DataFrame({"timestamp": list(stamps), "cpu": values}).to_csv(path, index=False)
    return path


def recent(n: int, end: pd.Timestamp = NOW - pd.Timedelta("2h")) -> pd.DatetimeIndex:
    """``n`` 5-minute timestamps ending at ``end``."""
    return pd.date_range(end=end, periods=n, freq=STEP)


@pytest.fixture
def store(tmp_path: Path) -> RawStore:
    """A store holding a day of cpu, so every refusal has something to leave untouched."""
    root = tmp_path / "store"
    ingest(FileSource(str(wide_csv(tmp_path / "day.csv", recent(288)))), RawStore(root))
    return RawStore(root)


# -- 1. poisoned watermarks: far-off points are quarantined, not stored ------------------------


@pytest.mark.parametrize(
    "bad", ["2262-04-01T00:00:00Z", "2099-01-01T00:00:00Z", str(NOW + pd.Timedelta("7D"))], ids=["2262", "2099", "next-week"]
)
def test_a_far_future_point_is_quarantined_and_later_points_still_arrive(
    store: RawStore, tmp_path: Path, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    mark = store.watermarks()["cpu"]
    stamps = [str(t) for t in recent(6, end=NOW - pd.Timedelta("90min"))] + [bad]
    poisoned = wide_csv(tmp_path / "poisoned.csv", stamps, [1.0] * 6 + [99.0])
    with caplog.at_level(logging.WARNING):
        result = ingest(FileSource(str(poisoned)), store)
    assert (result.rows_written, result.quarantined) == (6, 1)
    assert store.watermarks()["cpu"] == pd.Timestamp(stamps[5]) > mark
    warning = [r.getMessage() for r in caplog.records if "quarantine" in r.getMessage()]
    assert len(warning) == 1 and "poisoned.csv" in warning[0] and "'cpu'" in warning[0] and "99" in warning[0], warning
    held = store.quarantined()
    assert list(held["metric"]) == ["cpu"] and list(held["value"]) == [99.0]
    assert held["timestamp"].iloc[0] == pd.Timestamp(bad) and "ahead" in held["reason"].iloc[0]
    assert held["origin"].iloc[0].endswith("poisoned.csv")

    later = wide_csv(tmp_path / "later.csv", recent(6, end=NOW), [2.0] * 6)
    assert ingest(FileSource(str(later)), store).rows_written == 6
    assert store.watermarks()["cpu"] == NOW
    assert store.read("cpu")["timestamp"].max() == NOW, "the bad point is not in the data"


@pytest.mark.parametrize(
    "bad, reason",
    [("1965-06-01T00:00:00Z", "before"), ("1970-01-01T00:00:00Z", "older"), (0, "older")],
    ids=["before-1970", "epoch-zero-text", "epoch-zero-number"],
)
def test_a_point_decades_before_the_history_is_quarantined(tmp_path: Path, bad: str | int, reason: str) -> None:
    """A metric's first file: the source has no watermark to filter on, so the store's rule is all there is."""
    store = RawStore(tmp_path / "store")
    stamps = [int(t.timestamp()) if isinstance(bad, int) else str(t) for t in recent(6)] + [bad]
    result = ingest(FileSource(str(wide_csv(tmp_path / "old.csv", stamps, [1.0] * 6 + [5.0]))), store)
    assert (result.rows_written, result.quarantined) == (6, 1)
    assert store.read("cpu")["timestamp"].min() == recent(6)[0], "nothing old reached the data"
    assert reason in store.quarantined()["reason"].iloc[0]


def test_naive_local_times_a_few_hours_ahead_are_clock_skew_not_poison(store: RawStore, tmp_path: Path) -> None:
    """A collector in UTC+14 writing naive local times looks 14 hours ahead: that must still be stored."""
    ahead = [(t + pd.Timedelta("14h")).tz_localize(None) for t in recent(4, end=NOW)]
    result = ingest(FileSource(str(wide_csv(tmp_path / "kiribati.csv", ahead, [3.0] * 4))), store)
    assert (result.rows_written, result.quarantined) == (4, 0)


def test_reingesting_a_poisoned_file_quarantines_its_point_once(store: RawStore, tmp_path: Path) -> None:
    poisoned = wide_csv(tmp_path / "p.csv", ["2262-04-01T00:00:00Z"], [9.0])
    assert ingest(FileSource(str(poisoned)), store).quarantined == 1
    before = snapshot(store.root)
    again = ingest(FileSource(str(poisoned)), store)
    assert (again.rows_written, again.quarantined) == (0, 1)
    assert snapshot(store.root) == before and len(store.quarantined()) == 1


def test_a_batch_of_only_far_off_points_stores_no_data(store: RawStore) -> None:
    raw, marks = snapshot(store.root / "raw"), store.watermarks()
    bad = pd.DataFrame({"metric": ["cpu", "mem"], "timestamp": ["2200-01-01", "2262-04-10"], "value": [1.0, 2.0]})
    result = store.append(bad)
    assert (result.rows_written, result.quarantined) == (0, 2)
    assert snapshot(store.root / "raw") == raw and store.watermarks() == marks and store.metrics() == ["cpu"]
    assert sorted(store.quarantined()["metric"]) == ["cpu", "mem"]


def test_the_clock_rule_is_configurable_and_bad_settings_are_named(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ahead = pd.DataFrame({"metric": ["cpu"], "timestamp": [NOW + pd.Timedelta("30D")], "value": [1.0]})
    monkeypatch.setenv("ANOMALY_STORE_MAX_AHEAD", "60D")
    assert RawStore(tmp_path / "a").append(ahead).rows_written == 1
    assert RawStore(tmp_path / "b", limits=TimeLimits(max_ahead=pd.Timedelta("1D"))).append(ahead).quarantined == 1
    monkeypatch.setenv("ANOMALY_STORE_MAX_AHEAD", "soon")
    with pytest.raises(ConfigError, match=r"ANOMALY_STORE_MAX_AHEAD.*'soon'"):
        RawStore(tmp_path / "c").append(ahead)
    assert not (tmp_path / "c").exists()


# -- repairing a store poisoned before the clock rule existed ------------------------------------


def poison(root: Path, when: str = "2262-04-01") -> None:
    """What the old code did: the far-future point stored as data, moving the watermark."""
    bad = pd.DataFrame({"metric": ["cpu"], "timestamp": [pd.Timestamp(when, tz="UTC")], "value": [1e6]})
    RawStore(root, limits=TimeLimits.off()).append(bad)
    assert RawStore(root, limits=TimeLimits.off()).watermarks()["cpu"] == pd.Timestamp(when, tz="UTC")


def test_a_poisoned_store_is_repaired_by_the_cli_and_trains_again(tmp_path: Path) -> None:
    workspace = tmp_path / "ws"
    root = workspace / STORE
    history = recent(3 * 288, end=NOW - pd.Timedelta("3h"))
    ingest(FileSource(str(wide_csv(tmp_path / "history.csv", history))), RawStore(root))
    poison(root)

    # the poisoned point breaks whole-history reads: a one-line error in bounded memory, not a MemoryError
    code = (
        "import sys\nfrom anomaly.ops.jobs import Group, train_group\nfrom tests.conftest import TINY\n"
        "from anomaly.errors import DataError\n"
        "try:\n    train_group(Group('cpu', ('cpu',)), sys.argv[1], sys.argv[2], TINY)\n"
        "except DataError as exc:\n    print('DataError:', exc)\n"
    )
    poisoned = snapshot(root)
    outcome = run_python(code, str(workspace), str(tmp_path / "registry"), **BOUNDED)
    assert outcome.returncode == 0 and outcome.stdout.startswith("DataError:"), outcome.stderr[-2000:]
    assert snapshot(root) == poisoned
    assert "2262" in outcome.stdout and "rows" in outcome.stdout and len(outcome.stdout.splitlines()) == 1

    listed = run_cli(["store", "list", str(root)])
    assert listed.returncode == 0 and "2262" in listed.stdout and "repair" in listed.stdout, listed.stdout
    repaired = run_cli(["store", "repair", str(root), "--metric", "cpu"])
    assert repaired.returncode == 0, repaired.stderr
    assert "1 point" in repaired.stdout and "cpu" in repaired.stdout
    store = RawStore(root)
    assert store.watermarks()["cpu"] == history[-1] and store.read("cpu")["timestamp"].max() == history[-1]
    assert list(store.quarantined()["value"]) == [1e6], "the removed point is kept in quarantine, not lost"
    held = run_cli(["store", "quarantine", str(root)])
    assert held.returncode == 0 and "2262-04-01" in held.stdout and "repair" in held.stdout

    later = recent(12, end=NOW)
    assert ingest(FileSource(str(wide_csv(tmp_path / "later.csv", later))), store).rows_written == 12
    summary = train_group(Group("cpu", ("cpu",)), workspace, tmp_path / "registry", TINY, history="2D", validation="12h")
    assert summary["version"] == "000001"


def test_a_poisoned_watermark_no_longer_blocks_ingest_before_the_repair(tmp_path: Path) -> None:
    root = tmp_path / "store"
    ingest(FileSource(str(wide_csv(tmp_path / "a.csv", recent(12)))), RawStore(root))
    poison(root)
    result = ingest(FileSource(str(wide_csv(tmp_path / "b.csv", recent(6, end=NOW)))), RawStore(root))
    assert result.rows_written == 6, "a watermark past the clock is not trusted"


def test_repair_bounds_are_explicit_and_nothing_to_remove_changes_nothing(store: RawStore) -> None:
    before = snapshot(store.root)
    assert store.repair().removed == 0
    assert snapshot(store.root) == before
    cut = recent(288)[200]
    result = store.repair(["cpu"], after=cut)
    assert result.removed == 87 and store.watermarks()["cpu"] == cut
    assert len(store.quarantined()) == 87 and len(store.read("cpu")) == 201


@pytest.mark.parametrize(
    "args, fragments",
    [
        (["--metric", "nope"], ["'nope'", "not in the store"]),
        (["--metric", "../x"], ["'../x'", "invalid metric name"]),
        (["--drop-after", "yesterday-ish"], ["'yesterday-ish'"]),
        (["--drop-after", "2024-01-02", "--drop-before", "2024-01-03"], ["2024-01-02", "2024-01-03"]),
    ],
    ids=["unknown-metric", "path-metric", "bad-time", "inverted-bounds"],
)
def test_store_repair_refuses_bad_arguments_in_one_line(store: RawStore, args: list[str], fragments: list[str]) -> None:
    before = snapshot(store.root)
    assert_one_line_error(run_cli(["store", "repair", str(store.root), *args]), *fragments)
    assert snapshot(store.root) == before


def test_store_commands_refuse_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    assert_one_line_error(run_cli(["store", "list", str(tmp_path / "nowhere")]), "nowhere")


KILLED_REPAIR = """
import sys, time
from pathlib import Path
import anomaly.io.store as store

root, point, marker = sys.argv[1:4]


def stall(*args, **kwargs):
    Path(marker).write_text("stalled")
    time.sleep(300)


if point == "before-commit":
    store.RawStore._commit = stall
elif point == "after-commit":  # committed, the replaced files not yet removed
    store.RawStore._retire = stall
else:
    raise SystemExit(f"unknown point {point}")
store.RawStore(root).repair(["cpu"])
"""


@pytest.mark.parametrize("point", ["before-commit", "after-commit"])
def test_a_repair_killed_midway_leaves_a_readable_store_that_the_next_writer_finishes(
    tmp_path: Path, point: str
) -> None:
    root = tmp_path / "store"
    ingest(FileSource(str(wide_csv(tmp_path / "a.csv", recent(30)))), RawStore(root))
    poison(root, "2200-01-01")
    original = RawStore(root, limits=TimeLimits.off()).read()

    kill_when_stalled(KILLED_REPAIR, [str(root), point, str(tmp_path / "m")], tmp_path / "m", point, timeout_s=60)

    readable = RawStore(root, limits=TimeLimits.off()).read()
    assert not readable.duplicated(["metric", "timestamp"]).any()
    pd.testing.assert_frame_equal(readable, original)  # until recovery: exactly what was there
    RawStore(root).append(pd.DataFrame({"metric": ["mem"], "timestamp": [NOW], "value": [1.0]}))
    after = RawStore(root, limits=TimeLimits.off())
    expected = original if point == "before-commit" else original[original["timestamp"] < NOW]
    pd.testing.assert_frame_equal(after.read("cpu"), expected.reset_index(drop=True))
    assert list((root / "pending").iterdir()) == []
    if point == "after-commit":
        assert after.watermarks()["cpu"] == original["timestamp"].iloc[-2]
        assert list(after.quarantined()["value"]) == [1e6]
    else:
        assert after.quarantined().empty and not list((root / "quarantine").glob("*.parquet"))


# -- 2. grids far larger than the data: refused before allocating -------------------------------


def thousand_rows(path: Path, last: str | None = None, freq: str = "5min") -> Path:
    stamps = [str(t) for t in pd.date_range("2024-01-01", periods=1000, freq=freq, tz="UTC")]
    if last is not None:
        stamps[-1] = last
    return wide_csv(path, stamps)


@pytest.mark.parametrize(
    "last, freq, extra, fragments",
    [
        ("2262-04-01T00:00:00Z", "5min", [], ["1,000 rows", "2262-04-01", "5min"]),
        ("1200-01-01T00:00:00Z", "5min", [], ["1200-01-01", "row 999"]),
        (None, "5min", ["--set", "preprocess.freq=1ns"], ["1,000 rows", "1ns"]),
        ("2200-01-01T00:00:00Z", "1s", [], ["1,000 rows", "2200-01-01", "1s"]),
    ],
    ids=["one-row-in-2262", "one-row-in-1200", "freq-1ns", "seconds-with-one-row-in-2200"],
)
def test_detect_refuses_an_exploding_grid_quickly_in_bounded_memory(
    tmp_path: Path, last: str | None, freq: str, extra: list[str], fragments: list[str]
) -> None:
    data = thousand_rows(tmp_path / "data.csv", last, freq)
    started = time.monotonic()
    outcome = run_cli(["detect", str(data), "--out", str(tmp_path / "out"), *TINY_SETTINGS, *extra], **BOUNDED)
    assert_one_line_error(outcome, *fragments)
    assert time.monotonic() - started < 30
    assert not (tmp_path / "out").exists()


def test_normalise_refuses_the_grid_within_a_second(tmp_path: Path) -> None:
    code = (
        "import sys, time\nfrom anomaly.core.data import normalise\nfrom anomaly.errors import DataError\n"
        "t = time.monotonic()\ntry:\n    normalise(sys.argv[1])\nexcept DataError as exc:\n"
        "    print(f'{time.monotonic() - t:.3f}', exc)\n"
    )
    outcome = run_python(code, str(thousand_rows(tmp_path / "d.csv", "2262-04-01T00:00:00Z")), **BOUNDED)
    seconds, _, message = outcome.stdout.partition(" ")
    assert outcome.returncode == 0 and float(seconds) < 1.0, outcome.stdout + outcome.stderr[-2000:]
    assert "grid" in message and "span" in message


def test_a_context_file_far_before_the_data_is_refused(tmp_path: Path) -> None:
    model = tmp_path / "model"
    data = thousand_rows(tmp_path / "data.csv", None, "1s")
    code = (
        "import sys\nfrom anomaly.core.detector import LSTMAutoencoderDetector as D\nfrom tests.conftest import TINY\n"
        "D(TINY).fit(sys.argv[1], progress=False).save(sys.argv[2])\n"
    )
    assert run_python(code, str(data), str(model), **BOUNDED).returncode == 0
    context = wide_csv(tmp_path / "ctx.csv", [str(t) for t in pd.date_range("1980-01-01", periods=100, freq="1s", tz="UTC")])
    outcome = run_cli(["detect", str(data), "--model", str(model), "--context", str(context), "--out", str(tmp_path / "o")], **BOUNDED)
    assert_one_line_error(outcome, "1980-01-01", "1s")


def test_gappy_and_sparse_data_still_regrids(tmp_path: Path) -> None:
    """A week-long outage in two weeks of data, and an hourly metric with one reading a day: both legitimate."""
    stamps = pd.date_range("2024-01-01", periods=4032, freq="5min", tz="UTC")
    gappy = pd.DataFrame({"cpu": np.arange(4032.0)}, index=stamps).drop(stamps[1000:3000])
    assert len(normalise(gappy)) == 4032
    daily = pd.DataFrame({"cpu": np.arange(365.0)}, index=pd.date_range("2024-01-01", periods=365, freq="1D", tz="UTC"))
    assert len(normalise(daily, freq="1h")) == 364 * 24 + 1


def test_long_form_with_a_metric_per_row_is_refused_before_pivoting(tmp_path: Path) -> None:
    path = tmp_path / "long.csv"
    n = 40_000
    stamps = pd.date_range("2024-01-01", periods=n, freq="1s", tz="UTC")
    pd.DataFrame({"timestamp": stamps, "metric": [f"m{i}" for i in range(n)], "value": 1.0}).to_csv(path, index=False)
    code = "import sys\nfrom anomaly.core.data import normalise\nnormalise(sys.argv[1])\n"
    outcome = run_python(code, str(path), **BOUNDED)
    assert outcome.returncode == 1 and "DataError" in outcome.stderr and "40,000" in outcome.stderr, outcome.stderr[-2000:]


# -- 4. epoch milliseconds ----------------------------------------------------------------------


def test_detect_names_epoch_milliseconds_in_one_line(tmp_path: Path) -> None:
    stamps = pd.date_range("2024-01-01", periods=1000, freq="5min", tz="UTC")
    data = wide_csv(tmp_path / "ms.csv", list((stamps - pd.Timestamp(0, tz="UTC")) // pd.Timedelta("1ms")))
    outcome = run_cli(["detect", str(data), "--out", str(tmp_path / "out"), *TINY_SETTINGS], **BOUNDED)
    assert_one_line_error(outcome, "1704067200000", "row 0", "milliseconds")


@pytest.mark.parametrize(
    "stamps, unit",
    [
        ([1_704_067_200, 1_704_067_200_000], "milliseconds"),
        ([1_704_067_200, 1_704_067_200_000_000], "microseconds"),
        ([1_704_067_200, 1_704_067_200_000_000_000], "nanoseconds"),
        (["1704067200", "1704067200000"], "milliseconds"),
        ([1_704_067_200.0, -1e12], "milliseconds"),
    ],
    ids=["ms", "us", "ns", "ms-as-text", "negative-ms"],
)
def test_parse_timestamps_names_the_unit_of_an_out_of_range_number(stamps: list[object], unit: str) -> None:
    with pytest.raises(DataError, match=rf"at row 1 .*{unit}"):
        parse_timestamps(pd.Index(stamps, dtype=object))


def test_the_store_and_the_parser_give_the_same_message(store: RawStore) -> None:
    before = snapshot(store.root)
    points = pd.DataFrame({"metric": ["cpu", "cpu"], "timestamp": [1_704_067_200, 1_704_067_200_000], "value": [1.0, 2.0]})
    with pytest.raises(DataError) as from_store:
        store.append(points)
    with pytest.raises(DataError) as from_parser:
        parse_timestamps(points["timestamp"])
    assert str(from_store.value) == str(from_parser.value) and "milliseconds" in str(from_store.value)
    assert snapshot(store.root) == before


# -- 6. large and garbage files -----------------------------------------------------------------


def sparse_csv(path: Path, size: str = "2G") -> Path:
    path.write_text("timestamp,cpu\n2024-01-01T00:00:00Z,1\n")
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    return path


def test_detect_refuses_a_2gb_file_before_reading_it(tmp_path: Path) -> None:
    big = sparse_csv(tmp_path / "big.csv")
    outcome = run_cli(["detect", str(big), "--out", str(tmp_path / "out"), *TINY_SETTINGS], **BOUNDED)
    assert_one_line_error(outcome, "big.csv", "2.0 GiB", "ANOMALY_MAX_READ_MB")


def test_ingest_refuses_a_2gb_file_and_leaves_the_store_alone(store: RawStore, tmp_path: Path) -> None:
    (tmp_path / "drop").mkdir()
    sparse_csv(tmp_path / "drop" / "big.csv")
    wide_csv(tmp_path / "drop" / "a.csv", recent(3, end=NOW), [1.0] * 3)
    before = snapshot(store.root)
    outcome = run_python(INGEST, str(tmp_path / "drop"), str(store.root), **BOUNDED)
    assert outcome.returncode == 0 and "big.csv" in outcome.stdout and "GiB" in outcome.stdout, outcome.stderr[-2000:]
    assert snapshot(store.root) == before


def test_a_compressed_file_that_expands_past_the_limit_is_stopped_while_reading(
    store: RawStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bomb = tmp_path / "bomb.csv.gz"
    with gzip.open(bomb, "wt") as handle:
        handle.write("timestamp,cpu\n")
        handle.writelines(f"{t},1\n" for t in recent(60_000).strftime("%Y-%m-%dT%H:%M:%SZ"))
    assert bomb.stat().st_size < 1024 * 1024
    before = snapshot(store.root)
    monkeypatch.setenv("ANOMALY_MAX_READ_MB", "1")
    with pytest.raises(DataError, match=r"bomb\.csv\.gz.*1 MiB.*ANOMALY_MAX_READ_MB"):
        ingest(FileSource(str(bomb)), store)
    with pytest.raises(DataError, match=r"bomb\.csv\.gz.*1 MiB"):
        read_table(bomb)
    assert snapshot(store.root) == before


def test_many_files_cannot_add_up_to_what_one_may_not(store: RawStore, tmp_path: Path) -> None:
    drop = tmp_path / "drop"
    drop.mkdir()
    for name in ("a.csv", "b.csv", "c.csv"):
        wide_csv(drop / name, recent(12_000, end=NOW), np.full(12_000, 1.0))
    assert 300_000 < (drop / "a.csv").stat().st_size < 500_000
    before = snapshot(store.root)
    with pytest.raises(DataError, match=r"c\.csv' is .* more than the 1 MiB a run reads after .* of other files"):
        ingest(FileSource(str(drop), max_read_mb=1), store)
    assert snapshot(store.root) == before


def test_a_bad_read_limit_setting_is_a_one_line_error(tmp_path: Path) -> None:
    data = thousand_rows(tmp_path / "d.csv")
    outcome = run_cli(["detect", str(data), "--out", str(tmp_path / "o")], env={"ANOMALY_MAX_READ_MB": "lots"}, **BOUNDED)
    assert_one_line_error(outcome, "ANOMALY_MAX_READ_MB", "'lots'")


@pytest.mark.parametrize("column", ["cpu", "timestamp"])
def test_a_huge_field_is_not_echoed_whole(tmp_path: Path, column: str) -> None:
    data = tmp_path / "huge.csv"
    with open(data, "w") as handle:
        handle.write("timestamp,cpu\n2024-01-01T00:00:00Z,1\n")
        huge = "x" * 20_000_000
        handle.write(f"{huge},2\n" if column == "timestamp" else f"2024-01-01T00:05:00Z,{huge}\n")
    outcome = run_cli(["detect", str(data), "--out", str(tmp_path / "out"), *TINY_SETTINGS], **BOUNDED)
    line = assert_one_line_error(outcome, "'xxxx", "20,000,002 characters")
    assert len(line) < 400


GARBAGE: dict[str, tuple[bytes, str]] = {
    "binary.csv": (bytes(range(256)) * 40, "binary.csv"),
    "fake.parquet": (b"PAR1 this is not parquet at all", "fake.parquet"),
    "nul.csv": (b"timestamp,cpu\n2024-01-01T00:00:00Z,1\n2024-01-01T00:05:00Z,2\x00\n", "NUL"),
    "dup.csv": (b"timestamp,cpu,cpu\n2024-01-01T00:00:00Z,1,2\n2024-01-01T00:05:00Z,1,2\n", "duplicate column 'cpu'"),
    "empty-name.csv": (b"timestamp,,cpu\n2024-01-01T00:00:00Z,1,2\n2024-01-01T00:05:00Z,1,2\n", "empty column name"),
    "latin1.csv": ("timestamp,cpü\n2024-01-01T00:00:00Z,1\n".encode("latin-1"), "UTF-8"),
    "wide.csv": (b"timestamp" + b",x" * 1_000_000 + b"\n2024-01-01T00:00:00Z" + b",1" * 1_000_000 + b"\n", "1,000,001 columns"),
    "long-line.csv": (b"timestamp," + b"c" * (8 << 20) + b"\n", "header"),
    "empty-metric.csv": (b"timestamp,metric,value\n2024-01-01T00:00:00Z,,1\n", "missing metric name at row 0"),
}


@pytest.mark.parametrize("name", list(GARBAGE))
def test_a_garbage_file_is_one_line_error_for_the_cli(tmp_path: Path, name: str) -> None:
    content, fragment = GARBAGE[name]
    data = tmp_path / name
    data.write_bytes(content)
    outcome = run_cli(["train", str(data), "--out", str(tmp_path / "model"), *TINY_SETTINGS], **BOUNDED)
    assert_one_line_error(outcome, name, fragment)
    assert not (tmp_path / "model").exists()


#: Files the unfixed reader took minutes over: they are ingested in a bounded child.
SLOW = {"wide.csv", "long-line.csv"}


@pytest.mark.parametrize("name", list(GARBAGE) + ["header-only.csv", "path-metric.csv"])
def test_a_garbage_file_leaves_the_store_byte_identical(store: RawStore, tmp_path: Path, name: str) -> None:
    extra = {
        "header-only.csv": (b"timestamp,cpu\n", ""),
        "path-metric.csv": (b"timestamp,../x\n2024-01-01T00:00:00Z,1\n", "'../x'"),
    }
    content, fragment = {**GARBAGE, **extra}[name]
    path = tmp_path / "in" / name
    path.parent.mkdir()
    path.write_bytes(content)
    before = snapshot(store.root)
    if name == "header-only.csv":  # a file a collector just created: nothing new, quietly
        assert ingest(FileSource(str(path)), store).rows_in == 0
    elif name in SLOW:
        outcome = run_python(INGEST, str(path), str(store.root), **BOUNDED)
        assert outcome.returncode == 0 and outcome.stdout.startswith("DataError"), outcome.stderr[-2000:]
        assert name in outcome.stdout and fragment in outcome.stdout and len(outcome.stdout.splitlines()) == 1
    else:
        with pytest.raises(DataError, match=fragment) as raised:
            ingest(FileSource(str(path)), store)
        assert name in str(raised.value) and "\n" not in str(raised.value)
    assert snapshot(store.root) == before


def test_too_many_metrics_in_one_append_are_refused_before_writing(store: RawStore) -> None:
    before = snapshot(store.root)
    points = pd.DataFrame({"metric": [f"m{i}" for i in range(10_001)], "timestamp": NOW, "value": 1.0})
    with pytest.raises(DataError, match=r"10,001 metrics"):
        store.append(points)
    assert snapshot(store.root) == before


# -- the ingest flow ------------------------------------------------------------------------------


@pytest.mark.usefixtures("prefect_harness")
def test_the_ingest_flow_quarantines_a_far_future_point_and_says_so(tmp_path: Path) -> None:
    from flows.ingest import ingest_flow

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    wide_csv(incoming / "cpu.csv", [str(t) for t in recent(12)] + ["2262-04-01T00:00:00Z"])
    result = ingest_flow(str(incoming), str(tmp_path / "ws"))
    assert (result["rows_written"], result["quarantined"]) == (12, 1)
    store = RawStore(tmp_path / "ws" / STORE)
    assert store.watermarks()["cpu"] == recent(12)[-1]
    assert list(store.quarantined()["origin"]) == [str(incoming / "cpu.csv")]
    assert json.loads((tmp_path / "ws" / STORE / "watermarks.json").read_text())["cpu"] == recent(12)[-1].isoformat()
