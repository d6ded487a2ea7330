"""Checks of a loaded checkpoint's object graph, after unpickling and before any use.

The restricted unpickler (:mod:`sisa.engine.safe_pickle`) decides which globals a pickle
may name; two dangers remain in the *values* built from allowed globals:

* Cython code trusts a tree's state: a forged child or feature index would read outside
  its arrays at ``predict`` (a crash, or worse). Decision trees, histogram-boosting
  predictors and k-NN ball/KD trees are bounds-checked.
* A ``FunctionTransformer`` calls its ``func`` at ``transform`` with arguments (``kw_args``)
  from the file: its functions must be on the allow-list of functions (numpy ufuncs,
  :func:`sisa.engine.safe_pickle.allowed_functions`, a partial of those, or a trusted
  module's), not any callable object the allowed classes can build.

The walk reaches every attribute, container and object-dtype array element.
"""

from __future__ import annotations

from collections.abc import Callable

from ..errors import UntrustedCodeError


def _children_ok(left, right, n: int, leaf) -> bool:
    import numpy as np

    idx = np.arange(len(left))
    inner = ~leaf
    # sklearn appends children after their parent, so child > parent: no cycles either
    return bool((left[inner] > idx[inner]).all() and (right[inner] > idx[inner]).all()
                and (left[inner] < n).all() and (right[inner] < n).all())


def _binary_tree_ok(state: tuple) -> bool:
    """A k-NN tree's ``__getstate__``: every index stays inside the arrays it indexes."""
    import numpy as np

    data, idx, nodes, bounds, n_nodes, metric = (state[0], state[1], state[2], state[3],
                                                 state[6], state[11])
    if data.ndim != 2 or idx.ndim != 1 or len(idx) != len(data) or len(nodes) != n_nodes:
        return False
    n, d = data.shape
    i = np.arange(n_nodes)
    inner = nodes["is_leaf"] == 0
    vec, mat = metric.__getstate__()[1:3]
    return bool(np.array_equal(np.sort(idx), np.arange(n))  # a permutation of the rows
                and (nodes["idx_start"] >= 0).all() and (nodes["idx_end"] <= n).all()
                and (nodes["idx_start"] <= nodes["idx_end"]).all()
                and (2 * i[inner] + 2 < n_nodes).all()  # children of node i: 2i+1, 2i+2
                and bounds.ndim == 3 and bounds.shape[1:] == (n_nodes, d)
                and len(vec) in (1, d) and mat.shape in ((1, 1), (d, d)))


def _tree_ok(o, n_features: int | None) -> bool:
    st = o.__getstate__()
    nodes, n = st["nodes"], int(st["node_count"])
    leaf = nodes["left_child"] == -1
    feat = nodes["feature"][~leaf]
    return not (n < 1 or len(nodes) != n or not (leaf == (nodes["right_child"] == -1)).all()
                or not _children_ok(nodes["left_child"], nodes["right_child"], n, leaf)
                or (feat < 0).any() or (feat >= o.n_features).any()
                or (n_features is not None and o.n_features != n_features))


def _predictor_ok(o, n_features: int | None) -> bool:
    import numpy as np

    nodes = o.nodes
    leaf = nodes["is_leaf"].astype(bool)
    inner = nodes[~leaf]
    cat = inner[inner["is_categorical"].astype(bool)]
    return not (len(nodes) < 1
                or not _children_ok(nodes["left"].astype(np.int64),
                                    nodes["right"].astype(np.int64), len(nodes), leaf)
                or (n_features is not None and (inner["feature_idx"] >= n_features).any())
                or (inner["feature_idx"] < 0).any()
                or (cat["bitset_idx"] >= min(len(o.raw_left_cat_bitsets),
                                             len(o.binned_left_cat_bitsets))).any()
                # predict reads bitset[i, value // 32] for a uint8 value: 8 words a row
                or any(b.ndim != 2 or b.shape[1] != 8
                       for b in (o.raw_left_cat_bitsets, o.binned_left_cat_bitsets)))


