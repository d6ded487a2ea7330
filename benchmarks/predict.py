"""``predict_proba`` of a SISA ensemble against one model, before (per-shard loop) and after
(the stacked form, sisa.aggregate.stacked) in one run (issue 26).

200,000 x 50 float32 rows, backend local, medians of 30 calls:
* ``SGDClassifier(loss="log_loss")``: 1 row and 1,000 rows at S = 16 and S = 256 against
  the monolithic model;
* a ``TorchClassifier`` MLP (50 -> 100 -> 2) ensemble at S = 256 against one network;
* the floors the ensemble cannot go under: sisa's own input check (``_check_X``), the
  S x n logistic functions a soft vote must evaluate (a mean of probabilities does not
  collapse into one model), and the stacked product alone.

Run: python -m benchmarks.predict [--rows 200000] [--shards 16,256] [--repeat 30]
     python -m benchmarks.predict --only torch --rows 20000 --shards 256 --torch-threads 1
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings

import numpy as np
from scipy.special import expit
from sklearn.linear_model import SGDClassifier

from sisa import SISAClassifier


def median_ms(fn, repeat: int) -> float:
    fn()  # warm
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return round(float(np.median(times)) * 1e3, 4)


def paired_ms(fa, fb, repeat: int) -> tuple[float, float, float]:
    """Median times of ``fa`` and ``fb`` called alternately (a, b, a, b, ...), and the
    median of the per-pair ratios b / a: a burst of load on a shared machine then slows
    both sides of a pair instead of one side's whole series."""
    fa(), fb()  # warm
    ta, tb = [], []
    for _ in range(repeat):
        for fn, times in ((fa, ta), (fb, tb)):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    a, b = np.asarray(ta), np.asarray(tb)
    return (round(float(np.median(a)) * 1e3, 4), round(float(np.median(b)) * 1e3, 4),
            round(float(np.median(b / a)), 2))


def data(rows: int, d: int = 50, seed: int = 0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(rows, d)).astype(np.float32)
    y = ((X @ rng.normal(size=d) + rng.normal(scale=2.0, size=rows)) > 0).astype(np.int64)
    return X, y


def before_after(model, X: np.ndarray, repeat: int) -> dict:
    """The loop's time (stacked form set aside), the exact stacked form's (the loop's
    bits, ``stacked.EXACT``) and the default stacked form's, same model, one run."""
    from sisa.aggregate import stacked

    fast = model._stacked
    assert fast is not None, "no stacked form for this model"
    stacked.EXACT = True
    exact = stacked.build(model.estimators_, getattr(model, "classes_", None))
    stacked.EXACT = False
    out = {}
    try:
        model._stacked = None
        out["loop_ms"] = median_ms(lambda: model.predict_proba(X), repeat)
        want = model.predict_proba(X)
        if fast.fast is not None:  # a path the exact form does not take
            model._stacked = exact
            out["stacked_exact_ms"] = median_ms(lambda: model.predict_proba(X), repeat)
    finally:
        model._stacked = fast
    got = model.predict_proba(X)
    out["stacked_ms"] = median_ms(lambda: model.predict_proba(X), repeat)
    diff = np.abs(got - want)
    out["max_abs_diff"] = float(diff.max())
    # relative where the loop's probability is >= 1e-3: below, its own `1 - p` carries an
    # absolute rounding error of ~1e-16 and a relative one is meaningless (gemm.py)
    big = np.abs(want) >= 1e-3
    out["max_rel_diff_p_ge_1e-3"] = float(np.max(diff[big] / want[big], initial=0.0))
    return out


def floors(model, X: np.ndarray, repeat: int) -> dict:
    S = model._stacked.n_live
    z = np.zeros((S, X.shape[0], 1))
    g = model._stacked.groups[0]
    return {"check_X_ms": median_ms(lambda: model._check_X(X), repeat),
            "product_ms": median_ms(lambda: g.raw(X), repeat),
            "expit_S_x_n_ms": median_ms(lambda: expit(z), repeat)}


