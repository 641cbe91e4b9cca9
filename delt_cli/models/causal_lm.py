"""A causal LM seen as body + output head, and per-token losses without padded logits.

Scoring needs the loss of every real token, never the full-vocabulary logits of
padding. `split_lm` takes a Hugging Face causal LM apart into its body (which
gives the last hidden states) and its output head (a Linear, possibly tied to
the input embedding). `token_nll` then gathers the hidden states of the real
positions of a right-padded batch and applies the head in chunks of rows, so
the logits held at once are at most ``chunk_rows x vocabulary``.

Right padding needs no attention mask in a causal model: a real position never
attends to the later padding positions, so its hidden state is the same as
without the padding (positions start at 0 in every row).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from delt_cli.infra.errors import DeltError


@dataclass
class LMParts:
    model: nn.Module
    body: nn.Module  # returns .last_hidden_state
    head: nn.Linear  # hidden -> vocabulary logits
    embedding: nn.Embedding  # input token embedding
    softcap: Optional[float] = None  # final logit soft-capping (Gemma 2 style), applied after the head
    logit_scale: Optional[float] = None  # a constant factor on the logits (Cohere style)

    @property
    def tied(self) -> bool:
        return self.head.weight is self.embedding.weight

    def hidden(self, ids: torch.Tensor) -> torch.Tensor:
        """Last hidden states [B, S, H] of a right-padded batch of token ids."""
        return self.body(input_ids=ids, use_cache=False).last_hidden_state

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        z = self.head(h)
        if self.logit_scale is not None:
            z = z * self.logit_scale
        if self.softcap is not None:
            z = torch.tanh(z / self.softcap) * self.softcap
        return z


def split_lm(model: nn.Module) -> LMParts:
    """Body, head and embedding of a Hugging Face causal LM (DeltError when the layout is unusual)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    body = getattr(model, "base_model", None)
    embedding = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if not isinstance(head, nn.Linear) or body is None or body is model or not isinstance(embedding, nn.Embedding):
        raise DeltError(f"{type(model).__name__}: not a causal LM with a linear output head and an embedding layer")
    config = getattr(model, "config", None)
    softcap = getattr(config, "final_logit_softcapping", None)
    scale = getattr(config, "logit_scale", None)
    return LMParts(model=model, body=body, head=head, embedding=embedding, softcap=softcap, logit_scale=scale)


def targets_and_mask(ids: torch.Tensor, lengths: torch.Tensor, score_from: Optional[torch.Tensor] = None):
    """Next-token targets ids[:, 1:] and the mask of scored positions of a right-padded batch.

    Position s (0-based, predicting ids[:, s+1]) is scored when s + 1 < length and
    s + 1 >= score_from (the first scored target index; 1 when not given).
    """
    pos = torch.arange(ids.shape[1] - 1, device=ids.device)
    mask = (pos[None, :] + 1) < lengths[:, None]
    if score_from is not None:
        mask &= (pos[None, :] + 1) >= score_from[:, None]
    return ids[:, 1:], mask


def token_nll(
    parts: LMParts,
    ids: torch.Tensor,
    lengths: torch.Tensor,
    *,
    score_from: Optional[torch.Tensor] = None,
    chunk_rows: int = 2048,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sum of token NLLs (float64) and scored-token counts per row; logits only for scored positions."""
    h = parts.hidden(ids)[:, :-1]
    targets, mask = targets_and_mask(ids, lengths, score_from)
    rows = torch.nonzero(mask, as_tuple=True)
    hidden = h[rows]
    tgt = targets[rows]
    nll = torch.empty(hidden.shape[0], dtype=torch.float64, device=ids.device)
    for i in range(0, hidden.shape[0], chunk_rows):
        z = parts.logits(hidden[i : i + chunk_rows])
        if z.dtype in (torch.float16, torch.bfloat16):
            z = z.float()
        nll[i : i + chunk_rows] = nn.functional.cross_entropy(z, tgt[i : i + chunk_rows], reduction="none").double()
    sums = torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device).index_add_(0, rows[0], nll)
    return sums, mask.sum(1)


class attention:
    """Context manager: run a model with another attention implementation (e.g. 'eager' for double backward)."""

    def __init__(self, model: nn.Module, implementation: str):
        self.model = model
        self.implementation = implementation
        self.previous = None

    def __enter__(self):
        config = getattr(self.model, "config", None)
        self.previous = getattr(config, "_attn_implementation", None)
        if self.previous not in (None, self.implementation) and hasattr(self.model, "set_attn_implementation"):
            self.model.set_attn_implementation(self.implementation)
        return self.model

    def __exit__(self, *exc):
        if self.previous not in (None, self.implementation):
            self.model.set_attn_implementation(self.previous)
        return False
