"""Which packed sequences are read at each step, so the order never depends on the process count.

The token stream (documents in dataset order, EOS after each) is cut into windows of
``seq_len + 1`` tokens that overlap by one: sequence k is tokens [k*L, k*L + L + 1),
its first L tokens are the input and its last L the targets, so every token of the
stream is predicted once and none is padding. An epoch has ``(T - 1) // L`` sequences
(the remainder is dropped, so every epoch is packed identically); epoch e repeats
epoch 0's sequences in the same order.

Global sequence g (counting across epochs) belongs to optimizer step ``g // G`` with
``G = processes x batch_size x grad_accum``. Micro-batch m of a step takes the next
``processes x batch_size`` sequences, and process r takes the r-th run of
``batch_size`` among them. The sequences of a step, hence the gradient, are the same
for any process count with the same G.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from delt_cli.infra.errors import DeltError


def sequences_per_epoch(num_tokens: int, seq_len: int) -> int:
    return max((int(num_tokens) - 1) // int(seq_len), 0)


@dataclass(frozen=True)
class Layout:
    seq_len: int
    batch_size: int
    grad_accum: int
    processes: int
    sequences_per_epoch: int
    epochs: int = 1
    max_tokens: Optional[int] = None
    max_steps: Optional[int] = None

    @property
    def global_batch(self) -> int:
        """Sequences per optimizer step, over all processes and accumulation micro-steps."""
        return self.processes * self.batch_size * self.grad_accum

    @property
    def tokens_per_step(self) -> int:
        return self.global_batch * self.seq_len

    @property
    def total_steps(self) -> int:
        steps = self.epochs * self.sequences_per_epoch // self.global_batch
        if self.max_tokens is not None:
            steps = min(steps, int(self.max_tokens) // self.tokens_per_step)
        if self.max_steps is not None:
            steps = min(steps, int(self.max_steps))
        return steps

    def micro_batch(self, step: int, micro: int, rank: int) -> range:
        """Global sequence indices that process `rank` reads at micro-step `micro` of `step`."""
        first = step * self.global_batch + micro * self.processes * self.batch_size + rank * self.batch_size
        return range(first, first + self.batch_size)

    def step_sequences(self, step: int) -> range:
        return range(step * self.global_batch, (step + 1) * self.global_batch)

    def window_start(self, sequence: int) -> int:
        """First token of global sequence `sequence` in the stream (epochs wrap around)."""
        return (sequence % self.sequences_per_epoch) * self.seq_len

    def epoch_of(self, sequence: int) -> int:
        return sequence // self.sequences_per_epoch


def check_layout(layout: Layout, *, num_tokens: int, what: str) -> None:
    """Fail clearly when the data cannot fill a single optimizer step."""
    for name, value in (("--seq-len", layout.seq_len), ("--batch-size", layout.batch_size), ("--grad-accum", layout.grad_accum), ("--epochs", layout.epochs)):
        if value < 1:
            raise DeltError(f"{name} {value}: must be at least 1")
    if layout.total_steps >= 1:
        return
    if layout.max_tokens is not None and layout.max_tokens < layout.tokens_per_step:
        raise DeltError(
            f"--max-tokens {layout.max_tokens:,} is less than one optimizer step of {layout.tokens_per_step:,} tokens "
            f"({layout.global_batch} sequences x {layout.seq_len})"
        )
    if layout.max_steps is not None and layout.max_steps < 1:
        raise DeltError(f"--max-steps {layout.max_steps}: must be at least 1")
    raise DeltError(
        f"{what} has {num_tokens:,} tokens ({layout.sequences_per_epoch * layout.epochs:,} sequences of {layout.seq_len} "
        f"over {layout.epochs} epoch(s)), fewer than one batch of {layout.global_batch} sequences "
        f"({layout.processes} process(es) x --batch-size {layout.batch_size} x --grad-accum {layout.grad_accum}); "
        "use more data, more --epochs, or a smaller --batch-size / --seq-len"
    )
