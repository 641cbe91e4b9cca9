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
prefix. Items are batched; the batch's shared prefixes are run once (with the KV cache,
no logits), the cache rows are repeated for each request, and only the distinct suffixes
are run on top, computing logits only there. Items are sorted by length so padding is small.
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
        order = sorted(range(len(items)), key=lambda i: -max(len(e.tokens) for e in encoded[i]))
        results: list[list[tuple[float, bool]]] = [[] for _ in items]
        batch: list[int] = []
        requests = 0
        for i in order:
            if batch and requests + len(encoded[i]) > self.batch_size:
                self._run(batch, encoded, results)
                if progress:
                    progress(len(batch))
                batch, requests = [], 0
            batch.append(i)
            requests += len(encoded[i])
        if batch:
            self._run(batch, encoded, results)
            if progress:
                progress(len(batch))
        return results

    def _run(self, batch: list[int], encoded, results) -> None:
        shared, alone = [], []
        for i in batch:
            (shared if self.share_prefix and _prefix_len(encoded[i]) > 0 else alone).append(i)
        if shared:
            self._run_shared(shared, encoded, results)
        if alone:
            self._run_plain(alone, encoded, results)

    def _run_plain(self, batch: list[int], encoded, results) -> None:
        reqs = [(i, e) for i in batch for e in encoded[i]]
        ids, mask = _pad([e.tokens for _, e in reqs], self.device)
        logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
        for row, (i, e) in enumerate(reqs):
            results[i].append(_continuation_score(logits[row, e.first_scored : len(e.tokens)], e.targets))

    def _run_shared(self, batch: list[int], encoded, results) -> None:
        prefix_lens = [_prefix_len(encoded[i]) for i in batch]
        prefixes = [encoded[i][0].tokens[:p] for i, p in zip(batch, prefix_lens)]
        p_ids, p_mask = _pad(prefixes, self.device)
        out = self.model(input_ids=p_ids, attention_mask=p_mask, use_cache=True, **_keep_one(self.model))
        cache = out.past_key_values
        rows = [(b, i, e) for b, i in enumerate(batch) for e in encoded[i]]
        cache.batch_select_indices(torch.tensor([b for b, _, _ in rows], device=self.device))
        suffixes = [e.tokens[prefix_lens[b] :] for b, _, e in rows]
        s_ids, s_mask = _pad(suffixes, self.device)
        mask = torch.cat([p_mask[[b for b, _, _ in rows]], s_mask], dim=1)
        start = torch.tensor([prefix_lens[b] for b, _, _ in rows], device=self.device)
        positions = start[:, None] + torch.arange(s_ids.shape[1], device=self.device)[None, :]
        logits = self.model(input_ids=s_ids, attention_mask=mask, position_ids=positions, past_key_values=cache, use_cache=True).logits
        for row, (b, i, e) in enumerate(rows):
            a = e.first_scored - prefix_lens[b]
            results[i].append(_continuation_score(logits[row, a : len(e.tokens) - prefix_lens[b]], e.targets))


def _prefix_len(requests: list[Encoded]) -> int:
    """Length of the token prefix all requests share, ending before any scored position."""
    limit = min(e.first_scored for e in requests)
    first = requests[0].tokens
    n = 0
    while n < limit and all(len(e.tokens) > n and e.tokens[n] == first[n] for e in requests):
        n += 1
    return n


def _continuation_score(logits: torch.Tensor, targets: list[int]) -> tuple[float, bool]:
    logprobs = torch.log_softmax(logits.float(), dim=-1)
    target = torch.tensor(targets, device=logits.device)
    ll = logprobs.gather(1, target[:, None]).sum().item()
    greedy = bool((logprobs.argmax(dim=-1) == target).all().item())
    return ll, greedy


def _pad(sequences: list[list[int]], device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(s) for s in sequences)
    ids = torch.zeros((len(sequences), width), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for r, s in enumerate(sequences):
        ids[r, : len(s)] = torch.tensor(s, dtype=torch.long)
        mask[r, : len(s)] = 1
    return ids.to(device), mask.to(device)


def _keep_one(model) -> dict:
    import inspect

    return {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}


def _model_max_length(model) -> int:
    for attr in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(model.config, attr, None)
        if isinstance(value, int) and value > 0:
            return value
    return 2048
