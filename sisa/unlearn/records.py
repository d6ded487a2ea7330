"""The typed records of a forget: its request, its intent, its receipt (and the receipt
sealed into the audit log's chain).

Each is a frozen dataclass over the JSON sisa writes: ``to_json()`` gives that dict, key
for key and in the same order, so a receipt's canonical bytes, its chain hash and its
Ed25519 signature, and an intent's bytes, are what they were before these records
existed; ``from_json(obj)`` takes such a dict and nothing else (a missing, unknown or
ill-typed field is a one-line :class:`~sisa.errors.CorruptStoreError` naming the record
and the field). Optional fields sisa omits are ``None`` here and stay omitted.

The journal entry the manifest holds is :class:`sisa.store.manifest.journal.JournalEntry`
(the store sits below this package); the serve queue's entry is
:class:`sisa.serve.queue.QueueEntry`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ..errors import CorruptStoreError
from ..store.manifest.journal import (
    Fields,
    is_hex,
    is_int,
    is_number,
    is_sample_id,
    is_str,
    list_of,
    put,
)

SHA256 = is_hex(64)
#: What a forget request names: sample ids, or groups (every row of some people).
ForgetKind = Literal["ids", "groups"]
Label = str | bool | int | float


def _short_str(v: object) -> str:
    """An id or timestamp sisa wrote: a string of at most 64 characters."""
    if len(is_str(v)) > 64:
        raise ValueError("is longer than 64 characters")
    return v  # type: ignore[return-value]


def _pair(v: object) -> tuple[int, int]:
    if not (isinstance(v, list) and len(v) == 2):
        raise TypeError("must hold [shard, slice] pairs")
    return is_int(v[0]), is_int(v[1])


@dataclass(frozen=True, slots=True, kw_only=True)
class ServiceRequest:
    """One request of ``sisa serve`` that a forget's batch answers (no raw ids)."""

    request_id: str
    ids_sha256: str
    n_ids: int

    def to_json(self) -> dict:
        return {"request_id": self.request_id, "ids_sha256": self.ids_sha256,
                "n_ids": self.n_ids}

    @classmethod
    def from_json(cls, obj: object, name: str = "a service request", *,
                  error: type[Exception] = CorruptStoreError) -> ServiceRequest:
        f = Fields(name, obj, error=error)
        # the digest is the caller's (sisa.unlearn.forget's ``requests``): any short string
        out = cls(request_id=f.req("request_id", _short_str),
                  ids_sha256=f.req("ids_sha256", _short_str), n_ids=f.req("n_ids", is_int))
        f.done()
        return out


def _service_requests(v: object) -> tuple[ServiceRequest, ...]:
    if not isinstance(v, list):
        raise TypeError(f"must be a list, not {type(v).__name__}")
    return tuple(ServiceRequest.from_json(q) for q in v)


@dataclass(frozen=True, slots=True, kw_only=True)
class ForgetRequest:
    """What the intent, the journal and the receipt record of a forget request.

    ``started`` (the clock at the start, for the receipt's wall time) is in the intent and
    an older store's journal, not in the receipt. The group fields are those of a forget
    by group (:func:`sisa.unlearn.receipts.groups_named`); ``classes_removed`` and
    ``reason`` those of a forget that emptied a class.
    """

    request_id: str
    requested_at: str
    started: float | int | None = None
    ids_sha256: str
    n_ids: int
    fingerprint_before: str
    affected: tuple[tuple[int, int], ...]
    ids: tuple[int | str, ...] | None = None
    requests: tuple[ServiceRequest, ...] | None = None
    groups_sha256: str | None = None
    n_groups: int | None = None
    group_hashes: tuple[str, ...] | None = None
    groups: tuple[int | str, ...] | None = None
    groups_already_forgotten: int | None = None
    classes_removed: tuple[Label, ...] | None = None
    reason: str | None = None

    def to_json(self) -> dict:
        out = put({"request_id": self.request_id, "requested_at": self.requested_at},
                  started=self.started)
        out.update(ids_sha256=self.ids_sha256, n_ids=self.n_ids,
                   fingerprint_before=self.fingerprint_before,
                   affected=[list(p) for p in self.affected])
        return put(out, ids=_listed(self.ids),
                   requests=None if self.requests is None else [
                       q.to_json() for q in self.requests],
                   groups_sha256=self.groups_sha256, n_groups=self.n_groups,
                   group_hashes=_listed(self.group_hashes), groups=_listed(self.groups),
                   groups_already_forgotten=self.groups_already_forgotten,
                   classes_changed=None if self.classes_removed is None else {
                       "removed": list(self.classes_removed)},
                   reason=self.reason)

    @property
    def kind(self) -> ForgetKind:
        return "ids" if self.groups_sha256 is None else "groups"

    @property
    def named(self) -> dict:
        """The group fields, as :func:`sisa.unlearn.forget` takes them to redo the request."""
        return put({}, groups_sha256=self.groups_sha256, n_groups=self.n_groups,
                   group_hashes=_listed(self.group_hashes), groups=_listed(self.groups),
                   groups_already_forgotten=self.groups_already_forgotten)

    @classmethod
    def from_json(cls, obj: object, name: str = "the forget request",
                  fix: str = "it was damaged or edited") -> ForgetRequest:
        f = Fields(name, obj, fix=fix)
        out = cls.read(f, started=True)
        f.done()
        return out

    @classmethod
    def read(cls, f: Fields, *, started: bool) -> ForgetRequest:
        """The request's fields of ``f`` (``started``: whether it must hold ``started``)."""
        changed = f.opt("classes_changed", _classes_changed)
        return cls(
            request_id=f.req("request_id", _short_str),
            requested_at=f.req("requested_at", _short_str),
            started=f.req("started", is_number) if started else None,
            ids_sha256=f.req("ids_sha256", SHA256), n_ids=f.req("n_ids", is_int),
            fingerprint_before=f.req("fingerprint_before", SHA256),
            affected=f.req("affected", list_of(_pair)),
            ids=f.opt("ids", list_of(is_sample_id)),
            requests=f.opt("requests", _service_requests),
            groups_sha256=f.opt("groups_sha256", SHA256), n_groups=f.opt("n_groups", is_int),
            group_hashes=f.opt("group_hashes", list_of(is_hex(32))),
            groups=f.opt("groups", list_of(is_sample_id)),
            groups_already_forgotten=f.opt("groups_already_forgotten", is_int),
            classes_removed=changed, reason=f.opt("reason", is_str))


