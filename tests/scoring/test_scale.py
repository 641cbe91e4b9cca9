"""Past one process, as users run it (real subprocesses): independent ranks + `delt finish` equal one
process byte for byte; a 2-node torchrun on one machine equals one process; each shard transformed
alone in its own process with a fit artifact equals the one-command run, for gotd, dsir, perplexity,
scorer and kenlm. Bad rank and finish input: one line, nothing written."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from delt_cli.cli.app import app
from delt_cli.dataset import open_dataset
from delt_cli.infra.errors import DeltError
from delt_cli.scoring.gotd.vectors import to_arrow
from gotd_corpus import write_pool
from kenlm_data import corpus_model
from scoring_data import small_tokenizer, tiny_model_dir

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def env(**extra):
    base = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
    return {**base, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **extra}


def delt(*args, extra_env=None, check=True):
    proc = subprocess.run([sys.executable, "-m", "delt_cli", *map(str, args)], env=env(**(extra_env or {})), capture_output=True, text=True, timeout=600)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


def shard_bytes(directory):
    out = {p.name: p.read_bytes() for p in sorted(Path(directory).glob("*.parquet"))}
    assert out, f"no shards in {directory}"
    return out


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("scale")
    pool, target = write_pool(root, 12, shards=3, target=12, limit=300)
    tok = small_tokenizer(str(root / "tok"))
    model = tiny_model_dir(root / "tiny", tok, seed=3)
    return root, pool, target, model


# -- independent ranks + finish ----------------------------------------------------------------


@pytest.mark.slow
def test_three_independent_ranks_and_finish_equal_one_process(corpus, tmp_path):
    root, pool, target, model = corpus
    args = ["--method", "perplexity", "--model", model, "--max-length", "48"]
    delt("score", pool, "-o", tmp_path / "one", *args)
    out = tmp_path / "ranks"
    # rank 2 from a Slurm array's environment, ranks 0 and 1 from the flags, in any order
    delt("score", pool, "-o", out, *args, extra_env={"SLURM_ARRAY_TASK_ID": "2", "SLURM_ARRAY_TASK_COUNT": "3", "SLURM_ARRAY_TASK_MIN": "0"})
    rank0 = delt("score", pool, "-o", out, *args, "--rank", "0", "--world-size", "3")
    assert rank0.stdout == "" and not (out / "manifest.json").exists()
    with pytest.raises(DeltError, match="unfinished delt output"):
        open_dataset(out)  # readers refuse it until `delt finish`
    early = delt("finish", out, check=False)
    assert early.returncode == 1 and "1 of 3 shard(s) missing: part-00001.parquet (rank(s) 1 of 3)" in early.stderr
    delt("score", pool, "-o", out, *args, "--rank", "1", "--world-size", "3")
    done = delt("finish", out)
    assert done.stdout.strip() == str(out)
    assert shard_bytes(out) == shard_bytes(tmp_path / "one")  # byte for byte
    ours, theirs = (json.loads((d / "manifest.json").read_text()) for d in (out, tmp_path / "one"))
    assert ours["outputs"] == theirs["outputs"] and ours["inputs"] == theirs["inputs"]
    assert ours["content_args"] == theirs["content_args"] and ours["scorer"] == theirs["scorer"]
    assert ours["summary"] == theirs["summary"] and ours["processes"] == 3
    assert not list(out.glob(".delt-rank-*")) and open_dataset(out).num_rows == 48


def test_finish_refuses_mixed_runs_and_names_what_is_wrong(corpus, tmp_path):
    root, pool, target, model = corpus
    out = tmp_path / "o"

    def cli(*args, **kw):
        return runner.invoke(app, [str(a) for a in args], **kw)

    for r in (0, 1):
        assert cli("score", pool, "-o", out, "--method", "length", "--rank", r, "--world-size", "2").exit_code == 0
    # a shard of another run put in place of this run's
    assert cli("score", pool, "-o", tmp_path / "other", "--method", "length", "--column", "x").exit_code == 0
    (out / "part-00001.parquet").write_bytes((tmp_path / "other" / "part-00001.parquet").read_bytes())
    res = cli("finish", out)
    assert res.exit_code == 1 and "shards from two different runs: part-00001.parquet and part-00000.parquet differ in the arguments (--column)" in res.output
    assert not (out / "manifest.json").exists()
    # rank 1 rerun with other arguments: two runs' records
    assert cli("score", pool, "-o", out, "--method", "length", "--column", "y", "--rank", 1, "--world-size", 2, "--overwrite").exit_code == 0
    res = cli("finish", out)
    assert res.exit_code == 1 and "rank records of two different runs" in res.output and not (out / "manifest.json").exists()
    # a rank of another run into an output that holds this run's files: refused without --overwrite
    res = cli("score", pool, "-o", out, "--method", "compression", "--rank", 0, "--world-size", 2)
    assert res.exit_code == 2 and "holds files of another run" in res.output
    # not a rank output
    assert cli("score", pool, "-o", tmp_path / "plain", "--method", "length").exit_code == 0
    res = cli("finish", tmp_path / "plain")
    assert res.exit_code == 0 and "already finished" in res.output
    (tmp_path / "empty").mkdir()
    res = cli("finish", tmp_path / "empty")
    assert res.exit_code == 1 and "no rank records" in res.output


def test_bad_rank_input(corpus, tmp_path):
    root, pool, target, model = corpus

    def cli(*args, env=None):
        return runner.invoke(app, [str(a) for a in args], env=env)

    for args, message in (
        (["--rank", "3", "--world-size", "3"], "--rank 3: must be between 0 and --world-size - 1 (2)"),
        (["--rank", "-1", "--world-size", "3"], "--rank -1"),
        (["--world-size", "0", "--rank", "0"], "--world-size 0: must be >= 1"),
        (["--rank", "0", "--world-size", "2", "--processes", "2"], "--processes and --rank/--world-size"),
    ):
        res = cli("score", pool, "-o", tmp_path / "o", "--method", "length", *args)
        assert res.exit_code == 2 and message in res.output, res.output
    res = cli("score", pool, "-o", tmp_path / "o", "--method", "length", env={"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4", "SLURM_ARRAY_TASK_MIN": "0"})
    assert res.exit_code == 2 and "--rank 4" in res.output and "Slurm array" in res.output
    # global work on a rank: refused, pointing at delt fit
    res = cli("score", pool, "-o", tmp_path / "o", "--method", "dsir", "--target", target, "--rank", "0", "--world-size", "2")
    assert res.exit_code == 2 and "delt fit" in res.output
    res = cli("fit", pool, "-o", tmp_path / "f", "--method", "dsir", "--target", target, env={"SLURM_ARRAY_TASK_ID": "0", "SLURM_ARRAY_TASK_COUNT": "2"})
    assert res.exit_code == 2 and "run it as one job" in res.output
    assert not (tmp_path / "o").exists() and not (tmp_path / "f").exists()


# -- a 2-node torchrun on one machine --------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_node_torchrun_equals_one_process(corpus, tmp_path):
    """Two launches of torchrun (--nnodes 2, one process each), as on two machines sharing a
    filesystem: the DSIR fit runs once and is broadcast, the shards are split, the bytes equal one process."""
    root, pool, target, model = corpus
    args = ["score", pool, "-o", tmp_path / "two", "--method", "dsir", "--target", target, "--pool-size", "30"]
    port = free_port()
    launches = [
        subprocess.Popen(
            [sys.executable, "-m", "torch.distributed.run", "--nnodes", "2", "--node-rank", str(node), "--nproc-per-node", "1",
             "--master-addr", "127.0.0.1", "--master-port", str(port), "-m", "delt_cli", *map(str, args)],
            env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        for node in (0, 1)
    ]
    results = [p.communicate(timeout=600) for p in launches]
    for p, (stdout, stderr) in zip(launches, results):
        assert p.returncode == 0, stderr[-3000:]
    delt(*[str(a) for a in args[:3]], tmp_path / "one", *map(str, args[4:]))
    assert shard_bytes(tmp_path / "two") == shard_bytes(tmp_path / "one")
    manifest = json.loads((tmp_path / "two" / "manifest.json").read_text())
    assert manifest["processes"] == 2 and manifest["scorer"]["fit_rows"] == 30


# -- each shard alone, in its own process, with a fit artifact ----------------------------------


def tiny_scorer(path: Path, tok_dir: str) -> Path:
    """A distilled scorer (random 1-layer BERT + linear head) as `delt distill` saves one."""
    import torch
    from transformers import BertConfig, BertModel

    from delt_cli.models.loading import load_tokenizer
    from delt_cli.scoring.distilled import ScorerModel, new_head

    torch.manual_seed(0)
    tok = load_tokenizer(tok_dir)
    encoder = BertModel(BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=37, max_position_embeddings=128))
    ScorerModel(encoder, tok, new_head(32), {"max_length": 64, "column": "label"}).save(path)
    return path


def vector_pool(root: Path, pool: Path) -> tuple[Path, Path]:
    """The text pool with a seeded random 'emb' column, and a target of vectors near some of its rows."""
    rng = np.random.default_rng(1)
    for name, paths in (("vpool", sorted(pool.glob("*.parquet"))), ("vtarget", None)):
        (root / name).mkdir(exist_ok=True)
        if paths:
            for p in paths:
                t = pq.read_table(p)
                pq.write_table(t.append_column("emb", to_arrow(rng.normal(size=(t.num_rows, 8)).astype(np.float32))), root / name / p.name)
        else:
            pq.write_table(pa.table({"id": [f"t{i}" for i in range(10)], "emb": to_arrow(rng.normal(size=(10, 8)).astype(np.float32) + 0.5)}), root / name / "part-00000.parquet")
    return root / "vpool", root / "vtarget"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["gotd", "dsir", "perplexity", "scorer", "kenlm"])
def test_each_shard_alone_in_its_own_process_equals_one_run(corpus, tmp_path, method):
    root, pool, target, model = corpus
    source = pool
    if method == "gotd":
        source, vtarget = vector_pool(tmp_path, pool)
        flags, cols = ["--target", vtarget, "--pool-size", "20"], ["gotd", "gotd_potential"]
    elif method == "dsir":
        flags, cols = ["--target", target, "--pool-size", "20", "--seed", "2"], ["dsir", "dsir_gumbel"]
    elif method == "perplexity":
        flags, cols = ["--model", model, "--max-length", "40"], ["ppl", "ppl_nll", "ppl_tokens"]
    elif method == "scorer":
        flags, cols = ["--scorer", tiny_scorer(tmp_path / "scorer", str(root / "tok"))], ["label_pred"]
    else:
        pytest.importorskip("kenlm")
        texts = open_dataset(target).read_column("text").to_pylist()
        flags, cols = ["--model", corpus_model(texts, tmp_path / "lm.arpa")[1]], ["kenlm", "kenlm_nll", "kenlm_tokens"]
    delt("score", source, "-o", tmp_path / "all", "--method", method, *flags)
    delt("fit", source, "-o", tmp_path / "fit", "--method", method, *flags)
    shards = sorted(source.glob("*.parquet"))
    assert len(shards) == 3
    for shard in shards:
        delt("score", shard, "-o", tmp_path / f"alone-{shard.stem}", "--fit", tmp_path / "fit")
    for shard in shards:
        one = pq.read_table(tmp_path / "all" / shard.name, columns=["id", *cols])
        alone = pq.read_table(tmp_path / f"alone-{shard.stem}" / shard.name, columns=["id", *cols])
        assert alone.equals(one), (method, shard.name)  # the same values, exactly
    assert pq.read_table(tmp_path / "all" / shards[0].name).num_rows > 0


# -- the Slurm example, with a stand-in sbatch that runs each job at once -------------------------

FAKE_SBATCH = r"""#!/bin/bash
# A stand-in for sbatch: runs the job now (jobs are submitted in dependency order); an --array
# runs every index, last first, each with the environment a Slurm array task has.
array="" script=""
for a in "$@"; do
    case "$a" in
        --array=*) array=${a#--array=} ;;
        -*) ;;
        *) script=$a ;;
    esac
