"""Sources: files in every layout and location, watermark filtering, errors, and ingest end to end."""

from __future__ import annotations

import gzip
import uuid
from pathlib import Path
from typing import Iterator, Mapping

import fsspec
import numpy as np
import pandas as pd
import pytest

from anomaly.errors import DataError
from anomaly.io.sources import FileSource, Source, SourceIOError, build_source, ingest, newer_than
from anomaly.io.store import RawStore

T0 = pd.Timestamp("2024-05-01 00:00", tz="UTC")


def hours(*hs: int) -> list[pd.Timestamp]:
    return [T0 + pd.Timedelta(hours=h) for h in hs]


def wide_csv(path: Path, hs: range | list[int], *, cpu_offset: float = 0.0) -> Path:
    """A wide CSV with ISO text times: cpu = h + offset, mem = 10 h (missing at h = 2)."""
    hs = list(hs)
    frame = pd.DataFrame(
        {
            "timestamp": [t.strftime("%Y-%m-%dT%H:%M:%SZ") for t in hours(*hs)],
            "cpu": [h + cpu_offset for h in hs],
            "mem": [np.nan if h == 2 else 10.0 * h for h in hs],
        }
    )
    frame.to_csv(path, index=False)
    return path


def long_parquet(path: Path, metric: str, hs: list[int], values: list[float]) -> Path:
    pd.DataFrame({"metric": metric, "timestamp": hours(*hs), "value": values}).to_parquet(path)
    return path


def as_set(frame: pd.DataFrame) -> set[tuple[str, pd.Timestamp, float]]:
    return set(zip(frame["metric"], frame["timestamp"], frame["value"]))


@pytest.fixture
def memory_root() -> Iterator[str]:
    """A private folder on fsspec's in-memory filesystem, removed afterwards."""
    root = f"memory://test-{uuid.uuid4().hex[:8]}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


# -- layouts and locations -----------------------------------------------------------------


def test_a_wide_csv_becomes_long_points_without_the_missing_cells(tmp_path: Path) -> None:
    path = wide_csv(tmp_path / "metrics.csv", range(4))
    got = FileSource(str(path)).fetch({})
    assert list(got.columns) == ["metric", "timestamp", "value"]
    assert str(got["timestamp"].dtype) == "datetime64[ns, UTC]" and got["value"].dtype == np.float64
    assert as_set(got) == {("cpu", t, float(h)) for h, t in enumerate(hours(0, 1, 2, 3))} | {
        ("mem", t, 10.0 * h) for h, t in zip((0, 1, 3), hours(0, 1, 3))
    }


def test_a_long_parquet_is_read_exactly(tmp_path: Path) -> None:
    values = [0.1 + 0.2, -1 / 3, 5e-324]
    path = long_parquet(tmp_path / "points.parquet", "disk", [0, 1, 2], values)
    got = FileSource(str(path)).fetch({})
    assert list(got["metric"]) == ["disk"] * 3 and list(got["timestamp"]) == hours(0, 1, 2)
    assert np.array_equal(got["value"].to_numpy().view(np.int64), np.array(values).view(np.int64))


def test_a_folder_mixing_csv_and_parquet_reads_only_its_data_files(tmp_path: Path) -> None:
    folder = tmp_path / "drop"
    folder.mkdir()
    wide_csv(folder / "a.csv", [0, 1])
    long_parquet(folder / "b.parquet", "disk", [0], [7.0])
    (folder / "README.md").write_text("not data")
    (folder / "notes.txt").write_text("not data either")
    (folder / "_SUCCESS").write_text("")
    wide_csv(folder / ".partial.csv", [5])
    (folder / "sub").mkdir()
    long_parquet(folder / "sub" / "c.parquet", "deep", [0], [1.0])

    flat = FileSource(str(folder))
    assert flat.files() == [str(folder / "a.csv"), str(folder / "b.parquet")]
    assert sorted(set(flat.fetch({})["metric"])) == ["cpu", "disk", "mem"]

    deep = FileSource(str(folder), recursive=True)
    assert deep.files() == [str(folder / "a.csv"), str(folder / "b.parquet"), str(folder / "sub" / "c.parquet")]
    assert "deep" in set(deep.fetch({})["metric"])


