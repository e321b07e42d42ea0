"""Runbook and dashboard links per alert, from URL templates: shared by the report and Alertmanager.

A template names only :data:`PLACEHOLDERS` (``{metric}``, ``{model}``,
``{severity}``, ``{alert_id}``). A setting is one template, or a mapping
from a metric or model name, or ``"default"``, to one: the metric's entry
wins over the model's, the model's over the default's. Templates are checked
when the setting is read, so a typo is refused at once, not at the first alert.
"""

from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Any, Mapping
from urllib.parse import urlsplit

from anomaly.errors import ConfigError, excerpt

#: Placeholders a runbook or dashboard template may use.
PLACEHOLDERS = ("metric", "model", "severity", "alert_id")
#: The link settings, and the names the report gives their links.
LINK_KINDS = {"runbook_url": "runbook", "dashboard_url": "dashboard"}

Templates = tuple[tuple[str, str], ...]


def templates(owner: str, what: str, value: Any) -> Templates:
    """A template or ``{name: template}`` as sorted, checked pairs (``"default"`` for a lone template)."""
    if value is None:
        return ()
    if isinstance(value, str):
        pairs: Templates = (("default", value),)
    elif isinstance(value, Mapping) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        pairs = tuple(sorted(value.items()))
    else:
        raise ConfigError(f"{owner} {what} must be a URL template or a mapping of metric/model names to templates, got {excerpt(value)}")
    for key, template in pairs:
        check_template(owner, what, key, template)
    return pairs


def check_template(owner: str, what: str, key: str, template: str) -> None:
    """A template names only :data:`PLACEHOLDERS`; anything else is a one-line :class:`ConfigError` naming it."""
    try:
        names = {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ConfigError(f"{owner} {what} for {excerpt(key)} is not a template: {exc}: {excerpt(template)}") from exc
    unknown = sorted(names - set(PLACEHOLDERS))
    if unknown:
        raise ConfigError(f"{owner} {what} for {excerpt(key)} uses {unknown}; it may use {list(PLACEHOLDERS)}: {excerpt(template)}")


def fill(table: Templates, metric: str, model: str, severity: str, alert_id: str) -> str | None:
    """The template for ``metric`` (then ``model``, then the default), filled in; ``None`` when none applies."""
    found = dict(table)
    template = found.get(metric, found.get(model, found.get("default")))
    if template is None:
        return None
    return template.format(metric=metric, model=model, severity=severity, alert_id=alert_id)


@dataclass(frozen=True)
class Links:
    """The report's ``links`` setting: ``runbook_url`` and ``dashboard_url`` templates, as Alertmanager takes them."""

    runbook_url: Templates = field(default=())
    dashboard_url: Templates = field(default=())

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any] | Links | None) -> Links | None:
        """``{"runbook_url": ..., "dashboard_url": ...}`` as flows and YAML carry it; unknown keys are refused by name."""
        if spec is None or isinstance(spec, Links):
            return spec
        if not isinstance(spec, Mapping):
            raise ConfigError(f"links must be a mapping with runbook_url and/or dashboard_url, got {excerpt(spec)}")
        unknown = sorted(map(str, set(spec) - set(LINK_KINDS)))
        if unknown:
            raise ConfigError(f"links takes runbook_url and dashboard_url; got unknown key(s) {unknown}")
        found = cls(templates("links", "runbook_url", spec.get("runbook_url")), templates("links", "dashboard_url", spec.get("dashboard_url")))
        for setting in LINK_KINDS:  # the HTML report makes them clickable: no javascript: or file: links
            for key, template in getattr(found, setting):
                if urlsplit(template).scheme not in ("http", "https"):
                    raise ConfigError(f"links {setting} for {excerpt(key)} must be an http(s) URL template, got {excerpt(template)}")
        return found

    def for_alert(self, metric: str, model: str, severity: str, alert_id: str) -> dict[str, str]:
        """``{"runbook": url, "dashboard": url}``, only the links a template applies to."""
        found = {
            name: fill(getattr(self, setting), metric, model, severity, alert_id) for setting, name in LINK_KINDS.items()
        }
        return {name: url for name, url in found.items() if url}
