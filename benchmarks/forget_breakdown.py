"""A 1-row forget: its training against everything else, and its fsyncs.

Five commands, each printing JSON:

- ``build --rows N --dir D [--shards 256 --slices 8]``: N x 50 float32
  (``benchmarks/_data.py``) ingested at S = 256, R = 8 and fit with
  ``SGDClassifier(loss="log_loss")``, 5 epochs per slice (the scale benchmark's case), kept
  in D so that several runs (before and after a change) forget rows of the same store.
- ``run --dir D [--forgets K] [--cold]``: K one-row forgets of random ids, in process
  (``backend="local"``), each timed as the caller sees it (``model.forget``, the reload of
  the retrained shard's model included). Measured from outside, so that the same command
  times code that does not report its own breakdown: ``training`` is the shard task
  (``train_shard``: reading its slices, the estimator's fit, its checkpoints), ``fit`` the
  estimator's own ``fit``/``partial_fit`` calls (``Schedule.step``); every ``os.fsync`` is
  counted and timed. CPU time too (``cpu_ms``: the process's, fsync threads included;
  ``fit_cpu_ms``: the fit's thread), which a loaded machine inflates less than wall time.
  Where the forget returns ``timings`` (its own breakdown), their medians are printed too.
  With ``--cold`` the store's files are dropped from the page cache first (a store larger
  than memory): each forget then reads its slices from disk.
- ``adult [--forgets K]``: the same for DecisionTree(max_depth=10), S = 32, R = 1 on Adult
  (benchmarks/vs_dare.py's "dt-32x1"), on a fresh signed store in a temp dir.
- ``disk``: the latency of one fsync on this disk (4 KB file, and a folder), of a
  round of 8 in parallel, of a tree forget's group (7 new 20 KB files and their 5
  folders in parallel) and of one ``syncfs`` doing the same: the floor of a durable
  commit.
- ``floor (--dir D | --adult) [--forgets K]``: the floor of a durable, exact, one-row
  forget outside training. For each of K random rows, in straight-line code (numpy,
  pyarrow, hashlib, os and sisa's format helpers: ``ipc_bytes``, the bucket hashes, the
  canonical pickle, the Ed25519 key), the work any implementation of sisa's guarantees
  does, with the real store's files and sizes (:data:`FLOOR_PARTS`): the row's index
  bucket and slice read and sha256-checked, the row filtered out, the resume checkpoint
  read, checked and unpickled through an allow-list, the retrain's other slices read; the
  new slice, index and tombstone buckets serialised, hashed, written; one checkpoint per
  retrained slice pickled, hashed, written; the changed manifest leaves and the (signed)
  root; the receipt (ids digest, fingerprint, canonical JSON, signature, chain); one
  parallel round of fsyncs of every new file and its folder, the root's rename and its
  folder's fsync; the log line; the superseded files unlinked (in parallel, as sisa does).
  The files go to a scratch folder beside the store (same file system), which is only
  read: each a new file, and the superseded ones are stand-ins of their sizes made durable
  up front. Then sisa's own forget of the same row (as ``run`` measures it), so each floor
  sees the state sisa leaves; every forget starts after a 50 ms pause.
  Printed: each part's median, ``floor_outside_ms`` (their sum), the fsync count (checked
  equal to sisa's, row by row), ``fit_ms`` (sisa's fit of those rows),
  ``best_possible_share = floor / (floor + fit)``; the same with the parts a second core
  could run beside the fit hidden (``overlapped``: the files written before the fit ends
  fsynced in a round of their own), with one ``syncfs`` instead of the round
  (``syncfs_instead``), and sisa's own parts against the floor's (``sisa_above_floor``).

Run: python -m benchmarks.forget_breakdown build --rows 1000000 --dir /tmp/fb1m
     python -m benchmarks.forget_breakdown run --dir /tmp/fb1m --forgets 20
     python -m benchmarks.forget_breakdown floor --dir /tmp/fb1m --forgets 20
"""

from __future__ import annotations

import argparse
import bisect
import ctypes
import datetime as _dt
import fcntl
import functools
import hashlib
import hmac
import io
import json
import os
import pickle
import secrets
import shutil
import tempfile
import time
import uuid
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

FSYNCS: list[float] = []  # seconds of each os.fsync call
TRAIN: list[float] = []  # seconds of each shard task run in this process
FIT: list[float] = []  # seconds of each estimator step


FIT_CPU: list[float] = []  # CPU seconds of each estimator step
_FSYNC = os.fsync  # the real call: instrument() wraps os.fsync for sisa's own forgets


def _timed(owner, name: str, into: list[float], cpu: list[float] | None = None) -> None:
    fn = getattr(owner, name)

    def timed(*a, **kw):
        t, c = time.perf_counter(), time.thread_time()
        try:
            return fn(*a, **kw)
        finally:
            into.append(time.perf_counter() - t)
            if cpu is not None:
                cpu.append(time.thread_time() - c)

    setattr(owner, name, timed)


def instrument() -> None:
    """Count and time every fsync, shard task and estimator step of this process (once:
    a second call would count each twice)."""
    from sisa.engine import driver, schedule

    if os.fsync is not _FSYNC:
        return
    _timed(os, "fsync", FSYNCS)
    _timed(driver, "train_shard", TRAIN)
    _timed(schedule.Schedule, "step", FIT, FIT_CPU)


def forgets(model, ids) -> dict:
    """Forget each id alone; the medians of the wall time and its parts."""
    return summary(forget_rows(model, ids))


