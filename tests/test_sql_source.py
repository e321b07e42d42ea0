"""SQL source: SQLite files and a real PostgreSQL server on loopback; layouts, increments, time zones, secrets.

The PostgreSQL server is started once per session by the ``postgres`` fixture
(``initdb`` + ``pg_ctl`` from ``pg_config --bindir``, as the ``postgres``
user when the tests run as root, which the server refuses) with its default
time zone set to America/New_York, so no test passes only because server and
UTC agree. Where PostgreSQL is not installed they fail and say so: ``.ci/run``
installs the Debian package.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import sqlite3
import subprocess
import tempfile
import traceback
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator
from urllib.parse import quote

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from anomaly.errors import DataError
from anomaly.io.sources import SOURCE_KINDS, Source, SourceIOError, build_source, ingest
from anomaly.io.sql import FIRST_SINCE, SQLSource
from anomaly.io.store import RawStore

T0 = pd.Timestamp("2024-05-01 00:00", tz="UTC")
PASSWORD = "Zq7@x/w0rd%vault"  # URL-special characters on purpose
SERVER_ZONE = "America/New_York"


def hours(*hs: float) -> list[pd.Timestamp]:
    return [T0 + pd.Timedelta(hours=h) for h in hs]


def naive(stamp: pd.Timestamp, zone: str = "UTC") -> str:
    """The wall-clock text a database without time zones holds for ``stamp`` in ``zone``."""
    return stamp.tz_convert(zone).strftime("%Y-%m-%d %H:%M:%S")


def as_set(frame: pd.DataFrame) -> set[tuple[str, pd.Timestamp, float]]:
    return set(zip(frame["metric"], frame["timestamp"], frame["value"]))


def shown(exc: BaseException) -> str:
    """Everything a log of this exception would show: message, chained causes, traceback."""
    return "".join(traceback.format_exception(exc))


# -- SQLite ------------------------------------------------------------------------


def sqlite_db(path: Path, *statements: str, rows: dict[str, list[tuple]] | None = None) -> str:
    """A SQLite file built from DDL statements and ``{insert statement: rows}``; returns its URL."""
    with sqlite3.connect(path) as db:
        for statement in statements:
            db.execute(statement)
        for insert, values in (rows or {}).items():
            db.executemany(insert, values)
    db.close()
    return f"sqlite:///{path}"


@pytest.fixture
def long_db(tmp_path: Path) -> str:
    """Table ``points`` (timestamp, metric, value) with cpu and mem for hours 0-3, naive UTC text."""
    rows = [
        (naive(t), m, float(h) * (10 if m == "mem" else 1)) for m in ("cpu", "mem") for h, t in enumerate(hours(0, 1, 2, 3))
    ]
    return sqlite_db(
        tmp_path / "metrics.db",
        "CREATE TABLE points (timestamp TEXT, metric TEXT, value REAL)",
        rows={"INSERT INTO points VALUES (?, ?, ?)": rows},
    )


def add_points(url: str, rows: list[tuple]) -> None:
    with sqlite3.connect(url.removeprefix("sqlite:///")) as db:
        db.executemany("INSERT INTO points VALUES (?, ?, ?)", rows)
    db.close()


def test_a_long_table_becomes_points(long_db: str) -> None:
    source = SQLSource(long_db, table="points")
    assert isinstance(source, Source)
    got = source.fetch({})
    assert list(got.columns) == ["metric", "timestamp", "value"]
    assert str(got["timestamp"].dtype) == "datetime64[ns, UTC]" and got["value"].dtype == np.float64
    assert as_set(got) == {("cpu", t, float(h)) for h, t in enumerate(hours(0, 1, 2, 3))} | {
        ("mem", t, 10.0 * h) for h, t in enumerate(hours(0, 1, 2, 3))
    }


def test_fetch_returns_only_rows_after_each_metrics_watermark(long_db: str) -> None:
    got = SQLSource(long_db, table="points").fetch({"cpu": hours(2)[0], "mem": hours(0)[0], "unrelated": hours(-5)[0]})
    assert sorted((m, t) for m, t, _ in as_set(got)) == [("cpu", hours(3)[0])] + [("mem", t) for t in hours(1, 2, 3)]


def test_a_wide_table_with_quoted_names_and_nulls(tmp_path: Path) -> None:
    url = sqlite_db(
        tmp_path / "wide.db",
        'CREATE TABLE "host stats" ("when" TEXT, cpu REAL, "select" REAL, ignored TEXT)',
        rows={'INSERT INTO "host stats" VALUES (?, ?, ?, ?)': [
            (naive(t), float(h), None if h == 1 else 5.0 * h, "x") for h, t in enumerate(hours(0, 1, 2))
        ]},
    )  # fmt: skip
    source = SQLSource(url, table="host stats", timestamp="when", columns=["cpu", "select"], metric_prefix="db.")
    got = source.fetch({})
    assert as_set(got) == {("db.cpu", t, float(h)) for h, t in enumerate(hours(0, 1, 2))} | {
        ("db.select", hours(0)[0], 0.0), ("db.select", hours(2)[0], 10.0)
    }, "each column is a metric, prefixed; NULL is no reading"


def test_a_query_with_since_and_a_metric_prefix(long_db: str) -> None:
    source = SQLSource(
        long_db,
        query="SELECT timestamp AS t, metric AS name, value * 2 AS v FROM points "
        "WHERE metric = 'cpu' AND timestamp > :since",
        timestamp="t", metric="name", value="v", metric_prefix="sqlite.",
    )  # fmt: skip
    got = source.fetch({"sqlite.cpu": hours(1)[0]})
    assert as_set(got) == {("sqlite.cpu", hours(2)[0], 4.0), ("sqlite.cpu", hours(3)[0], 6.0)}


def test_since_is_the_oldest_watermark_of_the_sources_own_metrics(long_db: str) -> None:
    marks = {"db.cpu": hours(5)[0], "db.mem": hours(3)[0], "files.cpu": hours(1)[0]}
    assert SQLSource(long_db, table="points", metric_prefix="db.").since(marks) == hours(3)[0]
    assert SQLSource(long_db, table="points").since(marks) == hours(1)[0], "no prefix: every stored metric counts"
    assert SQLSource(long_db, table="points", metric_prefix="other.").since(marks) == FIRST_SINCE
    wide = SQLSource(long_db, table="points", columns=["cpu", "mem"], metric_prefix="db.")
    assert wide.since(marks) == hours(3)[0]
    assert wide.since({"db.cpu": hours(5)[0]}) == FIRST_SINCE, "a column without a watermark is read whole"
    assert wide.since({"db.cpu": pd.Timestamp("2024-05-01 05:00"), "db.mem": hours(6)[0]}) == hours(5)[0]


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/New_York"])
def test_since_reaches_the_database_as_wall_time_in_the_configured_zone(tmp_path: Path, zone: str) -> None:
    url = sqlite_db(tmp_path / "empty.db", "CREATE TABLE t (x INTEGER)")
    probe = SQLSource(url, query="SELECT :since AS timestamp, 'probe' AS metric, 1.0 AS value", timezone=zone)
    got = probe.fetch({"cpu": hours(2)[0]})
    assert list(got["timestamp"]) == hours(2), "the bound value read back as naive text in the zone is the watermark"


def test_naive_text_is_read_in_the_configured_zone(tmp_path: Path) -> None:
    summer, winter = pd.Timestamp("2024-07-01 12:00", tz="UTC"), pd.Timestamp("2024-01-15 12:00", tz="UTC")
    url = sqlite_db(
        tmp_path / "paris.db",
        "CREATE TABLE points (timestamp TEXT, metric TEXT, value REAL)",
        rows={"INSERT INTO points VALUES (?, ?, ?)": [
            (naive(summer, "Europe/Paris"), "cpu", 1.0),
            (naive(winter, "Europe/Paris"), "cpu", 2.0),
            ("2024-03-01T09:00:00+01:00", "zoned", 3.0),
        ]},
    )  # fmt: skip
    cpu = SQLSource(url, query="SELECT * FROM points WHERE metric = 'cpu' AND timestamp > :since", timezone="Europe/Paris")
    got = cpu.fetch({})
    assert list(got["timestamp"]) == [summer, winter] and naive(summer, "Europe/Paris").endswith("14:00:00")
    zoned = SQLSource(url, query="SELECT * FROM points WHERE metric = 'zoned' AND :since IS NOT NULL", timezone="Asia/Tokyo")
    assert list(zoned.fetch({})["timestamp"]) == [pd.Timestamp("2024-03-01 08:00", tz="UTC")], "an offset beats the zone"


def test_ingest_twice_stores_only_the_new_rows_and_a_third_run_is_quiet(
    long_db: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = RawStore(tmp_path / "store")
    source = SQLSource(long_db, table="points")
    first = ingest(source, store)
    assert (first.rows_written, first.rows_by_metric) == (8, {"cpu": 4, "mem": 4})

    add_points(long_db, [(naive(t), "cpu", 100.0 + h) for h, t in zip((4, 5), hours(4, 5))])
    second = ingest(source, store)
    assert (second.rows_in, second.rows_written, second.duplicates_dropped) == (2, 2, 0)
    assert second.watermarks == {"cpu": hours(5)[0]}
    assert store.read_wide(["cpu"])["cpu"].tolist() == [0.0, 1.0, 2.0, 3.0, 104.0, 105.0]

    caplog.set_level(logging.WARNING)
    third = ingest(source, store)
    assert (third.batch_id, third.rows_in, third.rows_written) == (None, 0, 0)
    assert caplog.records == [], "nothing new is a normal, quiet run"


def test_an_empty_result_is_an_empty_typed_frame(tmp_path: Path) -> None:
    url = sqlite_db(tmp_path / "e.db", "CREATE TABLE points (timestamp TEXT, metric TEXT, value REAL)")
    got = SQLSource(url, table="points").fetch({})
    assert got.empty and list(got.columns) == ["metric", "timestamp", "value"]
    assert str(got["timestamp"].dtype) == "datetime64[ns, UTC]"


def test_the_source_builds_from_a_json_spec(long_db: str) -> None:
    spec = {"kind": "sql", "url": long_db, "table": "points", "columns": ["value"], "name": "warehouse"}
    spec = json.loads(json.dumps(spec))
    assert SOURCE_KINDS["sql"] == "anomaly.io.sql:SQLSource"
    source = build_source(spec)
    assert isinstance(source, SQLSource) and source.name == "warehouse" and source.columns == ["value"]
    assert len(source.fetch({})) == 8


def labelled_db(path: Path) -> str:
    """Table ``points`` (timestamp, metric, host, region, value): cpu of hosts a and b, one row without a region."""
    rows = [(naive(t), "cpu", host, "eu", float(h) + (100 if host == "b" else 0)) for host in ("a", "b") for h, t in enumerate(hours(0, 1))]
    rows.append((naive(hours(0)[0]), "cpu", "c", None, 7.0))
    return sqlite_db(
        path,
        "CREATE TABLE points (timestamp TEXT, metric TEXT, host TEXT, region TEXT, value REAL)",
        rows={"INSERT INTO points VALUES (?, ?, ?, ?, ?)": rows},
    )


def test_label_columns_make_one_series_per_label_set_and_record_its_labels(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "store")
    source = build_source({"kind": "sql", "url": labelled_db(tmp_path / "l.db"), "table": "points", "label_columns": ["host", "region"]})
    result = ingest(source, store)
    assert result.rows_by_metric == {"cpu.host_a.region_eu": 2, "cpu.host_b.region_eu": 2, "cpu.host_c": 1}, "a NULL label is no label"
    assert store.read_wide(["cpu.host_b.region_eu"])["cpu.host_b.region_eu"].tolist() == [100.0, 101.0]
    catalogue = store.series()
    assert {k: (s.name, dict(s.labels)) for k, s in catalogue.items()} == {
        "cpu.host_a.region_eu": ("cpu", {"host": "a", "region": "eu"}),
        "cpu.host_b.region_eu": ("cpu", {"host": "b", "region": "eu"}),
        "cpu.host_c": ("cpu", {"host": "c"}),
    }
    assert json.loads((tmp_path / "store" / "series.json").read_text())["format_version"] == 1
    assert source.since(store.watermarks()) == hours(0)[0], "the oldest watermark among the labelled keys"
    again = ingest(source, store)
    assert (again.rows_written, len(store.series())) == (0, 3)


def test_store_series_lists_names_with_labels_and_names_a_damaged_catalogue(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from anomaly.cli import main

    store = RawStore(tmp_path / "store")
    ingest(SQLSource(labelled_db(tmp_path / "l.db"), table="points", label_columns=["host", "region"]), store)
    store.append(pd.DataFrame({"metric": ["plain"], "timestamp": hours(0), "value": [1.0]}))
    assert main(["store", "series", str(store.root), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert listed[0] == {"series": "cpu.host_a.region_eu", "name": "cpu", "labels": {"host": "a", "region": "eu"}}
    assert listed[-1] == {"series": "plain", "name": "plain", "labels": {}}, "no entry: its store name, no labels"
    assert main(["store", "series", str(store.root)]) == 0
    assert 'cpu.host_c  cpu{host="c"}' in capsys.readouterr().out.splitlines()
    store.catalogue_path.write_text("[]")
    assert main(["store", "series", str(store.root)]) == 2
    err = capsys.readouterr().err.strip()
    assert "series.json' is not a series catalogue: it holds a list, not an object" in err and "\n" not in err


def test_label_columns_in_the_wide_layout_and_its_window(tmp_path: Path) -> None:
    url = sqlite_db(
        tmp_path / "w.db",
        "CREATE TABLE stats (timestamp TEXT, host TEXT, cpu REAL, mem REAL)",
        rows={"INSERT INTO stats VALUES (?, ?, ?, ?)": [(naive(t), host, float(h), 10.0 * h) for host in ("a", "b") for h, t in enumerate(hours(0, 1, 2))]},
    )  # fmt: skip
    source = SQLSource(url, table="stats", columns=["cpu", "mem"], label_columns=["host"], metric_prefix="db.")
    got = source.fetch({})
    assert sorted(set(got["metric"])) == ["db.cpu.host_a", "db.cpu.host_b", "db.mem.host_a", "db.mem.host_b"]
    assert source.fetched_series()["db.mem.host_b"].labels == {"host": "b"}
    assert source.fetched_series()["db.mem.host_b"].name == "db.mem"
    marks = {m: hours(1)[0] for m in set(got["metric"])}
    assert source.since(marks) == hours(1)[0], "labelled keys of every column hold the window"
    assert source.since({"db.cpu.host_a": hours(1)[0]}) == FIRST_SINCE, "a column with no stored series reads everything"


def test_a_damaged_catalogue_stops_the_ingest_before_anything_is_stored(tmp_path: Path) -> None:
    store = RawStore(tmp_path / "store")
    (tmp_path / "store").mkdir()
    store.catalogue_path.write_text('{"format_version": 1, "series": {"cpu.host_a": {"labels": {"host": 3}}}}')
    source = SQLSource(labelled_db(tmp_path / "l.db"), table="points", label_columns=["host"])
    with pytest.raises(DataError, match=r"series\.json' is not a series catalogue: series 'cpu.host_a' has no name") as info:
        ingest(source, store)
    assert "\n" not in str(info.value)
    assert store.metrics() == [] and "cpu.host_a" in store.catalogue_path.read_text(), "nothing stored, the file left as it was"


# -- configuration and database errors -----------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "exactly one of table or query"),
        ({"table": "points", "query": "SELECT 1 WHERE 1 > :since"}, "exactly one of table or query"),
        ({"query": "SELECT * FROM points"}, r"the query 'SELECT \* FROM points' has no :since parameter"),
        ({"query": "SELECT * FROM points WHERE timestamp > :since AND metric = :name"}, r"also has \[':name'\]"),
        ({"table": "points", "metric": None}, "the long layout needs metric and value column names"),
        ({"table": "points", "columns": ["cpu"], "metric": "host"}, "selects the wide layout"),
        ({"table": "points", "columns": "cpu"}, "columns must be a non-empty list"),
        ({"table": "points", "columns": ["cpu", "timestamp"]}, "other than the time column"),
        ({"table": "points", "columns": ["cpu load"]}, "column 'cpu load' cannot name a metric"),
        ({"table": "points", "metric_prefix": "db/"}, "metric_prefix 'db/' cannot name a metric"),
        ({"table": "points", "timezone": "Mars/Olympus"}, "unknown time zone 'Mars/Olympus'"),
        ({"table": "points", "password": "a", "password_env": "B"}, "password in password and password_env"),
        ({"table": "points", "label_columns": "host"}, "label_columns must be a list of column names, got 'host'"),
        ({"table": "points", "label_columns": ["host name"]}, "label column 'host name' is not a label name"),
        ({"table": "points", "label_columns": ["metric"]}, r"label_columns \['metric'\] are also the time, metric or value"),
    ],
)
def test_bad_configuration_is_refused_at_construction(options: dict, message: str) -> None:
    with pytest.raises(DataError, match=message) as info:
        SQLSource("sqlite:///unused.db", **options)
    assert not isinstance(info.value, OSError)


def test_an_unparseable_url_is_named_by_its_scheme_only() -> None:
    with pytest.raises(DataError, match="cannot parse the database URL") as info:
        SQLSource(f"not a url {PASSWORD}", table="points")
    assert PASSWORD not in shown(info.value)


def test_unknown_tables_and_columns_are_data_errors_naming_them(long_db: str) -> None:
    with pytest.raises(DataError, match=r"refused table 'nope' at sqlite:///.*: OperationalError: no such table: nope") as info:
        SQLSource(long_db, table="nope").fetch({})
    assert not isinstance(info.value, OSError), "a wrong name is not worth retrying"
    with pytest.raises(DataError, match="no such column"):
        SQLSource(long_db, table="points", columns=["disk"]).fetch({})
    with pytest.raises(DataError, match=r"result of query .* has no column 'value'; it has \['timestamp', 'metric'\]"):
        SQLSource(long_db, query="SELECT timestamp, metric FROM points WHERE timestamp > :since").fetch({})
    with pytest.raises(DataError, match="refused query 'SELEC"):
        SQLSource(long_db, query="SELEC timestamp FROM points WHERE timestamp > :since").fetch({})


def test_bad_rows_are_data_errors_naming_the_source(long_db: str) -> None:
    add_points(long_db, [(naive(hours(9)[0]), "cpu load", 1.0), ("soon", "cpu", 2.0)])
    with pytest.raises(DataError, match=r"query .* of the SQL source 'sql': invalid metric name 'cpu load'.*\(row 4\)"):
        SQLSource(long_db, query="SELECT * FROM points WHERE metric != 'cpu' AND timestamp > :since").fetch({})
    with pytest.raises(DataError, match="unparseable timestamp 'soon'"):
        SQLSource(long_db, query="SELECT * FROM points WHERE metric = 'cpu' AND timestamp > :since").fetch({})


def test_a_missing_sqlite_file_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    with pytest.raises(DataError, match=f"SQLite database file not found: '{path}'"):
        SQLSource(f"sqlite:///{path}", table="points").fetch({})
    assert not path.exists()


def test_a_locked_database_is_a_retryable_io_error(long_db: str) -> None:
    url = f"{long_db}?timeout=0"
    holder = sqlite3.connect(url.removeprefix("sqlite:///").split("?")[0])
    try:
        holder.execute("BEGIN EXCLUSIVE")
        with pytest.raises(SourceIOError, match="database is locked") as info:
            SQLSource(url, table="points").fetch({})
        assert isinstance(info.value, OSError)
    finally:
        holder.close()


def test_passwords_stay_out_of_repr_errors_and_logs(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    inline = SQLSource(f"postgresql://reader:{quote(PASSWORD, safe='')}@db/metrics", table="points")
    assert PASSWORD not in repr(inline) and inline.url == "postgresql+psycopg://reader:***@db/metrics"

    monkeypatch.setenv("SQL_TEST_PASSWORD", PASSWORD)
    caplog.set_level(logging.DEBUG)
    for source in (
        SQLSource(f"postgresql://reader@127.0.0.1:{free_port()}/metrics", table="points", password_env="SQL_TEST_PASSWORD"),
        SQLSource(f"postgresql://reader@127.0.0.1:{free_port()}/metrics", table="points", password=PASSWORD),
    ):
        assert PASSWORD not in repr(source) and PASSWORD not in str(vars(source).get("url"))
        with pytest.raises(SourceIOError, match="cannot read table 'points' from postgresql") as info:
            source.fetch({})
        assert PASSWORD not in shown(info.value)
    assert PASSWORD not in caplog.text


def test_a_password_env_that_is_not_set_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SQL_TEST_UNSET", raising=False)
    source = SQLSource("postgresql://reader@db/metrics", table="points", password_env="SQL_TEST_UNSET")
    with pytest.raises(DataError, match="environment variable 'SQL_TEST_UNSET' .* is not set") as info:
        source.fetch({})
    assert not isinstance(info.value, OSError)


# -- PostgreSQL ------------------------------------------------------------------------


def free_port() -> int:
    """A loopback TCP port nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Postgres:
    """A running test server: a password-protected role ``reader`` owning database ``metrics``."""

    port: int
    user: str = "reader"
    database: str = "metrics"

    def url(self, password: str | None = None) -> str:
        auth = self.user if password is None else f"{self.user}:{quote(password, safe='')}"
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{self.database}"

    def execute(self, *statements: str, rows: dict[str, list[dict]] | None = None) -> None:
        """Run setup SQL (and parameterised inserts) as ``reader``."""
        engine = sa.create_engine(self.url(PASSWORD).replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.begin() as connection:
                for statement in statements:
                    connection.execute(sa.text(statement))
                for insert, values in (rows or {}).items():
                    connection.execute(sa.text(insert), values)
        finally:
            engine.dispose()


def _run_as_postgres(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    """Run a PostgreSQL program as ``postgres`` when we are root (the server refuses root), else as ourselves."""
    prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    return subprocess.run(prefix + args, cwd=cwd, capture_output=True, text=True, timeout=60, check=False)


@pytest.fixture(scope="session")
def postgres() -> Iterator[Postgres]:
    """A throwaway PostgreSQL server on 127.0.0.1, stopped and removed after the session."""
    pg_config = shutil.which("pg_config")
    assert pg_config is not None, "PostgreSQL is not installed (no pg_config on PATH): apt-get install postgresql"
    bindir = Path(subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=True).stdout.strip())
    root = Path(tempfile.mkdtemp(prefix="anomaly-pg-", dir="/tmp"))
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
    data, port, started = root / "data", free_port(), False

    def step(*args: str) -> None:
        done = _run_as_postgres([str(bindir / args[0]), *args[1:]], root)
        if done.returncode != 0:
            log = (root / "server.log").read_text() if (root / "server.log").exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr}{done.stdout}\n{log}")

    try:
        step("initdb", "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
             "--no-sync", "-E", "UTF8", "--locale=C")  # fmt: skip
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off -c TimeZone={SERVER_ZONE}"
        started = True
        step("pg_ctl", "-D", str(data), "-l", str(root / "server.log"), "-o", options, "-w", "-t", "30", "start")
        step("psql", "-h", str(root), "-p", str(port), "-U", "postgres", "-d", "postgres", "-v", "ON_ERROR_STOP=1",
             "-q", "-c", f"CREATE ROLE reader LOGIN PASSWORD '{PASSWORD}'", "-c", "CREATE DATABASE metrics OWNER reader")  # fmt: skip
        yield Postgres(port)
    finally:
        if started:
            _run_as_postgres([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"], root)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_env(postgres: Postgres, monkeypatch: pytest.MonkeyPatch) -> Postgres:
    """The server, with the password in the variable the sources name (and no libpq fallbacks)."""
    for name in ("PGPASSWORD", "PGPASSFILE", "PGSERVICE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SQL_TEST_PASSWORD", PASSWORD)
    return postgres


def table_name() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def pg_source(pg: Postgres, **options: object) -> SQLSource:
    return SQLSource(pg.url(), password_env="SQL_TEST_PASSWORD", **options)  # type: ignore[arg-type]


def test_postgres_float_values_round_trip_exactly(pg_env: Postgres) -> None:
    table = table_name()
    values = [0.1 + 0.2, -1 / 3, 5e-324, 1.7976931348623157e308, 123456789.125]
    pg_env.execute(
        f"CREATE TABLE {table} (timestamp timestamptz, metric text, value double precision)",
        rows={f"INSERT INTO {table} VALUES (:t, :m, :v)": [
            *({"t": t.to_pydatetime(), "m": "cpu", "v": v} for t, v in zip(hours(0, 1, 2, 3, 4), values)),
            {"t": hours(5)[0].to_pydatetime(), "m": "cpu", "v": None},
        ]},
    )  # fmt: skip
    got = pg_source(pg_env, table=table).fetch({})
    assert list(got["timestamp"]) == hours(0, 1, 2, 3, 4), "NULL is no reading"
    assert np.array_equal(got["value"].to_numpy().view(np.int64), np.array(values).view(np.int64))


def test_postgres_timestamptz_in_other_offsets_comes_back_as_the_right_instants(pg_env: Postgres) -> None:
    table = table_name()
    pg_env.execute(
        f"CREATE TABLE {table} (ts timestamp with time zone, metric text, value double precision)",
        f"INSERT INTO {table} VALUES ('2024-05-01 02:00:00+02', 'cpu', 1), ('2024-04-30 21:00:00-04', 'cpu', 2), "
        f"('2024-05-01 07:30:00+05:30', 'cpu', 3), ('2024-05-01 01:00:00+00', 'late', 4), "
        f"('2024-05-01 04:00:00+02', 'late', 5), ('2024-05-01 05:00:00+02', 'late', 6)",
    )
    for zone in ("UTC", "Europe/Paris"):  # the zone is for naive columns; zoned values ignore it
        got = pg_source(pg_env, table=table, timestamp="ts", timezone=zone).fetch({"cpu": hours(-10)[0]})
        assert as_set(got[got["metric"] == "cpu"]) == {("cpu", t, float(h + 1)) for h, t in enumerate(hours(0, 1, 2))}
    # 'late' has no watermark, so only the SQL window can drop its rows: the window starts at cpu's watermark
    got = pg_source(pg_env, table=table, timestamp="ts", timezone="Asia/Tokyo").fetch({"cpu": hours(1)[0]})
    assert as_set(got) == {("cpu", hours(2)[0], 3.0), ("late", hours(2)[0], 5.0), ("late", hours(3)[0], 6.0)}


@pytest.mark.parametrize("zone", ["UTC", "Europe/Paris", "America/Los_Angeles"])
def test_postgres_naive_timestamps_are_read_in_the_configured_zone(pg_env: Postgres, zone: str) -> None:
    table = table_name()
    winter = pd.Timestamp("2024-01-15 12:00", tz="UTC")
    stamps = [winter, *hours(0, 1, 2, 3)]
    pg_env.execute(
        f"CREATE TABLE {table} (ts timestamp without time zone, metric text, value double precision)",
        rows={f"INSERT INTO {table} VALUES (:t, :m, :v)": [
            {"t": naive(t, zone), "m": "a" if i < 2 else "b", "v": float(i)} for i, t in enumerate(stamps)
        ]},
    )  # fmt: skip
    source = pg_source(pg_env, table=table, timestamp="ts", timezone=zone)
    assert as_set(source.fetch({})) == {("a", winter, 0.0), ("a", hours(0)[0], 1.0)} | {
        ("b", t, float(i)) for i, t in zip((2, 3, 4), hours(1, 2, 3))
    }
    # 'b' has no watermark: only the SQL window, bound in the right zone, drops its rows up to hour 1
    assert as_set(source.fetch({"a": hours(1)[0]})) == {("b", hours(2)[0], 3.0), ("b", hours(3)[0], 4.0)}
    query = f"SELECT ts, value AS cpu FROM {table} WHERE ts > :since"
    wide = pg_source(pg_env, query=query, timestamp="ts", columns=["cpu"], timezone=zone)
    assert list(wide.fetch({"cpu": hours(2)[0]})["timestamp"]) == hours(3)


def test_postgres_incremental_pulls_through_ingest(
    pg_env: Postgres, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    table = table_name()
    insert = f"INSERT INTO {table} VALUES (:t, :m, :v)"
    pg_env.execute(
        f'CREATE TABLE {table} ("timestamp" timestamptz, metric text, value real)',
        rows={insert: [{"t": t.to_pydatetime(), "m": m, "v": h} for m in ("cpu", "mem") for h, t in enumerate(hours(0, 1, 2))]},
    )
    store = RawStore(tmp_path / "store")
    source = pg_source(pg_env, table=table, metric_prefix="pg.")
    assert ingest(source, store).rows_by_metric == {"pg.cpu": 3, "pg.mem": 3}
    pg_env.execute(rows={insert: [{"t": hours(3)[0].to_pydatetime(), "m": "cpu", "v": 3.5}]})
    second = ingest(source, store)
    assert (second.rows_in, second.rows_written, second.rows_by_metric) == (1, 1, {"pg.cpu": 1})
    caplog.set_level(logging.DEBUG)
    third = ingest(source, store)
    assert (third.batch_id, third.rows_in) == (None, 0)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING] and PASSWORD not in caplog.text


def test_postgres_credentials_from_env_or_value_and_a_wrong_password(
    pg_env: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    table = table_name()
    pg_env.execute(f"CREATE TABLE {table} (timestamp timestamptz, cpu double precision)",
                   f"INSERT INTO {table} VALUES ('2024-05-01 00:00Z', 1.5)")  # fmt: skip
    expected = {("cpu", T0, 1.5)}
    assert as_set(pg_source(pg_env, table=table, columns=["cpu"]).fetch({})) == expected
    assert as_set(SQLSource(pg_env.url(), table=table, columns=["cpu"], password=PASSWORD).fetch({})) == expected
    assert as_set(SQLSource(pg_env.url(PASSWORD), table=table, columns=["cpu"]).fetch({})) == expected

    wrong = "not-the-password-8472"
    monkeypatch.setenv("SQL_TEST_PASSWORD", wrong)
    with pytest.raises(SourceIOError, match="password authentication failed") as info:
        pg_source(pg_env, table=table, columns=["cpu"]).fetch({})
    assert wrong not in shown(info.value) and PASSWORD not in shown(info.value)


def test_postgres_bad_sql_is_a_data_error_naming_the_query(pg_env: Postgres) -> None:
    where = r"refused table 'nope' at postgresql\+psycopg://reader@127.0.0.1:\d+/metrics "
    with pytest.raises(DataError, match=where + r'.*UndefinedTable: relation "nope" does not exist') as info:
        pg_source(pg_env, table="nope").fetch({})
    assert not isinstance(info.value, OSError)
    with pytest.raises(DataError, match=r'refused query "SELECT 1/0 .*: DivisionByZero: division by zero') as info:
        pg_source(pg_env, query="SELECT 1/0 AS timestamp, 'x' AS metric, 1 AS value WHERE now() > :since").fetch({})
    assert not isinstance(info.value, OSError)
