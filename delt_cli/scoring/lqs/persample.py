"""Per-sample gradient information: lambda . g_n and ||g_n|| for every sample of a batch.

g_n is the gradient of sample n's loss with respect to all parameters. Three
ways to get the two numbers per sample, all exact (they agree to float rounding):

* ``loop``: one forward and backward per sample (the reference).
* ``vmap``: ``torch.func.vmap(grad(...))`` over the batch (functional_call).
* ``hooks``: one forward and one backward of the whole batch with the weights
  frozen; hooks keep every layer's input activations x and output gradients d,
  and each layer's per-sample weight gradient is rebuilt from them: a Linear
  layer's is d_n^T x_n (a batched matmul, the same flops as the batch's weight
  gradient), an embedding's is d_n scattered onto the rows of the sample's
  tokens, and a small elementwise module's (RMSNorm) comes from vmap over that
  module alone. The output head is applied by hand in sample chunks, so its
  per-sample gradient (d z_n)^T h_n is built from the logits' gradient directly,
  and a head tied to the input embedding is handled as one parameter (norm of
  the sum, with the cross term). Cost: about one batched forward + backward,
  memory bounded by `chunk` samples' gradients of one layer at a time.

`per_sample_info(method, ...)` returns (dots [B], squared norms [B], losses [B]).
"""

from __future__ import annotations

import contextlib
from typing import Optional

import torch
from torch import nn

from delt_cli.infra.errors import DeltError
from delt_cli.models.causal_lm import LMParts, attention, targets_and_mask
from delt_cli.scoring.lqs.losses import Params, grad_of, params_of, sample_losses

METHODS = ("auto", "hooks", "loop", "vmap")


def per_sample_info(method: str, parts: LMParts, ids: torch.Tensor, lengths: torch.Tensor, lam: Params, *, chunk: int = 8):
    if method in ("auto", "hooks"):
        return HookPerSample(parts, chunk=chunk)(ids, lengths, lam)
    if method == "loop":
        return loop_per_sample(parts, ids, lengths, lam)
    if method == "vmap":
        return vmap_per_sample(parts, ids, lengths, lam, chunk=chunk)
    raise DeltError(f"--per-sample {method}: expected one of {', '.join(METHODS)}")


def resolve_method(method: str, parts: LMParts) -> str:
    """'auto' -> 'hooks' when every parameter sits in a layer the hooks understand, else 'loop'."""
    if method != "auto":
        return method
    return "hooks" if HookPerSample.supports(parts) is None else "loop"


# -- reference: one sample at a time ---------------------------------------------------------
def loop_per_sample(parts: LMParts, ids, lengths, lam: Params):
    params = params_of(parts.model)
    dots, norms, losses = [], [], []
    for n in range(ids.shape[0]):
        length = int(lengths[n])
        loss = sample_losses(parts, ids[n : n + 1, :length], lengths[n : n + 1])[0]
        g = grad_of(loss, params)
        dots.append(sum((g[k].double() * lam[k].double()).sum() for k in g))
        norms.append(sum(g[k].double().pow(2).sum() for k in g))
        losses.append(loss.detach().double())
    return torch.stack(dots), torch.stack(norms), torch.stack(losses)


# -- torch.func ------------------------------------------------------------------------------
def vmap_per_sample(parts: LMParts, ids, lengths, lam: Params, *, chunk: int = 8):
    from torch.func import functional_call, grad, vmap

    model = parts.model
    params = {k: v.detach() for k, v in params_of(model).items()}
    buffers = dict(model.named_buffers())

    def loss_one(p, row, length):
        def body_hidden(x):
            return functional_call(model, (p, buffers), args=(), kwargs={"input_ids": x, "use_cache": False}, strict=False)

        out = body_hidden(row[None])
        z = out.logits[0, :-1]
        targets = row[1:]
        weight = (torch.arange(z.shape[0], device=row.device) + 1 < length).to(z.dtype)
        ce = nn.functional.cross_entropy(z, targets, reduction="none")
        return (ce * weight).sum() / weight.sum()

    g_fn = vmap(grad(loss_one), in_dims=(None, 0, 0))
    dots, norms, losses = [], [], []
    with attention(model, "eager"):  # the fused CPU attention kernel has no vmap rule (slow fallback)
        for i in range(0, ids.shape[0], chunk):
            g = g_fn(params, ids[i : i + chunk], lengths[i : i + chunk])
            dots.append(sum((g[k].double() * lam[k].double()).flatten(1).sum(1) for k in g))
            norms.append(sum(g[k].double().pow(2).flatten(1).sum(1) for k in g))
    with torch.no_grad():
        losses = sample_losses(parts, ids, lengths).double()
    return torch.cat(dots), torch.cat(norms), losses


