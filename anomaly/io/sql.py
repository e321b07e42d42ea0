"""SQL databases as a :class:`~anomaly.io.sources.Source`: any SQLAlchemy URL, a table or a query.

Layouts
-------
*Long* (the default): one row per point, columns ``timestamp``, ``metric``
and ``value`` (names configurable). Each metric value, prefixed with
``metric_prefix``, is a metric in the store and must pass
:func:`anomaly.io.store.check_metric_name`; the name is refused, with its row,
rather than rewritten. *Wide*: ``columns=[...]`` lists value columns, each
one metric named ``metric_prefix`` plus the column name; ``metric`` and
``value`` are not used then. NULL values are "no reading" and dropped.

Labels
------
``label_columns=[host, region]`` (either layout) makes each row's values of
those columns the series' labels: one series per metric and label set,
stored under the key :func:`anomaly.io.catalogue.series_key` forms, as for
Prometheus (``cpu`` with host ``a`` and region ``eu`` is stored as
``cpu.host_a.region_eu``), and recorded with its name and labels in the
store's series catalogue by :func:`~anomaly.io.sources.ingest`. A NULL
label is no label. Label columns must be label names (letters, digits,
``_``) and none of the time, metric, value or value columns.

What is read
------------
Either ``table`` (``name`` or ``schema.name``): the SELECT is built with
SQLAlchemy Core, which quotes the identifiers, so a name is never pasted
into SQL text. Give names as the database stores them (PostgreSQL folds
unquoted names to lower case). Or ``query``: the user's SQL, which must
compare its time column with the bind parameter ``:since`` (``WHERE ts >
:since``) and return the configured columns; the value is always bound by
the driver, never formatted into the text. A query without ``:since`` is
refused: without it every pull would re-read the whole history.

Incremental pulls
-----------------
A fetch asks for rows after ``since``: the oldest store watermark among the
metrics this source provides (see :meth:`SQLSource.since`). In the wide
layout those are known from ``columns``; a column without a watermark means
a full read. In the long layout the metric values are only known after the
query, so the stored metrics starting with ``metric_prefix`` stand for them
(every stored metric when the prefix is empty: give each SQL source its own
prefix so other sources' metrics do not hold its window back). A metric
that first appears in a long table after the first pull is read from that
window on, not from its first row. With nothing stored the window starts at
:data:`FIRST_SINCE`. The rows are then filtered per metric by
:func:`~anomaly.io.sources.newer_than`, so overlap never reaches the store.

Time zones
----------
Results are read by their values: aware date-times (``timestamp with time
zone``, ISO text with an offset) are converted to UTC; naive ones (``timestamp
without time zone``, ``DATETIME``, SQLite text without offset) are wall-clock
times in ``timezone`` (an IANA name, default ``UTC``), localised there and
converted to UTC. A column is aware or naive as a whole, judged by its first
value; numbers are epoch seconds. Naive local times repeat in the hour a
zone falls back from summer time: such a time is read as its first (summer)
occurrence, and a time skipped in spring moves forward; store UTC or use
``timestamp with time zone`` to avoid both.

``since`` is bound so that the database compares it the way the results
are read. On PostgreSQL the transaction's ``TimeZone`` is set to
``timezone`` and ``since`` is bound as an aware UTC datetime: exact for
``timestamp with time zone``, and naive columns are compared in
``timezone``, whatever the server's default zone. Other databases (SQLite,
MySQL ``DATETIME``, ...) get ``since`` as a naive wall-clock time in
``timezone``. The time column must hold date-times (in SQLite, ISO text as
SQLAlchemy and ``sqlite3`` write it): a column of epoch numbers compared
with a date-time matches nothing in SQLite, so convert it in a ``query``.

Credentials and errors
----------------------
The password is never part of the configuration a flow logs: ``password_env``
names an environment variable read at fetch time, or ``password`` takes the
value itself (e.g. from a Prefect Secret block resolved by the flow). It is
put into the URL only inside a fetch and appears in no repr, name, log line
or error message (errors replace it with ``***`` should a driver echo it).

A connection that fails or drops (unreachable server, refused login,
timeout, database locked) raises :class:`~anomaly.io.sources.SourceIOError`, an
``OSError`` the ingest flow retries. SQL the database rejects (unknown table
or column, syntax, types), a bad URL or driver, or rows that are not points
raise :class:`~anomaly.errors.DataError` naming the table or query. Each
fetch creates its own engine and disposes of it, so no connection outlives
a call. ``postgresql://`` URLs use psycopg 3 (``postgresql+psycopg://``).
"""

