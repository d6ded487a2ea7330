"""verify → the proof a user can hand to an auditor.

Checks, per shard and for the store as a whole:

- every file the manifest names is present and matches its sha256;
- no other file is left under the store (a leftover could hold deleted rows);
- no id recorded as deleted (by keyed hash) appears in any data file, and the index
  names exactly the ids the data files hold;
- every checkpoint's lineage hash matches the data it must have been trained on;
- retraining the shard from scratch on its current rows, with the recorded seeds,
  reproduces every stored checkpoint byte for byte;
- no forget or training run is left unfinished;
- the store agrees with its audit log: exactly the S x R grid, tombstones for every
  forgotten row, and the data state the last receipt recorded (a restored pre-forget
  backup fails here).
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa

from ..engine import checkpoints as ck
from ..engine.backend import run_shards
from ..errors import InputError, SisaError
from ..store.store import ID, Store, id_buckets, slice_key
from .forget import INTENT
from .receipts import history


@dataclass
class ShardCheck:
    shard: int
    rows: int
    retrained: bool = False
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class VerifyReport:
    """Outcome of :func:`verify`; ``ok`` is the verdict."""

    store: str
    fingerprint: str
    shards: list[ShardCheck]
    problems: list[str]
    deleted_ids_checked: int
    seconds: float

    @property
    def ok(self) -> bool:
        return not self.problems and all(s.ok for s in self.shards)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        for s, sd in zip(self.shards, d["shards"], strict=True):
            sd["ok"] = s.ok
        return d

    def table(self) -> str:
        lines = [f"verify {self.store}  fingerprint {self.fingerprint[:16]}",
                 f"{'shard':>5}  {'rows':>9}  {'retrained':>9}  result"]
        for s in self.shards:
            lines.append(f"{s.shard:>5}  {s.rows:>9,}  {'yes' if s.retrained else 'no':>9}  "
                         f"{'PASS' if s.ok else 'FAIL: ' + '; '.join(s.problems)}")
        for p in self.problems:
            lines.append(f"store: FAIL: {p}")
        lines.append(f"deleted ids checked absent: {self.deleted_ids_checked:,}")
        lines.append(f"{'PASS' if self.ok else 'FAIL'} in {self.seconds:.1f}s")
        return "\n".join(lines)


def verify(store: Store, *, shards=None, sample: int | None = None, retrain: bool = True,
           backend: str = "auto", address: str | None = None, num_cpus: float = 1,
           progress: bool = False, seed: int | None = None) -> VerifyReport:
    """Check a store and its model; see the module docstring for what is proven.

    Parameters
    ----------
    store : Store
    shards : iterable of int, optional
        Retrain only these shards (all other checks still cover every shard).
    sample : int, optional
        Retrain ``sample`` shards drawn at random, for big stores.
    retrain : bool, default=True
        Set False to skip the byte-identity retrain (fast structural checks only).
    """
    t0 = time.perf_counter()
    store.reload()
    S, R = store.n_shards, store.n_slices
    checks = [ShardCheck(s, store.shard_rows(s)) for s in range(S)]
    problems: list[str] = []
    model = store.manifest.get("model")
    pending = store.manifest.get("pending")
    if pending:
        problems.append(f"an unfinished {pending['kind']} is journaled: run `sisa repair`")
    if store.loc.exists(INTENT):
        problems.append("an interrupted forget left audit/intent.json: run `sisa repair`")
    leftovers = store.unreferenced_files()
    if leftovers:
        problems.append(f"{len(leftovers)} file(s) not named by the manifest, e.g. "
                        f"{leftovers[0]} (may hold deleted rows): run `sisa repair`")
    if not model:
        problems.append("the store holds no trained model")
    problems += _audit_problems(store)

    tomb = set(store.read_tombstones())
    data_ids = []
    for s in range(S):
        for r in range(R):
            try:
                ids = store.read_slice_table(s, r).column(ID)
            except SisaError as exc:
                checks[s].problems.append(str(exc))
                continue
            data_ids.append(ids)
            hits = sum(h in tomb for h in store.tombstone_hashes(ids.to_pylist()))
            if hits:
                checks[s].problems.append(f"slice {r} holds {hits} deleted id(s)")
    try:
        index_ids = store.read_index().column(ID)
        held = pa.chunked_array(data_ids, type=index_ids.type)
        if not np.array_equal(np.sort(index_ids.to_numpy()), np.sort(held.to_numpy())):
            problems.append("the index does not list exactly the ids the data files hold")
        B = store.index_buckets
        misplaced = [b for b in range(B)
                     if (id_buckets(store.read_index_part(b).column(ID).combine_chunks(), B)
                         != b).any()]
        if misplaced:
            problems.append(f"index bucket(s) {misplaced[:5]} hold ids of other buckets: "
                            "locate would miss them")
    except SisaError as exc:
        problems.append(str(exc))
    if model:
        _check_checkpoints(store, checks)
        targets = _targets(S, shards, sample, seed)
        if retrain and targets:
            _retrain(store, checks, targets, backend, address, num_cpus, progress)
    return VerifyReport(store.uri, store.fingerprint, checks, problems, len(tomb),
                        round(time.perf_counter() - t0, 3))


def _audit_problems(store: Store) -> list[str]:
    """The manifest names exactly the S x R grid, and the store is the state the audit
    log says the last forget left (a restored pre-forget backup is not)."""
    out = []
    grid = {slice_key(s, r) for s in range(store.n_shards) for r in range(store.n_slices)}
    extra = sorted(set(store.manifest["slices"]) - grid)
    model = store.manifest.get("model")
    extra += sorted(set(model["checkpoints"]) - grid) if model else []
    if extra:
        out.append(f"the manifest names entries outside its {store.n_shards} x "
                   f"{store.n_slices} grid ({extra[:3]}): it was edited; restore it from backup")
    tomb_rows = (store.manifest.get("tombstones") or {}).get("rows", 0)
    if tomb_rows != store.manifest.get("n_deleted", 0):
        out.append(f"{tomb_rows} tombstones but {store.manifest.get('n_deleted', 0)} deleted "
                   "rows recorded: the manifest was edited")
    log = history(store)
    if log and not store.manifest.get("pending"):
        last = log[-1]
        if last.get("fingerprint_after") != store.fingerprint:
            out.append(f"the data are not the state the last forget (request "
                       f"{last['request_id']}) left: a backup from before it was restored, or "
                       "rows changed outside `forget`; deleted rows may be back")
        if tomb_rows < sum(r["n_ids"] - r.get("already_deleted", 0) for r in log):
            out.append("fewer tombstones than rows the audit log says were forgotten")
    return out


def _check_checkpoints(store: Store, checks: list[ShardCheck]) -> None:
    cks = store.manifest["model"]["checkpoints"]
    for c in checks:
        for r in range(store.n_slices):
            meta = cks.get(slice_key(c.shard, r))
            if meta is None:
                c.problems.append(f"checkpoint for slice {r} is missing")
                continue
            if meta["lineage"] != ck.lineage(store, c.shard, r):
                c.problems.append(f"checkpoint {r} was trained on other data (lineage mismatch)")
            try:
                store.get_blob(meta)
            except SisaError as exc:
                c.problems.append(str(exc))


def _targets(S: int, shards, sample, seed) -> list[int]:
    if shards is not None:
        chosen = sorted({int(s) for s in shards})
        bad = [s for s in chosen if not 0 <= s < S]
        if bad:
            raise InputError(f"shards {bad} do not exist: this store has shards 0..{S - 1}")
        return chosen
    if sample is not None:
        return sorted(random.Random(seed).sample(range(S), min(int(sample), S)))
    return list(range(S))


def _retrain(store, checks, targets, backend, address, num_cpus, progress) -> None:
    results = run_shards(store, [(s, 0) for s in targets], backend=backend, address=address,
                         num_cpus=num_cpus, progress=progress, desc="verifying shards",
                         write=False)
    cks = store.manifest["model"]["checkpoints"]
    for res in results:
        c = checks[res.shard]
        c.retrained = True
        for meta in res.checkpoints:
            stored = cks.get(slice_key(res.shard, meta["slice"]))
            if stored is not None and stored["sha256"] != meta["sha256"]:
                c.problems.append(f"retraining from scratch gives a different checkpoint at "
                                  f"slice {meta['slice']}")
