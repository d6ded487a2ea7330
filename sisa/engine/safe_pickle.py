"""A restricted unpickler: loading a store never runs code from it.

Unpickling calls whatever global a pickle names, so the allow-list is of *objects*,
never of module prefixes: all of ``numpy`` would include ``numpy.load(...,
allow_pickle=True)`` (a nested, unrestricted unpickle), all of ``scipy``
``scipy.io.netcdf_file(path, "w")`` (writes files), all of ``sisa``
``sisa.cli.main`` (runs commands). A global is allowed when it is

* a class (``isinstance(obj, type)``) defined in a ``sklearn`` module, except the few
  whose instances reach files, sockets or processes (:data:`DENIED_SKLEARN_MODULES`);
* a scikit-learn estimator class (subclass of ``BaseEstimator``) defined in ``sisa``;
* Cython's ``__pyx_unpickle_<Class>`` helper of such a class (it only builds that class)
  and scikit-learn's ``newObj`` (``cls.__new__(cls)``) of its trees and metrics;
* one of the exact numpy / scipy.sparse / builtins objects that checkpoints need
  (:func:`allowed_objects`: array and scalar reconstructors, ``dtype``, ``ndarray``,
  random generators, sparse matrix classes, harmless builtins), a numpy scalar type,
  or a numpy / ``scipy.special`` ufunc (pure arithmetic);
* anything in a module the user trusts explicitly, with ``trusted=`` or the
  environment variable ``SISA_TRUSTED_MODULES=mod1,mod2`` (a name covers its
  submodules), e.g. the user's own estimator package.

Whatever the trust, :data:`NEVER_TRUSTED` modules (``os``, ``subprocess``,
``builtins``' ``eval``...) and ``numpy.memmap`` / ``numpy.load`` and friends are refused.
A refused global raises :class:`~sisa.errors.UntrustedCodeError` before anything
is called; modules are imported only once their name passed the check. After loading,
trees (decision, boosting, k-NN) are bounds-checked (:func:`check_native_state`):
Cython trusts their node arrays, so a forged index made only of allowed objects would
read out of bounds.
"""

from __future__ import annotations

import copyreg
import functools
import importlib
import io
import os
import pickle
from collections.abc import Iterable

from ..errors import CorruptStoreError, SisaError, UntrustedCodeError

TRUST_ENV = "SISA_TRUSTED_MODULES"

#: Never trusted, whatever the user says: each of these can run a command or call any
#: function (``operator.methodcaller``, ``functools.partial``...).
NEVER_TRUSTED = ("os", "posix", "nt", "subprocess", "sys", "builtins", "__builtin__",
                 "importlib", "runpy", "pickle", "_pickle", "marshal", "shutil", "socket",
                 "ctypes", "pty", "code", "codeop", "multiprocessing", "signal", "io", "_io",
                 "tempfile", "operator", "_operator", "functools", "types", "copyreg",
                 "copy_reg", "threading", "_thread", "webbrowser", "urllib", "http",
                 "asyncio", "platform", "inspect")

#: sklearn modules whose classes touch files, sockets or processes when built or called
#: (joblib-backed Parallel and its temp folders, callback listeners, test helpers,
#: vendored third-party code): never in a model.
DENIED_SKLEARN_MODULES = ("sklearn.callback", "sklearn.externals", "sklearn.utils.parallel",
                          "sklearn.utils._testing", "sklearn.utils._joblib",
                          "sklearn.utils._show_versions", "sklearn.datasets")


@functools.cache
def _denied_objects() -> tuple:
    """Refused even from a trusted module: reading, writing or mapping files, or a nested
    unrestricted unpickle (``numpy.load(allow_pickle=True)``)."""
    import numpy as np
    import scipy.io
    import scipy.io.wavfile

    return (np.memmap, np.load, np.save, np.savez, np.savez_compressed, np.fromfile,
            np.loadtxt, np.genfromtxt, np.savetxt, np.lib.format.open_memmap,
            np.ctypeslib.load_library, scipy.io.netcdf_file, scipy.io.loadmat,
            scipy.io.savemat, scipy.io.mmread, scipy.io.mmwrite, scipy.io.wavfile.read,
            scipy.io.wavfile.write, eval, exec, compile, open, __import__, getattr, setattr,
            delattr, globals, vars, input, breakpoint)


_SESSION: set[str] = set()  # modules of estimators this process was handed directly