def test_a_glob_takes_only_the_matching_files(tmp_path: Path) -> None:
    for day in ("2024-05-01", "2024-05-02", "2023-12-31"):
        long_parquet(tmp_path / f"{day}.parquet", f"m{day[-2:]}", [0], [1.0])
    source = FileSource(str(tmp_path / "2024-*.parquet"))
    assert [Path(f).name for f in source.files()] == ["2024-05-01.parquet", "2024-05-02.parquet"]
    assert sorted(set(source.fetch({})["metric"])) == ["m01", "m02"]


def test_several_entries_are_read_in_path_order_once_each(tmp_path: Path) -> None:
    long_parquet(tmp_path / "b.parquet", "cpu", [0], [2.0])
    long_parquet(tmp_path / "a.parquet", "cpu", [0], [1.0])
    source = FileSource([str(tmp_path / "b.parquet"), str(tmp_path), str(tmp_path / "*.parquet")])
    assert [Path(f).name for f in source.files()] == ["a.parquet", "b.parquet"]
    store = RawStore(tmp_path / "store")
    ingest(source, store)
    assert list(store.read()["value"]) == [2.0], "within one fetch the later path wins"


def test_memory_urls_work_for_files_folders_and_globs(memory_root: str) -> None:
    with fsspec.open(f"{memory_root}/in/a.csv", "w") as handle:
        handle.write("time,metric,value\n2024-05-01T00:00:00Z,cpu,1.5\n2024-05-01T01:00:00Z,cpu,2.5\n")
    with fsspec.open(f"{memory_root}/in/b.parquet", "wb") as handle:
        pd.DataFrame({"timestamp": hours(0), "mem": [3.0]}).to_parquet(handle)

    expected = {("cpu", hours(0)[0], 1.5), ("cpu", hours(1)[0], 2.5), ("mem", hours(0)[0], 3.0)}
    assert as_set(FileSource(f"{memory_root}/in").fetch({})) == expected
    assert as_set(FileSource(f"{memory_root}/in/").fetch({})) == expected
    assert as_set(FileSource(f"{memory_root}/in/*.csv").fetch({})) == expected - {("mem", hours(0)[0], 3.0)}
    assert as_set(FileSource([f"{memory_root}/in/b.parquet"]).fetch({})) == {("mem", hours(0)[0], 3.0)}
    assert all(f.startswith("memory://") for f in FileSource(f"{memory_root}/in").files())


def test_file_urls_and_compressed_and_tab_separated_files(tmp_path: Path) -> None:
    with gzip.open(tmp_path / "a.csv.gz", "wt") as handle:
        handle.write("timestamp,cpu\n2024-05-01T00:00:00Z,4.5\n")
    (tmp_path / "b.tsv").write_text("timestamp\tmem\n2024-05-01T00:00:00Z\t6.5\n")
    source = FileSource(f"file://{tmp_path}")
    assert [Path(f).name for f in source.files()] == ["a.csv.gz", "b.tsv"]
    assert as_set(source.fetch({})) == {("cpu", T0, 4.5), ("mem", T0, 6.5)}


def test_a_header_only_file_is_no_points_not_an_error(tmp_path: Path) -> None:
    (tmp_path / "empty.csv").write_text("timestamp,cpu,mem\n")
    got = FileSource(str(tmp_path / "empty.csv")).fetch({})
    assert got.empty and list(got.columns) == ["metric", "timestamp", "value"]


# -- watermarks ----------------------------------------------------------------------------


