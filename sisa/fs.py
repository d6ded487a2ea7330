"""One place where sisa touches storage: URIs resolved through ``pyarrow.fs``.

Every file sisa writes is either content-addressed (its name carries its hash, so
a rewrite with the same bytes is a no-op and a Ray retry is safe) or the small
``manifest.json`` that names them. Commits therefore need only one atomic step:
replacing the manifest. Locally that is write-to-temp, fsync, ``os.replace``;
on object stores (no rename) it is a single PUT, which S3 applies atomically.
"""

from __future__ import annotations

import hashlib
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import CorruptStoreError, StoreError


def sha256_bytes(data: bytes | memoryview | pa.Buffer) -> str:
    """Hex sha256 of a bytes-like object (zero-copy for Arrow buffers and memoryviews)."""
    return hashlib.sha256(memoryview(data)).hexdigest()


def _s3_from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """S3 with the usual environment honoured (endpoint, region, credentials)."""
    parsed = urlparse(uri)
    path = (parsed.netloc + parsed.path).rstrip("/")
    if parsed.query:  # explicit ?endpoint_override=...&region=... wins
        return pafs.FileSystem.from_uri(uri)[0], path
    kwargs: dict = {}
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        ep = urlparse(endpoint)
        kwargs["endpoint_override"] = ep.netloc or ep.path
        kwargs["scheme"] = ep.scheme or "https"
    region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
    if region:
        kwargs["region"] = region
    return pafs.S3FileSystem(**kwargs), path


@dataclass(frozen=True)
class Location:
    """A directory on some filesystem: local, ``file://``, ``s3://``, ``gs://``, ``hdfs://``.

    Parameters
    ----------
    uri : str
        What the user gave; kept so it can be passed to Ray tasks and other processes.
    """

    uri: str

    @property
    def _resolved(self) -> tuple[pafs.FileSystem, str, bool]:
        cached = _RESOLVED.get(self.uri)
        if cached is None:
            cached = _resolve(self.uri)
            _RESOLVED[self.uri] = cached
        return cached

    @property
    def fs(self) -> pafs.FileSystem:
        return self._resolved[0]

    @property
    def root(self) -> str:
        return self._resolved[1]

    @property
    def is_local(self) -> bool:
        return self._resolved[2]

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    # -- reading -----------------------------------------------------------------------
    def exists(self, rel: str) -> bool:
        return self.fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound

    def read_bytes(self, rel: str) -> pa.Buffer:
        """Whole file as an Arrow buffer; memory-mapped when local (zero-copy)."""
        try:
            if self.is_local:
                with pa.memory_map(self.path(rel)) as f:
                    return f.read_buffer()
            with self.fs.open_input_stream(self.path(rel)) as f:
                return f.read_buffer()
        except FileNotFoundError as exc:
            raise CorruptStoreError(
                f"missing file {self.path(rel)}: the store is damaged; run `sisa repair "
                f"{self.uri}` or restore the file from backup"
            ) from exc

    def read_verified(self, rel: str, sha256: str) -> pa.Buffer:
        """Read a file and check it against the hash the manifest vouches for."""
        buf = self.read_bytes(rel)
        got = sha256_bytes(buf)
        if got != sha256:
            raise CorruptStoreError(
                f"hash mismatch for {self.path(rel)} (manifest {sha256[:12]}, file {got[:12]}): "
                f"the file was changed or damaged; run `sisa repair {self.uri}` or restore it"
            )
        return buf

    def list_files(self, rel: str = "") -> list[str]:
        """All files below ``rel``, as paths relative to the root (sorted)."""
        base = self.path(rel)
        if self.fs.get_file_info(base).type == pafs.FileType.NotFound:
            return []
        sel = pafs.FileSelector(base, recursive=True, allow_not_found=True)
        n = len(self.root) + 1
        return sorted(
            i.path[n:] for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File
        )

    # -- writing -----------------------------------------------------------------------
    def write_atomic(self, rel: str, data: bytes | pa.Buffer) -> None:
        """Write a whole file so that readers see the old bytes or the new, never a mix."""
        target = self.path(rel)
        parent = target.rsplit("/", 1)[0]
        if self.is_local:
            os.makedirs(parent, exist_ok=True)
            tmp = f"{target}.tmp-{os.getpid()}-{secrets.token_hex(4)}"
            try:
                with open(tmp, "wb") as f:
                    f.write(memoryview(data))
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, target)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            _fsync_dir(parent)
        else:
            self.fs.create_dir(parent, recursive=True)
            with self.fs.open_output_stream(target) as f:  # one PUT: atomic on S3
                f.write(data)

    def write_content(self, rel_dir: str, suffix: str, data: bytes | pa.Buffer) -> tuple[str, str]:
        """Store ``data`` under a name derived from its hash; returns (relative path, sha256)."""
        digest = sha256_bytes(data)
        rel = f"{rel_dir}/{digest[:32]}{suffix}"
        if not self.exists(rel):  # same name, same bytes: skip (idempotent retries)
            self.write_atomic(rel, data)
        return rel, digest

    def append_line(self, rel: str, line: str) -> None:
        """Append one line durably (fsync locally; read-modify-PUT on object stores)."""
        payload = (line.rstrip("\n") + "\n").encode()
        if self.is_local:
            target = self.path(rel)
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with open(target, "ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
        else:
            old = self.read_bytes(rel).to_pybytes() if self.exists(rel) else b""
            self.write_atomic(rel, old + payload)

    def delete(self, rel: str) -> None:
        try:
            self.fs.delete_file(self.path(rel))
        except FileNotFoundError:
            pass

    def delete_all(self) -> None:
        if self.fs.get_file_info(self.root).type != pafs.FileType.NotFound:
            self.fs.delete_dir(self.root)


_RESOLVED: dict[str, tuple[pafs.FileSystem, str, bool]] = {}


def _resolve(uri: str) -> tuple[pafs.FileSystem, str, bool]:
    scheme = urlparse(uri).scheme
    if scheme in ("", "file") or (len(scheme) == 1 and os.name == "nt"):
        local = uri[len("file://") :] if uri.startswith("file://") else uri
        return pafs.LocalFileSystem(), str(Path(local).expanduser().resolve()), True
    try:
        if scheme == "s3":
            fs, path = _s3_from_uri(uri)
        else:
            fs, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise StoreError(
            f"cannot open storage URI {uri!r}: {exc}; use a local path, file://, s3://, "
            "gs:// or hdfs://"
        ) from exc
    return fs, path.rstrip("/"), False


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