def trust_for_session(modules: Iterable[str]) -> None:
    """Trust ``modules`` for the rest of this process.

    For the modules of estimator classes the caller passed in (``SISAClassifier(MyEst())``,
    ``--model-spec`` on one's own command line): their code already runs here, and the
    store trained with them must load again to train, forget and verify. Ray tasks get
    the same trust with their arguments. Never-trusted modules are ignored.
    """
    _SESSION.update(m for m in modules if m and not never_trusted(m))


def trusted_modules(trusted: Iterable[str] = ()) -> tuple[str, ...]:
    """The modules trusted for this call: ``trusted``, ``$SISA_TRUSTED_MODULES`` and
    those trusted for this process (:func:`trust_for_session`)."""
    env = os.environ.get(TRUST_ENV, "")
    names = [*trusted, *env.split(","), *_SESSION]
    return tuple(sorted({n.strip() for n in names if n and n.strip()}))


def _within(module: str, roots: Iterable[str]) -> bool:
    return any(module == r or module.startswith(r + ".") for r in roots)


def never_trusted(module: str) -> bool:
    """Whether ``module`` is one that no trust setting can allow (``os``, ``subprocess``...)."""
    return _within(module, NEVER_TRUSTED)


@functools.cache
def allowed_objects() -> dict[tuple[str, str], object]:
    """The exact non-scikit-learn globals a checkpoint may name, by (module, name).

    Found by pickling fitted and unfitted checkpoints of every preset and of the usual
    scikit-learn estimators (``tests/test_safe_loading.py`` re-derives it); the
    ``numpy.core`` names are numpy 1's spellings of the same objects.
    """
    import numpy as np
    import scipy.sparse as sp
    from numpy._core import multiarray, numeric
    from numpy.random import _pickle as rpickle
    from numpy.random import bit_generator as bg

    table: dict[tuple[str, str], object] = {}
    for mod in ("numpy._core.multiarray", "numpy.core.multiarray"):
        table[(mod, "_reconstruct")] = multiarray._reconstruct  # object arrays
        table[(mod, "scalar")] = multiarray.scalar  # numpy scalars
    for mod in ("numpy._core.numeric", "numpy.core.numeric"):
        table[(mod, "_frombuffer")] = numeric._frombuffer  # numeric arrays (protocol 5)
    table[("numpy", "dtype")] = np.dtype
    table[("numpy", "ndarray")] = np.ndarray
    for name in ("__randomstate_ctor", "__bit_generator_ctor", "__generator_ctor"):
        table[("numpy.random._pickle", name)] = getattr(rpickle, name)
    table[("numpy.random.bit_generator", "SeedSequence")] = bg.SeedSequence
    table[("numpy.random.bit_generator", "__pyx_unpickle_SeedSequence")] = (
        bg.__pyx_unpickle_SeedSequence)
    classes = [*rpickle.BitGenerators.values(), np.random.RandomState, np.random.Generator]
    classes += [getattr(sp, f"{k}_{kind}") for k in ("csr", "csc", "coo", "bsr", "dia", "dok",
                                                     "lil") for kind in ("matrix", "array")]
    for cls in classes:
        table[(cls.__module__, cls.__qualname__)] = cls
    table[("copyreg", "_reconstructor")] = copyreg._reconstructor  # protocol 0/1 objects
    # Plain values; set/frozenset/bytearray are opcodes in protocol 5 but globals before.
    for b in (object, set, frozenset, slice, complex, bytearray, range):
        table[("builtins", b.__name__)] = b
        table[("__builtin__", b.__name__)] = b  # protocol 0-2 spelling
    return table


def _refuse(module: str, name: str, source: str, why: str = "", never: bool = False,
            fix: str | None = None) -> UntrustedCodeError:
    if fix is None:
        fix = ("sisa never loads it" if never or _within(module, NEVER_TRUSTED) else
               f"if you trust this store and that module, add it with {TRUST_ENV}={module}")
    return UntrustedCodeError(f"{source} names {module}.{name}, which is not on sisa's "
                              f"allow-list{why}; {fix}")


def _walk(module: str, name: str):
    """``module.name`` through plain getattr (dots for nested classes), or None."""
    parts = name.split(".")
    # No dunder hops (__globals__, __builtins__, __class__...): a gadget, never a class.
    if not all(p.isidentifier() and not (p.startswith("__") and p.endswith("__"))
               for p in parts):
        return None
    try:
        obj = importlib.import_module(module)
        for part in parts:
            obj = getattr(obj, part)
    except (ImportError, AttributeError, ValueError, TypeError):  # TypeError: "..x"
        return None
    return obj


