"""GOT-D (Kang et al., ICLR 2024): score candidates by the gradient of OT(pool, target) w.r.t. their mass.

``prepare`` solves one entropic OT problem between the target embeddings and a
uniform seeded sample of the pool (the whole pool when it is small enough), on
the main process, and broadcasts the target potential f. ``score_table`` then
gives every candidate y_j of a shard the c-transform of f,

    g_j = eps log b - eps LSE_i((f_i - ||x_i - y_j||^2) / eps),

which equals the solve's candidate potential for sampled rows and puts all rows,
sampled or not, on one scale. The score is LAVA's calibrated gradient
N/(N-1) (g_j - mean g) (N = pool rows, mean over the solve's sample); it ranks
exactly like g. Lower = more useful (`delt select --by gotd --lowest`); with
``contrast`` the target is a negative target and higher = more useful.
See docs/gotd.md.
"""

from __future__ import annotations

import math
import re
from typing import Optional

import numpy as np
import pyarrow as pa

from delt_cli.console import info, warn
from delt_cli.dataset import open_dataset
from delt_cli.errors import DeltError, UsageError
from delt_cli.scoring.pool import fit_on_main, iter_sample, sample_rows
from delt_cli.sinkhorn import as_tensor, c_transform, calibrated_gradient, median_cost, sinkhorn
from delt_cli.vectors import check_dims, column_dim, to_numpy

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


