"""The torch family: a small CNN, retrained, SISA, fine-tuned, NegGrad+ or kept.

Every method uses the same :class:`sisa.deep.TorchClassifier`: a small CNN on
Fashion-MNIST (two strided convolutions → linear, :func:`sisa.compare.images.cnn_layers`),
trained with Adam in mini-batches, deterministic on the CPU and seeded by
``random_state`` (initial weights, data order). The methods:

* ``retrain``: train from scratch on W with the seed's own initialisation (exact; the
  reference);
* ``sisa``: a SISA ensemble of the same network (S shards x R slices, soft vote) fit
  on D, then ``forget(U)`` (exact: byte-identical to a SISA fit on W);
* ``finetune``: the original (trained on D), trained on W a few more epochs;
* ``neggrad``: NegGrad+ (Kurmanji et al. 2023, "Towards unbounded machine unlearning";
  the challenge's baselines): from the original, every step descends ``alpha`` times a
  W batch's loss and ascends ``1 - alpha`` times a U batch's loss (U cycled);
* ``original``: the network trained on D, untouched (do nothing).

Fine-tune and NegGrad+ share one budget (epochs over W, SGD with momentum, step, batch)
and differ only in the ascent term, as the linear family's SGD methods do.

Randomness: a network's training is random through its seed alone, so every seed trains
on all of W (plus U where the method trains on D), as in the challenge; ``subsample``
below 1 adds the linear family's per-seed subsample of W.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from sisa.compare.data import STREAM, Scenario, seed_rows, subsample
from sisa.compare.images import cnn_layers, margin
from sisa.compare.methods.exact import SisaSetup
from sisa.compare.methods.torch_methods import scrub_network
from sisa.deep import TorchClassifier
from sisa.deep.estimator import deterministic
from sisa.errors import InputError

__all__ = ["METHODS", "REFERENCE_KIND", "TorchFamily", "descend"]

METHODS = ("retrain", "sisa", "finetune", "neggrad", "scrub", "original")
REFERENCE_KIND = {m: "monolithic" for m in METHODS}
REFERENCE_KIND["sisa"] = "sisa"


def descend(model: TorchClassifier, X_w: np.ndarray, y_w: np.ndarray,
            forget: tuple[np.ndarray, np.ndarray] | None = None, *, alpha: float = 1.0,
            epochs: int = 2, lr: float = 0.01, momentum: float = 0.9, batch: int = 64,
            seed: int = 0) -> TorchClassifier:
    """Fine-tune a fitted network on (X_w, y_w); with ``forget``, NegGrad+.

    A copy of ``model`` is trained ``epochs`` passes over W in a seeded order, with SGD
    (``lr``, ``momentum``) from a fresh optimizer state. With ``forget = (X_u, y_u)``
    each step's loss is ``alpha * loss(W batch) - (1 - alpha) * loss(U batch)``, the U
    batches cycling through a seeded order of U (Kurmanji et al. 2023's NegGrad+).

    Parameters
    ----------
    model : TorchClassifier
        Fitted; left unchanged.
    X_w, y_w : ndarray
        The rows to keep.
    forget : (ndarray, ndarray), optional
        The rows to forget (NegGrad+); None: plain fine-tuning.
    alpha : float, default=1.0
        Weight of W's loss; ``1 - alpha`` is U's (NegGrad+ uses 0.95).
    epochs, lr, momentum, batch, seed
        The budget and the seed of the order.

    Returns
    -------
    TorchClassifier
    """
    import torch  # the model is fitted, so torch is there

    if forget is not None and not 0 < alpha < 1:
        raise InputError(f"alpha must be in (0, 1) for NegGrad+, got {alpha!r}")
    model = copy.deepcopy(model)
    net = model.module_.train()
    opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=momentum)

    def tensors(X, y):
        x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))
        t = torch.from_numpy(np.searchsorted(model.classes_, y).astype(np.int64))
        return x.reshape((len(X), *model.input_shape_)), t

    xw, yw = tensors(X_w, y_w)
    xu, yu = tensors(*forget) if forget is not None else (None, None)
    loss_of = torch.nn.functional.cross_entropy
    with deterministic(torch, model.device):
        torch.manual_seed(int(np.random.SeedSequence([seed, STREAM, 3]).generate_state(1)[0]))
        for _ in range(epochs):
            order = torch.randperm(len(yw))
            u_batches = None if xu is None else torch.randperm(len(yu)).split(batch)
            for k, idx in enumerate(order.split(batch)):
                loss = loss_of(net(xw[idx]), yw[idx])
                if u_batches is not None:
                    j = u_batches[k % len(u_batches)]
                    loss = alpha * loss - (1 - alpha) * loss_of(net(xu[j]), yu[j])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        opt.zero_grad(set_to_none=True)
    return model


@dataclass(frozen=True)
class TorchFamily:
    """Settings shared by every method of the torch family.

    Attributes
    ----------
    channels : tuple of int
        Output channels of the CNN's two convolutions (5x5 and 3x3, stride 2, each
        followed by a ReLU).
    epochs, lr, batch : int, float, int
        Training of every network (Adam): epochs from scratch; SISA's shards train as
        many epochs per slice.
    n_shards, n_slices : int
        SISA's S and R.
    subsample : float
        Fraction of W each seed trains on, in (0, 1]; 1: the seed alone varies.
    unlearn_epochs, unlearn_lr, momentum : int, float, float
        The budget of fine-tune and NegGrad+ (SGD with momentum, batch ``batch``).
    alpha : float
        NegGrad+'s weight of W's loss (``1 - alpha``: U's).
    """

    name: ClassVar[str] = "torch"
    methods: ClassVar[tuple[str, ...]] = METHODS
    reference_kind: ClassVar[dict[str, str]] = REFERENCE_KIND
    #: Run defaults: N = 128 models a side and 200 forgotten rows (8% of 2,500) are what
    #: the power check needs to detect a 0.25 sd shift (128 x 100 rows: 0.3 sd), within
    #: 30 minutes on 2 CPUs (docs/compare.md, "The torch family").
    defaults: ClassVar[dict] = {"dataset": "fashion-mnist", "n_models": 128,
                                "eps_rows": 2500, "fraction": 0.08,
                                "scenarios": ("random", "mislabeled"),
                                "sisa_scenarios": ("mislabeled",)}

    channels: tuple[int, int] = (8, 16)
    epochs: int = 5
    lr: float = 0.003
    batch: int = 64
    n_shards: int = 5
    n_slices: int = 1
    subsample: float = 1.0
    unlearn_epochs: int = 2
    unlearn_lr: float = 0.01
    momentum: float = 0.9
    alpha: float = 0.95
    params: dict | None = None

    def method_params(self, scenario: str, method: str, seed: int) -> dict:
        """Keyword arguments of ``descend`` (finetune, neggrad) or ``scrub_network`` on a
        forget set: the family's budget, overridden by the tuning's choice (``params``)."""
        p = {"epochs": self.unlearn_epochs, "lr": self.unlearn_lr, "momentum": self.momentum,
             "batch": self.batch, "seed": seed}
        if method == "neggrad":
            p["alpha"] = self.alpha
        return p | ((self.params or {}).get(scenario) or {}).get(method, {})

    def __post_init__(self) -> None:
        if not 0 < self.subsample <= 1:
            raise InputError(f"subsample must be in (0, 1], got {self.subsample!r}")
        if not 0 < self.alpha < 1:
            raise InputError(f"alpha must be in (0, 1), got {self.alpha!r}")
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise InputError(f"channels must be two positive integers, got {self.channels!r}")

    def network(self, seed: int) -> TorchClassifier:
        """The unfitted network every method trains (seeded by ``seed``)."""
        return TorchClassifier(cnn_layers(self.channels), optimizer="adam", lr=self.lr,
                               batch_size=self.batch, max_epochs=self.epochs,
                               random_state=seed)

    @property
    def sisa(self) -> SisaSetup:
        """SISA of this family: the same network as every shard (the engine seeds it per
        shard, slice and pass)."""
        return SisaSetup(self.network(0), self.n_shards, self.n_slices, self.epochs)

    def describe(self) -> dict[str, str]:
        """One line per method, for the report."""
        sgd = (f"SGD (momentum {self.momentum:g}), {self.unlearn_epochs} epochs over W, "
               f"step {self.unlearn_lr:g}, batch {self.batch}")
        return {
            "retrain": (f"train the CNN from scratch on W ({self.epochs} epochs, Adam, lr "
                        f"{self.lr:g}, batch {self.batch}), its own seed"),
            "sisa": (f"SISA, S={self.n_shards} x R={self.n_slices}, shards = the same CNN "
                     f"({self.epochs} epochs a slice), soft vote; fit on D, forget(U)"),
            "finetune": f"fine-tune the original on W: {sgd}",
            "neggrad": (f"NegGrad+ ({self.alpha:g} x W's loss - {1 - self.alpha:.2g} x U's "
                        f"loss, U batches cycled; Kurmanji et al. 2023): {sgd}"),
            "scrub": (f"SCRUB (Kurmanji et al. 2023): teacher = the original; max-steps "
                      f"ascend KL on U, min-steps descend CE + alpha x KL on W: {sgd}"
                      + ("; tuned per forget set" if self.params else "")),
            "original": "the network trained on D, nothing forgotten",
        }

    def summary(self) -> dict:
        """The report's ``family`` section: settings, method lines and protocol text."""
        rand = ("each seed draws its own initial weights and data order (TorchClassifier "
                "seeds both from random_state) and trains on all of W, plus U where the "
                "method trains on D, as in the challenge")
        if self.subsample < 1:
            rand += f"; and on its own random {self.subsample:.0%} of W"
        c1, c2 = self.channels
        return {"name": self.name, **{k: getattr(self, k) for k in self.__dataclass_fields__},
                "describe": self.describe(),
                "text": {
                    "model": (f"a CNN, conv {c1} (5x5, stride 2) -> ReLU -> conv {c2} "
                              "(3x3, stride 2) -> ReLU -> linear ("
                              f"sisa.deep.TorchClassifier: Adam, lr {self.lr:g}, batch "
                              f"{self.batch}, {self.epochs} epochs, deterministic on the "
                              "CPU); SISA's shards are the same network (soft vote of their "
                              "probabilities)"),
                    "randomness": rand,
                    "statistic": ("the true class's margin (log p_y - max of the other "
                                  "classes' log p) of a small CNN on Fashion-MNIST, not the "
                                  "logit-scaled confidence of the challenge's ResNet-18 on "
                                  "face images"),
                    "stat_line": ("the true class's margin, log p_y - max_{k != y} log p_k "
                                  "(one network: the logit margin; SISA: of the soft vote, "
                                  "by log-sum-exp: never clamped); > 0 iff the prediction is "
                                  "right."),
                    "floors": "monolithic retrain; SISA fit on W for sisa"}}

    def warm_start(self, sc: Scenario) -> None:
        """None: every network starts from its seed's initialisation."""
        return None

    def reference(self, kind: str, sc: Scenario, seed: int, warm: Any = None) -> Any:
        """A model trained without U for seed ``seed``: ``monolithic`` or ``sisa``."""
        w = subsample(sc, self.subsample, seed)
        if kind == "monolithic":
            return self.network(seed).fit(sc.X[w], sc.y[w])
        if kind == "sisa":
            return self.sisa.fit(sc.X[w], sc.y[w], w, seed)
        raise InputError(f"kind must be 'monolithic' or 'sisa', got {kind!r}")

    def unlearn(self, sc: Scenario, seed: int, methods: tuple[str, ...] = METHODS,
                warm: Any = None, check_bytes: bool = False) -> dict:
        """Train the original of one seed and run every method.

        Returns
        -------
        dict
            ``models`` (method -> TorchClassifier or SISAClassifier), ``times``
            (unlearning wall time, s), ``extra`` (``original_fit_s``, SISA's receipt and,
            when ``check_bytes``, its byte identity).
        """
        w, u, d = seed_rows(sc, self.subsample, seed)
        X, y = sc.X, sc.y
        models, times, extra = {}, {}, {}
        if {"original", "finetune", "neggrad", "scrub"} & set(methods):
            t0 = time.perf_counter()
            orig = self.network(seed).fit(X[d], y[d])
            extra["original_fit_s"] = time.perf_counter() - t0
            budget = {"epochs": self.unlearn_epochs, "lr": self.unlearn_lr,
                      "momentum": self.momentum, "batch": self.batch, "seed": seed}
            runs = {"original": lambda: orig,
                    "finetune": lambda: descend(orig, X[w], y[w], **budget),
                    "neggrad": lambda: descend(orig, X[w], y[w], (X[u], y[u]),
                                               alpha=self.alpha, **budget),
                    "scrub": lambda: scrub_network(orig, X[w], y[w], X[u],
                                                   **self.method_params(sc.name, "scrub", seed))}
            for m in ("finetune", "neggrad"):
                if (self.params or {}).get(sc.name, {}).get(m):  # the tuning's choice
                    p = self.method_params(sc.name, m, seed)
                    runs[m] = (lambda p=p: descend(orig, X[w], y[w], **p)) if m == "finetune" \
                        else (lambda p=p: descend(orig, X[w], y[w], (X[u], y[u]), **p))
            for m in (m for m in methods if m in runs):
                t0 = time.perf_counter()
                models[m] = runs[m]()
                times[m] = time.perf_counter() - t0
        if "retrain" in methods:
            t0 = time.perf_counter()
            models["retrain"] = self.reference("monolithic", sc, seed)
            times["retrain"] = time.perf_counter() - t0
        if "sisa" in methods:
            models["sisa"], times["sisa"], ex = self.sisa.unlearn(
                X, y, d, u, seed, w if check_bytes else None)
            extra.update(ex)
        return {"models": models, "times": times, "extra": extra}

    @staticmethod
    def statistic(model: Any, X: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The true class's margin, ``log p_y - max_{k != y} log p_k`` (SISA: of the soft
        vote); ``±(z_1 - z_0)`` for two classes (:func:`sisa.compare.images.margin`)."""
        return margin(model, X, y)

    @staticmethod
    def injected_weight(model: Any, col: int) -> None:
        """None: a network has no one weight on a feature (an input that is always 0 in
        W keeps its initial first-layer weights under exact deletion, not 0)."""
        return None