def _is_denied(obj) -> bool:
    import numpy as np

    try:
        return (any(obj is d for d in _denied_objects())
                or (isinstance(obj, type) and issubclass(obj, np.memmap)))
    except TypeError:
        return False


def _is_allowed_class(obj, module: str) -> bool:
    from sklearn.base import BaseEstimator

    if not isinstance(obj, type) or obj.__module__ != module:
        return False  # a re-export (e.g. joblib's Memory seen through sklearn) is not ours
    if _within(module, ("sklearn",)):
        import numpy as np

        return not _within(module, DENIED_SKLEARN_MODULES) and not issubclass(obj, np.memmap)
    return _within(module, ("sisa",)) and issubclass(obj, BaseEstimator)


def _sklearn_or_sisa(module: str) -> bool:
    parts = module.split(".")
    return (parts[0] in ("sklearn", "sisa") and "tests" not in parts
            and "conftest" not in parts and "__main__" not in parts)


def resolve(module: str, name: str, *, trusted: Iterable[str] = (), source: str = "the pickle",
            classes_only: bool = False):
    """The object ``module.name`` if the allow-list (or the user's trust) permits it.

    Parameters
    ----------
    module, name : str
        The global as a pickle (or an estimator spec) names it.
    trusted : iterable of str
        Extra modules the caller trusts, on top of ``$SISA_TRUSTED_MODULES``.
    source : str
        What names the global, for the error message.
    classes_only : bool
        Refuse functions (an estimator spec's ``"class"``).

    Raises
    ------
    UntrustedCodeError
        When the global is not allowed.
    """
    key = (module, name)
    if _within(module, NEVER_TRUSTED) and key not in allowed_objects():
        raise _refuse(module, name, source)
    if key in allowed_objects() and not (classes_only and not isinstance(
            allowed_objects()[key], type)):
        return allowed_objects()[key]
    if _within(module, trusted_modules(trusted)):
        obj = _walk(module, name)
        if obj is None:
            raise _refuse(module, name, source, "", fix=f"{module} is trusted but has no "
                          f"importable {name}: check the name and that the package is installed")
        if _is_denied(obj):
            raise _refuse(module, name, source, " (it reads or writes files)", never=True)
        if classes_only and not isinstance(obj, type):
            raise _refuse(module, name, source, "", fix="it is not a class; name an estimator "
                          "class")
        return obj
    if _within(module, ("numpy", "scipy")):
        obj = _walk(module, name)  # importing a numpy/scipy module has no side effects
        import numpy as np

        if _is_denied(obj):
            raise _refuse(module, name, source, " (it reads or writes files)", never=True)
        if module != "numpy" and not _within(module, ("scipy.special",)):
            obj = None  # ufuncs and scalar types: only numpy's own and scipy.special's
        if isinstance(obj, np.ufunc) and not classes_only:
            return obj  # arithmetic only
        if isinstance(obj, type) and issubclass(obj, np.generic):
            return obj  # np.float64 as a value (e.g. a dtype= parameter)
    if _sklearn_or_sisa(module) and not _within(module, DENIED_SKLEARN_MODULES):
        obj = _walk(module, name)  # imports only sklearn/sisa modules, never denied ones
        if _is_allowed_class(obj, module):
            return obj
        if not classes_only and obj is not None and _is_cython_helper(obj, module, name):
            return obj
    raise _refuse(module, name, source)


_NEWOBJ_MODULES = ("sklearn.neighbors._kd_tree", "sklearn.neighbors._ball_tree",
                   "sklearn.metrics._dist_metrics")


def _is_cython_helper(obj, module: str, name: str) -> bool:
    """Cython's ``__pyx_unpickle_C`` of an allowed class ``C`` (it builds only a ``C``),
    and sklearn's ``newObj(cls)`` = ``cls.__new__(cls)`` for its binary trees."""
    if type(obj).__name__ != "cython_function_or_method" or obj.__module__ != module:
        return False
    if name == "newObj":
        return module in _NEWOBJ_MODULES
    prefix = "__pyx_unpickle_"
    if not name.startswith(prefix):
        return False
    return _is_allowed_class(_walk(module, name[len(prefix):]), module)


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, trusted: tuple[str, ...], source: str) -> None:
        super().__init__(file)
        self._trusted, self._source = trusted, source
        self._found: dict[tuple[str, str], object] = {}

    def find_class(self, module: str, name: str):
        # Canonical (unmemoized) pickles name a class again for every instance (2k times
        # in a histogram-boosting model): decide each (module, name) once per load.
        key = (module, name)
        if key not in self._found:
            self._found[key] = resolve(module, name, trusted=self._trusted, source=self._source)
        return self._found[key]

    def persistent_load(self, pid):
        raise UntrustedCodeError(f"{self._source} holds a persistent reference, which sisa "
                                 "never writes: the file was forged; restore it from backup")


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


