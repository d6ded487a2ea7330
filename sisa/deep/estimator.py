"""``TorchClassifier``: a PyTorch network as a scikit-learn classifier that sisa can forget.

Why not skorch: sisa needs a checkpoint whose bytes depend only on the model's values,
that loads without running code from the store. A pickled skorch net holds torch
objects (its module, optimizer and criterion, serialised through ``torch.save``), which
the restricted unpickler would have to allow-list, with ``torch.load`` behind them; its
``history_`` records each epoch's wall-clock duration, so two identical fits pickle to
different bytes; its parameters are classes and callables (``module``, ``optimizer``,
``criterion``, callbacks) that a declarative spec cannot always name; and its data
loader shuffles with torch's global generator, not with a seed sisa hands it. So this
estimator is written here, small, with those four properties by construction
(docs/design.md §3).
"""

from __future__ import annotations

import contextlib
import math
import os
from numbers import Integral, Real
from typing import Any, ClassVar

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from ..errors import InputError
from .batching import batch_bounds, lone_row_norms, running_stats
from .layers import CONV_LAYERS, MLP_LAYERS, build_network, layer_names

OPTIMIZERS = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "rmsprop": "RMSprop"}
_PREDICT_BATCH = 4096  # rows per forward pass at predict time: bounds memory only


def _torch():
    """Import torch, or say how to install it (one line)."""
    try:
        import torch
    except ImportError:
        raise InputError("TorchClassifier needs PyTorch: pip install 'sisa[torch]'") from None
    return torch


def _to_plain(value):
    """Tensors to numpy arrays, recursively; dicts in sorted key order (canonical bytes)."""
    torch = _torch()
    if isinstance(value, torch.Tensor):
        return np.array(value.detach().cpu().numpy(), copy=True, order="C")
    if isinstance(value, dict):
        return {k: _to_plain(value[k]) for k in sorted(value, key=repr)}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_plain(v) for v in value)
    return value


def _to_torch(value, device):
    torch = _torch()
    if isinstance(value, np.ndarray):
        return torch.from_numpy(np.array(value, copy=True)).to(device)
    if isinstance(value, dict):
        return {k: _to_torch(v, device) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_to_torch(v, device) for v in value)
    return value


def _seed(random_state: int, n_iter: int) -> int:
    """The seed of epoch ``n_iter``: from ``random_state`` and the epoch count alone, so a
    model resumed from a checkpoint draws exactly what the uninterrupted one would."""
    ss = np.random.SeedSequence([int(random_state), int(n_iter)])
    return int(ss.generate_state(1, dtype=np.uint64)[0]) & (2**63 - 1)


@contextlib.contextmanager
def deterministic(torch, device: str):
    """One intra-op thread, deterministic kernels and a private copy of torch's global
    generator (so dropout draws from our seed and the caller's generator is untouched);
    all restored on exit. One thread because a different thread count can change the
    order of float sums, hence the bytes (the engine holds BLAS to one thread for the
    same reason). Public so that code training a ``module_`` by hand (sisa.compare's
    fine-tune and NegGrad+) runs under the same rules."""
    threads = torch.get_num_threads()
    det, warn_only = (torch.are_deterministic_algorithms_enabled(),
                      torch.is_deterministic_algorithms_warn_only_enabled())
    cuda = device.startswith("cuda")
    if cuda:  # cuBLAS is deterministic only with a fixed workspace (set before it starts)
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    try:
        with torch.random.fork_rng(devices=None if cuda else []):
            if cuda:
                with torch.backends.cudnn.flags(enabled=True, benchmark=False,
                                                deterministic=True):
                    yield
            else:
                yield
    finally:
        torch.use_deterministic_algorithms(det, warn_only=warn_only)
        torch.set_num_threads(threads)


