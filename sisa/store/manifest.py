"""The manifest: the store's commit point, and the one module that writes it.

``manifest.json`` names every live file of a store with its sha256, the assignment,
the schema, the trained model's spec and checkpoints, the journal of an unfinished
run (``pending``) and the head of the audit log. Every other file is immutable and
content-addressed, so replacing this one file (atomically) is a commit.

:class:`Manifest` is an immutable view with typed accessors. A change is made by one
of its ``with_*`` methods, which return a new manifest sharing the untouched
sections; :meth:`sisa.store.Store.commit` then hands it to :func:`write`. Nothing else
edits a section or writes the file, so what a commit can change is listed here.

On disk: ``{"checksum": sha256(body), "signature": ed25519(body), "manifest": body}``
over body's exact bytes, so reading verifies both without re-serialising.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import json
import re
from collections.abc import Iterable, Mapping

from .._version import __version__
from ..errors import CorruptStoreError, KeyFileError, StoreError
from . import keys
from .fs import Location
from .layout import check_manifest_paths

FORMAT = "sisa-store/3"
MANIFEST = "manifest.json"
# What a finished run may commit besides clearing its journal (a forget's receipt).
_RUN_FIELDS = frozenset({"last_receipt", "audit"})


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


def canonical_json(obj) -> bytes:
    """Sorted keys, no spaces: the same value always gives the same bytes."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), default=str).encode()


def slice_key(shard: int, sl: int) -> str:
    """The manifest's key of a (shard, slice) cell, for slices and checkpoints alike."""
    return f"{shard}/{sl}"


def key_cell(key: str) -> tuple[int, int]:
    """``(shard, slice)`` of a :func:`slice_key`."""
    a, b = key.split("/")
    return int(a), int(b)


class RetrainPlan(dict):
    """shard -> first slice to (re)train: what a deletion invalidates, what a run
    journals, what ``repair`` finds damaged. Every checkpoint of a planned shard from
    that slice on is stale."""

    def add(self, shard: int, sl: int) -> None:
        """Plan ``shard`` from ``sl`` or earlier."""
        self[int(shard)] = min(self.get(int(shard), int(sl)), int(sl))

    @classmethod
    def of(cls, cells: Iterable[tuple[int, int]]) -> RetrainPlan:
        """The plan covering every ``(shard, slice)`` cell given."""
        plan = cls()
        for s, r in cells:
            plan.add(s, r)
        return plan

    @classmethod
    def everything(cls, n_shards: int) -> RetrainPlan:
        """Every shard from its first slice (a fit, or a change of the class list)."""
        return cls({s: 0 for s in range(n_shards)})

    def covers(self, shard: int, sl: int) -> bool:
        """Whether the checkpoint of ``(shard, sl)`` is stale under this plan."""
        return shard in self and sl >= self[shard]

    def pairs(self) -> list[list[int]]:
        """``[[shard, first slice], ...]`` sorted, as receipts record it."""
        return sorted([s, r] for s, r in self.items())


