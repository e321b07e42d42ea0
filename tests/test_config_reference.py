"""docs/configuration.md is generated from the config dataclasses' ``#:`` comments, and is up to date."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from anomaly.core.config import POLICY_SECTIONS, DetectorConfig, reference_markdown
from anomaly.errors import ConfigError

REFERENCE = Path(__file__).resolve().parent.parent / "docs" / "configuration.md"
REGENERATE = (
    ".venv/bin/python -c \"from anomaly.core.config import reference_markdown; "
    "print(reference_markdown(), end='')\" > docs/configuration.md"
)


@dataclass(frozen=True)
class Documented:
    """A section for the test.

    Only this first paragraph is shown.
    """

    #: Off unless set.
    name: str | None = None
    #: A switch.
    enabled: bool = True
    #: A rate written the way
    #: its source writes it.
    rate: float = 1e-2
    #: A word: |x| is escaped in a table.
    word: str = "600min"
    #: A count.
    count: int = 2_000


@dataclass(frozen=True)
class Undocumented:
    """A section with one setting documented and one not."""

    #: Documented.
    kept: int = 1
    # an ordinary comment documents nothing
    bare: int = 2


@dataclass(frozen=True)
class DocumentedRoot:
    documented: Documented = field(default_factory=Documented)


@dataclass(frozen=True)
class UndocumentedRoot:
    documented: Documented = field(default_factory=Documented)
    undocumented: Undocumented = field(default_factory=Undocumented)


def sections(text: str) -> dict[str, str]:
    """``{section name: its text}`` from the ``## name`` headings of a reference."""
    parts = text.split("\n## ")[1:]
    return {part.split("\n", 1)[0].split()[0]: part for part in parts}


def test_committed_reference_is_up_to_date() -> None:
    assert REFERENCE.read_text() == reference_markdown(), (
        f"docs/configuration.md is out of date with anomaly/core/config.py; regenerate it with: {REGENERATE}"
    )


def test_every_setting_of_every_section_is_in_its_table() -> None:
    found = sections(reference_markdown())
    assert list(found) == [f.name for f in dataclasses.fields(DetectorConfig)]
    for section in dataclasses.fields(DetectorConfig):
        text = found[section.name]
        assert text.startswith(f"{section.name} *(policy)*\n") == (section.name in POLICY_SECTIONS)
        for setting in dataclasses.fields(getattr(DetectorConfig(), section.name)):
            assert f"\n| `{setting.name}` | " in text, f"{section.name}.{setting.name} is missing"


def test_defaults_read_as_yaml_would_write_them_and_comments_join() -> None:
    text = sections(reference_markdown(DocumentedRoot))["documented"]
    assert text.split("\n")[2] == "A section for the test."
    rows = [line for line in text.split("\n") if line.startswith("| `")]
    assert rows == [
        "| `name` | null | Off unless set. |",
        "| `enabled` | true | A switch. |",
        "| `rate` | 1e-2 | A rate written the way its source writes it. |",
        "| `word` | 600min | A word: \\|x\\| is escaped in a table. |",
        "| `count` | 2000 | A count. |",
    ]


def test_a_setting_without_a_doc_comment_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"^Undocumented\.bare has no #: comment above it"):
        reference_markdown(UndocumentedRoot)
