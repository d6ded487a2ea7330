"""PyTorch networks as SISA shard models (``pip install 'sisa[torch]'``).

:class:`TorchClassifier` is a scikit-learn classifier around a PyTorch network that sisa
shards, slices, checkpoints, forgets and verifies like any other estimator: the network
is a declarative list of layers (or a named factory function), training is deterministic
on the CPU, and its pickled state holds only numpy arrays and plain Python, so stores
load through sisa's restricted unpickler without any torch object on its allow-list.
Importing this package does not import torch; fitting does.
"""

from .estimator import TorchClassifier
from .layers import MLP_LAYERS, SMALL_CNN_LAYERS, build_network

__all__ = ["MLP_LAYERS", "SMALL_CNN_LAYERS", "TorchClassifier", "build_network"]
