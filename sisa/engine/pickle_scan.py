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
load; nothing real is called, since every callable is a stand-in.
"""

from __future__ import annotations

import io
import pickle

from ..errors import UntrustedCodeError


class _Refused(Exception):
    pass


def _refuse(*_args, **_kwargs):
    raise _Refused


class _Value:
    """What calling a stand-in returns: takes any state, items and arguments."""

    def __new__(cls, *_args, **_kwargs):  # NEWOBJ: cls.__new__(cls, *args)
        return object.__new__(cls)

    def __setstate__(self, state) -> None:
        pass

    def __setitem__(self, key, value) -> None:
        pass

    def append(self, item) -> None:
        pass

    def extend(self, items) -> None:
        pass

    def add(self, item) -> None:
        pass


class _Global(type):
    """The metaclass of a stand-in global: refuses state and items set on the class."""

    __setstate__ = append = extend = add = property(_refuse)

    def __setitem__(cls, key, value) -> None:
        _refuse()

    def __call__(cls, *_args, **_kwargs):
        return _Value()


class _DryRun(pickle.Unpickler):
    def __init__(self, file) -> None:
        super().__init__(file)
        self._stand_ins: dict[tuple[str, str], type] = {}

    def find_class(self, module: str, name: str):
        key = (module, name)
        if key not in self._stand_ins:
            self._stand_ins[key] = _Global("Global", (_Value,), {})
        return self._stand_ins[key]

    def persistent_load(self, pid):
        return None  # the real load refuses it


def check_no_state_on_globals(data: bytes, source: str) -> None:
    """Refuse a pickle that sets state or items on a class or function it names.

    Parameters
    ----------
    data : bytes-like
        The pickle.
    source : str
        What ``data`` is, for the error message.

    Raises
    ------
    UntrustedCodeError
        The pickle would change a class or function (for the whole process).
    """
    try:
        _DryRun(io.BytesIO(data)).load()
    except _Refused:
        raise UntrustedCodeError(
            f"{source} sets state on a class or function it names, which sisa never writes "
            "(it would change that class for the whole process): the file was forged; "
            "restore the store from backup") from None
