"""The malformed corpus is rejected by the Python validator with the code it claims."""

from __future__ import annotations

from streaming.schema import InvalidEvent, validate_bytes
from tests.corpus import malformed


def test_corpus_has_at_least_twenty_kinds_and_each_is_rejected_as_labelled() -> None:
    cases = malformed("unit")
    assert len(cases) >= 20
    assert len({code for _, _, code in cases}) >= 15
    for name, value, code in cases:
        result = validate_bytes(value)
        assert isinstance(result, InvalidEvent), name
        assert result.code == code, (name, result)
