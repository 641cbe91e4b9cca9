"""Scorers as fit -> transform: `delt fit` writes an artifact, `delt score --fit` transforms any input
with it (a dataset, a glob, one shard) exactly as `delt score --method M` does in one command; the
runner keeps a one-command fit in the output (--resume reuses it, --overwrite refits); options are
declared once and generate the flags and config keys; every bad artifact or flag is one line."""

import dataclasses
import json
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from delt_cli.cli.methods import method_options
from delt_cli.scoring.options import specs
from delt_cli.scoring.registry import SCORERS, scorer_classes
from delt_cli.scoring.gotd.vectors import to_arrow
from conftest import delt
from gotd_corpus import write_pool


def columns(directory, names):
    paths = sorted(directory.glob("*.parquet"))
    assert paths, f"no shards in {directory}"
    table = pa.concat_tables([pq.read_table(p, columns=["id", *names]) for p in paths])
    return {c: table.column(c).to_pylist() for c in ["id", *names]}


@pytest.fixture(scope="module")
def text_pool(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    pool, target = write_pool(root, 24, shards=3, target=16, limit=400)
    return root, pool, target


@pytest.fixture(scope="module")
def vector_pool(tmp_path_factory):
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(3, 16))
    root = tmp_path_factory.mktemp("vec")
    for name, n, which in (("pool", 150, [0, 1, 2]), ("target", 20, [0])):
        idx = rng.choice(which, size=n)
        z = centers[idx] + rng.normal(size=(n, 16)) * 0.4
        z = (z / np.linalg.norm(z, axis=1, keepdims=True)).astype(np.float32)
        (root / name).mkdir()
        bounds = np.linspace(0, n, 4 if name == "pool" else 2).astype(int)
        for s in range(len(bounds) - 1):
            lo, hi = bounds[s], bounds[s + 1]
            pq.write_table(
                pa.table({"id": [f"{name}{i}" for i in range(lo, hi)], "domain": [f"d{d}" for d in idx[lo:hi]], "emb": to_arrow(z[lo:hi])}),
                root / name / f"part-{s:05d}.parquet",
            )
    return root


CASES = {
    "dsir": (["--target", "{target}", "--pool-size", "50"], ["dsir", "dsir_gumbel"]),
    "gotd": (["--target", "{vtarget}", "--pool-size", "100", "--seed", "3"], ["gotd", "gotd_potential"]),
    "length": ([], ["n_chars", "n_words"]),
}


@pytest.mark.parametrize("method", sorted(CASES))
def test_fit_then_transform_each_shard_equals_one_command(method, text_pool, vector_pool, tmp_path):
    root, pool, target = text_pool
    if method == "gotd":
        pool = vector_pool / "pool"
    flags, cols = CASES[method]
    flags = [f.format(target=target, vtarget=vector_pool / "target") for f in flags]
    delt("score", pool, "-o", tmp_path / "one", "--method", method, *flags)
    delt("fit", pool, "-o", tmp_path / "fit", "--method", method, *flags)
    shards = sorted(pool.glob("*.parquet"))
    for shard in shards:  # each shard alone, as a separate input
        delt("score", shard, "-o", tmp_path / f"alone-{shard.stem}", "--fit", tmp_path / "fit")
    delt("score", str(pool / "part-0000[12].parquet"), "-o", tmp_path / "glob", "--fit", tmp_path / "fit")  # a glob
    expect = columns(tmp_path / "one", cols)
    alone = [columns(tmp_path / f"alone-{s.stem}", cols) for s in shards]
    got = {c: sum((a[c] for a in alone), []) for c in expect}
    assert got == expect  # exactly the same values, row for row
    glob = columns(tmp_path / "glob", cols)
    n0 = pq.read_metadata(shards[0]).num_rows
    assert glob == {c: v[n0:] for c, v in expect.items()}
    fit = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert fit["method"] == method and fit["input"]["rows"] == sum(pq.read_metadata(s).num_rows for s in shards)
    manifest = json.loads((tmp_path / "alone-part-00000" / "manifest.json").read_text())
    assert manifest["fit"]["path"] == str(tmp_path / "fit") and manifest["scorer"]["method"] == method


