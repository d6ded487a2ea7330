"""Where a 1-row sisa forget spends its time: DecisionTree(max_depth=10), S=32, R=1, Adult.

The case of benchmarks/vs_dare.py's "sisa DecisionTree S=32 R=1" row, on the same split and a
real, signed on-disk store in a temp dir. Three passes over separate random ids, each
after the same fit and two warm-up forgets:

1. **clean**: ``clf.forget([id])`` timed end to end with ``time.perf_counter``, nothing
   patched: the reference median.
2. **buckets**: the same, with ~35 functions wrapped by a timer that charges each call's
   *exclusive* time (its own time minus that of wrapped calls inside it) to a bucket, so
   the buckets add up to the whole forget. ``os.fsync`` is wrapped too: the count and
   time of every fsync (file or directory), which strace would otherwise give.
   Overhead: ~1 us per wrapped call, a few hundred calls per forget.
3. **cProfile**: the top functions by cumulative time, and the totals of a few builtins
   (fsync, sha256, pickle, json) that the buckets do not isolate.

Also prints each forget's time against its position: the audit log grows by one receipt
per forget and is read whole by every forget.

Run: python -m benchmarks.profile_forget [--forgets 60] [--log-growth 300] [--out prof.json]
"""

from __future__ import annotations

import argparse
import cProfile
import functools
import io
import json
import os
import pstats
import shutil
import tempfile
import time
import warnings
from collections import defaultdict
from pathlib import Path

import numpy as np
from sklearn.tree import DecisionTreeClassifier

from benchmarks._adult_split import SPLITS, adult_split

# ----------------------------------------------------------------------------- timers

FSYNC = "fsync (file + dir)"

_stack: list[list] = []  # [bucket, wall start, wall of wrapped calls inside, cpu start, cpu inside]
TIME: dict[str, float] = defaultdict(float)
CPU: dict[str, float] = defaultdict(float)  # the same, in this process's CPU time
CALLS: dict[str, int] = defaultdict(int)
BYTES: dict[str, int] = defaultdict(int)
FSYNC_SAMPLES: list[float] = []  # seconds of each os.fsync call (instrumented pass)


def _enter(bucket: str) -> list:
    frame = [bucket, time.perf_counter(), 0.0, time.process_time(), 0.0]
    _stack.append(frame)
    return frame


def _exit(frame: list) -> None:
    cpu = time.process_time() - frame[3]
    elapsed = time.perf_counter() - frame[1]
    _stack.pop()
    if frame[0] == FSYNC:
        FSYNC_SAMPLES.append(elapsed)
    TIME[frame[0]] += elapsed - frame[2]
    CPU[frame[0]] += cpu - frame[4]
    CALLS[frame[0]] += 1
    if _stack:
        _stack[-1][2] += elapsed
        _stack[-1][4] += cpu


def wrap(owner, name: str, bucket, *, nbytes=None) -> None:
    """Replace ``owner.name`` by a timer charging exclusive time to ``bucket`` (a string, or
    a function of the call's arguments returning one). Names the code no longer has are
    skipped (the buckets follow sisa's internals, which move)."""
    fn = getattr(owner, name, None)
    if fn is None or getattr(fn, "_timed", False):
        return

    @functools.wraps(fn)
    def timed(*a, **kw):
        b = bucket(*a, **kw) if callable(bucket) else bucket
        if nbytes is not None:
            BYTES[b] += nbytes(*a, **kw)
        frame = _enter(b)
        try:
            return fn(*a, **kw)
        finally:
            _exit(frame)

    timed._timed = True
    setattr(owner, name, timed)


def _rel_kind(rel: str) -> str:
    rel = str(rel)
    for prefix, kind in (
        ("manifest", "manifest"),
        (".lock", "lock"),
        ("audit/intent", "intent"),
        ("audit/tombstones/", "tombstones"),
        ("audit/", "audit log"),
        ("data/", "slice"),
        ("index/", "index"),
        ("checkpoints/", "checkpoint"),
    ):
        if rel.startswith(prefix):
            return kind
    return rel.split("/", 1)[0]


def _len(data) -> int:
    return len(memoryview(data))


