"""Named crash points, for tests that interrupt a write at every step.

``SISA_CRASH_AT=<name>`` makes the process fail when it reaches that point:
``SISA_CRASH_MODE=raise`` (default) raises, ``kill`` sends itself SIGKILL, the
way a real crash or an OOM kill would. Production runs never set these.
"""

from __future__ import annotations

import os
import signal


class InjectedCrash(RuntimeError):
    """Raised at a crash point selected by SISA_CRASH_AT."""


def crashpoint(name: str) -> None:
    if os.environ.get("SISA_CRASH_AT") != name:
        return
    if os.environ.get("SISA_CRASH_MODE") == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    raise InjectedCrash(f"injected crash at {name}")