def _label(v: object) -> Label:
    """A class label as the model's class list holds it: a string, a bool or a number."""
    return v if isinstance(v, (str, bool)) else is_number(v)


def _classes_changed(v: object) -> tuple[Label, ...]:
    if not (isinstance(v, dict) and list(v) == ["removed"]):
        raise TypeError("must be {\"removed\": [classes]}")
    return list_of(_label)(v["removed"])


def _listed(v: tuple | None) -> list | None:
    return None if v is None else list(v)


@dataclass(frozen=True, slots=True, kw_only=True)
class Intent:
    """``audit/intent.json``: a request being applied, with its raw ids (the store holds
    them anyway until the deletion lands)."""

    request: ForgetRequest
    ids: tuple[int | str, ...]

    def to_json(self) -> dict:
        return {"request": self.request.to_json(), "ids": list(self.ids)}

    @classmethod
    def from_json(cls, obj: object, where: str = "audit/intent.json") -> Intent:
        fix = ("it was damaged, edited or planted by someone without the store's key, and "
               "nothing was run; move it out of the store (keep it as evidence), then run "
               "`sisa repair` again")
        f = Fields(f"the forget intent {where}", obj, fix=fix)
        request = f.req("request", lambda v: ForgetRequest.from_json(
            v, f"the request of the forget intent {where}", fix))
        out = cls(request=request, ids=f.req("ids", list_of(is_sample_id)))
        f.done()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class Receipt:
    """What a forget did, before it is chained onto the audit log: the request (without
    ``started``) and the outcome."""

    request: ForgetRequest
    shards_emptied: tuple[int, ...]
    rows_retrained: int
    rows_full_retrain: int
    already_deleted: int
    wall_time_s: float | int
    completed_at: str
    fingerprint_after: str
    tombstones_after: str

    @property
    def request_id(self) -> str:
        return self.request.request_id

    def to_json(self) -> dict:
        out = self.request.to_json()
        out.update(shards_emptied=list(self.shards_emptied),
                   rows_retrained=self.rows_retrained, rows_full_retrain=self.rows_full_retrain,
                   already_deleted=self.already_deleted, wall_time_s=self.wall_time_s,
                   completed_at=self.completed_at, fingerprint_after=self.fingerprint_after,
                   tombstones_after=self.tombstones_after)
        return out

    @classmethod
    def read(cls, f: Fields) -> Receipt:
        return cls(request=ForgetRequest.read(f, started=False),
                   shards_emptied=f.req("shards_emptied", list_of(is_int)),
                   rows_retrained=f.req("rows_retrained", is_int),
                   rows_full_retrain=f.req("rows_full_retrain", is_int),
                   already_deleted=f.req("already_deleted", is_int),
                   wall_time_s=f.req("wall_time_s", is_number),
                   completed_at=f.req("completed_at", _short_str),
                   fingerprint_after=f.req("fingerprint_after", SHA256),
                   tombstones_after=f.req("tombstones_after", SHA256))

    @classmethod
    def from_json(cls, obj: object, name: str = "the receipt") -> Receipt:
        f = Fields(name, obj)
        out = cls.read(f)
        f.done()
        return out


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedReceipt:
    """A receipt chained onto the audit log: ``seq`` (0, 1, ...), ``prev`` (the hash of
    the receipt before it; None for the first), ``store_id`` and, in a signed store,
    ``signature`` (hex Ed25519 over the canonical bytes of the rest)."""

    receipt: Receipt
    seq: int
    prev: str | None
    store_id: str
    signature: str | None = None

    @property
    def request_id(self) -> str:
        return self.receipt.request.request_id

    def unsigned(self) -> SealedReceipt:
        return replace(self, signature=None)

    def to_json(self) -> dict:
        out = self.receipt.to_json()
        out.update(seq=self.seq, prev=self.prev, store_id=self.store_id)
        return put(out, signature=self.signature)

    @classmethod
    def from_json(cls, obj: object, name: str = "the receipt") -> SealedReceipt:
        f = Fields(name, obj)
        out = cls(receipt=Receipt.read(f), seq=f.req("seq", is_int),
                  prev=f.req("prev", lambda v: None if v is None else SHA256(v)),
                  store_id=f.req("store_id", is_hex(32)),
                  signature=f.opt("signature", is_hex(128)))
        f.done()
        return out
