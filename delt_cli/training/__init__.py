"""Order-preserving causal-LM training: token cache, packed windows, schedule, checkpoints, loop.

    tokens.py      tokenize a dataset once, shard by shard, into a token cache (EOS after each document)
    batches.py     which packed sequences each process reads at each step (independent of process count)
    schedule.py    linear warmup, then cosine decay to a minimum learning rate
    checkpoint.py  atomic checkpoints (model, optimizer, scheduler, RNG, data position) and resume
    runlog.py      metrics.jsonl, the order audit log, the loss-curve PNG
    config.py      the hyperparameters of a run and how two runs differ
    loop.py        `train_run`: the training loop that ties them together
"""