def instrument() -> None:
    """Wrap the functions a forget goes through, where its callers look them up."""
    import importlib
    import os as _os

    def m(name):  # the module itself, even where a package exports a function of its name
        return importlib.import_module(f"sisa.{name}")

    est, unlearn_pkg, fg, receipts = (
        m("estimators"),
        m("unlearn"),
        m("unlearn.forget"),
        m("unlearn.receipts"),
    )
    backend, checkpoints, driver = m("tasks.backend"), m("engine.checkpoints"), m("engine.driver")
    safe_pickle, schedule, trainmod = (
        m("engine.safe_pickle"),
        m("engine.schedule"),
        m("engine.train"),
    )
    audit_keys, deletion, fs = m("store.audit_keys"), m("store.deletion"), m("store.fs")
    index, layout, lock, reading = (
        m("store.index"),
        m("store.layout"),
        m("store.lock"),
        m("store.reading"),
    )
    mf, storemod = m("store.manifest"), m("store.store")

    # cross-cutting: I/O primitives
    wrap(_os, "fsync", FSYNC)
    wrap(fs, "fsync_dir", "fsync dir: open/close (fsync itself above)")
    wrap(fs, "makedirs_durable", "makedirs_durable")
    wrap(
        fs.Location,
        "write_atomic",
        lambda self, rel, data, **k: f"write_atomic [{_rel_kind(rel)}] (excl. fsync)",
        nbytes=lambda self, rel, data, **k: _len(data),
    )
    wrap(fs.Location, "append_line", "append_line [audit log] (excl. fsync)")
    wrap(fs.Location, "read_bytes", lambda self, rel: f"read_bytes mmap [{_rel_kind(rel)}]")
    wrap(fs.Location, "delete", lambda self, rel: f"unlink [{_rel_kind(rel)}]")
    wrap(fs.Location, "clear_temp", "clear_temp (.tmp listdir)")
    wrap(fs.Location, "exists", "exists/lstat")
    wrap(fs.Location, "info", "info/lstat")
    wrap(
        fs,
        "sha256_bytes",
        "sha256 of files (read-verify + content address)",
        nbytes=lambda data: _len(data),
    )
    wrap(reading, "read_ipc", "Arrow IPC decode")
    wrap(deletion, "ipc_bytes", "Arrow IPC encode")
    # manifest
    wrap(mf, "load", "manifest load (read, checksum, json parse, sig verify, path check)")
    wrap(mf, "write", "manifest write (canonical json, sign; excl. write_atomic)")
    wrap(mf.Manifest, "stamped", "manifest stamp (fingerprint)")
    wrap(mf.Manifest, "referenced_files", "manifest referenced_files (commit diff)")
    wrap(storemod.Store, "commit", "Store.commit (rest)")
    wrap(storemod.Store, "reload", "Store.reload (rest)")
    # lock
    wrap(lock.WriteLock, "__init__", "lock acquire (open, flock, write holder)")
    wrap(lock.WriteLock, "release", "lock release")
    # request bookkeeping
    wrap(receipts, "ids_digest", "ids digest (HMAC)")
    wrap(audit_keys.AuditKeys, "keyed_id_hashes", "keyed id hashes (tombstones)")
    wrap(receipts, "sync_log", "audit log sync (read + parse whole log)")
    wrap(receipts, "find", "audit log find (replay check)")
    wrap(receipts, "read_log", "audit log read_log (parse every line)")
    wrap(fg, "_request", "request dict")
    wrap(fg, "_check_resume_points", "check resume checkpoint")
    # deletion
    wrap(index, "locate", "index locate (bucket lookup)")
    wrap(deletion, "resolve", "deletion.resolve (rest)")
    wrap(deletion, "prepare", "deletion.prepare: filter slice (rest)")
    wrap(deletion, "_index_and_tombstones", "index + tombstone buckets (rest)")
    wrap(deletion, "apply", "deletion.apply (rest)")
    wrap(
        storemod.Store,
        "put_blob",
        lambda self, rel_dir, *a: f"put_blob [{_rel_kind(rel_dir + '/')}] (rest)",
    )
    # retrain
    wrap(backend, "map_tasks", "map_tasks / local backend (rest)")
    wrap(driver, "train_shard", "train_shard setup (threadpool_limits, prototype; rest)")
    wrap(trainmod.Store, "read_slices", "read_slices: Arrow -> numpy (rest)")
    wrap(schedule.Schedule, "step", "TRAINING: estimator.fit")
    wrap(checkpoints, "dumps", "checkpoint pickle.dumps")
    wrap(checkpoints, "lineage", "checkpoint lineage hash")
    wrap(checkpoints, "prototype", "rebuild estimator from spec")
    wrap(mf, "write", "manifest write: leaves + root (rest)")
    wrap(storemod.Store, "commit", "Store.commit (rest)")
    wrap(driver, "finish", "driver.finish (rest)")
    # receipt
    wrap(fg, "_receipt", "receipt build (full-retrain rows, fingerprint)")
    wrap(receipts, "seal", "receipt seal (chain hash, ed25519 sign)")
    wrap(fg, "_close", "receipt close (rest)")
    # model reload after the forget
    wrap(est.SISAClassifier, "_set_fitted", "model reload: _set_fitted (rest)")
    wrap(driver, "final_models", "model reload: final_models (rest)")
    wrap(safe_pickle, "loads", "checkpoint unpickle (restricted)")
    # top level
    wrap(unlearn_pkg, "forget", "forget() itself (rest)")  # what SISAClassifier.forget calls
    wrap(est.SISAClassifier, "forget", "SISAClassifier.forget (rest)")
    # layout, checks
    wrap(mf, "check_manifest_paths", "manifest path check (regex per entry)")
    wrap(layout, "check_manifest_paths", "manifest path check (regex per entry)")


