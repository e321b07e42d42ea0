"""Direct webhook delivery of new alerts, with an outbox that outlives a webhook outage.

An alert that could not be delivered is not an alert lost: it stays in the
outbox (kept in the report ledger on disk) and is tried again by the next
report run, oldest first, until it is delivered or too old to matter. A
webhook that is down never fails the run that reports; the report itself is
written before any delivery is tried. Delivery is at least once: a receiver
that must not see a repeat should de-duplicate on the payload's ``key``.

A payload the receiver refuses for good (a redirect, a 4xx other than 408
and 429) is *parked*: moved out of the outbox with its reason and time, kept
in the ledger for a while, and named in the next report, while the payloads
behind it still go out. One bad payload never blocks the others.
"""

from __future__ import annotations

import logging
import math
import re
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

import httpx
import pandas as pd

from anomaly.errors import ConfigError, excerpt

log = logging.getLogger(__name__)

#: Payloads still undelivered after this long are dropped (and the drop logged): the incident is stale.
OUTBOX_EXPIRY = pd.Timedelta("7D")
#: Parked (refused) payloads are kept this long, and at most this many, newest kept (defaults 7 days,
#: 100): long enough to be read in a report and acted on, bounded so the ledger cannot grow without end.
PARKED_KEEP = pd.Timedelta("7D")
PARKED_LIMIT = 100
#: Bytes of a refusal's body read, for its reason (default 4 KiB): a huge answer must not fill memory.
ANSWER_LIMIT = 4096
#: Seconds one run spends delivering before the rest wait, in order, for the next run (default 60):
#: a receiver that answers each payload slowly must not hold up the reports.
FLUSH_BUDGET_S = 60.0
#: Bounds on a webhook's settings: more tries, longer waits or longer pauses only stall the run.
MAX_RETRIES, MAX_TIMEOUT_S, MAX_BACKOFF_S = 10, 300.0, 60.0
#: Answers that may succeed if repeated; any other 4xx, and any redirect, will not.
RETRIED_4XX = frozenset({408, 429})
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t\x20-\x7e]*")


@dataclass(frozen=True)
class Webhook:
    """Where and how to POST alerts: JSON body, ``timeout`` seconds per try, ``retries`` more tries with backoff.

    A webhook URL (a Slack one, say) and its headers are credentials: they
    stay out of the repr and out of every error, and :meth:`where` names
    only scheme and host for logs.
    """

    url: str = field(repr=False)
    timeout: float = 5.0
    retries: int = 2
    backoff: float = 0.5
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)

    def where(self) -> str:
        """Scheme and host only, for logs and summaries."""
        parts = urlsplit(self.url)
        return f"{parts.scheme}://{parts.hostname or ''}"

    def __post_init__(self) -> None:
        if not str(self.url).startswith(("http://", "https://")):
            raise ConfigError(f"webhook url must start with http:// or https://, got {str(self.url)[:12]!r}…")
        try:
            host = httpx.URL(self.url).host
        except httpx.InvalidURL as exc:
            raise ConfigError(f"webhook url is not a valid URL: {_clip(str(exc), 80)}") from exc
        if not host:
            raise ConfigError("webhook url is not a valid URL: it names no host")
        if not (isinstance(self.timeout, (int, float)) and self.timeout > 0):
            raise ConfigError(f"webhook timeout must be > 0 seconds, got {self.timeout!r}")
        if self.timeout > MAX_TIMEOUT_S:
            raise ConfigError(f"webhook timeout must be at most {MAX_TIMEOUT_S:g} seconds, got {self.timeout!r}")
        if not (isinstance(self.retries, int) and self.retries >= 0):
            raise ConfigError(f"webhook retries must be an integer >= 0, got {self.retries!r}")
        if self.retries > MAX_RETRIES:
            raise ConfigError(f"webhook retries must be at most {MAX_RETRIES}, got {self.retries!r}")
        if not (isinstance(self.backoff, (int, float)) and 0 <= self.backoff <= MAX_BACKOFF_S):
            raise ConfigError(f"webhook backoff must be from 0 to {MAX_BACKOFF_S:g} seconds, got {self.backoff!r}")
        for name, value in self.headers:
            if not _HEADER_NAME.fullmatch(name) or not _HEADER_VALUE.fullmatch(value):
                # the value is a credential: named, never quoted
                raise ConfigError(f"webhook header {excerpt(name)} must be printable ASCII without line breaks")

    @classmethod
    def from_spec(cls, spec: str | dict[str, Any] | Webhook | None) -> Webhook | None:
        """A URL, or ``{"url": ..., "timeout": ..., "retries": ..., "headers": {...}}`` as flows and YAML carry it."""
        if spec is None or isinstance(spec, Webhook):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        if not isinstance(spec, Mapping):
            raise ConfigError(f"webhook must be a URL or a mapping, got a {type(spec).__name__}")
        unknown = set(spec) - {"url", "timeout", "retries", "backoff", "headers"}
        if unknown or "url" not in spec:
            keys = sorted(map(str, spec))
            raise ConfigError(f"webhook needs a url and takes timeout, retries, backoff, headers; got keys {excerpt(keys, 200)}")
        headers = spec.get("headers") or {}
        if not isinstance(headers, Mapping):
            raise ConfigError(f"webhook headers must be a mapping of names to values, got a {type(headers).__name__}")
        return cls(
            str(spec["url"]),
            _number(spec, "timeout", 5.0, float),
            int(_number(spec, "retries", 2, int)),
            _number(spec, "backoff", 0.5, float),
            tuple(sorted((str(k), str(v)) for k, v in headers.items())),
        )