done
echo "$*" >> "$SBATCH_LOG"
if [ -n "$array" ]; then
    lo=${array%-*} hi=${array#*-}
    for ((i = hi; i >= lo; i--)); do
        SLURM_ARRAY_TASK_ID=$i SLURM_ARRAY_TASK_COUNT=$((hi - lo + 1)) SLURM_ARRAY_TASK_MIN=$lo bash "$script" >&2 || exit 1
    done
else
    bash "$script" >&2 || exit 1
fi
echo $((RANDOM + 1000))
"""


@pytest.mark.slow
def test_slurm_example_fit_array_finish(corpus, tmp_path):
    root, pool, target, model = corpus
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(FAKE_SBATCH)
    (bin_dir / "sbatch").chmod(0o755)
    path = f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}"
    out, fit = tmp_path / "scored", tmp_path / "fit"
    proc = subprocess.run(
        ["bash", str(REPO / "scripts" / "slurm" / "submit.sh"), str(pool), str(out), str(fit), "3", "dsir", "--target", str(target), "--pool-size", "25"],
        env=env(PATH=path, SBATCH_LOG=str(tmp_path / "sbatch.log")), capture_output=True, text=True, timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == str(out)
    log = (tmp_path / "sbatch.log").read_text().splitlines()
    assert len(log) == 3 and "--dependency=afterok:" in log[1] and "--array=0-2" in log[1] and "--dependency=afterok:" in log[2]
    delt("score", pool, "-o", tmp_path / "ref", "--fit", fit)
    assert shard_bytes(out) == shard_bytes(tmp_path / "ref")
    delt("score", pool, "-o", tmp_path / "one", "--method", "dsir", "--target", target, "--pool-size", "25")
    for shard in shard_bytes(out):
        assert pq.read_table(out / shard, columns=["dsir", "dsir_gumbel"]).equals(pq.read_table(tmp_path / "one" / shard, columns=["dsir", "dsir_gumbel"]))
    assert json.loads((out / "manifest.json").read_text())["processes"] == 3


def test_embed_ranks_and_finish_equal_one_process(corpus, tmp_path):
    import torch
    from transformers import BertConfig, BertModel

    from delt_cli.models.loading import load_tokenizer

    root, pool, target, model = corpus
    torch.manual_seed(0)
    tok = load_tokenizer(str(root / "tok"))
    encoder = tmp_path / "enc"
    BertModel(BertConfig(vocab_size=len(tok), hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=24, max_position_embeddings=128)).save_pretrained(str(encoder))
    tok.save_pretrained(str(encoder))
    args = ["--model", str(encoder), "--max-length", "64"]
    assert runner.invoke(app, ["embed", str(pool), "-o", str(tmp_path / "one"), *args]).exit_code == 0
    for r in (1, 0):
        res = runner.invoke(app, ["embed", str(pool), "-o", str(tmp_path / "ranks"), *args, "--rank", str(r), "--world-size", "2"])
        assert res.exit_code == 0, res.output
    assert not (tmp_path / "ranks" / "manifest.json").exists()
    assert runner.invoke(app, ["finish", str(tmp_path / "ranks")]).exit_code == 0
    assert shard_bytes(tmp_path / "ranks") == shard_bytes(tmp_path / "one")
    assert json.loads((tmp_path / "ranks" / "manifest.json").read_text())["scorer"]["dim"] == 16