class TorchClassifier(ClassifierMixin, BaseEstimator):
    """A PyTorch network as a scikit-learn classifier, deterministic and checkpointable.

    ``partial_fit`` trains one epoch (one pass over the rows it is given, in a seeded
    order, in mini-batches); ``fit`` trains ``max_epochs`` epochs from scratch. On the
    CPU, training is bit-for-bit reproducible: one intra-op thread, deterministic
    kernels, and every random draw (weight initialisation, data order, dropout) comes
    from a generator seeded by ``random_state`` and the epoch count. sisa's engine sets
    ``random_state`` per (shard, slice, pass), so a shard retrained after a forget is
    byte-identical to a fresh fit without the rows.

    The pickled state holds no torch object: weights, optimizer state and the random
    generator's state are numpy arrays and plain Python (dict keys sorted), so the same
    values give the same bytes and sisa's restricted unpickler loads a checkpoint
    without allow-listing torch.

    Parameters
    ----------
    layers : list, default=None
        The network as layer specs: names (``"relu"``, ``"flatten"``) or dicts like
        ``{"layer": "conv2d", "out_channels": 16, "kernel_size": 3}``. Input sizes are
        inferred; a last ``{"layer": "linear"}`` gets one output per class. Layers:
        linear, conv1d, conv2d, batchnorm1d, batchnorm2d, layernorm, maxpool1d,
        maxpool2d, avgpool2d, adaptiveavgpool2d, dropout, flatten, relu, leakyrelu,
        gelu, tanh, sigmoid (keywords as in ``torch.nn``). Default (and with
        ``module=None``): ``[linear 100, relu, linear]``.
    module : callable, default=None
        Instead of ``layers``: a named function or ``torch.nn.Module`` class called as
        ``module(input_shape, n_classes, **module_params)`` that returns the network.
        It must live in an importable module (not a lambda or closure), recorded in the
        store by name; loading the store in another process needs that module in
        ``SISA_TRUSTED_MODULES``.
    module_params : dict, default=None
        Keyword arguments of ``module``.
    input_shape : tuple of int, default=None
        Shape of one row as the network sees it, e.g. ``(1, 28, 28)``; the flat features
        are reshaped to it. Default: ``(n_features,)``, or ``(1, s, s)`` when the layers
        contain convolutions or pooling and ``n_features == s*s``.
    optimizer : {"adam", "adamw", "sgd", "rmsprop"}, default="adam"
    lr : float, default=1e-3
        Learning rate.
    optimizer_params : dict, default=None
        Other keyword arguments of the ``torch.optim`` class (``momentum``,
        ``weight_decay``...).
    batch_size : int, default=64
    max_epochs : int, default=10
        Epochs of ``fit`` (``partial_fit`` always trains one).
    random_state : int, default=None
        Seeds initialisation, data order and dropout. ``None``: fresh entropy on the
        first call, then the generator state carried in the model.
    device : str, default="cpu"
        ``"cpu"`` or ``"cuda[:i]"``. Byte-identity is guaranteed on the CPU; on a GPU
        deterministic kernels are forced, which reproduces bytes only on the same GPU
        model, driver and torch version (see docs/design.md).

    Attributes
    ----------
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    input_shape_ : tuple of int
    module_ : torch.nn.Module
        The trained network (rebuilt from numpy arrays after unpickling).
    optimizer_ : torch.optim.Optimizer
    n_iter_ : int
        Epochs trained so far.
    t_ : int
        Optimizer steps taken so far.
    loss_curve_ : list of float
        Mean training loss of each epoch.
    rng_state_ : ndarray of uint8
        torch's generator state after the last epoch.

    Examples
    --------
    >>> import numpy as np
    >>> from sisa.deep import TorchClassifier
    >>> rng = np.random.default_rng(0)
    >>> X = rng.normal(size=(200, 4)).astype("float32"); y = (X[:, 0] > 0).astype(int)
    >>> clf = TorchClassifier(max_epochs=20, lr=1e-2, random_state=0).fit(X, y)
    >>> clf.score(X, y) > 0.9
    True
    """

    _parameter_constraints: ClassVar[dict] = {
        "layers": [list, None],
        "module": [callable, None],
        "module_params": [dict, None],
        "input_shape": [tuple, list, None],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "lr": [Interval(Real, 0, None, closed="neither")],
        "optimizer_params": [dict, None],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "max_epochs": [Interval(Integral, 1, None, closed="left")],
        "random_state": [Interval(Integral, 0, None, closed="left"), None],
        "device": [str],
    }

    def __init__(self, layers=None, *, module=None, module_params=None, input_shape=None,
                 optimizer="adam", lr=1e-3, optimizer_params=None, batch_size=64,
                 max_epochs=10, random_state=None, device="cpu"):
        self.layers = layers
        self.module = module
        self.module_params = module_params
        self.input_shape = input_shape
        self.optimizer = optimizer
        self.lr = lr
        self.optimizer_params = optimizer_params
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.random_state = random_state
        self.device = device

    # ------------------------------------------------------------------ fitting
    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X, y):
        """Train ``max_epochs`` epochs from a fresh initialisation.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)

        Returns
        -------
        self : object
        """
        for attr in [a for a in vars(self) if a.endswith("_") and not a.startswith("__")]:
            delattr(self, attr)
        X, y = validate_data(self, X, y, dtype=np.float32)
        check_classification_targets(y)
        classes = np.unique(y)
        for _ in range(self.max_epochs):
            self._epoch(X, y, classes)
        return self

    @_fit_context(prefer_skip_nested_validation=True)
    def partial_fit(self, X, y, classes=None):
        """Train one epoch over ``X, y``, continuing from the current state.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
        y : array-like of shape (n_samples,)
        classes : array-like of shape (n_classes,), default=None
            Every class of the whole training run; required on the first call.

        Returns
        -------
        self : object
        """
        first = not hasattr(self, "classes_")
        X, y = validate_data(self, X, y, dtype=np.float32, reset=first)
        check_classification_targets(y)
        if first and classes is None:
            raise ValueError("classes must be passed on the first call to partial_fit: "
                             "pass every class of the training run, e.g. np.unique(y_all)")
        if not first and classes is not None and not np.array_equal(
                np.unique(classes), self.classes_):
            raise ValueError(f"classes={list(np.unique(classes))} differ from the first "
                             f"call's {list(self.classes_)}: pass the same classes every time")
        self._epoch(X, y, None if classes is None else np.unique(classes))
        return self

    def _input_shape(self, n_features: int) -> tuple[int, ...]:
        if self.input_shape is not None:
            shape = tuple(int(d) for d in self.input_shape)
            if math.prod(shape) != n_features:
                raise ValueError(f"input_shape={shape} holds {math.prod(shape)} values but X "
                                 f"has {n_features} features: pass a shape whose product "
                                 f"is {n_features}")
            return shape
        layers = MLP_LAYERS if self.layers is None else self.layers
        if self.module is None and set(layer_names(layers)) & set(CONV_LAYERS):
            side = math.isqrt(n_features)
            if side * side != n_features:
                raise ValueError(f"the layers expect images but {n_features} features are not "
                                 "a square: pass input_shape=(channels, height, width)")
            return (1, side, side)
        return (n_features,)

    def _build(self, torch, n_classes: int):
        """The network and optimizer, from the parameters alone."""
        shape = self.input_shape_
        if self.module is not None:
            if self.layers is not None:
                raise ValueError("pass either layers or module, not both")
            net = self.module(shape, n_classes, **(self.module_params or {}))
            if not isinstance(net, torch.nn.Module):
                raise TypeError(f"module {getattr(self.module, '__name__', self.module)!r} "
                                f"returned a {type(net).__name__}, not a torch.nn.Module")
        else:
            net = build_network(MLP_LAYERS if self.layers is None else self.layers, shape,
                                n_classes)
        net = net.to(self.device)
        opt_cls = getattr(torch.optim, OPTIMIZERS[self.optimizer])
        try:
            opt = opt_cls(net.parameters(), lr=self.lr, **(self.optimizer_params or {}))
        except TypeError as exc:
            raise ValueError(f"optimizer_params={self.optimizer_params!r} do not fit "
                             f"torch.optim.{opt_cls.__name__} ({exc}): check the names") from None
        return net, opt

    def _epoch(self, X: np.ndarray, y: np.ndarray, classes: np.ndarray | None) -> None:
        """One seeded pass over (X, y) in mini-batches."""
        torch = _torch()
        first = not hasattr(self, "module_")
        if first:
            self.classes_ = classes
            self.input_shape_ = self._input_shape(X.shape[1])
            self.n_iter_, self.t_, self.loss_curve_ = 0, 0, []
        unknown = np.setdiff1d(y, self.classes_)
        if len(unknown):
            raise ValueError(f"y holds classes {list(unknown[:5])} not in classes="
                             f"{list(self.classes_)}: pass every class on the first call")
        target = torch.from_numpy(np.searchsorted(self.classes_, y).astype(np.int64))
        data = torch.from_numpy(np.array(X, dtype=np.float32, order="C", copy=True))
        data = data.reshape((len(X), *self.input_shape_))
        with deterministic(torch, self.device):
            if self.random_state is not None:
                torch.manual_seed(_seed(self.random_state, self.n_iter_))
            elif not first:
                torch.set_rng_state(torch.from_numpy(self.rng_state_.copy()))
            else:
                torch.manual_seed(int(np.random.SeedSequence().generate_state(1)[0]))
            if first:
                self.module_, self.optimizer_ = self._build(torch, len(self.classes_))
            net, opt = self.module_.train(), self.optimizer_
            order = torch.randperm(len(y))
            lone = lone_row_norms(torch, net, data[:1].to(self.device))
            if lone and self.batch_size == 1:
                raise ValueError("batch_size=1 cannot train batch-norm layers (one value per "
                                 "channel per batch): use batch_size >= 2 or drop the "
                                 "batch-norm layers")
            total = 0.0
            for start, stop in batch_bounds(len(y), self.batch_size, fold=bool(lone)):
                idx = order[start:stop]
                if len(idx) == 1 and any(m.running_mean is None for m in lone):
                    continue  # see running_stats
                xb, yb = data[idx].to(self.device), target[idx].to(self.device)
                opt.zero_grad(set_to_none=True)
                with running_stats(lone if len(idx) == 1 else []):
                    loss = torch.nn.functional.cross_entropy(net(xb), yb)
                loss.backward()
                opt.step()
                self.t_ += 1
                total += float(loss.detach()) * len(idx)
            opt.zero_grad(set_to_none=True)  # gradients are not state: never checkpointed
            self.rng_state_ = torch.get_rng_state().numpy().copy()
        self.n_iter_ += 1
        self.loss_curve_.append(total / max(len(y), 1))

    # ------------------------------------------------------------------ predicting
    def decision_function(self, X) -> np.ndarray:
        """The network's outputs (logits); for two classes, logit 1 minus logit 0."""
        out = self._forward(X)
        return out[:, 1] - out[:, 0] if out.shape[1] == 2 else out

    def predict_proba(self, X) -> np.ndarray:
        """Softmax of the logits, shape (n_samples, n_classes)."""
        out = self._forward(X)
        out -= out.max(axis=1, keepdims=True)
        np.exp(out, out=out)
        return out / out.sum(axis=1, keepdims=True)

    def predict(self, X) -> np.ndarray:
        """The class with the largest logit."""
        out = self._forward(X)  # checks fitted before classes_ is read
        return self.classes_[out.argmax(axis=1)]

    def _forward(self, X) -> np.ndarray:
        check_is_fitted(self, "module_")
        X = validate_data(self, X, dtype=np.float32, reset=False)
        torch = _torch()
        net = self.module_.eval()
        outs = []
        with torch.no_grad():
            for start in range(0, len(X), _PREDICT_BATCH):
                xb = torch.from_numpy(np.array(X[start:start + _PREDICT_BATCH], copy=True))
                xb = xb.reshape((len(xb), *self.input_shape_)).to(self.device)
                outs.append(net(xb).cpu().numpy())
        return np.concatenate(outs).astype(np.float64) if outs else np.zeros(
            (0, len(self.classes_)))

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        """Plain state: the network's and optimizer's tensors as numpy arrays, keys sorted.

        No torch object reaches the pickle, so equal values give equal bytes
        (``sisa.engine.checkpoints.dumps``) and the restricted unpickler needs no torch.
        """
        state = dict(super().__getstate__())  # a copy: never pop from the live __dict__
        net, opt = state.pop("module_", None), state.pop("optimizer_", None)
        if net is not None:
            state["module_state_"] = [(k, _to_plain(v)) for k, v in net.state_dict().items()]
            state["optimizer_state_"] = _to_plain(opt.state_dict())
        return {k: state[k] for k in sorted(state)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        weights, opt_state = state.pop("module_state_", None), state.pop("optimizer_state_",
                                                                        None)
        self.__dict__.update(state)
        if weights is None:
            return
        torch = _torch()
        with torch.random.fork_rng(devices=[]):  # building draws init weights: discard them
            net, opt = self._build(torch, len(self.classes_))
        net.load_state_dict({k: _to_torch(v, self.device) for k, v in weights}, strict=True)
        opt.load_state_dict(_to_torch(opt_state, self.device))
        self.module_, self.optimizer_ = net, opt

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.random_state is None
        return tags
