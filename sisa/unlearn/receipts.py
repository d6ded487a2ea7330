"""The audit log: one hash-chained, signed JSON receipt per forget.

Every receipt carries ``seq`` (0, 1, ...), ``prev`` (the hash of the receipt before it;
None for the first), the ``store_id`` and, in a signed store, ``signature``: the owner's
Ed25519 signature over the receipt's canonical bytes, so a receipt handed to a third
party proves itself with the public key alone. The forget's final manifest commit holds
``audit = {"receipts": n, "head": hash of receipt n-1}`` and the whole last receipt; the
log line is appended after that commit, and fsynced with the next commit's group (the
manifest holds the receipt whole until then). Hence:

- a receipt removed, reordered or edited breaks ``prev``/``seq``, its signature or the
  committed head, and :func:`check` names it;
- a receipt missing at the end (a crash between the commit and the append) and a torn
  last line (power lost mid-append) are restored from the committed manifest by
  :func:`sync_log`, which every writer and ``repair`` run; nothing committed is lost.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import replace

from ..errors import CorruptStoreError, StoreError
from ..store.format import ids as idmod
from ..store.format import keys
from ..store.manifest import canonical_json
from ..store.store import Store
from .records import ForgetRequest, Receipt, SealedReceipt


def log_path(store: Store) -> str:
    return store.manifest.audit_files()["log"]


def ids_digest(store: Store, ids):
    """HMAC-SHA256, under the store's audit key, of the request's distinct ids in sort
    order; and those ids (the store's Arrow id array).

    Keyed like the tombstones: a plain sha256 of one small id is reversed by trying
    every id, so a receipt shown to a third party would leak what was forgotten. Who
    holds the owner's key (or, for an unsigned store, the store) and the ids can
    recompute it.
    """
    canon = idmod.unique_sorted(store.rows.id_array(ids))
    digest = hmac.new(store.audit.key(), b"\n".join(idmod.id_bytes(canon)), hashlib.sha256)
    return digest.hexdigest(), canon


def groups_named(store: Store, keys, record: bool = False) -> dict:
    """What a receipt records of a forget by group (``keys``: the request's distinct group
    keys in sort order), under the rules of ids: ``groups_sha256``, the HMAC under the
    audit key of all of them (as :func:`ids_digest`), ``n_groups``, and ``group_hashes``,
    one keyed hash per key (16 bytes, as a tombstone), by which a later request sees that a
    group was forgotten; the raw keys (``groups``) only with ``record``."""
    key = store.audit.key()
    raw = idmod.group_bytes(keys)
    named = {"groups_sha256": hmac.new(key, b"\n".join(raw), hashlib.sha256).hexdigest(),
             "n_groups": len(raw),
             "group_hashes": [hmac.new(key, b, hashlib.sha256).hexdigest()[:32] for b in raw]}
    if record:
        named["groups"] = keys.to_pylist()
    return named


def named_of(request: ForgetRequest) -> dict:
    """The group fields of a recorded request (an intent's), to redo it as it was."""
    return request.named


def groups_forgotten(store: Store, group_hashes: list[str]) -> list[dict | None]:
    """For each keyed group hash, the latest logged receipt that forgot that group (None:
    no receipt names it)."""
    want = set(group_hashes)
    latest: dict[str, dict] = {}
    for r in history(store):
        for h in want.intersection(r.get("group_hashes") or ()):
            latest[h] = r
    return [latest.get(h) for h in group_hashes]


#: Fields a forget's answer carries beside its receipt, never signed nor logged: its
#: ``timings`` (:mod:`sisa.unlearn.timings`) and a replay's ``replayed``.
ANSWER_FIELDS = ("timings", "replayed")


def as_logged(receipt: dict) -> dict:
    """A receipt as the log holds it: what a forget returned, less :data:`ANSWER_FIELDS`."""
    return {k: v for k, v in receipt.items() if k not in ANSWER_FIELDS}


def receipt_hash(receipt: dict) -> str:
    """The hash that chains receipts: over the canonical bytes, signature excluded."""
    body = {k: v for k, v in receipt.items() if k != "signature"}
    return hashlib.sha256(canonical_json(body)).hexdigest()


def committed(store: Store) -> SealedReceipt | None:
    """The manifest's last receipt (None before the first forget); a malformed one raises
    :class:`~sisa.errors.CorruptStoreError`."""
    raw = store.manifest.last_receipt
    return None if raw is None else SealedReceipt.from_json(
        raw, "the manifest's last receipt")


def seal(store: Store, receipt: Receipt) -> tuple[SealedReceipt, dict]:
    """Chain (and sign) a receipt onto the store's log; returns the receipt and the
    manifest's new ``audit`` entry, to be committed together."""
    # The log's last line is appended after its commit without an fsync (sync_log): until
    # a later commit replaces the manifest's last receipt, that receipt is committed there
    # whole and sync_log restores a line a power loss took. This is that later commit, so
    # the log is made durable first: with this commit's group of fsyncs when it runs in a
    # batch (a forget), else now. No receipt is ever held only in volatile memory.
    if store.loc.is_local:  # an object store's append is a durable PUT
        sync_log(store)
        store.loc.sync_later(log_path(store))
    audit, store_id = store.manifest.audit, store.manifest.store_id
    if store_id is None:
        raise StoreError(f"internal: store {store.uri} has no store_id to chain a receipt to")
    sealed = SealedReceipt(receipt=receipt, seq=audit["receipts"], prev=audit["head"],
                           store_id=store_id)
    key = store.audit.signing_key()
    if key is not None:
        sealed = replace(sealed, signature=key.sign(canonical_json(sealed.to_json())))
    body = sealed.to_json()
    new = {"receipts": audit["receipts"] + 1, "head": receipt_hash(body)}
    if "log_bytes" in audit:  # the log's length once this receipt is appended
        new["log_bytes"] = audit["log_bytes"] + len(log_line(body))
    return sealed, new


def log_line(receipt: dict) -> bytes:
    """A receipt's line in the audit log."""
    return (json.dumps(receipt, sort_keys=True) + "\n").encode()


def read_log(store: Store) -> tuple[list[dict], list[str]]:
    """The receipts in the log and what is wrong with its lines (a torn last line, a
    line that is not a JSON object)."""
    rel = log_path(store)
    return parse_log(store.loc.read_bytes(rel).to_pybytes() if store.loc.exists(rel) else None)


def parse_log(raw: bytes | None) -> tuple[list[dict], list[str]]:
    """:func:`read_log` of the log's bytes (None: no log), e.g. read by ``verify`` at a
    moment no writer was appending."""
    if raw is None:
        return [], []
    lines = raw.split(b"\n")
    torn = lines[-1] != b""  # every complete line ends with a line break
    if not torn:
        lines.pop()
    out, problems = [], []
    for i, line in enumerate(lines):
        try:
            obj = json.loads(line)
            if not isinstance(obj, dict):
                raise ValueError("not an object")
        except ValueError:
            if torn and i == len(lines) - 1:
                problems.append(f"line {i + 1} of the audit log is torn (an append was cut "
                                "off): run `sisa repair`")
            else:
                problems.append(f"line {i + 1} of the audit log is not a receipt: the log was "
                                "edited")
            continue
        if torn and i == len(lines) - 1:  # parses, but its line break never landed
            problems.append(f"line {i + 1} of the audit log is torn (no line break): run "
                            "`sisa repair`")
            continue
        problem = _not_a_logged_receipt(obj, line, i)
        if problem:  # still checked below (chain, signature), so every fault is named
            problems.append(problem)
        out.append(obj)
    return out, problems


def _not_a_logged_receipt(obj: dict, line: bytes, i: int) -> str | None:
    """Why line ``i`` (parsed: ``obj``) is not a receipt as sisa logs it, or None. The
    chain hashes a receipt's canonical JSON, so a line whose bytes differ from its
    receipt's (a space swapped for a tab, a key written twice) would pass it unseen."""
    try:
        SealedReceipt.from_json(obj, f"line {i + 1} of the audit log")
    except CorruptStoreError as exc:
        return str(exc)
    if log_line(obj) != line + b"\n":
        return (f"line {i + 1} of the audit log is not the bytes sisa writes for its receipt: "
                "the log was edited")
    return None


def history(store: Store) -> list[dict]:
    """Every complete receipt in the store's audit log, oldest first."""
    return read_log(store)[0]


def find(store: Store, *, ids_sha256: str):
    """The latest logged receipt of a request with these ids (a forget replayed), or None."""
    for r in reversed(history(store)):
        if r.get("ids_sha256") == ids_sha256:
            return r
    return None


def sync_log(store: Store, last: SealedReceipt | None = None) -> bool:
    """Make the log hold the committed chain when it is a clean prefix of it: re-append
    the committed last receipt after a crash before the append, and rewrite a torn last
    line. A log that disagrees otherwise is left alone for :func:`check` to report.
    Returns whether the log was changed. Writers call it holding the lock.

    When the manifest records the log's committed length (``audit.log_bytes``), a log
    of exactly that length is taken as in sync and one exactly a receipt short gets it
    appended, without reading the log (``verify`` reads and checks all of it).

    ``last``: the receipt the caller just sealed and committed (used if it is the one the
    manifest commits); the manifest's is parsed only when the log is short of it."""
    quick = _quick_sync(store, last)
    if quick is not None:
        return quick
    n = store.manifest.audit.get("receipts", 0)
    last = _committed(store, last)
    log, problems = read_log(store)
    torn = any("torn" in p for p in problems)
    if problems and not (torn and len(problems) == 1):
        return False
    rel = log_path(store)
    if len(log) == n and not torn:
        return False
    if len(log) == n - 1 and last and last.seq == n - 1 and (
            not log or receipt_hash(log[-1]) == last.prev):
        log.append(last.to_json())
    elif not (len(log) == n and torn):
        return False
    text = "".join(log_line(r).decode() for r in log)
    if torn or not store.loc.exists(rel):
        store.loc.write_atomic(rel, text.encode())
    else:
        store.loc.append_line(rel, log_line(log[-1]).decode(), durable=False)
    return True


def _committed(store: Store, last: SealedReceipt | None) -> SealedReceipt | None:
    """:func:`committed`: ``last`` if it is the receipt the manifest commits (no parse),
    else the manifest's own, parsed."""
    if last is not None and last.to_json() == store.manifest.last_receipt:
        return last
    return committed(store)


def _quick_sync(store: Store, last: SealedReceipt | None) -> bool | None:
    """The O(1) path of :func:`sync_log` (None: take the full path). The committed
    receipt is parsed only when the log is short of it."""
    want = store.manifest.audit.get("log_bytes")
    rel = log_path(store)
    if want is None or not store.loc.is_local:
        return None
    size = store.loc.size(rel)
    if size == want:
        return False
    last = _committed(store, last)
    line = None if last is None else log_line(last.to_json())
    if last is not None and line is not None and size == want - len(line) and (
            size > 0 or last.seq == 0):
        store.loc.append_line(rel, line.decode(), durable=False)
        return True
    return None


def signature_ok(public_hex: str, receipt: dict) -> bool:
    """Whether ``receipt`` carries a valid signature by ``public_hex``."""
    if not isinstance(receipt, dict):
        return False
    body = canonical_json({k: v for k, v in receipt.items() if k != "signature"})
    return keys.check_signature(public_hex, body, receipt.get("signature"))


def check(store: Store, log: tuple[list[dict], list[str]] | None = None) -> list[str]:
    """Everything wrong with the audit log (``log``: as :func:`read_log` returns it; read
    now if not given) against the committed manifest: a receipt removed, reordered,
    edited or unsigned, one missing at the end, a torn line."""
    receipts, problems = read_log(store) if log is None else (log[0], list(log[1]))
    signer = store.audit.signer
    for i, r in enumerate(receipts):
        who = f"receipt {i} (request {r.get('request_id', '?')})"
        if r.get("seq") != i:
            problems.append(f"{who} carries seq {r.get('seq')}: a receipt before it was removed "
                            "or the log was reordered")
        want_prev = receipt_hash(receipts[i - 1]) if i else None
        if r.get("prev") != want_prev:
            problems.append(f"{who} does not chain to the receipt before it: one was removed, "
                            "reordered or edited")
        if r.get("store_id") != store.manifest.store_id:
            problems.append(f"{who} belongs to another store ({r.get('store_id')})")
        if signer is not None and not signature_ok(signer, r):
                problems.append(f"{who} does not carry the owner's valid signature: it was "
                                "edited or forged")
    audit = store.manifest.audit
    n = audit.get("receipts", 0)
    if len(receipts) != n:
        problems.append(f"the audit log holds {len(receipts)} receipt(s) but the manifest "
                        f"commits {n}"
                        + (": the last was not logged yet; run `sisa repair`"
                           if len(receipts) == n - 1 else ": receipts were removed or added"))
    elif n and receipt_hash(receipts[-1]) != audit.get("head"):
        problems.append(f"the last receipt (request {receipts[-1].get('request_id')}) is not "
                        "the one the manifest commits: the log was edited")
    return problems
