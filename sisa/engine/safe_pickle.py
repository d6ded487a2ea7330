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
* one of the few scikit-learn *functions* a fitted model holds as a value
  (:func:`allowed_functions`: ``check_array``, in histogram boosting's categorical
  preprocessor), and ``functools.partial`` only of an allowed function
  (:class:`CheckedPartial`: a partial is a deferred call with stored arguments);
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
is called; modules are imported only once their name passed the check. A dry run first
refuses state set on a global (:mod:`sisa.engine.pickle_scan`); after loading, trees are
bounds-checked and functions checked (:mod:`sisa.engine.loaded_state`).
"""

from __future__ import annotations

import contextvars
import copyreg
import functools
import importlib
import io
import os
import pickle
from collections.abc import Iterable

from ..errors import CorruptStoreError, SisaError, UntrustedCodeError
from .loaded_state import check_loaded
from .pickle_scan import check_no_state_on_globals

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
    scikit-learn estimators (``tests/engine/test_safe_loading.py`` re-derives it); the
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


@functools.cache
def allowed_functions() -> dict[tuple[str, str], object]:
    """The exact scikit-learn *functions* a checkpoint may name, by (module, name).

    Its classes are allowed wholesale, its functions are not (``sklearn.base.clone``,
    ``sklearn.datasets.fetch_openml``...): only those a fitted model holds as a value.
    ``check_array`` is in histogram boosting's categorical preprocessor, as
    ``partial(check_array, dtype=[float64], ensure_all_finite=False)``: it validates an
    array and returns it, nothing else.
    """
    from sklearn.utils.validation import check_array

    return {("sklearn.utils.validation", "check_array"): check_array}


# The trust and source of the load under way, for checks made while a pickle is built.
_LOAD: contextvars.ContextVar[tuple[tuple[str, ...], str]] = contextvars.ContextVar(
    "sisa_load", default=((), "the pickle"))


def safe_function(fn, trusted: Iterable[str] = ()) -> bool:
    """Whether a loaded model may hold ``fn`` as a function it calls (a
    ``FunctionTransformer``'s ``func``, a partial's function): a numpy or ``scipy.special``
    ufunc (pure arithmetic; the unpickler resolves no other), one of
    :func:`allowed_functions`, a :class:`CheckedPartial`, or an object of a trusted module.
    Not any callable the allowed classes can build (a class, a reconstructor)."""
    import numpy as np

    if isinstance(fn, (np.ufunc, CheckedPartial)) or any(
            fn is f for f in allowed_functions().values()):
        return True
    module = getattr(fn, "__module__", None)
    return (isinstance(module, str) and not never_trusted(module) and not _is_denied(fn)
            and _within(module, trusted_modules(trusted)))


class CheckedPartial(functools.partial):
    """``functools.partial`` as a checkpoint may hold it: only of a :func:`safe_function`.

    What a pickle's ``functools.partial`` resolves to. A partial is a call deferred with
    stored arguments, so ``partial(<any callable>, ...)`` in a ``FunctionTransformer``
    would call it at ``transform``; its function is checked when the partial is built and
    again when pickle sets its state (which can replace the function). It pickles as a
    plain ``functools.partial``: a reloaded model dumps to the same bytes.
    """

    __slots__ = ()

    def __new__(cls, func, /, *args, **keywords):
        _check_partial(func)
        return super().__new__(cls, func, *args, **keywords)

    def __setstate__(self, state) -> None:
        if not isinstance(state, tuple) or len(state) != 4:
            raise UntrustedCodeError("the pickle holds a malformed functools.partial: the file "
                                     "was forged; restore the store from backup")
        _check_partial(state[0])
        super().__setstate__(state)

    def __reduce__(self):
        # exactly what functools.partial's own __reduce__ returns, naming the plain class
        return (functools.partial, (self.func,),
                (self.func, self.args, self.keywords, self.__dict__ or None))


def _check_partial(func) -> None:
    trusted, source = _LOAD.get()
    if not safe_function(func, trusted):
        module = getattr(func, "__module__", None) or type(func).__module__
        name = getattr(func, "__qualname__", type(func).__qualname__)
        raise _refuse(module, name, source, " as a functools.partial's function",
                      fix="sisa never calls it")


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
    if not classes_only and key == ("functools", "partial"):
        return CheckedPartial  # never the plain class: it would hold any callable
    if not classes_only and key in allowed_functions():
        return allowed_functions()[key]
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


def _returns_fresh(module: str, name: str, trusted: tuple[str, ...]) -> bool:
    """Whether calling ``module.name`` (if allowed) builds a new object, never one of its
    arguments: classes, and the reconstructors of :func:`allowed_objects` and Cython. Not
    ufuncs (``logical_or(cls, 0)`` returns ``cls``), ``check_array``, a trusted function."""
    try:
        obj = _resolved(module, name, trusted, "the pickle")
    except UntrustedCodeError:
        return True  # the real load refuses it: the dry run need not follow it
    return ((isinstance(obj, type) and not _within(module, trusted_modules(trusted)))
            or any(obj is o for o in allowed_objects().values())
            or type(obj).__name__ == "cython_function_or_method")


_ALLOWED: dict[tuple[str, str, tuple[str, ...]], object] = {}


def _resolved(mod: str, name: str, trusted: tuple[str, ...], source: str):
    """:func:`resolve`, kept per process and trust once allowed (dry run and load alike)."""
    if (obj := _ALLOWED.get((mod, name, trusted))) is None:
        obj = _ALLOWED[mod, name, trusted] = resolve(mod, name, trusted=trusted, source=source)
    return obj


class _Unpickler(pickle.Unpickler):
    def __init__(self, file, trusted: tuple[str, ...], source: str) -> None:
        super().__init__(file)
        self._trusted, self._source = trusted, source

    def find_class(self, module: str, name: str):  # decided once per process and trust
        return _resolved(module, name, self._trusted, self._source)

    def persistent_load(self, pid):
        raise UntrustedCodeError(f"{self._source} holds a persistent reference, which sisa "
                                 "never writes: the file was forged; restore it from backup")


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
    trusted = tuple(trusted)
    token = _LOAD.set((trusted, source))
    try:
        check_no_state_on_globals(data, source,
                                  lambda m, n: _returns_fresh(m, n, trusted))
        obj = _Unpickler(io.BytesIO(data), trusted, source).load()
        check_loaded(obj, source, lambda fn: safe_function(fn, trusted))
        return obj
    except SisaError:
        raise
    except Exception as exc:  # a malformed pickle can raise nearly anything
        raise CorruptStoreError(f"{source} cannot be unpickled ({type(exc).__name__}: {exc}): "
                                "restore the store from backup or retrain it") from None
    finally:
        _LOAD.reset(token)
