"""Vectorised id hashes and group codes (delt_cli.dataset.keys) against plain-Python references."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from delt_cli.dataset.keys import group_codes, hash64
from delt_cli.infra.errors import DeltError


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(max_size=40), max_size=60), st.integers(0, 5), st.integers(0, 5))
def test_string_hashes_agree_with_equality(values, lo, cut):
    """Equal strings hash equal, whatever the array type, slice offset or chunking; in these
    small samples distinct strings never collide."""
    h = hash64(pa.array(values, pa.string()))
    assert h.dtype == np.uint64 and len(h) == len(values)
    assert np.array_equal(h, hash64(pa.array(values, pa.large_string())))
    assert np.array_equal(h, hash64(pa.array([v.encode() for v in values], pa.binary())))
    lo = min(lo, len(values))
    assert np.array_equal(h[lo:], hash64(pa.array(values, pa.large_string()).slice(lo)))
    cut = min(cut, len(values))
    assert np.array_equal(h, hash64(pa.chunked_array([pa.array(values[:cut], pa.string()), pa.array(values[cut:], pa.string())])))
    first = {}
    for value, code in zip(values, h.tolist()):
        assert first.setdefault(code, value) == value


def test_hashes_of_real_ids_are_distinct_and_order_sensitive():
    ids = [f"doc-{i:09d}" for i in range(200_000)] + ["ab", "ba", "", "a", "aa", "\x00", "\x00\x00", "\x00" * 8, "\x00" * 9]
    ids += ["12345678" + "x" * k for k in range(20)] + ["x" * 300, "x" * 299 + "y", "y" + "x" * 299]  # across word boundaries
    h = hash64(pa.array(ids))
    assert len(np.unique(h)) == len(ids)


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 20), st.integers(1, 30), st.integers(0, 3), st.binary(min_size=0, max_size=1))
def test_fixed_width_ids_hash_as_the_general_path(width, n, lo, odd):
    """Values of one width take a shortcut (one matrix, no index arrays); their hashes are the
    ones the general path gives (forced here by one value of another width after them)."""
    rng = np.random.default_rng(width * 100 + n)
    values = [bytes(rng.integers(0, 256, width, dtype=np.uint8)) for _ in range(n)]
    other = b"x" * (width + 1) + odd
    fixed = hash64(pa.array(values, pa.binary()))
    general = hash64(pa.array(values + [other], pa.binary()))[:n]
    assert np.array_equal(fixed, general)
    lo = min(lo, n)
    assert np.array_equal(hash64(pa.array(values, pa.large_binary()).slice(lo)), general[lo:])
    ids = [f"doc-{i:09d}" for i in range(1000)]
    assert np.array_equal(hash64(pa.array(ids)), hash64(pa.array(ids + ["doc-1"]))[:1000])


def test_integer_and_dictionary_ids():
    ints = pa.array([3, 1, 3, -7, 2**62], pa.int64())
    h = hash64(ints)
    assert h[0] == h[2] and len(np.unique(h)) == 4
    assert np.array_equal(hash64(pa.array([3, 1, 3], pa.int32())), h[:3])
    words = pa.array(["x", "y", "x"]).dictionary_encode()
    assert np.array_equal(hash64(words), hash64(pa.array(["x", "y", "x"])))
    with pytest.raises(DeltError, match="as ids"):
        hash64(pa.array([[1], [2]]))


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(["wiki", "news", "fiction", "b", "a", ""]), max_size=50), st.integers(0, 50))
def test_group_codes_match_sorted_distinct_values(values, cut):
    column = pa.chunked_array([pa.array(values[:cut], pa.string()), pa.array(values[cut:], pa.string())])
    codes, names = group_codes(column)
    assert names == sorted(set(values))
    assert codes.tolist() == [names.index(v) for v in values]


def test_group_codes_of_numbers():
    codes, names = group_codes(pa.chunked_array([pa.array([5, 2, 5, 9])]))
    assert names == [2, 5, 9] and codes.tolist() == [1, 0, 1, 2]
