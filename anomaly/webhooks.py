"""Direct webhook delivery of new alerts, with an outbox that outlives a webhook outage.

An alert that could not be delivered is not an alert lost: it stays in the
outbox (kept in the report ledger on disk) and is tried again by the next
report run, oldest first, until it is delivered or too old to matter. A
webhook that is down never fails the run that reports; the report itself is
written before any delivery is tried. Delivery is at least once: a receiver
that must not see a repeat should de-duplicate on the payload's ``key``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable
from urllib.parse import urlsplit

import httpx
import pandas as pd

from anomaly.errors import ConfigError

log = logging.getLogger(__name__)

#: Payloads still undelivered after this long are dropped (and the drop logged): the incident is stale.
OUTBOX_EXPIRY = pd.Timedelta("7D")


@dataclass(frozen=True)
class Webhook:
    """Where and how to POST alerts: JSON body, ``timeout`` seconds per try, ``retries`` more tries with backoff.

    A webhook URL (a Slack one, say) and its headers are credentials: they
    stay out of the repr, and :meth:`where` names only scheme and host for logs.
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
        if not self.timeout > 0:
            raise ConfigError(f"webhook timeout must be > 0 seconds, got {self.timeout!r}")
        if not (isinstance(self.retries, int) and self.retries >= 0):
            raise ConfigError(f"webhook retries must be an integer >= 0, got {self.retries!r}")

    @classmethod
    def from_spec(cls, spec: str | dict[str, Any] | Webhook | None) -> Webhook | None:
        """A URL, or ``{"url": ..., "timeout": ..., "retries": ..., "headers": {...}}`` as flows and YAML carry it."""
        if spec is None or isinstance(spec, Webhook):
            return spec
        if isinstance(spec, str):
            return cls(spec)
        unknown = set(spec) - {"url", "timeout", "retries", "backoff", "headers"}
        if unknown or "url" not in spec:
            raise ConfigError(f"webhook needs a url and takes timeout, retries, backoff, headers; got keys {sorted(spec)}")
        headers = tuple(sorted((str(k), str(v)) for k, v in dict(spec.get("headers") or {}).items()))
        return cls(
            str(spec["url"]),
            float(spec.get("timeout", 5.0)),
            int(spec.get("retries", 2)),
            float(spec.get("backoff", 0.5)),
            headers,
        )


def post(webhook: Webhook, payload: dict[str, Any], sleep: Callable[[float], None] = time.sleep) -> str | None:
    """POST one payload; ``None`` when a 2xx answer came back, else the last error in one line.

    Connection errors, timeouts and 5xx/408/429 answers are tried again
    after ``backoff · 2^attempt`` seconds; any other 4xx will not get better
    by repeating it and ends the tries at once.
    """
    error = "not tried"
    with httpx.Client(timeout=webhook.timeout, headers=dict(webhook.headers)) as client:
        for attempt in range(webhook.retries + 1):
            if attempt:
                sleep(webhook.backoff * 2 ** (attempt - 1))
            try:
                response = client.post(webhook.url, json=payload)
            except httpx.HTTPError as exc:
                error = f"{type(exc).__name__}: {exc}"
                continue
            if response.is_success:
                return None
            error = f"HTTP {response.status_code}: {response.text[:200]}"
            if response.status_code < 500 and response.status_code not in (408, 429):
                break
    return error


def flush(outbox: list[dict[str, Any]], webhook: Webhook | None, now: pd.Timestamp) -> dict[str, Any]:
    """Send the waiting payloads oldest first, each with its retries; the outbox is updated in place.

    The first payload that cannot be delivered stops the run's deliveries,
    so a webhook that hangs costs one payload's timeouts, not every
    payload's. Payloads older than :data:`OUTBOX_EXPIRY` are dropped first,
    with or without a webhook. Returns counts for the run's summary.
    """
    delivered, dropped = 0, 0
    for item in list(outbox):
        if now - pd.Timestamp(item["queued_at"]) > OUTBOX_EXPIRY:
            log.warning("dropping alert %s: undelivered since %s (%s)", item["key"], item["queued_at"], item.get("last_error"))
            outbox.remove(item)
            dropped += 1
    for item in list(outbox) if webhook is not None else []:
        error = post(webhook, item["payload"])
        item["attempts"] = int(item.get("attempts", 0)) + 1
        if error is None:
            outbox.remove(item)
            delivered += 1
        else:
            item["last_error"] = error
            log.warning("webhook delivery of alert %s failed (attempt %d): %s", item["key"], item["attempts"], error)
            break  # a webhook that is down for one is down for all: the rest wait for the next run, in order
    return {"delivered": delivered, "undelivered": len(outbox), "dropped": dropped}


def enqueue(outbox: list[dict[str, Any]], key: str, payload: dict[str, Any], now: pd.Timestamp) -> None:
    """Add a payload unless one with the same key already waits (a report run repeated after a crash)."""
    if all(item["key"] != key for item in outbox):
        outbox.append({"key": key, "payload": payload, "queued_at": now.isoformat(), "attempts": 0, "last_error": None})