def forget_rows(model, ids) -> tuple[list[dict], list[dict]]:
    """Forget each id alone: per forget its wall time and parts, and its own timings."""
    instrument()
    rows: list[dict] = []
    own: list[dict] = []
    for i in ids:
        n_fs, n_tr, n_fit = len(FSYNCS), len(TRAIN), len(FIT)
        t, c = time.perf_counter(), time.process_time()
        receipt = model.forget([i])
        wall, cpu = time.perf_counter() - t, time.process_time() - c
        train, fit = sum(TRAIN[n_tr:]), sum(FIT[n_fit:])
        rows.append({"wall": wall, "training": train, "fit": fit, "rest": wall - train,
                     "cpu": cpu, "fit_cpu": sum(FIT_CPU[n_fit:]),
                     "fsyncs": len(FSYNCS) - n_fs, "fsync_s": sum(FSYNCS[n_fs:]),
                     "rows_retrained": receipt["rows_retrained"]})
        if "timings" in receipt:
            own.append(receipt["timings"])
    return rows, own


def summary(measured: tuple[list[dict], list[dict]]) -> dict:
    """The medians of :func:`forget_rows`'s forgets."""
    rows, own = measured
    med = {k: float(np.median([r[k] for r in rows])) for k in rows[0]}
    out = {"forgets": len(rows),
           "wall_ms": round(med["wall"] * 1e3, 2),
           "p90_ms": round(float(np.percentile([r["wall"] for r in rows], 90)) * 1e3, 2),
           "training_ms": round(med["training"] * 1e3, 2),
           "fit_ms": round(med["fit"] * 1e3, 2),
           "rest_ms": round(med["rest"] * 1e3, 2),
           "rest_share": round(float(np.median([r["rest"] / r["wall"] for r in rows])), 3),
           "rest_share_vs_fit": round(float(np.median([(r["wall"] - r["fit"]) / r["wall"]
                                                       for r in rows])), 3),
           "cpu_ms": round(med["cpu"] * 1e3, 2), "fit_cpu_ms": round(med["fit_cpu"] * 1e3, 2),
           "rest_cpu_share": round(float(np.median([1 - r["fit_cpu"] / r["cpu"]
                                                    for r in rows])), 3),
           "fsyncs": int(med["fsyncs"]), "fsyncs_max": max(r["fsyncs"] for r in rows),
           "fsync_ms_sum": round(med["fsync_s"] * 1e3, 2),
           "rows_retrained": int(med["rows_retrained"]),
           "load": [round(x, 2) for x in os.getloadavg()]}
    if own:  # the forget's own breakdown (code that reports one)
        keys = [k for k in own[0] if isinstance(own[0][k], (int, float))]
        out["own_timings_median"] = {k: round(float(np.median([o[k] for o in own])), 5)
                                     for k in keys}
    return out


def build(args) -> dict:
    from sklearn.linear_model import SGDClassifier

    from benchmarks._data import synthetic_parquet
    from sisa import IngestOptions, SISAClassifier, Store

    src = synthetic_parquet(args.rows, 50)
    shutil.rmtree(args.dir, ignore_errors=True)
    t = time.perf_counter()
    store = Store.create(args.dir, src,
                         options=IngestOptions(label="label", n_shards=args.shards,
                                               n_slices=args.slices, memory_budget_mb=256))
    ingest = time.perf_counter() - t
    t = time.perf_counter()
    SISAClassifier(SGDClassifier(loss="log_loss", alpha=1e-5), n_shards=args.shards,
                   n_slices=args.slices, epochs=5, backend=args.backend).fit(store)
    return {"rows": args.rows, "ingest_s": round(ingest, 1),
            "fit_s": round(time.perf_counter() - t, 1)}


def run(args) -> dict:
    from sisa import SISAClassifier

    model = SISAClassifier.load(args.dir).set_params(backend="local")
    ids = model.store_.rows.read_index().column("sample_id").to_numpy()
    picks = np.random.default_rng(args.seed).choice(ids, size=args.forgets + 2, replace=False)
    for i in picks[:2]:  # warm-up: imports, caches
        model.forget([int(i)])
    if args.cold:
        _evict(args.dir)
    return {"dir": args.dir, "cold": args.cold, **forgets(model, [int(i) for i in picks[2:]])}


def _evict(root: str) -> None:
    """Drop the store's data files from the page cache (``POSIX_FADV_DONTNEED``, this
    store's files only): the forgets then read their slices from disk, as they do in a
    store larger than memory, whatever earlier runs left cached."""
    for sub in ("data", "index", "checkpoints"):
        for folder, _, names in os.walk(os.path.join(root, sub)):
            for name in names:
                fd = os.open(os.path.join(folder, name), os.O_RDONLY)
                try:
                    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
                finally:
                    os.close(fd)


def _adult_model(store: str):
    """DecisionTree(max_depth=10), S = 32, R = 1 fit on Adult into a signed store."""
    from sklearn.tree import DecisionTreeClassifier

    from benchmarks._adult_split import adult_split
    from sisa import SISAClassifier
    from sisa.store.format import keys

    os.environ.setdefault("SISA_KEY", keys.generate().to_json())  # signed, as vs_dare
    Xtr, _, ytr, _ = adult_split("issue")
    return SISAClassifier(DecisionTreeClassifier(max_depth=10, random_state=0),
                          n_shards=32, n_slices=1, backend="local", store=store,
                          random_state=0).fit(Xtr, ytr)


