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
  backup fails here);
- the audit log is the chain the manifest commits: no receipt removed, reordered or
  edited, each signed by the store's owner (signed stores);
- with ``public_key``, the manifest is signed by that key, so whoever can write the
  store cannot have changed anything above without the owner's private key.

What an unsigned store proves: the same checks, but against accidents only; whoever can
write it can recompute every hash. What a verifier without the owner's key file cannot
check: the keyed-hash scan for deleted ids (it needs the audit key); it can instead be
given the ids themselves (``forgotten_ids``) and check that none is stored.
"""

from __future__ import annotations

import random
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from ..engine import checkpoints as ck
from ..engine.driver import train_shards
from ..engine.train import schedule_of
from ..errors import InputError, SisaError
from ..store.format.index import id_buckets
from ..store.format.layout import ID, INTENT, LABEL, QUEUE_FILE, slice_labels, union
from ..store.io.fs import MissingFileError
from ..store.manifest import RetrainPlan, slice_key
from ..store.read import at_rest
from ..store.store import Store
from ..tasks.settings import ExecutionSettings
from . import receipts

ATTEMPTS = 6  # generations tried while writers commit, before "the store kept changing"


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
    signed_by: str | None = None
    notes: list[str] = field(default_factory=list)

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
        lines.append("signed by: " + (f"ed25519:{self.signed_by}" if self.signed_by else
                                      "nobody (unsigned store)"))
        lines += [f"note: {n}" for n in self.notes]
        lines.append(f"deleted ids checked absent: {self.deleted_ids_checked:,}")
        lines.append(f"{'PASS' if self.ok else 'FAIL'} in {self.seconds:.1f}s")
        return "\n".join(lines)


def verify(store: Store, *, shards=None, sample: int | None = None, retrain: bool = True,
           settings: ExecutionSettings | None = None, seed: int | None = None,
           public_key: str | None = None,
           forgotten_ids=None, held_receipts: list[dict] | None = None) -> VerifyReport:
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
    settings : ExecutionSettings, optional
        Where the retrain runs (default: ``ExecutionSettings()``).
    seed : int, optional
        Seed of the ``sample`` draw.
    public_key : str, optional
        The owner's Ed25519 public key (64 hex digits, see
        :func:`sisa.store.format.keys.parse_public`):
        the manifest must be signed by it. Needs no private key and no audit key.
    forgotten_ids : iterable of int or str, optional
        Ids said to be forgotten: each must be absent from the index and every data file.
    held_receipts : list of dict, optional
        Receipts someone was handed (a data subject, an auditor): each must be signed by
        the store's owner and stand in its audit log, so a store rolled back to a state
        from before them fails.
    """
    t0 = time.perf_counter()
    store.reload()
    wanted_gone = None if forgotten_ids is None else store.rows.id_array(forgotten_ids)
    targets = _targets(store.n_shards, shards, sample, seed)  # bad arguments fail first
    first = store.manifest.generation
    for attempt in range(ATTEMPTS):  # noqa: B007 (read after the loop)
        rest = at_rest.look(store)
        vanished = at_rest.Vanished(store.loc)
        rep = _check(store, rest, vanished, targets, public_key=public_key,
                     wanted_gone=wanted_gone, held=held_receipts or [], retrain=retrain,
                     settings=settings or ExecutionSettings())
        if not vanished.settle():
            break
    else:  # every attempt read files a newer commit had removed: none of it is damage
        rep.problems.append(f"the store kept changing during verify (generation {first} to "
                            f"{store.manifest.generation}, {ATTEMPTS} attempts): newer commits "
                            "replaced files before they were read; this is not damage: retry")
    if attempt:
        rep.notes.append(f"writers committed during verify: it checked generation "
                         f"{store.manifest.generation} (attempt {attempt + 1})")
    rep.seconds = round(time.perf_counter() - t0, 3)
    return rep


