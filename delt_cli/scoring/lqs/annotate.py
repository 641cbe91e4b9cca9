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

Steps 1-4 are the fit; its artifact holds the annotation (id + the five columns).
The transform then writes the columns lqs, pds, quality, learnability, lqs_z for
the proxy rows (matched by id) and null for every other row. The runner keeps the
fit (`delt fit`, or inside the output of `delt score`, so ``--resume`` after an
interruption during the shard writing does not solve again).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import polars as pl
import pyarrow as pa

from delt_cli.infra.console import progress
from delt_cli.dataset import open_dataset
from delt_cli.infra.errors import DeltError
from delt_cli.scoring.base import Fitted, Scorer
from delt_cli.scoring.options import ModelOptions, TargetOptions, default_of, option
from delt_cli.scoring.tokens import encode, length_batches, prefix_token_id, read_rows

COLUMNS = ["lqs", "pds", "quality", "learnability", "lqs_z"]


def zscore_clip(values: np.ndarray, clip: float = 3.0) -> np.ndarray:
    """(x - mean) / std (population std), clipped to [-clip, clip]; zeros when std is 0."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return values
    std = values.std()
    if not np.isfinite(std) or std == 0:
        return np.zeros_like(values)
    return np.clip((values - values.mean()) / std, -clip, clip)


@dataclass
class LQSOptions(ModelOptions, TargetOptions):
    max_length: int = default_of(ModelOptions, "max_length", 512)
    target_size: int = option(1024, "Use the first N non-empty target documents (0: all).")
    target_text_column: Optional[str] = option(None, "Text column of --target (default: --text-column).")
    proxy_size: int = option(4096, "Documents annotated (uniform sample, seeded); the others get null.")
    proxy_steps: int = option(100, "SGD steps T of the proxy trajectory.")
    proxy_batch_size: int = option(16, "Documents per SGD step.")
    proxy_lr: float = option(0.008, "SGD learning rate eta.")
    interval: int = option(10, "Score the proxy sample every N steps (t = 0, N, 2N, ... < T).")
    last_norm: str = option("next", "Denominator of the last annotated step: next (||g|| at step T, the paper) or one (the published code).")
    proxy_warmup_steps: int = option(0, "AdamW steps on the corpus before the SGD trajectory (for a proxy trained from scratch).")
    proxy_warmup_lr: float = option(1e-3, "AdamW learning rate of the warm-up.")
    per_sample: str = option("auto", "Per-sample gradient method: auto (hooks when supported), hooks, loop or vmap.", runtime=True)
    per_sample_batch: int = option(32, "Proxy documents per per-sample pass.", runtime=True)
    micro_batch: int = option(
        8,
        "Rows per forward/backward of the proxy (step and target gradients, Hessian-vector products, per-sample head gradients): bounds memory, not results.",
        runtime=True,
    )
    checkpoint_every: int = option(0, "Keep parameters every K steps and recompute the rest (0: ceil(sqrt(T))).", runtime=True)


class LQSScorer(Scorer):
    name = "lqs"
    title = "LQS"
    Options = LQSOptions
    global_fit = True
    columns = COLUMNS

    def validate(self) -> None:
        from delt_cli.scoring.lqs.persample import METHODS

        o = self.options
        if not o.model:
            raise DeltError("--method lqs needs --model (the proxy LM: a model directory, GGUF file or configs/models name)")
        if not o.target:
            raise DeltError("--method lqs needs --target (a dataset of target-domain documents)")
        for flag, value, low in (("--proxy-steps", o.proxy_steps, 1), ("--proxy-batch-size", o.proxy_batch_size, 1), ("--interval", o.interval, 1), ("--proxy-size", o.proxy_size, 1), ("--target-size", o.target_size, 0), ("--proxy-warmup-steps", o.proxy_warmup_steps, 0)):
            if value < low:
                raise DeltError(f"{flag} {value}: must be at least {low}")
        if not (o.proxy_lr > 0 and math.isfinite(o.proxy_lr)):
            raise DeltError(f"--proxy-lr {o.proxy_lr}: must be a positive number")
        if o.per_sample not in METHODS:
            raise DeltError(f"--per-sample {o.per_sample}: expected one of {', '.join(METHODS)}")
        if o.last_norm not in ("next", "one"):
            raise DeltError(f"--last-norm {o.last_norm}: expected 'next' or 'one'")

    @property
    def _target_text_column(self) -> str:
        return self.options.target_text_column or self.options.text_column

    def check(self, dataset) -> None:
        dataset.require(self.options.text_column, flag="--text-column")
        dataset.require(self.options.id_column, flag="--id-column")

    def references(self) -> dict:
        from delt_cli.scoring.perplexity import model_references

        return model_references(self.options, key="proxy_model")

    # -- the fit: the annotation ------------------------------------------------------------------
    def fit(self, dataset, dist) -> Fitted:
        target = self._open_target()
        fitted = self._annotate(dataset, target, dist)
        fitted.facts.update(self.references(), target_fingerprint=target.fingerprint)
        return fitted

    def _open_target(self):
        path = Path(str(self.options.target))
        if not path.exists() and not any(ch in str(self.options.target) for ch in "*?["):
            raise DeltError(f"--target {self.options.target}: no such file or directory")
        try:
            target = open_dataset(self.options.target, text_column=self._target_text_column)
        except DeltError as exc:
            raise DeltError(f"--target: {exc}") from exc
        target.require(self._target_text_column, flag="--target-text-column")
        if target.num_rows == 0:
            raise DeltError(f"--target {self.options.target}: the target set is empty")
        return target

    def _annotate(self, dataset, target, dist) -> Fitted:
        import torch

        from delt_cli.models.causal_lm import split_lm
        from delt_cli.models.loading import load_lm_with_tokenizer
        from delt_cli.scoring.lqs.costate import NonFinite, ProxyBatch, Reducer, Solver, SolverConfig
        from delt_cli.scoring.lqs.losses import pad_batch
        from delt_cli.scoring.lqs.persample import resolve_method

        # The trajectory, co-states and per-sample norms need float32 (the paper's setting) even on a GPU.
        dtype = "float32" if self.options.dtype in (None, "auto") else self.options.dtype
        model, tok = load_lm_with_tokenizer(
            self.options.model, self.options.tokenizer, dtype=dtype, device=dist.device, trust_remote_code=self.options.trust_remote_code, seed=self.options.seed
        )
        parts = split_lm(model)
        device = dist.device
        prefix = prefix_token_id(tok, self.options.prefix_token)
        pad = prefix if prefix is not None else 0

        def tokens(texts):
            return [ids[: self.options.max_length] for ids in encode(tok, texts, prefix=prefix)]

        def usable(ids) -> bool:
            return len(ids) >= 2

        # 1. rows ---------------------------------------------------------------------------
        n_rows = dataset.num_rows
        proxy_rows = np.sort(np.random.default_rng([self.options.seed, 1]).choice(n_rows, size=min(self.options.proxy_size, n_rows), replace=False))
        mine = np.arange(len(proxy_rows))[dist.rank :: dist.world]
        table = read_rows(dataset, proxy_rows[mine], [self.options.id_column, self.options.text_column])
        proxy_ids = table.column(self.options.id_column).to_pylist()
        proxy_tokens = tokens(table.column(self.options.text_column).to_pylist())
        keep = np.asarray([usable(t) for t in proxy_tokens], dtype=bool)
        forward_docs = self._stream(dataset, tokens, usable, self.options.proxy_steps * self.options.proxy_batch_size, stream=2)
        forward = [pad_batch(forward_docs[i * self.options.proxy_batch_size : (i + 1) * self.options.proxy_batch_size], pad, device) for i in range(self.options.proxy_steps)]
        target_docs = self._target_docs(target, tokens, usable)
        micro = max(1, min(self.options.proxy_batch_size, self.options.micro_batch))  # rows per target batch: bounds the logits held for a gradient
        target_batches = [pad_batch([target_docs[i] for i in b], pad, device) for b in length_batches([len(d) for d in target_docs], batch_tokens=micro * self.options.max_length, max_batch=micro)]
        my_target = target_batches[dist.rank :: dist.world]
        local = np.flatnonzero(keep)
        proxy_batches = []
        for b in length_batches([len(proxy_tokens[i]) for i in local], batch_tokens=self.options.per_sample_batch * self.options.max_length, max_batch=self.options.per_sample_batch):
            ids, lengths = pad_batch([proxy_tokens[local[i]] for i in b], pad, device)
            proxy_batches.append(ProxyBatch(index=local[b], ids=ids, lengths=lengths))

        # 2. optional warm-up ----------------------------------------------------------------
        if self.options.proxy_warmup_steps:
            warm_docs = self._stream(dataset, tokens, usable, self.options.proxy_warmup_steps * self.options.proxy_batch_size, stream=3)
            self._warmup(parts, [pad_batch(warm_docs[i * self.options.proxy_batch_size : (i + 1) * self.options.proxy_batch_size], pad, device) for i in range(self.options.proxy_warmup_steps)])

        # 3. solve ------------------------------------------------------------------------------
        method = resolve_method(self.options.per_sample, parts)
        cfg = SolverConfig(lr=self.options.proxy_lr, steps=self.options.proxy_steps, interval=self.options.interval, checkpoint_every=self.options.checkpoint_every, last_norm=self.options.last_norm, per_sample=method, chunk=self.options.micro_batch)
        n_annotated = len(cfg.annotated_steps()) + (1 if self.options.last_norm == "next" else 0)
        with progress() as bar:
            tasks = {
                "forward": bar.add_task("LQS forward (SGD)", total=self.options.proxy_steps),
                "backward": bar.add_task("LQS backward (co-state)", total=self.options.proxy_steps),
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
        empty = dist.gather_objects(int((~keep).sum()))
        summary = {"proxy sample": int(len(proxy_rows)), "annotated": frame.height, "proxy empty (null)": int(sum(empty)), "not in proxy (null)": int(n_rows - len(proxy_rows))}
        report = {
            "per_sample_method": method,
            "annotated_steps": cfg.annotated_steps(),
            "target_documents": len(target_docs),
            "target_loss_first_last": [res.target_loss[0], res.target_loss[-1]],
            "train_loss_first_last": [res.train_loss[0], res.train_loss[-1]],
            "reliability": {str(k): v for k, v in sorted(res.reliability.items())},
            "lqs_mean_std": [float(frame["lqs"].mean()), float(frame["lqs"].std(ddof=0))],
            "seconds": {k: round(v, 2) for k, v in res.seconds.items()},
            "summary": summary,
        }
        del solver, model, parts
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        return Fitted(tables={"annotation": frame.to_arrow()}, report=report)

    def _stream(self, dataset, tokens, usable, need: int, *, stream: int) -> list[np.ndarray]:
        """`need` usable documents in a seeded random order (repeating the corpus if it is smaller)."""
        rng = np.random.default_rng([self.options.seed, stream])
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
                texts = read_rows(dataset, take[order], [self.options.text_column]).column(self.options.text_column).to_pylist()
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
        limit = self.options.target_size or target.num_rows
        for _, table in target.iter_tables([self._target_text_column]):
            docs.extend(d for d in tokens(table.column(self._target_text_column).to_pylist()) if usable(d))
            if len(docs) >= limit:
                break
        docs = docs[:limit]
        if not docs:
            raise DeltError(f"--target {self.options.target}: no target document has a token to predict (all empty)")
        return docs

    def _warmup(self, parts, batches) -> None:
        import torch

        from delt_cli.scoring.lqs.losses import sample_losses

        params = [p for p in parts.model.parameters() if p.requires_grad]
        opt = torch.optim.AdamW(params, lr=self.options.proxy_warmup_lr, weight_decay=0.0)
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

    # -- the transform: the annotation joined by id -----------------------------------------------
    def prepare(self, dist) -> None:
        self._is_main = dist.is_main
        self._scores = pl.from_arrow(self.fitted.tables["annotation"])

    def transform(self, table: pa.Table) -> dict[str, pa.Array]:
        ids = pl.from_arrow(table.column(self.options.id_column)).alias("id").to_frame().with_row_index("_row")
        scores = self._scores.with_columns(pl.col("id").cast(ids.schema["id"]))
        joined = ids.join(scores, on="id", how="left").sort("_row")
        return {c: joined[c].cast(pl.Float64).to_arrow() for c in COLUMNS}

    def summary(self) -> dict:
        # The annotation is global: report it once, not once per process.
        return dict(self.fitted.report.get("summary", {})) if self.fitted is not None and self._is_main else {}

    def report(self) -> dict:
        return {k: v for k, v in super().report().items() if k != "summary"}

    def describe(self) -> dict:
        o = self.options
        return {
            "target": str(o.target),
            "target_size": o.target_size,
            "proxy_size": o.proxy_size,
            "proxy_steps": o.proxy_steps,
            "proxy_batch_size": o.proxy_batch_size,
            "proxy_lr": o.proxy_lr,
            "interval": o.interval,
            "warmup_steps": o.proxy_warmup_steps,
            "warmup_lr": o.proxy_warmup_lr,
            "last_norm": o.last_norm,
            "max_length": o.max_length,
            "prefix_token": o.prefix_token,
            "optimizer": "SGD (no momentum, no weight decay, no clipping)",
            "dtype": "float32" if o.dtype in (None, "auto") else o.dtype,
            "normalisation": "lqs_z = clip((lqs - mean) / std, -3, 3) over the annotated proxy sample",
        }
