"""The figures of ``report.html``, drawn from the report's data as inline PNG.

Each figure is a base64 ``data:`` URI, so the page needs no file beside it and no
network. Curves are found by name: any key containing ``curve`` in the report (top
level, a forget set, a method's record) whose value is one of

* a list of points, each ``[x, y]`` or ``[x, y, lo, hi]`` (a band from lo to hi);
* a list of dicts with numbers: x is the first numeric key, y the second (``lo`` and
  ``hi``, when present, are a band);
* a dict with ``x`` and ``y`` lists (optional ``x_label``, ``y_label``, ``lo``, ``hi``);
* a dict of equally long lists of numbers: x is the first, y the second;
* a dict of names (methods) to one of the above: one line per name.

A curve key inside methods' records (``scenarios → s → methods → m → key``) is drawn as
one figure per forget set and key, one line per method.

Anything else under such a key is skipped: a figure the page cannot draw is left out,
never an error.
"""

from __future__ import annotations

import base64
import io
import numbers
from collections.abc import Iterator

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from sisa.compare.report.plots import COLORS, plot_epsilon, plot_newton_noise

__all__ = ["Series", "figures", "find_curves", "series_of"]

_DPI = 100
Series = tuple[str, np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]
# Axis labels of curves whose points are bare lists.
_AXES = {"power · curve": ("mean shift (sd of the statistic)", "ε̂ (band: 95% interval)")}


def _uri(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI)
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _drawn(draw, data: dict) -> str:
    """A :mod:`sisa.compare.report.plots` figure, drawn into memory instead of a file."""
    buf = io.BytesIO()
    draw(data, buf)
    plt.close("all")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _is_num(x) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool)


def _arr(v) -> np.ndarray | None:
    try:
        a = np.asarray(v, dtype=float)
    except (TypeError, ValueError):
        return None
    return a if a.ndim == 1 and a.size else None


def _one_series(name: str, v) -> tuple[Series, str, str] | None:
    """(series, x label, y label) of one curve value, or None if it has no known shape."""
    if isinstance(v, dict) and "x" in v and "y" in v:
        x, y = _arr(v["x"]), _arr(v["y"])
        if x is None or y is None or x.size != y.size:
            return None
        lo, hi = _arr(v.get("lo")), _arr(v.get("hi"))
        band = lo is not None and hi is not None and lo.size == hi.size == x.size
        return ((name, x, y, lo if band else None, hi if band else None),
                str(v.get("x_label", "x")), str(v.get("y_label", "y")))
    if isinstance(v, dict):
        cols = [(k, _arr(x)) for k, x in v.items() if isinstance(x, list)]
        cols = [(k, a) for k, a in cols if a is not None]
        if len(cols) >= 2 and cols[0][1].size == cols[1][1].size >= 2:
            return (name, cols[0][1], cols[1][1], None, None), cols[0][0], cols[1][0]
        return None
    if not isinstance(v, list) or len(v) < 2:
        return None
    if all(isinstance(p, (list, tuple)) and len(p) >= 2 and all(map(_is_num, p)) for p in v):
        a = np.asarray([list(p[:4]) + [np.nan] * (4 - len(p[:4])) for p in v], dtype=float)
        band = all(len(p) >= 4 for p in v)
        return (name, a[:, 0], a[:, 1], a[:, 2] if band else None,
                a[:, 3] if band else None), "x", "y"
    if all(isinstance(p, dict) for p in v):
        keys = [k for k in v[0] if k not in ("lo", "hi") and all(_is_num(p.get(k)) for p in v)]
        if len(keys) < 2:
            return None
        x = np.array([p[keys[0]] for p in v], dtype=float)
        y = np.array([p[keys[1]] for p in v], dtype=float)
        band = all(_is_num(p.get("lo")) and _is_num(p.get("hi")) for p in v)
        lo = np.array([p["lo"] for p in v], dtype=float) if band else None
        hi = np.array([p["hi"] for p in v], dtype=float) if band else None
        return (name, x, y, lo, hi), keys[0], keys[1]
    return None


def series_of(value) -> tuple[list[Series], str, str]:
    """The lines of one curve value (see the module's docstring); [] if none."""
    one = _one_series("", value)
    if one is not None:
        return [one[0]], one[1], one[2]
    out, xl, yl = [], "x", "y"
    if isinstance(value, dict):
        for k, v in value.items():
            one = _one_series(str(k), v)
            if one is not None:
                out.append(one[0])
                xl, yl = one[1], one[2]
    return out, xl, yl


