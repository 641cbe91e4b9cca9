"""Datasets in S3-compatible object storage: `s3://bucket/prefix` as an input or an output.

Everything goes through pyarrow's S3 filesystem (`pyarrow.fs.FileSystem.from_uri`), which takes
its settings from the usual AWS environment: AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY (or a
profile), AWS_DEFAULT_REGION, and AWS_ENDPOINT_URL for another S3-compatible store (MinIO,
Ceph, a local test server).

* `RemotePath` is what a `Shard.path` is for an object: the few Path-like methods the readers
  use, and `os.fspath()` gives the URI, which pyarrow's Parquet reader opens by itself.
* `is_remote` also recognises an URI that went through `pathlib.Path` (which turns `s3://b/k`
  into `s3:/b/k`), so the command layer can keep passing outputs as Paths.
* The output side (local staging, upload, manifest last) is in dataset/remote_output.py.
"""

from __future__ import annotations

import fnmatch
import os
from functools import lru_cache
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from delt_cli.infra.errors import DeltError

SCHEME = "s3://"


def is_remote(path) -> bool:
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    return text.startswith("s3:/")


def uri(path) -> str:
    """`s3://bucket/key` without a trailing slash, also from a Path-mangled `s3:/bucket/key`."""
    text = os.fspath(path) if isinstance(path, os.PathLike) else str(path)
    rest = text[len("s3:") :].lstrip("/")
    return SCHEME + rest.rstrip("/")


def display(path) -> str:
    """How to print a location: the URI for an object store, the path otherwise."""
    return uri(path) if is_remote(path) else str(path)


@lru_cache(maxsize=None)
def _filesystem(bucket: str) -> pafs.FileSystem:
    try:
        fs, _ = pafs.FileSystem.from_uri(f"{SCHEME}{bucket}")
    except (pa.ArrowException, OSError, ValueError) as exc:
        raise DeltError(f"{SCHEME}{bucket}: cannot set up S3 access ({str(exc).splitlines()[0]})") from exc
    return fs


class RemotePath:
    """An object or prefix `s3://bucket/key`, with what readers need of a Path."""

    __slots__ = ("uri",)

    def __init__(self, location):
        self.uri = uri(location)
        if not self.uri[len(SCHEME) :]:
            raise DeltError(f"{location}: no bucket in the S3 URI")

    # -- naming ------------------------------------------------------------------------
    def __fspath__(self) -> str:
        return self.uri

    def __str__(self) -> str:
        return self.uri

    def __repr__(self) -> str:
        return f"RemotePath({self.uri!r})"

    def __eq__(self, other) -> bool:
        return isinstance(other, RemotePath) and other.uri == self.uri

    def __lt__(self, other: "RemotePath") -> bool:
        return self.uri < other.uri

    def __hash__(self) -> int:
        return hash(self.uri)

    def __truediv__(self, name: str) -> "RemotePath":
        return RemotePath(f"{self.uri}/{name}")

    @property
    def bucket(self) -> str:
        return self.uri[len(SCHEME) :].split("/", 1)[0]

    @property
    def key(self) -> str:
        parts = self.uri[len(SCHEME) :].split("/", 1)
        return parts[1] if len(parts) > 1 else ""

    @property
    def name(self) -> str:
        return self.uri.rsplit("/", 1)[-1]

    @property
    def parent(self) -> "RemotePath":
        return RemotePath(self.uri.rsplit("/", 1)[0]) if self.key else self

    @property
    def fs_path(self) -> str:
        """The path pyarrow's S3 filesystem takes: bucket/key."""
        return self.uri[len(SCHEME) :]

    @property
    def filesystem(self) -> pafs.FileSystem:
        return _filesystem(self.bucket)

    def resolve(self) -> "RemotePath":
        return self

    def relative_to(self, other) -> str:
        if not (isinstance(other, RemotePath) and self.uri.startswith(other.uri + "/")):
            raise ValueError(f"{self} is not inside {other}")
        return self.uri[len(other.uri) + 1 :]

    # -- what is there -------------------------------------------------------------------
    def info(self) -> pafs.FileInfo:
        try:
            return self.filesystem.get_file_info(self.fs_path)
        except (pa.ArrowException, OSError) as exc:
            raise DeltError(f"{self}: cannot reach the object store ({str(exc).splitlines()[0]})") from exc

    def is_file(self) -> bool:
        return self.info().type == pafs.FileType.File

    def is_dir(self) -> bool:
        return self.info().type == pafs.FileType.Directory

    def exists(self) -> bool:
        return self.info().type != pafs.FileType.NotFound

    def size(self) -> int:
        return int(self.info().size)

    def iterdir(self) -> Iterator["RemotePath"]:
        """The objects (and common prefixes) directly under this prefix, sorted."""
        for info in list_prefix(self):
            yield RemotePath(SCHEME + info.path)

    # -- reading ------------------------------------------------------------------------
    def open_input_file(self):
        try:
            return self.filesystem.open_input_file(self.fs_path)
        except (pa.ArrowException, OSError) as exc:
            raise DeltError(f"{self}: cannot open ({str(exc).splitlines()[0]})") from exc

    def open_input_stream(self, compression: str | None = None):
        try:
            return self.filesystem.open_input_stream(self.fs_path, compression=compression)
        except (pa.ArrowException, OSError) as exc:
            raise DeltError(f"{self}: cannot open ({str(exc).splitlines()[0]})") from exc

    def read_bytes(self) -> bytes:
        with self.open_input_stream() as fh:
            return fh.read()

    def read_text(self) -> str:
        return self.read_bytes().decode("utf-8")


