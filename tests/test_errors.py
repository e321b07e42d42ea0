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


def test_an_oversized_json_file_is_refused_once_by_name_without_being_read(tmp_path) -> None:
    import pytest

    from anomaly.errors import ModelFileError
    from anomaly.core.fileio import read_json

    path = tmp_path / "state.json"
    path.write_text("[1, 2, 3]")
    assert read_json(path, ModelFileError, max_bytes=9) == [1, 2, 3]
    with pytest.raises(ModelFileError) as caught:
        read_json(path, ModelFileError, max_bytes=8)
    assert str(caught.value) == f"cannot read {str(path)!r}: it is 9 bytes, more than the 8 allowed"