from __future__ import annotations

import logging
import os
import traceback
import zoneinfo
from datetime import datetime
from typing import Any, Mapping, Sequence
from urllib.parse import quote, quote_plus

import numpy as np
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import URL, Engine, make_url

from anomaly.core.data import as_utc, parse_timestamps
from anomaly.errors import DataError, excerpt
from anomaly.io.catalogue import Series, check_label_name, series_key, show_labels
from anomaly.io.sources import SourceIOError, newer_than
from anomaly.io.store import check_metric_name, empty_points, validate_points

log = logging.getLogger(__name__)

#: Where the window starts for a metric with no watermark: before any plausible metric data.
FIRST_SINCE = pd.Timestamp("1900-01-01", tz="UTC")
#: Seconds a PostgreSQL connection attempt may take before it fails (and the flow retries).
CONNECT_TIMEOUT_S = 30
#: The name of the bind parameter a ``query`` compares its time column with.
SINCE = "since"
#: Drivers that take libpq's ``connect_timeout``.
_LIBPQ_DRIVERS = frozenset({"psycopg", "psycopg2"})
#: SQLite reports bad SQL as ``OperationalError`` too; these messages mean the SQL, not the file.
_SQLITE_STATEMENT_ERRORS = ("no such ", "syntax error", "unrecognized token", "incomplete input", "ambiguous column")
_SHOWN_QUERY_CHARS = 200


