"""Keys: who may sign a store, and the secret behind its keyed id hashes.

A **key file** (JSON, mode 0600, made by ``sisa keygen``) holds two secrets of one owner:
an Ed25519 private key, which signs every manifest and every receipt of the stores that
owner builds, and an audit secret, from which each store's audit key (the key of the
keyed hashes of deleted ids in tombstones and receipts) is derived. Neither is ever
written into a store. The public half (``ed25519:<hex>``, ``sisa key public``) is what a
third party needs to check a store with ``sisa verify --public-key``.

Where sisa looks for the key, first match wins: an explicit path, ``$SISA_KEY`` (the key
file's JSON itself, for CI secrets), ``$SISA_KEY_FILE``, then ``~/.config/sisa/key.json``
if it exists. A store built with no key is *unsigned*: it works the same, keeps its audit
key in ``audit/<store_id>.key`` (0600) beside the data, and ``verify`` says what an unsigned
store cannot prove.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)

from ...errors import InputError, KeyFileError

KEY_ENV, KEY_FILE_ENV = "SISA_KEY", "SISA_KEY_FILE"
DEFAULT_KEY_FILE = Path("~/.config/sisa/key.json")
ALG = "ed25519"


@dataclass(frozen=True)
class KeyPair:
    """An owner's signing key and audit secret."""

    private: Ed25519PrivateKey
    audit_secret: bytes

    @property
    def public_hex(self) -> str:
        return self.private.public_key().public_bytes_raw().hex()

    @property
    def public_line(self) -> str:
        """The exportable public key, ``ed25519:<64 hex>``."""
        return f"{ALG}:{self.public_hex}"

    def sign(self, data: bytes) -> str:
        return self.private.sign(data).hex()

    def audit_key(self, store_id: str) -> bytes:
        """The store's audit key: one secret per owner, a distinct key per store."""
        return hmac.new(self.audit_secret, b"sisa-audit/" + store_id.encode(),
                        hashlib.sha256).digest()

    def to_json(self) -> str:
        seed = self.private.private_bytes_raw().hex()
        return json.dumps({"format": "sisa-key/1", "alg": ALG, "private_key": seed,
                           "audit_secret": self.audit_secret.hex(),
                           "public_key": self.public_line}, indent=1)


def generate() -> KeyPair:
    return KeyPair(Ed25519PrivateKey.generate(), secrets.token_bytes(32))


def save(key: KeyPair, path: str | os.PathLike, *, overwrite: bool = False) -> Path:
    """Write a key file with mode 0600 (created so, never widened); refuses to replace one."""
    p = Path(path).expanduser()
    if p.exists() and not overwrite:
        raise InputError(f"key file {p} already exists: keep it (stores signed with it need it) "
                         "or pass another path")
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_name(f".{p.name}.tmp-{secrets.token_hex(4)}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(key.to_json())
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, p)
    finally:
        if tmp.exists():
            tmp.unlink()
    return p


def parse(text: str, where: str) -> KeyPair:
    try:
        obj = json.loads(text)
        if obj.get("format") != "sisa-key/1" or obj.get("alg") != ALG:
            raise ValueError("not a sisa-key/1 ed25519 key")
        key = KeyPair(Ed25519PrivateKey.from_private_bytes(bytes.fromhex(obj["private_key"])),
                      bytes.fromhex(obj["audit_secret"]))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise KeyFileError(f"{where} is not a sisa key file ({exc}): make one with `sisa keygen`")\
            from None
    return key


def load(path: str | os.PathLike) -> KeyPair:
    """Read a key file; refuses one that other users can read, as ssh does."""
    p = Path(path).expanduser()
    try:
        fd = os.open(p, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)  # a FIFO must not hang
    except OSError as exc:
        raise KeyFileError(f"cannot open key file {p} ({exc.strerror}): check the path, or make a "
                        "key with `sisa keygen`") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise KeyFileError(f"key file {p} is not a regular file: pass the path of the file "
                           "`sisa keygen` wrote")
    with os.fdopen(fd) as f:
        if mode & (stat.S_IRWXG | stat.S_IRWXO):
            raise KeyFileError(f"key file {p} is readable by other users (mode "
                            f"{stat.S_IMODE(mode):o}): run `chmod 600 {p}`")
        return parse(f.read(), f"key file {p}")


def configured(path: str | os.PathLike | None = None) -> KeyPair | None:
    """The key to sign with, from ``path``, ``$SISA_KEY``, ``$SISA_KEY_FILE`` or the
    default file; None when none is configured."""
    if path:
        return load(path)
    inline = os.environ.get(KEY_ENV)
    if inline:
        return parse(inline, f"${KEY_ENV}")
    env_path = os.environ.get(KEY_FILE_ENV)
    if env_path:
        return load(env_path)
    default = DEFAULT_KEY_FILE.expanduser()
    return load(default) if default.exists() else None


def parse_public(text: str) -> str:
    """A public key given as ``ed25519:<hex>`` (or a file holding it, or a key file):
    returns the 64-hex key."""
    t = text.strip()
    if not t.startswith(f"{ALG}:") and os.path.isfile(os.path.expanduser(t)):
        try:
            raw = Path(t).expanduser().read_text(encoding="utf-8").strip()
            if raw.startswith("{"):  # a key file: take its public half
                raw = json.loads(raw).get("public_key", "")
        except (OSError, ValueError, AttributeError):
            raw = ""
        t = raw if isinstance(raw, str) else ""
    hexpart = t[len(ALG) + 1:] if t.startswith(f"{ALG}:") else ""
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(hexpart))
    except ValueError:
        raise InputError(f"{text!r} is not a public key: pass `ed25519:<64 hex digits>` as "
                         "printed by `sisa key public`, or a file holding it") from None
    return hexpart


def check_signature(public_hex: object, data: bytes, signature_hex: object) -> bool:
    """Whether ``signature_hex`` signs ``data`` under ``public_hex`` (any malformed input,
    as an edited store may hold, is simply not a valid signature)."""
    if not (isinstance(public_hex, str) and isinstance(signature_hex, str)):
        return False
    try:
        Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex)).verify(
            bytes.fromhex(signature_hex), data)
        return True
    except (InvalidSignature, ValueError):
        return False
