"""SCRUB (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning") for the L2 logistic
regression of :mod:`sisa.baselines.linear`.

The teacher is the original model ``θ₀`` (fit on ``D = W ∪ U``); the student starts as a
copy of it. Each epoch the student first (for the first ``max_steps`` epochs only) takes a
*max* pass over U, climbing ``KL(teacher ‖ student)`` on U's rows, then a *min* pass over W,
descending ``gamma * CE + alpha * KL(teacher ‖ student)`` on W's rows (their code's
``gamma * loss_cls + alpha * loss_div``), with the model's L2 penalty (its per-row share,
as the other SGD methods of the family). The KL is between the tempered Bernoulli
predictions ``σ(z / T)``, times ``T²`` (Hinton et al.'s distillation scaling, their
``kd_T``), whose gradient in the logit is ``T (σ(z_s/T) - σ(z_t/T))``.

The cost of an epoch is one pass over W plus (in the max epochs) one over U: the teacher's
logits are computed once.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.special import expit

from sisa.baselines import linear as L
from sisa.errors import InputError

__all__ = ["SCRUB_BUDGET", "ScrubBudget", "scrub"]


@dataclass(frozen=True)
class ScrubBudget:
    """SCRUB's settings: epochs (passes over W), max-steps (epochs that also ascend on U),
    SGD step, W's and U's batch (U's smaller, so a max pass takes several steps, as their
    forget batches), ``alpha`` (KL weight on W), ``gamma`` (CE weight on W) and the
    distillation temperature."""

    epochs: int = 4
    max_steps: int = 4
    step: float = 0.2
    batch: int = 128
    batch_u: int = 16
    alpha: float = 0.1
    gamma: float = 1.0
    temperature: float = 4.0

    def __post_init__(self) -> None:
        if self.epochs < 0 or self.max_steps < 0 or min(self.batch, self.batch_u) < 1:
            raise InputError(f"SCRUB needs epochs, max_steps >= 0 and batch >= 1, got {self}")
        if self.step <= 0 or self.temperature <= 0 or self.alpha < 0 or self.gamma < 0:
            raise InputError("SCRUB needs step, temperature > 0 and alpha, gamma >= 0")


SCRUB_BUDGET = ScrubBudget()


def _kl_grad(theta: np.ndarray, X: np.ndarray, z_teacher: np.ndarray, T: float) -> np.ndarray:
    """Gradient in ``θ`` of the mean ``T² KL(σ(z_t/T) ‖ σ(z_s/T))`` over the rows of X."""
    r = T * (expit(L.decision(theta, X) / T) - expit(z_teacher / T))
    return np.append(X.T @ r, r.sum()) / len(r)


def scrub(theta: np.ndarray, X_w: np.ndarray, y_w: np.ndarray, X_u: np.ndarray,
          lam: float, rng: np.random.Generator, budget: ScrubBudget = SCRUB_BUDGET
          ) -> np.ndarray:
    """SCRUB from the original ``θ`` (the teacher), forgetting U = ``X_u``.

    Parameters
    ----------
    theta : ndarray of shape (d + 1,)
        The original model ``(w, c)``, fit on ``W ∪ U``; the teacher and the start.
    X_w, y_w : ndarray
        The kept rows W (binary labels).
    X_u : ndarray
        The rows to forget (SCRUB's max-steps use the teacher's predictions, not labels).
    lam : float
        The family's L2 penalty (sum-of-losses form; its per-row share enters each step).
    rng : numpy.random.Generator
        Order of the rows.
    budget : ScrubBudget

    Returns
    -------
    ndarray of shape (d + 1,)
        The student.
    """
    b = budget
    student = np.array(theta, dtype=float)
    zt_w, zt_u = L.decision(theta, X_w), L.decision(theta, X_u)
    pen = L._penalty(X_w.shape[1], lam / len(y_w))
    n_w, n_u = len(y_w), len(X_u)
    for epoch in range(b.epochs):
        if epoch < b.max_steps:  # max pass: move away from the teacher on U
            order = rng.permutation(n_u)
            for s in range(0, n_u, b.batch_u):
                j = order[s:s + b.batch_u]
                student += b.step * _kl_grad(student, X_u[j], zt_u[j], b.temperature)
        order = rng.permutation(n_w)
        for s in range(0, n_w, b.batch):  # min pass: stay the teacher (and right) on W
            j = order[s:s + b.batch]
            g = b.gamma * L.gradient(student, X_w[j], y_w[j], 0.0) / len(j)
            g += b.alpha * _kl_grad(student, X_w[j], zt_w[j], b.temperature)
            student -= b.step * (g + pen * student)
    return student