class Manifest(dict):
    """An immutable manifest. Read it as a mapping (it is a ``dict``, so it serialises as
    one) or through the typed accessors; change it with the ``with_*`` methods, which
    return a new one. Every mutating ``dict`` method raises :class:`TypeError`."""

    __slots__ = ()

    def _read_only(self, *args, **kwargs):
        raise TypeError("a Manifest is immutable: make a changed copy with its with_* methods "
                        "(sisa.store.manifest)")

    __setitem__ = __delitem__ = __ior__ = _read_only
    clear = pop = popitem = setdefault = update = _read_only

    def __repr__(self) -> str:
        return f"Manifest(generation={self.get('generation')}, store_id={self.store_id!r})"

    def __reduce__(self):
        return (Manifest, (dict(self),))

    def __copy__(self) -> Manifest:
        return self

    def __deepcopy__(self, memo) -> Manifest:
        import copy

        return Manifest(copy.deepcopy(dict(self), memo))

    def to_dict(self) -> dict:
        """A plain ``dict`` copy of the top level (the sections are shared)."""
        return dict(self)

    # -- typed accessors -------------------------------------------------------------
    @property
    def generation(self) -> int:
        return self["generation"]

    @property
    def fingerprint(self) -> str:
        return self["fingerprint"]

    @property
    def store_id(self) -> str | None:
        return self.get("store_id")

    @property
    def signer_key(self) -> str | None:
        """The hex Ed25519 public key that signs this store, or None (unsigned)."""
        signer = self.get("signer")
        return signer["public_key"] if signer else None

    @property
    def assignment(self) -> dict:
        return self["assignment"]

    @property
    def schema(self) -> dict:
        return self["schema"]

    @property
    def id_type(self) -> str:
        return self["schema"]["id_type"]

    @property
    def slices(self) -> Mapping[str, dict]:
        return self["slices"]

    def slice(self, shard: int, sl: int) -> dict:
        """The entry of slice ``(shard, sl)``: file, sha256, bytes, rows, labels."""
        return self["slices"][slice_key(shard, sl)]

    @property
    def index_parts(self) -> list[dict]:
        return self["index"]["parts"]

    @property
    def tombstone_parts(self) -> Mapping[str, dict]:
        return (self.get("tombstones") or {}).get("parts", {})

    @property
    def n_deleted(self) -> int:
        return self.get("n_deleted", 0)

    @property
    def model(self) -> dict | None:
        """The trained model's spec, classes and checkpoints, or None before a fit."""
        return self.get("model")

    @property
    def checkpoints(self) -> Mapping[str, dict]:
        model = self.get("model")
        return model["checkpoints"] if model else {}

    def checkpoint(self, shard: int, sl: int) -> dict | None:
        """The entry of checkpoint ``(shard, sl)``, or None if there is none."""
        return self.checkpoints.get(slice_key(shard, sl))

    @property
    def pending(self) -> dict | None:
        """The journal of an unfinished run (``{"kind": "fit" | "forget", ...}``) or None."""
        return self.get("pending")

    @property
    def audit(self) -> dict:
        return self.get("audit") or {}

    @property
    def last_receipt(self) -> dict | None:
        return self.get("last_receipt")

    def pending_plan(self) -> RetrainPlan:
        """shard -> first slice lacking a checkpoint, for every shard not fully trained. A
        refit model (``incremental`` false) keeps only its last slice's checkpoint: its
        shard is trained iff that one exists, and retrains from slice 0."""
        a, done = self["assignment"], self.checkpoints
        incremental = (self.get("model") or {}).get("incremental", True)
        first = 0 if incremental else a["n_slices"] - 1
        plan = RetrainPlan()
        for s in range(a["n_shards"]):
            for r in range(first, a["n_slices"]):
                if slice_key(s, r) not in done:
                    plan[s] = r if incremental else 0
                    break
        return plan

    def referenced_files(self) -> dict[str, dict]:
        """Every file the manifest vouches for: relative path -> {sha256, bytes, ...}."""
        out: dict[str, dict] = {}
        for meta in self["slices"].values():
            out[meta["file"]] = meta
        for meta in self["index"]["parts"]:
            out[meta["file"]] = meta
        for meta in self.tombstone_parts.values():
            out[meta["file"]] = meta
        for meta in self.checkpoints.values():
            out[meta["file"]] = meta
        return out

    def audit_files(self) -> dict[str, str]:
        """The store's own audit log and (unsigned stores only) audit-key file. Named by
        the store id, so a store built over an old one never appends to the old one's
        log."""
        out = {"log": f"audit/receipts-{self['store_id']}.jsonl"}
        if not self.get("signer"):
            out["key"] = f"audit/key-{self['store_id']}"
        return out

    # -- changes (each returns a new manifest) ---------------------------------------
    def _with(self, **top) -> Manifest:
        return Manifest({**self, **top})

    def _with_model(self, **fields) -> Manifest:
        return self._with(model={**self["model"], **fields})

    def with_model(self, model: dict) -> Manifest:
        """A freshly fitted model's spec (no checkpoints yet) replacing any previous one."""
        return self._with(model=model, pending=None)

    def with_run(self, kind: str, plan: RetrainPlan) -> Manifest:
        """Journal a run of ``kind`` that retrains ``plan``: its stale checkpoints go."""
        return self.without_checkpoints(plan)._with(pending={"kind": kind})

    def without_checkpoints(self, plan: RetrainPlan) -> Manifest:
        """Drop every checkpoint ``plan`` makes stale (they saw rows now gone, or are
        damaged)."""
        kept = {k: v for k, v in self.checkpoints.items()
                if not plan.covers(v["shard"], v["slice"])}
        return self._with_model(checkpoints=kept)

    def with_checkpoints(self, metas: Iterable[dict], rows_processed: int = 0) -> Manifest:
        """Add a trained shard's checkpoints, counting its rows in the journal."""
        cks = dict(self.checkpoints)
        for meta in metas:
            cks[slice_key(meta["shard"], meta["slice"])] = meta
        new = self._with_model(checkpoints=cks)
        if self.pending:
            pending = {**self.pending,
                       "rows_processed": self.pending.get("rows_processed", 0) + rows_processed}
            new = new._with(pending=pending)
        return new

    def with_run_done(self, **fields) -> Manifest:
        """Clear the journal; ``fields`` (a forget's ``last_receipt`` and ``audit``) land
        in the same commit."""
        return self._with(pending=None, **self._run_fields(fields))

    def with_receipt(self, last_receipt: dict, audit: dict) -> Manifest:
        """Chain a receipt onto the audit head (a forget that changed no rows)."""
        return self._with(last_receipt=last_receipt, audit=audit)

    def with_holdout(self, holdout: dict) -> Manifest:
        """Record which rows of the source file were held out of training."""
        return self._with(holdout=holdout)

    def with_deletion(self, *, slices: Mapping[str, dict], index: dict, tombstones: dict,
                      deleted: int, plan: RetrainPlan, classes: list | None,
                      pending: dict | None) -> Manifest:
        """Rows deleted: ``slices`` replace theirs, the index and tombstones are new,
        and every checkpoint that saw the rows goes (all of them when the class list
        changes, which ``plan`` then covers). ``pending`` journals the retrain in the same
        commit."""
        new = self._with(slices={**self["slices"], **slices}, index=index,
                         tombstones=tombstones, n_deleted=self.n_deleted + deleted)
        if self.model:
            if classes is not None and classes != self.model["classes"]:
                new = new._with_model(classes=classes)
            new = new.without_checkpoints(plan)
        return new._with(pending=pending) if pending is not None else new

    def stamped(self, generation: int) -> Manifest:
        """This state as generation ``generation``, with its time and fingerprint."""
        return self._with(generation=generation, updated=now_iso(),
                          fingerprint=fingerprint(self))

    @staticmethod
    def _run_fields(fields: dict) -> dict:
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise StoreError(f"internal: a run cannot commit {sorted(unknown)}")
        return fields


