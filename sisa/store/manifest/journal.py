"""Typed records the manifest holds for its writers: the journal entry (``pending``), and
the strict JSON reader every typed record of sisa parses with.

A record is a frozen dataclass whose ``to_json()`` gives exactly the dict sisa writes
(so the canonical bytes, their hashes and signatures stay what they were) and whose
``from_json(obj)`` accepts that dict only: a missing, unknown or ill-typed field raises
:class:`~sisa.errors.CorruptStoreError` with one line that names the record and the
field, never the value (the bytes may be an attacker's). Optional fields that sisa omits
are ``None`` here and stay omitted in ``to_json``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any, Literal, TypeVar, get_args

from ...errors import CorruptStoreError

T = TypeVar("T")

#: Ints a record holds are counts, sequence numbers and sample ids: within int64.
INT_MAX = 2**63 - 1

#: Run kinds a journal names: a fit (or repair's retrain) and, in stores written before
#: a forget committed in one write, a forget.
JournalKind = Literal["fit", "forget"]
JOURNAL_KINDS: tuple[str, ...] = get_args(JournalKind)


class Fields:
    """Reads one JSON object as the record ``name``, field by field; :meth:`done`
    refuses fields the record does not define. ``fix`` ends every error message."""

    def __init__(self, name: str, obj: object, *, fix: str = "it was damaged or edited",
                 error: type[Exception] = CorruptStoreError) -> None:
        self.name, self.fix, self.error = name, fix, error
        if not isinstance(obj, dict):
            raise self.fail(f"is not a JSON object (got {type(obj).__name__})")
        self.obj: dict = obj
        self.seen: set[str] = set()

    def fail(self, what: str) -> Exception:
        return self.error(f"{self.name} {what}: {self.fix}")

    def req(self, key: str, check: Callable[[object], T]) -> T:
        if key not in self.obj:
            raise self.fail(f"lacks field {key!r}")
        return self.opt(key, check)  # type: ignore[return-value]

    def opt(self, key: str, check: Callable[[object], T]) -> T | None:
        """The field checked, or None when absent (a null is not absent: ``check`` sees it)."""
        self.seen.add(key)
        if key not in self.obj:
            return None
        try:
            return check(self.obj[key])
        except (TypeError, ValueError) as exc:
            raise self.fail(f"field {key!r} {exc}") from None

    def done(self) -> None:
        extra = [k for k in self.obj if k not in self.seen]
        if extra:  # the unknown names are not echoed: they are the writer's bytes
            raise self.fail(f"has {len(extra)} field(s) it does not define")


# ------------------------------------------------------------------- value checks
def is_str(v: object) -> str:
    if not isinstance(v, str):
        raise TypeError(f"must be a string, not {type(v).__name__}")
    return v


def is_int(v: object) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        raise TypeError(f"must be an integer, not {type(v).__name__}")
    if not 0 <= v <= INT_MAX:
        raise ValueError("is out of range")
    return v


def is_number(v: object) -> float | int:
    """A finite JSON number, kept as parsed (an int stays an int: the same bytes out)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"must be a number, not {type(v).__name__}")
    if isinstance(v, int) and not -INT_MAX - 1 <= v <= INT_MAX:  # before float(): no overflow
        raise ValueError("is out of range")
    if not math.isfinite(v) or abs(v) > 1e18:
        raise ValueError("is out of range")
    return v


def is_bool(v: object) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"must be true or false, not {type(v).__name__}")
    return v


def is_hex(n: int) -> Callable[[object], str]:
    """A lowercase hex string of ``n`` digits (a sha256, a uuid4 hex)."""
    def check(v: object) -> str:
        s = is_str(v)
        if len(s) != n or s.strip("0123456789abcdef"):
            raise ValueError(f"must be {n} lowercase hex digits")
        return s
    return check


def is_sample_id(v: object) -> int | str:
    """A sample id or group key as JSON holds it: an integer or a string."""
    if isinstance(v, str):
        return v
    if isinstance(v, bool) or not isinstance(v, int) or not -INT_MAX - 1 <= v <= INT_MAX:
        raise TypeError("must hold integers or strings")
    return v


def list_of(check: Callable[[object], T]) -> Callable[[object], tuple[T, ...]]:
    def read(v: object) -> tuple[T, ...]:
        if not isinstance(v, list):
            raise TypeError(f"must be a list, not {type(v).__name__}")
        return tuple(check(x) for x in v)
    return read


def is_object(v: object) -> Mapping[str, Any]:
    if not isinstance(v, dict):
        raise TypeError(f"must be an object, not {type(v).__name__}")
    return v


def one_of(values: tuple[str, ...]) -> Callable[[object], str]:
    def check(v: object) -> str:
        if is_str(v) not in values:
            raise ValueError(f"must be one of {list(values)}")
        return v  # type: ignore[return-value]
    return check


def put(out: dict, **fields: object) -> dict:
    """``out`` with the fields that are not None (an optional field sisa omits)."""
    out.update((k, v) for k, v in fields.items() if v is not None)
    return out


# ------------------------------------------------------------------- the journal
@dataclass(frozen=True, slots=True, kw_only=True)
class JournalEntry:
    """The manifest's ``pending``: a run (fit, or a forget in an older store) whose
    shards are not all trained yet; :meth:`Manifest.pending_plan
    <sisa.store.manifest.Manifest.pending_plan>` says which.

    Attributes
    ----------
    kind : {"fit", "forget"}
    request : mapping, optional
        A forget's request as journaled (:class:`sisa.unlearn.records.ForgetRequest`
        reads it: the store does not know its fields).
    rows_processed : int, optional
        Rows the run trained so far; absent until a shard commits.
    """

    kind: JournalKind
    request: Mapping[str, Any] | None = None
    rows_processed: int | None = None

    def counted(self, rows: int) -> JournalEntry:
        """This entry with ``rows`` more rows processed."""
        return replace(self, rows_processed=(self.rows_processed or 0) + rows)

    def to_json(self) -> dict:
        return put({"kind": self.kind}, request=self.request,
                   rows_processed=self.rows_processed)

    @classmethod
    def from_json(cls, obj: object) -> JournalEntry:
        f = Fields("the manifest's journal (pending)", obj,
                   fix="the manifest was edited; restore the store from backup")
        kind: Any = f.req("kind", one_of(JOURNAL_KINDS))
        entry = cls(kind=kind, request=f.opt("request", is_object),
                    rows_processed=f.opt("rows_processed", is_int))
        f.done()
        if entry.request is not None and kind != "forget":
            raise f.fail("field 'request' belongs to a forget only")
        return entry
