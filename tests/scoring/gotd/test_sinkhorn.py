"""The Sinkhorn solver against POT, and its own invariants (stored vs tiled, c-transform, calibration)."""

import functools
import math

import numpy as np
import ot
import pytest
import torch

from delt_cli.scoring.gotd.sinkhorn import c_transform, calibrated_gradient, median_cost, sinkhorn


def problem(n, big_n, d, seed=0, shift=0.3):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d)) + shift
    y = rng.normal(size=(big_n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    y /= np.linalg.norm(y, axis=1, keepdims=True)
    return x, y


@functools.lru_cache(maxsize=None)
def pot_reference(n, big_n, d, eps, seed=0):
    return pot_potentials(*problem(n, big_n, d, seed), eps)


def pot_potentials(x, y, eps):
    """POT's log-domain Sinkhorn, run to full precision: (f, g, cost <P, C>)."""
    n, big_n = len(x), len(y)
    cost = ot.dist(x, y)  # squared Euclidean
    plan, log = ot.sinkhorn(np.full(n, 1 / n), np.full(big_n, 1 / big_n), cost, eps, method="sinkhorn_log", stopThr=1e-11, numItermax=200_000, log=True)
    return eps * log["log_u"], eps * log["log_v"], float((plan * cost).sum())


def fix_constant(f, g, f_ref, g_ref):
    """Potentials are unique up to (f + c, g - c): shift ours onto the reference."""
    c = float(np.mean(g_ref - g))
    return f - c, g + c


def plan_cost(x, y, f, g, eps):
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    return float((np.exp((f[:, None] + g[None, :] - cost) / eps) * cost).sum())


@pytest.mark.parametrize(
    "n,big_n,d,eps",
    [(30, 200, 8, 0.1), (50, 300, 16, 0.5), (40, 500, 4, 0.05), (12, 90, 3, 0.02)],
)
@pytest.mark.parametrize("stored", [True, False])
def test_potentials_and_cost_match_pot(n, big_n, d, eps, stored):
    x, y = problem(n, big_n, d)
    f_ref, g_ref, cost_ref = pot_reference(n, big_n, d, eps)
    sol = sinkhorn(x, y, epsilon=eps, tol=1e-8, max_iter=100_000, dtype=torch.float64, max_memory=1 << 40 if stored else 0)
    assert sol.converged and sol.mode == ("stored" if stored else "tiled")
    f, g = fix_constant(sol.f, sol.g, f_ref, g_ref)
    assert np.abs(f - f_ref).max() < 1e-4
    assert np.abs(g - g_ref).max() < 1e-4
    assert abs(plan_cost(x, y, sol.f, sol.g, eps) - cost_ref) < 1e-4


def test_float32_potentials_within_1e4_of_float64():
    x, y = problem(60, 800, 32, seed=1)
    ref = sinkhorn(x, y, epsilon=0.1, tol=1e-9, max_iter=50_000, dtype=torch.float64)
    sol = sinkhorn(x, y, epsilon=0.1, tol=1e-6, max_iter=50_000, dtype=torch.float32)
    assert sol.converged
    f, g = fix_constant(sol.f, sol.g, ref.f, ref.g)
    assert np.abs(f - ref.f).max() < 1e-4 and np.abs(g - ref.g).max() < 1e-4


def test_small_epsilon_absorbs_and_still_matches_pot():
    """eps = 0.005 drives the scalings far from 1: the stored solver must absorb them into the potentials."""
    x, y = problem(20, 150, 3, seed=2)
    f_ref, g_ref, _ = pot_potentials(x, y, 0.005)
    sol = sinkhorn(x, y, epsilon=0.005, tol=1e-9, max_iter=200_000, dtype=torch.float64)
    assert sol.converged
    f, g = fix_constant(sol.f, sol.g, f_ref, g_ref)
    assert np.abs(g - g_ref).max() < 1e-4


def test_returned_g_is_the_c_transform_of_f():
    x, y = problem(25, 300, 8, seed=3)
    sol = sinkhorn(x, y, epsilon=0.1, tol=1e-8, max_iter=10_000, dtype=torch.float64)
    g = c_transform(torch.tensor(sol.f), torch.tensor(x), torch.tensor(y), 0.1, -math.log(len(y))).numpy()
    np.testing.assert_allclose(g, sol.g, atol=1e-12)
    # and the candidate marginal of the plan is exact
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    plan = np.exp((sol.f[:, None] + sol.g[None, :] - cost) / 0.1)
    np.testing.assert_allclose(plan.sum(0), 1 / len(y), rtol=1e-10)
    assert abs(np.abs(plan.sum(1) - 1 / len(x)).sum() - sol.marginal_error) < 1e-9


def test_stored_and_tiled_agree_and_momentum_only_changes_speed():
    x, y = problem(40, 600, 16, seed=4)
    a = sinkhorn(x, y, epsilon=0.05, tol=1e-9, max_iter=20_000, dtype=torch.float64, momentum=1.0)
    b = sinkhorn(x, y, epsilon=0.05, tol=1e-9, max_iter=20_000, dtype=torch.float64, momentum=1.3, max_memory=0)
    f, g = fix_constant(b.f, b.g, a.f, a.g)
    assert np.abs(g - a.g).max() < 1e-6 and np.abs(f - a.f).max() < 1e-6
    assert b.iterations < a.iterations


def test_not_converged_is_reported():
    x, y = problem(30, 300, 8, seed=5)
    sol = sinkhorn(x, y, epsilon=0.01, tol=1e-12, max_iter=3)
    assert not sol.converged and sol.iterations == 3 and sol.marginal_error > 1e-12
    assert sol.summary()["converged"] is False


def test_median_cost_and_calibration():
    x, y = problem(10, 50, 4, seed=6)
    cost = ((x[:, None, :] - y[None, :, :]) ** 2).sum(-1)
    assert abs(median_cost(torch.tensor(x), torch.tensor(y)) - np.median(cost)) < 1e-9
    g = np.array([3.0, -1.0, 0.5, 2.0])
    grad = calibrated_gradient(g, g.mean(), len(g))
    manual = np.array([g[j] - (g.sum() - g[j]) / (len(g) - 1) for j in range(len(g))])  # LAVA's definition
    np.testing.assert_allclose(grad, manual)
    assert (np.argsort(grad) == np.argsort(g)).all()
    # invariant to the dual constant
    np.testing.assert_allclose(calibrated_gradient(g + 7.0, (g + 7.0).mean(), len(g)), grad)


def test_bad_parameters():
    x, y = problem(5, 10, 2)
    with pytest.raises(ValueError, match="epsilon"):
        sinkhorn(x, y, epsilon=0.0)
    with pytest.raises(ValueError, match="momentum"):
        sinkhorn(x, y, epsilon=0.1, momentum=2.5)


def test_float32_stall_continues_in_float64():
    """A tolerance below float32's rounding floor: the float32 solve stalls and float64 finishes it."""
    x, y = problem(30, 400, 8, seed=7)
    sol = sinkhorn(x, y, epsilon=0.1, tol=1e-13, max_iter=20_000, dtype=torch.float32)
    assert sol.converged and sol.marginal_error <= 1e-13
    assert sol.dtype.startswith("float32, float64 from iteration")
    ref = sinkhorn(x, y, epsilon=0.1, tol=1e-13, max_iter=20_000, dtype=torch.float64)
    f, g = fix_constant(sol.f, sol.g, ref.f, ref.g)
    assert np.abs(g - ref.g).max() < 1e-9
    no_refine = sinkhorn(x, y, epsilon=0.1, tol=1e-13, max_iter=300, dtype=torch.float32, refine=False)
    assert not no_refine.converged and no_refine.dtype == "float32"


def test_l2_stopping_rule():
    x, y = problem(30, 300, 8, seed=8)
    l1 = sinkhorn(x, y, epsilon=0.1, tol=1e-6, dtype=torch.float64, norm=1)
    l2 = sinkhorn(x, y, epsilon=0.1, tol=1e-6, dtype=torch.float64, norm=2)
    assert l2.iterations <= l1.iterations and l2.summary()["marginal_error_norm"].startswith("L2")
