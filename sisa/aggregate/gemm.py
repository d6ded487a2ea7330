"""The soft vote of binary logistic shard models as one matrix product: within a proven
bound of the per-shard loop, not its bits (docs/design.md, "Aggregate").

The loop (and :class:`.families.Linear`) computes, per shard s, ``X @ coef_s.T +
intercept_s`` (one matrix-vector product each, in the dtype numpy promotes X and
``coef_`` to: float32 when both are), ``expit`` of it in float64, stacks ``[1 - p, p]``
and sums over the shards. :class:`LogisticMean` computes ``X @ W`` for every shard's
weights side by side in one matrix product of that same dtype, ``1 / (1 + exp(-t))``
over the whole (rows x S) block in place, and the mean over the shards as one more
product. The dot products round in another order and numpy's ``exp`` is not libm's
(at most 1 ulp apart in our measurements), so the two differ in the last bits of the
product's dtype; :func:`bound` is the proven per-row limit of that difference, in
absolute terms: below ~1e-4 a probability's relative error is defined by neither path,
since the loop's own ``1 - p`` carries an absolute rounding error of one unit in 1.
"""

from __future__ import annotations

import numpy as np

from .families import Linear

U = np.finfo(np.float64).eps / 2  # unit roundoff of float64
# |error| of numpy's and libm's float64 exp in units in the last place: each is within
# 1 ulp of exp (numpy's SIMD exp, glibc's); 4 leaves room for other builds
EXP_ULPS = 4
# OpenBLAS multiplies with several threads when m*n*k exceeds 4 * 65536
# (interface/gemm.c); on a shared 2-core machine those threads wait on other jobs (a
# 0.5 ms product took 20 ms beside one busy process), so every product stays under it
_ONE_THREAD_MNK = 1 << 18
_BLOCK = 1 << 16  # values per elementwise pass: the (rows x S) block stays in cache


def fits(form, cols, n_live: int) -> bool:
    """Whether a group's stacked form is binary logistic with float coefficients and a
    float64 intercept (the scores are float64, as the loop's), and holds every live
    shard with the ensemble's two classes in order."""
    return (type(form) is Linear and form.link == "logistic" and form.width == 1
            and form.Wst.dtype in (np.float32, np.float64) and form.b.dtype == np.float64
            and form.Wst.shape[0] == n_live and cols is not None
            and np.array_equal(cols, [0, 1]))


def gamma(n: int, dtype=np.float64) -> float:
    """γ_n = n u / (1 - n u), u the unit roundoff of ``dtype``: the relative error bound
    of a sum of n products, in any order."""
    u = float(np.finfo(dtype).eps) / 2
    return n * u / (1 - n * u)


def product_dtype(X: np.ndarray, form: Linear) -> np.dtype:
    """The dtype of the loop's ``X @ coef_.T``: float32 only when both are."""
    return np.result_type(X.dtype, form.Wst.dtype)


class LogisticMean:
    """The mean over S binary logistic models of ``[1 - p, p]``, one product for all.

    Parameters
    ----------
    form : Linear
        The stacked shard models (:func:`fits` holds).
    """

    def __init__(self, form: Linear) -> None:
        G, d, _ = form.Wst.shape
        # negated so that exp reads the product directly: -(x.w) is x.(-w) exactly;
        # one copy per dtype the loop's product can take (float32 weights widen exactly)
        W = -form.Wst[:, :, 0].T  # (d, S)
        self.Wneg = {np.dtype(np.float64): np.ascontiguousarray(W, dtype=np.float64)}
        if W.dtype == np.float32:
            self.Wneg[np.dtype(np.float32)] = np.ascontiguousarray(W)
        self.form = form
        self.bneg = -form.b[:, 0]  # (S,) float64
        self.ones = np.ones(G)
        self.S, self.d = G, d
        self.gemm_rows = max(1, _ONE_THREAD_MNK // (d * G))
        self.block = max(self.gemm_rows, _BLOCK // G // self.gemm_rows * self.gemm_rows)

    def mean_proba(self, X: np.ndarray) -> np.ndarray:
        """``(n, 2)``: the mean of the shard models' ``predict_proba``, within
        :func:`bound` of the loop's."""
        n, dtype = X.shape[0], product_dtype(X, self.form)
        W = self.Wneg[dtype]
        out = np.empty((n, 2))
        p1 = np.empty(n)
        rows = min(self.block, n)
        # the rows as the loop's product casts them (None: X already is, read in place)
        Xb = (None if X.dtype == dtype and X.flags.c_contiguous
              else np.empty((rows, self.d), dtype))
        T = np.empty((rows, self.S), dtype)
        Z = T if dtype == np.float64 else np.empty((rows, self.S))
        with np.errstate(over="ignore"):  # exp(-t) = inf: p = 1 / inf = 0, as expit's
            for a in range(0, n, self.block):
                self._block(X[a:a + self.block], W, Xb, T, Z, p1[a:a + self.block])
        p1 /= self.S
        out[:, 1] = p1
        np.subtract(1.0, p1, out=out[:, 0])
        return out

    def _block(self, Xa, W, Xb, T, Z, p1) -> None:
        """One block of rows: its products (each under the one-thread size), then each
        elementwise step over the whole block."""
        m = Xa.shape[0]
        t, z = T[:m], Z[:m]
        x = Xa
        if Xb is not None:
            x = Xb[:m]
            x[...] = Xa
        for r in range(0, m, self.gemm_rows):
            np.matmul(x[r:r + self.gemm_rows], W, out=t[r:r + self.gemm_rows])
        np.add(t, self.bneg, out=z)  # float64, as `+ intercept_` makes the loop's
        np.exp(z, out=z)  # exp(-t): expit(t) = 1 / (1 + exp(-t)), as scipy computes it
        z += 1.0
        np.reciprocal(z, out=z)
        np.matmul(z, self.ones, out=p1)


def bound(X: np.ndarray, form: Linear) -> np.ndarray:
    """Per row, the most :meth:`LogisticMean.mean_proba` can differ from the loop's mean
    probability (either column), in absolute terms.

    Per shard both paths compute t = x.w + b, a sum of d + 1 terms, in some order and
    in the product's dtype (:func:`product_dtype`; the bias is added in float64): each
    is within γ_{d+1} A of the exact value, A = Σ|x_i w_i| + |b|, γ of that dtype, so
    they are within 2 γ_{d+1} A of each other. expit has slope at most 1/4, and each path's
    ``1 / (1 + exp(-t))`` is within (EXP_ULPS + 3) u relative of expit of its own t.
    The means (any summation order, then / S) add at most γ_{S+1} each, and ``1 - p``
    (the loop per shard, this path once) at most 2 u more. Hence, per row,
    max_s γ_{d+1} A_s / 2 + 2 (EXP_ULPS + 4) u + 2 γ_{S+1}, doubled here so that the
    rounding of this computation itself cannot matter.
    """
    Xd = np.abs(np.asarray(X, dtype=np.float64))
    A = Xd @ np.abs(form.Wst[:, :, 0].T) + np.abs(form.b[:, 0])  # (n, S)
    S, d = form.Wst.shape[0], form.Wst.shape[1]
    per_row = (gamma(d + 1, product_dtype(X, form)) * A.max(axis=1) / 2
               + 2 * (EXP_ULPS + 4) * U + 2 * gamma(S + 1))
    return 2 * per_row
