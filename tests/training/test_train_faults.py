"""Resume from damaged, hostile or half-written checkpoints, and checkpoint writes that fail.

Most tests start from a copy of one finished tiny run with its `manifest.json` and `model/`
removed: the state a run killed after its step-4 checkpoint leaves (checkpoints step-2 and
step-4, latest.json naming step-4). Resuming it must end with the uninterrupted run's losses.
"""

import json
import os
import resource
import shutil
import signal
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trainkit import REPO, corpus, run_delt  # noqa: E402

from delt_cli.infra.errors import DeltError  # noqa: E402
from delt_cli.training import checkpoint as ckpt  # noqa: E402
from delt_cli.training.runlog import read_log  # noqa: E402

pytestmark = pytest.mark.assets

TINY = ["--model", "llama-tiny", "--tokenizer", "gpt2", "--seq-len", "32", "--batch-size", "4", "--grad-accum", "1", "--lr", "3e-3", "--warmup-steps", "2", "--log-every", "0"]
RUN = [*TINY, "--max-steps", "6", "--save-every", "2", "--keep-checkpoints", "3"]
STEP2, STEP4 = "step-00000002", "step-00000004"


def losses(run_dir: Path) -> list[float]:
    return [r["loss"] for r in read_log(run_dir / "metrics.jsonl")]


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


