"""Which sequences each process reads, and the learning-rate schedule (pure functions, fast)."""

import pytest
import torch

from delt_cli.infra.errors import DeltError
from delt_cli.training.batches import Layout, check_layout, sequences_per_epoch
from delt_cli.training.schedule import lr_multiplier, make_scheduler, resolve_warmup


def global_batches(layout: Layout) -> list[list[int]]:
    """Per optimizer step, the sequences read by all processes, in (micro-step, rank) order."""
    out = []
    for step in range(layout.total_steps):
        seqs = []
        for micro in range(layout.grad_accum):
            for rank in range(layout.processes):
                seqs.extend(layout.micro_batch(step, micro, rank))
        out.append(seqs)
    return out


@pytest.mark.parametrize(("processes", "batch", "accum"), [(2, 4, 1), (4, 2, 1), (2, 2, 2), (1, 4, 2), (8, 1, 1)])
def test_global_batches_do_not_depend_on_the_number_of_processes(processes, batch, accum):
    one = Layout(seq_len=16, batch_size=8, grad_accum=1, processes=1, sequences_per_epoch=100, epochs=2)
    many = Layout(seq_len=16, batch_size=batch, grad_accum=accum, processes=processes, sequences_per_epoch=100, epochs=2)
    assert many.global_batch == one.global_batch == 8
    assert global_batches(many) == global_batches(one)
    # every sequence is read exactly once, in order
    flat = [s for b in global_batches(many) for s in b]
    assert flat == list(range(len(flat)))
    # and the ranks' slices of a micro-step do not overlap
    step_ranks = [set(many.micro_batch(3, 0, r)) for r in range(processes)]
    assert sum(len(s) for s in step_ranks) == len(set().union(*step_ranks))


def test_epochs_repeat_the_same_windows_in_the_same_order():
    layout = Layout(seq_len=10, batch_size=3, grad_accum=1, processes=1, sequences_per_epoch=7, epochs=3)
    assert layout.total_steps == 21 // 3
    starts = [layout.window_start(g) for g in range(21)]
    assert starts[:7] == [0, 10, 20, 30, 40, 50, 60]
    assert starts[7:14] == starts[:7] == starts[14:]
    assert [layout.epoch_of(g) for g in (0, 6, 7, 20)] == [0, 0, 1, 2]


def test_total_steps_honours_max_tokens_and_max_steps():
    layout = Layout(seq_len=8, batch_size=2, grad_accum=2, processes=1, sequences_per_epoch=1000, max_tokens=8 * 4 * 10 + 5)
    assert layout.tokens_per_step == 32 and layout.total_steps == 10
    assert Layout(seq_len=8, batch_size=2, grad_accum=2, processes=1, sequences_per_epoch=1000, max_steps=3).total_steps == 3
    assert sequences_per_epoch(num_tokens=1, seq_len=8) == 0
    assert sequences_per_epoch(num_tokens=17, seq_len=8) == 2  # windows [0, 9) and [8, 17)


def test_too_little_data_is_an_error_that_names_the_batch():
    layout = Layout(seq_len=64, batch_size=8, grad_accum=2, processes=1, sequences_per_epoch=10)
    with pytest.raises(DeltError, match=r"fewer than one batch of 16 sequences"):
        check_layout(layout, num_tokens=700, what="tiny/")
    with pytest.raises(DeltError, match="--max-tokens 100 is less than one optimizer step"):
        check_layout(Layout(seq_len=64, batch_size=2, grad_accum=1, processes=1, sequences_per_epoch=10, max_tokens=100), num_tokens=700, what="d")


def test_schedule_matches_transformers_cosine_with_min_lr():
    from transformers import get_scheduler

    total, warmup, ratio = 50, 7, 0.1
    params = [torch.nn.Parameter(torch.zeros(1))]
    ours = make_scheduler(torch.optim.SGD(params, lr=1.0), warmup_steps=warmup, total_steps=total, min_lr_ratio=ratio)
    theirs = get_scheduler(
        "cosine_with_min_lr", torch.optim.SGD(params, lr=1.0), num_warmup_steps=warmup, num_training_steps=total, scheduler_specific_kwargs={"min_lr_rate": ratio}
    )
    a, b = [], []
    for _ in range(total):
        a.append(ours.get_last_lr()[0])
        b.append(theirs.get_last_lr()[0])
        ours.optimizer.step(), ours.step(), theirs.optimizer.step(), theirs.step()
    assert a == pytest.approx(b, abs=1e-12)
    assert a[0] == 0.0 and a[warmup] == pytest.approx(1.0)
    assert lr_multiplier(total, warmup_steps=warmup, total_steps=total, min_lr_ratio=ratio) == pytest.approx(ratio)


def test_warmup_from_steps_or_ratio_is_capped_at_the_run_length():
    assert resolve_warmup(100, 2000, None) == 100
    assert resolve_warmup(100, None, 0.03) == 3
    assert resolve_warmup(100, 2000, 0.03) == 3  # a ratio, when given, wins over the (default) step count
    assert resolve_warmup(100, None, None) == 0
