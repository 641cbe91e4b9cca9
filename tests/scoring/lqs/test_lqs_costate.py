"""Correctness of the LQS solver on tiny float64 models: co-state, per-sample terms, the score formula."""

import numpy as np
import pytest
import torch
from torch.func import functional_call

from delt_cli.models.causal_lm import attention, split_lm
from delt_cli.models.loading import model_from_config
from delt_cli.scoring.lqs.annotate import zscore_clip
from delt_cli.scoring.lqs.costate import ProxyBatch, Solver, SolverConfig
from delt_cli.scoring.lqs.losses import params_of, pad_batch, sample_losses
from delt_cli.scoring.lqs.persample import HookPerSample, loop_per_sample, resolve_method, vmap_per_sample

V = 53
torch.set_num_threads(1)  # tiny ops: one thread per pytest-xdist worker (OpenMP spinning dominates otherwise)


def tiny(seed=3, **overrides):
    model = model_from_config("llama-tiny", vocab_size=V, seed=seed, dtype=torch.float64, **overrides).eval()
    return model, split_lm(model)


def random_batch(gen, rows, width, *, pad=0):
    lengths = torch.randint(2, width + 1, (rows,), generator=gen)
    lengths[0] = width
    ids = torch.randint(1, V, (rows, width), generator=gen)
    for i, n in enumerate(lengths.tolist()):
        ids[i, n:] = pad
    return ids, lengths


@pytest.fixture(scope="module")
def problem():
    gen = torch.Generator().manual_seed(0)
    forward = [random_batch(gen, 3, 9) for _ in range(4)]
    target = [random_batch(gen, 4, 7), random_batch(gen, 2, 5)]
    samples = [np.asarray(random_batch(gen, 1, int(torch.randint(3, 11, (1,), generator=gen)))[0][0]) for _ in range(7)]
    return forward, target, samples


class Loss(torch.nn.Module):
    def __init__(self, model, parts):
        super().__init__()
        self.model = model
        self.parts = parts

    def forward(self, ids, lengths):
        return sample_losses(self.parts, ids, lengths).mean()


def unrolled_costates(model, parts, forward, target, lr, steps):
    """d/d theta_t of sum_{s=t..T} J(theta_s), by autograd through the unrolled SGD trajectory."""
    wrapper = Loss(model, parts)

    def loss(p, batch):
        return functional_call(wrapper, {f"model.{k}": v for k, v in p.items()}, batch)

    def J(p):
        total = sum(loss(p, b) * b[0].shape[0] for b in target)
        return total / sum(b[0].shape[0] for b in target)

    thetas = [{k: v.detach().clone() for k, v in params_of(model).items()}]
    for s in range(steps):
        p = {k: v.clone().requires_grad_() for k, v in thetas[-1].items()}
        grads = torch.autograd.grad(loss(p, forward[s]), list(p.values()))
        thetas.append({k: (v - lr * g).detach() for (k, v), g in zip(p.items(), grads)})
    out = []
    for t in range(steps + 1):
        leaf = {k: v.clone().requires_grad_() for k, v in thetas[t].items()}
        cur, total = leaf, J(leaf)
        for s in range(t, steps):
            grads = torch.autograd.grad(loss(cur, forward[s]), list(cur.values()), create_graph=True)
            cur = {k: v - lr * g for (k, v), g in zip(cur.items(), grads)}
            total = total + J(cur)
        out.append(dict(zip(leaf, torch.autograd.grad(total, list(leaf.values())))))
    return out


def flat(p):
    return torch.cat([v.flatten() for v in p.values()])


def test_costate_equals_gradient_through_unrolled_sgd(problem):
    forward, target, _ = problem
    model, parts = tiny()
    theta0 = {k: v.detach().clone() for k, v in params_of(model).items()}
    cfg = SolverConfig(lr=0.5, steps=4)
    mine = Solver(parts, forward, target, cfg).costates()
    with torch.no_grad():
        for k, v in params_of(model).items():
            v.copy_(theta0[k])
    with attention(model, "eager"):  # the fused CPU attention has no second derivative
        reference = unrolled_costates(model, parts, forward, target, cfg.lr, cfg.steps)
    assert len(mine) == len(reference) == cfg.steps + 1
    for t in range(cfg.steps + 1):
        a, b = flat(mine[t]), flat(reference[t])
        assert float((a - b).norm() / b.norm()) < 1e-5, t
    # the co-state is not just grad J (the Hessian terms matter): lambda_0 differs from the T terms alone
    assert float((flat(mine[0]) - flat(mine[1])).norm()) > 1e-3


@pytest.mark.parametrize("tie", [True, False])
def test_per_sample_methods_equal_a_plain_loop(tie):
    model, parts = tiny(seed=5, tie_word_embeddings=tie)
    assert parts.tied is tie
    gen = torch.Generator().manual_seed(1)
    ids, lengths = random_batch(gen, 6, 12)
    lam = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params_of(model).items()}
    ref = loop_per_sample(parts, ids, lengths, lam)
    for r, g in zip(ref, HookPerSample(parts, chunk=4)(ids, lengths, lam)):
        assert torch.allclose(r, g, rtol=1e-9, atol=1e-12)
    # vmap runs eager attention, whose softmax is float32 even in a float64 model
    for r, g in zip(ref, vmap_per_sample(parts, ids, lengths, lam, chunk=4)):
        assert torch.allclose(r, g, rtol=1e-5, atol=1e-8)
    assert resolve_method("auto", parts) == "hooks"


