"""SCRUB (Kurmanji et al. 2023) for any fitted :class:`sisa.deep.TorchClassifier`.

Model-agnostic: it trains ``model.module_`` by hand, so it works for whatever network the
torch family builds (MLP or CNN). The teacher is the original network (frozen, its logits
computed once per row), the student a copy of it. Each epoch the student first (for the
first ``max_steps`` epochs) takes a *max* pass over U climbing ``KL(teacher ‖ student)``,
then a *min* pass over W descending ``gamma * CE + alpha * KL(teacher ‖ student)`` (their
code's ``gamma * loss_cls + alpha * loss_div``); the KL is between softmaxes at temperature
``T``, times ``T²`` (their ``DistillKL``). SGD with momentum, one optimizer for both passes.
"""

from __future__ import annotations

import copy

import numpy as np

from sisa.compare.data import STREAM
from sisa.deep import TorchClassifier
from sisa.deep.estimator import deterministic
from sisa.errors import InputError

__all__ = ["scrub_network"]


def _kl(torch, student_logits, teacher_logits, T: float):
    """``T² KL(softmax(t/T) ‖ softmax(s/T))``, mean over the batch."""
    F = torch.nn.functional
    return F.kl_div(F.log_softmax(student_logits / T, dim=1), F.softmax(teacher_logits / T, dim=1),
                    reduction="batchmean") * T * T


def _rows(torch, model: TorchClassifier, X: np.ndarray):
    """Rows as the network's input tensor."""
    x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
    return x.reshape((len(X), *model.input_shape_))


def scrub_network(model: TorchClassifier, X_w: np.ndarray, y_w: np.ndarray, X_u: np.ndarray, *,
                  epochs: int = 4, max_steps: int = 2, lr: float = 0.01, momentum: float = 0.9,
                  batch: int = 64, batch_u: int = 16, alpha: float = 0.1, gamma: float = 1.0,
                  temperature: float = 4.0, seed: int = 0) -> TorchClassifier:
    """SCRUB from a fitted network (the teacher); returns the student.

    Parameters
    ----------
    model : TorchClassifier
        Fitted on ``W ∪ U``; left unchanged.
    X_w, y_w : ndarray
        The rows to keep.
    X_u : ndarray
        The rows to forget (the max-steps use the teacher's outputs, not labels).
    epochs, max_steps : int
        Min passes over W; how many of the first epochs also take a max pass over U.
    lr, momentum, batch, batch_u : float, float, int, int
        SGD; W's and U's batch sizes.
    alpha, gamma, temperature : float
        KL and CE weights of the min-steps; the distillation temperature.
    seed : int
        Seed of the row orders.

    Returns
    -------
    TorchClassifier
    """
    import torch  # the model is fitted, so torch is there

    if epochs < 0 or max_steps < 0 or min(batch, batch_u) < 1 or temperature <= 0:
        raise InputError("SCRUB needs epochs, max_steps >= 0, batches >= 1, temperature > 0")
    teacher, mode = model.module_, model.module_.training
    model = copy.deepcopy(model)
    net = model.module_.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)

    xw, xu = _rows(torch, model, X_w), _rows(torch, model, X_u)
    yw = torch.from_numpy(np.searchsorted(model.classes_, y_w).astype(np.int64))
    with deterministic(torch, model.device):
        with torch.no_grad():  # the teacher's outputs, in eval mode, its mode kept
            teacher.eval()
            tw, tu = teacher(xw), teacher(xu)
            teacher.train(mode)
        torch.manual_seed(int(np.random.SeedSequence([seed, STREAM, 5]).generate_state(1)[0]))
        for epoch in range(epochs):
            if epoch < max_steps:
                for j in torch.randperm(len(xu)).split(batch_u):
                    loss = -_kl(torch, net(xu[j]), tu[j], temperature)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
            for j in torch.randperm(len(xw)).split(batch):
                out = net(xw[j])
                loss = (gamma * torch.nn.functional.cross_entropy(out, yw[j])
                        + alpha * _kl(torch, out, tw[j], temperature))
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        opt.zero_grad(set_to_none=True)
    return model