def sgd(args, X, y) -> dict:
    out: dict = {}
    mono = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    for n in (1, 1000):
        out[f"monolithic_{n}_ms"] = median_ms(lambda n=n: mono.predict_proba(X[:n]),
                                              args.repeat)
    for S in args.shards:
        with tempfile.TemporaryDirectory() as tmp:
            model = SISAClassifier(n_shards=S, n_slices=args.slices, backend="local",
                                   store=tmp).fit(X, y)
            for n in (1, 1000):
                r = before_after(model, X[:n], args.repeat)
                r["loop_x_mono"] = round(r["loop_ms"] / out[f"monolithic_{n}_ms"], 1)
                r["stacked_x_mono"] = round(r["stacked_ms"] / out[f"monolithic_{n}_ms"], 1)
                if "stacked_exact_ms" in r:
                    r["exact_x_mono"] = round(r["stacked_exact_ms"] / out[f"monolithic_{n}_ms"],
                                              1)
                # the target's ratio, timed in alternation with the monolithic model
                r["paired_mono_ms"], r["paired_stacked_ms"], r["paired_stacked_x_mono"] = \
                    paired_ms(lambda n=n: mono.predict_proba(X[:n]),
                              lambda n=n, m=model: m.predict_proba(X[:n]), args.repeat)
                r["floors"] = floors(model, X[:n], args.repeat)
                out[f"S={S}_{n}"] = r
    return out


def torch_mlp(args, X, y) -> dict:
    from sisa.deep import TorchClassifier

    S = max(args.shards)
    net = TorchClassifier(max_epochs=1, batch_size=256, random_state=0)
    out: dict = {}
    one = net.fit(X, y)
    for n in (1, 1000):
        out[f"network_{n}_ms"] = median_ms(lambda n=n: one.predict_proba(X[:n]), args.repeat)
    with tempfile.TemporaryDirectory() as tmp:
        model = SISAClassifier(TorchClassifier(batch_size=256, random_state=0), n_shards=S,
                               n_slices=1, epochs=1, backend="local", store=tmp).fit(X, y)
        for n in (1, 1000):
            r = before_after(model, X[:n], args.repeat)
            r["loop_x_network"] = round(r["loop_ms"] / out[f"network_{n}_ms"], 1)
            r["stacked_x_network"] = round(r["stacked_ms"] / out[f"network_{n}_ms"], 1)
            r["floor_bmm_ms"] = floor_bmm(model, X[:n], args.repeat)
            out[f"S={S}_{n}"] = r
    return out


def floor_bmm(model, X: np.ndarray, repeat: int) -> float:
    """The stacked networks' products alone (S times one network's arithmetic)."""
    import torch

    ops = [op for op in model._stacked.groups[0].form.ops if op[0] == "linear"]
    x = torch.from_numpy(X).expand(len(model._stacked.groups[0].positions), *X.shape)

    def run() -> None:
        h = x
        for _, W, b in ops:
            h = torch.baddbmm(b, h, W)

    with torch.no_grad():
        return median_ms(run, repeat)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=200_000)
    ap.add_argument("--shards", default="16,256")
    ap.add_argument("--slices", type=int, default=4)
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--only", choices=["sgd", "torch"], default=None)
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads for every torch timing (default: torch's)")
    args = ap.parse_args()
    args.shards = [int(s) for s in args.shards.split(",")]
    X, y = data(args.rows)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if args.only != "torch":
            out = {"rows": args.rows, "features": X.shape[1], "sgd_log_loss": sgd(args, X, y)}
            print(json.dumps(out, indent=1), flush=True)
        if args.only != "sgd":
            if args.torch_threads:
                import torch

                torch.set_num_threads(args.torch_threads)
            print(json.dumps({"rows": args.rows, "torch_mlp": torch_mlp(args, X, y)},
                             indent=1))


if __name__ == "__main__":
    main()