def find_curves(data: dict) -> Iterator[tuple[str, object]]:
    """(title, value) of every key containing ``curve`` (dicts only, a few levels deep);
    the same key in several methods' records is one value, method -> curve."""
    def walk(node, path: list[str], depth: int):
        if not isinstance(node, dict) or depth > 5:
            return
        for k, v in node.items():
            if "curve" in str(k).lower():
                yield [*path, str(k)], v
            elif isinstance(v, dict):
                yield from walk(v, [*path, str(k)], depth + 1)

    grouped: dict[tuple[str, ...], dict] = {}
    for path, v in walk(data, [], 0):
        if "methods" in path[:-2]:
            i = path.index("methods")
            key = (*path[:i], *path[i + 2:])
            grouped.setdefault(key, {})[path[i + 1]] = v
        else:
            grouped[tuple(path)] = v
    for path, v in grouped.items():
        yield " · ".join(p for p in path if p != "scenarios"), v


def _curve(title: str, value, nice) -> str | None:
    lines, xl, yl = series_of(value)
    if not lines:
        return None
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for name, x, y, lo, hi in lines:
        color = COLORS.get(name)
        ax.plot(x, y, "o-", ms=3, color=color, label=name or None)
        if lo is not None:
            ax.fill_between(x, lo, hi, color=ax.lines[-1].get_color(), alpha=0.15, lw=0)
    xl, yl = _AXES.get(title, (xl, yl))
    ax.set_xlabel(nice(xl))
    ax.set_ylabel(nice(yl))
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    if any(n for n, *_ in lines):
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    return _uri(fig)


def _per_row(data: dict) -> str | None:
    """Box and strip plots of the per-row ε̂: one panel per forget set, one box per
    method, its floor's box in grey beside it."""
    scen = {n: s for n, s in data.get("scenarios", {}).items()
            if any(isinstance(r.get("eps", {}).get("eps_per_row"), list)
                   for r in s.get("methods", {}).values())}
    if not scen:
        return None
    fig, axes = plt.subplots(len(scen), 1, figsize=(11, 2.6 * len(scen)), squeeze=False)
    rng = np.random.default_rng(0)  # the strip's jitter only
    for ax, (name, s) in zip(axes[:, 0], scen.items(), strict=True):
        labels = []
        for i, (m, r) in enumerate(s["methods"].items()):
            rows = np.asarray(r.get("eps", {}).get("eps_per_row") or [], dtype=float)
            floor = s.get("floors", {}).get(r.get("reference"), {}).get("eps_per_row") or []
            floor = np.asarray(floor, dtype=float)
            labels.append(m)
            for pos, vals, color in ((i - 0.18, floor, "#bbbbbb"),
                                     (i + 0.18, rows, COLORS.get(m, "#444444"))):
                vals = vals[np.isfinite(vals)]
                if vals.size:
                    ax.boxplot(vals, positions=[pos], widths=0.3, showfliers=False,
                               patch_artist=True, boxprops={"facecolor": color, "alpha": 0.5},
                               medianprops={"color": "black"})
                    ax.scatter(pos + rng.uniform(-0.1, 0.1, vals.size), vals, s=4,
                               color=color, alpha=0.7, zorder=3)
        ax.set_xticks(range(len(labels)), labels, fontsize=8)
        ax.set_ylabel("per-row ε̂", fontsize=8)
        ax.set_title(f"{name}: per-row ε̂ (grey: the method's floor, left of it)", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _uri(fig)


def _safe(draw, *args) -> str | None:
    """A figure, or None if the report's data lacks what it reads (a report written by
    another version): the page then says so instead of failing."""
    try:
        return draw(*args)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        plt.close("all")
        return None


def figures(data: dict, nice) -> list[tuple[str, str | None]]:
    """(title, data URI or None if it could not be drawn) of every figure the report's
    data allows.

    Parameters
    ----------
    data : dict
        ``report.json``'s content.
    nice : callable
        Key -> readable label (the page's column headers), for curve axes.
    """
    out = []
    if data.get("scenarios"):
        out.append(("ε̂ against each method's floor (95% intervals)",
                    _safe(_drawn, plot_epsilon, data)))
        if any(isinstance((r.get("eps") or {}).get("eps_per_row"), list)
               for s in data["scenarios"].values() for r in s.get("methods", {}).values()):
            out.append(("Per-row ε̂ distributions", _safe(_per_row, data)))
    for title, value in find_curves(data):
        uri = _safe(_curve, title, value, nice)
        if uri:
            out.append((title, uri))
    if (data.get("costs") or {}).get("noise"):
        out.append(("Certified Newton: accuracy against certified ε",
                    _safe(_drawn, plot_newton_noise, data)))
    return out
