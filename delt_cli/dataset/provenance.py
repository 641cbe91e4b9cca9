"""Provenance: what produced a dataset, recorded in its manifest and in every shard.

`manifest.json` (one per output directory) names the command, its full
arguments, the tool version, the input shards with row counts and
fingerprints, the output shards with row counts, and command-specific facts
(for example how many rows a selection kept). The same provenance, without
timestamps and with the output location left out, goes into each shard's
Parquet key-value metadata under the key ``delt``, so equal inputs and
arguments give byte-identical shards.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from delt_cli import __version__
from delt_cli.infra.atomic import write_text_atomic

MANIFEST_NAME = "manifest.json"
METADATA_KEY = b"delt"

# Arguments that say where and how to write, not what to compute: kept out of shard
# metadata (and out of the run key that the processes of one run share) so that the same
# computation gives the same bytes wherever it is written and however it is split.
LOCATION_ARGS = {"output", "overwrite", "resume", "debug", "config", "quiet", "processes", "rank", "world_size"}


def _jsonable(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "value") and type(value).__module__ != "builtins":  # Enum
        return value.value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


@dataclass
class RunInfo:
    """The command that is running and its resolved arguments."""

    command: str
    args: dict[str, Any] = field(default_factory=dict)
    argv: list[str] = field(default_factory=lambda: list(sys.argv))
    started: float = field(default_factory=time.time)

    def content_args(self) -> dict[str, Any]:
        return {k: _jsonable(v) for k, v in sorted(self.args.items()) if k not in LOCATION_ARGS}

    def shard_metadata(self, inputs: dict, extra: dict | None = None) -> dict[bytes, bytes]:
        payload = {
            "command": self.command,
            "args": self.content_args(),
            "version": __version__,
            "input": inputs,
        }
        if extra:
            payload.update(extra)
        return {METADATA_KEY: json.dumps(payload, sort_keys=True, separators=(",", ":")).encode()}

    def manifest(self, *, inputs: dict, outputs: list[dict], extra: dict | None = None) -> dict:
        out = {
            "delt_version": __version__,
            "command": self.command,
            "args": {k: _jsonable(v) for k, v in sorted(self.args.items())},
            "content_args": self.content_args(),
            "argv": self.argv,
            "python": platform.python_version(),
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self.started)),
            "elapsed_s": round(time.time() - self.started, 3),
            "inputs": inputs,
            "outputs": {"rows": sum(o["rows"] for o in outputs), "num_shards": len(outputs), "shards": outputs},
        }
        if extra:
            out.update(_jsonable(extra))
        return out


def sha256_file(path: Path) -> str:
    """sha256 of a whole file, read in 4 MiB blocks (asset wheels, fit artifacts, KenLM models)."""
    import hashlib

    from delt_cli.dataset import remote

    h = hashlib.sha256()
    with remote.open_binary(path) as fh:  # a local file, or an s3:// object (RemotePath) read by ranges
        for block in iter(lambda: fh.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def write_json_atomic(path: Path, payload: dict) -> None:
    write_text_atomic(path, json.dumps(payload, indent=2, sort_keys=False, default=str) + "\n")


def read_manifest(directory: Path) -> dict | None:
    path = Path(directory) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def shard_provenance(metadata: dict[bytes, bytes] | None) -> dict | None:
    """The `delt` provenance stored in a shard's schema metadata, if any."""
    if not metadata or METADATA_KEY not in metadata:
        return None
    try:
        return json.loads(metadata[METADATA_KEY])
    except json.JSONDecodeError:
        return None