def _check(store: Store, rest: at_rest.AtRest | str, vanished: at_rest.Vanished,
           targets: list[int], *, public_key, wanted_gone, held: list[dict], retrain: bool,
           settings: ExecutionSettings) -> VerifyReport:
    """Every check of the generation ``store`` reads; files found missing go to
    ``vanished`` (damage, or removed by a newer commit: the caller tells)."""
    checks = [ShardCheck(s, store.shard_rows(s)) for s in range(store.n_shards)]
    notes: list[str] = []
    log = receipts.parse_log(rest.log) if isinstance(rest, at_rest.AtRest) else None
    problems = _state_problems(store, rest, notes)
    problems += _trust_problems(store, public_key, notes)
    problems += _audit_problems(store, log)
    if log is not None:  # else the look's problem says why it was not checked
        problems += receipts.check(store, log)
        problems += _held_receipt_problems(store, log[0], held)
    scan = store.audit.has_key()
    tomb: set = set()
    if scan:
        with vanished.reading(problems, raise_damage=True):  # raised, as it always was
            tomb = set(store.rows.read_tombstones())
    else:
        notes.append("the keyed scan for deleted ids needs the owner's key file (the audit key) "
                     "and was skipped; the signed manifest commits the tombstone files checked "
                     "here, and `--forgotten-ids` checks given ids directly")
    before_scan = len(problems)
    data_ids, data_labels = _scan_slices(store, checks, tomb if scan else None, wanted_gone,
                                         vanished)
    if wanted_gone is not None:
        with vanished.reading(problems, raise_damage=True):
            listed = int(store.rows.locate(wanted_gone)[0].sum())
        if listed:
            problems.append(f"the index still lists {listed:,} of the {len(wanted_gone):,} "
                            "id(s) said to be forgotten")
        if len(problems) == before_scan:  # a note beside a failure must not read "gone"
            notes.append(f"{len(wanted_gone):,} given id(s) checked absent from the index "
                         "and every data file")
    with vanished.reading(problems):  # into this list: it is the report's
        problems += _index_problems(store, data_ids)
    if len(data_labels) == store.n_shards * store.n_slices:  # every slice was read
        problems += _class_problems(store, data_labels)
    if store.manifest.model:
        _check_checkpoints(store, checks, vanished)
        if retrain and targets:
            with vanished.reading(problems, raise_damage=True):
                _retrain(store, checks, targets, settings)
    return VerifyReport(store.uri, store.fingerprint, checks, problems, len(tomb), 0.0,
                        store.audit.signer, notes)


def _state_problems(store: Store, rest: at_rest.AtRest | str, notes: list[str]) -> list[str]:
    """Seen at rest (:func:`sisa.store.read.at_rest.look`): an unfinished run, an interrupted
    forget, leftover files; and no model. Queued erasures are a note (no receipt claims
    them yet, docs/serve.md). A store never at rest is one problem: a writer was busy."""
    model = [] if store.manifest.model else ["the store holds no trained model"]
    if isinstance(rest, str):
        return [f"a writer was changing the store at every look ({rest}), so unfinished "
                "runs, leftover files and the audit log were not checked: retry verify when "
                "it is done (if no writer runs, `sisa repair` clears its lock)", *model]
    problems = []
    pending = store.manifest.pending
    if pending:
        problems.append(f"an unfinished {pending.kind} is journaled: run `sisa repair`")
    if INTENT in rest.files:
        problems.append("an interrupted forget left audit/intent.json: run `sisa repair`")
    leftovers = store.unreferenced_files(rest.files)
    if leftovers:
        problems.append(f"{len(leftovers)} file(s) not named by the manifest, e.g. "
                        f"{leftovers[0]} (may hold deleted rows): run `sisa repair`")
    queued = [f for f in rest.files if QUEUE_FILE.fullmatch(f)]
    if queued:
        notes.append(f"{len(queued)} erasure request(s) in the queue of `sisa serve` "
                     "(waiting, or failed with a reason): no receipt claims them yet, so their "
                     "rows may still be in the store")
    return problems + model


def _scan_slices(store: Store, checks: list[ShardCheck], tomb: set | None,
                 wanted_gone: pa.Array | None,
                 vanished: at_rest.Vanished) -> tuple[list, list[list]]:
    """Read every slice: its ids must hold no deleted (tombstoned) id and none of the ids
    said to be forgotten, its label list must match its rows. Returns the ids and the
    label lists of the slices that could be read."""
    data_ids, data_labels = [], []
    for s in range(store.n_shards):
        for r in range(store.n_slices):
            try:
                table = store.rows.read_slice_table(s, r)
                ids = table.column(ID)
            except SisaError as exc:
                vanished.failed(exc, checks[s].problems)
                continue
            data_ids.append(ids)
            data_labels.append(_labels_of(store, s, r, table, checks[s].problems))
            hits = sum(h in tomb for h in store.audit.id_hashes(ids)) if tomb else 0
            if hits:
                checks[s].problems.append(f"slice {r} holds {hits} deleted id(s)")
            if wanted_gone is not None:
                back = pc.sum(pc.is_in(ids, value_set=wanted_gone)).as_py() or 0
                if back:
                    checks[s].problems.append(f"slice {r} holds {back} of the ids said to be "
                                              "forgotten")
    return data_ids, data_labels


