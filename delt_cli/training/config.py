"""The hyperparameters of a training run, their defaults, and how two runs differ.

Defaults follow DELT's setup (paper section 5 and its `model_train/config/train.yaml`):
AdamW (0.9, 0.98), eps 1e-6, weight decay 0.01, lr 6e-4 with 2,000 warmup steps and
cosine decay to 10%, gradient clipping 1.0, context 1024, 256 sequences per optimizer
step (8 per micro-batch x 32 accumulation steps on one process), one epoch, the 160M
model. configs/train/ scales this down for CPU runs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields
from typing import Any, Optional

# Options of `delt train` that change how a run is driven, not what it computes: a run may be
# resumed with different values of these.
CONTROL_OPTIONS = ("save_every", "keep_checkpoints", "log_every", "log_order", "token_cache", "resume", "overwrite")


@dataclass
class TrainConfig:
    model: str = "llama-160m"
    tokenizer: Optional[str] = None
    seq_len: int = 1024
    batch_size: int = 8
    grad_accum: int = 32
    epochs: int = 1
    max_tokens: Optional[int] = None
    max_steps: Optional[int] = None
    lr: float = 6e-4
    min_lr_ratio: float = 0.1
    warmup_steps: Optional[int] = 2000
    warmup_ratio: Optional[float] = None
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    precision: str = "auto"
    seed: int = 0
    text_column: str = "text"
    id_column: str = "id"

    @classmethod
    def from_args(cls, args: dict[str, Any]) -> "TrainConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in args.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def identity(config: TrainConfig, **facts: Any) -> dict[str, Any]:
    """Everything that decides a run's result: the hyperparameters plus facts such as input fingerprints."""
    return json.loads(json.dumps({**config.to_dict(), **facts}, default=str, sort_keys=True))


def differing_keys(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """Keys whose values differ between two run identities (missing counts as different)."""
    return sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
