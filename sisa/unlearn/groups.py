"""Forget a person: every row of some groups (``fit(X, y, groups=...)``, ``--group COL``).

A forget by group is a forget by id with more on its receipt. The request's group keys
go through the id boundary by the store's group key type, resolve to the sample ids of
their rows (:func:`sisa.store.write.groups.group_rows`: only the slices they hash to are read),
and those ids are forgotten as one request (:func:`sisa.unlearn.forget`) whose receipt
names the groups under the rules of ids (:func:`sisa.unlearn.receipts.groups_named`:
keyed hashes, raw keys only with ``record_ids``).

A group without rows is like an id without a row: forgotten before (a receipt names
its keyed hash) it is counted, not an error; never in the store it is an
:class:`~sisa.errors.UnknownIdError` and nothing changes. The same request replayed
returns its receipt.
"""

from __future__ import annotations

from ..errors import InputError, UnknownIdError
from ..store.store import Store
from ..store.write.groups import group_keys, group_rows
from ..tasks.settings import ExecutionSettings
from . import receipts
from .forget import forget, journaled_request, repair


def forget_groups(store: Store, groups, *, record_ids: bool = False,
                  settings: ExecutionSettings | None = None, loaded: dict | None = None
                  ) -> dict:
    """Exactly unlearn every row of these groups; returns the receipt.

    Parameters
    ----------
    store : Store
        A store built with groups, holding a trained model.
    groups : iterable of int or str
        Group keys, of the store's group key type (as sample ids are: on a string store
        ``"7"``, never ``7``).
    record_ids : bool, default=False
        Keep the raw ids and group keys in the receipt (by default only keyed hashes).
    settings : ExecutionSettings, optional
        Where the retrain runs.
    loaded : dict, optional
        Filled with the retrained shard models (see :func:`sisa.unlearn.forget`).

    Returns
    -------
    dict
        The receipt of :func:`sisa.unlearn.forget`, with ``groups_sha256``, ``n_groups``,
        ``group_hashes`` (and ``groups`` with ``record_ids``), and
        ``groups_already_forgotten``.

    Raises
    ------
    InputError
        The store has no groups, no key was given, or a key has the wrong type.
    UnknownIdError
        A group is neither stored nor forgotten before; nothing changes.
    """
    keys = group_keys(store, groups)  # the type boundary: before the lock, nothing to undo
    if len(keys) == 0:
        raise InputError("no group keys given: pass at least one group to forget")
    with store.lock():
        named = receipts.groups_named(store, keys, record_ids)
        pending = store.manifest.pending
        left = None if pending is None else journaled_request(pending)
        if left is not None and left.groups_sha256 == named[
                "groups_sha256"]:  # this request, interrupted after its deletion: finish it
            repair(store, settings=settings)
            return next(r for r in reversed(receipts.history(store))
                        if r.get("groups_sha256") == named["groups_sha256"])
        ids, counts = group_rows(store, keys)
        empty = [i for i, n in enumerate(counts.tolist()) if n == 0]
        before = receipts.groups_forgotten(store, [named["group_hashes"][i] for i in empty])
        unknown = [keys[i].as_py() for i, r in zip(empty, before, strict=True) if r is None]
        if unknown:
            shown = ", ".join(map(repr, unknown[:10])) + (" ..." if len(unknown) > 10 else "")
            raise UnknownIdError(
                f"{len(unknown)} group key(s) have no rows in store {store.uri} and were never "
                f"forgotten as a group: {shown}; check the keys (nothing was changed)")
        named["groups_already_forgotten"] = len(empty)
        if len(ids) == 0:  # every group was forgotten before: as a replayed request
            latest = max((r for r in before if r is not None), key=lambda r: r["seq"])
            return {**latest, "replayed": True, "groups_already_forgotten": len(empty)}
        return forget(store, ids, record_ids=record_ids, settings=settings, named=named,
                      loaded=loaded)
