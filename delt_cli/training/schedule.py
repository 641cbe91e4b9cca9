"""Learning-rate schedule: linear warmup from 0, then cosine decay to a minimum learning rate.

The multiplier is the one of transformers' ``cosine_with_min_lr`` schedule (which DELT's
training code uses), so runs compare directly with the Trainer:

    step < W:  step / W
    else:      m + (1 - m) * 0.5 * (1 + cos(pi * (step - W) / (T - W)))

with W warmup steps, T total steps and m = min_lr / lr.
"""

from __future__ import annotations

import math


def lr_multiplier(step: int, *, warmup_steps: int, total_steps: int, min_lr_ratio: float) -> float:
    if step < warmup_steps:
        return step / max(1, warmup_steps)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    progress = min(progress, 1.0)
    return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def resolve_warmup(total_steps: int, warmup_steps: int | None, warmup_ratio: float | None) -> int:
    """Warmup steps: --warmup-ratio (a fraction of all steps) when given, else --warmup-steps; capped at the run."""
    if warmup_ratio is not None:
        return min(int(math.ceil(warmup_ratio * total_steps)), total_steps)
    return min(int(warmup_steps or 0), total_steps)


def make_scheduler(optimizer, *, warmup_steps: int, total_steps: int, min_lr_ratio: float):
    import functools

    from torch.optim.lr_scheduler import LambdaLR

    fn = functools.partial(lr_multiplier, warmup_steps=warmup_steps, total_steps=total_steps, min_lr_ratio=min_lr_ratio)
    return LambdaLR(optimizer, fn)