class RunsCode:
    """Unpickling this calls os.mkdir(marker): the marker proves that code ran."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.mkdir, (self.marker,))


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return corpus(tmp_path_factory.mktemp("corpus") / "data", n=60)


@pytest.fixture(scope="module")
def reference(data, tmp_path_factory):
    """A finished run: checkpoints at steps 2 and 4 (none at the last step, 6)."""
    from typer.testing import CliRunner

    from delt_cli.cli.app import app

    run_dir = tmp_path_factory.mktemp("reference") / "run"
    result = CliRunner().invoke(app, ["train", str(data), "-o", str(run_dir), *RUN])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["latest.json", STEP2, STEP4]
    return run_dir


@pytest.fixture
def interrupted(reference, tmp_path):
    """A copy of the reference run as a kill after the step-4 checkpoint leaves it."""
    run_dir = tmp_path / "run"
    shutil.copytree(reference, run_dir)
    shutil.rmtree(run_dir / "model")
    for name in ("manifest.json", "loss.png"):
        (run_dir / name).unlink()
    return run_dir


@pytest.fixture
def resume(cli, data):
    def run(run_dir: Path):
        return cli("train", data, "-o", run_dir, *RUN, "--resume")

    return run


# --- no code runs from a checkpoint file (weights_only loads) ---


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng-00000.pt"])
def test_a_planted_pickle_does_not_run_and_the_resume_names_the_file(interrupted, resume, tmp_path, name):
    marker = tmp_path / "code-ran"
    planted = interrupted / "checkpoints" / STEP4 / name
    torch.save({"state": {}, "param_groups": [], "payload": RunsCode(marker)}, planted)
    result = resume(interrupted)
    assert not marker.exists(), "unpickling the planted file ran code"
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert error_lines(result.output) == [
        f"error: cannot load {planted} (it holds Python objects other than tensors and plain values; loading them could run code, "
        f"so it is refused); the older checkpoint {STEP2} is complete: delete {planted.parent} and rerun with --resume to continue from it"
    ]


def test_checkpoint_files_hold_only_tensors_and_plain_values(reference):
    for path in sorted((reference / "checkpoints" / STEP4).glob("*.pt")):
        assert torch.serialization.get_unsafe_globals_in_checkpoint(path) == [], path.name


def test_rng_state_round_trips_through_a_weights_only_load(tmp_path):
    import random

    import numpy as np

    random.seed(1)
    np.random.seed(2)
    torch.manual_seed(3)
    random.gauss(0, 1)  # leaves a cached Gaussian in both
    np.random.randn()
    ckpt.torch_save(ckpt.rng_state(), tmp_path / "rng.pt")
    draws = (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(3).tolist())
    ckpt.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True))
    assert (random.random(), random.gauss(0, 1), np.random.rand(), np.random.randn(), torch.rand(3).tolist()) == draws


def test_an_rng_file_written_before_the_plain_form_still_resumes(interrupted, resume, reference):
    """Earlier delt versions pickled random.getstate() and np.random.get_state() as they are."""
    import random

    import numpy as np

    rng = interrupted / "checkpoints" / STEP4 / "rng-00000.pt"
    new = torch.load(rng, weights_only=True)
    random.setstate((new["python"]["version"], tuple(new["python"]["state"]), new["python"]["gauss_next"]))
    np.random.set_state(("MT19937", np.asarray(new["numpy"]["keys"], dtype=np.uint32), new["numpy"]["pos"], new["numpy"]["has_gauss"], new["numpy"]["cached_gaussian"]))
    torch.save({"python": random.getstate(), "numpy": np.random.get_state(), "torch": new["torch"]}, rng)
    assert torch.serialization.get_unsafe_globals_in_checkpoint(rng)  # really the old form
    result = resume(interrupted)
    assert result.exit_code == 0, result.output
    assert losses(interrupted) == losses(reference)


def test_no_weights_only_false_in_the_package():
    offenders = [str(p) for p in (REPO / "delt_cli").rglob("*.py") if "weights_only=False" in p.read_text()]
    assert offenders == []


# --- latest.json: contained, and a damaged one never restarts from step 0 ---


def fake_checkpoints(run_dir: Path, *names: str, pointer: str | None = None, incomplete: tuple = ()) -> Path:
    root = run_dir / "checkpoints"
    for name in names:
        (root / name).mkdir(parents=True)
        for required in ("trainer_state.json", "model.safetensors", "optimizer.pt", "scheduler.pt"):
            if not (name in incomplete and required == "optimizer.pt"):
                (root / name / required).write_text("{}")
    if pointer is not None:
        root.mkdir(parents=True, exist_ok=True)
        (root / "latest.json").write_text(pointer)
    return root


def test_latest_json_names_the_checkpoint(tmp_path):
    fake_checkpoints(tmp_path, "step-00000150", "step-00000175", pointer='{"step": 150, "dir": "step-00000150"}')
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000150"
    assert ckpt.latest_checkpoint(tmp_path / "empty") is None
    fake_checkpoints(tmp_path / "killed-in-first-save", pointer=None)
    (tmp_path / "killed-in-first-save" / "checkpoints" / ".step-00000002.tmp-123").mkdir(parents=True)
    assert ckpt.latest_checkpoint(tmp_path / "killed-in-first-save") is None


@pytest.mark.parametrize(
    "pointer, problem",
    [
        ("{not json", "is damaged"),
        ('{"step": 200}', "is damaged"),
        ('["step-00000200"]', "is damaged"),
        ('{"step": 200, "dir": "step-00000200"}', "names step-00000200, which is missing or incomplete"),
        (None, "is missing"),
    ],
)
def test_an_unusable_latest_json_falls_back_to_the_newest_complete_checkpoint(tmp_path, capsys, pointer, problem):
    fake_checkpoints(tmp_path, "step-00000150", "step-00000175", "step-00000200", pointer=pointer, incomplete=("step-00000200",))
    assert ckpt.latest_checkpoint(tmp_path).name == "step-00000175"
    err = capsys.readouterr().err
    assert "latest.json " + problem in err and "resuming from the newest complete checkpoint, step-00000175" in err


def test_an_unusable_latest_json_without_a_complete_checkpoint_is_an_error(tmp_path):
    fake_checkpoints(tmp_path, "step-00000150", pointer="{not json", incomplete=("step-00000150",))
    with pytest.raises(DeltError, match=r"latest.json is damaged .*, and .*checkpoints holds no complete checkpoint; rerun with --overwrite"):
        ckpt.latest_checkpoint(tmp_path)


@pytest.mark.parametrize("how", ["relative", "absolute", "symlink", "itself"])
def test_latest_json_may_not_name_a_directory_outside_checkpoints(tmp_path, how):
    outside = fake_checkpoints(tmp_path / "outside", "ckpt") / "ckpt"
    run_dir = tmp_path / "a" / "run"
    root = fake_checkpoints(run_dir, "step-00000150")
    name = {"relative": "../../../outside/checkpoints/ckpt", "absolute": str(outside), "symlink": "step-00000999", "itself": "."}[how]
    if how == "symlink":
        (root / name).symlink_to(outside)
    assert (root / name).resolve() == (outside if how != "itself" else root.resolve())
    (root / "latest.json").write_text(json.dumps({"step": 999, "dir": name}))
    with pytest.raises(DeltError, match=r"latest.json: 'dir' .* is not a checkpoint inside .*checkpoints; refusing to load files from there"):
        ckpt.latest_checkpoint(run_dir)


def test_resume_refuses_latest_json_naming_a_checkpoint_outside_the_run(interrupted, resume, tmp_path):
    outside = tmp_path / "outside" / "ckpt"
    shutil.copytree(interrupted / "checkpoints" / STEP4, outside)
    torch.save({"payload": RunsCode(tmp_path / "code-ran")}, outside / "optimizer.pt")
    (interrupted / "checkpoints" / "latest.json").write_text(json.dumps({"step": 4, "dir": "../../outside/ckpt"}))
    assert (interrupted / "checkpoints" / "../../outside/ckpt").resolve() == outside.resolve()
    before = (interrupted / "metrics.jsonl").read_text()
    result = resume(interrupted)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert error_lines(result.output) == [
        f"error: {interrupted / 'checkpoints' / 'latest.json'}: 'dir' '../../outside/ckpt' is not a checkpoint inside "
        f"{interrupted / 'checkpoints'}; refusing to load files from there"
    ]
    assert not (tmp_path / "code-ran").exists()
    assert (interrupted / "metrics.jsonl").read_text() == before


def test_resume_with_a_damaged_latest_json_continues_from_the_newest_complete_checkpoint(interrupted, resume, reference):
    (interrupted / "checkpoints" / "latest.json").write_text('{"step": 4, "dir": "step-000')
    result = resume(interrupted)
    assert result.exit_code == 0, result.output
    assert f"latest.json is damaged (not JSON naming a checkpoint); resuming from the newest complete checkpoint, {STEP4}" in result.output
    assert f"from {STEP4} (step 4 of 6)" in result.output
    assert losses(interrupted) == losses(reference)


def test_resume_with_a_damaged_latest_json_and_no_complete_checkpoint_fails(interrupted, resume):
    (interrupted / "checkpoints" / "latest.json").write_text("")
    for name in (STEP2, STEP4):
        (interrupted / "checkpoints" / name / "optimizer.pt").unlink()
    before = (interrupted / "metrics.jsonl").read_text()
    result = resume(interrupted)
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert error_lines(result.output) == [
        f"error: {interrupted / 'checkpoints' / 'latest.json'} is damaged (not JSON naming a checkpoint), and "
        f"{interrupted / 'checkpoints'} holds no complete checkpoint; rerun with --overwrite to start over"
    ]
    assert (interrupted / "metrics.jsonl").read_text() == before  # not restarted from step 0


# --- a damaged checkpoint file is named, with the way out ---


@pytest.mark.parametrize(
    "name, reason",
    [
        ("optimizer.pt", "RuntimeError: PytorchStreamReader failed"),
        ("scheduler.pt", "RuntimeError: PytorchStreamReader failed"),
        ("rng-00000.pt", ""),  # torch gives OSError EINVAL or a PytorchStreamReader error, depending on where it ends
        ("model.safetensors", "SafetensorError: "),
        ("trainer_state.json", "JSONDecodeError: "),
    ],
)
def test_a_truncated_checkpoint_file_is_named(interrupted, resume, name, reason):
    damaged = interrupted / "checkpoints" / STEP4 / name
    damaged.write_bytes(damaged.read_bytes()[: damaged.stat().st_size // 2])
    result = resume(interrupted)
    assert result.exit_code == 1 and "Traceback" not in result.output
    [line] = error_lines(result.output)
    assert line.startswith(f"error: cannot load {damaged} ({reason}")
    assert line.endswith(f"); the older checkpoint {STEP2} is complete: delete {damaged.parent} and rerun with --resume to continue from it")


def test_following_the_advice_for_a_truncated_optimizer_resumes_from_the_older_checkpoint(interrupted, resume, reference):
    damaged = interrupted / "checkpoints" / STEP4 / "optimizer.pt"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    assert resume(interrupted).exit_code == 1
    shutil.rmtree(damaged.parent)
    result = resume(interrupted)
    assert result.exit_code == 0, result.output
    assert f"names {STEP4}, which is missing or incomplete; resuming from the newest complete checkpoint, {STEP2}" in result.output
    assert losses(interrupted) == losses(reference)


def test_a_damaged_only_checkpoint_says_there_is_no_older_one(interrupted, resume):
    shutil.rmtree(interrupted / "checkpoints" / STEP2)
    damaged = interrupted / "checkpoints" / STEP4 / "optimizer.pt"
    damaged.write_bytes(b"")
    result = resume(interrupted)
    assert result.exit_code == 1
    [line] = error_lines(result.output)
    assert line.startswith(f"error: cannot load {damaged} (") and line.endswith("no older complete checkpoint exists; rerun with --overwrite to start over")


# --- a checkpoint write that hits a file-size limit (a real one: RLIMIT_FSIZE) ---


def limit_file_size(limit: int):
    def apply():  # runs in the child before exec
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # the write fails with EFBIG instead of killing the process
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


@pytest.mark.parametrize("failing", ["optimizer.pt", pytest.param("model.safetensors", marks=pytest.mark.slow)])
def test_a_file_size_limit_at_the_second_checkpoint_names_the_file_and_keeps_the_first(interrupted, resume, reference, data, failing):
    root = interrupted / "checkpoints"
    shutil.rmtree(root / STEP4)  # as killed after the first checkpoint: the resumed run writes the second
    (root / "latest.json").write_text(json.dumps({"step": 2, "dir": STEP2}))
    weights, optimizer = (root / STEP2 / "model.safetensors").stat().st_size, (root / STEP2 / "optimizer.pt").stat().st_size
    assert weights < optimizer
    # optimizer.pt: the weights fit, the optimizer state does not (torch.save's write fails);
    # model.safetensors: the weights do not fit either (safetensors' write fails)
    limit = (weights + optimizer) // 2 if failing == "optimizer.pt" else weights // 2
    result = run_delt("train", str(data), "-o", str(interrupted), *RUN, "--resume", preexec_fn=limit_file_size(limit), env={"OMP_NUM_THREADS": "1"})
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        f"error: cannot write checkpoint {root / STEP4} ({failing}: File too large); the previous checkpoint {STEP2} is intact; "
        "free space and rerun with --resume"
    ]
    assert sorted(p.name for p in root.iterdir()) == ["latest.json", STEP2]  # no temporary left
    assert ckpt.latest_checkpoint(interrupted) == root / STEP2
    result = resume(interrupted)
    assert result.exit_code == 0, result.output
    assert losses(interrupted) == losses(reference)
