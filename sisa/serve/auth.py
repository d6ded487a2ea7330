"""Who may call ``sisa serve``: bearer tokens with scopes, and where it may listen without
them."""

from __future__ import annotations

import hmac
import ipaddress
import os
import stat

from ..errors import InputError

SCOPES = ("predict", "erase")
MIN_TOKEN_CHARS = 16


def read_tokens(path: str) -> dict[str, frozenset[str]]:
    """Bearer tokens and their scopes from ``path``: one ``SCOPE[,SCOPE] TOKEN`` per line
    (``#`` comments). The file must not be readable by group or others: it is a secret.

    Parameters
    ----------
    path : str
        The token file.

    Returns
    -------
    dict
        Each token's set of scopes (from :data:`SCOPES`).

    Raises
    ------
    InputError
        The file is missing, too open, empty, or a line is malformed.
    """
    try:
        st = os.stat(path)
        text = open(path, encoding="utf-8").read()  # noqa: SIM115 - one read
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read token file {path!r} ({exc}): write one 'SCOPES TOKEN' "
                         "per line") from None
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise InputError(f"token file {path} is readable by others (mode "
                         f"{stat.S_IMODE(st.st_mode):o}): chmod 600 {path}")
    tokens: dict[str, frozenset[str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        scopes = frozenset(parts[0].split(",")) if len(parts) == 2 else frozenset()
        if len(parts) != 2 or not scopes <= set(SCOPES) or len(parts[1]) < MIN_TOKEN_CHARS:
            raise InputError(f"line {n} of token file {path} is not 'SCOPE[,SCOPE] TOKEN' with "
                             f"scopes from {SCOPES} and a token of at least {MIN_TOKEN_CHARS} "
                             "characters")
        tokens[parts[1]] = scopes
    if not tokens:
        raise InputError(f"token file {path} holds no tokens: write 'predict,erase TOKEN'")
    return tokens


def scopes_of(tokens: dict[str, frozenset[str]], authorization: str) -> frozenset[str] | None:
    """The scopes of the bearer token in an ``Authorization`` header, or None when it names
    no known token.

    Every token is compared, in constant time, so the answer's timing gives no hint of
    how much of a guess was right.
    """
    given = authorization[7:].strip() if authorization[:7].lower() == "bearer " else ""
    found = None
    for tok, scopes in tokens.items():
        if hmac.compare_digest(tok.encode(), given.encode()):
            found = scopes
    return found


def is_loopback(host: str) -> bool:
    """Whether ``host`` is only reachable from this machine (the one place ``sisa serve``
    runs without tokens)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