def _number(spec: Mapping[str, Any], key: str, default: float, kind: type) -> Any:
    """``spec[key]`` as ``kind`` (a number or its text); anything else is a :class:`ConfigError` naming it."""
    value = spec.get(key, default)
    try:
        if isinstance(value, bool):
            raise TypeError(key)
        number = kind(value)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ConfigError(f"webhook {key} must be a number, got {excerpt(value)}") from exc
    if kind is float and not math.isfinite(number):
        raise ConfigError(f"webhook {key} must be a finite number, got {excerpt(value)}")
    return number


@dataclass(frozen=True)
class Outcome:
    """What delivering one payload came to: ``error`` is ``None`` when a 2xx answer came back;
    ``permanent`` when repeating it cannot help (a redirect, a 4xx other than 408 and 429)."""

    error: str | None = None
    permanent: bool = False


def deliver(webhook: Webhook, payload: dict[str, Any], sleep: Callable[[float], None] = time.sleep) -> Outcome:
    """POST one payload, with retries for what may pass later.

    Connection errors, timeouts and 5xx/408/429 answers are tried again
    after ``backoff · 2^attempt`` seconds (at most :data:`MAX_BACKOFF_S`); a
    redirect or any other 4xx ends the tries at once. Redirects are not
    followed (the payload would go where the URL does not say): the reason
    names where it pointed. Of a refusal's body at most :data:`ANSWER_LIMIT`
    bytes are read, within ``timeout`` seconds.
    """
    error = "not tried"
    headers = {"Accept-Encoding": "identity", **dict(webhook.headers)}  # a reason read raw must be text
    with httpx.Client(timeout=webhook.timeout, headers=headers, follow_redirects=False) as client:
        for attempt in range(webhook.retries + 1):
            if attempt:
                sleep(min(webhook.backoff * 2 ** (attempt - 1), MAX_BACKOFF_S))
            try:
                with client.stream("POST", webhook.url, json=payload) as response:
                    if response.is_success:
                        return Outcome()
                    outcome = _refusal(response, webhook.timeout)
            except httpx.HTTPError as exc:
                error = _clip(" ".join(f"{type(exc).__name__}: {exc}".split()))
                continue
            if outcome.permanent:
                return outcome
            error = outcome.error or error
    return Outcome(error)


def post(webhook: Webhook, payload: dict[str, Any], sleep: Callable[[float], None] = time.sleep) -> str | None:
    """POST one payload (see :func:`deliver`); ``None`` when a 2xx answer came back, else the last error in one line."""
    return deliver(webhook, payload, sleep).error


def _refusal(response: httpx.Response, timeout: float) -> Outcome:
    """Why a non-2xx answer refused the payload, and whether that is for good."""
    code = response.status_code
    if 300 <= code < 400:
        location = response.headers.get("location", "")
        return Outcome(f"HTTP {code}: redirected to {excerpt(location, 200)}; set the webhook url to where it points", True)
    return Outcome(f"HTTP {code}: {_answer_text(response, timeout)}", 400 <= code < 500 and code not in RETRIED_4XX)


def _answer_text(response: httpx.Response, timeout: float) -> str:
    """The start of the answer's body as one short line: at most :data:`ANSWER_LIMIT` bytes, read within ``timeout`` s.

    Read raw, a network read at a time, so a body that trickles a byte at a
    time or never ends costs ``timeout`` seconds and a few kilobytes.
    """
    chunks, size, ends = [], 0, time.monotonic() + timeout
    try:
        for chunk in response.iter_raw():
            chunks.append(chunk)
            size += len(chunk)
            if size >= ANSWER_LIMIT or time.monotonic() > ends:
                break
    except httpx.HTTPError:
        pass  # what arrived before the error says enough
    text = b"".join(chunks)[:ANSWER_LIMIT].decode("utf-8", "replace")
    return _clip(" ".join(text.split()))


