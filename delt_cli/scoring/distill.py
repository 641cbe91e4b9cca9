"""`delt distill`: fit a small scorer (encoder + mean pooling + linear head) to annotated scores.

Training rows are those with a finite value in ``--column`` (e.g. ``lqs_z`` from
``delt score --method lqs``) and a non-empty text. A seeded permutation puts the
first ``--heldout`` fraction aside; the rest trains the scorer with MSE:

* default: the whole model is fine-tuned (AdamW, lr 1e-4, weight decay 0.01,
  10 warm-up steps then cosine decay to 1e-7, gradient clipping 1.0, DELT's
  scorer recipe); after every epoch the held-out Spearman is measured and the
  best epoch is kept.
* ``--freeze-encoder``: the encoder is not trained; pooled embeddings are
  computed once and the head is a ridge regression (closed form), its
  regularisation picked by held-out Spearman among a few values. Minutes
  instead of hours on a CPU.

Held-out Spearman and Pearson correlations between predicted and annotated
scores go into scorer.json and the manifest.
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Optional

import numpy as np
import polars as pl

from delt_cli.infra.console import info, progress
from delt_cli.dataset import RunInfo, StagedOutput, open_dataset
from delt_cli.dataset.provenance import MANIFEST_NAME
from delt_cli.infra.errors import DeltError
from delt_cli.infra.guard import foreign_except


MIN_ROWS = 10  # labelled rows a distillation needs
MIN_HELDOUT = 3  # rows held out at least, so that the held-out correlations are defined

def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties)."""
    ra = pl.Series(np.asarray(a, dtype=np.float64)).rank("average").to_numpy()
    rb = pl.Series(np.asarray(b, dtype=np.float64)).rank("average").to_numpy()
    return pearson(ra, rb)


def pearson(a: np.ndarray, b: np.ndarray) -> float:
    a = np.asarray(a, dtype=np.float64) - np.mean(a)
    b = np.asarray(b, dtype=np.float64) - np.mean(b)
    denom = math.sqrt(float((a * a).sum() * (b * b).sum()))
    return float((a * b).sum() / denom) if denom > 0 else 0.0


def load_labelled(input, *, column: str, text_column: str, id_column: str):
    """(texts, targets) of rows with a finite `column` value and a non-empty text, in dataset order."""
    ds = open_dataset(input, id_column=id_column, text_column=text_column)
    ds.require(text_column, flag="--text-column")
    ds.require_numeric(column, flag="--column")
    texts: list[str] = []
    values: list[float] = []
    for _, table in ds.iter_tables([text_column, column]):
        frame = pl.from_arrow(table).filter(pl.col(column).is_not_null() & pl.col(column).cast(pl.Float64).is_finite() & (pl.col(text_column).str.len_chars() > 0))
        texts.extend(frame[text_column].to_list())
        values.extend(frame[column].cast(pl.Float64).to_list())
    if len(texts) < MIN_ROWS:
        raise DeltError(f"--column '{column}' in {ds.spec}: only {len(texts)} row(s) with a value and a text; need at least {MIN_ROWS} to train and hold out")
    return ds, texts, np.asarray(values)


