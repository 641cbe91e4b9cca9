"""GOT-D (Kang et al., ICLR 2024): score candidates by the gradient of OT(pool, target) w.r.t. their mass.

The fit solves one entropic OT problem between the target embeddings and a
uniform seeded sample of the pool (the whole pool when it is small enough), on
the main process; the artifact keeps the target embeddings, their potential f and
the sample's row indices. The transform then gives every candidate y_j of a shard
the c-transform of f,

    g_j = eps log b - eps LSE_i((f_i - ||x_i - y_j||^2) / eps),

which equals the solve's candidate potential for sampled rows and puts all rows,
sampled or not, on one scale. The score is LAVA's calibrated gradient
N/(N-1) (g_j - mean g) (N = pool rows, mean over the solve's sample); it ranks
exactly like g. Lower = more useful (`delt select --by gotd --lowest`); with
``contrast`` the target is a negative target and higher = more useful. With
``group_by`` the fit also measures the OT distance between the target and each
group of the pool (domain relevance). See docs/gotd.md.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np
import pyarrow as pa

from delt_cli.infra.console import info, warn
from delt_cli.dataset import open_dataset
from delt_cli.infra.errors import DeltError, UsageError
from delt_cli.scoring.base import Fitted, Scorer
from delt_cli.scoring.options import Named, PoolOptions, Seeded, TargetOptions, option
from delt_cli.scoring.pool import fit_on_main, iter_sample, sample_rows
from delt_cli.scoring.tokens import read_rows
from delt_cli.scoring.gotd.vectors import check_dims, column_dim, to_numpy

DEFAULT_EPSILON = 0.1  # absolute, as the paper's ott-jax call
MOMENTUM = 1.3  # over-relaxation of the f-update, as the paper's ott-jax Momentum(1.3)
DTYPES = ("float32", "float64")
_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "kib": 1024, "m": 1e6, "mb": 1e6, "mib": 1024**2, "g": 1e9, "gb": 1e9, "gib": 1024**3, "t": 1e12, "tb": 1e12, "tib": 1024**4}


def parse_bytes(text: str | int, *, flag: str = "--max-memory") -> int:
    """'2GB', '512MiB', '1e9' or an int -> bytes."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.eE+]+)\s*([A-Za-z]*)\s*", str(text))
    if not m or m.group(2).lower() not in _UNITS:
        raise UsageError(f"{flag} {text}: expected a size such as 2GB, 512MiB or 1000000")
    try:
        value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    except ValueError:
        raise UsageError(f"{flag} {text}: expected a size such as 2GB, 512MiB or 1000000") from None
    if value <= 0:
        raise UsageError(f"{flag} {text}: must be positive")
    return int(value)


@dataclass
class GOTDOptions(TargetOptions, PoolOptions, Seeded, Named):
    embedding_column: str = option("emb", "The embedding column of the pool and the target (made by `delt embed`).")
    epsilon: Optional[float] = option(None, f"Absolute entropic regularisation (default {DEFAULT_EPSILON}, the paper's).")
    epsilon_relative: Optional[float] = option(None, "epsilon = R x the median target-pool cost (instead of --epsilon).")
    max_iter: int = option(2000, "Maximum Sinkhorn iterations.")
    tol: float = option(1e-4, "Stop when the L1 error of the target marginal is at most this (a warning when not reached).")
    max_memory: str = option("2GB", "Keep the target x sample kernel in memory up to this size (e.g. 2GB), else recompute it in tiles.", runtime=True)
    ot_dtype: str = option("float32", "float32 or float64 for the solve and the scores.")
    contrast: bool = option(False, "--target is a negative target (GOT-D contrast); column gotd_contrast, higher = more useful.")
    group_by: Optional[str] = option(
        None, "Domain relevance: also the OT distance between the target and each group of the pool (a column such as domain), in the fit's manifest."
    )