def initial(*, store_id: str, signer_key: str | None, assignment: dict, schema: dict,
            slices: dict, index: dict) -> Manifest:
    """The manifest of a freshly ingested store: data, no model, an empty audit log."""
    d = {
        "format": FORMAT, "sisa_version": __version__, "generation": 0, "created": now_iso(),
        "store_id": store_id,
        "signer": {"alg": keys.ALG, "public_key": signer_key} if signer_key else None,
        "assignment": assignment, "schema": schema, "slices": slices, "index": index,
        "tombstones": None, "n_deleted": 0, "model": None, "pending": None,
        "audit": {"receipts": 0, "head": None}, "last_receipt": None,
    }
    d["fingerprint"] = fingerprint(d)
    return Manifest(d)


def fingerprint(manifest: Mapping) -> str:
    """Content hash of the training data state: assignment, schema and every slice hash."""
    slices = [manifest["slices"][k]["sha256"] for k in sorted(manifest["slices"], key=key_cell)]
    payload = {"assignment": manifest["assignment"], "schema": manifest["schema"],
               "slices": slices}
    return hashlib.sha256(canonical_json(payload)).hexdigest()


# -- on disk ----------------------------------------------------------------------------
_HEAD = re.compile(rb'\{"checksum":"([0-9a-f]{64})","signature":"([0-9a-f]*)","manifest":')