def flush(
    outbox: list[dict[str, Any]],
    webhook: Webhook | None,
    now: pd.Timestamp,
    parked: list[dict[str, Any]] | None = None,
    budget_s: float = FLUSH_BUDGET_S,
    sleep: Callable[[float], None] = time.sleep,
) -> dict[str, Any]:
    """Send the waiting payloads oldest first, each with its retries; ``outbox`` and ``parked`` are updated in place.

    A payload refused for good is moved to ``parked`` with its reason and
    time, and the next one is tried. The first transient failure (timeout,
    connection error, 5xx, 408, 429) stops the run's deliveries, so a
    webhook that is down costs one payload's tries, not every payload's; so
    does running past ``budget_s`` seconds. Payloads older than
    :data:`OUTBOX_EXPIRY` are dropped first, with or without a webhook;
    parked ones past :data:`PARKED_KEEP` or :data:`PARKED_LIMIT` after.
    Returns counts for the run's summary, and the reasons of those parked.
    """
    parked = [] if parked is None else parked
    dropped = _expire(outbox, now)
    delivered, rejected = 0, []
    started = time.monotonic()
    for item in list(outbox) if webhook is not None else []:
        if time.monotonic() - started > budget_s:
            log.warning("webhook delivery stopped after %.0f s; %d alert(s) wait for the next run", budget_s, len(outbox))
            break
        outcome = deliver(webhook, item["payload"], sleep)
        item["attempts"] = int(item.get("attempts", 0)) + 1
        if outcome.error is None:
            outbox.remove(item)
            delivered += 1
        elif outcome.permanent:
            outbox.remove(item)
            parked.append(_park(item, outcome.error, now))
            rejected.append({"key": item["key"], "metric": item["payload"].get("metric"), "reason": outcome.error})
            log.warning("webhook refused alert %s for good; parked, the others go on: %s", item["key"], outcome.error)
        else:
            item["last_error"] = outcome.error
            log.warning("webhook delivery of alert %s failed (attempt %d): %s", item["key"], item["attempts"], outcome.error)
            break  # a webhook that is down for one is down for all: the rest wait for the next run, in order
    _prune_parked(parked, now)
    return {"delivered": delivered, "undelivered": len(outbox), "dropped": dropped, "parked": len(rejected), "rejected": rejected}


def _expire(outbox: list[dict[str, Any]], now: pd.Timestamp) -> int:
    """Drop the payloads waiting longer than :data:`OUTBOX_EXPIRY`; returns how many."""
    stale = [item for item in outbox if now - pd.Timestamp(item["queued_at"]) > OUTBOX_EXPIRY]
    for item in stale:
        log.warning("dropping alert %s: undelivered since %s (%s)", item["key"], item["queued_at"], item.get("last_error"))
        outbox.remove(item)
    return len(stale)


def _park(item: dict[str, Any], reason: str, now: pd.Timestamp) -> dict[str, Any]:
    """The outbox entry, whole (so nothing is lost), with why and when it was refused; no report has named it yet."""
    kept = {k: v for k, v in item.items() if k != "last_error"}
    return {**kept, "reason": reason, "parked_at": now.isoformat(), "reported_at": None}


def _prune_parked(parked: list[dict[str, Any]], now: pd.Timestamp) -> None:
    """Forget parked payloads older than :data:`PARKED_KEEP`, then the oldest past :data:`PARKED_LIMIT`."""
    kept = [item for item in parked if now - pd.Timestamp(item["parked_at"]) <= PARKED_KEEP]
    if len(kept) > PARKED_LIMIT:
        log.warning("forgetting %d refused alert(s): at most %d are kept", len(kept) - PARKED_LIMIT, PARKED_LIMIT)
        kept = kept[-PARKED_LIMIT:]
    parked[:] = kept


def enqueue(outbox: list[dict[str, Any]], key: str, payload: dict[str, Any], now: pd.Timestamp) -> None:
    """Add a payload unless one with the same key already waits (a report run repeated after a crash)."""
    if all(item["key"] != key for item in outbox):
        outbox.append({"key": key, "payload": payload, "queued_at": now.isoformat(), "attempts": 0, "last_error": None})


def _clip(text: str, limit: int = 200) -> str:
    return text if len(text) <= limit else text[:limit] + "…"