def _index_problems(store: Store, data_ids: list) -> list[str]:
    """The index lists exactly the ids the data files hold, each in its own bucket."""
    problems = []
    try:
        index_ids = store.rows.read_index().column(ID)
        held = pa.chunked_array(data_ids, type=index_ids.type)
        if not np.array_equal(np.sort(index_ids.to_numpy()), np.sort(held.to_numpy())):
            problems.append("the index does not list exactly the ids the data files hold")
        B = store.rows.index_buckets
        misplaced = [b for b in range(B)
                     if (id_buckets(store.rows.read_index_part(b).column(ID).combine_chunks(), B)
                         != b).any()]
        if misplaced:
            problems.append(f"index bucket(s) {misplaced[:5]} hold ids of other buckets: "
                            "locate would miss them")
    except MissingFileError:
        raise  # the caller tells damage from a newer commit's removal
    except SisaError as exc:
        problems.append(str(exc))
    return problems


def _labels_of(store: Store, s: int, r: int, table: pa.Table, problems: list[str]) -> list:
    """The slice's distinct labels, read from its data; a ``labels`` entry in the manifest
    that disagrees with them is a problem (the class set is built from those entries)."""
    labels = pc.unique(table.column(LABEL)).to_pylist()
    want = slice_labels(table, store.manifest.schema["label_type"])
    got = store.manifest.slice(s, r).labels
    if (None if got is None else list(got)) != want:
        problems.append(f"slice {r}: the manifest's label list ({str(got)[:60]}) is not the "
                        "slice's labels: the manifest was edited; restore it from backup")
    return labels


def _class_problems(store: Store, data_labels: list[list]) -> list[str]:
    """A classifier's class list must be the one a fresh fit on the data would learn,
    derived here from the rows themselves (not from the model or the manifest): a class
    kept after its last rows were forgotten still shows in ``classes_`` and
    ``predict_proba``, and a retrain with the stored list would reproduce it."""
    model = store.manifest.model
    if not model or model.get("task") != "classification":
        return []
    expected = union(data_labels)
    if model.get("classes") != expected:
        return [f"the model's classes {str(model.get('classes'))[:80]} are not the classes of "
                f"the data {str(expected)[:80]}: a fresh fit would learn other classes; refit "
                "the model on this store or restore it from backup"]
    return []


def _held_receipt_problems(store: Store, log: list[dict], held: list[dict]) -> list[str]:
    out = []
    chain = {r["seq"]: receipts.receipt_hash(r) for r in log
             if isinstance(r.get("seq"), int)}
    for r in map(receipts.as_logged, held):  # as `sisa forget --json` printed it
        who = f"the receipt you hold (request {r.get('request_id')}, seq {r.get('seq')})"
        if store.audit.signer and not receipts.signature_ok(store.audit.signer, r):
            out.append(f"{who} is not signed by this store's owner")
        elif chain.get(r.get("seq")) != receipts.receipt_hash(r):
            out.append(f"{who} is not in this store's audit log: the store was rolled back to "
                       "an earlier state or replaced; deleted rows may be back")
    return out


def _trust_problems(store: Store, public_key: str | None, notes: list[str]) -> list[str]:
    """Who signed the store (the signature itself was checked when it was read)."""
    signer = store.audit.signer
    if public_key is not None and signer != public_key:
        return ["the store is " + ("unsigned" if signer is None else
                f"signed by ed25519:{signer[:16]}...") + ", not by the public key you gave: "
                "it was built or rewritten by someone else"]
    if signer is None:
        notes.append("unsigned store: these checks catch damage and mistakes, not a writer "
                     "who recomputes every hash; sign stores with a key (`sisa keygen`) and "
                     "verify them with --public-key")
    elif public_key is None:
        notes.append("the signature matches the key the store names; pass --public-key with "
                     "the owner's key to know who that is")
    return []