def test_hooks_respect_embedding_padding_idx():
    """A token equal to the embedding's padding_idx gets no embedding gradient (nn.Embedding semantics)."""
    model = model_from_config("llama-tiny", vocab_size=V, seed=2, dtype=torch.float64, pad_token_id=7).eval()
    parts = split_lm(model)
    assert parts.embedding.padding_idx == 7
    gen = torch.Generator().manual_seed(4)
    ids, lengths = random_batch(gen, 4, 10)
    ids[:, 0] = 7  # the prefix token is the padding token, as with SmolLM2's eos
    lam = {k: torch.randn(v.shape, generator=gen, dtype=v.dtype) for k, v in params_of(model).items()}
    for r, g in zip(loop_per_sample(parts, ids, lengths, lam), HookPerSample(parts)(ids, lengths, lam)):
        assert torch.allclose(r, g, rtol=1e-9, atol=1e-12)


def solve(problem, batches_of, *, last_norm="next", checkpoint_every=0, steps=4, interval=2):
    forward, target, samples = problem
    model, parts = tiny()
    proxy = []
    for index in batches_of:
        ids, lengths = pad_batch([samples[i] for i in index], 0)
        proxy.append(ProxyBatch(index=np.asarray(index), ids=ids, lengths=lengths))
    cfg = SolverConfig(lr=0.3, steps=steps, interval=interval, last_norm=last_norm, checkpoint_every=checkpoint_every)
    return Solver(parts, forward, target, cfg).run(proxy, len(samples))


def test_score_does_not_depend_on_batch_membership(problem):
    a = solve(problem, [[0, 1, 2], [3, 4, 5, 6]])
    b = solve(problem, [[6, 2], [5, 0, 3], [1], [4]])
    for name in ("lqs", "pds", "quality", "learnability"):
        assert np.allclose(getattr(a, name), getattr(b, name), rtol=1e-10, atol=1e-14), name
    assert np.ptp(a.lqs) > 0  # the samples do get different scores


def test_recomputed_segments_equal_kept_trajectory(problem):
    kept = solve(problem, [[0, 1, 2, 3, 4, 5, 6]], checkpoint_every=1)
    recomputed = solve(problem, [[0, 1, 2, 3, 4, 5, 6]], checkpoint_every=3)
    assert np.array_equal(kept.lqs, recomputed.lqs) and np.array_equal(kept.pds, recomputed.pds)


@pytest.mark.parametrize("last_norm", ["next", "one"])
def test_scores_follow_the_documented_formula(problem, last_norm):
    """gamma_n = sum_t eta lambda_{t+1} . g_{n,t} / ||g_{n,t'}||, assembled here from the co-states and a loop."""
    forward, target, samples = problem
    steps, interval, lr = 4, 2, 0.3
    res = solve(problem, [[0, 1, 2, 3, 4, 5, 6]], last_norm=last_norm, steps=steps, interval=interval)
    model, parts = tiny()
    lams = Solver(parts, forward, target, SolverConfig(lr=lr, steps=steps)).costates()
    model, parts = tiny()
    solver = Solver(parts, forward, target, SolverConfig(lr=lr, steps=steps))
    ids, lengths = pad_batch(samples, 0)
    info = {}
    for t in range(steps + 1):
        dots, sq, _ = loop_per_sample(parts, ids, lengths, lams[min(t + 1, steps)])
        info[t] = (dots.numpy(), np.sqrt(sq.numpy()))
        if t < steps:
            solver.sgd(t)
    annotated = [0, 2]
    lqs = np.zeros(len(samples))
    pds = np.zeros(len(samples))
    for t in annotated:
        nxt = t + interval
        denom = info[nxt][1] if (nxt in annotated or last_norm == "next") else np.ones(len(samples))
        lqs += lr * info[t][0] / denom
        pds += lr * info[t][0]
    assert np.allclose(res.pds, pds, rtol=1e-9)
    assert np.allclose(res.lqs, lqs, rtol=1e-9)


def test_zscore_clip():
    x = np.array([0.0, 1.0, 2.0, 3.0, 100.0])
    z = zscore_clip(x)
    assert z.max() <= 3 and z.min() >= -3 and np.argmax(z) == 4
    assert np.allclose(zscore_clip(np.array([1.0, 2.0, 3.0])), [-1.224744871391589, 0.0, 1.224744871391589])
    assert np.array_equal(zscore_clip(np.ones(4)), np.zeros(4))


def test_out_of_memory_halves_the_proxy_batch(problem, monkeypatch):
    import delt_cli.scoring.lqs.costate as costate

    expected = solve(problem, [[0, 1, 2, 3, 4, 5, 6]])
    real = costate.per_sample_info
    sizes = []

    def small_device(method, parts, ids, *args, **kwargs):  # an accelerator that holds 2 samples
        sizes.append(ids.shape[0])
        if ids.shape[0] > 2:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return real(method, parts, ids, *args, **kwargs)

    monkeypatch.setattr(costate, "per_sample_info", small_device)
    got = solve(problem, [[0, 1, 2, 3, 4, 5, 6]])
    assert sizes[:3] == [7, 4, 2] and max(sizes[2:]) <= 2  # halved twice, then kept at 2
    assert np.allclose(got.lqs, expected.lqs, rtol=1e-9) and np.allclose(got.pds, expected.pds, rtol=1e-9)
