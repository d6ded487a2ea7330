"""Where the time of a binary logistic soft vote goes, step by step, at S = 16 and 256,
1,000 rows x 50 features: the monolithic model's ``predict_proba`` and its parts, and
each step of the one-product path (sisa.aggregate.gemm) and of the exact stacked path
(one matrix-vector product per shard, scipy's ``expit``), with 1 and with 2 BLAS
threads (threadpoolctl). Random weights: the arithmetic does not depend on them.

With ``--torch``: a 50 -> 100 -> 2 ReLU MLP at S = 256 in float32 (torch threads 1 and
2): one network; the S networks layer by layer (``F.linear`` per shard, what the stacked
form runs above 64 rows); all S first layers as one product against the weights side by
side (then one batched product for the second layers); that first-layer product alone;
and the multiply-adds per second each reaches.

Run: python -m benchmarks.predict_steps [--repeat 50] [--dtype float32] [--torch]
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


def torch_steps(repeat: int, rows: int) -> dict:
    """The MLP ensemble's forward pass three ways, and its arithmetic's rate."""
    import torch

    F = torch.nn.functional
    S, d, h, k = 256, 50, 100, 2
    g = torch.Generator().manual_seed(0)
    W1, b1 = torch.randn(S, h, d, generator=g) * 0.1, torch.randn(S, h, generator=g) * 0.1
    W2, b2 = torch.randn(S, k, h, generator=g) * 0.1, torch.randn(S, k, generator=g) * 0.1
    x = torch.randn(rows, d, generator=g)
    W1cat, b1cat = W1.reshape(S * h, d).t().contiguous(), b1.reshape(S * h)
    W2t = W2.transpose(1, 2).contiguous()

    def per_shard():
        return [F.linear(torch.relu(F.linear(x, W1[s], b1[s])), W2[s], b2[s])
                for s in range(S)]

    def side_by_side(chunk=128):
        for a in range(0, rows, chunk):
            H = torch.relu_(torch.addmm(b1cat, x[a:a + chunk], W1cat))
            torch.baddbmm(b2[:, None, :], H.view(-1, S, h).transpose(0, 1), W2t)

    macs = S * rows * (d * h + h * k)
    out: dict = {}
    with torch.no_grad():
        for threads in (1, 2):
            torch.set_num_threads(threads)
            r = {"one_network": median_ms(
                lambda: F.linear(torch.relu(F.linear(x, W1[0], b1[0])), W2[0], b2[0]), repeat),
                 "per_shard_layers": median_ms(per_shard, max(5, repeat // 5)),
                 "side_by_side": median_ms(side_by_side, max(5, repeat // 5)),
                 "first_layers_one_product": median_ms(lambda: torch.mm(x, W1cat),
                                                       max(5, repeat // 5))}
            r["per_shard_GMAC_per_s"] = round(macs / r["per_shard_layers"] / 1e6, 1)
            r["first_layer_product_GMAC_per_s"] = round(
                S * rows * d * h / r["first_layers_one_product"] / 1e6, 1)
            out[f"torch_threads={threads}"] = r
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    ap.add_argument("--rows", type=int, default=1000)
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"],
                    help="the rows' and weights' dtype (float32: the products are float32)")
    ap.add_argument("--torch", action="store_true", help="the torch MLP ensemble only")
    args = ap.parse_args()
    if args.torch:
        print(json.dumps({"rows": args.rows, **torch_steps(args.repeat, args.rows)},
                         indent=1))
        return
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