class GOTDScorer(Scorer):
    """Columns: the calibrated OT gradient (the score) and the raw candidate potential g."""

    name = "gotd"
    title = "GOT-D"
    Options = GOTDOptions
    global_fit = True

    def validate(self) -> None:
        o = self.options
        if not o.target:
            raise UsageError("--method gotd needs --target TARGET (a dataset with the same embedding column, made by `delt embed`)")
        if o.epsilon is not None and o.epsilon_relative is not None:
            raise UsageError("give at most one of --epsilon and --epsilon-relative")
        for flag, value in (("--epsilon", o.epsilon), ("--epsilon-relative", o.epsilon_relative), ("--tol", o.tol)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UsageError(f"{flag} {value}: must be a positive number")
        if o.max_iter < 1:
            raise UsageError(f"--max-iter {o.max_iter}: must be >= 1")
        if o.pool_size is not None and o.pool_size < 1:
            raise UsageError(f"--pool-size {o.pool_size}: must be >= 1")
        if o.ot_dtype not in DTYPES:
            raise UsageError(f"--ot-dtype {o.ot_dtype}: expected one of {', '.join(DTYPES)}")
        self.max_memory = parse_bytes(o.max_memory)

    @property
    def columns(self) -> list[str]:
        base = self.options.column or ("gotd_contrast" if self.options.contrast else "gotd")
        return [base, f"{base}_potential"]

    def check(self, dataset) -> None:
        column_dim(dataset, self.options.embedding_column, flag="--embedding-column")

    # -- fit: one OT solve on a sample of the pool ----------------------------------------------
    def _read_target(self) -> tuple[np.ndarray, str]:
        o = self.options
        target = open_dataset(o.target)
        column_dim(target, o.embedding_column, flag="--embedding-column")
        x = to_numpy(target.read_column(o.embedding_column), column=o.embedding_column, where=f"--target {o.target}")
        if len(x) < 2:
            raise DeltError(f"--target {o.target} has {len(x)} row(s); GOT-D needs at least 2 target embeddings")
        return x, target.fingerprint

    def _epsilon(self, x: np.ndarray, y: np.ndarray, device) -> tuple[float, dict]:
        import torch

        from delt_cli.scoring.gotd.sinkhorn import as_tensor, median_cost

        o = self.options
        if o.epsilon_relative is None:
            epsilon = o.epsilon if o.epsilon is not None else DEFAULT_EPSILON
            return epsilon, {"epsilon_absolute": epsilon}
        torch_dtype = getattr(torch, o.ot_dtype)
        med = median_cost(as_tensor(x, torch_dtype, device), as_tensor(y, torch_dtype, device))
        if not med > 0:
            raise DeltError(f"--epsilon-relative: the median cost between --target and the pool is {med}; give --epsilon instead")
        return o.epsilon_relative * med, {"epsilon_relative": o.epsilon_relative, "median_cost": med}

    def _solve(self, x: np.ndarray, y: np.ndarray, epsilon: float, device):
        import torch

        from delt_cli.scoring.gotd.sinkhorn import sinkhorn

        o = self.options
        sol = sinkhorn(x, y, epsilon=epsilon, tol=o.tol, max_iter=o.max_iter, momentum=MOMENTUM, max_memory=self.max_memory, dtype=getattr(torch, o.ot_dtype), device=device)
        if not (np.isfinite(sol.f).all() and np.isfinite(sol.g).all() and math.isfinite(sol.marginal_error)):
            raise DeltError(
                f"GOT-D: the Sinkhorn solve diverged (non-finite potentials or marginals) with epsilon {epsilon:.4g}; "
                "use a larger --epsilon or --epsilon-relative, or --ot-dtype float64"
            )
        return sol

    def _fit_main(self, dataset, x: np.ndarray, dist) -> Fitted:
        """Sample the pool, solve OT on the sample (main process)."""
        o = self.options
        rows = sample_rows(dataset.num_rows, o.pool_size, o.seed)
        y = np.empty((dataset.num_rows if rows is None else len(rows), x.shape[1]), dtype=np.float32)
        filled = 0
        for shard, table, local in iter_sample(dataset, [o.embedding_column], rows):
            part = to_numpy(table.column(o.embedding_column), column=o.embedding_column, where=str(shard.path))
            if part.shape[1] != x.shape[1] and len(part):
                check_dims(part.shape[1], x.shape[1], column=o.embedding_column, pool=str(shard.path), target=o.target)
            y[filled : filled + len(local)] = part[local]
            filled += len(local)
        del part, table
        pa.default_memory_pool().release_unused()  # the shards' buffers: gone before the kernel is allocated
        if len(y) < 2:
            raise DeltError(f"{dataset.spec} has {len(y)} row(s); GOT-D needs at least 2 candidates")
        epsilon, eps_rule = self._epsilon(x, y, dist.device)
        info(f"GOT-D: solving OT between {len(x):,} target and {len(y):,} pool embeddings ({x.shape[1]}-d, epsilon {epsilon:.4g})")
        sol = self._solve(x, y, epsilon, dist.device)
        info(f"GOT-D: {sol.iterations} iteration(s), marginal error {sol.marginal_error:.2e} ({sol.mode} cost, {sol.seconds:.1f}s)")
        facts = {
            "epsilon": float(epsilon),
            **eps_rule,
            "log_b": -math.log(len(y)),
            "g_mean": float(sol.g.mean()),
            "sample_rows": int(len(y)),
            "pool_rows": dataset.num_rows,
            "convergence": {k: v for k, v in sol.summary().items() if k != "solve_seconds"},
        }
        report = {"domain_relevance": self._relevance(dataset, x, epsilon, dist.device)} if o.group_by else {}
        arrays = {
            "target": x,
            "potential": sol.f,
            "sample": np.arange(dataset.num_rows, dtype=np.int64) if rows is None else rows.astype(np.int64),
        }
        return Fitted(facts=facts, arrays=arrays, report=report)

    def _relevance(self, dataset, x: np.ndarray, epsilon: float, device) -> list[dict]:
        """OT distance between the target and each group of the pool (GOT-D's domain relevance test)."""
        o = self.options
        codes, labels = dataset.read_groups(o.group_by, flag="--group-by")
        out = []
        for k, label in enumerate(labels):
            members = np.flatnonzero(codes == k)
            pick = sample_rows(len(members), o.pool_size, o.seed)
            rows = members if pick is None else members[pick]
            table = read_rows(dataset, rows, [o.embedding_column])
            y = to_numpy(table.column(o.embedding_column), column=o.embedding_column, where=dataset.spec)
            sol = self._solve(x, y, epsilon, device)
            out.append(
                {
                    "group": label if isinstance(label, (str, int, float, bool)) or label is None else str(label),
                    "rows": int(len(members)),
                    "sample_rows": int(len(rows)),
                    "ot_distance": transport_cost(x, y, sol, device),
                    "converged": sol.converged,
                }
            )
        out.sort(key=lambda r: r["ot_distance"])
        print_relevance(out, o.group_by)
        return out

    def fit(self, dataset, dist) -> Fitted:
        o = self.options
        pool_dim = column_dim(dataset, o.embedding_column, flag="--embedding-column")
        x, target_fp = self._read_target()
        check_dims(pool_dim, x.shape[1], column=o.embedding_column, pool=dataset.spec, target=o.target)
        if o.group_by:
            dataset.require(o.group_by, flag="--group-by")
        fitted = fit_on_main(dist, lambda: self._fit_main(dataset, x, dist))
        fitted.facts.update(target=o.target, target_fingerprint=target_fp, target_rows=len(x))
        conv = fitted.facts["convergence"]
        if not conv["converged"] and dist.is_main:
            warn(
                f"GOT-D: Sinkhorn stopped after {conv['iterations']} iterations with marginal error "
                f"{conv['marginal_error']:.2e} > --tol {o.tol:g}; the scores are usable but approximate "
                "(raise --max-iter, or use a larger --epsilon)"
            )
        return fitted

    # -- transform: the c-transform of the target potential, per shard ---------------------------
    def prepare(self, dist) -> None:
        import torch

        from delt_cli.scoring.gotd.sinkhorn import as_tensor

        dtype = getattr(torch, self.options.ot_dtype)
        st = self.fitted
        self._x = as_tensor(st.arrays["target"], dtype, dist.device)
        self._f = as_tensor(st.arrays["potential"], dtype, dist.device)
        self._device = dist.device
        if dist.is_main:
            how = "higher = more useful (away from the negative target)" if self.options.contrast else "lower = more useful"
            flag = "" if self.options.contrast else " --lowest"
            info(f"GOT-D: {how}; select with `delt select --by {self.columns[0]}{flag} --top-k N`")

    def transform(self, table: pa.Table) -> dict[str, pa.Array]:
        from delt_cli.scoring.gotd.sinkhorn import as_tensor, c_transform, calibrated_gradient

        o, facts = self.options, self.fitted.facts
        y = to_numpy(table.column(o.embedding_column), column=o.embedding_column, where="a pool shard")
        if y.shape[1] != self._x.shape[1] and len(y):
            raise DeltError(f"embedding dimensions differ: a pool shard has {y.shape[1]}, --target {o.target} has {self._x.shape[1]}")
        yt = as_tensor(y, self._x.dtype, self._device)
        g = c_transform(self._f, self._x, yt, facts["epsilon"], facts["log_b"]).double().cpu().numpy()
        grad = calibrated_gradient(g, facts["g_mean"], facts["pool_rows"])
        score, potential = self.columns
        return {score: pa.array(grad, type=pa.float64()), potential: pa.array(g, type=pa.float64())}

    def describe(self) -> dict:
        o = self.options
        return {
            "target": o.target,
            "embedding_column": o.embedding_column,
            "cost": "squared euclidean",
            "weights": "uniform",
            "score": "N/(N-1) * (g - mean(g)): LAVA-calibrated gradient of OT w.r.t. candidate mass",
            "prefer": "highest" if o.contrast else "lowest",
            "contrast": o.contrast,
            "pool_size": o.pool_size,
            "seed": o.seed,
            "ot_dtype": o.ot_dtype,
        }


def transport_cost(x: np.ndarray, y: np.ndarray, sol, device) -> float:
    """<P, C> of the entropic plan P_ij = exp((f_i + g_j - C_ij) / eps): the OT distance in cost units."""
    import torch

    from delt_cli.scoring.gotd.sinkhorn import as_tensor, cost_block, tile_size

    xt, yt = as_tensor(x, torch.float64, device), as_tensor(y, torch.float64, device)
    f, g = as_tensor(sol.f, torch.float64, device), as_tensor(sol.g, torch.float64, device)
    xx, total = (xt * xt).sum(1), 0.0
    block = tile_size(len(xt), 8)
    for s in range(0, len(yt), block):
        yb = yt[s : s + block]
        c = cost_block(xt, yb, xx, (yb * yb).sum(1))
        total += float((torch.exp((f[:, None] + g[None, s : s + block] - c) / sol.epsilon) * c).sum())
    return total


def print_relevance(rows: list[dict], column: str) -> None:
    """The domain-relevance table on stderr (nearest group first)."""
    from rich.table import Table

    from delt_cli.infra.console import console, is_main_process, is_quiet

    if is_quiet() or not is_main_process():
        return
    table = Table(title=f"GOT-D domain relevance (OT distance to the target, by {column}; nearest first)", title_justify="left")
    for name in ("group", "rows", "sample", "OT distance"):
        table.add_column(name, justify="left" if name == "group" else "right")
    for r in rows:
        table.add_row(str(r["group"]), f"{r['rows']:,}", f"{r['sample_rows']:,}", f"{r['ot_distance']:.4f}" + ("" if r["converged"] else " (not converged)"))
    console.print(table)