def test_gotd_artifact_holds_the_potential_and_the_sample(vector_pool, tmp_path):
    delt("fit", vector_pool / "pool", "-o", tmp_path / "fit", "--method", "gotd", "--target", vector_pool / "target", "--pool-size", "100")
    files = json.loads((tmp_path / "fit" / "fit.json").read_text())["files"]
    assert set(files) == {"target.npy", "potential.npy", "sample.npy"}
    sample = np.load(tmp_path / "fit" / "sample.npy")
    assert len(sample) == 100 and len(set(sample.tolist())) == 100 and sample.max() < 150
    assert np.load(tmp_path / "fit" / "potential.npy").shape == (20,) and np.load(tmp_path / "fit" / "target.npy").shape == (20, 16)


def test_resume_reuses_the_fit_in_the_output_and_overwrite_refits(text_pool, tmp_path):
    root, pool, target = text_pool
    args = ["score", pool, "-o", tmp_path / "s", "--method", "dsir", "--target", target]
    delt(*args)
    first = {p.name: p.read_bytes() for p in sorted((tmp_path / "s").glob("*.parquet"))}
    assert (tmp_path / "s" / ".delt-fit" / "fit.json").is_file()
    (tmp_path / "s" / "manifest.json").unlink()  # as a run killed after its first shards leaves it
    (tmp_path / "s" / "part-00002.parquet").unlink()
    result = delt(*args, "--resume")
    assert "dsir: fit reused from" in result.output
    assert {p.name: p.read_bytes() for p in sorted((tmp_path / "s").glob("*.parquet"))} == first
    result = delt(*args, "--overwrite")
    assert "reused" not in result.output and "DSIR: fitted" in result.output
    # another --pool-size is another fit: --resume does not reuse it
    result = delt(*args[:-2], "--target", target, "--pool-size", "30", "--overwrite")
    assert json.loads((tmp_path / "s" / ".delt-fit" / "fit.json").read_text())["options"]["pool_size"] == 30


def test_fit_output_resume_and_refusal(text_pool, tmp_path):
    root, pool, target = text_pool
    args = ["fit", pool, "-o", tmp_path / "fit", "--method", "dsir", "--target", target]
    delt(*args)
    assert "already fitted" in delt(*args, "--resume").output
    result = delt(*args, ok=False)
    assert result.exit_code == 2 and "exists and is not empty" in result.output
    (tmp_path / "fit" / "notes.txt").write_text("mine")
    result = delt(*args, "--overwrite", ok=False)
    assert result.exit_code == 2 and "notes.txt" in result.output  # --overwrite never deletes what delt did not write


@pytest.fixture
def dsir_fit(text_pool, tmp_path):
    root, pool, target = text_pool
    delt("fit", pool, "-o", tmp_path / "fit", "--method", "dsir", "--target", target)
    return pool, tmp_path / "fit"


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--pool-size", "10"], "--pool-size 10: --fit {fit} was made with 50000; a transform cannot change the fit"),
        (["--text-column", "body"], "--text-column body: --fit {fit} was fitted on column 'text'"),
        (["--seed", "5"], "--seed 5: --fit {fit} was made with 0"),
        (["--method", "gotd"], "--method gotd: --fit {fit} was fitted for --method dsir"),
        (["--epsilon", "0.2"], "--epsilon: not an option of --method dsir (it is one of gotd)"),
        (["--rank", "2", "--world-size", "2"], "--rank 2: must be between 0 and --world-size - 1 (1)"),
        (["--rank", "1"], "--rank and --world-size: pass both"),
    ],
)
def test_transform_refuses_flags_that_would_change_the_fit(dsir_fit, tmp_path, flags, message):
    pool, fit = dsir_fit
    result = delt("score", pool, "-o", tmp_path / "o", "--fit", fit, *flags, ok=False)
    assert result.exit_code == 2 and message.format(fit=fit) in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()


def test_transform_accepts_runtime_flags_and_equal_values(dsir_fit, tmp_path):
    pool, fit = dsir_fit
    delt("score", pool, "-o", tmp_path / "o", "--fit", fit, "--pool-size", "50000", "--column", "w")
    assert "w_gumbel" in pq.read_schema(tmp_path / "o" / "part-00000.parquet").names


