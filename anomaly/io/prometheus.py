"""Prometheus: PromQL range queries over the HTTP API as a :class:`~anomaly.io.sources.Source`.

Each fetch asks ``/api/v1/query_range`` for every configured query, from the
query's watermark to ``end``, on a fixed grid of ``step``. The answers are
what Prometheus *evaluates* at those grid times, not raw samples: a plain
selector repeats a series' last sample for up to the server's lookback delta
(5 minutes by default) after it, as any Prometheus graph does.

Series keys
-----------
Every series becomes one metric in the store, named by :func:`series_key`::

    demo_cpu{job="api", instance="host1:9090"}  ->  demo_cpu.instance_host1_9090.job_api

The base is the query's name (mapping form) or else the series' ``__name__``;
then, sorted by label name, ``.<label>_<value>`` for every other label, with
each character of a value other than letters, digits, ``_`` and ``-``
replaced by ``_``. Keys longer than 200 characters are cut and end in ``-``
plus 8 hex digits of a hash of the full label set, so they stay distinct.
The mapping is deterministic, so a series keeps its key from pull to pull.
It is readable rather than reversible: ``host1:9090`` and ``host1_9090``
give the same key. Two different label sets meeting in one key within a
fetch are refused with both named, never merged silently. What the key
loses is kept: :meth:`PrometheusSource.fetched_series` gives each key's
metric name (the query's name, else ``__name__``) and labels, which
:func:`~anomaly.io.sources.ingest` records in the store's series catalogue
(:mod:`anomaly.io.catalogue`).

Incremental pulls
-----------------
Keys cannot be known before querying, so a query's window starts at the
oldest watermark among the stored keys it can produce: keys equal to its
name or starting with ``<name>.`` (its mapping-form name, or the metric name
of a plain selector such as ``demo_cpu{job="api"}``). Watermarks older than
``end - lookback`` are ignored, so a series that stopped does not drag every
later pull back to the day it stopped. With no usable watermark the window is
the last ``lookback``. An expression in the list form (``rate(x[5m]) > 0``)
has no name to match, so it re-reads its whole ``lookback`` on every pull:
correct (the store drops what it has) but slower; give it a name in the
mapping form. A series that appears under a query that already has stored
series gets the query's window, not a full ``lookback`` of history.

The window ``(start, end]`` is cut to the step grid (multiples of ``step``
since the epoch) and fetched in requests of at most 11,000 points per series,
Prometheus' own limit for one range query.

Values and errors
-----------------
Values come as text. ``NaN`` is "no reading" and dropped, as everywhere in
the store. ``+Inf``/``-Inf`` (a ratio divided by zero) are dropped too, with
a warning: the store refuses infinities, and failing the pull would fail
every later pull on the same point.

A query Prometheus rejects (bad PromQL, an execution error), a refused login,
a wrong URL or an answer that is not Prometheus' raise
:class:`~anomaly.errors.DataError`: a retry cannot help. A timeout, a refused
or dropped connection, HTTP 5xx, 408 or 429 raise
:class:`~anomaly.io.sources.SourceIOError`, an ``OSError`` the ingest flow
retries with backoff. Nothing is retried here, and nothing reaches the store
unless every request of the fetch succeeded.

Credentials: basic auth (``username`` with ``password`` or ``password_env``)
or a bearer token (``token`` or ``token_env``). The ``*_env`` forms name an
environment variable read at fetch time; the plain forms take the value
itself, e.g. from a Prefect Secret block resolved by the flow. Values appear
in no repr, name, log line or error message.
"""

from __future__ import annotations

import logging
import math
import os
import re
from typing import Any, Iterator, Mapping, Sequence
from urllib.parse import urlsplit

import httpx
import numpy as np
import pandas as pd

from anomaly.core.data import as_utc
from anomaly.errors import DataError, excerpt
from anomaly.io.catalogue import MAX_KEY_LENGTH, NAME_LABEL, Series, show_labels
from anomaly.io.catalogue import series_key as flat_key
from anomaly.io.sources import SourceIOError, newer_than
from anomaly.io.store import check_metric_name, empty_points

