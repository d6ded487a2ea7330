"""Headless Chromium for the report page: its DOM as the browser renders it, and a
screenshot (the Debian package ``chromium``; CI installs it with the README's test
command)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from sisa.errors import InputError

__all__ = ["FLAGS", "chromium", "dump_dom", "screenshot"]

# No network, no background services, no profile of the user's: the page is a local file.
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run",
         "--hide-scrollbars", "--disable-dev-shm-usage")
_TIMEOUT_S = 180


def chromium() -> str:
    """Path of the Chromium executable.

    Raises
    ------
    InputError
        If none is installed, naming the package to install.
    """
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None and os.access("/usr/bin/chromium", os.X_OK):
        found = "/usr/bin/chromium"
    if found is None:
        raise InputError("headless Chromium not found: install the Debian package "
                         "`chromium` (apt-get install -y chromium)")
    return found


def _run(page: Path, *extra: str) -> str:
    """Chromium on ``page`` with ``extra`` flags and a throw-away profile; its stdout."""
    page = Path(page).resolve()
    if not page.is_file():
        raise InputError(f"no page at {page}: write it first")
    with tempfile.TemporaryDirectory(prefix="sisa-chromium-") as profile:
        cmd = [chromium(), *FLAGS, f"--user-data-dir={profile}", *extra, page.as_uri()]
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=_TIMEOUT_S,
                                  check=False)
        except subprocess.TimeoutExpired:
            raise InputError(f"chromium did not finish within {_TIMEOUT_S} s on "
                             f"{page.name}") from None
    if done.returncode != 0:
        raise InputError(f"chromium failed on {page.name} (exit {done.returncode})")
    return done.stdout


def dump_dom(page: str | os.PathLike) -> str:
    """The page's DOM after Chromium loaded it (``--dump-dom``)."""
    return _run(Path(page), "--dump-dom")


def screenshot(page: str | os.PathLike, png: str | os.PathLike, width: int = 1280,
               height: int = 2400) -> Path:
    """Write a ``width`` x ``height`` PNG screenshot of ``page`` to ``png``.

    Returns
    -------
    Path
        ``png``, resolved.
    """
    png = Path(png).resolve()
    png.parent.mkdir(parents=True, exist_ok=True)
    png.unlink(missing_ok=True)  # a stale file must not pass for a new screenshot
    _run(Path(page), f"--screenshot={png}", f"--window-size={width},{height}")
    if not png.is_file() or png.stat().st_size == 0:
        raise InputError(f"chromium wrote no screenshot to {png}")
    return png
