"""Log-likelihoods: the batched shared-prefix scorer equals one-request-at-a-time transformers and lm-eval."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainkit import reference_loglik, task_dir, tiny_model_dir  # noqa: E402

from delt_cli.evaluation.loglik import LoglikScorer  # noqa: E402
from delt_cli.evaluation.tasks import load_task  # noqa: E402
from delt_cli.models.loading import load_causal_lm, load_tokenizer  # noqa: E402

pytestmark = pytest.mark.assets
REFERENCE: dict = {}  # one-request-at-a-time results, shared by the parametrised cases


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    path = tiny_model_dir(tmp_path_factory.mktemp("m") / "tiny")
    return path, load_causal_lm(path, dtype="float32", device="cpu"), load_tokenizer(path)


@pytest.fixture(scope="module")
def items():
    """Real items of four request shapes: shared context (ARC, HellaSwag), shared continuation
    (WinoGrande), single request (LAMBADA)."""
    tasks = task_dir("arc_easy", "hellaswag", "winogrande", "lambada")
    out = []
    for name, n in (("arc_easy", 8), ("hellaswag", 3), ("winogrande", 6), ("lambada", 4)):
        out += [[tuple(r) for r in item["requests"]] for item in load_task(tasks, name, n)]
    return out


@pytest.mark.parametrize(("share_prefix", "add_prefix_token"), [(True, False), (False, False), (True, True)])
def test_batched_scores_equal_one_request_at_a_time(tiny, items, share_prefix, add_prefix_token):
    _, model, tok = tiny
    scorer = LoglikScorer(model, tok, batch_size=7, share_prefix=share_prefix, add_prefix_token=add_prefix_token)
    got = scorer.score(items)
    for item, scores in zip(items, got):
        assert len(scores) == len(item)
        for (context, continuation), (ll, greedy) in zip(item, scores):
            e = scorer.encode(context, continuation)
            key = (tuple(e.tokens), tuple(e.targets))
            if key not in REFERENCE:
                REFERENCE[key] = reference_loglik(model, e)
            ref_ll, ref_greedy = REFERENCE[key]
            assert ll == pytest.approx(ref_ll, abs=2e-4)
            assert greedy == ref_greedy


def test_encoding_follows_the_harness(tiny):
    _, model, tok = tiny
    scorer = LoglikScorer(model, tok)
    e = scorer.encode("Question: 2+2?\nAnswer: ", "4")  # the trailing space moves to the continuation
    assert e.targets == tok.encode(" 4")
    assert tok.decode(e.tokens) == "Question: 2+2?\nAnswer:"
    empty = scorer.encode("", "Hello world")
    assert empty.tokens[0] == tok.eos_token_id and empty.targets == tok.encode("Hello world")  # GPT-2: no BOS, EOS is the prefix
    assert scorer.encode("Hi", " there").tokens[0] != tok.eos_token_id
    assert LoglikScorer(model, tok, add_prefix_token=True).encode("Hi", " there").tokens[0] == tok.eos_token_id


def test_long_requests_are_cut_from_the_left(tiny):
    _, model, tok = tiny
    scorer = LoglikScorer(model, tok, max_length=16)
    context = " ".join(f"word{i}" for i in range(60))
    e = scorer.encode(context, " end")
    assert len(e.tokens) == 16
    (ll, greedy), = scorer.score([[(context, " end")]])[0]
    assert ll == pytest.approx(reference_loglik(model, e)[0], abs=1e-4)


def test_scores_equal_lm_evaluation_harness(tiny, items):
    lm_eval = pytest.importorskip("lm_eval")
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM

    path, model, tok = tiny
    hf = HFLM(pretrained=str(path), device="cpu", batch_size=8, dtype="float32")
    flat = [r for item in items for r in item]
    theirs = hf.loglikelihood([Instance("loglikelihood", {}, r, i) for i, r in enumerate(flat)], disable_tqdm=True)
    ours = [s for item in LoglikScorer(model, tok, batch_size=16).score(items) for s in item]
    assert [g for _, g in ours] == [bool(g) for _, g in theirs]
    assert [ll for ll, _ in ours] == pytest.approx([ll for ll, _ in theirs], abs=2e-4)
    assert lm_eval is not None


def test_cpu_batches_end_where_padding_would_exceed_a_tenth(tiny):
    _, model, tok = tiny
    scorer = LoglikScorer(model, tok, batch_size=8)
    rows = list("abcdefg")
    lengths = [100, 95, 91, 89, 50, 46, 10]
    requests = [4, 4, 1, 1, 1, 1, 1]
    batches = list(scorer._batches(rows, lengths, requests))
    # a: 100; b joins (95 >= 90), c would bring 9 requests (> 8); c: 91, d: 89 >= 81.9; e: 50, f: 46 >= 45; g alone
    assert batches == [["a", "b"], ["c", "d"], ["e", "f"], ["g"]]
    assert [r for b in batches for r in b] == rows


def test_soft_capped_head_scores_from_the_models_own_logits(tiny, items):
    """A model whose head does more than a linear map (Gemma-2's logit soft-capping) is scored
    from its full logits, through the same batched span scoring; equal to one request at a time."""
    from transformers import Gemma2Config, Gemma2ForCausalLM

    _, _, tok = tiny
    torch.manual_seed(0)
    config = Gemma2Config(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                          num_key_value_heads=1, head_dim=16, final_logit_softcapping=3.0, max_position_embeddings=256)
    model = Gemma2ForCausalLM(config).eval()
    scorer = LoglikScorer(model, tok, batch_size=5)
    assert scorer.body is None
    for item, scores in zip(items, scorer.score(items)):
        for (context, continuation), (ll, greedy) in zip(item, scores):
            ref_ll, ref_greedy = reference_loglik(model, scorer.encode(context, continuation))
            assert ll == pytest.approx(ref_ll, abs=2e-4)
            assert greedy == ref_greedy