log = logging.getLogger(__name__)

QUERY_RANGE_PATH = "/api/v1/query_range"
#: Prometheus refuses a range query of more than 11,000 points per series.
MAX_POINTS_PER_SERIES = 11_000
#: A quoted query or URL is cut past this in messages.
QUERY_CHARS = 200
#: HTTP statuses worth a retry besides 5xx: request timeout and too many requests.
RETRYABLE_STATUSES = frozenset({408, 429})

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d|D|w|W|y)")
_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000, "y": 31_536_000_000}
_PLAIN_SELECTOR = re.compile(r"\s*([A-Za-z_:][A-Za-z0-9_:]*)\s*(\{[^{}]*\})?\s*")
_QUERY_NAME = re.compile(r"[A-Za-z0-9_:][A-Za-z0-9_:-]*")


class PrometheusSource:
    """PromQL range queries against one Prometheus server (see the module docstring for the rules).

    ``queries`` is a PromQL string, a list of them (each series named by its
    ``__name__``) or a mapping ``{name: query}`` (each series named ``name``
    plus its labels; needed for expressions whose results have no metric
    name, such as ``sum by (job) (rate(x[5m]))``). ``step`` and
    ``lookback`` take Prometheus' units (``250ms``, ``30s``, ``5m``,
    ``1h30m``, ``7d``/``7D``, ``1w``) or plain seconds. ``end`` (an ISO time
    or epoch seconds; naive means UTC) pins the end of every pull, for
    backfills and tests; by default it is the time of the fetch.
    ``timeout_s`` bounds each request and is sent along as Prometheus'
    evaluation timeout, so the server stops when the client has given up.
    Credentials are ``username`` with ``password`` or ``password_env``, or
    ``token`` or ``token_env`` (an environment variable's name, read at
    fetch time). Every argument is plain JSON, so a ``prefect.yaml``
    parameter mapping can build one; nothing connects until ``fetch``.
    """

    def __init__(
        self,
        url: str,
        queries: str | Sequence[str] | Mapping[str, str],
        *,
        step: str | float = "60s",
        lookback: str | float = "7D",
        end: str | float | None = None,
        timeout_s: float = 30.0,
        username: str | None = None,
        password: str | None = None,
        password_env: str | None = None,
        token: str | None = None,
        token_env: str | None = None,
        name: str = "prometheus",
    ) -> None:
        self.url = _check_url(url)
        self.queries = _named_queries(queries)
        self.step_ms = parse_duration_ms(step, "step")
        self.lookback_ms = parse_duration_ms(lookback, "lookback")
        if self.lookback_ms < self.step_ms:
            raise DataError(f"lookback {excerpt(lookback)} is shorter than the step {excerpt(step)}: a pull would hold no point")
        self.end = None if end is None else _parse_time(end, "end")
        if isinstance(timeout_s, bool) or not isinstance(timeout_s, (int, float)) or not timeout_s > 0:
            raise DataError(f"timeout_s must be a positive number of seconds, got {excerpt(timeout_s)}")
        self.timeout_s = float(timeout_s)
        self.username = username
        self.password_env = password_env
        self.token_env = token_env
        self._password = password
        self._token = token
        self.auth = _auth_kind(username, password, password_env, token, token_env)
        if not isinstance(name, str) or not name:
            raise DataError(f"a source name must be a non-empty string, got {excerpt(name)}")
        self.name = name
        self._fetched: dict[str, Series] = {}

    def __repr__(self) -> str:
        shown = {k: q for k, q in self.queries} if any(k for k, _ in self.queries) else [q for _, q in self.queries]
        auth = f", auth={self.auth!r}" if self.auth else ""
        return f"PrometheusSource({self.url!r}, {shown!r}, step={self.step_ms / 1000:g}s{auth})"

    def fetch(self, watermarks: Mapping[str, pd.Timestamp]) -> pd.DataFrame:
        """Points of every query newer than their key's watermark (see :class:`~anomaly.io.sources.Source`)."""
        end_ms = self._end_ms()
        frames: list[pd.DataFrame] = []
        owners: dict[str, dict[str, str]] = {}
        self._fetched = {}  # filled as the answers are read; a fetch that raises leaves a partial one nobody records
        with self._client() as client:
            for query_name, query in self.queries:
                start_ms = self._start_ms(_match_prefix(query_name, query), end_ms, watermarks)
                for chunk_start, chunk_end in _chunks(start_ms + self.step_ms, end_ms, self.step_ms):
                    result = self._query_range(client, query, chunk_start, chunk_end)
                    frames.extend(self._series_frames(result, query_name, query, owners))
        # one filter over all series: newer_than converts every watermark on each call
        points = newer_than(pd.concat(frames, ignore_index=True), watermarks) if frames else empty_points()
        return points.reset_index(drop=True) if len(points) else empty_points()

    def fetched_series(self) -> dict[str, Series]:
        """``{store name: Series}`` of every series the last fetch returned: its metric name and labels."""
        return dict(self._fetched)

    # -- the window ------------------------------------------------------------------

    def _end_ms(self) -> int:
        """The end of this pull on the step grid: the configured ``end`` or now, rounded down."""
        end = self.end if self.end is not None else pd.Timestamp.now(tz="UTC")
        return _epoch_ms(end) // self.step_ms * self.step_ms

    def _start_ms(self, prefix: str | None, end_ms: int, watermarks: Mapping[str, pd.Timestamp]) -> int:
        """The grid time after which a query's window begins: its oldest recent watermark, or ``end - lookback``."""
        floor = end_ms - self.lookback_ms
        marks: list[int] = []
        if prefix is not None:
            marks = [_epoch_ms(t) for m, t in watermarks.items() if m == prefix or str(m).startswith(prefix + ".")]
        recent = [m for m in marks if m >= floor]
        start = min(recent) if recent else floor
        return start // self.step_ms * self.step_ms

    # -- HTTP ------------------------------------------------------------------------

    def _client(self) -> httpx.Client:
        """A fresh client per fetch (no connection outlives it), carrying the credentials."""
        headers = {"Accept": "application/json"}
        auth: httpx.Auth | None = None
        if self.auth == "basic":
            password = self._secret(self._password, self.password_env, "password")
            auth = httpx.BasicAuth(str(self.username), password)
        elif self.auth == "bearer":
            token = self._secret(self._token, self.token_env, "token")
            if not (token.isascii() and token.isprintable()):  # httpx would refuse it with the token in the message
                raise DataError(f"the bearer token of source {excerpt(self.name)} has line breaks, control or non-ASCII characters")
            headers["Authorization"] = f"Bearer {token}"
        return httpx.Client(
            base_url=self.url, headers=headers, auth=auth, timeout=self.timeout_s, follow_redirects=False
        )

    def _secret(self, value: str | None, env: str | None, what: str) -> str:
        """A credential's value, from the argument or its environment variable; errors name only the variable."""
        if value is not None:
            return value
        found = os.environ.get(str(env), "")
        if not found:
            raise DataError(f"the environment variable {excerpt(env)} named by {what}_env for source {excerpt(self.name)} is not set")
        return found

    def _query_range(self, client: httpx.Client, query: str, start_ms: int, end_ms: int) -> list[dict[str, Any]]:
        """The series one range request returns; every failure is classified and names the query."""
        params = {
            "query": query,
            "start": _seconds(start_ms),
            "end": _seconds(end_ms),
            "step": _seconds(self.step_ms),
            "timeout": _seconds(max(1, round(self.timeout_s * 1000))),
        }
        where = f"Prometheus at {self.url}"
        try:
            response = client.get(QUERY_RANGE_PATH, params=params)
        except httpx.TimeoutException as exc:
            raise SourceIOError(
                f"{where} did not answer query {excerpt(query, QUERY_CHARS)} within {self.timeout_s:g}s ({type(exc).__name__})"
            ) from exc
        except httpx.TransportError as exc:
            raise SourceIOError(f"cannot reach {where} for query {excerpt(query, QUERY_CHARS)}: {type(exc).__name__}: {exc}") from exc
        log.debug(
            "%s: %s over %s..%s step %gs: HTTP %d",
            self.name, query, params["start"], params["end"], self.step_ms / 1000, response.status_code,
        )  # fmt: skip
        body = _json_body(response)
        if not response.is_success or body.get("status") != "success":
            raise _http_error(where, query, response, body)
        for warning in body.get("warnings") or []:
            log.warning("%s: query %r: Prometheus warns: %s", self.name, query, warning)
        data = body.get("data")
        if not isinstance(data, dict) or data.get("resultType") != "matrix" or not isinstance(data.get("result"), list):
            raise DataError(f"{where} returned no range result (matrix) for query {excerpt(query, QUERY_CHARS)}: {str(body)[:200]}")
        return data["result"]

    # -- answers to points -----------------------------------------------------------

    def _series_frames(
        self,
        result: list[dict[str, Any]],
        query_name: str | None,
        query: str,
        owners: dict[str, dict[str, str]],
    ) -> Iterator[pd.DataFrame]:
        """Long-form points per returned series, named by :func:`series_key`; ``owners`` catches collisions."""
        for series in result:
            if not isinstance(series, dict) or not isinstance(series.get("metric", {}), dict):
                raise DataError(f"query {excerpt(query, QUERY_CHARS)}: a series in Prometheus' answer is malformed: {str(series)[:200]}")
            labels = {str(k): str(v) for k, v in (series.get("metric") or {}).items()}
            if query_name is None and not labels.get("__name__"):
                raise DataError(
                    f"query {excerpt(query, QUERY_CHARS)} returns series without a metric name ({show_labels(labels)}); "
                    "name it with the mapping form, e.g. {'my_name': <query>}"
                )
            key = series_key(labels, query_name)
            seen = owners.setdefault(key, labels)
            if seen != labels:
                raise DataError(
                    f"series {show_labels(seen)} and {show_labels(labels)} would both be stored as {excerpt(key)}; "
                    "tell them apart in PromQL (label_replace, aggregation) or query them under different names"
                )
            if series.get("histograms"):
                raise DataError(
                    f"query {excerpt(query, QUERY_CHARS)} returns native histograms for {excerpt(key)}; query floats, e.g. histogram_quantile(...)"
                )
            self._fetched[key] = Series(key, query_name or labels[NAME_LABEL], {k: v for k, v in labels.items() if k != NAME_LABEL})
            yield self._points(key, series.get("values") or [], query)

    def _points(self, key: str, values: list[Any], query: str) -> pd.DataFrame:
        """One series' ``[time, "value"]`` pairs as typed points without NaN; infinities dropped with a warning."""
        try:
            stamps = np.asarray([round(float(t) * 1000) for t, _ in values], dtype=np.int64)
            numbers = np.asarray([v for _, v in values], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            shown = str(values)[:200]
            raise DataError(f"query {excerpt(query, QUERY_CHARS)}: unreadable sample for {excerpt(key)} in {shown}: {exc}") from exc
        infinite = np.isinf(numbers)
        if infinite.any():
            log.warning(
                "%s: dropped %d infinite value(s) of %r (first at %s) from query %r",
                self.name, int(infinite.sum()), key, pd.Timestamp(int(stamps[infinite][0]), unit="ms", tz="UTC"), query,
            )  # fmt: skip
        keep = np.isfinite(numbers)
        return pd.DataFrame(
            {
                "metric": np.full(int(keep.sum()), key, dtype=object),
                "timestamp": pd.DatetimeIndex(pd.to_datetime(stamps[keep], unit="ms", utc=True)).as_unit("ns"),
                "value": numbers[keep],
            }
        )


# -- series keys -------------------------------------------------------------------------


def series_key(labels: Mapping[str, str], name: str | None = None) -> str:
    """The store's metric name for one series: ``<base>.<label>_<value>...`` (see the module docstring).

    ``name`` (a mapping-form query name) replaces ``__name__`` as the base.
    """
    return check_metric_name(flat_key(labels, name))


def _match_prefix(query_name: str | None, query: str) -> str | None:
    """The key prefix a query's series share: its name, a plain selector's metric name, or None (unknown)."""
    if query_name is not None:
        return query_name
    match = _PLAIN_SELECTOR.fullmatch(query)
    return match.group(1) if match else None


# -- parameters --------------------------------------------------------------------------


def parse_duration_ms(value: str | float, what: str) -> int:
    """Milliseconds from a Prometheus duration (``90s``, ``1h30m``, ``7d``, ``7D``) or plain seconds.

    Prometheus' own units, not pandas', so ``5m`` is five minutes and ``M`` is refused (month or minute?).
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        ms = value * 1000 if math.isfinite(value) else -1
    elif isinstance(value, str) and value and "".join(m.group(0) for m in _DURATION_PART.finditer(value)) == value:
        ms = sum(float(m.group(1)) * _UNIT_MS[m.group(2).lower()] for m in _DURATION_PART.finditer(value))
    else:
        ms = -1
    if ms < 1 or ms != int(ms):
        raise DataError(
            f"{what} {excerpt(value)} is not a duration of whole milliseconds: use e.g. '30s', '5m', '1h30m', '7d' or seconds"
        )
    return int(ms)


def _parse_time(value: str | float, what: str) -> pd.Timestamp:
    """A UTC time from an ISO string or epoch seconds; naive means UTC, as elsewhere."""
    try:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            stamp = pd.Timestamp(value, unit="s", tz="UTC")
        elif isinstance(value, str) and value:
            stamp = pd.Timestamp(value)
        else:
            raise ValueError("not a time")
    except (ValueError, OverflowError) as exc:
        raise DataError(f"{what} {excerpt(value)} is not an ISO time or epoch seconds") from exc
    if pd.isna(stamp):
        raise DataError(f"{what} {excerpt(value)} is not an ISO time or epoch seconds")
    return as_utc(stamp)


def _check_url(url: object) -> str:
    """The server's base URL without a trailing slash; credentials in it are refused without echoing them."""
    if not isinstance(url, str):
        raise DataError(f"the Prometheus url must be a string like 'http://host:9090', got {type(url).__name__}")
    parts = urlsplit(url)
    if parts.username is not None or parts.password is not None:
        raise DataError(
            f"the Prometheus url for host {excerpt(parts.hostname)} carries credentials; "
            "pass username with password_env, or token_env, instead"
        )
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.query or parts.fragment:
        raise DataError(f"the Prometheus url must look like 'http://host:9090' (an optional path allowed), got {excerpt(url, QUERY_CHARS)}")
    return url.rstrip("/")


def _named_queries(queries: object) -> list[tuple[str | None, str]]:
    """``(name or None, query)`` pairs; names must be safe key bases without dots (they prefix keys)."""
    if isinstance(queries, str):
        pairs: list[tuple[str | None, object]] = [(None, queries)]
    elif isinstance(queries, Mapping):
        pairs = list(queries.items())
        for name, _ in pairs:
            if not isinstance(name, str) or not _QUERY_NAME.fullmatch(name) or len(name) > MAX_KEY_LENGTH // 2:
                raise DataError(
                    f"query name {excerpt(name)} cannot prefix metric names: use up to {MAX_KEY_LENGTH // 2} letters, "
                    "digits, '_', ':' or '-' (no dots)"
                )
    elif isinstance(queries, Sequence):
        pairs = [(None, q) for q in queries]
    else:
        raise DataError(f"queries must be a PromQL string, a list of them or a mapping name -> query, got {excerpt(queries)}")
    if not pairs:
        raise DataError("a Prometheus source needs at least one query")
    for name, query in pairs:
        if not isinstance(query, str) or not query.strip():
            raise DataError(f"query {name + ' ' if name else ''}must be a non-empty PromQL string, got {excerpt(query, QUERY_CHARS)}")
    return [(name, str(query)) for name, query in pairs]


def _auth_kind(
    username: str | None, password: str | None, password_env: str | None, token: str | None, token_env: str | None
) -> str | None:
    """``basic``, ``bearer`` or None, refusing half or double configurations (values never shown)."""
    basic = username is not None or password is not None or password_env is not None
    bearer = token is not None or token_env is not None
    if basic and bearer:
        raise DataError("give either username with password/password_env (basic auth) or token/token_env, not both")
    if basic and (not username or (password is None) == (password_env is None)):
        raise DataError("basic auth needs a username and exactly one of password or password_env")
    if bearer and (token is None) == (token_env is None):
        raise DataError("bearer auth needs exactly one of token or token_env")
    for env in (password_env, token_env):
        if env is not None and (not isinstance(env, str) or not env):
            raise DataError(f"an environment variable name must be a non-empty string, got {excerpt(env)}")
    return "basic" if basic else "bearer" if bearer else None


# -- small helpers ----------------------------------------------------------------------


def _chunks(first_ms: int, end_ms: int, step_ms: int) -> Iterator[tuple[int, int]]:
    """``(start, end)`` grid ranges covering ``[first, end]``, each of at most 11,000 points."""
    span = (MAX_POINTS_PER_SERIES - 1) * step_ms
    start = first_ms
    while start <= end_ms:
        yield start, min(start + span, end_ms)
        start += span + step_ms


def _epoch_ms(stamp: object) -> int:
    return int(as_utc(stamp).value // 1_000_000)


def _seconds(ms: int) -> str:
    """Epoch or duration seconds as Prometheus reads them, exact to the millisecond."""
    return f"{ms // 1000}.{ms % 1000:03d}" if ms % 1000 else str(ms // 1000)


def _json_body(response: httpx.Response) -> dict[str, Any]:
    """The JSON object Prometheus answers with, or ``{}`` when the body is not one (a proxy's page)."""
    try:
        body = response.json()
    except (ValueError, UnicodeDecodeError):
        return {}
    return body if isinstance(body, dict) else {}


def _http_error(where: str, query: str, response: httpx.Response, body: Mapping[str, Any]) -> Exception:
    """The error for a refused request: retryable (5xx, 408, 429) or not, with Prometheus' own reason."""
    status = response.status_code
    if body.get("error"):
        reason = f"{body.get('errorType', 'error')}: {body['error']}"
    else:
        reason = " ".join(response.text.split())[:200] or response.reason_phrase
    if status >= 500 or status in RETRYABLE_STATUSES:
        return SourceIOError(f"{where} failed query {excerpt(query, QUERY_CHARS)} (HTTP {status}): {reason}")
    if status in (401, 403):
        return DataError(f"{where} refused the credentials (HTTP {status}) for query {excerpt(query, QUERY_CHARS)}")
    if 300 <= status < 400:
        return DataError(
            f"{where} redirected query {excerpt(query, QUERY_CHARS)} (HTTP {status}) to {response.headers.get('location', '?')}; "
            "point url at the Prometheus server itself"
        )
    if status == 404:
        return DataError(f"{where} has no {QUERY_RANGE_PATH} (HTTP 404): is url the Prometheus server's base URL?")
    if response.is_success:
        return DataError(f"{where} did not answer like Prometheus to query {excerpt(query, QUERY_CHARS)}: {reason}")
    return DataError(f"{where} rejected query {excerpt(query, QUERY_CHARS)} (HTTP {status}): {reason}")


__all__ = ["MAX_POINTS_PER_SERIES", "PrometheusSource", "parse_duration_ms", "series_key"]