def write(loc: Location, manifest: Mapping, key: keys.KeyPair | None) -> None:
    """Write ``manifest.json`` atomically with its checksum and (for a signed store,
    ``manifest["signer"]``) the owner's signature; refuses a key that is not the
    signer's. The only writer of the file."""
    body = canonical_json(manifest)
    digest = hashlib.sha256(body).hexdigest().encode()
    signer = manifest.get("signer")
    sig = b""
    if signer:
        if key is None or key.public_hex != signer["public_key"]:
            raise KeyFileError(wrong_key(loc.uri, signer["public_key"], key))
        sig = key.sign(body).encode()
    loc.write_atomic(MANIFEST, b'{"checksum":"' + digest + b'","signature":"' + sig
                     + b'","manifest":' + body + b"}")


def wrong_key(uri: str, public_hex: str, key: keys.KeyPair | None) -> str:
    """The error message for changing a signed store without its owner's key."""
    have = f"your key is ed25519:{key.public_hex[:16]}..." if key else "no key is configured"
    return (f"store {uri} is signed by ed25519:{public_hex[:16]}... and {have}: point "
            f"${keys.KEY_FILE_ENV} at its owner's key file (only the owner can change a signed "
            "store)")


def split(raw: bytes) -> tuple[bytes, str] | None:
    """``(body, signature hex)`` if the bytes match their own checksum (a torn object-store
    read or a corrupted file does not), else None."""
    head = _HEAD.match(raw)
    body = raw[head.end():-1] if head and raw.endswith(b"}") else b""
    if head and hashlib.sha256(body).hexdigest().encode() == head.group(1):
        return body, head.group(2).decode()
    return None


def exists(loc: Location) -> bool:
    return loc.exists(MANIFEST)


def load(loc: Location) -> Manifest:
    """Read and check ``manifest.json``: checksum, format, signer and signature, audit
    section, and that every path it names stays inside the store."""
    raw = loc.read_stable(MANIFEST, lambda b: split(b) is not None)  # torn S3 reads
    parts = split(raw)
    m = None
    if parts is not None:
        with contextlib.suppress(ValueError):
            m = json.loads(parts[0])
    where = loc.path(MANIFEST)
    if not isinstance(m, dict):
        fmt = re.search(rb'"format":"(sisa-store/[0-9]+)"', raw)
        if fmt and fmt.group(1).decode() != FORMAT:
            raise StoreError(_old_format(where, fmt.group(1).decode()))
        raise CorruptStoreError(
            f"manifest {where} is corrupt (bad JSON or checksum): restore it from backup; sisa "
            "will not guess which files are valid")
    if m.get("format") != FORMAT:
        raise StoreError(_old_format(where, m.get("format")))
    _check_signer_and_audit(m, where)
    signer = m.get("signer")
    if signer and not keys.check_signature(signer["public_key"], parts[0], parts[1]):
        raise CorruptStoreError(
            f"manifest {where} does not carry a valid signature of the key it names "
            "(ed25519:" + signer["public_key"][:16] + "...): it was changed by someone without "
            "the owner's key; restore the store from backup")
    if not signer and parts[1]:
        raise CorruptStoreError(f"manifest {where} carries a signature but names no signer: it "
                                "was edited; restore the store from backup")
    check_manifest_paths(m, where)  # no entry may name a path outside the store
    return Manifest(m)


def _check_signer_and_audit(m: dict, where: str) -> None:
    signer = m.get("signer")
    if signer is not None and not (
            isinstance(signer, dict) and signer.get("alg") == keys.ALG
            and isinstance(signer.get("public_key"), str)
            and re.fullmatch(r"[0-9a-f]{64}", signer["public_key"])):
        raise CorruptStoreError(f"manifest {where} names a malformed signer "
                                f"({str(signer)[:60]}): it was edited; restore the store from "
                                "backup")
    audit = m.get("audit")
    if not (isinstance(audit, dict) and isinstance(audit.get("receipts"), int)
            and (audit.get("head") is None or isinstance(audit.get("head"), str))
            and isinstance(m.get("last_receipt") or {}, dict)):
        raise CorruptStoreError(f"manifest {where} has a malformed audit section: it was "
                                "edited; restore the store from backup")


def _old_format(where: str, fmt) -> str:
    return (f"{where} has format {fmt!r}; this sisa reads {FORMAT}: rebuild the store from the "
            "source data (`sisa train ... --overwrite`, or Store.create(..., overwrite=True)), "
            "or open it with the sisa version that wrote it")
