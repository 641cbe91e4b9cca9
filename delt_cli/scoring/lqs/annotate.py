"""`--method lqs`: annotate a proxy sample of the corpus with LQS (and PDS) against a target set.

Steps (all in `prepare`, before any shard is written):

1. Pick rows (seeded, independent of the number of processes): the proxy sample
   (``--proxy-size`` rows uniformly without replacement), the forward stream
   (``--proxy-steps`` x ``--proxy-batch-size`` non-empty documents in a seeded
   random order, repeated if the corpus is smaller) and, optionally, a warm-up
   stream. The target set is the first ``--target-size`` non-empty documents of
   ``--target``.
2. Load the proxy LM; optionally warm it up with AdamW (``--proxy-warmup-steps``).
3. Run the solver (`costate.Solver`): SGD trajectory, co-state backwards,
   per-sample terms at the annotated steps. With several processes, each takes
   every world-th proxy sample and target batch; target gradients are summed
   over processes; every process runs the (small) forward batches itself.
4. Normalise: lqs_z = clip((lqs - mean) / std, -3, 3) over the annotated proxy sample.

`score_table` then writes the columns lqs, pds, quality, learnability, lqs_z for
the proxy rows (matched by id) and null for every other row. The finished
annotation is cached in the output directory (``.lqs-annotation.cache``, written
with the first shard), so a ``--resume`` after an interruption during the shard
writing does not solve again (an interruption before that solves again).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Optional

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq

from delt_cli.console import info, progress
from delt_cli.dataset import open_dataset
from delt_cli.errors import DeltError
from delt_cli.scoring.tokens import encode, length_batches, prefix_token_id, read_rows

COLUMNS = ["lqs", "pds", "quality", "learnability", "lqs_z"]
CACHE_NAME = ".lqs-annotation.cache"


def zscore_clip(values: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """(x - mean) / std (population std), clipped to [-clip, clip]; zeros when std is 0."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    std = values.std()
    if not np.isfinite(std) or std == 0:
        return np.zeros_like(values)
    return np.clip((values - values.mean()) / std, -clip, clip)


