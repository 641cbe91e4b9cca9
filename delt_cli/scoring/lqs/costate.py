"""The LQS/PDS solver: an SGD trajectory, its co-state run backwards, per-sample scores on the way.

Forward (plain SGD, the step's batch loss L_t is the mean sample loss of batch t):

    theta_{t+1} = theta_t - eta * grad L_t(theta_t),    t = 0 .. T-1

Backward (co-state of sum_{t=0..T} J(theta_t), J = mean target loss):

    lambda_T = grad J(theta_T)
    lambda_t = lambda_{t+1} + grad J(theta_t) - eta * H_t lambda_{t+1}

with H_t the Hessian of L_t at theta_t (exact Hessian-vector products by double
backward). lambda_t equals d/d theta_t of sum_{s=t..T} J(theta_s) through the
unrolled trajectory (tests/scoring/lqs/test_lqs_costate.py checks this in float64).

At every annotated step t (t = 0, interval, 2*interval, ... < T), for every proxy
sample n with g_{n,t} = grad l(x_n, theta_t):

    pds_n += eta * lambda_{t+1} . g_{n,t}
    lqs_n += eta * lambda_{t+1} . g_{n,t} / ||g_{n,t'}||

where t' is the next annotated step (t + interval), or T after the last one
(``last_norm="next"``, the paper's formula); ``last_norm="one"`` divides the
last term by 1, as the published code does. Also kept: quality_n, the mean
over annotated steps of cos(g_{n,t}, lambda_{t+1}), and learnability_n, the
mean over steps with a next norm of ||g_{n,t}|| / ||g_{n,t'}||.

Parameters are checkpointed every K steps (default ceil(sqrt(T))) and the
steps in between are recomputed in the backward pass, so memory holds about
T/K + K parameter copies, not T.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from delt_cli.infra.errors import DeltError
from delt_cli.models.causal_lm import LMParts
from delt_cli.scoring.backoff import Backoff
from delt_cli.scoring.lqs.losses import Params, grad_of, hvp, mean_loss_grad, params_of, sample_losses
from delt_cli.scoring.lqs.persample import per_sample_info

Batch = tuple[torch.Tensor, torch.Tensor]  # ids [B, S], lengths [B]


@dataclass
class SolverConfig:
    lr: float = 0.008
    steps: int = 100
    interval: int = 10
    checkpoint_every: int = 0  # 0: ceil(sqrt(steps))
    last_norm: str = "next"  # "next" (norm at the next annotated step, T after the last) or "one" (official code)
    per_sample: str = "hooks"
    chunk: int = 8

    def annotated_steps(self) -> list[int]:
        return list(range(0, self.steps, self.interval))

    def segment(self) -> int:
        return self.checkpoint_every or max(1, math.ceil(math.sqrt(self.steps)))


@dataclass
class ProxyBatch:
    index: np.ndarray  # positions of these samples in the caller's proxy list
    ids: torch.Tensor
    lengths: torch.Tensor


@dataclass
class SolverResult:
    lqs: np.ndarray
    pds: np.ndarray
    quality: np.ndarray
    learnability: np.ndarray
    train_loss: list[float] = field(default_factory=list)  # L_t(theta_t), t = 0..T-1
    target_loss: list[float] = field(default_factory=list)  # J(theta_t), t = 0..T
    reliability: dict[int, float] = field(default_factory=dict)  # ||lambda_{t+1}|| at annotated t
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per phase


class NonFinite(DeltError):
    def __init__(self, message: str, sample: Optional[int] = None):
        super().__init__(message)
        self.sample = sample


class Reducer:
    """Sums tensors and floats over processes (identity in a single process)."""

    def __init__(self, dist=None):
        self.dist = dist

    def sum_(self, tensors: Sequence[torch.Tensor]) -> None:
        if self.dist is None or self.dist.world == 1:
            return
        import torch.distributed as tdist

        for t in tensors:
            tdist.all_reduce(t, op=tdist.ReduceOp.SUM)

    def sum_float(self, value: float, count: int) -> tuple[float, int]:
        if self.dist is None or self.dist.world == 1:
            return value, count
        pair = torch.tensor([value, float(count)], dtype=torch.float64, device=self.dist.device)
        self.sum_([pair])
        return float(pair[0]), int(pair[1])


class _Clock:
    """Accumulates wall seconds per phase: `with clock("phase"): ...`."""

    def __init__(self, seconds: dict):
        self.seconds = seconds

    def __call__(self, phase: str):
        import contextlib
        import time

        @contextlib.contextmanager
        def timed():
            start = time.perf_counter()
            try:
                yield
            finally:
                self.seconds[phase] = self.seconds.get(phase, 0.0) + time.perf_counter() - start

        return timed()


def _set_params(params: Params, values: Params) -> None:
    with torch.no_grad():
        for n, p in params.items():
            p.copy_(values[n])


def _clone(params: Params) -> Params:
    return {n: p.detach().clone() for n, p in params.items()}


class Solver:
    def __init__(
        self,
        parts: LMParts,
        forward: Sequence[Batch],
        target: Sequence[Batch],
        cfg: SolverConfig,
        *,
        reducer: Optional[Reducer] = None,
        on_step: Optional[Callable[[str, int], None]] = None,
    ):
        if len(forward) < cfg.steps:
            raise DeltError(f"LQS needs {cfg.steps} forward batches, got {len(forward)}")
        self.parts = parts
        self.params = params_of(parts.model)
        self.forward = forward
        self.target = target  # this process's share of the target batches
        self.cfg = cfg
        self.reducer = reducer or Reducer()
        self.on_step = on_step or (lambda phase, n: None)
        self.backoff = Backoff("per-sample batch")  # accelerator out of memory: halve the proxy batch and retry

    # -- pieces -------------------------------------------------------------------------------
    def _micro(self, t: int):
        """Forward batch t in micro-batches of `chunk` rows, with their weight in the batch mean."""
        ids, lengths = self.forward[t]
        B, m = ids.shape[0], max(1, self.cfg.chunk)
        for i in range(0, B, m):
            rows = slice(i, i + m)
            n = int(lengths[rows].shape[0])
            yield ids[rows, : int(lengths[rows].max())], lengths[rows], n / B

    def step_grad(self, t: int) -> tuple[Params, float]:
        """grad L_t and L_t, summed over micro-batches (memory: one micro-batch's logits at a time)."""
        total, loss_value = None, 0.0
        for ids, lengths, w in self._micro(t):
            loss = sample_losses(self.parts, ids, lengths).mean()
            g = grad_of(loss, self.params)
            total = {n: w * v for n, v in g.items()} if total is None else {n: total[n] + w * g[n] for n in g}
            loss_value += w * float(loss.detach())
        return total, loss_value

    def step_hvp(self, t: int, vector: Params) -> Params:
        """H_t v = sum over micro-batches c of (|c| / B) H_c v (the batch loss is a mean of sample losses)."""
        total = None
        for ids, lengths, w in self._micro(t):
            hv = hvp(self.parts, ids, lengths, self.params, vector)
            total = {n: w * v for n, v in hv.items()} if total is None else {n: total[n] + w * hv[n] for n in hv}
        return total

    def target_grad(self) -> tuple[Params, float]:
        """grad J and J at the current parameters (target batches summed over processes)."""
        g, loss_sum, count = mean_loss_grad(self.parts, self.target, self.params)
        names = list(g)
        self.reducer.sum_([g[n] for n in names])
        loss_sum, count = self.reducer.sum_float(loss_sum, count)
        if count == 0:
            raise DeltError("--target: no target documents with at least one token to predict")
        for n in names:
            g[n] /= count
        return g, loss_sum / count

    def sgd(self, t: int) -> float:
        g, loss = self.step_grad(t)
        if not math.isfinite(loss):
            raise NonFinite(f"LQS forward step {t}: non-finite training loss {loss} (try a smaller --proxy-lr)")
        with torch.no_grad():
            for n, p in self.params.items():
                p.sub_(self.cfg.lr * g[n])
        return loss

    # -- the whole solve ----------------------------------------------------------------------
    def run(self, proxy: Sequence[ProxyBatch], n_proxy: int) -> SolverResult:
        cfg = self.cfg
        T, K = cfg.steps, cfg.segment()
        annotated = set(cfg.annotated_steps())
        res = SolverResult(*(np.zeros(n_proxy) for _ in range(4)))
        res.target_loss = [math.nan] * (T + 1)
        quality_steps = np.zeros(n_proxy)
        learn_steps = 0

        clock = _Clock(res.seconds)
        # forward trajectory, checkpoints every K steps
        checkpoints: dict[int, Params] = {}
        with clock("forward"):
            for t in range(T):
                if t % K == 0:
                    checkpoints[t] = _clone(self.params)
                res.train_loss.append(self.sgd(t))
                self.on_step("forward", 1)

        # backward: lambda_T, then t = T-1 .. 0
        with clock("target gradients"):
            lam, res.target_loss[T] = self.target_grad()
        self._check_lambda(lam, T)
        next_norm = None
        if cfg.last_norm == "next":
            zero = {n: torch.zeros_like(v) for n, v in lam.items()}
            with clock("per-sample"):
                _, next_norm, _ = self._per_sample(proxy, n_proxy, zero, T)
        elif cfg.last_norm != "one":
            raise DeltError(f"--last-norm {cfg.last_norm}: expected 'next' or 'one'")

        trajectory: dict[int, Params] = {}
        for t in range(T - 1, -1, -1):
            if t not in trajectory:  # recompute the segment that holds t from its checkpoint
                start = (t // K) * K
                _set_params(self.params, checkpoints[start])
                trajectory = {start: checkpoints[start]}
                with clock("recompute"):
                    for s in range(start, t):
                        self.sgd(s)
                        trajectory[s + 1] = _clone(self.params)
            _set_params(self.params, trajectory.pop(t))
            if t in annotated:
                lam_norm = math.sqrt(sum(float(v.double().pow(2).sum()) for v in lam.values()))
                res.reliability[t] = lam_norm
                with clock("per-sample"):
                    dots, norms, _ = self._per_sample(proxy, n_proxy, lam, t)
                res.pds += cfg.lr * dots
                denom = next_norm if next_norm is not None else np.ones(n_proxy)
                res.lqs += cfg.lr * dots / np.maximum(denom, np.finfo(np.float64).tiny)
                quality_steps += dots / np.maximum(norms * lam_norm, np.finfo(np.float64).tiny)
                if next_norm is not None:
                    res.learnability += norms / np.maximum(next_norm, np.finfo(np.float64).tiny)
                    learn_steps += 1
                next_norm = norms
            with clock("target gradients"):
                g_j, res.target_loss[t] = self.target_grad()
            with clock("hessian-vector products"):
                hv = self.step_hvp(t, lam)
            lam = {n: lam[n] + g_j[n] - cfg.lr * hv[n] for n in lam}
            self._check_lambda(lam, t)
            self.on_step("backward", 1)
        res.quality = quality_steps / max(1, len(annotated))
        res.learnability = res.learnability / max(1, learn_steps)
        return res

    def costates(self) -> list[Params]:
        """lambda_0 .. lambda_T (for tests on tiny models: keeps every parameter copy)."""
        T = self.cfg.steps
        thetas = []
        for t in range(T):
            thetas.append(_clone(self.params))
            self.sgd(t)
        thetas.append(_clone(self.params))
        lam, _ = self.target_grad()
        out = [lam]
        for t in range(T - 1, -1, -1):
            _set_params(self.params, thetas[t])
            g_j, _ = self.target_grad()
            hv = self.step_hvp(t, lam)
            lam = {n: lam[n] + g_j[n] - self.cfg.lr * hv[n] for n in lam}
            out.append(lam)
        return out[::-1]

    # -- helpers ------------------------------------------------------------------------------
    def _per_sample(self, proxy: Sequence[ProxyBatch], n_proxy: int, lam: Params, t: int):
        dots = np.zeros(n_proxy)
        norms = np.zeros(n_proxy)
        losses = np.zeros(n_proxy)
        for batch in proxy:

            def run(rows: np.ndarray, batch=batch):
                sel = torch.as_tensor(rows, device=batch.ids.device)
                ids, lengths = batch.ids[sel], batch.lengths[sel]
                ids = ids[:, : int(lengths.max())]
                out = per_sample_info(self.cfg.per_sample, self.parts, ids, lengths, lam, chunk=self.cfg.chunk)
                return [x.detach().cpu().numpy() for x in out]

            for rows, (d, sq, loss) in self.backoff.run([np.arange(len(batch.index))], run):
                index = batch.index[rows]
                bad = ~(np.isfinite(d) & np.isfinite(sq) & np.isfinite(loss))
                if bad.any():
                    raise NonFinite(f"LQS step {t}: non-finite loss or gradient", sample=int(index[np.argmax(bad)]))
                dots[index] = d
                norms[index] = np.sqrt(sq)
                losses[index] = loss
                self.on_step("samples", len(index))
        return dots, norms, losses

    def _check_lambda(self, lam: Params, t: int) -> None:
        if not all(bool(torch.isfinite(v).all()) for v in lam.values()):
            raise NonFinite(f"LQS co-state at step {t} is not finite (try a smaller --proxy-lr or fewer --proxy-steps)")
