"""Create the alert automations the product ships (``flows/automations.yaml``) on a Prefect server.

The file is in the format ``prefect automation create --from-file`` reads,
except that a notification block's id is not known until the block is
saved: each ``send-notification`` action holds :data:`BLOCK_PLACEHOLDER`,
and ``python -m flows.automations create --block <type-slug>/<name>`` fills
in the id of that saved block, then creates each automation, replacing one
of the same name (so running it again changes nothing). ``render`` prints
the filled-in JSON instead, for ``prefect automation create --from-json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from uuid import UUID

import yaml

from anomaly.errors import ConfigError, excerpt

AUTOMATIONS_FILE = Path(__file__).resolve().with_name("automations.yaml")
#: What a ``send-notification`` action of the shipped file holds until a block's id replaces it.
BLOCK_PLACEHOLDER = "<notification-block-id>"


def read_automations(path: str | Path = AUTOMATIONS_FILE) -> list[dict[str, Any]]:
    """The automations a file declares (``automations:``, a list, or one mapping), as ``prefect automation create`` reads them."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"cannot read the automations file {str(path)!r}: {' '.join(str(exc).split())[:200]}") from exc
    items = data["automations"] if isinstance(data, dict) and "automations" in data else data if isinstance(data, list) else [data]
    if not items or not all(isinstance(item, dict) and isinstance(item.get("name"), str) for item in items):
        raise ConfigError(f"the automations file {str(path)!r} declares no automations (a list of mappings, each with a name)")
    return items


def block_slug(block: str) -> tuple[str, str]:
    """``"slack-webhook/anomaly-alerts"`` as ``(type slug, name)``; anything else is a one-line error naming it."""
    kind, _, name = block.partition("/")
    if not kind or not name or "/" in name:
        raise ConfigError(f"--block must be <block-type-slug>/<block-name>, like slack-webhook/anomaly-alerts, got {excerpt(block)}")
    return kind, name


def block_id(text: str) -> UUID:
    """A block document's id as ``render`` takes it; anything else is a one-line error naming it."""
    try:
        return UUID(text)
    except ValueError:
        raise ConfigError(f"render needs the block's id (prefect block inspect <type>/<name> shows it), got {excerpt(text)}") from None


def fill_block(automations: Sequence[dict[str, Any]], block_id: UUID | str) -> list[dict[str, Any]]:
    """Copies of ``automations`` whose notification actions send through ``block_id`` instead of the placeholder.

    A file with no placeholder left to fill is refused: the block named would be silently unused.
    """
    filled, used = [], 0
    for automation in automations:
        actions = []
        for action in automation.get("actions") or []:
            if isinstance(action, dict) and action.get("block_document_id") == BLOCK_PLACEHOLDER:
                action, used = {**action, "block_document_id": str(block_id)}, used + 1
            actions.append(action)
        filled.append({**automation, "actions": actions})
    if not used:
        raise ConfigError(f"no send-notification action holds block_document_id {BLOCK_PLACEHOLDER!r} to fill in")
    return filled


def validate(automations: Sequence[dict[str, Any]]) -> list[Any]:
    """Each automation as Prefect's ``AutomationCore``; a bad one is a one-line error naming it and the field."""
    from prefect.events.schemas.automations import AutomationCore

    built = []
    for automation in automations:
        try:
            built.append(AutomationCore.model_validate(automation))
        except ValueError as exc:  # pydantic's ValidationError, without importing pydantic (Prefect's dependency)
            errors = exc.errors() if hasattr(exc, "errors") else [{"loc": ("automation",), "msg": str(exc), "type": "value_error"}]
            # an action is a union: skip the branches whose "type" it is not
            others = {e["loc"][:-1] for e in errors if e["type"] == "literal_error" and e["loc"][-1] == "type"}
            first = next((e for e in errors if e["loc"][:-1] not in others), errors[0])
            where = ".".join(map(str, first["loc"]))
            raise ConfigError(f"automation {automation['name']!r}: {where}: {first['msg']} (got {excerpt(first.get('input'))})") from exc
    return built


def create(path: str | Path, block: str) -> dict[str, str]:
    """Create (or replace, by name) the file's automations on the server of ``PREFECT_API_URL``; ``{name: id}``."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    kind, name = block_slug(block)
    items = read_automations(path)
    created = {}
    with get_client(sync_client=True) as client:
        try:
            document = client.read_block_document_by_name(name, kind, include_secrets=False)
        except ObjectNotFound:
            raise ConfigError(f"no {kind} block named {name!r} on the server: save it first (see docs/operations.md)") from None
        for automation in validate(fill_block(items, document.id)):
            existing = client.read_automations_by_name(automation.name)
            if existing:
                client.update_automation(existing[0].id, automation)
                created[automation.name] = str(existing[0].id)
            else:
                created[automation.name] = str(client.create_automation(automation))
    return created


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m flows.automations", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("create", "render"), help="create them on the server, or print them filled in as JSON")
    parser.add_argument("--block", required=True, help="the notification block: <block-type-slug>/<name> for create, its id for render")
    parser.add_argument("--file", default=str(AUTOMATIONS_FILE), help="the automations file (default: flows/automations.yaml)")
    args = parser.parse_args(argv)
    try:
        if args.command == "render":
            block_id(args.block)
            automations = fill_block(read_automations(args.file), args.block)
            validate(automations)
            print(json.dumps(automations, indent=2))
            return 0
        for name, automation_id in create(args.file, args.block).items():
            print(f"automation {name!r}: {automation_id}")
    except ConfigError as exc:
        parser.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