def _check_bin_mapper(o, n_features: int | None, source: str) -> None:
    """A histogram-boosting bin mapper: predict maps each feature index through an array
    of ``is_categorical_``'s length, so it must have one entry per feature."""
    import numpy as np
    from sklearn.ensemble._hist_gradient_boosting.binning import _BinMapper

    if not isinstance(o, _BinMapper):
        return
    cat = getattr(o, "is_categorical_", None)
    if not (cat is None or (isinstance(cat, np.ndarray) and cat.ndim == 1
                            and (n_features is None or cat.size == n_features))):
        raise UntrustedCodeError(f"{source} holds a histogram-boosting bin mapper whose "
                                 "categorical flags do not match its feature count: the file "
                                 "was forged; restore the store from backup")


def _native_checks():
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.neighbors import BallTree, KDTree
    from sklearn.tree._tree import Tree

    return ((Tree, _tree_ok, "decision tree"),
            (TreePredictor, _predictor_ok, "histogram-boosting tree"),
            ((KDTree, BallTree), lambda o, _: _binary_tree_ok(o.__getstate__()),
             "k-NN ball/KD tree"))


def _name(fn) -> str:
    module = getattr(fn, "__module__", None) or type(fn).__module__
    return f"{module}.{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def check_loaded(obj, source: str, safe_function: Callable[[object], bool]) -> None:
    """Refuse a loaded object graph holding a forged native tree or an unsafe function.

    Parameters
    ----------
    obj : object
        What the restricted unpickler built.
    source : str
        What it was loaded from, for the error message.
    safe_function : callable
        Whether a ``FunctionTransformer``'s or a partial's function is allowed.

    Raises
    ------
    UntrustedCodeError
        A tree points outside its arrays, or a function is not allowed.
    """
    import functools

    import numpy as np
    from sklearn.preprocessing import FunctionTransformer

    native = _native_checks()
    seen, stack = set(), [(obj, None)]  # ids walked; (object, its model's n_features)
    while stack:
        o, n_features = stack.pop()
        if id(o) in seen or isinstance(o, (np.generic, str, bytes, int, float)):
            continue
        seen.add(id(o))
        if isinstance(o, np.ndarray):  # an object array can hold any object: walk it
            if o.dtype.hasobject:
                stack.extend((v, n_features) for v in o.ravel(order="K").tolist())
            continue
        _check_bin_mapper(o, n_features, source)
        for cls, ok, what in native:
            if isinstance(o, cls):
                if not ok(o, n_features):
                    raise UntrustedCodeError(
                        f"{source} holds a {what} whose nodes point outside its arrays: the "
                        "file was forged; restore the store from backup")
                break
        else:
            functions = {}
            if isinstance(o, FunctionTransformer):
                functions = {a: getattr(o, a, None) for a in ("func", "inverse_func")}
                if not isinstance(getattr(o, "feature_names_out", None), (str, type(None))):
                    functions["feature_names_out"] = o.feature_names_out
            elif isinstance(o, functools.partial):
                functions = {"func": o.func}
                stack.extend((v, n_features) for v in (*o.args, *o.keywords.values()))
            for attr, fn in functions.items():
                if fn is not None and not safe_function(fn):
                    raise UntrustedCodeError(
                        f"{source} holds a {type(o).__name__} whose {attr} is {_name(fn)}, "
                        "which is not on sisa's allow-list of functions; sisa never calls it")
            if isinstance(o, dict):
                stack.extend((v, n_features) for v in o.values())
            elif isinstance(o, (list, tuple, set, frozenset)):
                stack.extend((v, n_features) for v in o)
            elif hasattr(o, "__dict__"):
                nf = getattr(o, "n_features_in_", n_features)
                stack.extend((v, nf if isinstance(nf, int) else None) for v in vars(o).values())