class SQLSource:
    """Points from a table or query of any database SQLAlchemy can reach (see the module docstring).

    Every argument is plain JSON, so ``SQLSource(**spec)`` builds one from a
    ``prefect.yaml`` parameter mapping. Construction checks the configuration
    and connects to nothing.
    """

    def __init__(
        self,
        url: str,
        *,
        table: str | None = None,
        query: str | None = None,
        timestamp: str = "timestamp",
        metric: str | None = "metric",
        value: str | None = "value",
        columns: Sequence[str] | None = None,
        label_columns: Sequence[str] | None = None,
        metric_prefix: str = "",
        timezone: str = "UTC",
        name: str = "sql",
        password_env: str | None = None,
        password: str | None = None,
    ) -> None:
        self._url = _parse_url(url)
        self.url = self._url.render_as_string(hide_password=True)
        self.table, self.query = table, query
        self.timestamp, self.metric, self.value = timestamp, metric, value
        self.columns = _check_columns(columns, timestamp) if columns is not None else None
        self.label_columns = _check_label_columns(label_columns)
        self._fetched: dict[str, Series] = {}
        self.metric_prefix = metric_prefix
        self.timezone = _check_zone(timezone)
        self.name = name
        self.password_env = password_env
        self._password = password
        if not isinstance(name, str) or not name:
            raise DataError(f"a SQL source needs a non-empty name, got {excerpt(name)}")
        self._check_credentials()
        self._check_layout()
        self._statement = self._build_statement()

    def __repr__(self) -> str:
        what = f"table={self.table!r}" if self.table is not None else f"query={_shorten(self.query or '')!r}"
        layout = f"columns={self.columns!r}" if self.columns is not None else f"metric={self.metric!r}"
        labels = f", label_columns={self.label_columns!r}" if self.label_columns else ""
        return f"SQLSource({self.url!r}, {what}, {layout}{labels}, timezone={self.timezone!r})"

    # -- the contract ----------------------------------------------------------------

    def fetch(self, watermarks: Mapping[str, pd.Timestamp]) -> pd.DataFrame:
        """Points after the source's watermarks (see :class:`~anomaly.io.sources.Source`); none is an empty frame."""
        since = self.since(watermarks)
        self._fetched = {}
        keys, rows = self._run(since)
        points = newer_than(self._points(keys, rows), watermarks)
        log.debug("%s: %d row(s) from %s after %s, %d new", self.name, len(rows), self._what, since, len(points))
        return points

    def fetched_series(self) -> dict[str, Series]:
        """``{store name: Series}`` of the labelled series the last fetch read (none without ``label_columns``)."""
        return dict(self._fetched)

    def since(self, watermarks: Mapping[str, pd.Timestamp]) -> pd.Timestamp:
        """The UTC time the next fetch reads rows after: the oldest watermark of this source's metrics.

        Wide layout: the configured columns' metrics, and :data:`FIRST_SINCE`
        if one has no watermark yet. Long layout: the stored metrics starting
        with ``metric_prefix`` (all of them for an empty prefix), as the
        table's metric names are unknown before the query runs.
        """
        if self.columns is not None and self.label_columns:  # a column's series: its name, or its name and labels
            names = [self.metric_prefix + c for c in self.columns]
            found = [[t for m, t in watermarks.items() if m == n or m.startswith(n + ".")] for n in names]
            if not all(found):
                return FIRST_SINCE
            marks = [t for ts in found for t in ts]
        elif self.columns is not None:
            names = [self.metric_prefix + c for c in self.columns]
            if any(n not in watermarks for n in names):
                return FIRST_SINCE
            marks = [watermarks[n] for n in names]
        else:
            marks = [t for m, t in watermarks.items() if m.startswith(self.metric_prefix)]
        return min((as_utc(t) for t in marks), default=FIRST_SINCE)

    # -- configuration ---------------------------------------------------------------

    def _check_credentials(self) -> None:
        """One place for the password; never a value in the URL *and* elsewhere, which hides which wins."""
        given = [what for what, v in (("the URL", self._url.password), ("password", self._password),
                                      ("password_env", self.password_env)) if v is not None]  # fmt: skip
        if len(given) > 1:
            raise DataError(f"the SQL source {self.url} has a password in {' and '.join(given)}; give it in one place")
        if self.password_env is not None and (not isinstance(self.password_env, str) or not self.password_env):
            raise DataError(f"password_env must name an environment variable, got {excerpt(self.password_env)}")
        if self._password is not None and not isinstance(self._password, str):
            raise DataError(f"password must be a string, got {type(self._password).__name__}")

    def _check_layout(self) -> None:
        """Exactly one of table/query, and the columns one layout needs; names must be usable as metrics."""
        if (self.table is None) == (self.query is None):
            raise DataError(f"a SQL source needs exactly one of table or query, got table={excerpt(self.table)}, "
                            f"query={excerpt(self.query)}")  # fmt: skip
        for option in ("table", "query"):
            given = getattr(self, option)
            if given is not None and (not isinstance(given, str) or not given.strip()):
                raise DataError(f"{option} must be a non-empty string, got {excerpt(given)}")
        if not isinstance(self.timestamp, str) or not self.timestamp:
            raise DataError(f"timestamp must name the time column, got {excerpt(self.timestamp)}")
        if not isinstance(self.metric_prefix, str):
            raise DataError(f"metric_prefix must be a string, got {excerpt(self.metric_prefix)}")
        taken = {self.timestamp, *(self.columns or [self.metric, self.value])}
        clash = [c for c in self.label_columns if c in taken]
        if clash:
            raise DataError(f"label_columns {excerpt(clash)} are also the time, metric or value columns; a label is a column of its own")
        if self.columns is not None:
            if (self.metric, self.value) not in {(None, None), ("metric", "value")}:
                raise DataError(
                    f"columns={excerpt(self.columns)} selects the wide layout, which has no metric or value column; "
                    f"got metric={excerpt(self.metric)}, value={excerpt(self.value)} (leave them out)"
                )
            self.metric = self.value = None
            for column in self.columns:
                _check_metric(self.metric_prefix + column, f"column {excerpt(column)}")
            return
        if not (isinstance(self.metric, str) and self.metric and isinstance(self.value, str) and self.value):
            raise DataError(
                f"the long layout needs metric and value column names, got metric={excerpt(self.metric)}, "
                f"value={excerpt(self.value)}; for the wide layout list the value columns in columns"
            )
        if len({self.timestamp, self.metric, self.value}) < 3:
            raise DataError(f"timestamp, metric and value must be three columns, got {excerpt(self.timestamp)}, "
                            f"{excerpt(self.metric)}, {excerpt(self.value)}")  # fmt: skip
        if self.metric_prefix:
            _check_metric(self.metric_prefix + "x", f"metric_prefix {excerpt(self.metric_prefix)}")

    def _build_statement(self) -> sa.Executable:
        """The SELECT, built once: from Core constructs for a table, or the user's text with ``:since``."""
        since = sa.bindparam(SINCE, type_=sa.DateTime(timezone=self._on_postgresql))
        if self.query is not None:
            found = set(sa.text(self.query).compile().params)
            if SINCE not in found:
                raise DataError(
                    f"the query {_shorten(self.query)!r} has no :{SINCE} parameter; incremental pulls need "
                    f"one, e.g. 'WHERE ts > :{SINCE}'"
                )
            if found != {SINCE}:
                raise DataError(f"the query may only use the bind parameter :{SINCE}, it also has "
                                f"{sorted(':' + p for p in found - {SINCE})}")  # fmt: skip
            return sa.text(self.query).bindparams(since)
        schema, _, name = str(self.table).rpartition(".")
        wanted = [*(self.columns if self.columns is not None else [self.metric, self.value]), *self.label_columns]
        table = sa.table(name, *(sa.column(c) for c in [self.timestamp, *wanted]), schema=schema or None)
        return sa.select(*table.c).where(table.c[self.timestamp] > since)

    @property
    def _on_postgresql(self) -> bool:
        return self._url.get_backend_name() == "postgresql"

    @property
    def _what(self) -> str:
        """The table or query, for messages."""
        return f"table {excerpt(self.table)}" if self.table is not None else f"query {_shorten(self.query or '')!r}"

    # -- reading ---------------------------------------------------------------------

    def _run(self, since: pd.Timestamp) -> tuple[list[str], list[Sequence[Any]]]:
        """Column names and rows after ``since``, on an engine that lives only for this call."""
        engine = self._engine()
        try:
            with engine.connect() as connection:
                if self._on_postgresql:
                    connection.execute(sa.text("SELECT set_config('TimeZone', :zone, true)"), {"zone": self.timezone})
                result = connection.execute(self._statement, {SINCE: self._bound(since)})
                keys, rows = list(result.keys()), [tuple(r) for r in result.fetchall()]
        except (sa.exc.SQLAlchemyError, OSError) as exc:
            raise self._failure(exc) from (None if self._leaks(exc) else exc)
        finally:
            engine.dispose()
        return keys, rows

    def _engine(self) -> Engine:
        """A fresh engine with the password filled in; a URL or driver that cannot load is a DataError."""
        url = self._url
        secret = self._secret()
        if secret is not None:
            url = url.set(password=secret)
        connect_args: dict[str, Any] = {}
        if url.get_driver_name() in _LIBPQ_DRIVERS and "connect_timeout" not in url.query:
            connect_args["connect_timeout"] = CONNECT_TIMEOUT_S
        if url.get_backend_name() == "sqlite":
            self._check_sqlite_file(url)
        try:
            return sa.create_engine(url, pool_pre_ping=True, connect_args=connect_args)
        except (ImportError, sa.exc.ArgumentError, sa.exc.NoSuchModuleError) as exc:
            raise DataError(f"cannot open {self.url} for the SQL source {excerpt(self.name)}: {exc}") from None

    def _secret(self) -> str | None:
        """The password from ``password`` or the environment variable ``password_env`` names; None if neither."""
        if self.password_env is None:
            return self._password
        secret = os.environ.get(self.password_env)
        if secret is None:
            raise DataError(f"the environment variable {excerpt(self.password_env)} (password_env of the SQL source "
                            f"{excerpt(self.name)}) is not set")  # fmt: skip
        return secret

    def _check_sqlite_file(self, url: URL) -> None:
        """A missing SQLite file is a configuration error, not a new empty database created by reading it."""
        path = url.database
        if path and path != ":memory:" and not path.startswith("file:") and not os.path.exists(path):
            raise DataError(f"SQLite database file not found: {path!r} (SQL source {excerpt(self.name)})")

    def _bound(self, since: pd.Timestamp) -> datetime:
        """``since`` as the database compares it: aware UTC on PostgreSQL, else naive wall time in ``timezone``.

        Rounded down to microseconds (what drivers carry): a little overlap, never a gap.
        """
        since = since.floor("us")
        if self._on_postgresql:
            return since.to_pydatetime()
        return since.tz_convert(self.timezone).tz_localize(None).to_pydatetime()

    def _failure(self, exc: BaseException) -> DataError:
        """A retryable SourceIOError for connection trouble, else a DataError; the password never appears."""
        original = getattr(exc, "orig", None) or exc
        detail = self._scrub(" ".join(f"{type(original).__name__}: {original}".split()))
        if _retryable(exc, self._url.get_backend_name()):
            return SourceIOError(f"cannot read {self._what} from {self.url} (SQL source {excerpt(self.name)}): {detail}")
        return DataError(f"the database refused {self._what} at {self.url} (SQL source {excerpt(self.name)}): {detail}")

    def _passwords(self) -> list[str]:
        """Every form a password could take in a message: as given, URL-quoted."""
        try:
            secrets = [s for s in (self._url.password, self._password, self._secret()) if s]
        except DataError:
            secrets = [s for s in (self._url.password, self._password) if s]
        return sorted({f(s) for s in secrets for f in (str, quote, quote_plus)}, key=len, reverse=True)

    def _scrub(self, text: str) -> str:
        for secret in self._passwords():
            text = text.replace(secret, "***")
        return text

    def _leaks(self, exc: BaseException) -> bool:
        """Whether the original exception's text (chained into tracebacks and logs) holds the password."""
        shown = "".join(traceback.format_exception(exc))
        return any(secret in shown for secret in self._passwords())

    # -- rows to points --------------------------------------------------------------

    def _points(self, keys: list[str], rows: list[Sequence[Any]]) -> pd.DataFrame:
        """Validated long-form points from result rows; NULL values dropped; errors name the source."""
        wanted = [self.timestamp, *(self.columns if self.columns is not None else [self.metric, self.value]), *self.label_columns]
        where = {name: _find_column(keys, str(name), self._what) for name in wanted}
        if not rows:
            return empty_points()
        frame = pd.DataFrame.from_records(rows, columns=range(len(keys)))
        try:
            stamps = _utc_stamps(frame[where[self.timestamp]], self.timezone)
            labels = [frame[where[c]].to_numpy(dtype=object) for c in self.label_columns]
            if self.columns is not None:
                long = pd.concat(
                    [pd.DataFrame({"metric": self._keys(np.full(len(frame), self.metric_prefix + c, dtype=object), labels),
                                   "timestamp": stamps, "value": frame[where[c]].to_numpy()}) for c in self.columns],
                    ignore_index=True,
                )  # fmt: skip
            else:
                names = frame[where[self.metric]]
                if self.metric_prefix:
                    names = names.map(lambda m: f"{self.metric_prefix}{m}", na_action="ignore")
                long = pd.DataFrame({"metric": self._keys(names.to_numpy(dtype=object), labels), "timestamp": stamps,
                                     "value": frame[where[self.value]].to_numpy()})  # fmt: skip
            points = validate_points(long)
        except DataError as exc:
            raise DataError(f"{self._what} of the SQL source {excerpt(self.name)}: {exc}") from None
        return points[points["value"].notna().to_numpy()].reset_index(drop=True)

    def _keys(self, names: np.ndarray, labels: list[np.ndarray]) -> np.ndarray:
        """Each row's store name: its metric name, plus its labels when ``label_columns`` are set (recorded for the catalogue).

        Two label sets meeting in one key are refused with both named, never merged.
        """
        if not self.label_columns:
            return names
        keys = np.empty(len(names), dtype=object)
        formed: dict[tuple[Any, ...], str] = {}
        owners: dict[str, dict[str, str]] = {}
        for row, values in enumerate(zip(names, *labels)):
            key = formed.get(values)
            if key is None:
                name = values[0]
                if _missing(name):
                    keys[row] = name  # validate_points names the missing metric and its row
                    continue
                own = {c: str(v) for c, v in zip(self.label_columns, values[1:]) if not _missing(v) and str(v) != ""}
                key = formed[values] = series_key(own, str(name))
                _check_metric(key, f"the series {show_labels({'__name__': str(name), **own})}")
                seen = owners.setdefault(key, own)
                if seen != own:
                    raise DataError(f"series {show_labels({'__name__': str(name), **seen})} and {show_labels({'__name__': str(name), **own})} "
                                    f"would both be stored as {excerpt(key)}")  # fmt: skip
                self._fetched[key] = Series(key, str(name), own)
            keys[row] = key
        return keys