def _batches(lengths: np.ndarray, batch_size: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Random batches with similar lengths: shuffle, sort windows of 32 batches by length, cut, shuffle batches."""
    order = rng.permutation(len(lengths))
    window = batch_size * 32
    out = []
    for i in range(0, len(order), window):
        w = order[i : i + window]
        w = w[np.argsort(lengths[w], kind="stable")]
        out.extend(w[j : j + batch_size] for j in range(0, len(w), batch_size))
    return [out[k] for k in rng.permutation(len(out))]


def distill(
    input,
    output: Path,
    *,
    column: str = "lqs_z",
    encoder: Optional[str] = None,
    text_column: str = "text",
    id_column: str = "id",
    max_length: int = 256,
    epochs: int = 5,
    lr: float = 1e-4,
    batch_size: int = 32,
    heldout: float = 0.1,
    freeze_encoder: bool = False,
    dtype: str = "auto",
    seed: int = 0,
    run: Optional[RunInfo] = None,
    overwrite: bool = False,
    resume: bool = False,
) -> dict:
    import torch

    from delt_cli.infra.distributed import get_dist
    from delt_cli.models.loading import fingerprint, load_encoder
    from delt_cli.scoring.distilled import CONFIG_NAME, ENCODER_DIR, HEAD_NAME, ScorerModel, new_head

    if not 0 < heldout < 1:
        raise DeltError(f"--heldout {heldout}: must be between 0 and 1")
    if epochs < 1 or batch_size < 1 or max_length < 2:
        raise DeltError("--epochs, --batch-size must be >= 1 and --max-length >= 2")
    if encoder is None:
        from delt_cli.infra.assets import minilm_dir

        encoder = str(minilm_dir())
    run = run or RunInfo(command="distill", args={"column": column})
    ds, texts, y = load_labelled(input, column=column, text_column=text_column, id_column=id_column)
    started = time.time()
    scorer_files = foreign_except(ENCODER_DIR, HEAD_NAME, CONFIG_NAME, MANIFEST_NAME)
    with StagedOutput(output, [ds], run=run, overwrite=overwrite, resume=resume, foreign=scorer_files) as stage:
        if stage.finished:
            return {}
        device = get_dist().device
        enc, tok = load_encoder(encoder, dtype=dtype, device=device, flag="--encoder")
        limit = getattr(enc.config, "max_position_embeddings", None) or max_length
        max_length = int(min(max_length, limit))
        torch.manual_seed(seed)
        head = new_head(enc.config.hidden_size).to(device)
        config = {
            "column": column,
            "encoder": str(encoder),
            "encoder_fingerprint": fingerprint(encoder),
            "pooling": "mean over real tokens of the last hidden states",
            "max_length": max_length,
            "target": f"MSE to '{column}'",
        }
        model = ScorerModel(enc, tok, head, config)
        ids = model.encode(texts)
        lengths = np.asarray([len(x) for x in ids])
        rng = np.random.default_rng(seed)
        perm = rng.permutation(len(texts))
        # at least MIN_HELDOUT rows: a correlation over 1 row is undefined (it read 0.000), and the
        # best epoch is chosen by it
        n_val = max(MIN_HELDOUT, int(round(len(texts) * heldout)))
        val, train = perm[:n_val], perm[n_val:]
        info(f"distilling '{column}' into {Path(encoder).name}: {len(train):,} training rows, {len(val):,} held out")
        if freeze_encoder:
            metrics = _fit_ridge(model, ids, y, train, val, device)
        else:
            metrics = _fine_tune(model, ids, lengths, y, train, val, device, epochs=epochs, lr=lr, batch_size=batch_size, rng=rng)
        config.update(metrics)
        config.update(
            {
                "train_rows": int(len(train)),
                "heldout_rows": int(len(val)),
                "freeze_encoder": freeze_encoder,
                "epochs": epochs,
                "lr": lr,
                "batch_size": batch_size,
                "seed": seed,
                "target_mean_std": [float(y.mean()), float(y.std())],
            }
        )
        model.encoder.eval()
        model.save(stage.path)
        stage.finish(extra={"scorer": config, "elapsed_s": round(time.time() - started, 1)})
    info(f"held-out Spearman {config['heldout_spearman']:.3f}, Pearson {config['heldout_pearson']:.3f} ({len(val)} rows)")
    return config


def _predict(model, ids, rows, device, batch_size: int = 64) -> np.ndarray:
    import torch

    out = np.zeros(len(rows))
    order = np.argsort([len(ids[i]) for i in rows], kind="stable")
    model.encoder.eval()
    with torch.inference_mode():
        for k in range(0, len(rows), batch_size):
            sel = order[k : k + batch_size]
            out[sel] = model.predict_pooled(model.pooled([ids[rows[i]] for i in sel], device)).double().cpu().numpy()
    return out


def _metrics(pred: np.ndarray, y: np.ndarray) -> dict:
    return {"heldout_spearman": spearman(pred, y), "heldout_pearson": pearson(pred, y), "heldout_mse": float(np.mean((pred - y) ** 2))}


def _fit_ridge(model, ids, y, train, val, device) -> dict:
    import torch

    with progress() as bar:
        task = bar.add_task("embedding (frozen encoder)", total=len(ids))
        pooled = np.zeros((len(ids), model.encoder.config.hidden_size))
        order = np.argsort([len(x) for x in ids], kind="stable")
        with torch.inference_mode():
            for k in range(0, len(ids), 64):
                sel = order[k : k + 64]
                pooled[sel] = model.pooled([ids[i] for i in sel], device).double().cpu().numpy()
                bar.advance(task, len(sel))
    X, Xv = pooled[train], pooled[val]
    mu, ym = X.mean(0), y[train].mean()
    Xc = X - mu
    gram = Xc.T @ Xc
    scale = np.trace(gram) / gram.shape[0]
    best = None
    for alpha in (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0):
        w = np.linalg.solve(gram + alpha * scale * np.eye(gram.shape[0]), Xc.T @ (y[train] - ym))
        pred = (Xv - mu) @ w + ym
        m = _metrics(pred, y[val])
        if best is None or m["heldout_spearman"] > best[0]["heldout_spearman"]:
            best = (m, w, alpha)
    m, w, alpha = best
    with torch.no_grad():
        model.head.weight.copy_(torch.as_tensor(w[None, :], dtype=model.head.weight.dtype))
        model.head.bias.fill_(float(ym - mu @ w))
    return {**m, "head": f"ridge regression, alpha = {alpha:g} x mean eigenvalue"}


def _fine_tune(model, ids, lengths, y, train, val, device, *, epochs, lr, batch_size, rng) -> dict:
    import torch

    params = list(model.encoder.parameters()) + list(model.head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.01)
    steps_per_epoch = math.ceil(len(train) / batch_size)
    total = steps_per_epoch * epochs
    warmup, min_lr = 10, 1e-7

    def lr_at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        frac = (step - warmup) / max(1, total - warmup)
        return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * frac))

    y_t = torch.as_tensor(y, dtype=torch.float32)
    best, history, step = None, [], 0
    with progress() as bar:
        task = bar.add_task("distilling (fine-tuning)", total=total)
        for epoch in range(epochs):
            model.encoder.train()
            for batch in _batches(lengths[train], batch_size, rng):
                rows = train[batch]
                for group in opt.param_groups:
                    group["lr"] = lr_at(step)
                pred = model.predict_pooled(model.pooled([ids[i] for i in rows], device))
                loss = torch.nn.functional.mse_loss(pred.float(), y_t[rows].to(pred.device))
                if not torch.isfinite(loss):
                    raise DeltError(f"distill: non-finite loss at step {step} (try a smaller --lr)")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(params, 1.0)
                opt.step()
                step += 1
                bar.advance(task)
            m = _metrics(_predict(model, ids, val, device), y[val])
            history.append({"epoch": epoch + 1, **m})
            if best is None or m["heldout_spearman"] > best[0]["heldout_spearman"]:
                best = (m, copy.deepcopy(model.encoder.state_dict()), copy.deepcopy(model.head.state_dict()), epoch + 1)
    m, enc_state, head_state, best_epoch = best
    model.encoder.load_state_dict(enc_state)
    model.head.load_state_dict(head_state)
    return {**m, "best_epoch": best_epoch, "history": history, "head": "fine-tuned encoder + linear head (AdamW, cosine)"}
