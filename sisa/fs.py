"""One place where sisa touches storage: URIs resolved through ``pyarrow.fs``.

Every file sisa writes is either content-addressed (its name carries its hash, so
a rewrite with the same bytes is a no-op and a Ray retry is safe) or the small
``manifest.json`` that names them. Commits therefore need only one atomic step:
replacing the manifest. Locally that is write-to-temp, fsync, ``os.replace``;
on object stores (no rename) it is a single PUT, which S3 applies atomically.

Object stores have no ``flock``; :class:`ObjectLock` stands in for it there (a
``.lock`` object with an owner token, a settle-and-read-back check, a heartbeat, and
a token re-check before every manifest commit).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlparse

import pyarrow as pa
import pyarrow.fs as pafs

from .errors import CorruptStoreError, StoreError, StoreLockedError


def sha256_bytes(data: bytes | memoryview | pa.Buffer) -> str:
    """Hex sha256 of a bytes-like object (zero-copy for Arrow buffers and memoryviews)."""
    return hashlib.sha256(memoryview(data)).hexdigest()


# S3FileSystem options a store URI may carry as ``?key=value`` (typed here, so a typo
# is an error rather than a silently ignored option). Credentials are refused: the URI
# travels to every Ray task and into error messages and logs.
_S3_STR = ("region", "scheme", "endpoint_override", "tls_ca_file_path", "role_arn",
           "session_name", "external_id")
_S3_BOOL = ("anonymous", "allow_delayed_open", "background_writes", "force_virtual_addressing",
            "allow_bucket_creation", "allow_bucket_deletion")
_S3_FLOAT = ("request_timeout", "connect_timeout")
_S3_SECRET = ("access_key", "secret_key", "session_token")


def _s3_options(uri: str) -> tuple[dict, str]:
    """``S3FileSystem`` keyword arguments and ``bucket/key`` path for an ``s3://`` URI.

    Precedence: URI query parameters, then ``AWS_ENDPOINT_URL_S3`` /
    ``AWS_ENDPOINT_URL`` and ``AWS_REGION`` / ``AWS_DEFAULT_REGION``; credentials come
    from the AWS SDK's usual chain (environment, profile, instance role). Small objects
    below the upload part size are written with one PutObject (``allow_delayed_open``)
    rather than a multipart upload: fewer round trips, no dangling upload after a
    crash, and it works with S3 look-alikes whose multipart support is partial.
    """
    parsed = urlparse(uri)
    if parsed.username or parsed.password:
        raise StoreError("do not put credentials in the store URI (s3://KEY:SECRET@...): set "
                         "AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or use a profile or role")
    path = (parsed.netloc + parsed.path).rstrip("/")
    if not parsed.netloc:
        raise StoreError(f"storage URI {uri!r} names no bucket: use s3://BUCKET/PATH")
    kwargs: dict = {"allow_delayed_open": True}
    for key, value in parse_qsl(parsed.query, keep_blank_values=True):
        if key in _S3_STR:
            kwargs[key] = value
        elif key in _S3_BOOL:
            if value.lower() not in ("1", "0", "true", "false", "yes", "no"):
                raise StoreError(f"S3 option {key}={value!r} in {uri!r} must be true or false")
            kwargs[key] = value.lower() in ("1", "true", "yes")
        elif key in _S3_FLOAT:
            try:
                kwargs[key] = float(value)
            except ValueError:
                raise StoreError(f"S3 option {key}={value!r} in {uri!r} must be a number") \
                    from None
        elif key in _S3_SECRET:
            raise StoreError(f"do not put {key} in the store URI: set it in the environment "
                             "(AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN)")
        else:
            known = ", ".join(sorted(_S3_STR + _S3_BOOL + _S3_FLOAT))
            raise StoreError(f"unknown S3 option {key!r} in {uri!r}; known: {known}")
    if "endpoint_override" not in kwargs:
        endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
        if endpoint:
            ep = urlparse(endpoint if "://" in endpoint else f"https://{endpoint}")
            kwargs["endpoint_override"] = ep.netloc
            kwargs.setdefault("scheme", ep.scheme)
    if "region" not in kwargs:
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
        if region:
            kwargs["region"] = region
        elif "endpoint_override" not in kwargs:  # real AWS, region unknown: ask the bucket
            with contextlib.suppress(OSError, pa.ArrowException):
                kwargs["region"] = pafs.resolve_s3_region(parsed.netloc)
    return kwargs, path


def _s3_from_uri(uri: str) -> tuple[pafs.FileSystem, str]:
    """S3 with the usual environment honoured (endpoint, region, credentials)."""
    kwargs, path = _s3_options(uri)
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

    @property
    def is_flat(self) -> bool:
        """An object store without real directories (S3, GCS)."""
        return self.fs.type_name in ("s3", "gcs")

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

    def read_stable(self, rel: str, intact: Callable[[bytes], bool]) -> bytes:
        """Read a small file that writers replace in place (the manifest, the lock) and
        re-read it, a bounded number of times, while ``intact`` rejects the bytes.

        pyarrow reads an S3 object by sizing it with HEAD and then GETting that many
        bytes, so a read that races a replace can return the start of the new object cut
        to the old one's length. S3 itself replaces atomically; such a torn read only
        needs a retry. Local reads see the old or the new inode and are not retried.
        """
        data = self.read_bytes(rel).to_pybytes()
        if self.is_local:
            return data
        for delay in _REREAD_DELAYS:
            if intact(data):
                break
            time.sleep(delay)
            data = self.read_bytes(rel).to_pybytes()
        return data

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
            _makedirs_durable(parent)
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
            if not self.is_flat:  # HDFS has real directories; S3/GCS need no markers
                self.fs.create_dir(parent, recursive=True)
            # One PutObject below the part size, else a multipart upload that appears
            # only when completed: either way readers see the old object or the new.
            with self.fs.open_output_stream(target) as f:
                f.write(data)

    def write_content(self, rel_dir: str, suffix: str, data: bytes | pa.Buffer) -> tuple[str, str]:
        """Store ``data`` under a name derived from its hash; returns (relative path, sha256)."""
        digest = sha256_bytes(data)
        rel = f"{rel_dir}/{digest[:32]}{suffix}"
        info = self.fs.get_file_info(self.path(rel))
        # same name, same size: the bytes of an earlier attempt (a retried task); skip.
        # Other sizes mean a damaged leftover: write it again.
        if info.type == pafs.FileType.NotFound or info.size != len(memoryview(data)):
            self.write_atomic(rel, data)
        return rel, digest

    def append_line(self, rel: str, line: str) -> None:
        """Append one line durably (fsync locally; read-modify-PUT on object stores)."""
        payload = (line.rstrip("\n") + "\n").encode()
        if self.is_local:
            target = self.path(rel)
            _makedirs_durable(os.path.dirname(target))
            new = not os.path.exists(target)
            with open(target, "ab") as f:
                f.write(payload)
                f.flush()
                os.fsync(f.fileno())
            if new:
                _fsync_dir(os.path.dirname(target))
        else:
            old = self.read_bytes(rel).to_pybytes() if self.exists(rel) else b""
            self.write_atomic(rel, old + payload)

    def delete(self, rel: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.fs.delete_file(self.path(rel))

    def delete_all(self) -> None:
        if self.fs.get_file_info(self.root).type == pafs.FileType.NotFound:
            return
        if not self.is_local and "/" not in self.root:  # a whole bucket: keep the bucket
            self.fs.delete_dir_contents(self.root)
        else:
            self.fs.delete_dir(self.root)

    def file_infos(self, rel: str = "") -> dict[str, pafs.FileInfo]:
        """Every file below ``rel`` (relative path -> ``FileInfo``) from one recursive
        listing: on object stores far cheaper than a HEAD request per file."""
        sel = pafs.FileSelector(self.path(rel), recursive=True, allow_not_found=True)
        n = len(self.root) + 1
        return {i.path[n:]: i for i in self.fs.get_file_info(sel) if i.type == pafs.FileType.File}


_RESOLVED: dict[str, tuple[pafs.FileSystem, str, bool]] = {}
_REREAD_DELAYS = (0.02, 0.05, 0.1, 0.2, 0.4, 0.8, 1.6)  # ~3 s in all, then give up


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


def _makedirs_durable(path: str) -> None:
    """Create missing directories and fsync each new one's parent: a file fsynced
    inside a new directory is lost on power failure if the directory entry is."""
    missing = []
    p = path
    while p and not os.path.isdir(p):
        missing.append(p)
        p = os.path.dirname(p)
    if missing:
        os.makedirs(path, exist_ok=True)
        for d in reversed(missing):
            _fsync_dir(os.path.dirname(d) or ".")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ObjectLock:
    """A store's write lock on an object store, where there is no ``flock``.

    Protocol (``.lock`` holds ``{token, pid, host, since, t}``):

    1. If ``.lock`` exists, is fresh (rewritten within :attr:`ttl` seconds) and its
       holder is not a dead process on this host (same host name, boot and pid
       namespace), refuse with the holder's name.
    2. PUT our own ``.lock``, wait :attr:`settle` seconds, read it back: if another
       writer's token is there, it won the race and we refuse. (Without a
       compare-and-swap this closes the race unless a writer stalls longer than
       ``settle`` between its check and its PUT.)
    3. While held, a daemon thread rewrites ``.lock`` every :attr:`heartbeat` seconds,
       so a long training run never looks stale; a dead holder's lock goes stale
       after ``ttl``.
    4. :meth:`check` runs before every manifest commit: a writer whose lock was taken
       over commits nothing. :meth:`release` stops the heartbeat and deletes ``.lock``
       only if it is still ours.
    """

    ttl: float = 300.0
    heartbeat: float = 30.0
    settle: float = 0.5
    name: str = ".lock"

    def __init__(self, loc: Location, uri: str) -> None:
        self.loc, self.uri = loc, uri
        self.token = secrets.token_hex(16)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._io = threading.Lock()  # heartbeat vs release

    # -- helpers ---------------------------------------------------------------------
    def _read(self) -> dict | None:
        """The current lock object, or None; unreadable content counts as a holder."""
        try:
            raw = self.loc.read_stable(self.name, _is_json_object)
        except (FileNotFoundError, CorruptStoreError):
            return None
        if _is_json_object(raw):
            return json.loads(raw)
        return {"t": time.time(), "raw": raw[:200].decode(errors="replace")}

    def _write(self, since: str) -> None:
        body = {"token": self.token, "pid": os.getpid(), "host": socket.gethostname(),
                "ns": _pid_namespace(), "since": since, "t": time.time()}
        self.loc.write_atomic(self.name, json.dumps(body).encode())

    def _is_stale(self, info: dict) -> bool:
        if time.time() - float(info.get("t", 0)) > self.ttl:
            return True
        here = _pid_namespace()
        if (here and info.get("ns") == here and info.get("host") == socket.gethostname()
                and isinstance(info.get("pid"), int)):
            try:
                os.kill(info["pid"], 0)
            except ProcessLookupError:
                return True  # its holder died on this very machine
            except OSError:
                return False
        return False

    def _refuse(self, info: dict, why: str = "") -> StoreLockedError:
        who = (f"pid {info.get('pid')} on host {info.get('host')} since {info.get('since')}"
               if "pid" in info else "another process")
        expiry = ""
        if "t" in info:
            at = time.strftime("%H:%M:%S", time.localtime(float(info["t"]) + self.ttl))
            expiry = f"; if it died, its lock expires at {at}"
        return StoreLockedError(
            f"store {self.uri} is locked by {who}{why}: wait for that job to finish (one writer "
            f"per store at a time){expiry}"
        )

    # -- protocol --------------------------------------------------------------------
    def acquire(self, since: str) -> None:
        """Take the lock or raise :class:`StoreLockedError`."""
        info = self._read()
        if info is not None and not self._is_stale(info):
            raise self._refuse(info)
        self._write(since)
        time.sleep(self.settle)
        info = self._read()
        if info is None or info.get("token") != self.token:
            raise self._refuse(info or {}, " (it took the lock at the same moment)")
        self._stop.clear()
        self._thread = threading.Thread(target=self._beat, args=(since,), daemon=True,
                                        name=f"sisa-lock-heartbeat-{self.token[:6]}")
        self._thread.start()

    def _beat(self, since: str) -> None:
        while not self._stop.wait(self.heartbeat):
            with self._io:
                if self._stop.is_set():
                    return
                try:
                    info = self._read()
                    if info is None or info.get("token") != self.token:
                        return  # released by delete_all, or taken over: check() will tell
                    self._write(since)
                except OSError:
                    continue  # transient; the next beat (or check()) tries again

    def check(self) -> None:
        """Raise unless ``.lock`` still carries our token (call before committing)."""
        with self._io:  # not while our own heartbeat is rewriting it
            info = self._read()
        if info is None or info.get("token") != self.token:
            raise StoreLockedError(
                f"store {self.uri}: this writer lost its lock (the lock object was "
                + ("removed" if info is None else
                   f"taken over by pid {info.get('pid')} on host {info.get('host')}")
                + "), so nothing more was committed; reopen the store and retry"
            )

    def release(self) -> None:
        """Stop the heartbeat and delete ``.lock`` if it is still ours."""
        self._stop.set()
        with self._io:
            pass  # wait for a beat in flight
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        with contextlib.suppress(OSError):
            info = self._read()
            if info is not None and info.get("token") == self.token:
                self.loc.delete(self.name)


def _pid_namespace() -> str:
    """This boot and pid namespace ("" where unknown): a pid means the same process
    only within them (containers on one host share its name, not its pids)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as f:
            boot = f.read().strip()
        return f"{boot}/{os.readlink('/proc/self/ns/pid')}"
    except OSError:
        return ""


def _is_json_object(raw: bytes) -> bool:
    try:
        return isinstance(json.loads(raw), dict)
    except ValueError:
        return False
