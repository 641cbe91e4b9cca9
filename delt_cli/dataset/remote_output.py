"""Dataset outputs in S3-compatible object storage (`-o s3://bucket/prefix`).

An object store has no rename and no lock, so an `s3://` output is built in a local *mirror*
directory (`$DELT_S3_STAGING/<bucket>/<prefix>`, default `$DELT_CACHE/s3-staging/...`) by the
ordinary writers of dataset/writer.py, with their guard, staging and resume logic, and
published from there. writer.py calls four hooks:

* `split` (constructors): the output becomes the mirror; the URI is kept.
* `pull` (on entering, before any check): the checks the store allows (an output that is not
  empty needs --overwrite or --resume; --overwrite refuses objects delt did not write; the
  output may not be an input), then the mirror is made to start from what the store holds:
  emptied, or for --resume given the remote manifest (and, for per-shard steps, the remote
  shards it lacks). A per-shard step also deletes the remote manifest then, since shards are
  about to change.
* `upload` (per-shard steps, after each shard is written): the shard is uploaded whole (an
  object appears only when its upload completes), so another machine can resume from it.
* `publish` (when the local output is finished, manifest included): the remote manifest is
  deleted first, shards missing or different remotely are uploaded, remote shards the output
  no longer has are deleted, and the manifest is uploaded last; the mirror is then emptied.

What holds: a shard object is whole; the manifest is written last, and readers refuse an output
whose manifest is missing or does not list exactly its shards (dataset/reader.check_complete),
so a crash leaves an output that is refused, never one that is silently partial. What does not
hold: the previous output is not kept until the new one is complete (publishing replaces it
object by object); there is no lock, so two writers on different machines are not kept apart
(on one machine the mirror's lock is); `delt finish` of independent ranks needs a local output.
"""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from delt_cli.infra.atomic import remove, temporary_path
from delt_cli.infra.console import info
from delt_cli.dataset import remote
from delt_cli.dataset.provenance import MANIFEST_NAME
from delt_cli.infra.errors import DeltError, UsageError

_LOCAL = pafs.LocalFileSystem()


def staging_root() -> Path:
    if os.environ.get("DELT_S3_STAGING"):
        return Path(os.environ["DELT_S3_STAGING"])
    return Path(os.environ.get("DELT_CACHE", Path.home() / ".cache" / "delt_cli")) / "s3-staging"


def split(output) -> tuple[Path, str | None]:
    """(the local directory to write, the `s3://` URI to publish to, or None for a local output)."""
    if not remote.is_remote(output):
        return Path(output), None
    target = remote.RemotePath(output)
    if not target.key:
        raise UsageError(f"--output {target}: name a prefix inside the bucket, e.g. {target}/name")
    return staging_root() / target.bucket / target.key, target.uri


# -- before the run ---------------------------------------------------------------------------


def pull(mirror: Path, uri: str, *, inputs, overwrite: bool, resume: bool, shardwise: bool, independent: bool = False) -> None:
    """The store's side of an output's checks, and what the mirror needs from the store. Nothing
    local is deleted here: --overwrite clears the mirror the way it clears a local output."""
    target = remote.RemotePath(uri)
    if independent:
        raise UsageError(
            f"--output {uri}: independent ranks (--rank/--world-size) need an output on a shared filesystem for `delt finish`; "
            "write there and copy it to the bucket, or launch the processes together (--processes, torchrun)"
        )
    _refuse_input(target, inputs)
    objects = _objects(target)
    if not (overwrite or resume):
        if objects:
            more = "pass --resume to continue it or --overwrite to replace it" if shardwise else "pass --overwrite to replace it"
            raise UsageError(f"--output {uri}: exists and is not empty; {more}")
        if mirror.is_dir() and any(not p.name.startswith(".delt-write-probe") for p in mirror.iterdir()):
            raise UsageError(
                f"--output {uri}: a local copy of an unfinished earlier run is in {mirror}; pass --resume to continue it or --overwrite to start again"
            )
    foreign = [name for name in objects if not _delt_object(target, name)]
    if foreign:
        raise UsageError(
            f"--output {uri}: holds {len(foreign)} object(s) delt did not write (e.g. {foreign[0]}); "
            "they would be mixed with or replaced by the output: remove them or choose another output"
        )
    mirror.mkdir(parents=True, exist_ok=True)
    if resume and MANIFEST_NAME in objects:
        download(target / MANIFEST_NAME, mirror / MANIFEST_NAME)
    if resume and shardwise:
        for name, size in objects.items():
            local = mirror / name
            if name.endswith(".parquet") and not (local.is_file() and local.stat().st_size == size):
                download(target / name, local)
    if shardwise and MANIFEST_NAME in objects:
        _delete(target / MANIFEST_NAME)  # shards are about to change: readers refuse it until the new manifest