# ----------------------------------------------------------------------------- runs


def fit(Xtr, ytr, root: str):
    from sisa import SISAClassifier

    clf = SISAClassifier(
        DecisionTreeClassifier(max_depth=10, random_state=0),
        n_shards=32,
        n_slices=1,
        backend="local",
        store=f"{root}/store",
        random_state=0,
    )
    return clf.fit(Xtr, ytr)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--forgets", type=int, default=60, help="per pass (3 passes)")
    ap.add_argument("--split", choices=SPLITS, default="issue")
    ap.add_argument("--store-root", default=None)
    ap.add_argument("--unsigned", action="store_true")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument(
        "--log-growth",
        type=int,
        default=0,
        help="then forget this many more ids, timing the audit-log reads of each",
    )
    args = ap.parse_args()
    warnings.filterwarnings("ignore", message=".*has no partial_fit.*")
    if not args.unsigned and "SISA_KEY" not in os.environ:
        from sisa.store.format import keys

        os.environ["SISA_KEY"] = keys.generate().to_json()

    Xtr, Xte, ytr, yte = adult_split(args.split)
    root = tempfile.mkdtemp(prefix="sisa-prof-forget-", dir=args.store_root)
    n = args.forgets
    out: dict = {
        "split": args.split,
        "forgets_per_pass": n,
        "signed": not args.unsigned,
        "load_start": [round(x, 2) for x in os.getloadavg()],
    }
    try:
        clf = fit(Xtr, ytr, root)
        ids = np.random.default_rng(0).choice(len(ytr), size=3 * n + 2, replace=False).tolist()
        for i in ids[:2]:
            clf.forget([i])

        # 1. clean
        clean, clean_cpu = [], []
        for i in ids[2 : 2 + n]:
            t, c = time.perf_counter(), time.process_time()
            clf.forget([i])
            clean_cpu.append(time.process_time() - c)
            clean.append(time.perf_counter() - t)
        clean_ms = np.array(clean) * 1e3
        out["clean_cpu_ms"] = {
            "median": round(float(np.median(clean_cpu)) * 1e3, 2),
            "p90": round(float(np.percentile(clean_cpu, 90)) * 1e3, 2),
        }
        out["clean_ms"] = {
            "median": round(float(np.median(clean_ms)), 2),
            "p90": round(float(np.percentile(clean_ms, 90)), 2),
            "mean": round(float(clean_ms.mean()), 2),
            "first_10_median": round(float(np.median(clean_ms[:10])), 2),
            "last_10_median": round(float(np.median(clean_ms[-10:])), 2),
            "all": [round(float(x), 2) for x in clean_ms],
        }

        # 2. cProfile (before any wrapping)
        prof = cProfile.Profile()
        t0 = time.perf_counter()
        for i in ids[2 + n : 2 + 2 * n]:
            prof.enable()
            clf.forget([i])
            prof.disable()
        prof_wall = time.perf_counter() - t0
        st = pstats.Stats(prof)
        s = io.StringIO()
        pstats.Stats(prof, stream=s).sort_stats("cumulative").print_stats(args.top + 10)
        out["cprofile_text"] = s.getvalue()
        builtins = defaultdict(lambda: [0, 0.0])
        for (file, _line, fn), (_cc, nc, tt, ct, _callers) in st.stats.items():
            key = None
            name = f"{file}:{fn}"
            if fn == "<built-in method posix.fsync>":
                key = "os.fsync"
            elif "openssl_sha256" in fn or fn == "<built-in method _hashlib.openssl_sha256>":
                key = "sha256 constructor (hashlib)"
            elif "hexdigest" in fn or (fn.endswith("digest'")):
                key = "sha256/hmac digest"
            elif "hmac" in file and fn in ("new", "__init__", "digest", "hexdigest"):
                key = "hmac (python)"
            elif fn.startswith("<method 'dump' of '_pickle.Pickler'"):
                key = "pickle dump"
            elif "Unpickler" in fn and "load" in fn:
                key = "unpickle load"
            elif "json" in file and fn in ("dumps", "loads", "encode", "decode"):
                key = f"json.{fn}"
            elif "ed25519" in name.lower() and fn.startswith("<method 'sign'"):
                key = "ed25519 sign"
            elif "ed25519" in name.lower() and fn.startswith("<method 'verify'"):
                key = "ed25519 verify"
            elif fn in (
                "<built-in method posix.replace>",
                "<built-in method posix.open>",
                "<built-in method posix.unlink>",
                "<built-in method posix.lstat>",
                "<built-in method posix.listdir>",
                "<built-in method posix.stat>",
            ):
                key = fn
            if key:
                builtins[key][0] += nc
                builtins[key][1] += tt if key not in ("json.dumps", "json.loads") else ct
        out["cprofile_builtins"] = {
            k: {"calls_per_forget": round(v[0] / n, 1), "ms_per_forget": round(v[1] / n * 1e3, 3)}
            for k, v in sorted(builtins.items(), key=lambda kv: -kv[1][1])
        }
        out["cprofile_wall_ms_per_forget"] = round(prof_wall / n * 1e3, 2)
        top = []
        for (file, line, fn), (_cc, nc, tt, ct, _callers) in sorted(
            st.stats.items(), key=lambda kv: -kv[1][3]
        )[: args.top]:
            top.append(
                {
                    "function": f"{Path(file).name}:{line}({fn})",
                    "ncalls_per_forget": round(nc / n, 2),
                    "cum_ms_per_forget": round(ct / n * 1e3, 3),
                    "tot_ms_per_forget": round(tt / n * 1e3, 3),
                }
            )
        out["cprofile_top"] = top
        # 3. buckets
        instrument()
        TIME.clear(), CPU.clear(), CALLS.clear(), BYTES.clear(), FSYNC_SAMPLES.clear()
        per = []
        for i in ids[2 + 2 * n : 2 + 3 * n]:
            t = time.perf_counter()
            clf.forget([i])
            per.append(time.perf_counter() - t)
        inst_ms = np.array(per) * 1e3
        total = sum(TIME.values())
        buckets = sorted(TIME, key=TIME.get, reverse=True)
        out["instrumented_ms"] = {
            "median": round(float(np.median(inst_ms)), 2),
            "mean": round(float(inst_ms.mean()), 2),
        }
        fs_ms = np.array(FSYNC_SAMPLES) * 1e3
        out["fsync"] = {
            "calls_per_forget": round(len(fs_ms) / n, 2),
            "ms_per_forget": round(float(fs_ms.sum()) / n, 3),
            "per_call_median_ms": round(float(np.median(fs_ms)), 3),
            "per_call_p90_ms": round(float(np.percentile(fs_ms, 90)), 3),
        }
        out["buckets"] = [
            {
                "bucket": b,
                "ms_per_forget": round(TIME[b] / n * 1e3, 3),
                "cpu_ms_per_forget": round(CPU[b] / n * 1e3, 3),
                "calls_per_forget": round(CALLS[b] / n, 2),
                "share": round(TIME[b] / total, 4),
                **({"bytes_per_forget": int(BYTES[b] / n)} if BYTES.get(b) else {}),
            }
            for b in buckets
        ]

        # 4. how the audit-log reads grow with the log (each forget parses it whole)
        if args.log_growth:
            audit = [b for b in TIME if b.startswith("audit log")]
            more = (
                np.random.default_rng(1)
                .permutation(np.setdiff1d(np.arange(len(ytr)), ids))[: args.log_growth]
                .tolist()
            )
            growth = []
            for k, i in enumerate(more):
                before = sum(TIME[b] for b in audit), sum(CPU[b] for b in audit)
                t = time.perf_counter()
                clf.forget([i])
                total_ms = (time.perf_counter() - t) * 1e3
                growth.append(
                    (
                        2 + 3 * n + k,
                        (sum(TIME[b] for b in audit) - before[0]) * 1e3,
                        (sum(CPU[b] for b in audit) - before[1]) * 1e3,
                        total_ms,
                    )
                )
            g = np.array(growth)
            slope = [round(float(np.polyfit(g[:, 0], g[:, c], 1)[0]), 5) for c in (1, 2)]
            out["audit_log_growth"] = {
                "log_lines": [int(x) for x in g[::25, 0]],
                "audit_log_ms": [round(float(x), 3) for x in g[::25, 1]],
                "audit_log_cpu_ms": [round(float(x), 3) for x in g[::25, 2]],
                "forget_ms": [round(float(x), 1) for x in g[::25, 3]],
                "audit_log_ms_per_extra_receipt": slope[0],
                "audit_log_cpu_ms_per_extra_receipt": slope[1],
            }
        out["audit_log_lines_at_end"] = len(clf.deletions())
        out["accuracy_end"] = round(float(clf.score(Xte, yte)), 4)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    out["load_end"] = [round(x, 2) for x in os.getloadavg()]

    # report
    print(
        f"clean pass ({n} forgets): median {out['clean_ms']['median']} ms, p90 "
        f"{out['clean_ms']['p90']} ms (first 10: {out['clean_ms']['first_10_median']}, last 10: "
        f"{out['clean_ms']['last_10_median']}); CPU median {out['clean_cpu_ms']['median']} ms, "
        f"p90 {out['clean_cpu_ms']['p90']} ms; instrumented median "
        f"{out['instrumented_ms']['median']} ms; load {out['load_start']} -> {out['load_end']}"
    )
    print(f"fsync: {out['fsync']}")
    print(f"\nexclusive time per forget (instrumented pass, mean of {n}):")
    print(f"{'bucket':<72} {'wall ms':>8} {'CPU ms':>8} {'calls':>7} {'share':>6}")
    for b in out["buckets"]:
        extra = f"  {b['bytes_per_forget']:,} B" if "bytes_per_forget" in b else ""
        print(
            f"{b['bucket']:<72} {b['ms_per_forget']:8.3f} {b['cpu_ms_per_forget']:8.3f} "
            f"{b['calls_per_forget']:7.1f} {b['share']:6.1%}{extra}"
        )
    print(
        f"{'sum':<72} {sum(b['ms_per_forget'] for b in out['buckets']):8.3f} "
        f"{sum(b['cpu_ms_per_forget'] for b in out['buckets']):8.3f}"
    )
    print(
        f"\ncProfile builtins per forget (cProfile pass, {out['cprofile_wall_ms_per_forget']} ms "
        "per forget under the profiler):"
    )
    for k, v in out["cprofile_builtins"].items():
        print(f"  {k:<50} {v['ms_per_forget']:8.3f} ms {v['calls_per_forget']:7.1f} calls")
    print(f"\ntop {args.top} by cumulative time (per forget):")
    for t in out["cprofile_top"]:
        print(
            f"  {t['cum_ms_per_forget']:9.3f} ms cum {t['tot_ms_per_forget']:8.3f} ms own "
            f"{t['ncalls_per_forget']:7.1f} calls  {t['function']}"
        )
    if "audit_log_growth" in out:
        g = out["audit_log_growth"]
        print(
            f"\naudit-log reads per forget vs receipts already in the log: "
            f"{list(zip(g['log_lines'], g['audit_log_ms'], strict=True))} "
            f"(slope {g['audit_log_ms_per_extra_receipt']} ms wall, "
            f"{g['audit_log_cpu_ms_per_extra_receipt']} ms CPU per receipt; CPU ms: "
            f"{g['audit_log_cpu_ms']})"
        )
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))
    print(json.dumps({k: v for k, v in out.items() if k != "cprofile_text"}))


if __name__ == "__main__":
    main()
