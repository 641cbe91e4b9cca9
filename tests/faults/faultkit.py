"""Helpers for the fault-injection suite: real delt processes, real signals, real files."""

from __future__ import annotations

import hashlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import pytest

REPO = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent


def delt_env(extra: Optional[dict] = None) -> dict:
    """The environment of a delt process: this checkout first, and faultshim installed at start-up
    (tests/faults/inject/sitecustomize.py) in it and in the processes it starts."""
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), str(HERE / "inject"), str(HERE), os.environ.get("PYTHONPATH", "")]),
        "OMP_NUM_THREADS": "1",
        "DELT_IO_THREADS": "2",
        **(extra or {}),
    }


def _argv(args) -> list[str]:
    return [sys.executable, "-m", "delt_cli", *[str(a) for a in args]]


def _state(pid: int) -> tuple[Optional[str], Optional[int]]:
    """(state letter, parent pid) of a process, or (None, None) when it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None, None
    fields = stat.rsplit(")", 1)[1].split()
    return fields[0], int(fields[1])


def family(pid: int) -> list[int]:
    """`pid` and every process below it (the ranks that `--processes N` starts under torchrun)."""
    parents = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            _, ppid = _state(int(entry.name))
            if ppid is not None:
                parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(parents.get(p, []))
    return found


def delt(*args, env: Optional[dict] = None, fsize: Optional[int] = None, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run `delt ARGS` to the end. `fsize`: a file-size limit in bytes (ulimit -f) for the process."""
    preexec = None
    if fsize is not None:
        import resource

        def preexec():
            # Python ignores SIGXFSZ, so a write past the limit fails with EFBIG (as under `ulimit -f`).
            resource.setrlimit(resource.RLIMIT_FSIZE, (fsize, fsize))

    return subprocess.run(_argv(args), capture_output=True, text=True, env=delt_env(env), timeout=timeout, preexec_fn=preexec)


@dataclass
class Proc:
    """A delt process started in the background; its stdout/stderr go to files (a stopped
    process must never block on a full pipe)."""

    popen: subprocess.Popen
    out: Path
    err: Path
    args: list = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def stderr(self) -> str:
        return self.err.read_text(errors="replace")

    @property
    def stdout(self) -> str:
        return self.out.read_text(errors="replace")

    def state(self) -> Optional[str]:
        """The kernel's state letter (R, S, T, Z, ...), or None once reaped."""
        return _state(self.pid)[0]

    def stopped(self) -> list[int]:
        """The processes of this command (itself and those it started) stopped at their pause point."""
        return [p for p in family(self.pid) if _state(p)[0] == "T"]

    def wait_stopped(self, timeout: float = 300) -> None:
        """Wait until the process (or one it started) has stopped itself at its DELT_FAULT_PAUSE point."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise AssertionError(f"delt exited ({self.popen.returncode}) before its pause point: {self.stderr[-3000:]}")
            if self.state() == "T" or self.stopped():
                return
            time.sleep(0.005)
        raise AssertionError(f"delt did not reach its pause point in {timeout} s: {self.stderr[-3000:]}")

    def wait_for(self, path: Path, timeout: float = 300) -> None:
        """Poll until `path` exists (the process still running)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if path.exists():
                return
            if self.popen.poll() is not None:
                raise AssertionError(f"delt exited ({self.popen.returncode}) before {path} appeared: {self.stderr[-3000:]}")
            time.sleep(0.005)
        raise AssertionError(f"{path} did not appear in {timeout} s")

    def kill(self) -> None:
        for pid in reversed(family(self.pid)):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.popen.wait()

    def cont(self, timeout: float = 600) -> int:
        """Let the stopped process(es) go on; wait for the command to end; its exit status."""
        for pid in self.stopped() or [self.pid]:
            os.kill(pid, signal.SIGCONT)
        return self.popen.wait(timeout=timeout)


class Launcher:
    """Starts background delt processes and kills whatever is left of them at teardown."""

    def __init__(self, logs: Path):
        self.logs = logs
        self.started: list[Proc] = []

    def __call__(self, *args, pause: Optional[str] = None, env: Optional[dict] = None) -> Proc:
        n = len(self.started)
        out, err = self.logs / f"proc-{n}.out", self.logs / f"proc-{n}.err"
        self.logs.mkdir(parents=True, exist_ok=True)
        extra = {**(env or {}), **({"DELT_FAULT_PAUSE": pause} if pause else {})}
        with open(out, "wb") as o, open(err, "wb") as e:
            popen = subprocess.Popen(_argv(args), stdout=o, stderr=e, env=delt_env(extra))
        proc = Proc(popen, out, err, list(args))
        self.started.append(proc)
        return proc

    def cleanup(self) -> None:
        for proc in self.started:
            if proc.popen.poll() is None:
                proc.kill()


# -- what the tests look at ------------------------------------------------------------------


def shard_digests(directory: Path) -> dict[str, str]:
    """name -> sha256 of every *.parquet shard in `directory` (the bytes a rerun must reproduce)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(Path(directory).glob("*.parquet"))}


# Hidden entries a finished output keeps on purpose (a scorer's fit, for --resume: scoring/artifact.py).
KEPT_HIDDEN = {".delt-fit"}


def leftovers(output: Path) -> list[str]:
    """Hidden entries delt may leave for `output`: beside it (.NAME.*) and inside it (dot files)."""
    output = Path(output)
    found = [p.name for p in output.parent.iterdir() if p.name.startswith(f".{output.name}.")] if output.parent.is_dir() else []
    if output.is_dir():
        found += [f"{output.name}/{p.name}" for p in output.iterdir() if p.name.startswith(".") and p.name not in KEPT_HIDDEN]
    return sorted(found)


def error_line(result, *fragments: str, code: int = 1) -> str:
    """Assert: exit `code`, stderr exactly one `error: ...` line holding every fragment, no traceback,
    nothing on stdout. Returns the line."""
    rc = result.returncode
    err = result.stderr.strip()
    assert rc == code, f"exit {rc}, expected {code}: {err[-3000:]}"
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err[-3000:]
    for fragment in fragments:
        assert fragment in lines[0], f"{fragment!r} not in {lines[0]!r}"
    assert result.stdout == "", result.stdout
    return lines[0]


def result(proc: Proc) -> subprocess.CompletedProcess:
    """A finished background process as a CompletedProcess (for error_line)."""
    rc = proc.popen.wait()
    return subprocess.CompletedProcess(proc.args, rc, proc.stdout, proc.stderr)


@pytest.fixture
def launch(tmp_path):
    """Start background delt processes (`launch(*args, pause=...)`); any still running at the end is killed."""
    launcher = Launcher(tmp_path / "logs")
    yield launcher
    launcher.cleanup()


def tiny_bert(directory: Path) -> Path:
    """A 2-layer, 32-wide random-init BERT with the real MiniLM WordPiece tokenizer (fast embed/distill)."""
    import torch
    from transformers import AutoTokenizer, BertConfig, BertModel

    from delt_cli.infra.assets import minilm_dir

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_dir()))
    config = BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=37, max_position_embeddings=128)
    BertModel(config).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return directory


def file_digests(directory: Path, skip: tuple = ("manifest.json",)) -> dict[str, str]:
    """relative path -> sha256 of every file under `directory` except hidden ones and `skip` (by name)."""
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(Path(directory).rglob("*"))
        if p.is_file() and p.name not in skip and not any(part.startswith(".") for part in p.relative_to(directory).parts)
    }
