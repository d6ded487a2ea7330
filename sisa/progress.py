"""Progress bars that suit where they are shown.

On a terminal a bar redraws itself in place. Anywhere else (a log file, CI, a ``ray job``
log) carriage returns would leave hundreds of fragments, so the bar prints a whole line
at most every :data:`LOG_INTERVAL_S` seconds plus a final one, as pip and Ray do.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable

from tqdm.auto import tqdm

LOG_INTERVAL_S = 10.0


class _Lines:
    """tqdm's refreshes as whole lines: no carriage returns, no blank erasures."""

    def __init__(self, stream) -> None:
        self.stream = stream

    def write(self, s: str) -> None:
        s = s.replace("\r", "").strip()
        if s:
            self.stream.write(s + "\n")

    def flush(self) -> None:
        self.stream.flush()


def bar(iterable: Iterable | None = None, *, total: float | None = None, desc: str,
        unit: str = "it", enabled: bool = True, unit_scale: bool = False,
        delay: float = 0.0) -> tqdm:
    """A tqdm bar on stderr: in place on a terminal, throttled whole lines elsewhere.

    Parameters
    ----------
    iterable : iterable, optional
        Items to wrap, as with ``tqdm(iterable)``.
    total : float, optional
        Expected count, when ``iterable`` has no length.
    desc, unit : str
        What is counted, shown before and after the count.
    enabled : bool, default=True
        ``False`` gives a silent bar (every call still works).
    unit_scale : bool, default=False
        Show large counts as ``1.2M``.
    delay : float, default=0.0
        Seconds before the bar first shows: a short run prints nothing.
    """
    stream = sys.stderr
    on_terminal = bool(getattr(stream, "isatty", lambda: False)())
    if on_terminal:
        return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale,
                    disable=not enabled, leave=False, file=stream, delay=delay)
    return tqdm(iterable, total=total, desc=desc, unit=unit, unit_scale=unit_scale,
                disable=not enabled, leave=True, file=_Lines(stream), ascii=True,
                mininterval=LOG_INTERVAL_S, maxinterval=LOG_INTERVAL_S, dynamic_ncols=False,
                ncols=100, delay=delay)
