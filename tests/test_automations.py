"""The shipped alert automation (``flows/automations.yaml``) and its command, without a server.

``tests/test_alert_automation_e2e.py`` creates it on a real server and
sees it deliver; these check the file and the command's refusals.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from anomaly.errors import ConfigError
from flows.automations import AUTOMATIONS_FILE, BLOCK_PLACEHOLDER, block_slug, fill_block, main, read_automations, validate

BLOCK_ID = "3fa85f64-5717-4562-b3fc-2c963f66afa6"


def test_the_shipped_file_routes_every_alert_event_to_one_notification_block() -> None:
    (raw,) = read_automations(AUTOMATIONS_FILE)
    assert [a["block_document_id"] for a in raw["actions"]] == [BLOCK_PLACEHOLDER]
    (automation,) = validate(fill_block([raw], BLOCK_ID))  # what `prefect automation create` validates
    assert automation.name == "anomaly-alerts" and automation.enabled
    assert automation.trigger.expect == {"anomaly.alert.new", "anomaly.alert.escalated", "anomaly.alert.resolved"}
    assert automation.trigger.match.root == {"prefect.resource.id": "anomaly.alert.*"}
    assert automation.trigger.for_each == {"prefect.resource.id"} and automation.trigger.threshold == 1
    (action,) = automation.actions
    assert action.type == "send-notification" and str(action.block_document_id) == BLOCK_ID
    assert "{{ event.payload.report }}" in action.body and "{{ event.payload.links.runbook }}" in action.body
    assert raw["actions"][0]["block_document_id"] == BLOCK_PLACEHOLDER  # filling copies, the read file is unchanged


def test_render_prints_the_filled_in_json_that_prefect_automation_create_takes(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "--block", BLOCK_ID]) == 0
    (printed,) = json.loads(capsys.readouterr().out)
    assert printed["actions"][0]["block_document_id"] == BLOCK_ID and printed["name"] == "anomaly-alerts"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["render", "--block", "slack-webhook/anomaly-alerts"], "render needs the block's id (prefect block inspect <type>/<name> shows it), got 'slack-webhook/anomaly-alerts'"),
        (["create", "--block", "anomaly-alerts"], "--block must be <block-type-slug>/<block-name>, like slack-webhook/anomaly-alerts, got 'anomaly-alerts'"),
        (["render", "--block", BLOCK_ID, "--file", "/nonexistent/alerts.yaml"], "cannot read the automations file '/nonexistent/alerts.yaml': "),
    ],
)
def test_a_bad_argument_is_one_line_naming_it(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    assert exited.value.code == 2
    (line,) = [x for x in capsys.readouterr().err.splitlines() if "error:" in x]
    assert message in line


def test_a_file_without_the_placeholder_or_with_a_broken_automation_is_refused_by_name(tmp_path: Path) -> None:
    (raw,) = read_automations(AUTOMATIONS_FILE)
    with pytest.raises(ConfigError, match=re.escape(f"no send-notification action holds block_document_id {BLOCK_PLACEHOLDER!r}")):
        fill_block(fill_block([raw], BLOCK_ID), BLOCK_ID)  # already filled: the block named would go unused
    broken = {**raw, "actions": [{k: v for k, v in raw["actions"][0].items() if k != "body"}]}
    with pytest.raises(ConfigError, match=r"^automation 'anomaly-alerts': actions\.0\.SendNotification\.body: Field required"):
        validate(fill_block([broken], BLOCK_ID))
    empty = tmp_path / "empty.yaml"
    empty.write_text("automations: []\n")
    with pytest.raises(ConfigError, match="declares no automations"):
        read_automations(empty)
    assert block_slug("custom-webhook/anomaly-shipped") == ("custom-webhook", "anomaly-shipped")
