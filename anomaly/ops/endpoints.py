"""The HTTP services the product sends to (Alertmanager, a Pushgateway): checked when configured, named safely in logs."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from anomaly.errors import ConfigError, excerpt


def check_url(owner: str, url: Any) -> None:
    """An ``http(s)://host[:port]`` base URL, or a one-line :class:`ConfigError` naming ``owner`` and the value."""
    parts = urlsplit(str(url))
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{owner} url must be http(s)://host[:port], got {excerpt(url)}")
    try:
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError as exc:
        raise ConfigError(f"{owner} url has a bad port: {excerpt(url)}") from exc


def check_timeout(owner: str, value: Any, most: float) -> None:
    """A timeout in seconds, above 0 and at most ``most``."""
    if isinstance(value, bool) or not (isinstance(value, (int, float)) and 0 < value <= most):
        raise ConfigError(f"{owner} timeout must be > 0 and at most {most:g} seconds, got {excerpt(value)}")


def where(url: str) -> str:
    """Scheme, host and port, without credentials: what logs and summaries name."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc.rpartition('@')[2]}"
