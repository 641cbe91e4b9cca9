"""`delt select` / `delt order` through the CLI: behaviour, pipelines, resume, determinism, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import read_rows, tree_digest, write_dataset
from delt_cli.dataset import read_manifest, shard_provenance

DELT = [sys.executable, "-m", "delt_cli"]


def test_select_top_r_keeps_dataset_order(cli, dataset, tmp_path):
    res = cli("select", dataset, "-o", tmp_path / "sel", "--by", "score", "--top-r", "0.25")
    assert res.exit_code == 0, res.output
    assert res.stdout.strip() == str(tmp_path / "sel")
    rows = read_rows(tmp_path / "sel")
    assert rows.num_rows == 50
    n = rows.column("n").to_pylist()
    assert n == sorted(n)  # dataset order kept
    src = read_rows(dataset)
    top = sorted(range(200), key=lambda i: (-src.column("score")[i].as_py(), i))[:50]
    assert sorted(top) == n
    manifest = read_manifest(tmp_path / "sel")
    assert manifest["selection"]["rows_kept"] == 50 and manifest["command"] == "select"
    assert manifest["inputs"]["rows"] == 200 and len(manifest["inputs"]["shards"]) == 3
    assert all(s["fingerprint"] for s in manifest["inputs"]["shards"])


def test_other_columns_carried_with_types(cli, tmp_path):
    extra = {
        "tags": pa.array([["a", "b"]] * 30, pa.list_(pa.string())),
        "emb": pa.array([[0.5, 1.5]] * 30, pa.list_(pa.float16(), 2)),
        "flag": pa.array([True] * 30),
    }
    d = write_dataset(tmp_path / "in", 30, extra=extra)
    assert cli("order", d, "-o", tmp_path / "ord", "--method", "sort", "--by", "score").exit_code == 0
    schema = pq.read_schema(sorted((tmp_path / "ord").glob("*.parquet"))[0])
    src = pq.read_schema(d / "shard-000.parquet")
    assert schema.remove_metadata() == src.remove_metadata()


def test_provenance_in_shard_metadata(cli, dataset, tmp_path):
    cli("order", dataset, "-o", tmp_path / "o", "--method", "folding", "--by", "score", "--folds", "2")
    for path in (tmp_path / "o").glob("*.parquet"):
        prov = shard_provenance(pq.read_schema(path).metadata)
        assert prov["command"] == "order" and prov["args"]["folds"] == 2
        assert prov["input"]["fingerprint"] and prov["version"]
        assert "output" not in prov["args"]


def test_order_folding_through_cli(cli, dataset, tmp_path):
    res = cli("order", dataset, "-o", tmp_path / "o", "--method", "folding", "--by", "score", "--shard-rows", "30")
    assert res.exit_code == 0, res.output
    names = [p.name for p in sorted((tmp_path / "o").glob("*.parquet"))]
    assert names == [f"part-{i:05d}.parquet" for i in range(7)]
    score = read_rows(tmp_path / "o").column("score").to_numpy()
    ramps = [score[0:67], score[67:134], score[134:200]]
    assert all(np.all(np.diff(r) >= 0) for r in ramps)
    assert np.sum(np.diff(score) < 0) == 2  # exactly L - 1 drops between the L ascending sweeps


def test_shell_pipeline(dataset, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    delt = " ".join(DELT)
    cmd = (
        f"{delt} select {dataset} -o {tmp_path}/sel --by score --top-r 0.5 "
        f"| {delt} order - -o {tmp_path}/ord --method folding --by score "
        f"| {delt} stats - --by score"
    )
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{tmp_path}/ord"
    assert read_rows(tmp_path / "ord").num_rows == 100
    assert "rows" in proc.stderr and "along the dataset order" in proc.stderr


def test_determinism_byte_identical(cli, dataset, tmp_path):
    for out in ("a", "b"):
        assert cli("order", dataset, "-o", tmp_path / out, "--method", "shuffle", "--seed", "7").exit_code == 0
        assert cli("select", tmp_path / "a", "-o", tmp_path / f"{out}-sel", "--random-r", "0.3", "--seed", "3").exit_code == 0
    for a, b in (("a", "b"), ("a-sel", "b-sel")):
        da, db = tree_digest(tmp_path / a), tree_digest(tmp_path / b)
        da.pop("manifest.json"), db.pop("manifest.json")
        assert da == db
    cli("order", dataset, "-o", tmp_path / "c", "--method", "shuffle", "--seed", "8")
    assert read_rows(tmp_path / "a").column("n").to_pylist() != read_rows(tmp_path / "c").column("n").to_pylist()


def test_existing_output_needs_overwrite_or_resume(cli, dataset, tmp_path):
    out = tmp_path / "o"
    assert cli("order", dataset, "-o", out, "--method", "shuffle").exit_code == 0
    before = tree_digest(out)
    res = cli("order", dataset, "-o", out, "--method", "shuffle")
    assert res.exit_code == 2 and "exists and is not empty; pass --overwrite" in res.stderr
    assert tree_digest(out) == before
    res = cli("order", dataset, "-o", out, "--method", "shuffle", "--resume")
    assert res.exit_code == 0 and "already finished" in res.stderr and res.stdout.strip() == str(out)
    assert tree_digest(out) == before  # nothing rewritten
    res = cli("order", dataset, "-o", out, "--method", "shuffle", "--seed", "5", "--overwrite")
    assert res.exit_code == 0
    assert read_manifest(out)["args"]["seed"] == 5


def test_zero_row_dataset(cli, tmp_path):
    d = write_dataset(tmp_path / "in", 0, shards=1)
    for args in (["select", d, "-o", tmp_path / "s", "--by", "score", "--top-r", "0.5"],
                 ["order", tmp_path / "s", "-o", tmp_path / "o", "--method", "folding", "--by", "score"]):
        res = cli(*args)
        assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "o")
    assert rows.num_rows == 0 and rows.column_names == ["id", "text", "score", "domain", "n"]


def test_drop_null(cli, tmp_path):
    score = np.arange(20, dtype=np.float64)
    score[[1, 7]] = np.nan
    d = write_dataset(tmp_path / "in", 20, score=score)
    res = cli("order", d, "-o", tmp_path / "o", "--method", "sort", "--by", "score")
    assert res.exit_code == 1 and "2 null or NaN" in res.stderr and "--drop-null" in res.stderr
    assert cli("order", d, "-o", tmp_path / "o", "--method", "sort", "--by", "score", "--drop-null").exit_code == 0
    assert read_rows(tmp_path / "o").num_rows == 18
    assert cli("select", d, "-o", tmp_path / "s", "--by", "score", "--top-k", "19", "--drop-null").exit_code == 0
    assert read_rows(tmp_path / "s").num_rows == 18


def test_budget_chars_and_length_column(cli, dataset, tmp_path):
    res = cli("select", dataset, "-o", tmp_path / "b", "--by", "score", "--budget-chars", "2000")
    assert res.exit_code == 0, res.output
    rows = read_rows(tmp_path / "b")
    used = sum(len(t) for t in rows.column("text").to_pylist())
    assert 1800 <= used <= 2000
    assert read_manifest(tmp_path / "b")["selection"]["length_kept"] == used
    res = cli("select", dataset, "-o", tmp_path / "c", "--by", "score", "--budget-tokens", "500", "--length-column", "n")
    assert res.exit_code == 0, res.output
    assert sum(read_rows(tmp_path / "c").column("n").to_pylist()) <= 500


def test_group_by_select_and_order(cli, dataset, tmp_path):
    res = cli("select", dataset, "-o", tmp_path / "s", "--by", "score", "--top-r", "0.3", "--group-by", "domain")
    assert res.exit_code == 0, res.output
    groups = read_manifest(tmp_path / "s")["selection"]["groups"]
    assert {g: v["rows_kept"] for g, v in groups.items()} == {"fiction": 20, "news": 20, "science": 20}
    res = cli("order", dataset, "-o", tmp_path / "o", "--method", "folding", "--by", "score", "--group-by", "domain")
    assert res.exit_code == 0, res.output
    dom = read_rows(tmp_path / "o").column("domain").to_pylist()
    for p in range(1, 201):  # the mix stays proportional all along the order
        for g in ("fiction", "news", "science"):
            assert abs(dom[:p].count(g) - p / 3) <= 2


def test_config_file_values_and_flag_precedence(cli, dataset, tmp_path):
    cfg = tmp_path / "order.yaml"
    cfg.write_text("method: folding\nby: score\nfolds: 4\nseed: 3\n")
    assert cli("order", dataset, "-o", tmp_path / "a", "--config", cfg).exit_code == 0
    m = read_manifest(tmp_path / "a")
    assert m["args"]["folds"] == 4 and m["args"]["method"] == "folding"
    assert cli("order", dataset, "-o", tmp_path / "b", "--config", cfg, "--folds", "2").exit_code == 0
    assert read_manifest(tmp_path / "b")["args"]["folds"] == 2
    cfg.write_text("top-r: 0.5\nby: score\n")
    assert cli("select", dataset, "-o", tmp_path / "c", "--config", cfg).exit_code == 0
    assert read_rows(tmp_path / "c").num_rows == 100


def _write_bad_schema(d):
    t = pq.read_table(d / "shard-002.parquet").drop_columns(["n"])
    pq.write_table(t, d / "shard-002.parquet")


def _truncate(d):
    p = d / "shard-001.parquet"
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])


def _dup_ids(d):
    t = pq.read_table(d / "shard-002.parquet")
    ids = t.column("id").to_pylist()
    ids[-1] = "doc-000000"
    pq.write_table(t.set_column(0, "id", pa.array(ids)), d / "shard-002.parquet")


def _nan_score(d):
    t = pq.read_table(d / "shard-000.parquet")
    s = t.column("score").to_numpy().copy()
    s[:3] = np.nan
    pq.write_table(t.set_column(2, "score", pa.array(s)), d / "shard-000.parquet")


BAD_CASES = [
    # (id, mutate the input dir, args after IN, exit code, expected message fragment)
    ("nonexistent", None, ["select", "{tmp}/nope", "--by", "score", "--top-k", "3"], 1, "nope: no such file or directory"),
    ("glob-nothing", None, ["select", "{tmp}/in/*.nothing", "--by", "score", "--top-k", "3"], 1, "glob matched no files"),
    ("empty-dir", None, ["select", "{tmp}/emptydir", "--by", "score", "--top-k", "3"], 1, "has no *.parquet shards"),
    ("truncated", _truncate, ["select", "{in}", "--by", "score", "--top-k", "3"], 1, "shard-001.parquet: corrupt or truncated"),
    ("schema", _write_bad_schema, ["order", "{in}", "--method", "shuffle"], 1, "shard-002.parquet: schema differs"),
    ("missing-by", None, ["select", "{in}", "--by", "nope", "--top-k", "3"], 1, "columns are: id, text, score, domain, n"),
    ("missing-text", None, ["select", "{in}", "--by", "score", "--budget-chars", "10", "--text-column", "body"], 1, "--text-column 'body': no such column"),
    ("missing-id", None, ["order", "{in}", "--method", "shuffle", "--id-column", "uid"], 1, "--id-column 'uid': no such column"),
    ("non-numeric", None, ["order", "{in}", "--method", "sort", "--by", "domain"], 1, "has type string, not a number"),
    ("nan", _nan_score, ["select", "{in}", "--by", "score", "--top-k", "3"], 1, "3 null or NaN value(s)"),
    ("dup-ids", _dup_ids, ["order", "{in}", "--method", "shuffle"], 1, "duplicated value(s), e.g. 'doc-000000'"),
    ("out-is-in", None, ["order", "{in}", "--method", "shuffle", "-o", "{in}"], 2, "must not be the input directory"),
    ("out-inside-in", None, ["order", "{in}", "--method", "shuffle", "-o", "{in}/sub"], 2, "must not be the input directory"),
    ("two-rules", None, ["select", "{in}", "--by", "score", "--top-k", "3", "--threshold", "0"], 2, "--top-k and --threshold"),
    ("r-range", None, ["select", "{in}", "--by", "score", "--top-r", "1.5"], 2, "--top-r 1.5: must be in [0, 1]"),
    ("folds", None, ["order", "{in}", "--method", "folding", "--by", "score", "--folds", "0"], 2, "--folds 0: must be >= 1"),
    ("no-by", None, ["select", "{in}", "--top-k", "3"], 2, "--by COLUMN is required"),
    ("not-writable", None, ["order", "{in}", "--method", "shuffle", "-o", "/proc/delt-test-out"], 1, "not writable"),
    ("unknown-config-key", None, ["order", "{in}", "--method", "shuffle", "--config", "{tmp}/bad.yaml"], 1, "unknown key 'fold'"),
]


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input(cli, tmp_path, case):
    _, mutate, args, code, message = case
    d = write_dataset(tmp_path / "in", 30, shards=3)
    (tmp_path / "emptydir").mkdir()
    (tmp_path / "bad.yaml").write_text("fold: 3\n")
    if mutate:
        mutate(d)
    before = tree_digest(d)
    args = [a.format(tmp=tmp_path, **{"in": d}) for a in args]
    if "-o" not in args:
        args += ["-o", str(tmp_path / "out")]
    res = cli(*args)
    assert res.exit_code == code, res.output
    err = res.stderr.strip()
    assert message in err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert res.stdout == ""
    assert not (tmp_path / "out").exists()
    assert not any(p.name.startswith(".out") for p in tmp_path.iterdir())  # no staging leftovers
    assert tree_digest(d) == before  # input untouched


def test_bad_codec_fails_before_any_output(cli, dataset, tmp_path, monkeypatch):
    monkeypatch.setenv("DELT_PARQUET_COMPRESSION", "zip")
    res = cli("order", dataset, "-o", tmp_path / "out", "--method", "shuffle")
    assert res.exit_code == 2 and "DELT_PARQUET_COMPRESSION='zip': expected one of zstd" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_debug_shows_traceback(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([*DELT, "select", str(tmp_path / "nope"), "-o", str(tmp_path / "o"), "--by", "s", "--top-k", "1", "--debug"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode != 0 and "Traceback" in proc.stderr
    proc = subprocess.run([*DELT, "select", str(tmp_path / "nope"), "-o", str(tmp_path / "o"), "--by", "s", "--top-k", "1"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_not_writable_directory_by_permissions(cli, dataset, tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    ro.chmod(0o555)
    res = cli("order", dataset, "-o", ro / "out", "--method", "shuffle")
    assert res.exit_code == 1 and "not writable" in res.stderr


def test_console_script_loads_only_the_command_it_runs(dataset, tmp_path):
    """`delt select` registers select alone, imports neither torch nor pandas, and still
    works; `delt --help` lists every command; pandas stays importable afterwards."""
    code = (
        "import sys; from delt_cli.cli.main import main; "
        f"rc = main(['--quiet', 'select', {str(dataset)!r}, '-o', {str(tmp_path / 'sel')!r}, '--by', 'score', '--top-r', '0.5']); "
        "print(rc, 'torch' in sys.modules, 'pandas' in sys.modules, 'delt_cli.cli.score' in sys.modules); "
        "import pyarrow as pa; import pandas; t = pa.table({'a': [1, 2]}); print(type(t.to_pandas()).__name__)"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[-2:] == ["0 False False False", "DataFrame"], proc.stdout
    assert read_rows(tmp_path / "sel").num_rows == 100
    helped = subprocess.run([*DELT, "--help"], capture_output=True, text=True, env=env)
    assert helped.returncode == 0
    for name in ("prepare", "score", "select", "order", "stats", "embed", "distill", "train", "eval", "report", "tasks", "assets"):
        assert f" {name} " in helped.stdout, name


def test_data_command_start_up_loads_less(dataset, tmp_path):
    """`delt select --lazy` loads numpy with one OpenBLAS thread (and leaves OPENBLAS_NUM_THREADS
    unset for child processes) and loads neither pyarrow.compute nor, with --quiet, rich; the lazy
    selection still works."""
    code = (
        "import json, os, sys; from delt_cli.cli.main import main; "
        f"rc = main(['--quiet', 'select', {str(dataset)!r}, '-o', {str(tmp_path / 'sel')!r}, '--by', 'score', '--top-r', '0.5', '--lazy']); "
        "rich = sorted(m for m in sys.modules if m == 'rich' or m.startswith('rich.')); "
        "from threadpoolctl import threadpool_info; "
        "print(json.dumps([rc, [p['num_threads'] for p in threadpool_info() if p.get('internal_api') == 'openblas'], "
        "'OPENBLAS_NUM_THREADS' in os.environ, 'pyarrow.compute' in sys.modules, rich]))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[2])
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    rc, blas, leaked, compute, rich = json.loads(proc.stdout.strip().splitlines()[-1])
    assert (rc, leaked, compute, rich) == (0, False, False, []), proc.stdout
    assert set(blas) <= {1}, proc.stdout  # (a numpy without OpenBLAS lists none)
    assert read_manifest(tmp_path / "sel")["selection"]["rows_kept"] == 100


def test_reader_of_the_pipe_gets_its_end_once_the_command_returns(dataset, tmp_path):
    """The console script hands stdout's end of the pipe back as soon as the command returns, not
    after the interpreter's exit (here an exit handler that takes 3 s and then prints): the next
    command of `delt select ... | delt order -` reads the path to end of file at once, finds the
    output complete, and nothing written at exit reaches it."""
    import time

    code = ("import atexit, sys, time; atexit.register(lambda: (time.sleep(3), print('late', flush=True))); "
            "from delt_cli.cli.main import main; sys.exit(main())")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    sel = tmp_path / "sel"
    proc = subprocess.Popen([sys.executable, "-c", code, "--quiet", "select", str(dataset), "-o", str(sel), "--by", "score", "--top-r", "0.5", "--lazy"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    started = time.monotonic()
    out = proc.stdout.read().decode()  # up to end of file
    at_eof = time.monotonic() - started
    assert out == f"{sel}\n"
    assert read_manifest(sel)["selection"]["rows_kept"] == 100  # complete when the reader starts
    assert proc.wait(timeout=60) == 0, proc.stderr.read()
    assert at_eof < time.monotonic() - started - 2.0  # the end came ~3 s before the process did


def test_timings_line_only_when_asked(dataset, tmp_path):
    """DELT_TIMINGS=1: one `delt-timings` JSON line on stderr with CPU seconds per phase (the
    benchmark's breakdown); stdout still carries only the output path."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "DELT_TIMINGS": "1"}
    proc = subprocess.run([*DELT, "order", str(dataset), "-o", str(tmp_path / "o"), "--method", "folding", "--by", "score"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(tmp_path / "o")
    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("delt-timings ")]
    assert len(lines) == 1
    t = json.loads(lines[0].split(" ", 1)[1])
    assert t["command"] == "order" and t["wall_s"] > 0 and t["process_cpu_s"] >= t["cpu_s"]["encode"] > 0
    assert {"ids", "keys", "decide", "decode", "bucket", "gather", "encode"} <= set(t["cpu_s"])
    env.pop("DELT_TIMINGS")
    proc = subprocess.run([*DELT, "select", str(dataset), "-o", str(tmp_path / "s"), "--by", "score", "--top-r", "0.5"],
                          capture_output=True, text=True, env=env)
    assert proc.returncode == 0 and "delt-timings" not in proc.stderr


def test_select_over_folders_with_repeated_shard_names_keeps_every_row_in_order(cli, tmp_path):
    """A glob over two folders matched two shards named part.parquet, and shards whose folder order
    is not their name order: select named its outputs after the inputs, so one overwrote the other
    ('kept 6 of 6 rows', 4 written) and the order changed. Outputs are now part-NNNNN in dataset order."""
    for folder, name, ids in (("d1", "b.parquet", ["x1", "x2"]), ("d2", "a.parquet", ["y1", "y2"]), ("d2", "b.parquet", ["z1", "z2"])):
        (tmp_path / folder).mkdir(exist_ok=True)
        pq.write_table(pa.table({"id": ids, "text": ["t", "u"], "score": [1.0, 2.0]}), tmp_path / folder / name)
    res = cli("select", str(tmp_path / "d*" / "*.parquet"), "-o", tmp_path / "sel", "--by", "score", "--top-r", "1.0")
    assert res.exit_code == 0, res.output
    out = sorted((tmp_path / "sel").glob("*.parquet"))
    assert [p.name for p in out] == ["part-00000.parquet", "part-00001.parquet", "part-00002.parquet"]
    assert [i for p in out for i in pq.read_table(p).column("id").to_pylist()] == ["x1", "x2", "y1", "y2", "z1", "z2"]
    res = cli("score", str(tmp_path / "d[12]" / "[ab].parquet"), "-o", tmp_path / "s", "--method", "length")
    assert res.exit_code == 1 and "two input shards are named b.parquet" in res.stderr
