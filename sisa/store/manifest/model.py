"""The manifest model: the store's state, the commit point's content.

A store's state is a small root file, ``manifest.json``, that points to immutable,
content-addressed leaf manifests (as Iceberg's manifest list points to manifests):

* one **shard leaf** per shard (``meta/shards/shard=NNNN/<hash>.json``): its slices'
  files and its checkpoints;
* **index pages** and **tombstone pages** (``meta/index/page=NNNN/...``,
  ``meta/tombstones/page=NNNN/...``), each naming up to :data:`PAGE` buckets' files.

The root holds the assignment, schema, model spec, journal (``pending``), audit head and
one reference (file, sha256, bytes) per leaf. A change writes only the leaves it touched
and the root, so a forget commits bytes in proportion to the shards it changed, not to
the store. Replacing the root (atomically) is the commit; leaves are hash-checked on
load like every other file, and parsed leaves are cached by hash within a process.

:class:`Manifest` is the immutable in-memory state (the root as a read-only mapping plus
its leaves) with typed accessors; the files it names are typed records
(:mod:`sisa.store.manifest.entries`). A change is made by one of its ``with_*`` methods,
which return a new manifest sharing what did not change; :meth:`sisa.store.Store.commit`
hands it to :func:`sisa.store.manifest.write`. Nothing else edits a section or writes the files.

On disk the root is ``{"checksum": sha256(body), "signature": ed25519(body), "manifest":
body}`` over body's exact bytes, so reading verifies both without re-serialising.
"""

from __future__ import annotations

import copy
import datetime as _dt
from collections.abc import Iterable, Mapping

from ...errors import StoreError
from ..format.ids import IdType
from . import codec as io
from .codec import (
    key_cell,
    leaf_ref,
    slice_key,
)
from .entries import Blob, BucketFile, CheckpointFile, LeafRef, ShardRef, SliceFile
from .journal import JournalEntry, JournalKind
from .pages import PAGE, _page_edits, _pages, fingerprint
from .plan import RetrainPlan

__all__ = ["Manifest", "now_iso"]

# What a finished run may commit besides clearing its journal (a forget's receipt).
_RUN_FIELDS = frozenset({"last_receipt", "audit"})
# The root sections that name leaves: changing one changes which leaves are live.
_LEAF_SECTIONS = frozenset({"shards", "index", "tombstones"})
# (leaf kind, merged view over those leaves alone): kept by an edit of other kinds' leaves
_VIEW_KINDS = (("shards", "slices"), ("shards", "checkpoints"), ("index", "index"),
               ("tombstones", "tombstones"))


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")


