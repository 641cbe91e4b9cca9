"""A fit artifact: the fitted state of a scorer as a directory that any process can read.

    FIT/fit.json          the method, the options of the fit, the delt version, the input it was
                          fitted on (spec, rows, fingerprint), the fit's facts (model references
                          and fingerprints, epsilon, convergence, ...) and its files with sha256
    FIT/<name>.npy        arrays (numpy .npy: exact)
    FIT/<name>.parquet    tables (exact)

`delt fit IN -o FIT` writes one; `delt score IN -o OUT --method M` writes one inside its
output (``OUT/.delt-fit``) when the method's fit reads the whole input, so `--resume`
reuses it; `delt score IN -o OUT --fit FIT` reads one. The directory is built beside its
place and renamed into it, so an artifact that exists is whole.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path
from typing import Optional

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from delt_cli import __version__
from delt_cli.infra.atomic import parse_temporary, staged_dir
from delt_cli.dataset.provenance import sha256_file, write_json_atomic
from delt_cli.infra.errors import DeltError
from delt_cli.scoring.base import Fitted
from delt_cli.scoring.options import fit_dict

FIT_NAME = "fit.json"
KIND = "delt-fit"
IN_OUTPUT = ".delt-fit"  # where `delt score --method M` keeps the fit inside its output


def write(directory: Path, scorer, fitted: Fitted, dataset, *, argv: Optional[list] = None) -> dict:
    """Save `fitted` (from `scorer.fit(dataset)`) as the artifact `directory`; returns its fit.json."""
    directory = Path(directory)
    with staged_dir(directory) as tmp:
        files = {}
        for name, array in sorted(fitted.arrays.items()):
            np.save(tmp / f"{name}.npy", np.ascontiguousarray(array), allow_pickle=False)
            files[f"{name}.npy"] = sha256_file(tmp / f"{name}.npy")
        for name, table in sorted(fitted.tables.items()):
            pq.write_table(table.replace_schema_metadata(None), tmp / f"{name}.parquet", compression="zstd")
            files[f"{name}.parquet"] = sha256_file(tmp / f"{name}.parquet")
        manifest = {
            "kind": KIND,
            "delt_version": __version__,
            "method": scorer.name,
            "options": fit_dict(scorer.options),
            "input": dataset.describe(with_shards=False),
            "facts": fitted.facts,
            "report": fitted.report,
            "files": files,
            "argv": list(argv or []),
            "python": platform.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        write_json_atomic(tmp / FIT_NAME, manifest)
    return manifest


def read_manifest(directory: Path, *, flag: str = "--fit") -> dict:
    """fit.json of an artifact, checked for kind and version (one-line errors)."""
    directory = Path(directory)
    path = directory / FIT_NAME
    if not directory.is_dir():
        raise DeltError(f"{flag} {directory}: no such directory (make one with `delt fit`)")
    if not path.is_file():
        raise DeltError(f"{flag} {directory}: not a fit artifact (no {FIT_NAME}; make one with `delt fit`)")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DeltError(f"{flag} {directory}: unreadable {FIT_NAME} ({exc})") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != KIND or "method" not in manifest:
        raise DeltError(f"{flag} {directory}: {FIT_NAME} is not a delt fit manifest")
    if manifest.get("delt_version") != __version__:
        raise DeltError(f"{flag} {directory}: fitted by delt {manifest.get('delt_version')}, this is delt {__version__}; refit with `delt fit`")
    return manifest


def load(directory: Path, manifest: dict, *, flag: str = "--fit") -> Fitted:
    """The fitted state of an artifact whose manifest was read by `read_manifest` (files checked)."""
    directory = Path(directory)
    fitted = Fitted(facts=dict(manifest.get("facts") or {}), report=dict(manifest.get("report") or {}))
    for name, digest in (manifest.get("files") or {}).items():
        path = directory / name
        if not path.is_file():
            raise DeltError(f"{flag} {directory}: {name} is missing (listed in {FIT_NAME})")
        if sha256_file(path) != digest:
            raise DeltError(f"{flag} {directory}: {name} differs from what {FIT_NAME} records (modified or corrupt); refit with `delt fit`")
        try:
            if name.endswith(".npy"):
                fitted.arrays[name[: -len(".npy")]] = np.load(path, allow_pickle=False)
            else:
                fitted.tables[name[: -len(".parquet")]] = pq.read_table(path)
        except (OSError, ValueError, pa.ArrowException) as exc:
            raise DeltError(f"{flag} {directory}: cannot read {name} ({exc})") from exc
    return fitted


def same_fit(manifest: Optional[dict], scorer, dataset) -> bool:
    """True when `manifest` is the fit `scorer` would make of `dataset` (for --resume)."""
    return (
        manifest is not None
        and manifest.get("method") == scorer.name
        and manifest.get("options") == json.loads(json.dumps(fit_dict(scorer.options)))
        and (manifest.get("input") or {}).get("fingerprint") == dataset.fingerprint
    )


def check_references(manifest: dict, scorer, directory: Path, *, flag: str = "--fit") -> None:
    """The models and files the transform reads must be the ones the fit recorded."""
    facts = manifest.get("facts") or {}
    for key, value in scorer.references().items():
        if key.endswith("fingerprint") and key in facts and facts[key] != value:
            what = key[: -len("_fingerprint")] or "model"
            raise DeltError(
                f"{flag} {directory}: the {what} changed since the fit (fingerprint {value[:12]}, the fit recorded {str(facts[key])[:12]}); "
                "refit with `delt fit`"
            )


def foreign_entries(directory: Path) -> list[str]:
    """What in an artifact directory delt did not write (for --overwrite)."""
    directory = Path(directory)
    try:
        listed = set(json.loads((directory / FIT_NAME).read_text()).get("files") or {})
    except (OSError, ValueError, AttributeError):
        listed = set()
    return [
        p.name + ("/" if p.is_dir() else "")
        for p in sorted(directory.iterdir())
        if p.name != FIT_NAME and p.name not in listed and parse_temporary(p) is None
    ]
