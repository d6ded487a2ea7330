"""Mini-batches of an epoch, and batch norm on batches too small for it.

``torch`` refuses to train a batch-norm layer on a batch that gives it one value per
channel (one row into ``batchnorm1d`` after a linear layer): an epoch over ``32k + 1``
rows in batches of 32 would end on such a batch, and a slice (or a shard left by a
forget) of that size could never be trained. The batch bounds below avoid it
deterministically, so the same rows in the same order still give the same bytes, and a
forget still equals a fresh fit without the rows.
"""

from __future__ import annotations

import contextlib


def batch_bounds(n: int, size: int, fold: bool) -> list[tuple[int, int]]:
    """``(start, stop)`` of each mini-batch of an epoch over ``n`` rows. With ``fold``, a
    trailing batch of one row joins the batch before it (batch norm cannot normalise one
    value per channel): the bounds depend only on ``n``, ``size`` and the network, so the
    same rows in the same order give the same bytes. Only a network that needs it folds
    (:func:`lone_row_norms`): every other network's batches, hence its checkpoints' bytes,
    are as before."""
    starts = list(range(0, n, size))
    if fold and len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return list(zip(starts, [*starts[1:], n], strict=True))


def lone_row_norms(torch, net, row) -> list:
    """The batch-norm layers of ``net`` that see one value per channel for a one-row batch
    (``torch`` refuses to train those on it), found by one forward pass in eval mode of
    ``row`` twice (a layer without running statistics normalises over the batch even in
    eval mode, and two rows always pass): it draws no random numbers and moves no
    running statistics."""
    norms = [m for m in net.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not norms or len(row) == 0:
        return []
    seen: dict[int, int] = {}
    hooks = [m.register_forward_pre_hook(
        lambda mod, args: seen.__setitem__(id(mod), args[0][0].numel() // args[0].shape[1]))
        for m in norms]
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            net.eval()(torch.cat([row[:1], row[:1]]))
    finally:
        for h in hooks:
            h.remove()
        net.train()
    return [m for m in norms if seen.get(id(m)) == 1]


@contextlib.contextmanager
def running_stats(norms: list):
    """Batch norm on a lone row (an epoch of one row: nothing to fold it into) normalises
    with its running statistics and leaves them as they are; the rest trains as usual.
    A layer that keeps none (``track_running_stats=False``) cannot: the caller skips that
    row instead (raising would leave a slice that can never be trained)."""
    if not norms:
        yield
        return
    for m in norms:
        m.eval()
    try:
        yield
    finally:
        for m in norms:
            m.train()