# -- helpers -------------------------------------------------------------------------


def _missing(value: object) -> bool:
    """A NULL from the database: None or a float NaN."""
    return value is None or (isinstance(value, float) and np.isnan(value))


def _check_label_columns(columns: object) -> list[str]:
    """The columns whose values label a series: distinct label names; none is an empty list."""
    if columns is None:
        return []
    if isinstance(columns, str) or not isinstance(columns, Sequence):
        raise DataError(f"label_columns must be a list of column names, got {excerpt(columns)}")
    names = [check_label_name(c, "label column") for c in columns]
    if len(set(names)) < len(names):
        raise DataError(f"label_columns must be distinct, got {excerpt(names)}")
    return names


def _parse_url(url: object) -> URL:
    """A SQLAlchemy URL; a bare ``postgresql://`` means psycopg 3, the driver this project installs.

    A URL that does not parse is named only by its scheme: the rest may hold a password.
    """
    if not isinstance(url, str) or not url:
        raise DataError(f"a SQL source needs a database URL string, got {type(url).__name__}")
    try:
        parsed = make_url(url)
    except (sa.exc.ArgumentError, ValueError):
        scheme = url.partition("://")[0] if "://" in url else "?"
        raise DataError(
            f"cannot parse the database URL (scheme {excerpt(scheme)}); expected dialect+driver://user@host:port/database"
        ) from None
    if parsed.drivername == "postgresql":
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def _check_columns(columns: object, timestamp: str) -> list[str]:
    """The wide layout's value columns: a non-empty list of distinct names, none of them the time column."""
    if isinstance(columns, str) or not isinstance(columns, Sequence) or not columns:
        raise DataError(f"columns must be a non-empty list of column names, got {excerpt(columns)}")
    names = list(columns)
    if not all(isinstance(c, str) and c for c in names) or len(set(names)) < len(names) or timestamp in names:
        raise DataError(f"columns must be distinct non-empty names other than the time column "
                        f"{excerpt(timestamp)}, got {excerpt(names)}")  # fmt: skip
    return names


