"""Sample ids (sisa.store.format.ids): every spelling of an id, its one canonical form,
and what is refused. Properties over generated ids (hypothesis)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sisa.errors import InputError
from sisa.store.format import ids

INT64 = st.integers(-(2**63), 2**63 - 1)
# text a string id may be: any Unicode scalar value (no lone surrogates)
TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)


def one_line_error(call) -> str:
    with pytest.raises(InputError) as info:
        call()
    msg = str(info.value)
    assert msg and "\n" not in msg, msg
    return msg


@given(INT64)
def test_an_int_id_round_trips_through_its_canonical_text(v):
    text = str(v)  # the canonical spelling
    parsed = ids.parse_text_ids([text], ids.INT)
    assert parsed.type == pa.int64() and parsed.to_pylist() == [v]
    assert str(parsed[0].as_py()) == text  # parse -> canonical -> the same text
    assert ids.parse_text_ids([str(parsed[0].as_py())], ids.INT).equals(parsed)


@given(INT64)
def test_every_api_spelling_of_an_int_id_is_the_same_id(v):
    want = pa.array([v], pa.int64())
    spellings = [v, [v], (v,), np.int64(v), np.array([v], np.int64), pa.array([v], pa.int64()),
                 pa.chunked_array([[v]], pa.int64())]
    if -(2**31) <= v < 2**31:
        spellings += [np.int32(v), np.array([v], np.int32), pa.array([v], pa.int32())]
    if 0 <= v < 2**64:
        spellings.append(np.array([v], np.uint64))
    for spelling in spellings:
        assert ids.to_store_ids(spelling, ids.INT).equals(want), type(spelling)


@given(st.integers(0, 2**63 - 1))
def test_a_non_canonical_int_spelling_is_refused_with_the_canonical_one(v):
    for text in (f"0{v}", f"+{v}", f" {v}", f"{v} ", f"{v}.0"):
        msg = one_line_error(lambda t=text: ids.parse_text_ids([t], ids.INT))
        assert "is not an integer id" in msg
        if text.strip().lstrip("+").isdigit():
            assert f"write {v}" in msg  # the fix names the id it meant
    assert "write 0" in one_line_error(lambda: ids.parse_text_ids(["-0"], ids.INT))


@given(st.one_of(st.integers(2**63, 2**70), st.integers(-(2**70), -(2**63) - 1)))
def test_an_int_outside_int64_is_refused(v):
    assert "out of range" in one_line_error(lambda: ids.parse_text_ids([str(v)], ids.INT))
    assert "out of range" in one_line_error(lambda: ids.to_store_ids([v], ids.INT))


@given(TEXT)
def test_a_str_id_is_exactly_its_text(s):
    parsed = ids.parse_text_ids([s], ids.STR)
    assert parsed.type == pa.string() and parsed.to_pylist() == [s]
    spellings = [s, [s], pa.array([s]), pa.array([s], pa.large_string())]
    if not s.endswith("\x00"):  # numpy's fixed-width str drops trailing NULs itself
        spellings.append(np.array([s]))  # an inner NUL is kept (pyarrow alone ends there)
    for spelling in spellings:
        assert ids.to_store_ids(spelling, ids.STR).to_pylist() == [s]


@given(st.lists(TEXT.filter(lambda s: s and "\n" not in s and not s.endswith("\r")),
                min_size=1, max_size=10))
def test_an_ids_file_round_trips_string_ids(values):
    if values[0].startswith("\ufeff"):
        values[0] = "x" + values[0]
    text = "\n".join(values) + "\n"
    assert ids.read_ids_file("ids.txt", ids.STR, text.encode()).to_pylist() == values
    crlf = "\r\n".join(values)  # Windows line ends are line ends, not part of an id
    assert ids.read_ids_file("ids.txt", ids.STR, crlf.encode()).to_pylist() == values


@given(st.lists(INT64, min_size=1, max_size=10))
def test_an_ids_file_round_trips_int_ids(values):
    for sep in ("\n", ",", " , ", "\t"):
        got = ids.read_ids_file("ids.txt", ids.INT, sep.join(map(str, values)).encode())
        assert got.to_pylist() == values
    assert ids.read_ids_file("ids.json", ids.INT, json.dumps(values)).to_pylist() == values


@given(st.lists(TEXT, min_size=1, max_size=10))
def test_a_json_ids_file_round_trips_any_string_ids(values):
    assert ids.read_ids_file("ids.json", ids.STR, json.dumps(values)).to_pylist() == values


@given(INT64)
def test_one_id_is_never_both_types(v):
    msg = one_line_error(lambda: ids.to_store_ids([str(v)], ids.INT))
    assert f"pass {v} (an int)" in msg  # the string of an int: told which int to pass
    msg = one_line_error(lambda: ids.to_store_ids([v], ids.STR))
    assert f"pass {str(v)!r} (a str)" in msg
    # and the bytes a keyed hash takes differ: an int id never hashes like a str id
    i = ids.id_bytes(pa.array([v], pa.int64()))[0]
    s = ids.id_bytes(pa.array([str(v)], pa.string()))[0]
    g = ids.group_bytes(pa.array([v], pa.int64()))[0]
    assert len({i, s, g}) == 3


@given(st.lists(st.one_of(INT64.map(lambda v: ("i", v)), TEXT.map(lambda s: ("s", s))),
                max_size=12, unique=True))
def test_id_bytes_are_one_to_one(tagged):
    out = []
    for kind, v in tagged:
        arr = pa.array([v], pa.int64() if kind == "i" else pa.string())
        out += ids.id_bytes(arr)
    assert len(set(out)) == len(out)


@settings(max_examples=30)
@given(st.binary(min_size=1, max_size=8))
def test_bytes_like_ids_are_refused_by_both_store_types(raw):
    for id_type in ids.ID_TYPES:
        # a bytes-like is one (wrong) id, never a list of small ints
        for value in (raw, bytearray(raw), memoryview(raw), [raw], [bytearray(raw)],
                      np.array([raw], dtype=object)):
            msg = one_line_error(lambda val=value, t=id_type: ids.to_store_ids(val, t))
            assert "sample id" in msg


@pytest.mark.parametrize("bad", [[True], [1.0], [None], np.array([1.5]), np.array([True]),
                                 {1: 2}, [[1, 2]], pa.array([1.0])])
def test_what_is_never_an_id(bad):
    for id_type in ids.ID_TYPES:
        one_line_error(lambda t=id_type: ids.to_store_ids(bad, t))


@pytest.mark.parametrize("text", ["٣", "²", "1e3", "0x10", "", "1_000", "--1", "١٢"])
def test_text_that_only_looks_like_an_int_is_refused(text):
    assert "is not an integer id" in one_line_error(lambda: ids.parse_text_ids([text], ids.INT))


def test_a_lone_surrogate_is_refused_by_position():
    msg = one_line_error(lambda: ids.parse_text_ids(["ok", "a\ud800"], ids.STR))
    assert "#2" in msg and "lone surrogate" in msg


def test_unique_sorted_is_the_canonical_request():
    arr = ids.to_store_ids([5, -1, 5, 3], ids.INT)
    assert ids.unique_sorted(arr).to_pylist() == [-1, 3, 5]
    arr = ids.to_store_ids(["b", "a", "b"], ids.STR)
    assert ids.unique_sorted(arr).to_pylist() == ["a", "b"]
