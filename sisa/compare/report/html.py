"""``report.html``: the comparison report as one self-contained web page.

Tables are rendered generically from the report's records: every key of a method's
record is a column (nested dicts flattened to ``a · b``), known keys get a readable
header (``HEADERS``), unknown keys are shown under their own name, and a column equal on
every row moves to a "same for every method" line. Figures are inline PNG
(:mod:`sisa.compare.report.html_figures`); there is no network reference, no external CSS or
script. Every text from the report is escaped.

Re-render a saved run (and screenshot it in headless Chromium)::

    python -m sisa.compare.report.html runs/compare-adult \
        --screenshot docs/reports/compare-adult/report.png
"""

from __future__ import annotations

import argparse
import json
import numbers
import os
import sys
from html import escape
from pathlib import Path

from sisa.errors import InputError

__all__ = ["HEADERS", "main", "render", "write"]

HEADERS = {
    "eps": "ε̂ [95% CI]", "floor": "floor [95% CI]", "eps · p_value": "p",
    "eps · forgetting_quality": "FQ", "eps · median": "ε̂ median",
    "final_score": "score", "acc · w": "acc W",
    "acc · u": "acc U", "acc · test": "acc test", "time_s": "unlearn time",
    "injected_weight": "w(injected)", "acc_w": "acc W", "acc_u": "acc U",
    "acc_test": "acc test", "ece_test": "ECE test", "fair_r2": "Fair R²",
    "exp_r2_w": "ExpR²(W)", "exp_r2_u": "ExpR²(U)", "noise_std": "noise σ",
    "certified_epsilon": "certified ε", "certified_epsilon_median": "certified ε (median)",
    "sisa_byte_identical": "SISA byte-identical", "p_value": "p",
}
VERDICTS = {"above floor": "#f4b6b0", "distinguishable": "#fbe3a1", "at floor": "#bfe5bf"}
_FIRST = ("verdict", "eps", "floor")  # after the method, before the other columns
_SEP = " · "  # flattened keys: the path of a nested value
_SHORT_LIST = 12  # longer lists (per-row values) are figures, not cells

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px 32px;
color:#1d1d1d;max-width:1500px}
h1{font-size:26px;margin:0 0 6px}h2{font-size:20px;margin:28px 0 8px;
border-bottom:1px solid #ccc}h3{font-size:16px;margin:18px 0 6px}
.lead{font-size:15px;color:#333}.muted{color:#666;font-size:12px}
.wrap{overflow-x:auto}table{border-collapse:collapse;margin:6px 0 10px;font-size:12.5px}
th,td{border:1px solid #d4d4d4;padding:3px 7px;text-align:left;white-space:nowrap}
th{background:#f0f0f3}td.num{text-align:right;font-variant-numeric:tabular-nums}
.v{font-weight:600}.legend span{padding:2px 8px;margin-right:6px;border-radius:3px}
figure{margin:10px 0}figure img{max-width:100%;border:1px solid #eee}
figcaption{font-size:12px;color:#555}
"""


def _nice(key: str) -> str:
    """A readable header of a flattened key (``a · b``)."""
    if key in HEADERS:
        return HEADERS[key]
    head, _, last = key.rpartition(_SEP)
    if head and last in HEADERS:
        return f"{head.replace('_', ' ')}{_SEP}{HEADERS[last]}"
    return key.replace("_", " ")


def _num(x: float, key: str = "") -> str:
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, numbers.Integral):
        return f"{x:,}"
    x, a = float(x), abs(float(x))
    if _is_time(key):
        return _secs(x)
    if a == 0:
        return "0"
    if a >= 1e5 or a < 1e-5:
        return f"{x:.2e}"
    if a < 1e-3:
        return f"{x:.2g}"
    return f"{x:,.0f}" if a >= 100 else f"{x:.2f}" if a >= 1 else f"{x:.3f}"


def _is_time(key: str) -> bool:
    last = key.rpartition(_SEP)[2]
    return last.endswith("_s") or last == "time"


def _secs(s: float) -> str:
    if s == 0:
        return "0"
    if s >= 120:
        return f"{int(s // 60)} min {s % 60:.0f} s"
    return f"{s * 1000:.1f} ms" if s < 1 else f"{s:.2f} s"


def _is_summary(v) -> bool:
    return isinstance(v, dict) and {"mean", "sd"} <= set(v)


def _is_interval(v) -> bool:
    return isinstance(v, dict) and {"lo", "hi"} <= set(v) and _main(v) is not None


def _main(v: dict) -> str | None:
    """The point estimate of an interval record: its first number other than lo/hi."""
    for k, x in v.items():
        if k not in ("lo", "hi") and isinstance(x, numbers.Real) and not isinstance(x, bool):
            return k
    return None


def _flatten(rec: dict, prefix: str = "") -> dict[str, object]:
    """Flattened key (``a · b``) -> value; summaries and intervals stay one value (one cell), an
    interval's other keys become their own columns."""
    out: dict[str, object] = {}
    for k, v in rec.items():
        key = f"{prefix}{k}"
        if _is_summary(v):
            out[key] = v
        elif _is_interval(v):
            out[key] = v
            main = _main(v)
            out.update(_flatten({a: b for a, b in v.items()
                                 if a not in ("lo", "hi", main)}, f"{key}{_SEP}"))
        elif isinstance(v, dict):
            out.update(_flatten(v, f"{key}{_SEP}"))
        else:
            out[key] = v
    return out


def _text(key: str, v) -> str:
    """A value as plain text (not yet escaped)."""
    if v is None:
        return "—"
    if isinstance(v, str):
        return v
    if isinstance(v, numbers.Real):
        return _num(v, key)
    if _is_summary(v):
        if _is_time(key) and {"median", "min", "max"} <= set(v):
            return f"{_secs(v['median'])} [{_secs(v['min'])}–{_secs(v['max'])}]"
        return f"{_num(v['mean'])} ± {_num(v['sd'])}"
    if _is_interval(v):
        return f"{_num(v[_main(v)])} [{_num(v['lo'])}, {_num(v['hi'])}]"
    if isinstance(v, list):
        if not v:
            return "—"
        if len(v) > _SHORT_LIST:
            return f"{len(v)} values"
        return ", ".join(_text(key, x) for x in v)
    if isinstance(v, dict):
        return "; ".join(f"{k}: {_text(k, x)}" for k, x in v.items())
    return str(v)


def _td(key: str, v) -> str:
    t = escape(_text(key, v))
    if isinstance(v, str) and v in VERDICTS:
        return f'<td class="v" style="background:{VERDICTS[v]}">{t}</td>'
    cls = ' class="num"' if isinstance(v, (numbers.Real, dict)) and v is not None else ""
    return f"<td{cls}>{t}</td>"


def _table(rows: dict[str, dict], first: str, lead: tuple[str, ...] = ()) -> str:
    """Rows (name -> record) as a table: one column per flattened key. Long lists are
    left to the figures; a column equal on every row (and not in ``HEADERS``) becomes a
    line under the table."""
    flat = {name: _flatten({_main(r): r} if _is_interval(r) else r)
            if isinstance(r, dict) else {"value": r} for name, r in rows.items()}
    keys: list[str] = [k for k in lead if any(k in f for f in flat.values())]
    for f in flat.values():
        keys += [k for k in f if k not in keys]
    shown, same, lists = [], [], []
    for k in keys:
        vals = [f.get(k) for f in flat.values()]
        if "curve" in k.lower() or any(isinstance(v, list) and len(v) > _SHORT_LIST
                                       for v in vals):
            lists.append(k)
        elif (len(vals) > 1 and k not in HEADERS and k not in lead
              and all(json.dumps(v) == json.dumps(vals[0]) for v in vals)):
            same.append(k)
        else:
            shown.append(k)
    head = "".join(f"<th>{escape(_nice(k))}</th>" for k in [first, *shown])
    body = "".join(
        f"<tr><th>{escape(str(name))}</th>" + "".join(_td(k, f.get(k)) for k in shown)
        + "</tr>" for name, f in flat.items())
    notes = []
    if same:
        notes.append("Same for every row: " + "; ".join(
            f"{_nice(k)} = {_text(k, next(iter(flat.values())).get(k))}" for k in same))
    if lists:
        notes.append("Long lists and curves (" + ", ".join(_nice(k) for k in lists)
                     + ") are in report.json; per-row ε̂ and curves are drawn in the "
                       "figures.")
    foot = "".join(f'<p class="muted">{escape(n)}</p>' for n in notes)
    return (f'<div class="wrap"><table><thead><tr>{head}</tr></thead><tbody>{body}'
            f"</tbody></table></div>{foot}")


def _kv(d: dict) -> str:
    """A record as a two-column table (lists of records become their own tables)."""
    rows, subs = [], []
    for k, v in _flatten(d).items():
        if "curve" in k.lower():
            continue  # drawn in the figures
        if isinstance(v, list) and v and all(isinstance(x, dict) for x in v):
            subs.append(f"<h3>{escape(_nice(k))}</h3>"
                        + _table({str(i + 1): x for i, x in enumerate(v)}, "#"))
        else:
            rows.append(f"<tr><th>{escape(_nice(k))}</th>{_td(k, v)}</tr>")
    table = f'<div class="wrap"><table>{"".join(rows)}</table></div>' if rows else ""
    return table + "".join(subs)


def _overview(data: dict) -> str:
    """Methods x forget sets: each cell ε̂ and verdict, coloured by the verdict."""
    scen = data.get("scenarios", {})
    methods: list[str] = []  # in the order of the forget set that runs the most
    for s in sorted(scen.values(), key=lambda s: -len(s.get("methods", {}))):
        methods += [m for m in s.get("methods", {}) if m not in methods]
    head = "<th>method</th>" + "".join(f"<th>{escape(n)}</th>" for n in scen)
    body = []
    for m in methods:
        cells = []
        for s in scen.values():
            r = s.get("methods", {}).get(m)
            if r is None:
                cells.append("<td>not run</td>")
                continue
            v = r.get("verdict", "")
            eps = _text("eps", r.get("eps"))
            style = f' style="background:{VERDICTS[v]}"' if v in VERDICTS else ""
            cells.append(f"<td{style}>{escape(eps)}<br><b>{escape(str(v))}</b></td>")
        body.append(f"<tr><th>{escape(m)}</th>{''.join(cells)}</tr>")
    legend = "".join(f'<span style="background:{c}">{escape(v)}</span>'
                     for v, c in VERDICTS.items())
    return (f'<p class="legend">{legend}</p><div class="wrap"><table><thead><tr>{head}'
            f"</tr></thead><tbody>{''.join(body)}</tbody></table></div>")


def _headline(data: dict) -> str:
    info, fam, pr = data.get("data", {}), data.get("family", {}), data.get("protocol", {})
    scen = data.get("scenarios", {})
    counts: dict[str, int] = {}
    for s in scen.values():
        for r in s.get("methods", {}).values():
            counts[r.get("verdict", "?")] = counts.get(r.get("verdict", "?"), 0) + 1
    n_methods = len({m for s in scen.values() for m in s.get("methods", {})})
    chk, t = data.get("sisa_check", {}), data.get("timings", {})
    name = fam.get("name", data.get("config", {}).get("family"))
    rows = _text("", info.get("rows"))
    parts = [f"{name + ' family, ' if name else ''}N = {pr.get('n_models', '?')} models "
             f"per side, {n_methods} methods on {len(scen)} forget sets of {rows} rows."]
    if counts:
        parts.append("Verdicts: " + ", ".join(f"{n} {v}" for v, n in counts.items()) + ".")
    if chk.get("seeds_checked"):
        parts.append(f"SISA's forget byte-identical to a fit without U on "
                     f"{chk['byte_identical']}/{chk['seeds_checked']} seeds "
                     f"({'passed' if chk.get('ok') else 'FAILED'}).")
    if t.get("total_s") is not None:
        parts.append(f"Wall time {_secs(t['total_s'])}.")
    return (f"<h1>sisa compare: {escape(str(info.get('dataset', '?')))}</h1>"
            f'<p class="lead">{escape(" ".join(parts))}</p>')


def _scenarios(data: dict) -> str:
    out = ["<h2>ε̂ against each method's floor, per forget set</h2>"]
    for name, s in data.get("scenarios", {}).items():
        info = s.get("info", {})
        out.append(f"<h3>{escape(str(name))}: {escape(str(info.get('rule', '')))}</h3>")
        facts = {k: v for k, v in info.items() if k != "rule"}
        out.append(f'<p class="muted">{escape(_text("", facts))}</p>')
        rows = {}
        for m, r in s.get("methods", {}).items():
            floor = s.get("floors", {}).get(r.get("reference"))
            if _is_interval(floor) and "floor" not in r:  # the interval only: one cell
                r = {**r, "floor": {k: floor[k] for k in (_main(floor), "lo", "hi")}}
            rows[m] = r
        out.append(_table(rows, "method", lead=_FIRST))
        out.append("<h3>floors (each reference against a second draw of itself)</h3>")
        out.append(_table(s.get("floors", {}), "reference"))
        extra = {k: v for k, v in s.items() if k not in ("info", "methods", "floors")}
        if extra:
            out.append(_kv(extra))
    return "".join(out)


def _costs(data: dict) -> str:
    c = data.get("costs")
    if not c:
        return ""
    out = ["<h2>Cost and accuracy (full-data run)</h2>"]
    for label, methods in c.get("requests", {}).items():
        out += [f"<h3>{escape(str(label))} request</h3>", _table(methods, "method")]
    rest = {k: v for k, v in c.items() if k != "requests"}
    if rest:
        out.append(_kv(rest))
    return "".join(out)


def _figures(data: dict, figures: bool) -> str:
    if not figures:
        return ""
    try:
        from sisa.compare.report.html_figures import figures as draw
    except ImportError:  # matplotlib is the optional `plots` extra
        return ('<p class="muted">No figures: install them with '
                "<code>pip install 'sisa[plots]'</code>.</p>")
    return "<h2>Figures</h2>" + "".join(
        f'<figure><img decoding="sync" alt="{escape(title)}" src="{escape(uri)}">'
        f"<figcaption>{escape(title)}</figcaption></figure>" if uri is not None else
        f'<p class="muted">{escape(title)}: not drawn (this report lacks data it reads).</p>'
        for title, uri in draw(data, _nice))


_DONE = {"scenarios", "costs", "figures", "config", "protocol", "family", "data"}


def render(data: dict, figures: bool = True) -> str:
    """The whole page of a report's data (``report.json``'s content).

    Parameters
    ----------
    data : dict
        The report's data.
    figures : bool, default=True
        Draw the figures inline (needs matplotlib; without it the page says so).

    Returns
    -------
    str
        A self-contained HTML document.
    """
    others = "".join(f"<h2>{escape(_nice(k))}</h2>" + (_kv(v) if isinstance(v, dict)
                                                        else f"<p>{escape(_text(k, v))}</p>")
                     for k, v in data.items() if k not in _DONE)
    setup = {k: data[k] for k in ("config", "protocol", "family", "data") if k in data}
    title = f"sisa compare: {data.get('data', {}).get('dataset', '')}"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{escape(title)}</title><style>{_CSS}</style></head><body>"
        + _headline(data) + "<h2>Verdicts at a glance</h2>" + _overview(data)
        + _figures(data, figures) + _scenarios(data) + _costs(data) + others
        + "<h2>Setup</h2>" + _kv(setup) + "</body></html>\n")


def write(data: dict, out: str | os.PathLike, figures: bool = True) -> Path:
    """Write ``report.html`` of a report's data into the directory ``out``."""
    path = Path(out) / "report.html"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".html.tmp")  # a crash leaves the old page, not half a page
    tmp.write_text(render(data, figures), encoding="utf-8")
    tmp.replace(path)
    return path


def _load(run_dir: Path) -> dict:
    src = run_dir / "report.json"
    if not src.is_file():
        raise InputError(f"no report.json in {run_dir}: give the --out directory of a "
                         "`sisa compare` run")
    try:
        data = json.loads(src.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{src} is not a report's JSON ({type(exc).__name__}): "
                         "re-run `sisa compare`") from None
    if not isinstance(data, dict) or not isinstance(data.get("scenarios"), dict):
        raise InputError(f"{src} has no 'scenarios': not a `sisa compare` report")
    return data


def main(argv: list[str] | None = None) -> int:
    """``python -m sisa.compare.report.html RUN_DIR [--screenshot PNG]``: re-render a saved
    run's ``report.html`` from its ``report.json`` (and screenshot it in headless
    Chromium). Exit 2 on bad input, with one line on stderr."""
    p = argparse.ArgumentParser(prog="python -m sisa.compare.report.html",
                                description="Re-render report.html from a saved run.")
    p.add_argument("run_dir", type=Path, help="a `sisa compare --out` directory")
    p.add_argument("--screenshot", type=Path, metavar="PNG",
                   help="also write a screenshot of the page (headless Chromium)")
    p.add_argument("--width", type=int, default=1280)
    p.add_argument("--height", type=int, default=2400)
    args = p.parse_args(argv)
    try:
        page = write(_load(args.run_dir), args.run_dir)
        print(page)
        if args.screenshot is not None:
            from sisa.compare.report.browser import screenshot

            print(screenshot(page, args.screenshot, args.width, args.height))
    except InputError as exc:
        print(f"sisa.compare.report.html: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
