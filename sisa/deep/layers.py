"""Networks described as data: a list of layer specs, built into ``torch.nn.Sequential``.

A layer spec is a name (``"relu"``) or a dict ``{"layer": "conv2d", "out_channels": 16,
"kernel_size": 3}``. Input sizes are never written: each layer's input size is read off
the shape the layers before it produce, and a last ``{"layer": "linear"}`` without
``out_features`` gets one output per class. So the list is plain JSON, it goes into the
store's declarative estimator spec as it is, and rebuilding it runs no code from the store.
"""

from __future__ import annotations

from typing import Any

from ..errors import InputError

#: The default network: one hidden layer of 100 units.
MLP_LAYERS: list = [{"layer": "linear", "out_features": 100}, "relu", {"layer": "linear"}]

#: A small CNN for grey square images (Fashion-MNIST's 28x28): two strided convolutions
#: (28 -> 14 -> 7 pixels; strides instead of pooling: 3-8x faster on one CPU thread at the
#: same accuracy in our runs), one hidden layer.
SMALL_CNN_LAYERS: list = [
    {"layer": "conv2d", "out_channels": 8, "kernel_size": 5, "stride": 2, "padding": 2}, "relu",
    {"layer": "conv2d", "out_channels": 16, "kernel_size": 3, "stride": 2, "padding": 1}, "relu",
    "flatten", {"layer": "linear", "out_features": 64}, "relu", {"layer": "linear"},
]

# name -> (torch.nn class name, the keyword its input size goes to, or None)
_LAYERS: dict[str, tuple[str, str | None]] = {
    "linear": ("Linear", "in_features"),
    "conv1d": ("Conv1d", "in_channels"),
    "conv2d": ("Conv2d", "in_channels"),
    "batchnorm1d": ("BatchNorm1d", "num_features"),
    "batchnorm2d": ("BatchNorm2d", "num_features"),
    "layernorm": ("LayerNorm", None),
    "maxpool1d": ("MaxPool1d", None),
    "maxpool2d": ("MaxPool2d", None),
    "avgpool2d": ("AvgPool2d", None),
    "adaptiveavgpool2d": ("AdaptiveAvgPool2d", None),
    "dropout": ("Dropout", None),
    "flatten": ("Flatten", None),
    "relu": ("ReLU", None),
    "leakyrelu": ("LeakyReLU", None),
    "gelu": ("GELU", None),
    "tanh": ("Tanh", None),
    "sigmoid": ("Sigmoid", None),
}
CONV_LAYERS = ("conv1d", "conv2d", "maxpool1d", "maxpool2d", "avgpool2d",
               "adaptiveavgpool2d", "batchnorm2d")


def layer_names(layers) -> list[str]:
    """The lower-case layer names of a spec list (for checks before torch is imported)."""
    return [_parse(spec, i)[0] for i, spec in enumerate(layers)]


def _parse(spec, i: int) -> tuple[str, dict[str, Any]]:
    if isinstance(spec, str):
        name, kw = spec, {}
    elif isinstance(spec, dict) and isinstance(spec.get("layer"), str):
        kw = {k: v for k, v in spec.items() if k != "layer"}
        name = spec["layer"]
    else:
        raise InputError(f"layers[{i}] = {spec!r} is not a layer spec: use a name like "
                         "'relu' or a dict like {'layer': 'linear', 'out_features': 64}")
    name = name.lower()
    if name not in _LAYERS:
        raise InputError(f"layers[{i}]: unknown layer {name!r}; choose one of "
                         f"{', '.join(_LAYERS)} (or pass module= a factory function)")
    size_kw = _LAYERS[name][1]
    if size_kw is not None and size_kw in kw:
        raise InputError(f"layers[{i}] ({name}) sets {size_kw}, which sisa infers from the "
                         "layer before it: remove it")
    return name, kw


def build_network(layers, input_shape: tuple[int, ...], n_outputs: int):
    """``torch.nn.Sequential`` of ``layers`` for inputs of ``input_shape`` (no batch axis).

    Layers are created in order, so their weights are initialised from torch's global
    random generator in a fixed order; the caller seeds it. The output must be a vector
    of ``n_outputs`` values.

    Raises
    ------
    InputError
        An unknown layer, a size sisa infers given explicitly, layers that do not fit the
        input shape, or an output of the wrong size.
    """
    import torch
    from torch import nn

    shape = tuple(int(d) for d in input_shape)
    built = []
    for i, spec in enumerate(layers):
        name, kw = _parse(spec, i)
        cls_name, size_kw = _LAYERS[name]
        last = i == len(layers) - 1
        if name == "linear" and "out_features" not in kw:
            if not last:
                raise InputError(f"layers[{i}] (linear) needs out_features; only the last "
                                 "linear layer may leave it out (it gets one output per class)")
            kw["out_features"] = n_outputs
        if size_kw is not None:  # linear reads the last axis; conv/batch-norm channels first
            kw[size_kw] = shape[-1] if name == "linear" else shape[0]
        if name == "layernorm":
            kw.setdefault("normalized_shape", shape[-1])
        try:
            layer = getattr(nn, cls_name)(**kw)
            with torch.no_grad():
                # eval(): a probe must neither draw dropout noise nor move batch-norm stats;
                # two rows: batch norm without running statistics normalises over the batch
                shape = tuple(layer.eval()(torch.zeros((2, *shape))).shape[1:])
        except (TypeError, ValueError, RuntimeError) as exc:
            msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise InputError(f"layers[{i}] ({name} {kw}) does not fit an input of shape "
                             f"{shape}: {msg}; fix the layer list or input_shape") from None
        built.append(layer)
    if shape != (n_outputs,):
        raise InputError(f"the network outputs shape {shape}, but the model needs "
                         f"({n_outputs},): end with 'flatten' if needed and a final "
                         "{'layer': 'linear'}")
    return nn.Sequential(*built).train()
