"""Selection rules against plain-Python references on random data (property-based)."""

from __future__ import annotations

import math
from decimal import Decimal

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from delt_cli.infra.errors import UsageError
from delt_cli.selection import Rule, apportion, parse_rule, rank, select_mask

# Small integer ranges force ties; floats exercise the float path.
int_values = st.lists(st.integers(min_value=-3, max_value=3), min_size=0, max_size=60)
float_values = st.lists(st.floats(min_value=-1e6, max_value=1e6, allow_nan=False), min_size=0, max_size=60)
any_values = st.one_of(int_values, float_values)


def ref_top_k(values, k, lowest=False):
    key = (lambda i: (values[i], i)) if lowest else (lambda i: (-values[i], i))
    return set(sorted(range(len(values)), key=key)[:k])


def as_array(values):
    return np.asarray(values, dtype=np.int64 if all(isinstance(v, int) for v in values) else np.float64)


def kept(mask):
    return set(np.flatnonzero(mask).tolist())


@given(values=any_values, k=st.integers(0, 80), lowest=st.booleans())
def test_top_k_matches_reference(values, k, lowest):
    mask = select_mask(Rule("top_k", k), as_array(values), n=len(values), lowest=lowest)
    assert kept(mask) == ref_top_k(values, min(k, len(values)), lowest)


@given(values=any_values, r=st.sampled_from([0.0, 0.1, 0.25, 0.29, 1 / 3, 0.5, 0.7, 0.99, 1.0]), lowest=st.booleans())
def test_top_r_keeps_floor_n_r(values, r, lowest):
    mask = select_mask(Rule("top_r", r), as_array(values), n=len(values), lowest=lowest)
    k = math.floor(Decimal(repr(r)) * len(values))
    assert kept(mask) == ref_top_k(values, k, lowest)
    assert mask.sum() == k


def test_top_r_edges_and_decimal_floor():
    v = np.arange(100, dtype=np.float64)
    assert select_mask(Rule("top_r", 0.0), v).sum() == 0
    assert select_mask(Rule("top_r", 1.0), v).sum() == 100
    # 100 * 0.29 is 28.999999999999996 in binary floating point; the rule means 29 rows.
    assert select_mask(Rule("top_r", 0.29), v).sum() == 29


@given(values=any_values, t=st.floats(-5, 5), lowest=st.booleans())
def test_threshold_is_strict(values, t, lowest):
    mask = select_mask(Rule("threshold", t), as_array(values), n=len(values), lowest=lowest)
    expected = {i for i, v in enumerate(values) if (v < t if lowest else v > t)}
    assert kept(mask) == expected


@given(n=st.integers(0, 300), r=st.floats(0, 1), seed=st.integers(0, 10))
def test_random_r_count_and_determinism(n, r, seed):
    a = select_mask(Rule("random_r", r, seed=seed), None, n=n)
    b = select_mask(Rule("random_r", r, seed=seed), None, n=n)
    assert (a == b).all()
    assert a.sum() == math.floor(Decimal(repr(r)) * n)


def test_random_r_is_uniform():
    counts = np.zeros(20)
    for seed in range(2000):
        counts += select_mask(Rule("random_r", 0.25, seed=seed), None, n=20)
    # each row kept with probability 1/4 -> 500 expected, sd ~19
    assert np.all(np.abs(counts - 500) < 100)


@given(values=any_values, budget=st.integers(0, 400), lowest=st.booleans(), data=st.data())
def test_budget_keeps_longest_fitting_prefix_of_ranking(values, budget, lowest, data):
    lengths = np.asarray(data.draw(st.lists(st.integers(0, 30), min_size=len(values), max_size=len(values))), dtype=np.int64)
    mask = select_mask(Rule("budget", budget, unit="tokens"), as_array(values), n=len(values), lowest=lowest, lengths=lengths)
    key = (lambda i: (values[i], i)) if lowest else (lambda i: (-values[i], i))
    expected, total = set(), 0
    for i in sorted(range(len(values)), key=key):
        if total + lengths[i] > budget:
            break
        total += lengths[i]
        expected.add(i)
    assert kept(mask) == expected


@given(values=float_values, k=st.integers(0, 80), data=st.data())
def test_valid_mask_excludes_rows(values, k, data):
    valid = np.asarray(data.draw(st.lists(st.booleans(), min_size=len(values), max_size=len(values))), dtype=bool)
    mask = select_mask(Rule("top_k", k), as_array(values), n=len(values), valid=valid)
    candidates = [i for i in range(len(values)) if valid[i]]
    ref = sorted(candidates, key=lambda i: (-values[i], i))[:k]
    assert kept(mask) == set(ref)


@given(
    values=st.lists(st.integers(-3, 3), min_size=1, max_size=80),
    r=st.sampled_from([0.1, 0.3, 0.5, 0.9]),
    data=st.data(),
)
def test_grouped_top_r_applies_rule_inside_groups(values, r, data):
    groups = np.asarray(data.draw(st.lists(st.integers(0, 3), min_size=len(values), max_size=len(values))))
    v = np.asarray(values, dtype=np.int64)
    mask = select_mask(Rule("top_r", r), v, n=len(v), groups=groups)
    total = math.floor(Decimal(repr(r)) * len(v))
    assert mask.sum() == total
    present = np.unique(groups)
    sizes = np.array([(groups == g).sum() for g in present])
    quotas = apportion(total, sizes)
    for g, q in zip(present, quotas):
        rows = [i for i in range(len(v)) if groups[i] == g]
        assert kept(mask) & set(rows) == set(sorted(rows, key=lambda i: (-values[i], i))[:q])
        # each group's share is within one row of its proportional share
        assert abs(q - total * len(rows) / len(v)) < 1


def test_grouped_budget_splits_budget_by_group_length():
    v = np.arange(12, dtype=np.float64)
    groups = np.array([0] * 6 + [1] * 6)
    lengths = np.array([10] * 6 + [30] * 6)
    mask = select_mask(Rule("budget", 120, unit="tokens"), v, n=12, groups=groups, lengths=lengths)
    # group 0 owns 60/240 of the length -> budget 30 -> its 3 best rows; group 1 -> 90 -> 3 rows
    assert kept(mask) == {3, 4, 5, 9, 10, 11}


def test_apportion_sums_and_is_proportional():
    q = apportion(10, np.array([1, 1, 1]))
    assert q.sum() == 10 and sorted(q.tolist()) == [3, 3, 4]
    assert apportion(0, np.array([5, 5])).tolist() == [0, 0]


def test_rank_ties_go_to_earlier_rows():
    assert rank(np.array([1, 2, 2, 1])).tolist() == [1, 2, 0, 3]
    assert rank(np.array([1, 2, 2, 1]), lowest=True).tolist() == [0, 3, 1, 2]


def test_integer_extremes_do_not_overflow():
    v = np.array([np.iinfo(np.int64).min, 0, np.iinfo(np.int64).max], dtype=np.int64)
    assert kept(select_mask(Rule("top_k", 1), v)) == {2}
    assert kept(select_mask(Rule("top_k", 1), v, lowest=True)) == {0}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({}, "exactly one selection rule"),
        ({"top_k": 1, "top_r": 0.5}, "--top-k and --top-r"),
        ({"top_r": 1.5}, "must be in [0, 1]"),
        ({"random_r": -0.1}, "must be in [0, 1]"),
        ({"top_k": -1}, "must be >= 0"),
        ({"threshold": float("nan")}, "finite"),
    ],
)
def test_parse_rule_errors(kwargs, message):
    with pytest.raises(UsageError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_rule(**kwargs)
