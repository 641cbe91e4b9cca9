"""`delt select --lazy`: a selection recorded as kept rows of its input, read by order and select
exactly as the eager selection's shards would be; bounded reading of large row groups."""

from __future__ import annotations

import base64
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
from delt_cli.dataset import read_manifest
from delt_cli.dataset.permute import parquet_pieces
from delt_cli.dataset.selected import RECORD_KEY, is_lazy_selection, open_selection

DELT = [sys.executable, "-m", "delt_cli"]


def _foreign(directory: Path, n: int, files: int = 2, seed: int = 1) -> Path:
    """Parquet as other tools write it: one row group per file (larger than delt's 16,384-row pieces)."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True)
    per = n // files
    for f in range(files):
        ids = [f"x-{f}-{i:06d}" for i in range(per)]
        table = pa.table({"id": ids, "text": [f"doc {f} {i} " + "w" * int(rng.integers(0, 30)) for i in range(per)], "score": rng.random(per)})
        pq.write_table(table, directory / f"data-{f}.parquet", row_group_size=per)
    return directory


def _same_rows(a: Path, b: Path) -> None:
    ta, tb = read_rows(a), read_rows(b)
    assert ta.num_rows == tb.num_rows
    assert ta.equals(tb)
    assert [p.name for p in sorted(a.glob("*.parquet"))] == [p.name for p in sorted(b.glob("*.parquet"))]


@pytest.mark.parametrize("order_args", [["--method", "folding", "--by", "score"], ["--method", "shuffle", "--seed", "3"],
                                        ["--method", "sort", "--by", "score", "--group-by", "domain", "--shard-rows", "17"]])
def test_lazy_then_order_equals_eager_then_order(cli, dataset, tmp_path, order_args):
    before = tree_digest(dataset)
    for mode in ("eager", "lazy"):
        flag = ["--lazy"] if mode == "lazy" else []
        res = cli("select", dataset, "-o", tmp_path / f"{mode}-sel", "--by", "score", "--top-r", "0.4", *flag)
        assert res.exit_code == 0, res.output
        assert res.stdout.strip() == str(tmp_path / f"{mode}-sel")
        res = cli("order", tmp_path / f"{mode}-sel", "-o", tmp_path / f"{mode}-ord", *order_args)
        assert res.exit_code == 0, res.output
    _same_rows(tmp_path / "eager-ord", tmp_path / "lazy-ord")
    assert tree_digest(dataset) == before
    # The lazy selection is one manifest: no shards, the kept rows as a bitmap of the input's rows.
    lazy = tmp_path / "lazy-sel"
    assert sorted(p.name for p in lazy.iterdir()) == ["manifest.json"]
    manifest = read_manifest(lazy)
    record = manifest[RECORD_KEY]
    assert manifest["outputs"]["rows"] == 80 and manifest["selection"]["rows_kept"] == 80
    assert [s["kept"] for s in record["source"]["shards"]] == [pq.read_metadata(p).num_rows for p in sorted((tmp_path / "eager-sel").glob("*.parquet"))]
    bits = np.unpackbits(np.frombuffer(base64.b64decode(record["kept"]), np.uint8), count=200).astype(bool)
    assert read_rows(dataset).filter(pa.array(bits)).equals(read_rows(tmp_path / "eager-sel"))
    # `select --lazy` reads no ids (this input's were never checked), so its record claims nothing;
    # `order` checked the ids of the rows it moved, as the eager `select` checked its input's
    assert "checks" not in manifest
    assert read_manifest(tmp_path / "lazy-ord")["checks"] == read_manifest(tmp_path / "eager-sel")["checks"] == {"unique_ids": "id"}


def test_select_reads_lazy_input_natively(cli, dataset, tmp_path):
    """Eager select of a lazy selection writes the rows (the materialize step); lazy of lazy composes."""
    cli("select", dataset, "-o", tmp_path / "e1", "--by", "score", "--top-r", "0.5")
    cli("select", tmp_path / "e1", "-o", tmp_path / "e2", "--by", "n", "--lowest", "--top-k", "30")
    assert cli("select", dataset, "-o", tmp_path / "l1", "--by", "score", "--top-r", "0.5", "--lazy").exit_code == 0
    res = cli("select", tmp_path / "l1", "-o", tmp_path / "l2", "--by", "n", "--lowest", "--top-k", "30", "--lazy")
    assert res.exit_code == 0, res.output
    assert read_manifest(tmp_path / "l2")[RECORD_KEY]["source"]["spec"] == str(dataset.resolve())  # points at real shards
    assert cli("select", tmp_path / "l2", "-o", tmp_path / "m", "--random-r", "1").exit_code == 0
    _same_rows(tmp_path / "e2", tmp_path / "m")
    assert cli("select", tmp_path / "l1", "-o", tmp_path / "m1", "--random-r", "1").exit_code == 0
    _same_rows(tmp_path / "e1", tmp_path / "m1")
    # budgets count the text of the kept rows only
    a = cli("select", tmp_path / "e1", "-o", tmp_path / "b-e", "--by", "score", "--budget-chars", "2000")
    b = cli("select", tmp_path / "l1", "-o", tmp_path / "b-l", "--by", "score", "--budget-chars", "2000")
    assert a.exit_code == b.exit_code == 0
    _same_rows(tmp_path / "b-e", tmp_path / "b-l")


def test_lazy_pipeline_through_stdin(dataset, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    delt = " ".join(DELT)
    cmd = (f"{delt} select {dataset} -o {tmp_path}/sel --by score --top-r 0.5 --lazy "
           f"| {delt} order - -o {tmp_path}/ord --method folding --by score")
    proc = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True, env=env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"{tmp_path}/ord"
    assert read_rows(tmp_path / "ord").num_rows == 100
    assert "recorded as a lazy selection" in proc.stderr


def test_large_row_groups_are_read_in_pieces(cli, tmp_path):
    """One 20k-row row group per file: pieces of at most 16,384 rows, same results as reading whole."""
    d = _foreign(tmp_path / "in", 40_000)
    pieces = list(parquet_pieces(d / "data-0.parquet"))
    assert [(s, t.num_rows) for s, t in pieces] == [(0, 16384), (16384, 3616)]
    assert pa.concat_tables([t for _, t in pieces]).equals(pq.read_table(d / "data-0.parquet"))
    wanted = np.zeros(20_000, bool)
    wanted[17_000] = True
    assert [s for s, _ in parquet_pieces(d / "data-0.parquet", wanted=wanted)] == [16384]
    for mode in ("eager", "lazy"):
        flag = ["--lazy"] if mode == "lazy" else []
        assert cli("select", d, "-o", tmp_path / f"{mode}-sel", "--by", "score", "--top-r", "0.5", *flag).exit_code == 0
        assert cli("order", tmp_path / f"{mode}-sel", "-o", tmp_path / f"{mode}-ord", "--method", "folding", "--by", "score").exit_code == 0
    _same_rows(tmp_path / "eager-ord", tmp_path / "lazy-ord")
    src = read_rows(d)
    score = src.column("score").to_numpy()
    top = np.sort(np.argsort(-score, kind="stable")[:20_000])
    s = np.argsort(score[top], kind="stable")
    expected = np.concatenate([top[s[l::3]] for l in range(3)])
    assert read_rows(tmp_path / "lazy-ord").column("id").to_pylist() == src.column("id").take(pa.array(expected)).to_pylist()


def test_output_inside_the_selected_input_is_refused(cli, dataset, tmp_path):
    assert cli("select", dataset, "-o", tmp_path / "l", "--by", "score", "--top-r", "0.5", "--lazy").exit_code == 0
    res = cli("order", tmp_path / "l", "-o", dataset / "sub", "--method", "shuffle")
    assert res.exit_code == 2 and "must not be the input directory" in res.stderr


def test_zero_rows_kept(cli, dataset, tmp_path):
    assert cli("select", dataset, "-o", tmp_path / "l", "--by", "score", "--top-k", "0", "--lazy").exit_code == 0
    ds = open_selection(tmp_path / "l")
    assert ds.num_rows == 0 and [s.num_rows for s in ds.shards] == [0, 0, 0]
    assert cli("order", tmp_path / "l", "-o", tmp_path / "o", "--method", "folding", "--by", "score").exit_code == 0
    rows = read_rows(tmp_path / "o")
    assert rows.num_rows == 0 and rows.column_names == ["id", "text", "score", "domain", "n"]


def test_overwrite_and_resume_of_a_lazy_output(cli, dataset, tmp_path):
    out = tmp_path / "l"
    assert cli("select", dataset, "-o", out, "--by", "score", "--top-r", "0.5", "--lazy").exit_code == 0
    res = cli("select", dataset, "-o", out, "--by", "score", "--top-r", "0.5", "--lazy", "--resume")
    assert res.exit_code == 0 and "already finished" in res.stderr
    res = cli("select", dataset, "-o", out, "--by", "score", "--top-r", "0.2", "--lazy", "--overwrite")
    assert res.exit_code == 0, res.output
    assert read_manifest(out)["selection"]["rows_kept"] == 40
    res = cli("select", dataset, "-o", out, "--by", "score", "--top-r", "0.2", "--overwrite")  # eager over lazy
    assert res.exit_code == 0, res.output
    assert not is_lazy_selection(out) and read_rows(out).num_rows == 40


def _rewrite_shard(d: Path, sel: Path) -> str:
    p = sorted(d.glob("*.parquet"))[1]
    t = pq.read_table(p)
    pq.write_table(t.set_column(2, "score", pa.array(t.column("score").to_numpy() + 1.0)), p)
    return p.name


def _remove_shard(d: Path, sel: Path) -> str:
    p = sorted(d.glob("*.parquet"))[2]
    p.unlink()
    return f"{p.name} is gone"


def _add_shard(d: Path, sel: Path) -> str:
    write_dataset(d.parent / "more", 5, shards=1)
    (d.parent / "more" / "shard-000.parquet").rename(d / "shard-003.parquet")
    return "shard-003.parquet was added"


def _edit_bits(d: Path, sel: Path) -> str:
    m = json.loads((sel / "manifest.json").read_text())
    bits = bytearray(base64.b64decode(m[RECORD_KEY]["kept"]))
    bits[0] ^= 0xFF
    m[RECORD_KEY]["kept"] = base64.b64encode(bytes(bits)).decode()
    (sel / "manifest.json").write_text(json.dumps(m))
    return "do not match their checksum"


def _drop_record(d: Path, sel: Path) -> str:
    m = json.loads((sel / "manifest.json").read_text())
    del m[RECORD_KEY]["source"]
    (sel / "manifest.json").write_text(json.dumps(m))
    return "record is incomplete or unreadable"


@pytest.mark.parametrize("mutate", [_rewrite_shard, _remove_shard, _add_shard, _edit_bits, _drop_record])
def test_changed_input_or_record_is_refused(cli, tmp_path, mutate):
    d = write_dataset(tmp_path / "in", 60, shards=3)
    sel = tmp_path / "sel"
    assert cli("select", d, "-o", sel, "--by", "score", "--top-r", "0.5", "--lazy").exit_code == 0
    expected = mutate(d, sel)
    for args in (["order", sel, "-o", tmp_path / "o", "--method", "shuffle"], ["select", sel, "-o", tmp_path / "o", "--random-r", "1"]):
        res = cli(*args)
        assert res.exit_code == 1, res.output
        err = res.stderr.strip()
        assert expected in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "o").exists()


def test_other_id_column_is_checked_on_the_kept_rows(cli, tmp_path):
    d = write_dataset(tmp_path / "in", 40, shards=2, extra={"uid": [f"u{i % 30}" for i in range(40)]})
    assert cli("select", d, "-o", tmp_path / "all", "--by", "n", "--top-r", "1", "--lazy").exit_code == 0
    res = cli("order", tmp_path / "all", "-o", tmp_path / "o", "--method", "shuffle", "--id-column", "uid")
    assert res.exit_code == 1 and "duplicated value(s)" in res.stderr
    # rows n < 30 have unique uids
    assert cli("select", d, "-o", tmp_path / "low", "--by", "n", "--lowest", "--top-k", "30", "--lazy").exit_code == 0
    assert cli("order", tmp_path / "low", "-o", tmp_path / "o", "--method", "shuffle", "--id-column", "uid").exit_code == 0
    assert read_rows(tmp_path / "o").num_rows == 30


def test_other_commands_read_a_lazy_selection_written_out(cli, dataset, tmp_path):
    """open_dataset (stats, score, train, ...) sees the rows an eager selection would have written."""
    from delt_cli.dataset import open_dataset

    cli("select", dataset, "-o", tmp_path / "e", "--by", "score", "--top-r", "0.3")
    cli("select", dataset, "-o", tmp_path / "l", "--by", "score", "--top-r", "0.3", "--lazy")
    ds = open_dataset(tmp_path / "l")
    assert ds.spec == str(tmp_path / "l") and ds.num_rows == 60
    assert [s.name for s in ds.shards] == [p.name for p in sorted((tmp_path / "e").glob("*.parquet"))]
    assert pa.concat_tables([t for _, t in ds.iter_tables()]).equals(read_rows(tmp_path / "e"))
    assert not ds.ids_verified()  # select --lazy read no ids: whoever needs them checked checks them
    ds.check_ids()
    # a lazy selection of an input whose ids were checked carries the record on
    cli("select", tmp_path / "e", "-o", tmp_path / "l2", "--by", "score", "--top-r", "0.5", "--lazy")
    assert read_manifest(tmp_path / "l2")["checks"] == {"unique_ids": "id"} and open_dataset(tmp_path / "l2").ids_verified()
    eager = cli("stats", tmp_path / "e", "--by", "score")
    lazy = cli("stats", tmp_path / "l", "--by", "score")
    assert eager.exit_code == lazy.exit_code == 0, lazy.output
    table = lambda out: [ln for ln in out.splitlines() if ln.lstrip("│ ").startswith(("score", "text chars", "rows"))]  # noqa: E731
    assert table(eager.stderr) and table(eager.stderr) == table(lazy.stderr)


def test_written_out_copy_is_removed_at_exit(dataset, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]), "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    subprocess.run([*DELT, "select", dataset, "-o", tmp_path / "l", "--by", "score", "--top-r", "0.5", "--lazy"], check=True, env=env, capture_output=True)
    proc = subprocess.run([*DELT, "stats", tmp_path / "l", "--by", "score"], env=env, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "is a lazy selection: writing its 100 rows to" in proc.stderr
    assert list((tmp_path / "tmp").iterdir()) == []


def test_lazy_selection_of_an_input_in_s3(cli, tmp_path, request):
    """The input in a bucket (local S3 server), the lazy selection on local disk: order reads the
    kept rows from the bucket; an s3:// output for --lazy is refused in one line."""
    from test_s3 import put

    if "s3" not in globals():
        pytest.skip("moto[server] (dev extra) runs the local S3 server")
    fs, bucket = request.getfixturevalue("s3")
    d = write_dataset(tmp_path / "in", 90, shards=3)
    for p in sorted(d.glob("*.parquet")):
        put(fs, p, f"{bucket}/in/{p.name}")
    base = f"s3://{bucket}/in"
    assert cli("select", d, "-o", tmp_path / "e", "--by", "score", "--top-r", "0.5").exit_code == 0
    assert cli("order", tmp_path / "e", "-o", tmp_path / "eo", "--method", "folding", "--by", "score").exit_code == 0
    res = cli("select", base, "-o", tmp_path / "l", "--by", "score", "--top-r", "0.5", "--lazy")
    assert res.exit_code == 0, res.output
    assert read_manifest(tmp_path / "l")[RECORD_KEY]["source"]["shards"][0]["path"] == f"{base}/shard-000.parquet"
    res = cli("order", tmp_path / "l", "-o", tmp_path / "lo", "--method", "folding", "--by", "score")
    assert res.exit_code == 0, res.output
    _same_rows(tmp_path / "eo", tmp_path / "lo")
    res = cli("select", base, "-o", f"s3://{bucket}/sel", "--by", "score", "--top-r", "0.5", "--lazy")
    assert res.exit_code == 2 and "a lazy selection is written to a local directory" in res.stderr