def test_bad_artifacts_are_one_line_and_write_nothing(dsir_fit, tmp_path, vector_pool):
    pool, fit = dsir_fit

    def refused(artifact, message, code=1, source=pool):
        result = delt("score", source, "-o", tmp_path / "o", "--fit", artifact, ok=False)
        assert result.exit_code == code and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not (tmp_path / "o").exists()

    refused(tmp_path / "missing", "no such directory")
    refused(pool, "not a fit artifact (no fit.json")
    other = tmp_path / "old"
    shutil.copytree(fit, other)
    manifest = json.loads((other / "fit.json").read_text())
    (other / "fit.json").write_text(json.dumps({**manifest, "delt_version": "0.0.1"}))
    refused(other, "fitted by delt 0.0.1, this is delt")
    (other / "fit.json").write_text(json.dumps(manifest))
    np.save(other / "raw_counts.npy", np.zeros(3))
    refused(other, "raw_counts.npy differs from what fit.json records")
    (other / "raw_counts.npy").unlink()
    refused(other, "raw_counts.npy is missing")
    # a fit of another method's input: GOT-D fitted on vectors, used on text without the embedding column
    delt("fit", vector_pool / "pool", "-o", tmp_path / "gfit", "--method", "gotd", "--target", vector_pool / "target")
    refused(tmp_path / "gfit", "'emb'")


def test_a_changed_model_is_refused(text_pool, tmp_path):
    from scoring_data import small_tokenizer, tiny_model_dir

    root, pool, target = text_pool
    tok = small_tokenizer(str(tmp_path / "tok"))
    model = tiny_model_dir(tmp_path / "tiny", tok, seed=1)
    delt("fit", pool, "-o", tmp_path / "fit", "--method", "perplexity", "--model", model, "--max-length", "32")
    fit = json.loads((tmp_path / "fit" / "fit.json").read_text())
    assert fit["facts"]["model_fingerprint"] and fit["options"]["max_length"] == 32
    tiny_model_dir(model, tok, seed=2)  # the same path, other weights
    result = delt("score", pool, "-o", tmp_path / "o", "--fit", tmp_path / "fit", ok=False)
    assert result.exit_code == 1 and "the model changed since the fit" in result.output and not (tmp_path / "o").exists()


def test_options_are_declared_once_and_generate_flags_and_config_keys(text_pool, tmp_path):
    options = method_options()  # raises if a field is declared twice with different flags or help
    for method, cls in scorer_classes().items():
        for spec in specs(cls.Options):
            assert spec.help and spec.name in options and method in options[spec.name].methods
    assert set(SCORERS) == set(scorer_classes())
    assert options["pool_size"].defaults == {"gotd": 50_000, "dsir": 50_000}
    assert options["max_length"].defaults["perplexity"] == 1024 and options["max_length"].defaults["lqs"] == 512
    help_text = delt("score", "--help").output
    for panel in ("GOT-D options (--method gotd)", "LQS options (--method lqs)", "DSIR options (--method dsir)", "Model options", "Target options"):
        assert panel in help_text, panel
    assert "--group-by" in delt("fit", "--help").output
    # YAML keys are the generated flags: valid ones apply, unknown ones are refused with the list
    root, pool, target = text_pool
    (tmp_path / "c.yaml").write_text(f"method: dsir\ntarget: {target}\npool-size: 40\n")
    delt("score", pool, "-o", tmp_path / "o", "--config", tmp_path / "c.yaml")
    assert json.loads((tmp_path / "o" / "manifest.json").read_text())["scorer"]["fit_rows"] == 40
    (tmp_path / "bad.yaml").write_text("pool-sise: 40\n")
    result = delt("score", pool, "-o", tmp_path / "o2", "--config", tmp_path / "bad.yaml", ok=False)
    assert result.exit_code == 1 and "unknown key 'pool-sise'" in result.output and "pool-size" in result.output


def test_an_option_of_another_method_is_a_usage_error(text_pool, tmp_path):
    root, pool, target = text_pool
    result = delt("score", pool, "-o", tmp_path / "o", "--method", "length", "--pool-size", "5", ok=False)
    assert result.exit_code == 2 and "--pool-size: not an option of --method length (it is one of gotd, dsir)" in result.output
    assert not (tmp_path / "o").exists()


def test_library_scorers_take_their_options_as_keywords():
    from delt_cli.scoring.dsir import DSIRScorer

    scorer = DSIRScorer(target="t", dsir_buckets=99)
    assert scorer.options.dsir_buckets == 99 and scorer.options.pool_size == 50_000
    assert dataclasses.replace(scorer.options, seed=4).seed == 4
    with pytest.raises(TypeError):
        DSIRScorer(target="t", buckets=99)  # the flag's name, nothing else