def test_fetch_returns_only_points_after_each_metrics_watermark(tmp_path: Path) -> None:
    source = FileSource(str(wide_csv(tmp_path / "m.csv", range(6))))
    got = source.fetch({"cpu": hours(3)[0], "mem": hours(0)[0], "unrelated": hours(99)[0]})
    assert sorted((m, t) for m, t, _ in as_set(got)) == sorted(
        [("cpu", t) for t in hours(4, 5)] + [("mem", t) for t in hours(1, 3, 4, 5)]
    )


def test_newer_than_is_strict_and_keeps_metrics_without_a_watermark() -> None:
    points = pd.DataFrame({"metric": ["a", "a", "b"], "timestamp": hours(0, 1, 0), "value": [1.0, 2.0, 3.0]})
    got = newer_than(points, {"a": hours(0)[0]})
    assert list(zip(got["metric"], got["value"])) == [("a", 2.0), ("b", 3.0)]


# -- errors --------------------------------------------------------------------------------


@pytest.mark.parametrize("where", ["local", "memory"])
def test_a_missing_path_is_a_data_error_naming_it(tmp_path: Path, memory_root: str, where: str) -> None:
    path = str(tmp_path / "nope.csv") if where == "local" else f"{memory_root}/nope/"
    with pytest.raises(DataError, match=f"data path not found: '{path}'") as info:
        FileSource(path).fetch({})
    assert not isinstance(info.value, OSError), "a wrong path is not worth retrying"


def test_a_folder_without_data_files_is_a_data_error_naming_it(tmp_path: Path) -> None:
    folder = tmp_path / "empty"
    folder.mkdir()
    with pytest.raises(DataError, match=f"no data files .* in the folder '{folder}'"):
        FileSource(str(folder)).fetch({})
    (folder / "README.md").write_text("x")
    (folder / "sub").mkdir()
    wide_csv(folder / "sub" / "a.csv", [0])
    with pytest.raises(DataError, match="not recursive"):
        FileSource(str(folder)).fetch({})
    with pytest.raises(DataError, match=r"no data files .* match the pattern '.*\*\.parquet'"):
        FileSource(str(folder / "*.parquet")).fetch({})


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("broken.parquet", b"PAR1 definitely not parquet", r"cannot read '.*broken\.parquet' as PARQUET"),
        ("binary.csv", b"\xff\xfe\x00garbage\x00\x81", r"cannot read '.*binary\.csv' as CSV"),
        ("text.csv", b"timestamp,cpu\n2024-05-01,high\n", r"'.*text\.csv': non-numeric value 'high' in column 'cpu'"),
        ("times.csv", b"timestamp,cpu\nlater,1\n", r"'.*times\.csv': unparseable timestamp 'later'"),
        ("names.csv", b"timestamp,cpu load\n2024-05-01,1\n", r"'.*names\.csv': column 'cpu load' cannot be a metric: invalid metric name 'cpu load'"),
        ("points.json", b"{}", r"unsupported file type for '.*points\.json'"),
    ],
)  # fmt: skip
def test_an_unreadable_file_is_a_data_error_naming_the_file(tmp_path: Path, name: str, content: bytes, message: str) -> None:
    (tmp_path / name).write_bytes(content)
    with pytest.raises(DataError, match=message) as info:
        FileSource(str(tmp_path / name)).fetch({})
    assert not isinstance(info.value, OSError)