def list_prefix(prefix: RemotePath, *, recursive: bool = False) -> list[pafs.FileInfo]:
    """FileInfos under `prefix` (a "directory" of the bucket), sorted by path; [] when there is none."""
    try:
        infos = prefix.filesystem.get_file_info(pafs.FileSelector(prefix.fs_path, recursive=recursive, allow_not_found=True))
    except (pa.ArrowException, OSError) as exc:
        raise DeltError(f"{prefix}: cannot list ({str(exc).splitlines()[0]})") from exc
    return sorted(infos, key=lambda i: i.path)


def glob(pattern: str) -> list[RemotePath]:
    """Objects matching a glob (`s3://bucket/data/*/part-*.parquet`), sorted: the prefix before the
    first wildcard is listed recursively and the keys matched with fnmatch (`*` also crosses `/`)."""
    text = uri(pattern)
    cut = min(i for i, ch in enumerate(text) if ch in "*?[")
    base = RemotePath(text[: text.rfind("/", 0, cut)])
    return [
        RemotePath(SCHEME + info.path)
        for info in list_prefix(base, recursive=True)
        if info.type == pafs.FileType.File and fnmatch.fnmatchcase(SCHEME + info.path, text)
    ]


# -- one way to open a file, local or remote ------------------------------------------------


def open_binary(path):
    """A seekable binary file: a local file, or an S3 object read by ranges."""
    return path.open_input_file() if isinstance(path, RemotePath) else open(path, "rb")


def open_mapped(path):
    """A random-access Arrow file: memory-mapped when local, read by ranges from S3."""
    return path.open_input_file() if isinstance(path, RemotePath) else pa.memory_map(str(path))


def open_stream(path, compression: str | None):
    """A sequential stream, decompressed (gzip, zstd) on the fly."""
    if isinstance(path, RemotePath):
        return path.open_input_stream(compression)
    return pa.input_stream(str(path), compression=compression)


def file_size(path) -> int:
    return path.size() if isinstance(path, RemotePath) else os.stat(path).st_size


def location(path):
    """A Path, or a RemotePath for an `s3://` location (also a Path-mangled one)."""
    from pathlib import Path

    return RemotePath(path) if is_remote(path) else Path(path)