class GOTDScorer:
    """Columns: the calibrated OT gradient (the score) and the raw candidate potential g."""

    name = "gotd"

    def __init__(
        self,
        *,
        target: Optional[str],
        embedding_column: str = "emb",
        epsilon: Optional[float] = None,
        epsilon_relative: Optional[float] = None,
        pool_size: Optional[int] = 50_000,
        max_iter: int = 2000,
        tol: float = 1e-4,
        max_memory: str | int = "2GB",
        contrast: bool = False,
        column: Optional[str] = None,
        seed: int = 0,
        dtype: str = "float32",
    ):
        if not target:
            raise UsageError("--method gotd needs --target TARGET (a dataset with the same embedding column, made by `delt embed`)")
        if epsilon is not None and epsilon_relative is not None:
            raise UsageError("give at most one of --epsilon and --epsilon-relative")
        for flag, value in (("--epsilon", epsilon), ("--epsilon-relative", epsilon_relative), ("--tol", tol)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise UsageError(f"{flag} {value}: must be a positive number")
        if max_iter < 1:
            raise UsageError(f"--max-iter {max_iter}: must be >= 1")
        if pool_size is not None and pool_size < 1:
            raise UsageError(f"--pool-size {pool_size}: must be >= 1")
        if dtype not in DTYPES:
            raise UsageError(f"--ot-dtype {dtype}: expected one of {', '.join(DTYPES)}")
        self.target = str(target)
        self.embedding_column = embedding_column
        self.epsilon_abs = epsilon
        self.epsilon_relative = epsilon_relative
        self.pool_size = pool_size
        self.max_iter = max_iter
        self.tol = tol
        self.max_memory = parse_bytes(max_memory)
        self.contrast = contrast
        self.seed = seed
        self.dtype = dtype
        base = column or ("gotd_contrast" if contrast else "gotd")
        self.columns = [base, f"{base}_potential"]
        self._state: Optional[dict] = None

    # -- global step ---------------------------------------------------------------
    def _read_target(self) -> tuple[np.ndarray, str]:
        target = open_dataset(self.target)
        column_dim(target, self.embedding_column, flag="--embedding-column")
        x = to_numpy(target.read_column(self.embedding_column), column=self.embedding_column, where=f"--target {self.target}")
        if len(x) < 2:
            raise DeltError(f"--target {self.target} has {len(x)} row(s); GOT-D needs at least 2 target embeddings")
        return x, target.fingerprint

    def _solve(self, dataset, x: np.ndarray, dist) -> dict:
        """Sample the pool, solve OT on the sample, return what scoring needs (main process)."""
        import torch

        rows = sample_rows(dataset.num_rows, self.pool_size, self.seed)
        y = np.empty((dataset.num_rows if rows is None else len(rows), x.shape[1]), dtype=np.float32)
        filled = 0
        for shard, table, local in iter_sample(dataset, [self.embedding_column], rows):
            part = to_numpy(table.column(self.embedding_column), column=self.embedding_column, where=str(shard.path))
            if part.shape[1] != x.shape[1] and len(part):
                check_dims(part.shape[1], x.shape[1], column=self.embedding_column, pool=str(shard.path), target=self.target)
            y[filled : filled + len(local)] = part[local]
            filled += len(local)
        del part, table
        pa.default_memory_pool().release_unused()  # the shards' buffers: gone before the kernel is allocated
        if len(y) < 2:
            raise DeltError(f"{dataset.spec} has {len(y)} row(s); GOT-D needs at least 2 candidates")
        torch_dtype = getattr(torch, self.dtype)
        if self.epsilon_relative is not None:
            med = median_cost(as_tensor(x, torch_dtype, dist.device), as_tensor(y, torch_dtype, dist.device))
            if not med > 0:
                raise DeltError(f"--epsilon-relative: the median cost between --target and the pool is {med}; give --epsilon instead")
            epsilon, eps_rule = self.epsilon_relative * med, {"epsilon_relative": self.epsilon_relative, "median_cost": med}
        else:
            epsilon = self.epsilon_abs if self.epsilon_abs is not None else DEFAULT_EPSILON
            eps_rule = {"epsilon_absolute": epsilon}
        info(f"GOT-D: solving OT between {len(x):,} target and {len(y):,} pool embeddings ({x.shape[1]}-d, epsilon {epsilon:.4g})")
        sol = sinkhorn(x, y, epsilon=epsilon, tol=self.tol, max_iter=self.max_iter, momentum=MOMENTUM, max_memory=self.max_memory, dtype=torch_dtype, device=dist.device)
        if not (np.isfinite(sol.f).all() and np.isfinite(sol.g).all() and math.isfinite(sol.marginal_error)):
            raise DeltError(
                f"GOT-D: the Sinkhorn solve diverged (non-finite potentials or marginals) with epsilon {epsilon:.4g}; "
                "use a larger --epsilon or --epsilon-relative, or --ot-dtype float64"
            )
        info(f"GOT-D: {sol.iterations} iteration(s), marginal error {sol.marginal_error:.2e} ({sol.mode} cost, {sol.seconds:.1f}s)")
        return {
            "f": sol.f,
            "epsilon": float(epsilon),
            "log_b": -math.log(len(y)),
            "g_mean": float(sol.g.mean()),
            "sample_rows": int(len(y)),
            "convergence": {k: v for k, v in sol.summary().items() if k != "solve_seconds"},
            "epsilon_rule": eps_rule,
        }

    def prepare(self, dataset, dist) -> None:
        pool_dim = column_dim(dataset, self.embedding_column, flag="--embedding-column")
        x, target_fp = self._read_target()
        check_dims(pool_dim, x.shape[1], column=self.embedding_column, pool=dataset.spec, target=self.target)
        state = fit_on_main(dist, lambda: self._solve(dataset, x, dist))
        conv = state["convergence"]
        if not conv["converged"] and dist.is_main:
            warn(
                f"GOT-D: Sinkhorn stopped after {conv['iterations']} iterations with marginal error "
                f"{conv['marginal_error']:.2e} > --tol {self.tol:g}; the scores are usable but approximate "
                "(raise --max-iter, or use a larger --epsilon)"
            )
        import torch

        torch_dtype = getattr(torch, self.dtype)
        state["x"] = as_tensor(x, torch_dtype, dist.device)
        state["f_t"] = as_tensor(state["f"], torch_dtype, dist.device)
        state["pool_rows"] = dataset.num_rows
        state["target_fingerprint"] = target_fp
        state["target_rows"] = len(x)
        state["device"] = dist.device
        self._state = state
        if dist.is_main:
            how = "higher = more useful (away from the negative target)" if self.contrast else "lower = more useful"
            flag = "" if self.contrast else " --lowest"
            info(f"GOT-D: {how}; select with `delt select --by {self.columns[0]}{flag} --top-k N`")

    # -- per shard -----------------------------------------------------------------
    def score_table(self, table: pa.Table) -> dict[str, pa.Array]:
        st = self._state
        assert st is not None, "prepare() must run before score_table()"
        y = to_numpy(table.column(self.embedding_column), column=self.embedding_column, where="a pool shard")
        if y.shape[1] != st["x"].shape[1] and len(y):
            raise DeltError(f"embedding dimensions differ: a pool shard has {y.shape[1]}, --target {self.target} has {st['x'].shape[1]}")
        yt = as_tensor(y, st["x"].dtype, st["device"])
        g = c_transform(st["f_t"], st["x"], yt, st["epsilon"], st["log_b"]).double().cpu().numpy()
        grad = calibrated_gradient(g, st["g_mean"], st["pool_rows"])
        return {self.columns[0]: pa.array(grad, type=pa.float64()), self.columns[1]: pa.array(g, type=pa.float64())}

    def provenance(self) -> dict:
        out = {
            "target": self.target,
            "embedding_column": self.embedding_column,
            "cost": "squared euclidean",
            "weights": "uniform",
            "score": "N/(N-1) * (g - mean(g)): LAVA-calibrated gradient of OT w.r.t. candidate mass",
            "prefer": "highest" if self.contrast else "lowest",
            "contrast": self.contrast,
            "pool_size": self.pool_size,
            "seed": self.seed,
            "ot_dtype": self.dtype,
        }
        if self._state is not None:
            st = self._state
            out.update(
                target_fingerprint=st["target_fingerprint"],
                target_rows=st["target_rows"],
                pool_rows=st["pool_rows"],
                sample_rows=st["sample_rows"],
                epsilon=st["epsilon"],
                **st["epsilon_rule"],
                g_mean=st["g_mean"],
                convergence=st["convergence"],
            )
        return out