def _check_zone(zone: object) -> str:
    """An IANA time zone name, checked now rather than at the first naive row."""
    try:
        zoneinfo.ZoneInfo(zone)  # type: ignore[arg-type]
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, TypeError):
        raise DataError(f"unknown time zone {excerpt(zone)}: expected an IANA name such as 'UTC' or 'Europe/Paris'") from None
    return str(zone)


def _check_metric(name: str, what: str) -> None:
    try:
        check_metric_name(name)
    except DataError as exc:
        raise DataError(f"{what} cannot name a metric: {exc}") from None


def _find_column(keys: list[str], name: str, what: str) -> int:
    """The position of ``name`` in the result: exact, else the one match ignoring case (databases fold names)."""
    if name in keys:
        return keys.index(name)
    folded = [i for i, k in enumerate(keys) if str(k).lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    raise DataError(f"the result of {what} has no column {excerpt(name)}; it has {excerpt(keys, 200)}")


def _utc_stamps(raw: pd.Series, zone: str) -> pd.DatetimeIndex:
    """UTC timestamps: aware values converted, naive ones read as wall-clock times in ``zone``."""
    values = pd.Series(raw.to_numpy(dtype=object))
    if values.isna().any() or not _is_naive(values.iloc[0]):
        return parse_timestamps(values)  # epoch numbers, aware values; names a missing timestamp
    try:
        local = pd.DatetimeIndex(pd.to_datetime(values, format="mixed", errors="coerce"))
    except (ValueError, TypeError) as exc:
        raise DataError(f"time column mixes naive and zoned values: {exc}") from None
    if local.isna().any():
        row = int(np.flatnonzero(local.isna())[0])
        raise DataError(f"unparseable timestamp {excerpt(values.iloc[row])} at row {row}")
    summer_first = np.ones(len(local), dtype=bool)
    return local.tz_localize(zone, ambiguous=summer_first, nonexistent="shift_forward").tz_convert("UTC")


def _is_naive(value: object) -> bool:
    """Whether a time value has no zone: a naive datetime/date or text without an offset (not a number)."""
    if isinstance(value, datetime):
        return value.tzinfo is None
    if isinstance(value, str):
        if pd.notna(pd.to_numeric(value, errors="coerce")):
            return False
        try:
            return pd.Timestamp(value).tzinfo is None
        except ValueError:
            return False
    return hasattr(value, "isoformat")  # a date: midnight, local


def _retryable(exc: BaseException, backend: str) -> bool:
    """Connection-level trouble a later attempt may not meet; SQL the database rejects is not."""
    if isinstance(exc, (OSError, sa.exc.DisconnectionError, sa.exc.TimeoutError)):
        return True
    if isinstance(exc, sa.exc.DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, (sa.exc.OperationalError, sa.exc.InterfaceError)):
        message = str(getattr(exc, "orig", exc)).lower()
        return not (backend == "sqlite" and any(m in message for m in _SQLITE_STATEMENT_ERRORS))
    return False


def _shorten(query: str) -> str:
    """A query on one line, cut for messages."""
    flat = " ".join(query.split())
    return flat if len(flat) <= _SHOWN_QUERY_CHARS else flat[: _SHOWN_QUERY_CHARS - 3] + "..."


__all__ = ["FIRST_SINCE", "SQLSource"]
