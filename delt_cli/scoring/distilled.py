"""A distilled scorer: a pretrained encoder, mean pooling over real tokens, a linear head.

Saved as a directory::

    scorer.json        config: encoder source and fingerprint, max_length, the column it
                       was trained on, training hyperparameters, held-out metrics
    head.safetensors   the linear head (weight [1, hidden], bias [1])
    encoder/           the encoder (Hugging Face directory: safetensors + tokenizer)
    manifest.json      provenance of the `delt distill` run

`DistilledScorer` (``delt score --method scorer --scorer DIR``) predicts one float per
document, shard by shard. Empty texts get null.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa

from delt_cli.infra.errors import DeltError
from delt_cli.scoring.base import Scorer
from delt_cli.scoring.options import Batched, Named, TextInput, Typed, default_of, option

CONFIG_NAME = "scorer.json"
HEAD_NAME = "head.safetensors"
ENCODER_DIR = "encoder"


class ScorerModel:
    """Encoder + mean pooling + linear head (torch modules), with its tokenizer and config."""

    def __init__(self, encoder, tokenizer, head, config: dict):
        self.encoder = encoder
        self.tokenizer = tokenizer
        self.head = head
        self.config = config

    @property
    def max_length(self) -> int:
        return int(self.config["max_length"])

    def encode(self, texts: list[str]) -> list[list[int]]:
        ids = self.tokenizer([t or "" for t in texts], add_special_tokens=True, truncation=True, max_length=self.max_length)["input_ids"]
        return [list(x) for x in ids]

    def pooled(self, ids: list[list[int]], device):
        """Mean of the last hidden states over real tokens, [B, hidden] (float32)."""
        import torch

        width = max(len(x) for x in ids)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        batch = torch.full((len(ids), width), pad, dtype=torch.long)
        mask = torch.zeros((len(ids), width), dtype=torch.long)
        for i, x in enumerate(ids):
            batch[i, : len(x)] = torch.tensor(x, dtype=torch.long)
            mask[i, : len(x)] = 1
        batch, mask = batch.to(device), mask.to(device)
        hidden = self.encoder(input_ids=batch, attention_mask=mask).last_hidden_state.float()
        m = mask[..., None].to(hidden.dtype)
        return (hidden * m).sum(1) / m.sum(1).clamp(min=1)

    def predict_pooled(self, pooled):
        return self.head(pooled.to(self.head.weight.dtype))[:, 0]

    def save(self, directory: Path) -> None:
        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        self.encoder.save_pretrained(str(directory / ENCODER_DIR), safe_serialization=True)
        self.tokenizer.save_pretrained(str(directory / ENCODER_DIR))
        save_file({k: v.detach().cpu().contiguous() for k, v in self.head.state_dict().items()}, str(directory / HEAD_NAME))
        (directory / CONFIG_NAME).write_text(json.dumps(self.config, indent=2, sort_keys=True) + "\n")


def new_head(hidden: int, dtype=None):
    import torch

    return torch.nn.Linear(hidden, 1, bias=True, dtype=dtype or torch.float32)


def load_scorer(directory: str | Path, *, dtype: str = "auto", device=None) -> ScorerModel:
    """Load a scorer directory written by `delt distill`."""
    from safetensors.torch import load_file

    from delt_cli.models.loading import load_encoder

    directory = Path(directory)
    if not (directory / CONFIG_NAME).is_file():
        raise DeltError(f"--scorer {directory}: not a scorer directory (no {CONFIG_NAME}; make one with `delt distill`)")
    try:
        config = json.loads((directory / CONFIG_NAME).read_text())
        state = load_file(str(directory / HEAD_NAME))
    except (OSError, ValueError) as exc:
        raise DeltError(f"--scorer {directory}: cannot read the scorer ({exc})") from exc
    encoder, tokenizer = load_encoder(directory / ENCODER_DIR, dtype=dtype, device=device)
    head = new_head(state["weight"].shape[1])
    head.load_state_dict(state)
    return ScorerModel(encoder, tokenizer, head.to(device or "cpu").eval(), config)


def predict_texts(model: ScorerModel, texts: list[str], *, device, batch_tokens: int = 16384, on_batch=None) -> np.ndarray:
    """Predictions for texts (NaN for empty ones), length-bucketed batches."""
    import torch

    from delt_cli.scoring.tokens import length_batches

    out = np.full(len(texts), np.nan)
    nonempty = [i for i, t in enumerate(texts) if t]
    ids = model.encode([texts[i] for i in nonempty])
    for batch in length_batches([len(x) for x in ids], batch_tokens=max(batch_tokens, model.max_length)):
        with torch.inference_mode():
            pred = model.predict_pooled(model.pooled([ids[i] for i in batch], device))
        out[np.asarray(nonempty)[batch]] = pred.double().cpu().numpy()
        if on_batch:
            on_batch(len(batch), sum(len(ids[i]) for i in batch))
    return out


@dataclass
class DistilledOptions(TextInput, Typed, Batched, Named):
    scorer: Optional[Path] = option(None, "Directory written by `delt distill`.")
    batch_tokens: Optional[int] = default_of(Batched, "batch_tokens", 4096)


class DistilledScorer(Scorer):
    name = "scorer"
    title = "Distilled scorer"
    Options = DistilledOptions

    def validate(self) -> None:
        if self.options.scorer is None:
            raise DeltError("--method scorer needs --scorer DIR (a directory written by `delt distill`)")
        self.directory = Path(self.options.scorer)
        self.config = self._read_config()
        self.empty = 0

    @property
    def columns(self) -> list[str]:
        return [self.options.column or f"{self.config.get('column', 'score')}_pred"]

    def _read_config(self) -> dict:
        path = self.directory / CONFIG_NAME
        if not path.is_file():
            raise DeltError(f"--scorer {self.directory}: not a scorer directory (no {CONFIG_NAME}; make one with `delt distill`)")
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise DeltError(f"--scorer {self.directory}: unreadable {CONFIG_NAME} ({exc})") from exc

    def references(self) -> dict:
        from delt_cli.models.loading import fingerprint

        return {"scorer": str(self.directory), "scorer_fingerprint": fingerprint(self.directory / ENCODER_DIR) + ":" + fingerprint(self.directory / HEAD_NAME)}

    def prepare(self, dist) -> None:
        self.device = dist.device
        self.model = load_scorer(self.directory, dtype=self.options.dtype, device=dist.device)

    def transform(self, table: pa.Table) -> dict[str, pa.Array]:
        texts = table.column(self.options.text_column).to_pylist()
        pred = predict_texts(self.model, texts, device=self.device, batch_tokens=self.options.batch_tokens or 4096, on_batch=self.on_progress)
        empty = np.isnan(pred)
        self.empty += int(empty.sum())
        if self.on_progress:
            self.on_progress(int(empty.sum()), 0)
        return {self.columns[0]: pa.array(pred, mask=empty, type=pa.float64())}

    def summary(self) -> dict:
        return {"empty (null)": self.empty}

    def describe(self) -> dict:
        keys = ("column", "encoder", "encoder_fingerprint", "max_length", "heldout_spearman", "heldout_pearson", "train_rows", "heldout_rows")
        return {k: self.config.get(k) for k in keys}
