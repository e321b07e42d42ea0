"""Error messages quote what was received, but never a whole 200 MB field."""

from __future__ import annotations

from anomaly.errors import EXCERPT_CHARS, excerpt


def test_a_short_value_is_quoted_whole() -> None:
    assert excerpt("oops") == "'oops'"
    assert excerpt(3.5) == "3.5"


def test_a_long_value_is_cut_and_says_how_long_it_was() -> None:
    text = excerpt("x" * 10_000_000)
    assert len(text) < EXCERPT_CHARS + 40
    assert text.startswith("'xxx") and "10,000,002 characters" in text
