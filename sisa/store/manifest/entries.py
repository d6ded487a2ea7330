"""The manifest's file entries as typed, immutable records.

Every file a manifest vouches for is named by one entry: a data slice
(:class:`SliceFile`), a checkpoint (:class:`CheckpointFile`), an index or tombstone
bucket (:class:`BucketFile`), or a leaf manifest (:class:`LeafRef`, :class:`ShardRef`
for a shard's leaf, which counts its rows). Each extends :class:`Blob` (what
:meth:`sisa.store.Store.put_blob` returns: file, sha256, bytes).

On disk an entry is a JSON object; :meth:`Blob.to_json` gives exactly the object sisa
has always written (so canonical bytes, hashes and signatures do not change) and
:meth:`Blob.from_json` reads one strictly: a missing, unknown or wrong-typed field is a
:class:`~sisa.errors.CorruptStoreError` naming the entry and the field, never its value.
Whether ``file`` is the path sisa writes for the entry's place (no ``..``, the right
folder, named by its hash) is checked where the place is known
(:func:`sisa.store.format.layout.check_manifest_paths`); here it is only a non-empty
string. Producers build records, the codec converts at the boundary, readers use
attributes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar, TypeVar

from ...errors import CorruptStoreError

__all__ = ["Blob", "BucketFile", "CheckpointFile", "LeafRef", "ShardRef", "SliceFile",
           "entry_json"]

_FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")  # a key short and plain enough to name
B = TypeVar("B", bound="Blob")


def _count(v: object) -> bool:
    return type(v) is int and v >= 0  # not a bool, not a float, never negative


def _hex64(v: object) -> bool:  # (str.strip, not a regex: this runs for every entry read)
    return type(v) is str and len(v) == 64 and not v.strip("0123456789abcdef")


def _path(v: object) -> bool:
    return type(v) is str and v != ""


def _labels(v: object) -> bool:
    if v is None:
        return True
    if type(v) is not list:
        return False
    return all(type(x) is int or type(x) is str for x in v)


# What each field must be, and how the message says it.
_CHECKS = {"file": (_path, "a non-empty path"), "sha256": (_hex64, "64 lowercase hex digits"),
           "bytes": (_count, "a whole number >= 0"), "rows": (_count, "a whole number >= 0"),
           "shard": (_count, "a whole number >= 0"), "slice": (_count, "a whole number >= 0"),
           "lineage": (_hex64, "64 lowercase hex digits"),
           "labels": (_labels, "null or a list of integers and strings")}


@dataclass(frozen=True, slots=True)
class Blob:
    """A content-addressed file of the store: its path (relative to the store root), the
    sha256 of its bytes and their number."""

    file: str
    sha256: str
    bytes: int

    KIND: ClassVar[str] = "file"

    def to_json(self) -> dict[str, Any]:
        """The entry as written in the manifest."""
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes}

    @classmethod
    def of(cls: type[B], blob: Blob, **fields: Any) -> B:
        """The entry of the file ``blob`` with this kind's other ``fields``."""
        return cls(blob.file, blob.sha256, blob.bytes, **fields)

    @classmethod
    def from_json(cls: type[B], obj: object, where: str) -> B:
        """The entry ``obj`` (a parsed JSON value) read strictly; ``where`` names it in a
        message (e.g. ``"manifest meta/shard-0001-....json: slice 0"``).

        Raises
        ------
        CorruptStoreError
            ``obj`` is not an object with exactly this kind's fields, each of its type.
        """
        names, checks = _spec(cls)
        if type(obj) is dict and obj.keys() == names:  # the common case, checked fast
            for name, ok, _ in checks:
                if not ok(obj[name]):
                    break
            else:
                return cls(**obj)
        raise _problem(cls, obj, where)


_SPECS: dict[type, tuple[frozenset, tuple]] = {}


def _spec(cls: type) -> tuple[frozenset, tuple]:
    """An entry kind's JSON fields and their checks (from its dataclass fields, kept)."""
    if cls not in _SPECS:
        names = [f.name for f in fields(cls)]
        _SPECS[cls] = frozenset(names), tuple((n, *_CHECKS[n]) for n in names)
    return _SPECS[cls]


def _problem(cls: type[Blob], obj: object, where: str) -> CorruptStoreError:
    """What is wrong with an entry ``obj`` that is not one of ``cls``: the first missing,
    wrong-typed or unknown field, named without its value."""
    names, checks = _spec(cls)
    if not isinstance(obj, dict):
        return _bad(where, cls.KIND, "is not a JSON object")
    for name, ok, what in checks:
        if name not in obj:
            return _bad(where, cls.KIND, f"lacks field {name!r}")
        if not ok(obj[name]):
            return _bad(where, cls.KIND, f"field {name!r} is not {what}")
    extra = next(k for k in obj if k not in names)
    named = repr(extra) if isinstance(extra, str) and _FIELD_NAME.fullmatch(extra) else ""
    return _bad(where, cls.KIND, f"has an unknown field {named}".rstrip())


def _bad(where: str, kind: str, problem: str) -> CorruptStoreError:
    return CorruptStoreError(f"{where}: the {kind} entry {problem}: the manifest was edited; "
                             "restore the store from backup (nothing was read or deleted)")


@dataclass(frozen=True, slots=True)
class LeafRef(Blob):
    """A leaf manifest named by the root (an index or tombstone page)."""

    KIND: ClassVar[str] = "leaf"


@dataclass(frozen=True, slots=True)
class ShardRef(Blob):
    """A shard's leaf manifest named by the root, with the rows of its slices."""

    rows: int
    KIND: ClassVar[str] = "shard leaf"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes,
                "rows": self.rows}


@dataclass(frozen=True, slots=True)
class BucketFile(Blob):
    """An index or tombstone bucket's file and its row count."""

    rows: int
    KIND: ClassVar[str] = "bucket"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes,
                "rows": self.rows}


@dataclass(frozen=True, slots=True)
class SliceFile(Blob):
    """A data slice's file: its rows, its shard and its sorted distinct labels (None:
    float labels, or too many to record)."""

    rows: int
    shard: int
    labels: tuple | None
    KIND: ClassVar[str] = "slice"

    def __post_init__(self) -> None:
        if self.labels is not None and not isinstance(self.labels, tuple):
            object.__setattr__(self, "labels", tuple(self.labels))  # a list, as JSON has it

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes,
                "rows": self.rows, "shard": self.shard,
                "labels": None if self.labels is None else list(self.labels)}


@dataclass(frozen=True, slots=True)
class CheckpointFile(Blob):
    """A checkpoint's file: the model after training slice ``slice`` of shard ``shard``,
    the rows of that slice and the lineage (hash of the data it saw)."""

    rows: int
    shard: int
    slice: int
    lineage: str
    KIND: ClassVar[str] = "checkpoint"

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "sha256": self.sha256, "bytes": self.bytes,
                "rows": self.rows, "shard": self.shard, "slice": self.slice,
                "lineage": self.lineage}


def entry_json(obj: object) -> object:
    """``json.dumps``'s ``default``: an entry as its JSON object, anything else as ``str``
    (as the canonical JSON always had it)."""
    return obj.to_json() if isinstance(obj, Blob) else str(obj)
