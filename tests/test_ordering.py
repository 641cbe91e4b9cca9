"""Ordering rules against plain-Python references (property-based)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from delt_cli.infra.errors import UsageError
from delt_cli.ordering import compute_order, folding_order, grouped_folding_order, shuffle_order, sort_order

values_st = st.one_of(
    st.lists(st.integers(-3, 3), max_size=80),
    st.lists(st.floats(-1e3, 1e3, allow_nan=False), max_size=80),
)


def arr(values):
    return np.asarray(values, dtype=np.int64 if all(isinstance(v, int) for v in values) else np.float64)


@given(values=values_st, descending=st.booleans())
def test_sort_is_stable_sort(values, descending):
    key = (lambda i: (-values[i], i)) if descending else (lambda i: (values[i], i))
    assert sort_order(arr(values), descending=descending).tolist() == sorted(range(len(values)), key=key)


@given(values=values_st, folds=st.integers(1, 9))
def test_folding_matches_reference(values, folds):
    s = sorted(range(len(values)), key=lambda i: (values[i], i))
    expected = [x for l in range(folds) for x in s[l::folds]]
    got = folding_order(arr(values), folds).tolist()
    assert got == expected
    assert sorted(got) == list(range(len(values)))  # a permutation, no duplicates


@given(values=values_st, folds=st.integers(1, 6))
def test_folding_structure(values, folds):
    v = arr(values)
    order = folding_order(v, folds)
    n = len(v)
    start = 0
    for l in range(folds):
        size = len(range(l, n, folds))  # rows with sorted rank r = l mod L
        fold = v[order[start : start + size]]
        assert np.all(fold[1:] >= fold[:-1])  # every fold is an ascending sweep
        start += size
    assert start == n


def test_folding_degenerate_cases_equal_sort():
    v = np.array([3.0, 1.0, 2.0, 1.0])
    assert folding_order(v, 1).tolist() == sort_order(v).tolist()
    assert folding_order(v, 10).tolist() == sort_order(v).tolist()
    assert folding_order(np.array([0.0, 1, 2, 3, 4, 5, 6]), 3).tolist() == [0, 3, 6, 1, 4, 2, 5]


@given(n=st.integers(0, 200), seed=st.integers(0, 5))
def test_shuffle_is_seeded_permutation(n, seed):
    a = shuffle_order(n, seed)
    assert sorted(a.tolist()) == list(range(n))
    assert a.tolist() == shuffle_order(n, seed).tolist()


def test_shuffle_depends_on_seed():
    assert shuffle_order(100, 1).tolist() != shuffle_order(100, 2).tolist()


def ref_grouped(values, groups, folds, descending=False):
    """The documented definition, written out in plain Python."""
    rows_by_group = {}
    for i, g in enumerate(groups):
        rows_by_group.setdefault(g, []).append(i)
    keys = {}
    for g, rows in rows_by_group.items():
        ranked = sorted(rows, key=(lambda i: (-values[i], i)) if descending else (lambda i: (values[i], i)))
        for r, i in enumerate(ranked):
            keys[i] = (r % folds, r / len(rows), g, r)
    return sorted(range(len(values)), key=lambda i: keys[i])


@given(data=st.data(), folds=st.integers(1, 5), descending=st.booleans())
def test_grouped_folding_matches_definition(data, folds, descending):
    values = data.draw(st.lists(st.integers(-5, 5), max_size=80))
    groups = data.draw(st.lists(st.integers(0, 3), min_size=len(values), max_size=len(values)))
    got = grouped_folding_order(arr(values), np.asarray(groups, dtype=np.int64), folds, descending=descending).tolist()
    assert got == ref_grouped(values, groups, folds, descending)


@given(data=st.data(), folds=st.integers(1, 5))
def test_grouped_folding_properties(data, folds):
    values = np.asarray(data.draw(st.lists(st.floats(-10, 10, allow_nan=False), min_size=1, max_size=120)))
    groups = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=len(values), max_size=len(values))))
    order = grouped_folding_order(values, groups, folds)
    assert sorted(order.tolist()) == list(range(len(values)))
    sizes = {g: int((groups == g).sum()) for g in np.unique(groups)}
    start = 0
    for l in range(folds):
        size = sum(len(range(l, n_g, folds)) for n_g in sizes.values())
        fold = order[start : start + size]
        start += size
        for g, n_g in sizes.items():
            in_group = fold[groups[fold] == g]
            # L folds: fold l holds exactly the group's rows of within-group rank r = l mod L ...
            assert len(in_group) == len(range(l, n_g, folds))
            # ... within one row of n_g / L ...
            assert abs(len(in_group) - n_g / folds) <= 1
            # ... and each fold is an ascending ramp inside every group.
            assert np.all(np.diff(values[in_group]) >= 0)
        # along every prefix of a fold, each group's count stays within 2 rows of its proportional share
        for p in range(1, len(fold) + 1):
            prefix = fold[:p]
            for g, n_g in sizes.items():
                share = (groups[prefix] == g).sum()
                expected = p * len(range(l, n_g, folds)) / len(fold)
                assert abs(share - expected) <= 2
    assert start == len(values)


def test_grouped_sort_interleaves_groups_in_proportion():
    # two groups, 6 and 3 rows: every third row comes from the small group
    values = np.array([5, 4, 3, 2, 1, 0, 9, 8, 7], dtype=np.float64)
    groups = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1])
    order = grouped_folding_order(values, groups, 1)
    assert groups[order].tolist() == [0, 1, 0, 0, 1, 0, 0, 1, 0]
    assert values[order[groups[order] == 0]].tolist() == [0, 1, 2, 3, 4, 5]
    assert values[order[groups[order] == 1]].tolist() == [7, 8, 9]


def test_compute_order_errors():
    with pytest.raises(UsageError, match="--folds 0"):
        folding_order(np.zeros(3), 0)
    with pytest.raises(UsageError, match="needs --by"):
        compute_order("sort", n=3)
    with pytest.raises(UsageError, match="not shuffle"):
        compute_order("shuffle", n=3, groups=np.zeros(3, dtype=np.int64))


@given(st.lists(st.sampled_from([0.0, -0.0, 1.0, 2.5, -3.0, np.inf, -np.inf]) | st.floats(allow_nan=False), max_size=300))
def test_stable_argsort_equals_numpy_stable(values):
    from delt_cli.selection import stable_argsort

    key = np.array(values, dtype=np.float64)
    assert np.array_equal(stable_argsort(key), np.argsort(key, kind="stable"))
    ints = np.array([int(v) % 7 for v in range(len(values))], dtype=np.int64)
    assert np.array_equal(stable_argsort(ints), np.argsort(ints, kind="stable"))


def test_stable_argsort_with_nan_and_many_ties():
    from delt_cli.selection import stable_argsort

    key = np.array([3.0, np.nan, 1.0, 1.0, np.nan, 0.0, -0.0, 1.0] * 50)
    assert np.array_equal(stable_argsort(key), np.argsort(key, kind="stable"))
    key = key[~np.isnan(key)]
    assert not np.array_equal(np.argsort(key), np.argsort(key, kind="stable"))  # the case the tie fix is for
    assert np.array_equal(stable_argsort(key), np.argsort(key, kind="stable"))