def test_io_failures_are_retryable_os_errors_naming_the_file(memory_root: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with fsspec.open(f"{memory_root}/a.csv", "w") as handle:
        handle.write("timestamp,cpu\n2024-05-01,1\n")
    fs = fsspec.filesystem("memory")

    def broken(*args: object, **kwargs: object) -> None:
        raise ConnectionResetError("connection reset by peer")

    monkeypatch.setattr(type(fs), "_open", broken)
    with pytest.raises(OSError, match=r"cannot read 'memory://.*a\.csv': connection reset by peer") as info:
        FileSource(f"{memory_root}/a.csv").fetch({})
    assert isinstance(info.value, SourceIOError) and isinstance(info.value, DataError)

    monkeypatch.setattr(type(fs), "ls", broken)
    with pytest.raises(SourceIOError, match=f"cannot list data path '{memory_root}/'"):
        FileSource(f"{memory_root}/").fetch({})


def test_a_source_needs_paths() -> None:
    with pytest.raises(DataError, match="one or more non-empty path strings"):
        FileSource([])


# -- ingest --------------------------------------------------------------------------------


def test_ingest_twice_with_a_growing_file_stores_only_the_new_points(tmp_path: Path) -> None:
    path = tmp_path / "metrics.csv"
    store = RawStore(tmp_path / "store")
    source = FileSource(str(path))
    assert isinstance(source, Source)

    wide_csv(path, range(4))
    first = ingest(source, store)
    assert (first.rows_written, first.rows_by_metric) == (7, {"cpu": 4, "mem": 3})

    wide_csv(path, range(7))  # three more hours; the old rows are still in the file
    second = ingest(source, store)
    assert (second.rows_in, second.rows_written, second.duplicates_dropped) == (6, 6, 0), "only the new points are fetched"
    assert second.rows_by_metric == {"cpu": 3, "mem": 3}
    assert second.watermarks == {"cpu": hours(6)[0], "mem": hours(6)[0]}
    stored = store.read()
    assert len(stored) == 13 and not stored.duplicated(["metric", "timestamp"]).any()
    assert store.read_wide(["cpu"])["cpu"].tolist() == [float(h) for h in range(7)]

    third = ingest(source, store)
    assert (third.batch_id, third.rows_in, third.rows_written) == (None, 0, 0)


class OverlappingSource:
    """A source that always returns its whole window: the store must drop what it has."""

    name = "overlap"

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.seen: list[dict[str, pd.Timestamp]] = []

    def fetch(self, watermarks: Mapping[str, pd.Timestamp]) -> pd.DataFrame:
        self.seen.append(dict(watermarks))
        return self.frame


def test_ingest_passes_the_stores_watermarks_and_overlap_is_deduplicated(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "store")
    source = OverlappingSource(pd.DataFrame({"metric": "q", "timestamp": hours(0, 1, 2), "value": [1.0, 2.0, 3.0]}))
    assert isinstance(source, Source)
    assert ingest(source, store).rows_written == 3
    again = ingest(source, store)
    assert (again.rows_written, again.duplicates_dropped) == (0, 3)
    assert source.seen == [{}, {"q": hours(2)[0]}]


def test_ingest_refuses_a_source_that_returns_no_frame(tmp_path: Path) -> None:
    source = OverlappingSource([1, 2])  # type: ignore[arg-type]
    with pytest.raises(DataError, match="source 'overlap' returned list, expected a pandas DataFrame"):
        ingest(source, RawStore(tmp_path / "store"))


def test_build_source_takes_paths_or_a_mapping_with_a_kind(tmp_path: Path) -> None:
    assert build_source("a.csv").paths == ["a.csv"]
    assert build_source(["a.csv", "b/"]).paths == ["a.csv", "b/"]
    source = build_source({"kind": "files", "paths": ["x/"], "recursive": True})
    assert isinstance(source, FileSource) and source.recursive and source.paths == ["x/"]
    assert build_source({"paths": "y.parquet"}).paths == ["y.parquet"]


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"kind": "kafka", "topic": "m"}, "unknown source kind 'kafka'; expected one of"),
        ({"kind": "files", "path": "a.csv"}, r"bad options for a 'files' source \['path'\]"),
        (42, "a source is a path, a list of paths or a mapping with a 'kind', got 42"),
    ],
)
def test_build_source_names_a_bad_spec(spec: object, message: str) -> None:
    with pytest.raises(DataError, match=message):
        build_source(spec)  # type: ignore[arg-type]
