"""Where the time of a binary logistic soft vote goes, step by step, at S = 16 and 256,
1,000 rows x 50 features: the monolithic model's ``predict_proba`` and its parts, and
each step of the one-product path (sisa.aggregate.gemm) and of the exact stacked path
(one matrix-vector product per shard, scipy's ``expit``), with 1 and with 2 BLAS
threads (threadpoolctl). Random weights: the arithmetic does not depend on them.

Run: python -m benchmarks.predict_steps [--repeat 50] [--dtype float32]
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy.special import expit
from sklearn.linear_model import SGDClassifier
from threadpoolctl import threadpool_limits

from benchmarks.predict import median_ms


def steps(S: int, X: np.ndarray, W: np.ndarray, b: np.ndarray, repeat: int) -> dict:
    """Each step on the same arrays; ``X`` and ``W`` in the product's dtype."""
    n = X.shape[0]
    T = np.empty((n, S), W.dtype)
    Z = np.empty((n, S))
    Wst = np.ascontiguousarray(W.T)[:, :, None]  # (S, d, 1): the exact path's layout
    ones = np.ones(S)
    ms = {
        "exact_products_batched_gemv": median_ms(lambda: np.matmul(X[None], Wst), repeat),
        "exact_expit_scipy": median_ms(lambda: expit(Z, out=Z), repeat),
        "gemm_one_product": median_ms(lambda: np.matmul(X, W, out=T), repeat),
        "bias_add_to_float64": median_ms(lambda: np.add(T, b, out=Z), repeat),
        "exp_numpy": median_ms(lambda: np.exp(Z, out=Z) if Z.fill(-0.3) is None else 0,
                               repeat),
        "add_one": median_ms(lambda: np.add(Z, 1.0, out=Z), repeat),
        "reciprocal": median_ms(lambda: np.reciprocal(Z, out=Z), repeat),
        "mean_gemv": median_ms(lambda: np.matmul(Z, ones), repeat),
    }
    ms["exp_numpy"] -= median_ms(lambda: Z.fill(-0.3), repeat)  # the refill, out again
    ms["gemm_path_sum"] = round(sum(v for k, v in ms.items() if not k.startswith("exact")), 4)
    return ms


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                    help="the rows' and weights' dtype (float32: the products are float32)")
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    d = 50
    X = rng.normal(size=(args.rows, d)).astype(args.dtype)
    y = (X[:, 0] > 0).astype(int)
    mono = SGDClassifier(loss="log_loss", random_state=0).fit(X, y)
    out: dict = {"rows": args.rows, "features": d, "dtype": args.dtype}
    for threads in (1, 2):
        with threadpool_limits(threads, user_api="blas"):
            r: dict = {"monolithic_predict_proba": median_ms(lambda: mono.predict_proba(X),
                                                             args.repeat),
                       "monolithic_decision_function": median_ms(
                           lambda: mono.decision_function(X), args.repeat)}
            for S in (16, 256):
                W = (rng.normal(size=(d, S)) * 0.2).astype(args.dtype)
                r[f"S={S}"] = steps(S, X, W, rng.normal(size=S), args.repeat)
            out[f"blas_threads={threads}"] = r
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
