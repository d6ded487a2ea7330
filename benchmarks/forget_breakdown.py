"""A 1-row forget: its training against everything else, and its fsyncs.

Three commands, each printing JSON:

- ``build --rows N --dir D``: N x 50 float32 (``benchmarks/_data.py``) ingested at S = 256,
  R = 8 and fit with ``SGDClassifier(loss="log_loss")``, 5 epochs per slice (the scale
  benchmark's case), kept in D so that several runs (before and after a change) forget
  rows of the same store.
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

Run: python -m benchmarks.forget_breakdown build --rows 1000000 --dir /tmp/fb1m
     python -m benchmarks.forget_breakdown run --dir /tmp/fb1m --forgets 20
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import shutil
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np

FSYNCS: list[float] = []  # seconds of each os.fsync call
TRAIN: list[float] = []  # seconds of each shard task run in this process
FIT: list[float] = []  # seconds of each estimator step


FIT_CPU: list[float] = []  # CPU seconds of each estimator step


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
    """Count and time every fsync, shard task and estimator step of this process."""
    from sisa.engine import driver, schedule

    _timed(os, "fsync", FSYNCS)
    _timed(driver, "train_shard", TRAIN)
    _timed(schedule.Schedule, "step", FIT, FIT_CPU)


def forgets(model, ids) -> dict:
    """Forget each id alone; the medians of the wall time and its parts."""
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
                         options=IngestOptions(label="label", n_shards=256, n_slices=8,
                                               memory_budget_mb=256))
    ingest = time.perf_counter() - t
    t = time.perf_counter()
    SISAClassifier(SGDClassifier(loss="log_loss", alpha=1e-5), n_shards=256, n_slices=8,
                   epochs=5, backend=args.backend).fit(store)
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


def adult(args) -> dict:
    from sklearn.tree import DecisionTreeClassifier

    from benchmarks._adult_split import adult_split
    from sisa import SISAClassifier
    from sisa.store.format import keys

    os.environ.setdefault("SISA_KEY", keys.generate().to_json())  # signed, as vs_dare
    Xtr, _, ytr, _ = adult_split("issue")
    root = tempfile.mkdtemp(prefix="sisa-fb-adult-", dir=args.store_root)
    try:
        model = SISAClassifier(DecisionTreeClassifier(max_depth=10, random_state=0),
                               n_shards=32, n_slices=1, backend="local",
                               store=f"{root}/store", random_state=0).fit(Xtr, ytr)
        picks = np.random.default_rng(args.seed).choice(len(ytr), size=args.forgets + 2,
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


def main() -> None:
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("--rows", type=int, required=True)
    b.add_argument("--dir", required=True)
    b.add_argument("--backend", default="local")
    r = sub.add_parser("run")
    r.add_argument("--dir", required=True)
    r.add_argument("--cold", action="store_true",
                   help="drop the store's files from the page cache after the warm-up")
    a = sub.add_parser("adult")
    d = sub.add_parser("disk")
    d.add_argument("--samples", type=int, default=40)
    for p in (r, a):
        p.add_argument("--forgets", type=int, default=20)
        p.add_argument("--seed", type=int, default=0)
    for p in (a, d):
        p.add_argument("--store-root", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*has no partial_fit.*")
    out = {"build": build, "run": run, "adult": adult, "disk": disk}[args.cmd](args)
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
