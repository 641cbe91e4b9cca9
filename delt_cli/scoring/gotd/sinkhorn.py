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
iteration on CPU. In float32 the rounding of the matrix-vector products puts a
floor under the measurable marginal error (about 3e-6 in L1 at 20k x 2k); a
float32 solve that stops improving above `tol` continues in float64 from where
it stopped (`refine`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

# Scalings are absorbed into the potentials when |log u| or |log v| exceeds this
# (checked every iteration for the first ABSORB_CHECK_EVERY, then every ABSORB_CHECK_EVERY-th).
ABSORB_AT = 12.0
ABSORB_CHECK_EVERY = 10
# A float32 solve "stalls" when its best error improves by < 2% over this many iterations.
STALL_WINDOW = 25
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
    norm: int = 1
    history: list = field(default_factory=list)

    def summary(self) -> dict:
        return {
            "epsilon": self.epsilon,
            "iterations": self.iterations,
            "marginal_error": self.marginal_error,
            "marginal_error_norm": f"L{self.norm} of the target marginal",
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
    """g_j = eps log b - eps LSE_i((f_i - C_ij)/eps) for every row y_j, in row blocks of y.

    Uses C_ij = |x_i|^2 + |y_j|^2 - 2 x_i.y_j, so one block is a single matrix product
    plus a row-wise log-sum-exp:  g_j = |y_j|^2 + eps log b - eps LSE_i(h_i + (2/eps) x_i.y_j)
    with h_i = (f_i - |x_i|^2)/eps.
    """
    h = (f - (x * x).sum(1)) / epsilon
    xs = x * (2.0 / epsilon)
    out = torch.empty(len(y), dtype=x.dtype, device=x.device)
    block = tile_size(len(x), x.element_size(), factor=4)
    for s in range(0, len(y), block):
        yb = y[s : s + block]
        e = torch.addmm(h[None, :], yb, xs.T)  # T x n exponents
        m = e.amax(dim=1)
        lse = m + e.sub_(m[:, None]).exp_().sum(1).log_()  # log-sum-exp, in place
        out[s : s + block] = (yb * yb).sum(1) + epsilon * (log_b - lse)
    return out


def _initial_f(p: "_Problem") -> torch.Tensor:
    """The f-update from g = 0 (log domain, tile by tile): a start at which nothing under- or overflows."""
    row_lse = torch.full((len(p.x),), -math.inf, dtype=p.x.dtype, device=p.x.device)
    for s in range(0, len(p.y), p.block):
        c = cost_block(p.x, p.y[s : s + p.block], p.xx, p.yy[s : s + p.block])
        row_lse = torch.logaddexp(row_lse, torch.logsumexp(c.div_(-p.epsilon), dim=1))
    return p.epsilon * (p.log_a - row_lse)


def _build_kernel(x, y, xx, yy, f, g, epsilon, block, out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """K_ij = exp((f_i + g_j - C_ij)/eps), built tile by tile into `out`."""
    if out is None:
        out = torch.empty((len(x), len(y)), dtype=x.dtype, device=x.device)
    for s in range(0, len(y), block):
        c = cost_block(x, y[s : s + block], xx, yy[s : s + block])
        c.neg_().add_(f[:, None]).add_(g[None, s : s + block]).div_(epsilon).exp_()
        out[:, s : s + block] = c
    return out


def _marginal_error(row_sums: torch.Tensor, a: float, norm: int) -> float:
    d = row_sums - a
    return float(d.abs().sum()) if norm == 1 else float(torch.linalg.vector_norm(d))


def _stalled(history: list[float], window: int = STALL_WINDOW) -> bool:
    """No progress: the best error of the last `window` iterations is within 2% of the window before."""
    return len(history) >= 2 * window and min(history[-window:]) >= 0.98 * min(history[-2 * window : -window])


@dataclass
class _Problem:
    x: torch.Tensor
    y: torch.Tensor
    xx: torch.Tensor
    yy: torch.Tensor
    epsilon: float
    log_a: float
    log_b: float
    block: int

    @classmethod
    def build(cls, x, y, epsilon, dtype, device) -> "_Problem":
        x, y = as_tensor(x, dtype, device), as_tensor(y, dtype, device)
        return cls(x, y, (x * x).sum(1), (y * y).sum(1), epsilon, -math.log(len(x)), -math.log(len(y)), tile_size(len(x), x.element_size()))


def _iterate_stored(p: _Problem, f, *, tol, max_iter, it, momentum, norm, history, on_iteration, stop_on_stall):
    """Scaling-form iterations on a stored kernel, with absorption; returns (f, iterations, error, stalled)."""
    eps = p.epsilon
    n, big_n = len(p.x), len(p.y)
    a, b = math.exp(p.log_a), math.exp(p.log_b)
    g = c_transform(f, p.x, p.y, eps, p.log_b)
    kernel = _build_kernel(p.x, p.y, p.xx, p.yy, f, g, eps, p.block)
    u = torch.ones(n, dtype=p.x.dtype, device=p.x.device)
    v = torch.ones(big_n, dtype=p.x.dtype, device=p.x.device)
    high, low = math.exp(ABSORB_AT), math.exp(-ABSORB_AT)
    stalled = False
    # Invariant at the top of the loop: v is the exact g-update for the current u.
    while True:
        kv = kernel @ v
        err = _marginal_error(u * kv, a, norm)
        history.append(err)
        if on_iteration:
            on_iteration(it, err)
        if err <= tol or it >= max_iter or not math.isfinite(err):
            break
        if stop_on_stall and _stalled(history):
            stalled = True
            break
        log_u = p.log_a - torch.log(kv)
        if momentum != 1.0:
            log_u = momentum * log_u + (1.0 - momentum) * torch.log(u)
        u = torch.exp(log_u)
        v = torch.reciprocal_(kernel.T @ u).mul_(b)
        it += 1
        if it % ABSORB_CHECK_EVERY and it > ABSORB_CHECK_EVERY:
            continue  # the scalings drift slowly once started; checking costs a pass over v
        v_min, v_max = torch.aminmax(v)
        if float(log_u.abs().max()) > ABSORB_AT or float(v_max) > high or float(v_min) < low:
            f = f + eps * log_u
            g = c_transform(f, p.x, p.y, eps, p.log_b)
            _build_kernel(p.x, p.y, p.xx, p.yy, f, g, eps, p.block, out=kernel)
            u.fill_(1.0)
            v.fill_(1.0)
    return f + eps * torch.log(u), it, err, stalled


def _iterate_tiled(p: _Problem, f, *, tol, max_iter, it, momentum, norm, history, on_iteration, stop_on_stall):
    """Log-domain iterations recomputing the cost in column tiles; returns (f, iterations, error, stalled)."""
    eps = p.epsilon
    a, b = math.exp(p.log_a), math.exp(p.log_b)
    while True:
        # One pass over column tiles: g-update of the tile (exact), then the tile's share
        # of the row sums of the plan, which gives the error and the f-update.
        row_sum = torch.zeros(len(p.x), dtype=p.x.dtype, device=p.x.device)
        for s in range(0, len(p.y), p.block):
            e = cost_block(p.x, p.y[s : s + p.block], p.xx, p.yy[s : s + p.block])
            e.neg_().add_(f[:, None]).div_(eps)  # (f_i - C_ij)/eps
            m = e.max(dim=0).values
            e.sub_(m[None, :]).exp_()
            col = e.sum(dim=0)
            row_sum += e @ (b / col)  # P_ij = e_ij * b / col_j
        err = _marginal_error(row_sum, a, norm)
        history.append(err)
        if on_iteration:
            on_iteration(it, err)
        if err <= tol or it >= max_iter or not math.isfinite(err):
            return f, it, err, False
        if stop_on_stall and _stalled(history):
            return f, it, err, True
        f_new = f + eps * (p.log_a - torch.log(row_sum))
        f = momentum * f_new + (1.0 - momentum) * f if momentum != 1.0 else f_new
        it += 1


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
    norm: int = 1,
    refine: bool = True,
    on_iteration: Optional[Callable[[int, float], None]] = None,
) -> OTSolution:
    """Solve the balanced entropic OT problem between targets `x` (n x d) and candidates `y` (N x d).

    `x`, `y`: numpy arrays or tensors. `norm`: 1 or 2, the norm of the target-marginal error
    compared with `tol`. With `refine`, a float32 solve whose error stops improving above
    `tol` (float32 rounding sets a floor, about 3e-6 in L1 at 20k x 2k) continues in float64
    from where it stopped. Returns potentials as float64 numpy arrays.
    """
    if not (epsilon > 0 and math.isfinite(epsilon)):
        raise ValueError(f"epsilon must be a positive finite number, got {epsilon}")
    if not (0 < momentum < 2):
        raise ValueError(f"momentum must be in (0, 2), got {momentum}")
    if norm not in (1, 2):
        raise ValueError(f"norm must be 1 or 2, got {norm}")
    started = time.time()
    p = _Problem.build(x, y, epsilon, dtype, device)
    f = _initial_f(p)
    history: list[float] = []
    kw = dict(tol=tol, max_iter=max_iter, momentum=momentum, norm=norm, history=history, on_iteration=on_iteration)

    def run(problem, f, it, stop_on_stall):
        stored = len(problem.x) * len(problem.y) * problem.x.element_size() <= max_memory
        loop = _iterate_stored if stored else _iterate_tiled
        return (*loop(problem, f, it=it, stop_on_stall=stop_on_stall, **kw), "stored" if stored else "tiled")

    can_refine = refine and dtype == torch.float32
    f, it, err, stalled, mode = run(p, f, 0, can_refine)
    dtype_used = str(dtype).replace("torch.", "")
    if stalled and err > tol:
        dtype_used = f"float32, float64 from iteration {it}"
        p = _Problem.build(x, y, epsilon, torch.float64, device)
        history.pop()  # the float64 loop re-measures this iterate
        f, it, err, _, mode = run(p, f.double(), it, False)
    g = c_transform(f, p.x, p.y, epsilon, p.log_b)
    f64 = f.double().cpu().numpy()
    g64 = g.double().cpu().numpy()
    finite = np.isfinite(f64).all() and np.isfinite(g64).all() and math.isfinite(err)
    return OTSolution(
        f=f64,
        g=g64,
        epsilon=float(epsilon),
        iterations=it,
        marginal_error=err,
        converged=bool(finite and err <= tol),
        tol=tol,
        momentum=momentum,
        mode=mode,
        dtype=dtype_used,
        norm=norm,
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