def check_native_state(obj, source: str = "the pickle") -> None:
    """Refuse decision trees whose node arrays point outside themselves.

    Cython code trusts a tree's state: a forged child or feature index made only of
    allowed objects would read outside its arrays at ``predict`` (a crash, or worse).
    ``sklearn.tree`` trees, histogram-boosting predictors and k-NN ball/KD trees (with
    their distance metric) are checked.
    """
    import numpy as np
    from sklearn.ensemble._hist_gradient_boosting.predictor import TreePredictor
    from sklearn.neighbors import BallTree, KDTree
    from sklearn.tree._tree import Tree

    BinaryTree = (KDTree, BallTree)

    def bad(what: str) -> UntrustedCodeError:
        return UntrustedCodeError(f"{source} holds a {what} whose nodes point outside its "
                                  "arrays: the file was forged; restore the store from backup")

    seen: set[int] = set()
    stack: list[tuple[object, int | None]] = [(obj, None)]
    while stack:
        o, n_features = stack.pop()
        if id(o) in seen or isinstance(o, (np.ndarray, np.generic, str, bytes, int, float)):
            continue
        seen.add(id(o))
        if isinstance(o, Tree):
            st = o.__getstate__()
            nodes, n = st["nodes"], int(st["node_count"])
            leaf = nodes["left_child"] == -1
            feat = nodes["feature"][~leaf]
            if (n < 1 or len(nodes) != n or not (leaf == (nodes["right_child"] == -1)).all()
                    or not _children_ok(nodes["left_child"], nodes["right_child"], n, leaf)
                    or (feat < 0).any() or (feat >= o.n_features).any()
                    or (n_features is not None and o.n_features != n_features)):
                raise bad("decision tree")
            continue
        if isinstance(o, TreePredictor):
            nodes = o.nodes
            leaf = nodes["is_leaf"].astype(bool)
            inner = nodes[~leaf]
            cat = inner[inner["is_categorical"].astype(bool)]
            if (len(nodes) < 1
                    or not _children_ok(nodes["left"].astype(np.int64),
                                        nodes["right"].astype(np.int64), len(nodes), leaf)
                    or (n_features is not None and (inner["feature_idx"] >= n_features).any())
                    or (inner["feature_idx"] < 0).any()
                    or (cat["bitset_idx"] >= min(len(o.raw_left_cat_bitsets),
                                                 len(o.binned_left_cat_bitsets))).any()):
                raise bad("histogram-boosting tree")
            continue
        if isinstance(o, BinaryTree):
            if not _binary_tree_ok(o.__getstate__()):
                raise bad("k-NN ball/KD tree")
            continue
        if isinstance(o, dict):
            stack.extend((v, n_features) for v in o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend((v, n_features) for v in o)
        elif hasattr(o, "__dict__"):
            nf = getattr(o, "n_features_in_", n_features)
            stack.extend((v, nf if isinstance(nf, int) else None) for v in vars(o).values())


def loads(data: bytes, *, trusted: Iterable[str] = (), source: str = "the pickle"):
    """Unpickle ``data`` calling only allow-listed globals.

    Parameters
    ----------
    data : bytes-like
        The pickle.
    trusted : iterable of str, default=()
        Modules trusted on top of ``$SISA_TRUSTED_MODULES``.
    source : str
        What ``data`` is, for error messages (e.g. the checkpoint's path).

    Raises
    ------
    UntrustedCodeError
        The pickle names a global outside the allow-list; nothing of it was called.
    CorruptStoreError
        The bytes are not a valid pickle.
    """
    try:
        obj = _Unpickler(io.BytesIO(data), tuple(trusted), source).load()
        check_native_state(obj, source)
        return obj
    except SisaError:
        raise
    except Exception as exc:  # a malformed pickle can raise nearly anything
        raise CorruptStoreError(f"{source} cannot be unpickled ({type(exc).__name__}: {exc}): "
                                "restore the store from backup or retrain it") from None