try:  # the local S3 server's fixtures, for the test above (skipped there without moto)
    from test_s3 import endpoint, s3  # noqa: E402,F401
except pytest.skip.Exception:
    pass


def test_lazy_over_folders_with_the_same_shard_names(cli, tmp_path):
    """A glob over two folders whose shards share names: written out, a lazy selection has the
    eager selection's rows and shard names (part-NNNNN in dataset order)."""
    write_dataset(tmp_path / "d1", 30, shards=2, seed=1)
    d2 = write_dataset(tmp_path / "d2", 30, shards=2, seed=2)
    for p in d2.glob("*.parquet"):  # ids unique across folders
        t = pq.read_table(p)
        pq.write_table(t.set_column(0, "id", pa.array([f"b-{v}" for v in t.column("id").to_pylist()])), p)
    spec = str(tmp_path / "d*" / "*.parquet")
    assert cli("select", spec, "-o", tmp_path / "e", "--by", "score", "--top-r", "0.5").exit_code == 0
    assert cli("select", spec, "-o", tmp_path / "l", "--by", "score", "--top-r", "0.5", "--lazy").exit_code == 0
    assert cli("select", tmp_path / "l", "-o", tmp_path / "m", "--random-r", "1").exit_code == 0
    assert all(p.name.startswith("part-") for p in (tmp_path / "e").glob("*.parquet"))
    _same_rows(tmp_path / "e", tmp_path / "m")
    for src in ("e", "l"):
        assert cli("order", tmp_path / src, "-o", tmp_path / f"{src}o", "--method", "folding", "--by", "score").exit_code == 0
    _same_rows(tmp_path / "eo", tmp_path / "lo")


