"""hyjail.jsontext gives what the standard json module gives, without importing it."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hyjail import jsontext

from conftest import python_prints

SCALARS = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False)
           | st.text())
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20)


def test_the_accelerator_is_used_here():
    assert jsontext._FAST is not None  # else every start imports json (and re) again


@settings(max_examples=400, deadline=None)
@given(VALUES, st.booleans())
def test_dumps_is_json_dumps_and_loads_reads_it_back(value, sort_keys):
    text = jsontext.dumps(value, sort_keys=sort_keys)
    assert text == json.dumps(value, sort_keys=sort_keys)
    assert jsontext.loads(text) == json.loads(text)
    assert jsontext.loads(f" \n{text}\t\r".encode()) == json.loads(text)


@pytest.mark.parametrize("text", ["", "  ", "{", '{"a": 1} x', "[1,]", "nul", '"\\x"',
                                  '{"a" 1}', "1 2", b"\xff"])
def test_what_json_refuses_it_refuses_with_a_value_error(text):
    with pytest.raises(ValueError):
        json.loads(text)
    with pytest.raises(ValueError):
        jsontext.loads(text)


def test_nan_and_the_infinities_read_as_json_reads_them():
    assert repr(jsontext.loads("[NaN, Infinity, -Infinity]")) == "[nan, inf, -inf]"


def test_constants_refused_when_asked_as_json_refuses_them_with_parse_constant():
    assert jsontext.loads('{"a": [1.5, 2]}', constants=False) == {"a": [1.5, 2]}
    for text in ("NaN", "[1, Infinity]", '{"a": -Infinity}'):
        with pytest.raises(ValueError, match="is not a JSON number"):
            jsontext.loads(text, constants=False)


def test_what_json_cannot_write_it_cannot_either():
    with pytest.raises(TypeError, match="set is not JSON serializable"):
        jsontext.dumps({"a": {1}})
    circular: list = []
    circular.append(circular)
    with pytest.raises(ValueError):
        jsontext.dumps(circular)


def test_it_imports_neither_json_nor_re():
    assert python_prints(
        "import sys; from hyjail import jsontext; "
        "jsontext.loads(jsontext.dumps({'a': [1, 2.5, None, 'x']}, sort_keys=True)); "
        "print(sorted(m for m in ('json', 're') if m in sys.modules))") == "[]\n"