def adult(args) -> dict:
    root = tempfile.mkdtemp(prefix="sisa-fb-adult-", dir=args.store_root)
    try:
        model = _adult_model(f"{root}/store")
        n = model.store_.rows.read_index().num_rows
        picks = np.random.default_rng(args.seed).choice(n, size=args.forgets + 2,
                                                        replace=False)
        for i in picks[:2]:
            model.forget([int(i)])
        return {"case": "Adult DecisionTree(max_depth=10) S=32 R=1, signed",
                **forgets(model, [int(i) for i in picks[2:]])}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def disk(args) -> dict:
    """Median latency of one fsync (a new 4 KB file; its folder) and of 8 at once."""
    root = tempfile.mkdtemp(prefix="sisa-fb-disk-", dir=args.store_root)

    def one(k: int) -> tuple[float, float]:
        path = f"{root}/f{k}-{time.perf_counter_ns()}"
        with open(path, "wb") as f:
            f.write(os.urandom(4096))
            f.flush()
            t = time.perf_counter()
            os.fsync(f.fileno())
            file_s = time.perf_counter() - t
        fd = os.open(root, os.O_RDONLY)
        t = time.perf_counter()
        os.fsync(fd)
        dir_s = time.perf_counter() - t
        os.close(fd)
        return file_s, dir_s

    def written(k: int) -> str:  # a new 20 KB file in one of 5 folders, not fsynced
        folder = f"{root}/d{k % 5}"
        os.makedirs(folder, exist_ok=True)
        path = f"{folder}/g{k}-{time.perf_counter_ns()}"
        with open(path, "wb") as f:
            f.write(os.urandom(20_000))
        return path

    def fsync_path(path: str) -> None:
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    libc = ctypes.CDLL(None, use_errno=True)
    try:
        single = [one(k) for k in range(args.samples)]
        rounds, group, syncfs = [], [], []
        with ThreadPoolExecutor(8) as pool:
            for _ in range(args.samples // 4):
                t = time.perf_counter()
                list(pool.map(one, range(8)))
                rounds.append(time.perf_counter() - t)
            for _ in range(args.samples // 4):  # a tree forget's group: 7 files, 5 folders
                files = [written(k) for k in range(7)]
                t = time.perf_counter()
                list(pool.map(fsync_path, files + sorted({os.path.dirname(f) for f in files})))
                group.append(time.perf_counter() - t)
                files = [written(k) for k in range(7)]  # the same by one syncfs (Linux)
                fd = os.open(root, os.O_RDONLY)
                t = time.perf_counter()
                ok = libc.syncfs(fd) == 0
                syncfs.append(time.perf_counter() - t)
                os.close(fd)
                assert ok, os.strerror(ctypes.get_errno())
        return {"fsync_file_ms_median": round(float(np.median([s[0] for s in single])) * 1e3, 3),
                "fsync_file_ms_p90": round(float(np.percentile([s[0] for s in single], 90))
                                           * 1e3, 3),
                "fsync_dir_ms_median": round(float(np.median([s[1] for s in single])) * 1e3, 3),
                "round_of_8_files_and_dirs_ms_median": round(float(np.median(rounds)) * 1e3, 3),
                "group_7_files_5_dirs_ms": _med_p90(group),
                "syncfs_instead_ms": _med_p90(syncfs),
                "samples": args.samples, "load": [round(x, 2) for x in os.getloadavg()]}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def _med_p90(seconds: list[float]) -> dict:
    return {"median": round(float(np.median(seconds)) * 1e3, 3),
            "p90": round(float(np.percentile(seconds, 90)) * 1e3, 3)}


# -- floor: the I/O and integrity work any implementation of sisa's guarantees does -------
# Each part of a one-row forget, in the order a serial implementation runs it, and when it
# could run if a second core worked beside the fit: "pre" (before the fit: it needs the
# row's slice and the model to resume), "overlap" (beside the fit) or "post" (after it).
FLOOR_PARTS = {
    "lock": "pre",  # the store's write lock (flock) and the manifest's stamp
    "index_read": "pre",  # the id's index bucket read, sha256-checked, parsed, searched
    "slice_read": "pre",  # the row's slice read, sha256-checked, parsed, the row filtered out
    "resume_checkpoint": "pre",  # checkpoint r-1 read, sha256-checked, unpickled (allow-list)
    "intent": "overlap",  # audit/intent.json written (not fsynced), for `repair`
    "later_slices": "overlap",  # the retrain's other slices read, checked, parsed (numpy)
    "slice_write": "overlap",  # the new slice serialised (ipc_bytes), hashed, written
    "index_write": "overlap",  # the bucket without the id serialised, hashed, written
    "tombstone": "overlap",  # keyed hash; its bucket read, checked, extended, written
    "checkpoints_early": "overlap",  # checkpoints before the last: pickled, hashed, written
    "receipt_prep": "overlap",  # ids digest, data fingerprint, tombstones digest
    "page_leaves": "overlap",  # the index and tombstone page leaves: hashed, written
    "fsync_early": "overlap",  # (overlapped mode only) the round of the files above
    "checkpoint_last": "post",  # the served checkpoint: pickled, hashed, written
    "shard_leaf": "post",  # the shard's leaf (slice and checkpoint entries): hashed, written
    "receipt_seal": "post",  # canonical JSON, chained, Ed25519-signed (signed stores)
    "root": "post",  # the root: checksum, signature, written to a temp file
    "fsync_round": "post",  # one parallel round: every new file and its folder
    "publish": "post",  # the root renamed into place, its folder fsynced
    "log": "post",  # the receipt appended to the audit log (fsynced with the next commit)
    "unlink": "post",  # the superseded files (they hold the row) and the intent removed,
    # in parallel
}


class _Allowed(pickle.Unpickler):
    """The least a restricted load does: name-check every global before importing it
    (sisa's own loader checks exact objects, scans first and bounds-checks trees)."""

    def find_class(self, module: str, name: str):
        if module.split(".")[0] in ("sklearn", "numpy", "scipy") or (module, name) in {
                ("builtins", "slice"), ("builtins", "complex"), ("copyreg", "_reconstructor"),
                ("builtins", "object")}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not allowed")


def _read_checked(path: str, sha256: str) -> pa.Buffer:
    buf = pa.memory_map(path, "r").read_buffer()
    if hashlib.sha256(memoryview(buf)).hexdigest() != sha256:
        raise RuntimeError(f"hash mismatch: {path}")
    return buf


def _unique() -> str:
    """A tag making each file the floor writes a new one: the same row's forget in two
    modes (or two checkpoints of equal bytes) would otherwise truncate and rewrite a file
    just made durable, which ext4 flushes on close (``auto_da_alloc``): a cost sisa, which
    skips a content-addressed file already there, never pays."""
    return "." + secrets.token_hex(4)


def _write(path: str, data) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    finally:
        os.close(fd)


def _fsync_path(job: tuple[str, bool]) -> None:
    fd = os.open(job[0], os.O_RDONLY)
    try:
        _FSYNC(fd)
    finally:
        os.close(fd)


def _dense(table: pa.Table):
    """The features as the fit takes them: a numpy view of a dense slice (other layouts are
    left as Arrow; the Adult store is dense)."""
    col = table.column("features")
    col = col.chunk(0) if col.num_chunks == 1 else col.combine_chunks()  # one: no copy
    if pa.types.is_fixed_size_list(col.type):
        return col.flatten().to_numpy().reshape(len(col), col.type.list_size)
    return col


class _FloorStore:
    """What a forget holds in memory before it starts (untimed): the committed manifest's
    entries and leaves, keys, the receipt template, and a scratch folder beside the store
    (same file system) where the floor writes, so the store itself is never changed."""

    def __init__(self, root: str) -> None:
        from sisa import Store
        from sisa.engine import checkpoints as ck
        from sisa.engine.train import schedule_of

        self.root, self.ck, self.open, self.schedule_of = root, ck, Store.open, schedule_of
        self.refresh()
        self.scratch = tempfile.mkdtemp(prefix="sisa-floor-", dir=os.path.dirname(
            os.path.abspath(root)))
        os.makedirs(f"{self.scratch}/.tmp"), os.makedirs(f"{self.scratch}/meta")
        os.makedirs(f"{self.scratch}/audit")
        self.log = f"{self.scratch}/audit/receipts.jsonl"
        shutil.copyfile(os.path.join(root, self.m.audit_files()["log"]), self.log)
        self.lock_fd = os.open(f"{self.scratch}/.lock", os.O_RDWR | os.O_CREAT, 0o644)
        self.pool = ThreadPoolExecutor(16)

    def refresh(self) -> None:
        """Take the store's committed state (after sisa's own forget of a row)."""
        self.store = self.open(self.root)
        m = self.m = self.store.manifest
        self.sched = self.schedule_of(self.store)
        with open(os.path.join(self.root, "manifest.json"), "rb") as f:
            self.raw_root = f.read()
        self.body = self.raw_root[self.raw_root.index(b'"manifest":') + 11:-1]
        self.B = len(m.index_parts)
        self.audit_key = self.store.audit.key()
        self.signer = self.store.audit.signing_key()
        self.template = dict(m.last_receipt or {"seq": 0, "prev": None})
        self.shard_fp = [self._fp_part(s) for s in range(m["assignment"]["n_shards"])]
        self.tomb_hashes = {b: p.sha256 for b, p in m.tombstone_parts.items()}
        canon = functools.partial(json.dumps, sort_keys=True, separators=(",", ":"))
        self.fp_head = (b'{"assignment":' + canon(m["assignment"]).encode() + b',"schema":'
                        + canon(m["schema"]).encode() + b',"slices":[')
        self.old_receipt = canon(m.last_receipt).encode() if m.last_receipt else b"\0"

    def _fp_part(self, s: int) -> bytes:
        leaf = self.m.shard_leaf(s)["slices"]
        return b",".join(b'"%s"' % leaf[str(r)].sha256.encode() for r in range(len(leaf)))

    def close(self) -> None:
        os.close(self.lock_fd)
        self.pool.shutdown()
        shutil.rmtree(self.scratch, ignore_errors=True)

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel)

    def out(self, rel: str) -> str:
        return os.path.join(self.scratch, rel)

    def leaf(self, ref) -> bytes:
        if ref is None:
            return b""
        with open(self.path(ref.file), "rb") as f:
            return f.read()


def _floor_job(fs: _FloorStore, sid: int, old: list[str] | None = None) -> dict:
    """Untimed set-up of one forget: where the row lives (to lay out the scratch folders
    and to find the superseded files' sizes), the served model to pickle, and stand-ins of
    the superseded files (same sizes, fsynced) for the forget to unlink: ``old`` if given
    (made earlier by :func:`_stand_ins`), else made now."""
    from sisa.store.format.index import hash_buckets, id_buckets
    from sisa.store.format.layout import checkpoint_dir, index_dir, slice_dir, tombstone_dir
    from sisa.store.manifest.pages import PAGE

    m, sched = fs.m, fs.sched
    _, shard, sl = fs.store.rows.locate([sid])
    s, r = int(shard[0]), int(sl[0])
    th = hmac.new(fs.audit_key, b"i:%d" % sid, hashlib.sha256).digest()[:16]
    b = int(id_buckets(pa.array([sid], pa.int64()), fs.B)[0])
    tb = int(hash_buckets([th], fs.B)[0])
    steps = list(sched.steps(r))
    R = len(m.shard_leaf(s)["slices"])
    prev = sched.resume_from(r)
    job = {"sid": sid, "s": s, "r": r, "b": b, "tb": tb, "steps": steps,
           "reads": sorted({q for st in steps for q in sched.slices_for(st)} - {r}),
           "resume": None if prev is None else m.checkpoint(s, prev),
           "model": fs.ck.load_verified(fs.store, m.checkpoint(s, R - 1)),
           "dirs": {"slice": slice_dir(s, r), "index": index_dir(b), "tomb": tombstone_dir(tb),
                    "ckpt": [checkpoint_dir(s, st) for st in steps]},
           "refs": {"shard": fs.m["shards"][s], "index": fs.m["index"]["pages"][b // PAGE],
                    "tomb": fs.m["tombstones"]["pages"].get(str(tb // PAGE))}}
    job["leaves"] = {k: fs.leaf(ref) for k, ref in job["refs"].items()}
    sizes = [(job["dirs"]["slice"], m.slice(s, r).bytes), (job["dirs"]["index"],
                                                            m.index_parts[b].bytes)]
    if str(tb) in m.tombstone_parts:
        sizes.append((job["dirs"]["tomb"], m.tombstone_parts[str(tb)].bytes))
    sizes += [(d, m.checkpoint(s, st).bytes) for d, st in zip(job["dirs"]["ckpt"], steps,
                                                                      strict=True)
              if m.checkpoint(s, st) is not None]
    sizes += [("meta", ref.bytes) for ref in job["refs"].values() if ref is not None]
    job["sizes"], job["new_folders"] = sizes, []
    for folder in [*job["dirs"].values()][:3] + job["dirs"]["ckpt"]:
        os.makedirs(fs.out(folder), exist_ok=True)
        if not os.path.isdir(fs.path(folder)):  # a first tombstone in its bucket: a new
            job["new_folders"].append(os.path.dirname(folder))  # folder, fsynced in its parent
    job["old"] = old if old is not None else _stand_ins(fs, [job])[0]
    return job


def _stand_ins(fs: _FloorStore, jobs: list[dict]) -> list[list[str]]:
    """Files of the sizes each job's forget supersedes, written and made durable in one
    parallel round (a journal commit per file, just before the forget, left the journal
    busier than sisa's and the forget's unlinks slower); their paths, job by job."""
    out = []
    for job in jobs:
        out.append([fs.out(f"{folder}/old-{secrets.token_hex(6)}")
                    for folder, _ in job["sizes"]])
        for path, (_, size) in zip(out[-1], job["sizes"], strict=True):
            _write(path, os.urandom(size))
    paths = [p for ps in out for p in ps]
    list(fs.pool.map(_fsync_path, [(p, False) for p in paths]
                     + [(d, True) for d in {os.path.dirname(p) for p in paths}]))
    return out


class _Laps(dict):
    """Consecutive parts of one floor forget: each call charges the time since the last."""

    def __init__(self) -> None:
        super().__init__()
        self.last = time.perf_counter()

    def __call__(self, part: str) -> None:
        now = time.perf_counter()
        self[part] = self.get(part, 0.0) + now - self.last
        self.last = now


def _swap(raw: bytes, pairs) -> bytes:
    """``raw`` with each old sha256 (and the 32-digit prefix naming its file) replaced."""
    for old, new in pairs:
        raw = raw.replace(old.encode(), new.encode()).replace(old[:32].encode(),
                                                              new[:32].encode())
    return raw


def _floor_forget(fs: _FloorStore, job: dict, mode: str = "serial") -> dict:
    """One durable, exact, one-row forget's work outside training, in straight-line code
    (the files go to the scratch folder; the store is only read). ``mode``: "serial" (one
    round of fsyncs), "overlapped" (the files written before the fit ends get a round of
    their own, which a real implementation would issue beside the fit, the rest a final
    round) or "syncfs" (Linux: one ``syncfs`` of the file system instead of the round)."""
    from sisa.store.format.layout import ipc_bytes, read_ipc

    m, sid, laps, new = fs.m, job["sid"], _Laps(), []
    fcntl.flock(fs.lock_fd, fcntl.LOCK_EX)
    os.stat(fs.path("manifest.json"))  # has another writer committed since?
    laps("lock")
    part = m.index_parts[job["b"]]  # the bucket is a hash of the id alone
    index = read_ipc(_read_checked(fs.path(part.file), part.sha256))
    ids = index.column("sample_id").to_numpy()
    pos = int(np.searchsorted(ids, sid))
    s, r = index.column("shard")[pos].as_py(), index.column("slice")[pos].as_py()
    assert ids[pos] == sid and (s, r) == (job["s"], job["r"])
    laps("index_read")
    meta = m.slice(s, r)
    table = read_ipc(_read_checked(fs.path(meta.file), meta.sha256))
    kept = table.filter(pc.not_equal(table.column("sample_id"), sid))
    _dense(kept)
    laps("slice_read")
    if job["resume"] is not None:
        _Allowed(io.BytesIO(_read_checked(fs.path(job["resume"].file),
                                          job["resume"].sha256))).load()
    laps("resume_checkpoint")
    _write(fs.out("audit/intent.json"), json.dumps({"ids": [sid], "request": {
        k: v for k, v in fs.template.items() if k in _INTENT_KEYS}}).encode())
    laps("intent")
    for q in job["reads"]:  # checked: sisa hashes a slice the first time a process reads it
        _dense(read_ipc(_read_checked(fs.path(m.slice(s, q).file), m.slice(s, q).sha256)))
    laps("later_slices")

    def put(folder: str, suffix: str, data) -> str:
        sha = hashlib.sha256(memoryview(data)).hexdigest()
        new.append(f"{folder}/{sha[:32]}{_unique()}{suffix}")
        _write(fs.out(new[-1]), data)
        return sha

    slice_sha = put(job["dirs"]["slice"], ".arrow", ipc_bytes(kept))
    laps("slice_write")
    index_sha = put(job["dirs"]["index"], ".arrow", ipc_bytes(
        index.filter(pc.not_equal(index.column("sample_id"), sid))))
    laps("index_write")
    shas = {"slice": (meta.sha256, slice_sha), "index": (part.sha256, index_sha),
            **_tombstone(fs, job, put)}
    laps("tombstone")
    return _floor_rest(fs, job, mode, laps, new, shas)


_INTENT_KEYS = ("request_id", "requested_at", "ids_sha256", "n_ids", "fingerprint_before",
                "affected")


def _tombstone(fs: _FloorStore, job: dict, put) -> dict:
    from sisa.store.format.index import hash_buckets
    from sisa.store.format.layout import ipc_bytes, read_ipc

    th = hmac.new(fs.audit_key, b"i:%d" % job["sid"], hashlib.sha256).digest()[:16]
    tb = int(hash_buckets([th], fs.B)[0])
    old = fs.m.tombstone_parts.get(str(tb))
    hs = [] if old is None else read_ipc(_read_checked(fs.path(old.file), old.sha256)
                                         ).column("h").to_pylist()
    bisect.insort(hs, th)
    sha = put(job["dirs"]["tomb"], ".arrow", ipc_bytes(pa.table({"h": pa.array(hs,
                                                                              pa.binary(16))})))
    return {"tomb": (None if old is None else old.sha256, sha), "tb": (str(tb), sha)}


def _floor_rest(fs: _FloorStore, job: dict, mode: str, laps: _Laps, new: list,
                shas: dict) -> dict:
    """The checkpoints, manifest, receipt, fsyncs, log and unlinks of :func:`_floor_forget`."""
    m, s, steps = fs.m, job["s"], job["steps"]

    def put(folder: str, suffix: str, data) -> str:
        sha = hashlib.sha256(memoryview(data)).hexdigest()
        new.append(f"{folder}/{sha[:32]}{_unique()}{suffix}")
        _write(fs.out(new[-1]), data)
        return sha

    ckpts = []
    # each written while the next slice trains
    for st, folder in zip(steps[:-1], job["dirs"]["ckpt"][:-1], strict=True):
        ckpts.append((m.checkpoint(s, st), put(folder, ".pkl", fs.ck.dumps(job["model"]))))
    laps("checkpoints_early")
    ids_sha = hmac.new(fs.audit_key, b"i:%d" % job["sid"], hashlib.sha256).hexdigest()
    fp_parts = list(fs.shard_fp)
    fp_parts[s] = fp_parts[s].replace(shas["slice"][0].encode(), shas["slice"][1].encode())
    fingerprint = hashlib.sha256(fs.fp_head + b",".join(fp_parts) + b"]}").hexdigest()
    tombs = {**fs.tomb_hashes, shas["tb"][0]: shas["tb"][1]}
    tomb_digest = hashlib.sha256(json.dumps(sorted(tombs.values()), separators=(",", ":"))
                                 .encode()).hexdigest()
    laps("receipt_prep")
    refs = {k: _leaf(fs, new, job, k, pairs) for k, pairs in
            (("index", [shas["index"]]), ("tomb", [shas["tomb"]]))}
    laps("page_leaves")
    n_fsyncs, waits, early = 0, 0, len(new)
    folders = [(fs.out(d), True) for d in job["new_folders"]]
    if mode == "overlapped":  # what exists by now is fsynced beside the fit
        n_fsyncs, waits = _round(fs, new, [(fs.log, False), *folders]), 1
        laps("fsync_early")
    st, folder = steps[-1], job["dirs"]["ckpt"][-1]
    ckpts.append((m.checkpoint(s, st), put(folder, ".pkl", fs.ck.dumps(job["model"]))))
    laps("checkpoint_last")
    refs["shard"] = _leaf(fs, new, job, "shard", [shas["slice"]] + [
        (old.sha256, sha) for old, sha in ckpts if old is not None])
    laps("shard_leaf")
    rec, line = _seal(fs, job, ids_sha, fingerprint, tomb_digest)
    laps("receipt_seal")
    body = _swap(fs.body, [(ref.sha256, sha) for ref, sha in refs.values() if ref is not None])
    body = body.replace(fs.old_receipt, rec)
    sig = fs.signer.sign(body).encode() if fs.signer else b""
    tmp = fs.out(f".tmp/root-{job['sid']}")
    _write(tmp, b'{"checksum":"' + hashlib.sha256(body).hexdigest().encode()
           + b'","signature":"' + sig + b'","manifest":' + body + b"}")
    laps("root")
    if mode == "syncfs":  # every dirty page of the file system, this forget's included
        n_fsyncs = _syncfs(fs.scratch)
    else:
        n_fsyncs += _round(fs, new[early:] if waits else new, [(tmp, False)] if waits
                           else [(tmp, False), (fs.log, False), *folders])
    laps("fsync_round")
    os.replace(tmp, fs.out("manifest.json"))
    _fsync_path((fs.scratch, True))
    laps("publish")
    fd = os.open(fs.log, os.O_WRONLY | os.O_APPEND)
    os.write(fd, line)
    os.close(fd)
    laps("log")
    # in parallel, as sisa drops superseded files: one unlink stalled on the file system's
    # journal (a 4 ms tick under other writers) no longer holds up the others
    list(fs.pool.map(os.unlink, job["old"] + [fs.out("audit/intent.json")]))
    fcntl.flock(fs.lock_fd, fcntl.LOCK_UN)
    laps("unlink")
    return {"parts": dict(laps), "fsyncs": n_fsyncs + 1, "waits": waits + 2,
            "checkpoints": len(steps), "files": len(new) + 1}


def _leaf(fs: _FloorStore, new: list, job: dict, kind: str, pairs) -> tuple:
    """A leaf rewritten with its changed entries (the other entries' bytes kept): hashed,
    written. Returns ``(old reference or None, new sha256)``."""
    ref = job["refs"][kind]
    if ref is None:  # a tombstone page's first bucket
        raw = json.dumps({"page": int(job["tb"]) // 64, "parts": {
            str(job["tb"]): {"file": new[-1], "sha256": pairs[0][1]}}}).encode()
        prefix = f"meta/tombstones-{int(job['tb']) // 64:04d}"
    else:
        raw = _swap(job["leaves"][kind], [(o, n) for o, n in pairs if o is not None])
        prefix = ref.file.rsplit("-", 1)[0]
    sha = hashlib.sha256(raw).hexdigest()
    new.append(f"{prefix}-{sha[:32]}{_unique()}.json")
    _write(fs.out(new[-1]), raw)
    return ref, sha


def _syncfs(path: str) -> int:
    fd = os.open(path, os.O_RDONLY)
    try:
        if ctypes.CDLL(None, use_errno=True).syncfs(fd) != 0:
            raise OSError(ctypes.get_errno(), "syncfs failed")
    finally:
        os.close(fd)
    return 1


def _round(fs: _FloorStore, rels: list, extra: list) -> int:
    """One parallel round of fsyncs: the files, every folder holding a new file and the
    ``extra`` ``(path, is a folder)`` (the root's temp file and the log without their
    folders: the first is renamed out of its own, the log's entry is durable); returns
    how many."""
    jobs = ([(fs.out(x), False) for x in rels] + list(extra)
            + [(fs.out(d), True) for d in dict.fromkeys(os.path.dirname(x) for x in rels)])
    list(fs.pool.map(_fsync_path, jobs))
    return len(jobs)


def _seal(fs: _FloorStore, job: dict, ids_sha: str, fingerprint: str, tomb_digest: str
          ) -> tuple[bytes, bytes]:
    """The receipt, as the root holds it (canonical JSON, signed in a signed store), and
    its audit-log line."""
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds")
    rec = {k: v for k, v in fs.template.items() if k != "signature"}
    audit = fs.m["audit"]
    rec.update({k: v for k, v in {
        "request_id": uuid.uuid4().hex, "requested_at": now, "completed_at": now,
        "ids_sha256": ids_sha, "affected": [[job["s"], job["r"]]],
        "fingerprint_after": fingerprint, "tombstones_after": tomb_digest,
        "seq": audit["receipts"], "prev": audit["head"]}.items() if k in fs.template})
    body = json.dumps(rec, sort_keys=True, separators=(",", ":")).encode()
    if fs.signer is not None:
        rec["signature"] = fs.signer.sign(body)
    hashlib.sha256(body).hexdigest()  # the chain's new head
    return (json.dumps(rec, sort_keys=True, separators=(",", ":")).encode(),
            (json.dumps(rec, sort_keys=True) + "\n").encode())


def floor(args) -> dict:
    """The floor of a one-row forget (see :data:`FLOOR_PARTS`) beside sisa's own forgets of
    the same rows: K floor forgets in each mode (serial, overlapped) and K real ones."""
    from sisa import SISAClassifier

    root = None
    if args.adult:
        root = tempfile.mkdtemp(prefix="sisa-fl-adult-", dir=args.store_root)
        model = _adult_model(f"{root}/store")
        store_dir, case = f"{root}/store", "Adult DecisionTree(max_depth=10) S=32 R=1, signed"
    else:
        model = SISAClassifier.load(args.dir).set_params(backend="local")
        store_dir, case = args.dir, f"store {args.dir}"
    try:
        ids = model.store_.rows.read_index().column("sample_id").to_numpy()
        picks = [int(i) for i in np.random.default_rng(args.seed).choice(
            ids, size=2 * args.forgets + 4, replace=False)]
        picks, others = picks[:args.forgets + 4], picks[args.forgets + 4:]
        for i in picks[:2]:  # warm-up: imports, caches, a receipt to take as the template
            model.forget([i])
        fs = _FloorStore(store_dir)
        try:
            for i in picks[2:4]:  # warm-up of the floor's own code
                _floor_forget(fs, _floor_job(fs, i))
            loader = _loaders(fs, picks[2])
            # every stand-in made first, then a pause: the journal is settled when the
            # measured forgets start (sizes from this state; a forget changes them by a row)
            rows = picks[4:] + picks[4:] + others
            olds = _stand_ins(fs, [_floor_job(fs, i, old=[]) for i in rows])
            old = {(i, k // len(picks[4:])): o for k, (i, o) in enumerate(zip(rows, olds,
                                                                                strict=True))}
            time.sleep(1.0)
            serial, overlapped, real = [], [], ([], [])
            for i in picks[4:]:  # interleaved: the three see the same load and store state
                fs.refresh()
                serial.append(_floor_forget(fs, _paused(_floor_job(fs, i, old[i, 0])),
                                            "serial"))
                overlapped.append(_floor_forget(fs, _paused(_floor_job(fs, i, old[i, 1])),
                                                "overlapped"))
                _paused(None)
                for mine, theirs in zip(real, forget_rows(model, [i]), strict=True):
                    mine += theirs
            # apart, on other rows: a syncfs also flushes what other writers left dirty,
            # which can slow the file system's next operations (the other modes' unlinks)
            fs.refresh()
            synced = [_floor_forget(fs, _paused(_floor_job(fs, i, old[i, 2])), "syncfs")
                      for i in others]
        finally:
            fs.close()
        return {"case": case, **_floor_report(serial, overlapped, real, loader),
                "syncfs_instead": _syncfs_report(synced, real[0])}
    finally:
        if root:
            shutil.rmtree(root, ignore_errors=True)


def _paused(job):
    """``job``, after a pause before its forget (each of the floor's and sisa's own): the
    file system's journal work left by the forget before (its unlinks, its commit) would
    otherwise land on the next one's writes, several ms at times on this shared disk."""
    time.sleep(0.05)
    return job


def _loaders(fs: _FloorStore, sid: int, n: int = 20) -> dict:
    """Median time of one checkpoint load (bytes in hand): the floor's allow-list
    unpickler against sisa's restricted loader (object allow-list, pre-scan, post-load
    checks), which a forget runs on its resume point twice and once per new checkpoint."""
    from sisa.engine import safe_pickle

    blob = fs.ck.dumps(_floor_job(fs, sid)["model"])
    out = {}
    for name, fn in (("allowlist_unpickle_ms", lambda: _Allowed(io.BytesIO(blob)).load()),
                     ("sisa_safe_pickle_ms", lambda: safe_pickle.loads(blob))):
        ts = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            ts.append(time.perf_counter() - t)
        out[name] = round(float(np.median(ts)) * 1e3, 3)
    return {**out, "checkpoint_bytes": len(blob)}


def _syncfs_report(synced: list[dict], rows: list[dict]) -> dict:
    """The serial floor with its round of fsyncs replaced by one ``syncfs`` (Linux; it also
    flushes whatever else is dirty on the file system, so it is not what sisa's portable
    guarantee rests on)."""
    parts = {p: _ms(f["parts"].get(p, 0.0) for f in synced) for p in FLOOR_PARTS
             if p != "fsync_early"}
    total, fit = round(sum(parts.values()), 3), _ms(r["fit"] for r in rows)
    return {"floor_outside_ms": total, "syncfs_ms": parts["fsync_round"],
            "best_possible_share": round(total / (total + fit), 4)}


# sisa's own timings (sisa.unlearn.timings) against the floor parts doing the same work
_SISA_VS_FLOOR = {
    "plan_s": ("lock", "index_read", "slice_read"),
    "write_data_s": ("intent", "slice_write", "index_write", "tombstone"),
    "read_slices_s": ("later_slices",),
    "checkpoints_s": ("resume_checkpoint", "checkpoints_early", "checkpoint_last"),
    "receipt_s": ("receipt_prep", "receipt_seal"),
    "commit_s": ("page_leaves", "shard_leaf", "root", "unlink"),
    "fsync_s": ("fsync_round", "publish"),
    "log_s": ("log",),
    "reload_s": (), "retrain_other_s": (), "other_s": (),
}


def _ms(values) -> float:
    return round(float(np.median(list(values))) * 1e3, 3)


def _floor_report(serial: list[dict], overlapped: list[dict], real, loader: dict) -> dict:
    rows = real[0]
    parts = {p: _ms(f["parts"].get(p, 0.0) for f in serial) for p in FLOOR_PARTS
             if p != "fsync_early"}
    floor_ms = round(sum(parts.values()), 3)
    fit = _ms(r["fit"] for r in rows)
    ov = {p: _ms(f["parts"].get(p, 0.0) for f in overlapped) for p in FLOOR_PARTS}
    # before the fit, the slice and the resume checkpoint are read side by side
    pre = sum(v for p, v in ov.items() if FLOOR_PARTS[p] == "pre") - min(
        ov["slice_read"], ov["resume_checkpoint"])
    beside = sum(v for p, v in ov.items() if FLOOR_PARTS[p] == "overlap")
    post = sum(v for p, v in ov.items() if FLOOR_PARTS[p] == "post")
    hidden = round(pre + post + max(0.0, beside - fit), 3)
    sisa = summary(real)
    own_ms = {k: v * 1e3 for k, v in sisa.get("own_timings_median", {}).items()}
    above = {k: {"sisa_ms": round(own_ms[k], 3),
                 "floor_ms": round(sum(parts[p] for p in ps), 3),
                 "above_ms": round(own_ms[k] - sum(parts[p] for p in ps), 3)}
             for k, ps in _SISA_VS_FLOOR.items() if k in own_ms}
    return {
        "forgets": len(serial), "load": [round(x, 2) for x in os.getloadavg()],
        "note": "sisa's read_slices_s and checkpoints_s are what its task waited for: its "
                "read-ahead reads the next slice beside the fit, which the serial floor "
                "counts in full (later_slices); compare them with `overlapped`",
        "floor_outside_ms": floor_ms, "fit_ms": fit,
        "best_possible_share": round(floor_ms / (floor_ms + fit), 4),
        "floor_parts_ms": parts,
        "floor_total_ms_median": _ms(sum(f["parts"].values()) for f in serial),
        "floor_fsyncs": int(np.median([f["fsyncs"] for f in serial])),
        "floor_fsync_waits": 2, "floor_files_written": int(np.median([f["files"]
                                                                     for f in serial])),
        "fsyncs_match_sisa": all(f["fsyncs"] == r["fsyncs"] for f, r in zip(serial, rows,
                                                                             strict=True)),
        "checkpoints_written": int(np.median([f["checkpoints"] for f in serial])),
        "overlapped": {"floor_outside_ms": hidden,
                       "best_possible_share": round(hidden / (hidden + fit), 4),
                       "before_fit_ms": round(pre, 3), "beside_fit_ms": round(beside, 3),
                       "after_fit_ms": round(post, 3), "parts_ms": ov,
                       "fsyncs": int(np.median([f["fsyncs"] for f in overlapped])),
                       "fsync_waits": 3},
        "sisa": sisa, "sisa_above_floor": above, "checkpoint_load": loader}


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--rows", type=int, required=True)
    b.add_argument("--dir", required=True)
    b.add_argument("--backend", default="local")
    b.add_argument("--shards", type=int, default=256)
    b.add_argument("--slices", type=int, default=8)
    r = sub.add_parser("run")
    r.add_argument("--dir", required=True)
    r.add_argument("--cold", action="store_true",
                   help="drop the store's files from the page cache after the warm-up")
    a = sub.add_parser("adult")
    d = sub.add_parser("disk")
    d.add_argument("--samples", type=int, default=40)
    f = sub.add_parser("floor")
    where = f.add_mutually_exclusive_group(required=True)
    where.add_argument("--dir", help="a store made by `build` (only read)")
    where.add_argument("--adult", action="store_true", help="the `adult` case")
    for p in (r, a, f):
        p.add_argument("--forgets", type=int, default=20)
        p.add_argument("--seed", type=int, default=0)
    for p in (a, d, f):
        p.add_argument("--store-root", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*has no partial_fit.*")
    out = {"build": build, "run": run, "adult": adult, "disk": disk,
           "floor": floor}[args.cmd](args)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