class LQSScorer:
    name = "lqs"
    columns = COLUMNS

    def __init__(
        self,
        *,
        model: Optional[str],
        target: Optional[str],
        tokenizer: Optional[str] = None,
        text_column: str = "text",
        id_column: str = "id",
        target_text_column: Optional[str] = None,
        target_size: int = 1024,
        proxy_size: int = 4096,
        steps: int = 100,
        batch_size: int = 16,
        lr: float = 0.008,
        interval: int = 10,
        warmup_steps: int = 0,
        warmup_lr: float = 1e-3,
        per_sample: str = "auto",
        per_sample_batch: int = 32,
        chunk: int = 8,
        checkpoint_every: int = 0,
        last_norm: str = "next",
        max_length: int = 512,
        prefix_token: str = "bos",
        dtype: str = "auto",
        trust_remote_code: bool = False,
        seed: int = 0,
        output: Optional[Path] = None,
        resume: bool = False,
    ):
        self.model_spec = model
        self.tokenizer_spec = tokenizer
        self.target_spec = target
        self.text_column = text_column
        self.id_column = id_column
        self.target_text_column = target_text_column or text_column
        self.target_size = target_size
        self.proxy_size = proxy_size
        self.steps = steps
        self.batch_size = batch_size
        self.lr = lr
        self.interval = interval
        self.warmup_steps = warmup_steps
        self.warmup_lr = warmup_lr
        self.per_sample = per_sample
        self.per_sample_batch = per_sample_batch
        self.chunk = chunk
        self.checkpoint_every = checkpoint_every
        self.last_norm = last_norm
        self.max_length = max_length
        self.prefix_token = prefix_token
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self.seed = seed
        self.output = Path(output) if output is not None else None
        self.resume = resume
        self.scores: Optional[pl.DataFrame] = None
        self._report: dict = {}
        self._summary: dict = {}
        self._fingerprints: dict = {}
        self._cache_pending = False
        self._is_main = True

    # -- validation ---------------------------------------------------------------------------
    def _check_flags(self) -> None:
        from delt_cli.scoring.lqs.persample import METHODS

        if not self.model_spec:
            raise DeltError("--method lqs needs --model (the proxy LM: a model directory, GGUF file or configs/models name)")
        if not self.target_spec:
            raise DeltError("--method lqs needs --target (a dataset of target-domain documents)")
        for flag, value, low in (("--proxy-steps", self.steps, 1), ("--proxy-batch-size", self.batch_size, 1), ("--interval", self.interval, 1), ("--proxy-size", self.proxy_size, 1), ("--target-size", self.target_size, 0), ("--proxy-warmup-steps", self.warmup_steps, 0)):
            if value < low:
                raise DeltError(f"{flag} {value}: must be at least {low}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise DeltError(f"--proxy-lr {self.lr}: must be a positive number")
        if self.per_sample not in METHODS:
            raise DeltError(f"--per-sample {self.per_sample}: expected one of {', '.join(METHODS)}")
        if self.last_norm not in ("next", "one"):
            raise DeltError(f"--last-norm {self.last_norm}: expected 'next' or 'one'")

    # -- the annotation -------------------------------------------------------------------------
    def prepare(self, dataset, dist) -> None:
        self._check_flags()
        self._is_main = dist.is_main
        dataset.require(self.text_column, flag="--text-column")
        dataset.require(self.id_column, flag="--id-column")
        target = self._open_target()
        self._fingerprints = {"target": target.fingerprint, "dataset": dataset.fingerprint}
        cached = self._load_cache()
        if cached is not None:
            self.scores = cached
            info(f"LQS annotation reused from {self.output / CACHE_NAME} (--resume)")
            return
        self._annotate(dataset, target, dist)
        # Saved with the first shard (the output directory must stay empty until the runner has checked it).
        self._cache_pending = dist.is_main

    def _open_target(self):
        path = Path(str(self.target_spec))
        if not path.exists() and not any(ch in str(self.target_spec) for ch in "*?["):
            raise DeltError(f"--target {self.target_spec}: no such file or directory")
        try:
            target = open_dataset(self.target_spec, text_column=self.target_text_column)
        except DeltError as exc:
            raise DeltError(f"--target: {exc}") from exc
        target.require(self.target_text_column, flag="--target-text-column")
        if target.num_rows == 0:
            raise DeltError(f"--target {self.target_spec}: the target set is empty")
        return target

    def _annotate(self, dataset, target, dist) -> None:
        import torch

        from delt_cli.models.causal_lm import split_lm
        from delt_cli.models.loading import load_lm_with_tokenizer
        from delt_cli.scoring.lqs.costate import NonFinite, ProxyBatch, Reducer, Solver, SolverConfig
        from delt_cli.scoring.lqs.losses import pad_batch
        from delt_cli.scoring.lqs.persample import resolve_method

        # The trajectory, co-states and per-sample norms need float32 (the paper's setting) even on a GPU.
        dtype = "float32" if self.dtype in (None, "auto") else self.dtype
        model, tok = load_lm_with_tokenizer(
            self.model_spec, self.tokenizer_spec, dtype=dtype, device=dist.device, trust_remote_code=self.trust_remote_code, seed=self.seed
        )
        parts = split_lm(model)
        device = dist.device
        prefix = prefix_token_id(tok, self.prefix_token)
        pad = prefix if prefix is not None else 0

        def tokens(texts):
            return [ids[: self.max_length] for ids in encode(tok, texts, prefix=prefix)]

        def usable(ids) -> bool:
            return len(ids) >= 2

        # 1. rows ---------------------------------------------------------------------------
        n_rows = dataset.num_rows
        proxy_rows = np.sort(np.random.default_rng([self.seed, 1]).choice(n_rows, size=min(self.proxy_size, n_rows), replace=False))
        mine = np.arange(len(proxy_rows))[dist.rank :: dist.world]
        table = read_rows(dataset, proxy_rows[mine], [self.id_column, self.text_column])
        proxy_ids = table.column(self.id_column).to_pylist()
        proxy_tokens = tokens(table.column(self.text_column).to_pylist())
        keep = np.asarray([usable(t) for t in proxy_tokens], dtype=bool)
        forward_docs = self._stream(dataset, tokens, usable, self.steps * self.batch_size, stream=2)
        forward = [pad_batch(forward_docs[i * self.batch_size : (i + 1) * self.batch_size], pad, device) for i in range(self.steps)]
        target_docs = self._target_docs(target, tokens, usable)
        micro = max(1, min(self.batch_size, self.chunk))  # rows per target batch: bounds the logits held for a gradient
        target_batches = [pad_batch([target_docs[i] for i in b], pad, device) for b in length_batches([len(d) for d in target_docs], batch_tokens=micro * self.max_length, max_batch=micro)]
        my_target = target_batches[dist.rank :: dist.world]
        local = np.flatnonzero(keep)
        proxy_batches = []
        for b in length_batches([len(proxy_tokens[i]) for i in local], batch_tokens=self.per_sample_batch * self.max_length, max_batch=self.per_sample_batch):
            ids, lengths = pad_batch([proxy_tokens[local[i]] for i in b], pad, device)
            proxy_batches.append(ProxyBatch(index=local[b], ids=ids, lengths=lengths))

        # 2. optional warm-up ----------------------------------------------------------------
        if self.warmup_steps:
            warm_docs = self._stream(dataset, tokens, usable, self.warmup_steps * self.batch_size, stream=3)
            self._warmup(parts, [pad_batch(warm_docs[i * self.batch_size : (i + 1) * self.batch_size], pad, device) for i in range(self.warmup_steps)])

        # 3. solve ------------------------------------------------------------------------------
        method = resolve_method(self.per_sample, parts)
        cfg = SolverConfig(lr=self.lr, steps=self.steps, interval=self.interval, checkpoint_every=self.checkpoint_every, last_norm=self.last_norm, per_sample=method, chunk=self.chunk)
        n_annotated = len(cfg.annotated_steps()) + (1 if self.last_norm == "next" else 0)
        with progress() as bar:
            tasks = {
                "forward": bar.add_task("LQS forward (SGD)", total=self.steps),
                "backward": bar.add_task("LQS backward (co-state)", total=self.steps),
                "samples": bar.add_task("LQS per-sample", total=n_annotated * int(keep.sum())),
            }
            solver = Solver(parts, forward, my_target, cfg, reducer=Reducer(dist), on_step=lambda phase, n: bar.advance(tasks[phase], n))
            try:
                res = solver.run(proxy_batches, len(proxy_tokens))
            except NonFinite as exc:
                if exc.sample is not None:
                    raise DeltError(f"{exc} for proxy document id {proxy_ids[exc.sample]!r}") from exc
                raise

        # 4. gather and normalise --------------------------------------------------------------
        local_part = {
            "id": [proxy_ids[i] for i in local],
            **{c: getattr(res, c)[local] for c in ("lqs", "pds", "quality", "learnability")},
        }
        parts_all = dist.gather_objects(local_part)
        frames = [pl.DataFrame({"id": p["id"], **{c: np.asarray(p[c], dtype=np.float64) for c in ("lqs", "pds", "quality", "learnability")}}) for p in parts_all if p["id"]]
        if not frames:
            raise DeltError(f"{dataset.spec}: no document of the proxy sample has a token to predict")
        frame = pl.concat(frames)
        frame = frame.with_columns(pl.Series("lqs_z", zscore_clip(frame["lqs"].to_numpy())))
        self.scores = frame
        empty = dist.gather_objects(int((~keep).sum()))
        self._summary = {"proxy sample": int(len(proxy_rows)), "annotated": frame.height, "proxy empty (null)": int(sum(empty)), "not in proxy (null)": int(n_rows - len(proxy_rows))}
        self._report = {
            "per_sample_method": method,
            "annotated_steps": cfg.annotated_steps(),
            "target_documents": len(target_docs),
            "target_loss_first_last": [res.target_loss[0], res.target_loss[-1]],
            "train_loss_first_last": [res.train_loss[0], res.train_loss[-1]],
            "reliability": {str(k): v for k, v in sorted(res.reliability.items())},
            "lqs_mean_std": [float(frame["lqs"].mean()), float(frame["lqs"].std(ddof=0))],
            "seconds": {k: round(v, 2) for k, v in res.seconds.items()},
        }
        del solver, model, parts
        if torch.cuda.is_available():
            torch.cuda.empty_cache()

    def _stream(self, dataset, tokens, usable, need: int, *, stream: int) -> list[np.ndarray]:
        """`need` usable documents in a seeded random order (repeating the corpus if it is smaller)."""
        rng = np.random.default_rng([self.seed, stream])
        out: list[np.ndarray] = []
        n_rows = dataset.num_rows
        while len(out) < need:
            perm = rng.permutation(n_rows)
            pos = 0
            found_any = False
            while pos < n_rows and len(out) < need:
                take = perm[pos : pos + max(2 * (need - len(out)), 64)]
                pos += len(take)
                order = np.argsort(take, kind="stable")
                texts = read_rows(dataset, take[order], [self.text_column]).column(self.text_column).to_pylist()
                by_row = dict(zip(take[order].tolist(), tokens(texts)))
                for r in take.tolist():
                    ids = by_row[r]
                    if usable(ids):
                        found_any = True
                        out.append(ids)
                        if len(out) == need:
                            break
            if not found_any:
                raise DeltError(f"{dataset.spec}: no document with at least one token to predict; LQS cannot train the proxy")
        return out

    def _target_docs(self, target, tokens, usable) -> list[np.ndarray]:
        docs: list[np.ndarray] = []
        limit = self.target_size or target.num_rows
        for _, table in target.iter_tables([self.target_text_column]):
            docs.extend(d for d in tokens(table.column(self.target_text_column).to_pylist()) if usable(d))
            if len(docs) >= limit:
                break
        docs = docs[:limit]
        if not docs:
            raise DeltError(f"--target {self.target_spec}: no target document has a token to predict (all empty)")
        return docs

    def _warmup(self, parts, batches) -> None:
        import torch

        from delt_cli.scoring.lqs.losses import sample_losses

        params = [p for p in parts.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.warmup_lr, weight_decay=0.0)
        with progress() as bar:
            task = bar.add_task("LQS proxy warm-up (AdamW)", total=len(batches))
            for ids, lengths in batches:
                opt.zero_grad(set_to_none=True)
                loss = sample_losses(parts, ids, lengths).mean()
                if not torch.isfinite(loss):
                    raise DeltError("LQS proxy warm-up: non-finite loss (try a smaller --proxy-warmup-lr)")
                loss.backward()
                opt.step()
                bar.advance(task)
        opt.zero_grad(set_to_none=True)

    # -- cache -------------------------------------------------------------------------------
    def _cache_key(self) -> str:
        payload = json.dumps({"provenance": self.provenance(), "inputs": self._fingerprints}, sort_keys=True, default=str)
        return hashlib.sha256(payload.encode()).hexdigest()[:32]

    def _load_cache(self) -> Optional[pl.DataFrame]:
        if not (self.resume and self.output is not None):
            return None
        path = self.output / CACHE_NAME
        if not path.is_file():
            return None
        try:
            table = pq.read_table(path)
        except (pa.ArrowException, OSError):
            return None
        meta = table.schema.metadata or {}
        if meta.get(b"delt-lqs-key", b"").decode() != self._cache_key():
            return None
        self._report = json.loads(meta.get(b"delt-lqs-report", b"{}"))
        self._summary = json.loads(meta.get(b"delt-lqs-summary", b"{}"))
        return pl.from_arrow(table)

    def _save_cache(self) -> None:
        if self.output is None or self.scores is None:
            return
        self.output.mkdir(parents=True, exist_ok=True)
        table = self.scores.to_arrow()
        table = table.replace_schema_metadata(
            {b"delt-lqs-key": self._cache_key().encode(), b"delt-lqs-report": json.dumps(self._report).encode(), b"delt-lqs-summary": json.dumps(self._summary).encode()}
        )
        tmp = self.output / f".{CACHE_NAME}.{os.getpid()}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, self.output / CACHE_NAME)

    # -- scorer protocol ---------------------------------------------------------------------
    def score_table(self, table: pa.Table) -> dict[str, pa.Array]:
        assert self.scores is not None
        if self._cache_pending:
            self._save_cache()
            self._cache_pending = False
        ids = pl.from_arrow(table.column(self.id_column)).alias("id").to_frame().with_row_index("_row")
        scores = self.scores.with_columns(pl.col("id").cast(ids.schema["id"]))
        joined = ids.join(scores, on="id", how="left").sort("_row")
        return {c: joined[c].cast(pl.Float64).to_arrow() for c in COLUMNS}

    def summary(self) -> dict:
        # The annotation is global (gathered): report it once, not once per process.
        return dict(self._summary) if self.scores is not None and self._is_main else {}

    def report(self) -> dict:
        return dict(self._report)

    def provenance(self) -> dict:
        from delt_cli.models.loading import fingerprint

        return {
            "proxy_model": str(self.model_spec),
            "proxy_model_fingerprint": fingerprint(self.model_spec, seed=self.seed),
            "tokenizer": str(self.tokenizer_spec or self.model_spec),
            "target": str(self.target_spec),
            "target_fingerprint": self._fingerprints.get("target"),
            "target_size": self.target_size,
            "proxy_size": self.proxy_size,
            "proxy_steps": self.steps,
            "proxy_batch_size": self.batch_size,
            "proxy_lr": self.lr,
            "interval": self.interval,
            "warmup_steps": self.warmup_steps,
            "warmup_lr": self.warmup_lr,
            "last_norm": self.last_norm,
            "max_length": self.max_length,
            "prefix_token": self.prefix_token,
            "optimizer": "SGD (no momentum, no weight decay, no clipping)",
            "dtype": "float32" if self.dtype in (None, "auto") else self.dtype,
            "normalisation": "lqs_z = clip((lqs - mean) / std, -3, 3) over the annotated proxy sample",
        }