def _refuse_input(target: remote.RemotePath, inputs) -> None:
    for ds in inputs:
        for root in list(getattr(ds, "roots", [])) + [s.path for s in getattr(ds, "shards", [])]:
            if not isinstance(root, remote.RemotePath):
                continue
            if root == target or _inside(root, target) or _inside(target, root):
                raise UsageError(f"--output {target}: must not be the input {root}, contain it or be inside it")


def _inside(child: remote.RemotePath, parent: remote.RemotePath) -> bool:
    return child.uri.startswith(parent.uri + "/")


def _objects(target: remote.RemotePath) -> dict[str, int]:
    """Name -> size of every object under the prefix (names relative to it)."""
    base = target.fs_path + "/"
    return {
        info.path[len(base) :]: int(info.size)
        for info in remote.list_prefix(target, recursive=True)
        if info.type == pafs.FileType.File
    }


def _delt_object(target: remote.RemotePath, name: str) -> bool:
    """What delt writes in a dataset prefix: the manifest and Parquet shards with delt provenance."""
    if name == MANIFEST_NAME:
        return True
    if "/" in name or not name.endswith(".parquet"):
        return False
    from delt_cli.dataset.writer import is_delt_shard

    return is_delt_shard(target / name)


# -- during and after the run -----------------------------------------------------------------


def upload(path: Path, uri: str) -> None:
    """Upload one finished file under the output prefix, whole."""
    target = remote.RemotePath(uri) / Path(path).name
    try:
        pafs.copy_files(str(path), target.fs_path, source_filesystem=_LOCAL, destination_filesystem=target.filesystem)
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(
            f"cannot upload {Path(path).name} to {target} ({str(exc).splitlines()[0]}); finished shards are kept in {Path(path).parent}: rerun with --resume"
        ) from exc


def download(source: remote.RemotePath, path: Path) -> None:
    tmp = temporary_path(path)
    try:
        pafs.copy_files(source.fs_path, str(tmp), source_filesystem=source.filesystem, destination_filesystem=_LOCAL)
        os.replace(tmp, path)
    except (pa.ArrowException, OSError) as exc:
        tmp.unlink(missing_ok=True)
        raise DeltError(f"cannot download {source} ({str(exc).splitlines()[0]})") from exc


def _delete(target: remote.RemotePath) -> None:
    try:
        target.filesystem.delete_file(target.fs_path)
    except FileNotFoundError:
        pass
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(f"cannot delete {target} ({str(exc).splitlines()[0]})") from exc


def publish(mirror: Path, uri: str) -> None:
    """Make the store hold the finished local output: manifest out first, shards, manifest last."""
    from delt_cli.dataset.reader import footer_fingerprint

    target = remote.RemotePath(uri)
    shards = sorted(p for p in mirror.glob("*.parquet") if p.is_file() and not p.name.startswith("."))
    objects = _objects(target)
    if MANIFEST_NAME in objects:
        _delete(target / MANIFEST_NAME)
    sent = 0
    for path in shards:
        same = path.name in objects and objects[path.name] == path.stat().st_size and footer_fingerprint(target / path.name) == footer_fingerprint(path)
        if not same:
            upload(path, uri)
            sent += 1
    names = {p.name for p in shards}
    for name in objects:
        if name.endswith(".parquet") and "/" not in name and name not in names:
            _delete(target / name)  # a shard of the previous output (pull refused anything not delt's)
    upload(mirror / MANIFEST_NAME, uri)
    info(f"{uri}: {len(shards)} shard(s) published ({sent} uploaded now), manifest last")
    for path in shards + [mirror / MANIFEST_NAME]:
        remove(path)
