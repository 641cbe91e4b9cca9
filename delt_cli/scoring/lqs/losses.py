"""Per-sample losses, batch gradients and Hessian-vector products of a causal LM.

A sample is one row of token ids (prefix token + document tokens, cut to the
maximum length). Its loss l(x, theta) is the mean cross-entropy over its
predicted tokens (DELT's chunk loss); a batch loss is the mean of its samples'
losses (every sample weighs the same, whatever its length). Parameters are
handled as an ordered dict name -> tensor (`named_parameters()`, so a tied
embedding/head weight appears once).
"""

from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn

from delt_cli.models.causal_lm import LMParts, attention, targets_and_mask

Params = dict[str, torch.Tensor]


def params_of(model: nn.Module) -> Params:
    return dict(model.named_parameters())


def sample_losses(parts: LMParts, ids: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Differentiable per-row mean token cross-entropy of a right-padded batch (logits of real tokens only)."""
    h = parts.hidden(ids)[:, :-1]
    targets, mask = targets_and_mask(ids, lengths)
    rows = torch.nonzero(mask, as_tuple=True)
    z = parts.logits(h[rows])
    ce = nn.functional.cross_entropy(z.float() if z.dtype in (torch.float16, torch.bfloat16) else z, targets[rows], reduction="none")
    sums = torch.zeros(ids.shape[0], dtype=ce.dtype, device=ids.device).index_add(0, rows[0], ce)
    return sums / mask.sum(1).clamp(min=1).to(ce.dtype)


def pad_batch(samples: Sequence[np.ndarray], pad_id: int, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad 1-D int arrays into ids [B, S] and lengths [B]."""
    lengths = [len(s) for s in samples]
    ids = np.full((len(samples), max(lengths)), pad_id, dtype=np.int64)
    for i, s in enumerate(samples):
        ids[i, : len(s)] = s
    return torch.from_numpy(ids).to(device), torch.tensor(lengths, device=device)


def flat_dot(a: Params, b: Params) -> torch.Tensor:
    return sum((a[k].double() * b[k].double()).sum() for k in a)


def flat_norm(a: Params) -> torch.Tensor:
    return torch.sqrt(sum(a[k].double().pow(2).sum() for k in a))


def grad_of(loss: torch.Tensor, params: Params, *, create_graph: bool = False) -> Params:
    names = list(params)
    grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=create_graph, allow_unused=True)
    return {n: (g if g is not None else torch.zeros_like(params[n])) for n, g in zip(names, grads)}


def mean_loss_grad(parts: LMParts, batches: Iterable[tuple[torch.Tensor, torch.Tensor]], params: Params) -> tuple[Params, float, int]:
    """Gradient of the SUM of sample losses over `batches` (and that sum, and the sample count).

    Dividing by the total count (after summing over processes) gives the gradient of the mean loss.
    """
    total = {n: torch.zeros_like(p) for n, p in params.items()}
    loss_sum, count = 0.0, 0
    for ids, lengths in batches:
        losses = sample_losses(parts, ids, lengths)
        g = grad_of(losses.sum(), params)
        for n in total:
            total[n] += g[n]
        loss_sum += float(losses.detach().sum())
        count += int(ids.shape[0])
    return total, loss_sum, count


def hvp(parts: LMParts, ids: torch.Tensor, lengths: torch.Tensor, params: Params, vector: Params) -> Params:
    """H v for the Hessian H of the mean loss of one batch, by double backward (exact).

    Runs with eager attention: the fused CPU attention kernels have no second derivative.
    """
    with attention(parts.model, "eager"):
        loss = sample_losses(parts, ids, lengths).mean()
        g = grad_of(loss, params, create_graph=True)
        dot = sum((g[n] * vector[n]).sum() for n in g)
        return grad_of(dot, params)