def _audit_problems(store: Store, log: tuple[list[dict], list[str]] | None) -> list[str]:
    """The manifest names exactly the S x R grid, and the store is the state the audit
    log (``log``, read at rest; None: not read) says the last forget left (a restored
    pre-forget backup is not)."""
    out = []
    grid = {slice_key(s, r) for s in range(store.n_shards) for r in range(store.n_slices)}
    outside = sorted(set(store.manifest.slices) - grid)
    model = store.manifest.model
    outside += sorted(set(store.manifest.checkpoints) - grid) if model else []
    if outside:
        out.append(f"the manifest names entries outside its {store.n_shards} x "
                   f"{store.n_slices} grid ({outside[:3]}): it was edited; restore it from backup")
    tomb_rows = store.manifest.n_tombstones
    if tomb_rows != store.manifest.n_deleted:
        out.append(f"{tomb_rows} tombstones but {store.manifest.n_deleted} deleted "
                   "rows recorded: the manifest was edited")
    logged = log[0] if log is not None else []
    committed = receipts.committed(store)  # checked when read: typed, or CorruptStoreError
    last = committed.to_json() if committed else (logged[-1] if logged else None)
    pending = store.manifest.pending
    if last and not pending and last.get("fingerprint_after") != store.fingerprint:
        out.append(f"the data are not the state the last forget (request "
                   f"{last.get('request_id')}) left: a backup from before it was restored, "
                   "or rows changed outside `forget`; deleted rows may be back")
    if committed and not pending and committed.receipt.tombstones_after != \
            store.rows.tombstones_digest():
        out.append(f"the tombstones are not the set the last forget (request "
                   f"{committed.request_id}) committed: they were swapped or edited")
    def count(v) -> int:  # the log is untrusted input: an edited field is not a crash
        return v if isinstance(v, int) and not isinstance(v, bool) else 0

    if tomb_rows < sum(count(r.get("n_ids")) - count(r.get("already_deleted")) for r in logged):
        out.append("fewer tombstones than rows the audit log says were forgotten")
    return out


def _check_checkpoints(store: Store, checks: list[ShardCheck],
                       vanished: at_rest.Vanished) -> None:
    """Every checkpoint the schedule keeps is present; each one stored (a refit model's
    intermediate ones written by an older sisa included) matches its data and loads."""
    cks = store.manifest.checkpoints
    kept = schedule_of(store).steps()  # every slice, or a refit model's last one only
    for c in checks:
        for r in range(store.n_slices):
            meta = cks.get(slice_key(c.shard, r))
            if meta is None:
                if r in kept:
                    c.problems.append(f"checkpoint for slice {r} is missing")
                continue
            if meta.lineage != ck.lineage(store, c.shard, r):
                c.problems.append(f"checkpoint {r} was trained on other data (lineage mismatch)")
            try:  # the hash, and that it loads without calling anything off the allow-list
                ck.load_verified(store, meta)
            except SisaError as exc:
                vanished.failed(exc, c.problems)


def _targets(S: int, shards, sample, seed) -> list[int]:
    def whole(v) -> bool:
        return isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_))

    if shards is not None:
        if isinstance(shards, (str, bytes)) or not all(whole(s) for s in shards):
            raise InputError(f"shards must be a list of shard numbers (ints), got {shards!r}")
        chosen = sorted({int(s) for s in shards})
        bad = [s for s in chosen if not 0 <= s < S]
        if bad:
            raise InputError(f"shards {bad} do not exist: this store has shards 0..{S - 1}")
        return chosen
    if sample is not None:
        if not whole(sample) or sample < 1:
            raise InputError(f"sample must be a whole number of shards >= 1, got {sample!r} "
                             "(omit it to retrain every shard)")
        return sorted(random.Random(seed).sample(range(S), min(int(sample), S)))
    return list(range(S))


def _retrain(store: Store, checks: list[ShardCheck], targets: list[int],
             settings: ExecutionSettings) -> None:
    results = train_shards(store, RetrainPlan({s: 0 for s in targets}), settings,
                           desc="verifying shards", write=False)
    cks = store.manifest.checkpoints
    for res in results:
        c = checks[res.shard]
        c.retrained = True
        for meta in res.checkpoints:
            stored = cks.get(slice_key(res.shard, meta.slice))
            if stored is not None and stored.sha256 != meta.sha256:
                c.problems.append(f"retraining from scratch gives a different checkpoint at "
                                  f"slice {meta.slice}")