@pytest.mark.parametrize("hold,many", [(None, None), (200_000, None), (200_000, 0)])
def test_permutation_with_many_pieces_and_row_groups_matches_numpy(tmp_path, monkeypatch, hold, many):
    """Output shards of several row groups, fed by several pieces of each input shard (one held
    set, or many when HOLD_BYTES is small), merged per row group or once per shard
    (MANY_BATCHES): the rows come out exactly in the computed order."""
    from delt_cli.dataset import permute
    from delt_cli.ordering import order_dataset
    from delt_cli.selection import parse_rule, select_dataset

    if hold:
        monkeypatch.setattr(permute, "HOLD_BYTES", hold)
    if many is not None:
        monkeypatch.setattr(permute, "MANY_BATCHES", many)
    rng = np.random.default_rng(5)
    d = tmp_path / "in"
    d.mkdir()
    n = 60_000
    for f in range(2):
        score = rng.random(n // 2)
        score[:50] = 0.5  # ties
        t = pa.table({"id": [f"r{f}-{i}" for i in range(n // 2)], "text": [f"t{i % 97}" * 3 for i in range(n // 2)], "score": score})
        pq.write_table(t, d / f"f{f}.parquet", row_group_size=n // 2)
    src = read_rows(d)
    for lazy in (False, True):
        sel, out = tmp_path / f"sel-{lazy}", tmp_path / f"ord-{lazy}"
        select_dataset(d, sel, by="score", rule=parse_rule(top_r=0.9), lazy=lazy)
        order_dataset(sel, out, method="folding", by="score", folds=3, shard_rows=25_000)
        score = src.column("score").to_numpy()
        keep = np.sort(np.argsort(-score, kind="stable")[: int(n * 0.9)])
        s = np.argsort(score[keep], kind="stable")
        expected = src.column("id").take(pa.array(keep[np.concatenate([s[l::3] for l in range(3)])])).to_pylist()
        assert read_rows(out).column("id").to_pylist() == expected
        assert [pq.read_metadata(p).num_rows for p in sorted(out.glob("*.parquet"))] == [25_000, 25_000, 4_000]


@pytest.mark.parametrize("lazy,many", [(False, 256), (True, 256), (True, 0)])
def test_dictionary_columns_with_different_dictionaries(tmp_path, monkeypatch, lazy, many):
    """A categorical column whose dictionary differs per row group and file (as pandas writes
    them) keeps its type and values through select and order, also when pass 1 writes a batch
    per piece (dictionary columns travel through the bucket files decoded)."""
    from delt_cli.dataset import permute
    from delt_cli.ordering import order_dataset
    from delt_cli.selection import parse_rule, select_dataset

    monkeypatch.setattr(permute, "HOLD_BYTES", 1)
    monkeypatch.setattr(permute, "MANY_BATCHES", many)
    d = tmp_path / "in"
    d.mkdir()
    for f in range(2):
        values = [["a", "b", "c"][i % 3] if i < 1500 else ["x", "y", f"z{f}"][i % 3] for i in range(3000)]
        t = pa.table({"id": [f"r{f}-{i}" for i in range(3000)], "text": ["t"] * 3000,
                      "score": np.random.default_rng(f).random(3000), "dom": pa.array(values).dictionary_encode()})
        pq.write_table(t, d / f"{f}.parquet", row_group_size=1000)
    select_dataset(d, tmp_path / "sel", by="score", rule=parse_rule(top_r=0.8), lazy=lazy)
    order_dataset(tmp_path / "sel", tmp_path / "ord", method="sort", by="score", shard_rows=700)
    src, out = read_rows(d), read_rows(tmp_path / "ord")
    assert out.schema.field("dom").type == src.schema.field("dom").type
    assert out.num_rows == 4800 and np.all(np.diff(out.column("score").to_numpy()) >= 0)
    dom = dict(zip(src.column("id").to_pylist(), src.column("dom").to_pylist()))
    assert [dom[i] for i in out.column("id").to_pylist()] == out.column("dom").to_pylist()


@pytest.mark.parametrize("many", [256, 0])
def test_nested_dictionary_columns_through_order(tmp_path, monkeypatch, many):
    """A dictionary nested in a struct (bucket batches then go through the IPC file reader, not
    the recorded byte offsets): rows keep their values, in the computed order, whether output
    shards take slices of many small batches or merge them once (MANY_BATCHES)."""
    from delt_cli.dataset import permute
    from delt_cli.ordering import order_dataset
    from delt_cli.selection import parse_rule, select_dataset

    monkeypatch.setattr(permute, "HOLD_BYTES", 1)
    monkeypatch.setattr(permute, "MANY_BATCHES", many)
    d = tmp_path / "in"
    d.mkdir()
    for f in range(2):
        kind = pa.array([["a", "b", "c"][i % 3] for i in range(3000)]).dictionary_encode()
        t = pa.table({"id": [f"r{f}-{i}" for i in range(3000)], "text": [f"t{i}" for i in range(3000)],
                      "score": np.random.default_rng(f).random(3000), "meta": pa.StructArray.from_arrays([kind], ["kind"])})
        pq.write_table(t, d / f"{f}.parquet", row_group_size=1000)
    select_dataset(d, tmp_path / "sel", by="score", rule=parse_rule(top_r=0.8), lazy=True)
    order_dataset(tmp_path / "sel", tmp_path / "ord", method="folding", by="score", shard_rows=700)
    src, out = read_rows(d), read_rows(tmp_path / "ord")
    assert out.schema.field("meta").type == src.schema.field("meta").type
    score = src.column("score").to_numpy()
    keep = np.sort(np.argsort(-score, kind="stable")[:4800])
    s = np.argsort(score[keep], kind="stable")
    expected = keep[np.concatenate([s[l::3] for l in range(3)])]
    assert out.column("id").to_pylist() == src.column("id").take(pa.array(expected)).to_pylist()
    assert out.column("meta").to_pylist() == src.column("meta").take(pa.array(expected)).to_pylist()


def _set_id(directory: Path, shard: str, row: int, value) -> None:
    t = pq.read_table(directory / shard)
    ids = t.column("id").to_pylist()
    ids[row] = value
    pq.write_table(t.set_column(0, "id", pa.array(ids, pa.string())), directory / shard)


def test_order_checks_the_ids_of_the_rows_it_moves(cli, tmp_path):
    """`select --lazy` reads no ids; `order` checks those of the rows it moves, on the pieces it
    decodes anyway: a duplicate among them (or a null) fails with the usual message and leaves
    no output; a duplicate among dropped rows only does not concern the output."""
    d = write_dataset(tmp_path / "in", 60, shards=3)  # rows n = 0..59, no manifest: ids never checked
    _set_id(d, "shard-002.parquet", 19, "doc-000000")  # row 59 repeats row 0's id
    both = tmp_path / "both"
    assert cli("select", d, "-o", both, "--by", "n", "--top-r", "1", "--lazy").exit_code == 0
    res = cli("order", both, "-o", tmp_path / "o", "--method", "folding", "--by", "score")
    assert res.exit_code == 1 and "1 duplicated value(s), e.g. 'doc-000000'" in res.stderr, res.output
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "o").exists()
    res = cli("order", d, "-o", tmp_path / "o", "--method", "shuffle")  # the same for an input read directly
    assert res.exit_code == 1 and "duplicated value(s), e.g. 'doc-000000'" in res.stderr and not (tmp_path / "o").exists()
    # keep rows 0..29: the repeat (row 59) is dropped; the output's ids are checked and unique
    low = tmp_path / "low"
    assert cli("select", d, "-o", low, "--by", "n", "--lowest", "--top-k", "30", "--lazy").exit_code == 0
    res = cli("order", low, "-o", tmp_path / "o", "--method", "folding", "--by", "score")
    assert res.exit_code == 0, res.output
    ids = read_rows(tmp_path / "o").column("id").to_pylist()
    assert len(ids) == len(set(ids)) == 30 and read_manifest(tmp_path / "o")["checks"] == {"unique_ids": "id"}
    # a null id among the moved rows
    _set_id(d, "shard-000.parquet", 3, None)
    assert cli("select", d, "-o", tmp_path / "nul", "--by", "n", "--lowest", "--top-k", "30", "--lazy").exit_code == 0
    res = cli("order", tmp_path / "nul", "-o", tmp_path / "o2", "--method", "shuffle")
    assert res.exit_code == 1 and "1 null value(s)" in res.stderr and not (tmp_path / "o2").exists()


def test_order_confirms_repeated_id_hashes_on_the_values(cli, tmp_path, monkeypatch):
    """Equal hashes of moved rows only make them suspect: with every hash colliding (a stand-in
    hash) distinct ids still pass, and the output is the one the real hash gives."""
    from delt_cli.dataset import permute

    d = write_dataset(tmp_path / "in", 50, shards=2)
    assert cli("order", d, "-o", tmp_path / "real", "--method", "folding", "--by", "score").exit_code == 0
    monkeypatch.setattr(permute, "hash64", lambda ids: np.full(len(ids), 7, dtype=np.uint64))  # IdCheck's hash
    confirmed = []
    monkeypatch.setattr(permute.Dataset, "check_ids", lambda self, real=permute.Dataset.check_ids: (confirmed.append(1), real(self))[1])
    res = cli("order", d, "-o", tmp_path / "stand-in", "--method", "folding", "--by", "score")
    assert res.exit_code == 0, res.output
    assert read_rows(tmp_path / "stand-in").equals(read_rows(tmp_path / "real"))
    assert confirmed  # the repeated hashes were confirmed on the values, which differ
