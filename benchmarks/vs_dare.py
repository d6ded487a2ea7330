"""sisa against DaRE-RF (Brophy & Lowd, ICML 2021) on UCI Adult: fit, accuracy, forget 1 row.

DaRE-RF is the strongest published exact-unlearning method for tabular data: a random
forest whose trees cache split statistics so that deleting a row updates only the
subtrees it changes. This script measures, in one run and on one train/test split:

* DaRE-RF (``dare.Forest``) with the hyperparameters of its authors' Adult experiments
  (gini, 50 trees, max depth 20, k = 5 thresholds per attribute; ``topd`` random top
  layers: 0 = G-DaRE, and 11 / 13 / 16 = what DaRE's own tuning procedure picks on
  this split at an error tolerance of 0.1 / 0.25 / 1.0 %, see dare_topd_tuning.py): fit
  time, test accuracy, and the time of deleting one random training row,
  ``--dare-deletes`` times (distinct rows, one after another, in memory: DaRE persists
  nothing);
* sisa (``SISAClassifier``, backend "local", a real on-disk store in a temp dir): fit
  time, test accuracy, and the time of ``forget([id])`` for ``--forgets`` random distinct
  ids, one request each. Every forget is durable: slice, index and tombstone files
  rewritten and fsynced, manifest commits, the shard retrained and its checkpoint
  written, a signed receipt appended to the audit log, and the shard models reloaded;
* a monolithic decision tree (and HistGradientBoosting) refit on all training rows: what
  forgetting costs without any unlearning method.

Every model trains on one CPU thread (sisa trains a shard with one thread; DaRE is
single-threaded), so the numbers compare work, not parallelism. Each timing is taken
with ``time.perf_counter`` after a warm-up; medians and 90th percentiles are reported
because the machine may be shared (the load average is printed with each section).

DaRE-RF is not a dependency of sisa (its PyPI sdist does not build; it has to be built
from its repository by hand, outside this project). When the ``dare`` package is
importable it is measured; without it the sisa part and the monolithic reference still
run and the output says DaRE was unavailable.

Run: python -m benchmarks.vs_dare [--split issue] [--dare-topd 0,11,13,16] [--dare-deletes 200]
     [--forgets 50] [--configs dt-32x1,dt-8x4,hgb-8x1,hgb-8x4]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import warnings

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.tree import DecisionTreeClassifier
from threadpoolctl import threadpool_limits

from benchmarks._adult_split import SPLITS, adult_split, import_dare

# DaRE's Adult hyperparameters (jobs/delete/batch.sh, jobs/topd_tuning/batch.sh: adult gini
# 50 trees, depth 20, k 5; max_features "sqrt" is its default).
DARE_PARAMS = {
    "n_estimators": 50,
    "max_depth": 20,
    "k": 5,
    "criterion": "gini",
    "max_features": "sqrt",
}

CONFIGS = {  # name -> (estimator factory, n_shards, n_slices)
    "dt-32x1": (lambda: DecisionTreeClassifier(max_depth=10, random_state=0), 32, 1),
    "dt-8x4": (lambda: DecisionTreeClassifier(max_depth=10, random_state=0), 8, 4),
    "hgb-8x1": (lambda: HistGradientBoostingClassifier(random_state=0), 8, 1),
    "hgb-8x4": (lambda: HistGradientBoostingClassifier(random_state=0), 8, 4),
}


def stats_ms(seconds) -> dict:
    a = np.asarray(seconds, dtype=float) * 1e3
    return {
        "n": int(a.size),
        "median_ms": round(float(np.median(a)), 3),
        "p90_ms": round(float(np.percentile(a, 90)), 3),
        "mean_ms": round(float(a.mean()), 3),
        "min_ms": round(float(a.min()), 3),
        "max_ms": round(float(a.max()), 3),
    }


def load_avg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


class Clock:
    """Wall time (``perf_counter``) and this process's CPU time (``process_time``) of
    each timed call: on a shared machine the CPU time is the steadier of the two (it
    leaves out time spent waiting for a core, and also fsync waits)."""

    def __init__(self) -> None:
        self.wall: list[float] = []
        self.cpu: list[float] = []

    def __enter__(self):
        self._w, self._c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc) -> None:
        self.cpu.append(time.process_time() - self._c)
        self.wall.append(time.perf_counter() - self._w)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- references


def monolithic(Xtr, ytr, Xte, yte, repeats: int) -> dict:
    out = {}
    for name, make in (
        ("tree", lambda: DecisionTreeClassifier(max_depth=10, random_state=0)),
        ("hgb", lambda: HistGradientBoostingClassifier(random_state=0)),
    ):
        with threadpool_limits(limits=1):
            make().fit(Xtr[:2000], ytr[:2000])  # warm-up
            clock, model = Clock(), None
            for _ in range(repeats):
                with clock:
                    model = make().fit(Xtr, ytr)
        out[name] = {
            "fit_s": round(float(np.median(clock.wall)), 4),
            "fit_cpu_s": round(float(np.median(clock.cpu)), 4),
            "fit_runs_s": [round(t, 4) for t in clock.wall],
            "accuracy": round(float(model.score(Xte, yte)), 4),
            "load": load_avg(),
        }
        log(f"monolithic {name}: fit {out[name]['fit_s']:.3f}s acc {out[name]['accuracy']:.4f}")
    return out


# ----------------------------------------------------------------------------- DaRE


def run_dare(dare, Xtr, ytr, Xte, yte, topd: int, deletes: int, fits: int, seed: int) -> dict:
    X32, y32 = Xtr.astype(np.float32), ytr.astype(np.int32)  # what DaRE converts to anyway
    warm = dare.Forest(**{**DARE_PARAMS, "n_estimators": 5}, topd=topd, random_state=seed)
    warm.fit(X32[:2000], y32[:2000])
    warm.delete(0)
    fit_clock, model = Clock(), None
    for _ in range(fits):
        with fit_clock:
            model = dare.Forest(**DARE_PARAMS, topd=topd, random_state=seed).fit(X32, y32)
    acc = float((model.predict(Xte.astype(np.float32)) == yte).mean())
    rng = np.random.default_rng(seed)
    rows = rng.choice(len(ytr), size=deletes, replace=False)
    clock = Clock()
    for i in rows.tolist():
        with clock:
            model.delete(i)
    acc_after = float((model.predict(Xte.astype(np.float32)) == yte).mean())
    res = {
        "topd": topd,
        **DARE_PARAMS,
        "random_state": seed,
        "fit_s": round(float(np.median(fit_clock.wall)), 4),
        "fit_cpu_s": round(float(np.median(fit_clock.cpu)), 4),
        "fit_runs_s": [round(t, 4) for t in fit_clock.wall],
        "accuracy": round(acc, 4),
        "accuracy_after_deletes": round(acc_after, 4),
        "delete_1": stats_ms(clock.wall),
        "delete_1_cpu": stats_ms(clock.cpu),
        "load": load_avg(),
    }
    log(
        f"DaRE topd={topd}: fit {res['fit_s']:.2f}s acc {acc:.4f} delete median "
        f"{res['delete_1']['median_ms']:.2f} ms p90 {res['delete_1']['p90_ms']:.2f} ms"
    )
    return res


# ----------------------------------------------------------------------------- sisa


def run_sisa(name: str, Xtr, ytr, Xte, yte, root: str, forgets: int, fits: int, seed: int) -> dict:
    from sisa import SISAClassifier

    make, S, R = CONFIGS[name]

    fit_clock, clf = Clock(), None
    for i in range(fits):
        if clf is not None:  # keep one store on disk at a time
            shutil.rmtree(clf.store_.uri, ignore_errors=True)
        clf = SISAClassifier(
            make(),
            n_shards=S,
            n_slices=R,
            backend="local",
            store=f"{root}/{name}-{i}",
            random_state=0,
        )
        with fit_clock:
            clf.fit(Xtr, ytr)
    acc = float(clf.score(Xte, yte))
    rng = np.random.default_rng(seed)
    ids = rng.choice(len(ytr), size=forgets + 2, replace=False).tolist()
    for i in ids[:2]:  # warm-up: first forget of the store (imports, caches)
        clf.forget([i])
    clock, walls, retrained = Clock(), [], []
    for i in ids[2:]:
        with clock:
            r = clf.forget([i])
        walls.append(r["wall_time_s"])
        retrained.append(r["rows_retrained"])
    acc_after = float(clf.score(Xte, yte))
    res = {
        "config": name,
        "estimator": type(make()).__name__,
        "n_shards": S,
        "n_slices": R,
        "fit_s": round(float(np.median(fit_clock.wall)), 4),
        "fit_cpu_s": round(float(np.median(fit_clock.cpu)), 4),
        "fit_runs_s": [round(t, 4) for t in fit_clock.wall],
        "accuracy": round(acc, 4),
        "accuracy_after_forgets": round(acc_after, 4),
        "forget_1": stats_ms(clock.wall),
        "forget_1_cpu": stats_ms(clock.cpu),
        "receipt_wall_time_median_ms": round(float(np.median(walls)) * 1e3, 3),
        "rows_retrained_median": int(np.median(retrained)),
        "rows_full_retrain": int(r["rows_full_retrain"]),
        "load": load_avg(),
    }
    shutil.rmtree(clf.store_.uri, ignore_errors=True)
    log(
        f"sisa {name}: fit {res['fit_s']:.2f}s acc {acc:.4f} forget median "
        f"{res['forget_1']['median_ms']:.1f} ms p90 {res['forget_1']['p90_ms']:.1f} ms"
    )
    return res


def warm_up_sisa(Xtr, ytr, root: str) -> None:
    from sisa import SISAClassifier

    clf = SISAClassifier(
        DecisionTreeClassifier(max_depth=3),
        n_shards=2,
        n_slices=2,
        backend="local",
        store=f"{root}/warm-up",
    ).fit(Xtr[:2000], ytr[:2000])
    clf.forget([0])
    shutil.rmtree(f"{root}/warm-up", ignore_errors=True)


# ----------------------------------------------------------------------------- main


def table(res: dict) -> str:
    rows = [
        (
            "method",
            "fit s",
            "accuracy",
            "forget/delete 1 row: median ms",
            "p90 ms",
            "CPU median ms",
            "n",
        )
    ]
    mono = res["monolithic"]
    rows.append(
        (
            "monolithic DecisionTree(max_depth=10), refit",
            f"{mono['tree']['fit_s']:.3f}",
            f"{mono['tree']['accuracy']:.4f}",
            f"{mono['tree']['fit_s'] * 1e3:.1f} (refit)",
            "",
            "",
            "1",
        )
    )
    rows.append(
        (
            "monolithic HistGradientBoosting, refit",
            f"{mono['hgb']['fit_s']:.3f}",
            f"{mono['hgb']['accuracy']:.4f}",
            f"{mono['hgb']['fit_s'] * 1e3:.1f} (refit)",
            "",
            "",
            "1",
        )
    )
    for d in res["dare"]:
        rows.append(
            (
                f"DaRE-RF topd={d['topd']} (T=50, dmax=20, k=5), in memory",
                f"{d['fit_s']:.3f}",
                f"{d['accuracy']:.4f}",
                f"{d['delete_1']['median_ms']:.2f}",
                f"{d['delete_1']['p90_ms']:.2f}",
                f"{d['delete_1_cpu']['median_ms']:.2f}",
                str(d["delete_1"]["n"]),
            )
        )
    for s in res["sisa"]:
        rows.append(
            (
                f"sisa {s['estimator']} S={s['n_shards']} R={s['n_slices']}, durable",
                f"{s['fit_s']:.3f}",
                f"{s['accuracy']:.4f}",
                f"{s['forget_1']['median_ms']:.1f}",
                f"{s['forget_1']['p90_ms']:.1f}",
                f"{s['forget_1_cpu']['median_ms']:.1f}",
                str(s["forget_1"]["n"]),
            )
        )
    w = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["| " + " | ".join(c.ljust(w[i]) for i, c in enumerate(r)) + " |" for r in rows]
    lines.insert(1, "|" + "|".join("-" * (x + 2) for x in w) + "|")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--split",
        choices=SPLITS,
        default="issue",
        help="issue: complete rows, no education-num, 24,129 x 104 train (default); "
        "sisa: all 32,561 rows x 105, 80/20",
    )
    ap.add_argument(
        "--dare-topd",
        default="0,11,13,16",
        help="comma-separated topd values (0 = G-DaRE; 11/13/16 = DaRE's own tuning "
        "on the 'issue' split at 0.1/0.25/1.0%% tolerance, dare_topd_tuning.py)",
    )
    ap.add_argument("--dare-deletes", type=int, default=200)
    ap.add_argument("--dare-fits", type=int, default=3)
    ap.add_argument("--forgets", type=int, default=50)
    ap.add_argument("--sisa-fits", type=int, default=2)
    ap.add_argument("--mono-fits", type=int, default=5)
    ap.add_argument("--configs", default=",".join(CONFIGS))
    ap.add_argument(
        "--store-root", default=None, help="where the temp stores go (default: $TMPDIR)"
    )
    ap.add_argument(
        "--unsigned",
        action="store_true",
        help="do not sign the stores (default: a throwaway key in $SISA_KEY, as "
        "after `sisa keygen`)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-dare", action="store_true")
    args = ap.parse_args()
    # sisa says once per fit that a tree refits on slices 0..r at every slice (R > 1)
    warnings.filterwarnings("ignore", message=".*has no partial_fit.*")

    configs = [c for c in args.configs.split(",") if c]
    unknown = sorted(set(configs) - set(CONFIGS))
    if unknown:
        ap.error(f"unknown configs {unknown}: choose from {sorted(CONFIGS)}")
    if not args.unsigned and "SISA_KEY" not in os.environ:
        from sisa.store.format import keys

        os.environ["SISA_KEY"] = keys.generate().to_json()

    Xtr, Xte, ytr, yte = adult_split(args.split)
    log(f"adult split {args.split!r}: train {Xtr.shape}, test {Xte.shape}, load {load_avg()}")
    res: dict = {
        "benchmark": "dare",
        "split": args.split,
        "train_shape": list(Xtr.shape),
        "test_shape": list(Xte.shape),
        "cpus": os.cpu_count(),
        "signed": not args.unsigned,
        "load_start": load_avg(),
    }

    res["monolithic"] = monolithic(Xtr, ytr, Xte, yte, args.mono_fits)

    dare = None if args.no_dare else import_dare()
    res["dare_available"] = dare is not None
    res["dare"] = []
    if dare is None:
        log("DaRE-RF unavailable (not installed, or --no-dare): skipping it")
    else:
        res["dare_module"] = dare.__file__
        for topd in [int(t) for t in args.dare_topd.split(",") if t != ""]:
            res["dare"].append(
                run_dare(
                    dare,
                    Xtr,
                    ytr,
                    Xte,
                    yte,
                    topd,
                    args.dare_deletes,
                    args.dare_fits,
                    seed=1 + args.seed,
                )
            )

    root = tempfile.mkdtemp(prefix="sisa-bench-dare-", dir=args.store_root)
    try:
        warm_up_sisa(Xtr, ytr, root)
        res["sisa"] = [
            run_sisa(c, Xtr, ytr, Xte, yte, root, args.forgets, args.sisa_fits, seed=args.seed)
            for c in configs
        ]
    finally:
        shutil.rmtree(root, ignore_errors=True)
    res["load_end"] = load_avg()

    print(table(res))
    if dare is None:
        print("DaRE-RF was unavailable: only sisa and the monolithic reference were measured.")
    print(json.dumps(res))


if __name__ == "__main__":
    main()
