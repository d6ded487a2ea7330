"""A dry run of a pickle before it is loaded: no state is set on a global.

Pickle's ``BUILD`` sets the state of the object under it: normally one the pickle just
built, but a forged file can push a *global* (an allowed class or function, directly or
through the memo) and ``BUILD`` it with a slot state, which is ``setattr(obj, key,
value)``. On a class or a function that changes the whole process
(``scipy.sparse.csr_matrix.dot = numpy.add``, ``check_array.__kwdefaults__ = {...}``) for
every model loaded after it, from any store. ``SETITEM(S)``, ``APPEND(S)`` and
``ADDITEMS`` likewise call methods of their target.

The restricted unpickler cannot see what these opcodes apply to, so the file is first
unpickled with every global replaced by a stand-in class whose metaclass refuses them
(a data descriptor on the metaclass wins the lookup pickle makes on a class). The dry run
is CPython's own unpickler, so the memo, ``DUP`` and marks behave exactly as in the real
load; nothing real is called, since every callable is a stand-in. A call can hand a
global back (``numpy.logical_or(csr_matrix, 0)`` is ``csr_matrix``): the result of a call
that does not always build a new object, given a global or anything holding one, is
treated as a global too.
"""

from __future__ import annotations

import io
import pickle
from collections.abc import Callable

from ..errors import UntrustedCodeError


class _Refused(Exception):
    pass


def _refuse(*_args, **_kwargs):
    raise _Refused


def _holds_global(x) -> bool:
    """Whether ``x`` is a stand-in global or holds one (in containers, arguments or set
    state). Asked only when a call might hand an argument back, never for sisa's own
    pickles, so the dry run of a large model stays cheap."""
    stack, seen = [x], set()
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        if isinstance(o, _Global):
            return True
        if isinstance(o, _Value):
            stack.extend(o._inputs)
        elif isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset)):
            stack.extend(o)
    return False


class _Value:
    """What calling a stand-in builds: takes any state, items and arguments, and keeps
    them (to tell whether a global went into it)."""

    def __new__(cls, *args, **kwargs):  # NEWOBJ: cls.__new__(cls, *args)
        obj = object.__new__(cls)
        obj._inputs = [args, kwargs]
        return obj

    def __setstate__(self, state) -> None:
        self._inputs.append(state)

    def __setitem__(self, key, value) -> None:
        self._inputs.append((key, value))

    def append(self, item) -> None:
        self._inputs.append(item)

    def extend(self, items) -> None:
        self._inputs.append(list(items))

    def add(self, item) -> None:
        self._inputs.append(item)


class _Global(type):
    """The metaclass of a stand-in global: refuses state and items set on the class."""

    __setstate__ = append = extend = add = property(_refuse)

    def __setitem__(cls, key, value) -> None:
        _refuse()

    def __call__(cls, *args, **kwargs):
        if cls._passes_through and _holds_global((args, kwargs)):
            return _stand_in(True)  # may be one of its arguments, or part of one
        return _Value(*args, **kwargs)


def _stand_in(passes_through: bool) -> _Global:
    return _Global("Global", (_Value,), {"_passes_through": passes_through})


class _DryRun(pickle.Unpickler):
    def __init__(self, file, returns_fresh: Callable[[str, str], bool]) -> None:
        super().__init__(file)
        self._returns_fresh = returns_fresh
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key not in self._stand_ins:
            self._stand_ins[key] = _stand_in(not self._returns_fresh(module, name))
        return self._stand_ins[key]

    def persistent_load(self, pid):
        return None  # the real load refuses it


def check_no_state_on_globals(data: bytes, source: str,
                              returns_fresh: Callable[[str, str], bool]) -> None:
    """Refuse a pickle that sets state or items on a class or function it names.

    Parameters
    ----------
    data : bytes-like
        The pickle.
    source : str
        What ``data`` is, for the error message.
    returns_fresh : callable
        ``(module, name) -> bool``: whether calling that global always builds a new object.

    Raises
    ------
    UntrustedCodeError
        The pickle would change a class or function (for the whole process).
    """
    try:
        _DryRun(io.BytesIO(data), returns_fresh).load()
    except _Refused:
        raise UntrustedCodeError(
            f"{source} sets state on a class or function it names, which sisa never writes "
            "(it would change that class for the whole process): the file was forged; "
            "restore the store from backup") from None