# -- hooks: per-sample gradients from activations and output gradients -------------------------
@contextlib.contextmanager
def frozen(model: nn.Module):
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


class HookPerSample:
    """lambda . g_n, ||g_n||^2 and l_n for a batch, from one forward and one backward (see module doc)."""

    def __init__(self, parts: LMParts, *, chunk: int = 8, max_elems: int = 1 << 24):
        problem = self.supports(parts)
        if problem:
            raise DeltError(f"--per-sample hooks: {problem}; use --per-sample loop")
        self.parts = parts
        self.chunk = max(1, chunk)
        self.max_elems = max_elems
        self.names = {id(p): n for n, p in parts.model.named_parameters()}
        self._busy = False

    @staticmethod
    def supports(parts: LMParts) -> Optional[str]:
        """None when the hooks cover every parameter exactly once, else the reason they do not."""
        if parts.softcap is not None or parts.logit_scale is not None:
            return "logit soft-capping/scaling is not supported"
        owners: dict[int, list] = {}
        for mod in parts.model.modules():
            for p in mod.parameters(recurse=False):
                owners.setdefault(id(p), []).append(mod)
        for name, p in parts.model.named_parameters():
            mods = owners.get(id(p), [])
            if p is parts.head.weight and parts.tied:
                continue
            if len(mods) != 1:
                return f"parameter {name} is shared by {len(mods)} modules"
            mod = mods[0]
            if mod is parts.head or mod is parts.embedding or isinstance(mod, nn.Linear):
                continue
            if isinstance(mod, nn.Embedding):
                return f"parameter {name} is in a second embedding layer"
            if sum(p.numel() for p in mod.parameters(recurse=False)) > (1 << 20):
                return f"parameter {name} is in an unsupported large module {type(mod).__name__}"
        return None

    # per-layer rules ---------------------------------------------------------------------------
    def _add(self, dots, norms, g: torch.Tensor, lam: torch.Tensor, rows: slice) -> None:
        g = g.flatten(1)
        dots[rows] += (g @ lam.reshape(-1).to(g.dtype)).double()
        norms[rows] += torch.linalg.vector_norm(g, dim=1).double().square()

    def _linear(self, mod: nn.Linear, x: torch.Tensor, d: torch.Tensor, lam: Params, dots, norms) -> None:
        x = x.reshape(x.shape[0], -1, x.shape[-1])
        d = d.reshape(d.shape[0], -1, d.shape[-1])
        per = max(1, self.max_elems // mod.weight.numel())
        for i in range(0, x.shape[0], per):
            rows = slice(i, i + per)
            self._add(dots, norms, torch.bmm(d[rows].transpose(1, 2), x[rows]), lam[self.names[id(mod.weight)]], rows)
        if mod.bias is not None:
            self._add(dots, norms, d.sum(1), lam[self.names[id(mod.bias)]], slice(None))

    def _generic(self, mod: nn.Module, x: torch.Tensor, d: torch.Tensor, lam: Params, dots, norms) -> None:
        from torch.func import functional_call, grad, vmap

        own = {n: p.detach() for n, p in mod.named_parameters(recurse=False)}

        def f(p, xn, dn):
            return (functional_call(mod, p, (xn[None],)) * dn[None]).sum()

        self._busy = True
        try:
            g = vmap(grad(f), in_dims=(None, 0, 0))(own, x, d)
        finally:
            self._busy = False
        for n, p in mod.named_parameters(recurse=False):
            self._add(dots, norms, g[n], lam[self.names[id(p)]], slice(None))

    # the whole batch -----------------------------------------------------------------------------
    def __call__(self, ids: torch.Tensor, lengths: torch.Tensor, lam: Params):
        parts = self.parts
        B = ids.shape[0]
        dots = torch.zeros(B, dtype=torch.float64, device=ids.device)
        norms = torch.zeros(B, dtype=torch.float64, device=ids.device)
        emb = parts.embedding
        emb_name = self.names[id(emb.weight)]
        saved: dict = {}
        handles = []

        def emb_hook(mod, inputs, out):
            leaf = out.detach().requires_grad_(True)
            saved["emb_out"] = leaf
            return leaf

        def make_hook(mod):
            rule = self._linear if isinstance(mod, nn.Linear) else self._generic

            def hook(m, inputs, out):
                if self._busy:  # a rule re-running this module (vmap over an RMSNorm): not a model call
                    return
                x = inputs[0].detach()
                if not isinstance(out, torch.Tensor) or not out.requires_grad:
                    raise DeltError(f"--per-sample hooks: module {type(m).__name__} has an output the hooks cannot follow")
                out.register_hook(lambda d: rule(m, x, d.detach(), lam, dots, norms))

            return hook

        with frozen(parts.model):
            handles.append(emb.register_forward_hook(emb_hook))
            for mod in parts.body.modules():
                if mod is emb or not any(True for _ in mod.parameters(recurse=False)):
                    continue
                handles.append(mod.register_forward_hook(make_hook(mod)))
            try:
                h = parts.hidden(ids)
                grad_h, losses, head_rows = self._head(h.detach(), ids, lengths, lam, dots, norms)
                torch.autograd.backward(h, grad_h)
            finally:
                for handle in handles:
                    handle.remove()
        self._embedding(ids, saved["emb_out"].grad, head_rows, lam[emb_name], dots, norms)
        return dots, norms, losses

    def _head(self, h, ids, lengths, lam: Params, dots, norms):
        """Logits in sample chunks: loss, d loss/d h, and the head's per-sample gradient contributions."""
        parts = self.parts
        W = parts.head.weight
        lam_w = lam[self.names[id(W)]]
        targets, mask = targets_and_mask(ids, lengths)
        weight = mask.to(h.dtype) / mask.sum(1, keepdim=True).clamp(min=1).to(h.dtype)
        grad_h = torch.zeros_like(h)
        losses = torch.zeros(ids.shape[0], dtype=torch.float64, device=ids.device)
        head_rows = torch.zeros_like(h) if parts.tied else None  # A_n[ids_n]: head gradient rows at the input tokens
        V, H = W.shape
        per = max(1, min(self.chunk, self.max_elems // (V * H)))
        for i in range(0, ids.shape[0], per):
            rows = slice(i, i + per)
            hc = h[rows, :-1]
            z = parts.logits(hc)
            logp = torch.log_softmax(z, dim=-1)
            tgt = targets[rows]
            nll = -logp.gather(-1, tgt[..., None])[..., 0]
            losses[rows] = (nll * weight[rows]).sum(1).double()
            dz = logp.exp_()
            dz.scatter_add_(-1, tgt[..., None], -torch.ones_like(nll)[..., None])
            dz.mul_(weight[rows][..., None])
            grad_h[rows, :-1] = dz @ W
            A = torch.bmm(dz.transpose(1, 2), hc)  # per-sample head gradient [c, V, H]
            self._add(dots, norms, A, lam_w, rows)
            if parts.head.bias is not None:
                self._add(dots, norms, dz.sum(1), lam[self.names[id(parts.head.bias)]], rows)
            if head_rows is not None:
                head_rows[rows] = torch.gather(A, 1, ids[rows][..., None].expand(-1, -1, H))
        return grad_h, losses, head_rows

    def _embedding(self, ids, d, head_rows, lam_e, dots, norms) -> None:
        """Input-embedding rows: dot by gathering lambda's rows; norm by summing d per distinct token."""
        emb = self.parts.embedding
        if emb.padding_idx is not None:
            d = d * (ids != emb.padding_idx)[..., None].to(d.dtype)
        B, S, H = d.shape
        dots += (lam_e[ids].to(d.dtype) * d).sum((1, 2)).double()
        keys = ids + torch.arange(B, device=ids.device)[:, None] * emb.num_embeddings
        uniq, inverse = torch.unique(keys.reshape(-1), return_inverse=True)
        summed = torch.zeros(len(uniq), H, dtype=d.dtype, device=d.device).index_add_(0, inverse, d.reshape(-1, H))
        sample_of = torch.div(uniq, emb.num_embeddings, rounding_mode="floor")
        norms += torch.zeros(B, dtype=torch.float64, device=d.device).index_add_(0, sample_of, summed.pow(2).sum(1).double())
        if head_rows is not None:  # tied: ||A + E||^2 = ||A||^2 + ||E||^2 + 2 <A, E>, <A, E> = sum_s A[ids_s] . d_s
            norms += 2 * (head_rows * d).sum((1, 2)).double()