class Manifest(Mapping):
    """An immutable store state: the root (read through this mapping, what is signed)
    and its leaves. Read it through the typed accessors; change it with the ``with_*``
    methods, which return a new one.

    A read-only :class:`~collections.abc.Mapping` over a private copy of the root rather
    than a ``dict`` subclass: it has no mutating method to guard, and the many readers of
    root sections (``manifest["assignment"]``, ``.get("holdout")``) stay as they are."""

    __slots__ = ("_leaves", "_root", "_unwritten", "_views")

    def __init__(self, root: Mapping, leaves: Mapping[str, dict],
                 unwritten: Mapping[str, tuple[str, bytes]] | None = None) -> None:
        self._root = dict(root)  # the root's sections (leaf references typed)
        self._leaves = dict(leaves)  # sha256 -> parsed leaf body (never changed)
        self._unwritten = dict(unwritten or {})  # sha256 -> (file, bytes) not yet on disk
        self._views: dict = {}

    def __getitem__(self, key: str):
        return self._root[key]

    def __iter__(self):
        return iter(self._root)

    def __len__(self) -> int:
        return len(self._root)

    def __repr__(self) -> str:
        return f"Manifest(generation={self.get('generation')}, store_id={self.store_id!r})"

    def __reduce__(self):
        return (Manifest, (self._root, self._leaves, self._unwritten))

    def __copy__(self) -> Manifest:
        return self

    def __deepcopy__(self, memo) -> Manifest:
        return Manifest(copy.deepcopy(self._root, memo), copy.deepcopy(self._leaves, memo),
                        dict(self._unwritten))

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
    def id_type(self) -> IdType:
        return self["schema"]["id_type"]

    @property
    def n_deleted(self) -> int:
        return self.get("n_deleted", 0)

    @property
    def n_tombstones(self) -> int:
        return self["tombstones"]["rows"]

    @property
    def model(self) -> dict | None:
        """The trained model's spec and classes (checkpoints: :meth:`checkpoint`), or
        None before a fit."""
        return self.get("model")

    @property
    def pending(self) -> JournalEntry | None:
        """The journal of an unfinished run (:class:`~sisa.store.manifest.journal.JournalEntry`)
        or None; a malformed one raises :class:`~sisa.errors.CorruptStoreError`."""
        raw = self.get("pending")
        return None if raw is None else JournalEntry.from_json(raw)

    @property
    def audit(self) -> dict:
        return self.get("audit") or {}

    @property
    def last_receipt(self) -> dict | None:
        return self.get("last_receipt")

    def shard_leaf(self, shard: int) -> dict:
        """Shard ``shard``'s leaf: ``{"shard", "slices": {r: SliceFile}, "checkpoints":
        {r: CheckpointFile}}``."""
        return self._leaves[self["shards"][shard].sha256]

    def shard_rows(self, shard: int) -> int:
        return self["shards"][shard].rows

    def shard_parts(self, name: str, part) -> list:
        """``part(leaf)`` per shard, kept by leaf hash (:func:`manifest_io.shard_parts`)."""
        return io.shard_parts(self, name, part)

    def slice(self, shard: int, sl: int) -> SliceFile:
        """The entry of slice ``(shard, sl)``: file, sha256, bytes, rows, labels."""
        return self.shard_leaf(shard)["slices"][str(sl)]

    def checkpoint(self, shard: int, sl: int) -> CheckpointFile | None:
        """The entry of checkpoint ``(shard, sl)``, or None if there is none."""
        return self.shard_leaf(shard)["checkpoints"].get(str(sl))

    @property
    def slices(self) -> Mapping[str, SliceFile]:
        """Every slice entry by :func:`slice_key` (a merged view of the shard leaves)."""
        return self._merged("slices")

    @property
    def checkpoints(self) -> Mapping[str, CheckpointFile]:
        """Every checkpoint entry by :func:`slice_key`."""
        return self._merged("checkpoints")

    def _merged(self, section: str) -> dict:
        if section not in self._views:
            self._views[section] = {
                slice_key(s, int(r)): meta for s in range(len(self["shards"]))
                for r, meta in self.shard_leaf(s)[section].items()}
        return self._views[section]

    @property
    def index_parts(self) -> list[BucketFile]:
        """The index bucket entries, bucket by bucket."""
        if "index" not in self._views:
            parts = [None] * self["index"]["buckets"]
            for ref in self["index"]["pages"]:
                for b, meta in self._leaves[ref.sha256]["parts"].items():
                    parts[int(b)] = meta
            self._views["index"] = parts
        return self._views["index"]

    @property
    def tombstone_parts(self) -> Mapping[str, BucketFile]:
        """The tombstone bucket entries by bucket number (as a string)."""
        if "tombstones" not in self._views:
            self._views["tombstones"] = {
                b: meta for ref in self["tombstones"]["pages"].values()
                for b, meta in self._leaves[ref.sha256]["parts"].items()}
        return self._views["tombstones"]

    def pending_plan(self) -> RetrainPlan:
        """shard -> first slice lacking a checkpoint, for every shard not fully trained. A
        refit model (``incremental`` false) keeps only its last slice's checkpoint: its
        shard is trained iff that one exists, and retrains from slice 0."""
        n_slices = self["assignment"]["n_slices"]
        incremental = (self.get("model") or {}).get("incremental", True)

        def first(leaf: dict) -> int | None:  # a shard's, from its leaf alone
            done = leaf["checkpoints"]
            for r in range(0 if incremental else n_slices - 1, n_slices):
                if str(r) not in done:
                    return r if incremental else 0
            return None

        # kept per shard leaf: a reload after a forget looks again only at the shards it
        # changed, not at 256 shards' checkpoints
        firsts = self.shard_parts(f"pending-first {n_slices} {incremental}", first)
        return RetrainPlan({s: r for s, r in enumerate(firsts) if r is not None})

    def referenced_files(self) -> dict[str, Blob]:
        """Every file the manifest vouches for (leaves included): relative path -> its
        entry (a :class:`~sisa.store.manifest.entries.Blob`: sha256, bytes, ...)."""
        if "files" not in self._views:
            self._views["files"] = dict(e for r in self._leaf_refs() for e in self._entries(r))
        return self._views["files"]

    def dropped_files(self, new: Manifest) -> list[str]:
        """The files this state names and ``new`` does not, compared only where a leaf
        changed (a file's path puts it in one leaf: its shard's or its bucket page's)."""
        mine = {r.sha256 for r in self._leaf_refs()}
        theirs = {r.sha256 for r in new._leaf_refs()}
        old = {f for r in self._leaf_refs() if r.sha256 not in theirs
               for f, _ in self._entries(r)}
        return sorted(old - {f for r in new._leaf_refs() if r.sha256 not in mine
                             for f, _ in new._entries(r)})

    def _entries(self, ref: LeafRef) -> list[tuple[str, Blob]]:
        """A leaf's own file and every file it names, each with its entry."""
        body = self._leaves[ref.sha256]
        sections = [body["slices"], body["checkpoints"]] if "shard" in body else [body["parts"]]
        return [(ref.file, ref), *((m.file, m) for sec in sections for m in sec.values())]

    def _leaf_refs(self) -> list[LeafRef]:
        return (list(self["shards"]) + list(self["index"]["pages"])
                + list(self["tombstones"]["pages"].values()))

    def audit_files(self) -> dict[str, str]:
        """The store's own audit log and (unsigned stores only) audit-key file. Named by
        the store id, so a store built over an old one never appends to the old one's
        log."""
        out = {"log": f"audit/receipts-{self['store_id']}.jsonl"}
        if not self.get("signer"):
            out["key"] = f"audit/key-{self['store_id']}"
        return out

    def flat(self) -> dict:
        """A deep copy of the whole state as one JSON dict (slices, index, tombstones and
        checkpoints inline, as format 3 held them, entries as their JSON objects): for
        inspection, and for tests that forge a store (:func:`from_flat` turns it back into
        a manifest)."""
        d = copy.deepcopy({k: v for k, v in self.items()
                           if k not in ("shards", "index", "tombstones")})
        d["slices"] = {k: m.to_json() for k, m in self.slices.items()}
        d["index"] = {"parts": [m.to_json() for m in self.index_parts],
                      "rows": self["index"]["rows"]}
        d["tombstones"] = {"parts": {b: m.to_json() for b, m in self.tombstone_parts.items()},
                           "rows": self.n_tombstones}
        if d.get("model"):
            d["model"]["checkpoints"] = {k: m.to_json() for k, m in self.checkpoints.items()}
        return d

    # -- changes (each returns a new manifest) ---------------------------------------
    def _with(self, root: Mapping | None = None,
              leaves: Mapping[tuple[str, int], tuple[dict, str]] | None = None,
              **top) -> Manifest:
        """A new manifest: ``top`` replaces root keys; ``leaves`` maps a root slot
        (``"shards"/s``, ``"index"/p``, ``"tombstones"/p``) to a new leaf body and file."""
        new = dict(root if root is not None else self._root, **top)
        if not leaves and root is None and not _LEAF_SECTIONS & top.keys():
            return self._sharing_leaves(new)  # the same leaves: nothing to add or drop
        bodies, unwritten = dict(self._leaves), dict(self._unwritten)
        edited = dict(leaves or {})
        # only the slots edited here change which leaves are live (a leaf names its own
        # slot, so no other slot holds it): the others are not looked through again
        slots_only = bool(edited) and all(new[k] is self._root[k] for k in _LEAF_SECTIONS)
        old_shas = {self._slot_ref(kind, i) for kind, i in edited} if slots_only else set()
        if edited:
            shards = list(new["shards"])
            index = {**new["index"], "pages": list(new["index"]["pages"])}
            tombs = {**new["tombstones"], "pages": dict(new["tombstones"]["pages"])}
            for (kind, i), (body, rel_dir) in edited.items():
                ref, raw = leaf_ref(body, rel_dir)
                bodies[ref.sha256] = body
                unwritten[ref.sha256] = (ref.file, raw)
                if kind == "shards":
                    shards[i] = ShardRef.of(ref, rows=sum(m.rows for m in body["slices"].values()))
                elif kind == "index":
                    index["pages"][i] = ref
                elif body["parts"]:
                    tombs["pages"][str(i)] = ref
                else:
                    tombs["pages"].pop(str(i), None)
            new.update(shards=shards, index=index, tombstones=tombs)
        if slots_only:
            gone = old_shas - {Manifest(new, {})._slot_ref(kind, i) for kind, i in edited}
            for sha in gone:
                if sha is not None:  # a slot that held no leaf
                    bodies.pop(sha, None)
                    unwritten.pop(sha, None)
            out = Manifest(new, bodies, unwritten)
            # the merged views of the kinds not edited stay valid (2,048 index buckets)
            kinds = {kind for kind, _ in edited}
            out._views.update((v, self._views[v]) for kinds_of, v in _VIEW_KINDS
                              if v in self._views and kinds_of not in kinds)
            return out
        live = {ref.sha256 for ref in Manifest(new, {})._leaf_refs()}
        return Manifest(new, {k: v for k, v in bodies.items() if k in live},
                        {k: v for k, v in unwritten.items() if k in live})

    def _slot_ref(self, kind: str, i: int) -> str | None:
        """The sha256 of the leaf at root slot ``kind``/``i`` (None: an empty slot)."""
        if kind == "shards":
            ref = self["shards"][i]
        elif kind == "index":
            ref = self["index"]["pages"][i]
        else:
            ref = self["tombstones"]["pages"].get(str(i))
        return None if ref is None else ref.sha256

    def _sharing_leaves(self, root: Mapping, unwritten: bool = True) -> Manifest:
        """A manifest of ``root`` over these same leaves: the views over the leaves (merged
        slices, checkpoints, buckets, files) are shared, not rebuilt (2,048 buckets at 10M
        rows)."""
        out = Manifest(root, self._leaves, self._unwritten if unwritten else None)
        out._views.update(self._views)
        return out

    def _on_pages(self, kind: str, buckets: Iterable[int]) -> dict:
        """The current entries of every bucket on the pages holding ``buckets`` (bucket ->
        entry), read from those page leaves alone: a page is rewritten from its own
        entries, not from all 2,048 buckets' (a leaf holds only its page's buckets:
        :func:`sisa.store.manifest.codec.load` checks it)."""
        pages = self[kind]["pages"]
        refs = enumerate(pages) if kind == "index" else pages.items()
        touched = {b // PAGE for b in buckets}
        out: dict = {}
        for p, ref in refs:  # (32 pages at most: every one, as the merged views read them)
            if int(p) in touched and ref is not None:
                out.update((int(b), m) for b, m in self._leaves[ref.sha256]["parts"].items())
        return out

    def _shard_edit(self, shard: int, **sections) -> tuple[dict, str]:
        body = {**self.shard_leaf(shard), **sections}
        return body, io.shard_leaf_dir(shard)

    def with_model(self, model: dict) -> Manifest:
        """A freshly fitted model's spec (no checkpoints yet) replacing any previous one."""
        spec = {k: v for k, v in model.items() if k != "checkpoints"}
        leaves = {("shards", s): self._shard_edit(s, checkpoints={})
                  for s in range(len(self["shards"])) if self.shard_leaf(s)["checkpoints"]}
        return self._with(leaves=leaves, model=spec, pending=None)

    def with_run(self, kind: JournalKind, plan: RetrainPlan) -> Manifest:
        """Journal a run of ``kind`` that retrains ``plan``: its stale checkpoints go."""
        return self.without_checkpoints(plan)._with(pending=JournalEntry(kind=kind).to_json())

    def without_checkpoints(self, plan: RetrainPlan) -> Manifest:
        """Drop every checkpoint ``plan`` makes stale (they saw rows now gone, or are
        damaged)."""
        leaves = {}
        for s in plan:
            cks = self.shard_leaf(s)["checkpoints"]
            kept = {r: m for r, m in cks.items() if not plan.covers(s, int(r))}
            if len(kept) != len(cks):
                leaves[("shards", s)] = self._shard_edit(s, checkpoints=kept)
        return self._with(leaves=leaves)

    def with_checkpoints(self, metas: Iterable[CheckpointFile],
                         rows_processed: int = 0) -> Manifest:
        """Add trained shards' checkpoints, counting their rows in the journal."""
        by_shard: dict[int, dict] = {}
        for meta in metas:
            by_shard.setdefault(meta.shard, {})[str(meta.slice)] = meta
        leaves = {("shards", s): self._shard_edit(
            s, checkpoints={**self.shard_leaf(s)["checkpoints"], **cks})
            for s, cks in by_shard.items()}
        top = {}
        pending = self.pending
        if pending:
            top["pending"] = pending.counted(rows_processed).to_json()
        return self._with(leaves=leaves, **top)

    def with_run_done(self, **fields) -> Manifest:
        """Clear the journal; ``fields`` (a forget's ``last_receipt`` and ``audit``) land
        in the same commit."""
        unknown = set(fields) - _RUN_FIELDS
        if unknown:
            raise StoreError(f"internal: a run cannot commit {sorted(unknown)}")
        return self._with(pending=None, **fields)

    def with_receipt(self, last_receipt: dict, audit: dict) -> Manifest:
        """Chain a receipt onto the audit head."""
        return self._with(last_receipt=last_receipt, audit=audit)

    def with_holdout(self, holdout: dict) -> Manifest:
        """Record which rows of the source file were held out of training."""
        return self._with(holdout=holdout)

    def with_deletion(self, *, slices: Mapping[str, SliceFile],
                      index_parts: Mapping[int, BucketFile],
                      tombstone_parts: Mapping[int, BucketFile], n_buckets: int, deleted: int,
                      plan: RetrainPlan, classes: list | None,
                      pending: dict | None = None) -> Manifest:
        """Rows deleted: ``slices`` (by :func:`slice_key`) replace theirs, the index and
        tombstone buckets given replace theirs (all of them when ``n_buckets`` changes),
        and every checkpoint ``plan`` covers goes. A classifier whose class list changes
        gets ``classes`` (``plan`` then covers every shard)."""
        rebucket = n_buckets != self["index"]["buckets"]
        root = dict(self._root)
        if rebucket:  # a re-bucketed store starts from empty pages
            root["index"] = {"rows": 0, "buckets": n_buckets,
                             "pages": [None] * _pages(n_buckets)}
            root["tombstones"] = {"rows": 0, "pages": {}}
        old_index = [] if rebucket else self.index_parts
        old_tombs = {} if rebucket else self.tombstone_parts
        leaves = {**_page_edits("index", old_index if rebucket else
                                self._on_pages("index", index_parts), index_parts, rebucket),
                  **_page_edits("tombstones", old_tombs if rebucket else
                                self._on_pages("tombstones", tombstone_parts),
                                tombstone_parts, rebucket)}
        by_shard: dict[int, dict] = {}
        for key, meta in slices.items():
            s, r = key_cell(key)
            by_shard.setdefault(s, {})[str(r)] = meta
        for s in set(by_shard) | set(plan):
            leaf = self.shard_leaf(s)
            kept = {r: m for r, m in leaf["checkpoints"].items() if not plan.covers(s, int(r))}
            leaves[("shards", s)] = self._shard_edit(
                s, slices={**leaf["slices"], **by_shard.get(s, {})}, checkpoints=kept)
        top: dict = {"n_deleted": self.n_deleted + deleted}
        if self.model and classes is not None and classes != self.model["classes"]:
            top["model"] = {**self.model, "classes": classes}
        if pending is not None:
            top["pending"] = pending
        new = self._with(root, leaves, **top)
        if rebucket:  # every bucket is new: count them all
            index_rows = sum(m.rows for m in new.index_parts)
            tomb_rows = sum(m.rows for m in new.tombstone_parts.values())
        else:  # running totals: only the buckets given changed (2,048 buckets at 10M rows)
            index_rows = self["index"]["rows"] + sum(
                m.rows - old_index[b].rows for b, m in index_parts.items())
            tomb_rows = self.n_tombstones + sum(
                m.rows - (old_tombs[str(b)].rows if str(b) in old_tombs else 0)
                for b, m in tombstone_parts.items())
            # the merged bucket views of the new state, from the old ones and the changes
            merged = list(old_index)  # (a C copy: no Python loop over the buckets)
            for b, m in index_parts.items():
                merged[b] = m
            new._views["index"] = merged
            new._views["tombstones"] = {**old_tombs, **{str(b): m for b, m
                                                        in tombstone_parts.items()}}
        # only root keys change: the leaves (and the views over them) stay as they are
        return new._sharing_leaves({**new._root, "index": {**new["index"], "rows": index_rows},
                                    "tombstones": {**new["tombstones"], "rows": tomb_rows},
                                    "fingerprint": fingerprint(new)})

    def stamped(self, generation: int) -> Manifest:
        """This state as generation ``generation``, with its time."""
        return self._with(generation=generation, updated=now_iso())

    def written(self) -> Manifest:
        """The same state, its leaves now on disk."""
        return self._sharing_leaves(self._root, unwritten=False)
