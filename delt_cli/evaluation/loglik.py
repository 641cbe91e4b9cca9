"""Log-likelihood of (context, continuation) requests, the way lm-evaluation-harness' HF model computes it.

Tokenisation follows the harness (`HFLM._encode_pair`): trailing spaces of the context move
to the continuation; the context is encoded alone, the continuation is the rest of the
encoding of context + continuation; special tokens are the tokenizer's default (a Llama
tokenizer adds BOS, GPT-2's adds nothing); an empty context becomes the prefix token (BOS,
else EOS). ``add_prefix_token=True`` puts the prefix token in front of every context, which
matches a model trained with EOS between documents. Sequences longer than the model's
context are cut from the left.

The result for each request is ``(sum of log p(continuation tokens), is_greedy)``.

Speed: the requests of one item (a question and its choices) usually share a long
prefix. Each item becomes one packed row, the prefix once followed by every request's
suffix, with a block attention mask and per-suffix position ids, so the prefix is computed
once per item instead of once per choice; the output head (a vocabulary-sized matrix
product) runs only at the scored positions. Rows are sorted by length before batching; on
a CPU a batch also ends where padding would exceed 10% of a row, so padding stays small.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch

Request = tuple[str, str]


@dataclass
class Encoded:
    tokens: list[int]  # model input: context + continuation without its last token
    targets: list[int]  # continuation tokens (scored at the last len(targets) positions)

    @property
    def first_scored(self) -> int:
        return len(self.tokens) - len(self.targets)


class LoglikScorer:
    def __init__(self, model, tokenizer, *, batch_size: int = 32, max_length: Optional[int] = None, add_prefix_token: bool = False, share_prefix: bool = True):
        self.model = model
        self.tokenizer = tokenizer
        self.batch_size = max(int(batch_size), 1)
        self.max_length = int(max_length or _model_max_length(model))
        self.add_prefix_token = add_prefix_token
        self.share_prefix = share_prefix
        self.device = next(model.parameters()).device
        self.body, self.head = _body_and_head(model)  # (None, None): score through the full forward
        self.prefix_token = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id

    # -- tokenisation (harness rules) ------------------------------------------------
    def _tok(self, text: str) -> list[int]:
        return list(self.tokenizer.encode(text))

    def encode(self, context: str, continuation: str) -> Encoded:
        if context == "":
            cont = list(self.tokenizer.encode(continuation, add_special_tokens=False))
            ctx, cont = ([self.prefix_token], cont) if cont[:1] != [self.prefix_token] else (cont[:1], cont[1:])
        else:
            spaces = len(context) - len(context.rstrip())
            if spaces:
                continuation = context[-spaces:] + continuation
                context = context[:-spaces]
            whole = self._tok(context + continuation)
            ctx = self._tok(context)
            cont = whole[len(ctx) :]
            if self.add_prefix_token and ctx[:1] != [self.prefix_token]:
                ctx = [self.prefix_token, *ctx]
        if not cont:
            raise ValueError(f"continuation {continuation!r} encodes to no tokens")
        full = (ctx + cont)[-(self.max_length + 1) :]
        return Encoded(tokens=full[:-1], targets=cont[-self.max_length :])

    # -- scoring ------------------------------------------------------------------------
    @torch.no_grad()
    def score(self, items: Sequence[Sequence[Request]], progress=None) -> list[list[tuple[float, bool]]]:
        """For each item (a list of requests), (log-likelihood, is_greedy) per request."""
        encoded = [[self.encode(c, x) for c, x in item] for item in items]
        results: list[list] = [[None] * len(e) for e in encoded]
        prefix = {i: _prefix_len(e) if self.share_prefix else 0 for i, e in enumerate(encoded)}
        alone = [i for i in range(len(items)) if prefix[i] == 0]
        shared = sorted((i for i in range(len(items)) if prefix[i] > 0), key=lambda i: -prefix[i])
        if alone:
            self._score_plain([(i, j) for i in alone for j in range(len(encoded[i]))], encoded, results)
            if progress:
                progress(len(alone))
        chunk = 8 * self.batch_size  # items whose prefix caches are held at once
        for start in range(0, len(shared), chunk):
            part = shared[start : start + chunk]
            self._score_shared(part, prefix, encoded, results)
            if progress:
                progress(len(part))
        return results

    def _score_plain(self, requests: list[tuple[int, int]], encoded, results) -> None:
        """One padded forward pass per batch of whole requests, longest first."""
        requests = sorted(requests, key=lambda ij: -len(encoded[ij[0]][ij[1]].tokens))
        lengths = [len(encoded[i][j].tokens) for i, j in requests]
        for batch in self._batches(requests, lengths, [1] * len(requests)):
            ids, mask = _pad([encoded[i][j].tokens for i, j in batch], self.device)
            if self.body is None:  # the model's own logits (its head does more than a linear map)
                out, head = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits, torch.nn.Identity()
            else:  # the head only at the scored positions
                out, head = self.body(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state, self.head
            spans = [(row, encoded[i][j].first_scored, encoded[i][j].targets) for row, (i, j) in enumerate(batch)]
            for (i, j), score in zip(batch, _score_spans(head, out, spans)):
                results[i][j] = score

    def _score_shared(self, items: list[int], prefix: dict, encoded, results) -> None:
        """Each item as one packed row: its shared prefix once, then every request's suffix, with
        a block attention mask (a suffix sees the prefix and its own earlier tokens, never another
        suffix) and position ids that restart after the prefix for every suffix. The output head
        runs only at the scored positions. Rows are batched longest first."""
        if self.body is None:
            self._score_plain([(i, j) for i in items for j in range(len(encoded[i]))], encoded, results)
            return
        width = {i: prefix[i] + sum(len(e.tokens) - prefix[i] for e in encoded[i]) for i in items}
        rows = sorted(items, key=lambda i: -width[i])
        for batch in self._batches(rows, [width[i] for i in rows], [len(encoded[i]) for i in rows]):
            self._packed_forward(batch, prefix, encoded, results)

    def _batches(self, rows: list, lengths: list[int], requests: list[int]):
        """Consecutive runs of `rows` (sorted longest first) holding at most batch_size requests.

        On a CPU a row shorter than 90% of its batch's first row starts a new batch: there,
        padding costs as much as real tokens and a smaller batch costs almost nothing (a GPU
        prefers the bigger batch).
        """
        tight = self.device.type == "cpu"
        start = 0
        while start < len(rows):
            end, n = start + 1, requests[start]
            while end < len(rows) and n + requests[end] <= self.batch_size and not (tight and lengths[end] < 0.9 * lengths[start]):
                n += requests[end]
                end += 1
            yield rows[start:end]
            start = end

    def _packed_forward(self, batch: list[int], prefix: dict, encoded, results) -> None:
        layouts = []  # per row: tokens, positions, segment ids, and per request (start of its scored span, request index)
        for i in batch:
            p = prefix[i]
            tokens, positions, segments, spans = list(encoded[i][0].tokens[:p]), list(range(p)), [0] * p, []
            for j, e in enumerate(encoded[i]):
                suffix = e.tokens[p:]
                spans.append((len(tokens) + e.first_scored - p, j))
                tokens += suffix
                positions += range(p, p + len(suffix))
                segments += [j + 1] * len(suffix)
            layouts.append((tokens, positions, segments, spans))
        width = max(len(t) for t, _, _, _ in layouts)
        ids = torch.zeros((len(batch), width), dtype=torch.long)
        pos = torch.zeros((len(batch), width), dtype=torch.long)
        seg = torch.full((len(batch), width), -1, dtype=torch.long)
        for r, (tokens, positions, segments, _) in enumerate(layouts):
            ids[r, : len(tokens)] = torch.tensor(tokens)
            pos[r, : len(tokens)] = torch.tensor(positions)
            seg[r, : len(tokens)] = torch.tensor(segments)
        q, k = seg[:, :, None], seg[:, None, :]
        causal = torch.ones((width, width), dtype=torch.bool).tril()
        allowed = causal & ((k == 0) | (k == q)) & (q >= 0)
        allowed |= torch.eye(width, dtype=torch.bool)  # padding rows attend to themselves (no empty softmax)
        dtype = next(self.model.parameters()).dtype
        mask = torch.zeros(allowed.shape, dtype=dtype).masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]
        hidden = self.body(input_ids=ids.to(self.device), attention_mask=mask.to(self.device), position_ids=pos.to(self.device), use_cache=False).last_hidden_state
        where, spans = [], []
        for r, i in enumerate(batch):
            for start, j in layouts[r][3]:
                where.append((i, j))
                spans.append((r, start, encoded[i][j].targets))
        for (i, j), score in zip(where, _score_spans(self.head, hidden, spans)):
            results[i][j] = score


def _body_and_head(model):
    """(the model without its output head, the head), or (None, None) when the head does more
    than a linear map (logit soft-capping or scaling) or the body is not found."""
    config = model.config
    if getattr(config, "final_logit_softcapping", None) or getattr(config, "logit_scale", None) not in (None, 1, 1.0):
        return None, None
    base = getattr(model, getattr(model, "base_model_prefix", "model"), None)
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if base is None or head is None or base is model:
        return None, None
    return base, head


def _prefix_len(requests: list[Encoded]) -> int:
    """Length of the token prefix all requests share, ending before any scored position."""
    limit = min(e.first_scored for e in requests)
    first = requests[0].tokens
    n = 0
    while n < limit and all(len(e.tokens) > n and e.tokens[n] == first[n] for e in requests):
        n += 1
    return n


def _score_spans(head, hidden: torch.Tensor, spans: list[tuple[int, int, list[int]]], chunk: int = 1024) -> list[tuple[float, bool]]:
    """(log-likelihood, is_greedy) of each (row, first position, target tokens) span of `hidden`
    (hidden states with the output `head`, or logits with an identity head): the output head and log-softmax run once over all the spans' positions (at most `chunk`
    positions at a time), not once per request: many small matrix products use two cores badly."""
    rows = torch.cat([torch.full((len(t),), r, dtype=torch.long) for r, _, t in spans]).to(hidden.device)
    cols = torch.cat([torch.arange(s, s + len(t)) for _, s, t in spans]).to(hidden.device)
    targets = torch.tensor([x for _, _, t in spans for x in t], device=hidden.device)
    picked = hidden[rows, cols]
    ll = torch.empty(len(targets), dtype=torch.float64, device=hidden.device)
    hit = torch.empty(len(targets), dtype=torch.bool, device=hidden.device)
    for a in range(0, len(targets), chunk):
        logprobs = torch.log_softmax(head(picked[a : a + chunk]).float(), dim=-1)
        ll[a : a + chunk] = logprobs.gather(1, targets[a : a + chunk, None])[:, 0].double()
        hit[a : a + chunk] = logprobs.argmax(dim=-1) == targets[a : a + chunk]
    sizes = [len(t) for _, _, t in spans]
    return [(float(x.sum()), bool(h.all())) for x, h in zip(ll.cpu().split(sizes), hit.cpu().split(sizes))]


def _pad(sequences: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, s in enumerate(sequences):
        ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _model_max_length(model) -> int:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048
