"""Stacked ``sisa.deep.TorchClassifier`` networks: a ``Sequential`` of linear layers and
elementwise activations, every shard's weights stacked, one batched product per layer."""

from __future__ import annotations

import numpy as np

from ..deep.estimator import TorchClassifier

# elementwise in eval mode (dropout is the identity there); Flatten of a flat row is too
# up to this many rows one batched product a layer (its fixed cost is paid once, not S
# times); above it torch's CPU bmm is slower than S plain products (benchmarks.md)
_BATCHED_ROWS = 64
_ELEMENTWISE = ("ReLU", "LeakyReLU", "GELU", "Tanh", "Sigmoid", "Dropout", "Identity",
                "Flatten")


class TorchNet:
    """The shard networks' forward pass for a group of same-shaped networks."""

    regressor = False

    def __init__(self, models: list):
        import torch

        self.torch, self.ops, self.G = torch, [], len(models)
        self.layers = []  # per shard: its linear layers' (weight, bias), for many rows
        for i, layer in enumerate(models[0].module_):
            if type(layer).__name__ != "Linear":
                if type(layer).__name__ not in ("Dropout", "Identity", "Flatten"):
                    self.ops.append(("act", layer))
                continue
            # (G, in, out) with the layout of F.linear's weight.T
            W = torch.stack([m.module_[i].weight.detach() for m in models]).transpose(1, 2)
            b = torch.stack([m.module_[i].bias.detach() for m in models])[:, None, :]
            self.ops.append(("linear", W, b))
            self.layers.append([(m.module_[i].weight.detach(), m.module_[i].bias.detach())
                                for m in models])
        self.width = max(op[1].shape[2] for op in self.ops if op[0] == "linear")

    @staticmethod
    def key(m) -> tuple | None:
        if type(m) is not TorchClassifier or len(m.input_shape_) != 1 or m.device != "cpu":
            return None
        net = m.module_
        if type(net).__name__ != "Sequential" or not all(
                type(layer).__name__ in (*_ELEMENTWISE, "Linear") for layer in net):
            return None
        if any(type(layer).__name__ == "Linear" and layer.bias is None for layer in net):
            return None
        if type(net[0]).__name__ != "Linear":
            return None
        return (TorchClassifier, tuple(repr(layer) for layer in net),
                tuple(np.asarray(m.classes_).tolist()))

    def raw(self, X: np.ndarray) -> np.ndarray:
        torch = self.torch
        x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))  # validate_data's dtype
        with torch.no_grad():
            if X.shape[-2] > _BATCHED_ROWS:
                return self._per_shard(x).numpy().astype(np.float64)
            for op in self.ops:
                if op[0] == "act":
                    x = op[1](x)
                    continue
                if x.ndim == 2:  # every shard reads the same rows
                    x = x.expand(self.G, *x.shape)
                x = torch.baddbmm(op[2], x, op[1])
        return x.numpy().astype(np.float64)  # the loop's logits: float32 made float64

    def _per_shard(self, x):
        """Each shard's network on its rows, ``F.linear`` as in its forward pass: torch's
        CPU batched product was 3-4x slower than this at 1,000 rows (benchmarks.md)."""
        linear, outs = self.torch.nn.functional.linear, []
        for g in range(self.G):
            h, j = (x if x.ndim == 2 else x[g]), 0
            for op in self.ops:
                if op[0] == "act":
                    h = op[1](h)
                else:
                    h = linear(h, *self.layers[j][g])
                    j += 1
            outs.append(h)
        return self.torch.stack(outs)

    def proba(self, out: np.ndarray) -> np.ndarray:
        # TorchClassifier.predict_proba, in float64
        out -= out.max(axis=-1, keepdims=True)
        np.exp(out, out=out)
        return out / out.sum(axis=-1, keepdims=True)

    def index(self, out: np.ndarray) -> np.ndarray:
        return out.argmax(axis=-1)
