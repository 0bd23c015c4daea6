"""The strict JSON reader every client input goes through."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from orchestra.serving import _json as strict_json

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**19), max_value=10**19)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(), children, max_size=4),
    max_leaves=20,
)


@given(json_values)
def test_every_json_document_within_the_limits_reads_as_json_loads_reads_it(value: Any) -> None:
    text = json.dumps(value)
    assert strict_json.loads(text) == json.loads(text)
    assert strict_json.loads(text.encode()) == json.loads(text)


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        (b'{"a": 1, "a": 2}', "duplicate key 'a'"),
        (b'{"x": {"b": true, "b": false}}', "duplicate key 'b'"),
        (b'{"n": 1e999999}', "too large"),
        (b'{"n": -1e400}', "too large"),
        (b'{"n": NaN}', "NaN is not a JSON number"),
        (b'{"n": Infinity}', "Infinity is not a JSON number"),
        (b'{"n": ' + b"9" * 5000 + b"}", "more than 20 digits"),
        (b"[" * 65 + b"]" * 65, "nested more than 64"),
        (b"[" * 100_000, "nested more than 64"),
        (b'{"m": "\xff\xfe"}', "not UTF-8"),
        (b"", "empty"),
        (b"   ", "empty"),
        (b'{"a": }', "Expecting value"),
        (b'{"a": 1} trailing', "Extra data"),
    ],
)
def test_what_json_loads_would_let_through_or_choke_on_is_refused(text: bytes, reason: str) -> None:
    with pytest.raises(strict_json.InvalidJson) as err:
        strict_json.loads(text)
    assert reason in err.value.reason
    assert "9999" not in err.value.reason  # the input is never echoed


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    text = json.dumps({"message": "[" * 500 + '\\"{' * 100})
    assert strict_json.loads(text)["message"].startswith("[[[")
    assert strict_json.loads(b"[" * 64 + b"]" * 64) == json.loads("[" * 64 + "]" * 64)
