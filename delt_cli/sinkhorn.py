"""Entropic optimal transport between a small target set and a large candidate pool (PyTorch).

The problem (the one GOT-D solves, see docs/gotd.md)::

    min_P  <P, C> + eps * sum_ij P_ij (log P_ij - 1)   s.t.  P 1 = a,  P^T 1 = b
    C_ij = ||x_i - y_j||^2      (squared Euclidean, not halved)
    a_i = 1/n (targets x),      b_j = 1/N (candidates y)

Its dual potentials (f, g) satisfy, at the fixed point of Sinkhorn's iterations,

    g_j = eps log b_j - eps LSE_i((f_i - C_ij) / eps)     (the c-transform of f)
    f_i = eps log a_i - eps LSE_j((g_j - C_ij) / eps)

and the plan is P_ij = exp((f_i + g_j - C_ij) / eps). Each iteration here is a
g-update (exact, so the candidate marginal always holds) followed by an
f-update over-relaxed with `momentum` (f <- (1 - w) f + w f_new, as ott-jax's
Momentum). Convergence is measured as the L1 error of the target marginal,
||P 1 - a||_1, after the g-update; the returned g is the c-transform of the
returned f, so `c_transform(f, ...)` of any candidate reproduces its g.

Two ways to run an iteration, chosen by memory:

* stored (n * N * itemsize <= max_memory): the kernel K = exp((f + g - C)/eps)
  is kept in memory and iterations are two matrix-vector products on scalings
  (u, v); when a scaling leaves [e^-tau, e^tau] it is absorbed into (f, g) and
  K is rebuilt from the embeddings (the log-domain stabilisation of Schmitzer,
  2019), so nothing overflows or underflows even for small eps;
* tiled: the cost is recomputed in column tiles every iteration and the
  updates are done in the log domain (one exp per entry per iteration).

Both give the same potentials; the stored form is about ten times faster per
iteration on CPU.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

# Scalings are absorbed into the potentials when |log u| or |log v| exceeds this.
ABSORB_AT = 12.0
# Working memory (bytes) for the temporaries of one tile in the tiled form and in c-transforms.
TILE_BYTES = 64 << 20


@dataclass
class OTSolution:
    """Potentials and convergence facts of one solve (f for targets, g for candidates)."""

    f: np.ndarray
    g: np.ndarray
    epsilon: float
    iterations: int
    marginal_error: float
    converged: bool
    tol: float
    momentum: float
    mode: str  # "stored" or "tiled"
    dtype: str
    seconds: float
    history: list = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "epsilon": self.epsilon,
            "iterations": self.iterations,
            "marginal_error": self.marginal_error,
            "marginal_error_norm": "L1 of the target marginal",
            "tol": self.tol,
            "converged": self.converged,
            "momentum": self.momentum,
            "cost_matrix": self.mode,
            "dtype": self.dtype,
            "solve_seconds": round(self.seconds, 3),
        }


def as_tensor(values, dtype: torch.dtype, device) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.to(device=device, dtype=dtype)
    array = np.ascontiguousarray(values)
    if not array.flags.writeable:
        array = array.copy()
    return torch.from_numpy(array).to(device=device, dtype=dtype)


def cost_block(x: torch.Tensor, y: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor) -> torch.Tensor:
    """Squared Euclidean distances ||x_i - y_j||^2 (len(x) x len(y)), clamped at 0."""
    c = torch.addmm(xx[:, None] + yy[None, :], x, y.T, alpha=-2.0)
    return c.clamp_(min=0.0)


def tile_size(n: int, itemsize: int, factor: int = 3) -> int:
    """Columns per tile so that `factor` n x tile temporaries fit TILE_BYTES."""
    return max(256, TILE_BYTES // max(1, factor * n * itemsize))


def median_cost(x: torch.Tensor, y: torch.Tensor, max_entries: int = 4_000_000) -> float:
    """Median of the cost matrix, on evenly spaced candidate columns if it has more than `max_entries`."""
    n, big_n = len(x), len(y)
    cols = max(1, min(big_n, max_entries // max(1, n)))
    idx = torch.as_tensor(np.linspace(0, big_n - 1, cols).round().astype(np.int64), device=y.device)
    ys = y[idx]
    c = cost_block(x, ys, (x * x).sum(1), (ys * ys).sum(1))
    return float(np.median(c.double().cpu().numpy()))


def c_transform(
    f: torch.Tensor,
    x: torch.Tensor,
    y: torch.Tensor,
    epsilon: float,
    log_b: float,
) -> torch.Tensor:
    """g_j = eps log b - eps LSE_i((f_i - C_ij)/eps) for every row y_j (computed in row blocks of y)."""
    xx = (x * x).sum(1)
    out = torch.empty(len(y), dtype=x.dtype, device=x.device)
    block = tile_size(len(x), x.element_size(), factor=2)
    for s in range(0, len(y), block):
        yb = y[s : s + block]
        c = cost_block(x, yb, xx, (yb * yb).sum(1))  # n x T
        c.neg_().add_(f[:, None]).div_(epsilon)
        out[s : s + block] = epsilon * (log_b - torch.logsumexp(c, dim=0))
    return out


def _log_domain_init(x, y, xx, yy, epsilon, log_a, log_b, block):
    """f from g = 0, then g = c-transform of f (both log-domain, tile by tile)."""
    n = len(x)
    row_lse = torch.full((n,), -math.inf, dtype=x.dtype, device=x.device)
    for s in range(0, len(y), block):
        c = cost_block(x, y[s : s + block], xx, yy[s : s + block])
        row_lse = torch.logaddexp(row_lse, torch.logsumexp(-c / epsilon, dim=1))
    f = epsilon * (log_a - row_lse)
    g = c_transform(f, x, y, epsilon, log_b)
    return f, g


def _build_kernel(x, y, xx, yy, f, g, epsilon, block, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """K_ij = exp((f_i + g_j - C_ij)/eps), built tile by tile into `out`."""
    if out is None:
        out = torch.empty((len(x), len(y)), dtype=x.dtype, device=x.device)
    for s in range(0, len(y), block):
        c = cost_block(x, y[s : s + block], xx, yy[s : s + block])
        c.neg_().add_(f[:, None]).add_(g[None, s : s + block]).div_(epsilon).exp_()
        out[:, s : s + block] = c
    return out


def sinkhorn(
    x,
    y,
    *,
    epsilon: float,
    tol: float = 1e-6,
    max_iter: int = 2000,
    momentum: float = 1.3,
    max_memory: int = 2 << 30,
    dtype: torch.dtype = torch.float32,
    device="cpu",
    on_iteration: Optional[Callable[[int, float], None]] = None,
) -> OTSolution:
    """Solve the balanced entropic OT problem between targets `x` (n x d) and candidates `y` (N x d).

    `x`, `y`: numpy arrays or tensors. Returns potentials as float64 numpy arrays.
    """
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon}")
    if not (0 < momentum < 2):
        raise ValueError(f"momentum must be in (0, 2), got {momentum}")
    started = time.time()
    x = as_tensor(x, dtype, device)
    y = as_tensor(y, dtype, device)
    n, big_n = len(x), len(y)
    log_a, log_b = -math.log(n), -math.log(big_n)
    a = 1.0 / n
    xx, yy = (x * x).sum(1), (y * y).sum(1)
    block = tile_size(n, x.element_size())
    f, g = _log_domain_init(x, y, xx, yy, epsilon, log_a, log_b, block)
    stored = n * big_n * x.element_size() <= max_memory
    history: list[float] = []
    err = math.inf
    it = 0
    if stored:
        kernel = _build_kernel(x, y, xx, yy, f, g, epsilon, block)
        u = torch.ones(n, dtype=dtype, device=device)
        v = torch.ones(big_n, dtype=dtype, device=device)
        b = 1.0 / big_n
        # Invariant at the top of the loop: v is the exact g-update for the current u.
        while True:
            kv = kernel @ v
            err = float((u * kv - a).abs().sum().item())
            history.append(err)
            if on_iteration:
                on_iteration(it, err)
            if err <= tol or it >= max_iter or not math.isfinite(err):
                break
            log_u = torch.log(a / kv)
            if momentum != 1.0:
                log_u = momentum * log_u + (1.0 - momentum) * torch.log(u)
            u = torch.exp(log_u)
            v = b / (kernel.T @ u)
            it += 1
            if float(log_u.abs().max()) > ABSORB_AT or float(v.log().abs().max()) > ABSORB_AT:
                f = f + epsilon * log_u
                g = c_transform(f, x, y, epsilon, log_b)
                _build_kernel(x, y, xx, yy, f, g, epsilon, block, out=kernel)
                u.fill_(1.0)
                v.fill_(1.0)
        f = f + epsilon * torch.log(u)
        del kernel
    else:
        while True:
            # One pass over column tiles: g-update of the tile (exact), then the tile's
            # share of the row sums of the plan, which gives the f-update and the error.
            row_sum = torch.zeros(n, dtype=dtype, device=device)
            for s in range(0, big_n, block):
                e = cost_block(x, y[s : s + block], xx, yy[s : s + block])
                e.neg_().add_(f[:, None]).div_(epsilon)  # (f_i - C_ij)/eps
                m = e.max(dim=0).values
                e.sub_(m[None, :]).exp_()
                col = e.sum(dim=0)
                g[s : s + block] = epsilon * (log_b - m - torch.log(col))
                row_sum += e @ (math.exp(log_b) / col)  # P_ij = e_ij * b / col_j
            err = float((row_sum - a).abs().sum().item())
            history.append(err)
            if on_iteration:
                on_iteration(it, err)
            if err <= tol or it >= max_iter or not math.isfinite(err):
                break
            f_new = f + epsilon * (log_a - torch.log(row_sum))
            f = momentum * f_new + (1.0 - momentum) * f if momentum != 1.0 else f_new
            it += 1
    g = c_transform(f, x, y, epsilon, log_b)
    f64 = f.double().cpu().numpy()
    g64 = g.double().cpu().numpy()
    if not (np.isfinite(f64).all() and np.isfinite(g64).all() and math.isfinite(err)):
        converged = False
    else:
        converged = err <= tol
    return OTSolution(
        f=f64,
        g=g64,
        epsilon=float(epsilon),
        iterations=it,
        marginal_error=err,
        converged=converged,
        tol=tol,
        momentum=momentum,
        mode="stored" if stored else "tiled",
        dtype=str(dtype).replace("torch.", ""),
        seconds=time.time() - started,
        history=history,
    )


def calibrated_gradient(g: np.ndarray, pool_mean: float, pool_size: int) -> np.ndarray:
    """LAVA's calibrated gradient g_j - sum_{k != j} g_k / (N - 1) = N/(N-1) (g_j - mean(g)).

    An increasing affine map of g, so it ranks candidates exactly as g does; unlike g it does
    not depend on the arbitrary constant (f + c, g - c) of the dual potentials.
    """
    if pool_size < 2:
        return np.zeros_like(g)
    return pool_size / (pool_size - 1) * (g - pool_mean)
