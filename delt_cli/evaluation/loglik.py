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
prefix. The prefixes are run once, batched by prefix length (KV cache kept per item, no
logits); then the distinct suffixes of all requests run on top of their item's cache,
batched by suffix length, computing logits only there. Sorting both passes by length keeps
padding, which costs as much as real tokens, small.
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
        for b in range(0, len(requests), self.batch_size):
            batch = requests[b : b + self.batch_size]
            ids, mask = _pad([encoded[i][j].tokens for i, j in batch], self.device)
            logits = self.model(input_ids=ids, attention_mask=mask, use_cache=False).logits
            for row, (i, j) in enumerate(batch):
                e = encoded[i][j]
                results[i][j] = _continuation_score(logits[row, e.first_scored : len(e.tokens)], e.targets)

    def _score_shared(self, items: list[int], prefix: dict, encoded, results) -> None:
        """Prefixes once (batched by prefix length, KV cache kept per item, no logits), then the
        suffixes of all requests on top of their item's cache (batched by suffix length)."""
        from transformers import DynamicCache

        kv: dict[int, list] = {}
        for b in range(0, len(items), self.batch_size):
            batch = items[b : b + self.batch_size]
            ids, mask = _pad([encoded[i][0].tokens[: prefix[i]] for i in batch], self.device)
            cache = self.model(input_ids=ids, attention_mask=mask, use_cache=True, **_keep_one(self.model)).past_key_values
            layers = getattr(cache, "layers", None)
            if layers is None or any(getattr(layer, "keys", None) is None for layer in layers):  # an unusual cache: score plainly
                self._score_plain([(i, j) for i in items for j in range(len(encoded[i]))], encoded, results)
                return
            for row, i in enumerate(batch):
                kv[i] = [(layer.keys[row, :, : prefix[i]], layer.values[row, :, : prefix[i]]) for layer in layers]
        requests = sorted(((i, j) for i in items for j in range(len(encoded[i]))), key=lambda ij: -(len(encoded[ij[0]][ij[1]].tokens) - prefix[ij[0]]))
        for b in range(0, len(requests), self.batch_size):
            batch = requests[b : b + self.batch_size]
            width = max(prefix[i] for i, _ in batch)
            p_mask = torch.zeros((len(batch), width), dtype=torch.long, device=self.device)
            pairs = []
            for layer in range(len(kv[batch[0][0]])):
                k0, v0 = kv[batch[0][0]][layer]
                keys = k0.new_zeros((len(batch), k0.shape[0], width, k0.shape[2]))
                values = v0.new_zeros((len(batch), v0.shape[0], width, v0.shape[2]))
                for row, (i, _) in enumerate(batch):
                    keys[row, :, : prefix[i]] = kv[i][layer][0]
                    values[row, :, : prefix[i]] = kv[i][layer][1]
                pairs.append((keys, values))
            for row, (i, _) in enumerate(batch):
                p_mask[row, : prefix[i]] = 1
            s_ids, s_mask = _pad([encoded[i][j].tokens[prefix[i] :] for i, j in batch], self.device)
            start = torch.tensor([prefix[i] for i, _ in batch], device=self.device)
            positions = start[:, None] + torch.arange(s_ids.shape[1], device=self.device)[None, :]
            logits = self.model(
                input_ids=s_ids, attention_mask=torch.cat([p_mask, s_mask], dim=1), position_ids=positions,
                past_key_values=DynamicCache(ddp_cache_data=pairs), use_cache=True,
            ).logits
            for row, (i, j) in enumerate(batch):
                e = encoded[i][j]
                results[i][j] = _continuation_score(logits[row, e.first_scored - prefix[i] : len(e.tokens) - prefix[i]], e.targets)


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
