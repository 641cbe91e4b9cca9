"""Numbers a reader can trust (issue 16, section 3): held-out samples that represent the set,
standard errors and noise flags in `delt report`, whole tables in logs, a steady ETA, examples
in `delt tasks --help`, and one-line usage errors from the real console script."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from delt_cli.infra import console as console_module
from delt_cli.infra.console import RateEstimate
from delt_cli.infra.progress_bar import LoggedProgress
from delt_cli.dataset import open_dataset, read_shard, write_shard
from delt_cli.evaluation.heldout import ratio_stderr, sample_rows
from delt_cli.evaluation.report import NOISE_MARK, figure, markdown, noise_flags, table_cells

DELT = Path(sys.executable).parent / "delt"
COMMANDS = ["prepare", "score", "select", "order", "stats", "embed", "distill", "train", "eval", "report", "tasks", "assets"]


def run_delt(*args, env=None, **kwargs) -> subprocess.CompletedProcess:
    """The installed console script, as a user runs it (stderr a pipe, not a terminal)."""
    full_env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    full_env.update(env or {})
    return subprocess.run([str(DELT), *map(str, args)], capture_output=True, text=True, env=full_env, timeout=120, **kwargs)


def grouped_dataset(directory: Path, sizes: dict[str, int], *, shards: int = 2) -> Path:
    """Rows grouped by domain in file order (all of the first domain first), as the old held-out split was."""
    rows = [(f"{d}-{i}", d, f"{d} document number {i} " + "word " * (5 + i % 7)) for d, n in sizes.items() for i in range(n)]
    per = -(-len(rows) // shards)
    directory.mkdir(parents=True)
    for s in range(shards):
        part = rows[s * per : (s + 1) * per]
        write_shard(pa.table({"id": [r[0] for r in part], "domain": [r[1] for r in part], "text": [r[2] for r in part]}), directory / f"part-{s:05d}.parquet")
    return directory


# -- 1. --limit on a held-out set takes a stratified sample -----------------------------------
def picked_domains(ds, picked) -> Counter:
    return Counter(d for shard, rows in zip(ds.shards, picked) for d in read_shard(shard.path, ["domain"]).column(0).take(rows).to_pylist())


def test_limit_takes_a_stratified_seeded_sample_not_the_first_rows(tmp_path):
    data = grouped_dataset(tmp_path / "h", {"fiction": 50, "wiki": 50, "news": 50, "narrative": 50, "science": 50}, shards=3)
    ds = open_dataset(str(data))
    picked = sample_rows(ds, 40, stratify="domain")
    assert picked_domains(ds, picked) == {d: 8 for d in ("fiction", "wiki", "news", "narrative", "science")}
    assert all(np.array_equal(a, b) for a, b in zip(picked, sample_rows(ds, 40, stratify="domain")))  # seeded
    # shares follow the sizes (largest remainder) and the sample is not the first rows of each domain
    uneven = open_dataset(str(grouped_dataset(tmp_path / "u", {"a": 70, "b": 20, "c": 10})))
    picked = sample_rows(uneven, 10, stratify="domain")
    assert picked_domains(uneven, picked) == {"a": 7, "b": 2, "c": 1}
    assert list(np.concatenate(picked)[:7]) != list(range(7))
    # no stratum: a seeded uniform sample; a limit that covers the set: every row
    plain = sample_rows(uneven, 10, stratify=None)
    assert sum(len(p) for p in plain) == 10 and len(set(np.concatenate(plain))) == 10
    assert sample_rows(uneven, 100, stratify="domain") is None and sample_rows(uneven, None, stratify="domain") is None


@pytest.mark.assets
def test_heldout_limit_scores_every_domain_with_standard_errors(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from trainkit import tiny_model_dir

    from delt_cli.evaluation.heldout import heldout_loss
    from delt_cli.models.loading import load_causal_lm, load_tokenizer

    model_dir = tiny_model_dir(tmp_path / "model")
    model, tok = load_causal_lm(model_dir, dtype="float32", device="cpu"), load_tokenizer(model_dir)
    data = grouped_dataset(tmp_path / "h", {"fiction": 50, "wiki": 30, "news": 20})
    # the reproduction of the issue: the first 40 rows are all fiction; the sample is not
    got = heldout_loss(model, tok, str(data), group_by="domain", limit=40, batch_size=8)
    assert {g: v["documents"] for g, v in got["groups"].items()} == {"fiction": 20, "wiki": 12, "news": 8}
    assert got["sample"] == {"limit": 40, "rows": 40, "stratified_by": "domain", "seed": 0}
    # the domain column stratifies without --group-by too
    pooled = heldout_loss(model, tok, str(data), limit=10, batch_size=8)
    assert pooled["documents"] == 10 and pooled["sample"]["stratified_by"] == "domain"
    for block in [got, *got["groups"].values()]:
        assert 0 < block["loss_stderr"] < block["loss"] and 0 < block["bits_per_byte_stderr"] < block["bits_per_byte"]


# -- 2. standard errors, n and noise flags in `delt report` ------------------------------------
def test_ratio_stderr_is_the_plain_standard_error_for_equal_lengths_and_calibrated_otherwise():
    rng = np.random.default_rng(0)
    per_doc = rng.gamma(2.0, 2.0, size=50)
    tokens = np.full(50, 30.0)
    assert ratio_stderr(per_doc * 30, tokens) == pytest.approx(per_doc.std(ddof=1) / math.sqrt(50))
    # unequal lengths: the standard error matches the spread of the loss over repeated samples
    losses, ses = [], []
    for _ in range(2000):
        tok = rng.integers(20, 400, size=40).astype(float)
        nats = tok * rng.normal(3.0, 0.5, size=40) + rng.normal(0, 30, size=40)
        losses.append(nats.sum() / tok.sum())
        ses.append(ratio_stderr(nats, tok))
    assert np.mean(ses) == pytest.approx(np.std(losses), rel=0.1)
    assert math.isnan(ratio_stderr(np.array([1.0]), np.array([2.0])))


def results(acc: float, n: int, loss: float = 5.0, loss_se: float | None = 0.05, docs: int = 250) -> dict:
    se = math.sqrt(acc * (1 - acc) / (n - 1))
    heldout = {"loss": loss, "tokens": 9000, "documents": docs, "groups": {"news": {"loss": loss + 0.5, "tokens": 3000, "documents": docs // 5}}}
    if loss_se is not None:
        heldout["loss_stderr"] = loss_se
        heldout["groups"]["news"]["loss_stderr"] = 2 * loss_se
    return {
        "model": {"path": "m"},
        "tasks": {
            "sciq": {"acc_norm": acc, "acc_norm_stderr": se, "items": n, "primary": "acc_norm", "score": acc},
            "heldout": heldout,
        },
    }


def table_rows(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("| ")]


def test_report_shows_standard_errors_and_n_and_flags_differences_within_noise():
    # the case: 7.5 vs 12.5 at n = 40 is noise; 4.9000 vs 5.5000 loss at se 0.05 is not
    runs = [("baseline", results(0.075, 40, loss=5.5)), ("delt", results(0.125, 40, loss=4.9))]
    text = markdown(runs)
    header, base, delt = table_rows(text)
    assert header == "| run | sciq (acc_norm, n=40) | avg | heldout loss (n=250) | heldout:news loss (n=50) |"
    se_base, se_delt = 100 * math.sqrt(0.075 * 0.925 / 39), 100 * math.sqrt(0.125 * 0.875 / 39)
    assert base == f"| baseline | 7.50 ± {se_base:.2f} | 7.50 ± {se_base:.2f} | 5.5000 ± 0.0500 | 6.0000 ± 0.1000 |"
    cells = [c.strip() for c in delt.strip("|").split("|")]
    assert cells[1] == f"12.50 ± {se_delt:.2f} {NOISE_MARK}" and cells[2].endswith(NOISE_MARK)
    assert not cells[3].endswith(NOISE_MARK) and not cells[4].endswith(NOISE_MARK)  # 0.6 nats apart: a result
    assert f"{NOISE_MARK} marks a number within noise of the first row (baseline)" in text
    assert "standard error" in text and "95%" in text
    # the same accuracies at n = 4,000 are a result
    big = [c.strip() for c in table_rows(markdown([("a", results(0.075, 4000)), ("b", results(0.125, 4000))]))[2].strip("|").split("|")]
    assert not big[1].endswith(NOISE_MARK) and not big[2].endswith(NOISE_MARK) and big[3].endswith(NOISE_MARK)  # equal losses: noise


def test_report_n_per_cell_when_runs_differ_and_no_stderr_in_old_results():
    text = markdown([("a", results(0.5, 40, loss_se=None)), ("b", results(0.5, 200, loss_se=None))])
    header, a, b = table_rows(text)
    assert "sciq (acc_norm)" in header and "(n=40)" in a and "(n=200)" in b
    assert "| 5.0000 |" in a  # no ± without a standard error, and no flag either
    assert "no standard error" in text


def test_report_plot_has_error_bars_and_marks_noise():
    runs = [("baseline", results(0.075, 40, loss=5.5)), ("delt", results(0.125, 40, loss=4.9))]
    fig = figure(runs)
    try:
        bench, loss = fig.axes
        errorbars = [c for ax in fig.axes for c in ax.containers if type(c).__name__ == "ErrorbarContainer"]
        assert len(errorbars) == 4  # one per run and panel
        se = [seg for c in errorbars[:2] for seg in c.lines[2][0].get_segments()]
        assert se[0][1][1] - se[0][0][1] == pytest.approx(2 * 100 * math.sqrt(0.075 * 0.925 / 39))  # ±1 SE
        hatched = [p for p in bench.patches if p.get_hatch()]
        assert len(hatched) == 2  # delt's sciq and avg bars; none in the loss panel
        assert not [p for p in loss.patches if p.get_hatch()]
        assert [t.get_text() for t in fig.legends[0].get_texts()] == ["baseline", "delt", "within noise of baseline"]
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    names, rows = table_cells(runs)
    assert names == ["sciq", "avg", "heldout", "heldout:news"] and noise_flags(rows)[1] == [True, True, False, False]


# -- 3. whole tables when stderr is not a terminal ---------------------------------------------
def test_stats_tables_are_not_cut_when_piped(tmp_path):
    long = "a_numeric_score_column_with_a_long_name"
    data = tmp_path / "d"
    data.mkdir()
    write_shard(pa.table({"id": ["a", "b"], "text": ["one two", "three"], long: [1.5, 2.5], "n_characters_of_something": [3, 4]}), data / "part-00000.parquet")
    result = run_delt("stats", data, "--by", long)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stderr
    lines = result.stderr.splitlines()
    assert any(long in line and "1.5" in line for line in lines)  # the row's name and its numbers on one line
    assert any("column" in line and "histogram" in line for line in lines)
    assert any("n_characters_of_something" in line for line in lines)


# -- 4. a steady ETA --------------------------------------------------------------------------
def alternating(progress_step):
    """400 items: in every 10, five take 10 s and five take 1 s (55 s per 10 items)."""
    clock = 0.0
    for i in range(400):
        clock += 10.0 if i % 10 < 5 else 1.0
        progress_step(clock, i + 1)


def test_rate_estimate_is_steady_under_uneven_batches_and_follows_a_lasting_change():
    estimate = RateEstimate(0.0)
    etas = []

    def step(now, done):
        estimate.update(now, done)
        if now > 300 and done < 390:
            etas.append((estimate.remaining(400), (400 - done) * 5.5))

    alternating(step)
    errors = [abs(got / truth - 1) for got, truth in etas]
    assert max(errors) < 0.1, max(errors)  # rich's 30 s window was off by -35% to +82% here
    # a lasting change of speed shows within a few horizons
    estimate = RateEstimate(0.0, horizon=60.0)
    for t in range(1, 601):
        estimate.update(float(t), float(t))  # 1 item/s
    for t in range(601, 1001):
        estimate.update(float(t), 600.0 + 3 * (t - 600))  # then 3 items/s
    assert estimate.rate == pytest.approx(3.0, rel=0.01)
    # progress a task starts with (a resumed run) is not speed
    resumed = RateEstimate(100.0, completed=500)
    resumed.update(110.0, 510)
    assert resumed.rate == pytest.approx(1.0) and resumed.remaining(600) == pytest.approx(90.0)
    assert RateEstimate(0.0).remaining(10) is None


def test_logged_progress_lines_have_a_steady_decreasing_eta(monkeypatch):
    clock = [0.0]
    buffer = io.StringIO()
    # `_file`, not `file`: restoring the `file` property would pin the console to the stream of
    # this moment (pytest's capture) for every later test of the process, whose CliRunner output
    # would then be lost
    real = console_module.console.real()  # the rich Console behind the lazy stand-in
    monkeypatch.setattr(real, "_file", buffer)
    bar = LoggedProgress(console=real, disable=True, every=60.0, get_time=lambda: clock[0])
    with bar:
        task = bar.add_task("scoring", total=400)

        def step(now, done):
            clock[0] = now
            bar.advance(task, 1)

        alternating(step)
    lines = [ln for ln in buffer.getvalue().splitlines() if "eta" in ln]
    assert len(lines) >= 30  # one a minute over 2,200 s
    etas = [float(ln.split("eta ")[1].split(" s")[0].replace(",", "")) for ln in lines]
    done = [int(ln.split(": ")[1].split("/")[0]) for ln in lines]
    assert all(b < a for a, b in zip(etas, etas[1:]))
    assert all(abs(eta / ((400 - d) * 5.5) - 1) < 0.15 for eta, d in zip(etas, done) if d < 390)


# -- 5. examples in `delt tasks --help` ------------------------------------------------------
@pytest.mark.parametrize("args", [["tasks", "--help"], ["tasks", "list", "--help"]])
def test_tasks_help_has_examples(args):
    result = run_delt(*args, env={"COLUMNS": "120"})
    assert result.returncode == 0
    assert "Examples" in result.stdout and "delt tasks list" in result.stdout


# -- 6. usage errors are one line from the real console script --------------------------------
def test_a_typo_in_a_choice_is_one_error_line(tmp_path):
    result = run_delt("order", tmp_path, "-o", tmp_path / "out", "--method", "foldng")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert "'--method'" in result.stderr and "foldng" in result.stderr and "folding" in result.stderr
    assert "╭" not in result.stderr and "Usage:" not in result.stderr


@pytest.mark.parametrize("command", COMMANDS)
def test_unknown_option_is_one_error_line_for_every_command(command):
    result = run_delt(command, "--no-such-flag")
    assert result.returncode == 2, result.stderr
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and "--no-such-flag" in result.stderr
    assert f"delt {command} -h" in result.stderr


@pytest.mark.parametrize(
    "args, names",
    [
        (["order", "IN"], "'--output'"),  # missing option
        (["select", "IN", "-o", "OUT", "--top-r", "abc"], "'--top-r'"),  # not a number
        (["ordr", "IN"], "'order'"),  # unknown command, with the suggestion
        (["tasks", "bld"], "'build'"),
    ],
)
def test_other_usage_errors_are_one_line(args, names):
    result = run_delt(*args)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ") and names in result.stderr


def test_help_and_no_arguments_are_unchanged():
    env = {"COLUMNS": "100"}
    for args in (["order", "--help"], ["--help"], ["tasks", "list", "--help"]):
        script = run_delt(*args, env=env)
        # typer's own standalone handling, as before the console script caught usage errors
        code = f"from delt_cli.cli.base import app, register; register(); app(args={args!r}, prog_name='delt')"
        direct = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={**os.environ, **env}, timeout=120)
        assert script.returncode == direct.returncode == 0 and script.stdout == direct.stdout and "Usage" in script.stdout
    bare = run_delt("tasks", env=env)
    assert bare.returncode == 2 and "Usage" in bare.stdout and "error" not in bare.stderr
    version = run_delt("--version")
    assert version.returncode == 0 and version.stdout.startswith("delt ")


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`delt tasks list | head -0`: the reader is gone before the output is written; no `error:` line,
    the status a Unix tool killed by SIGPIPE gives (141)."""
    proc = subprocess.Popen([str(DELT), "tasks", "list"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc.stdout.close()  # like a pipe whose reader exited
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 141, err
    assert "error" not in err.lower()


def test_stats_names_are_whole_even_on_a_narrow_console(monkeypatch):
    """A narrow console (a small terminal, or COLUMNS) shrinks the numbers, never the column names."""
    from rich.console import Console

    from delt_cli.dataset.stats import render

    buffer = io.StringIO()
    monkeypatch.setattr(console_module, "console", Console(file=buffer, width=40))
    summary = {"mean": 1.0, "std": 0.0, "min": 1, "p10": 1, "p50": 1, "p90": 1, "max": 1, "nulls": 0}
    render({"dataset": "d", "rows": 3, "shards": 1, "bytes": 10, "columns": {"a": "int64"}, "text_chars": summary,
            "numeric": {"a_very_long_column_name": summary}})
    lines = buffer.getvalue().splitlines()
    assert any("text chars" in line for line in lines) and any("a_very_long_column_name" in line for line in lines)
