"""Before/after: run the tracked suite at two commits and print the ratios.

    python -m benchmarks.compare BASE [HEAD] [--size quick|full] [--repeat K] [--only EXPR]

Each commit is checked out into a temporary git worktree; the suite of *this* checkout
(benchmarks/suite) runs against that commit's sisa (PYTHONPATH names the worktree), so an
old commit is measured by the same benchmarks. HEAD defaults to the working tree as it is.
Prints, per benchmark, both medians, the speed-up (base / head) and both peak RSS figures.

``--repeat K`` runs the two suites K times each, alternating base, head, base, head, and keeps
per benchmark the lowest of its K medians: on a shared machine a burst of load then slows
both sides' runs alike instead of landing on one of them.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SUITE = Path(__file__).resolve().parent / "suite"


def _git(*args: str, cwd: Path) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def run_suite(code: Path, size: str, out: Path, work: Path, only: str | None = None) -> dict:
    """Run the suite against the sisa in ``code`` (the benchmarks pytest's ``-k only``
    selects, if given); return pytest-benchmark's JSON."""
    suite = work / f"suite-{out.stem}"
    shutil.copytree(SUITE, suite, ignore=shutil.ignore_patterns("__pycache__"))
    env = {**os.environ, "PYTHONPATH": str(code)}
    done = subprocess.run([sys.executable, "-m", "pytest", str(suite), "-q", "-p",
                           "no:cacheprovider", f"--size={size}", f"--benchmark-json={out}",
                           *(["-k", only] if only else [])],
                          cwd=work, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"the suite failed at {code}: {done.stdout[-1500:]}{done.stderr[-500:]}")
    return json.loads(out.read_text())


def _checkout(repo: Path, rev: str | None, tree: Path) -> Path:
    """The code to measure: ``repo`` itself for ``None`` (the working tree), else a detached
    worktree of ``rev``."""
    if rev is None:
        return repo
    sha = _git("rev-parse", "--verify", f"{rev}^{{commit}}", cwd=repo)
    _git("worktree", "add", "--detach", str(tree), sha, cwd=repo)
    return tree


def best_of(runs: list[dict]) -> dict:
    """One pytest-benchmark result from K runs of the same suite: per benchmark, the run
    with the lowest median (its stats and peak memory figures together)."""
    best: dict[str, dict] = {}
    for run in runs:
        for b in run["benchmarks"]:
            if b["name"] not in best or b["stats"]["median"] < best[b["name"]]["stats"]["median"]:
                best[b["name"]] = b
    return {"benchmarks": list(best.values())}


def _op_mb(bench: dict) -> float | None:
    """Peak RSS the operation itself added (its process's peak over its setup's)."""
    info = bench["extra_info"]
    if "peak_rss_mb" not in info:
        return None
    return round(info["peak_rss_mb"] - info["baseline_rss_mb"], 1)


def table(base: dict, head: dict) -> list[dict]:
    """One row per benchmark both runs have: medians, speed-up, peak RSS."""
    old = {b["name"]: b for b in base["benchmarks"]}
    rows = []
    for b in head["benchmarks"]:
        if b["name"] not in old:
            continue
        a = old[b["name"]]
        rows.append({"benchmark": b["name"].removeprefix("test_"),
                     "base_ms": 1000 * a["stats"]["median"], "head_ms": 1000 * b["stats"]["median"],
                     "speedup": a["stats"]["median"] / b["stats"]["median"],
                     "base_peak_mb": a["extra_info"].get("peak_rss_mb"),
                     "head_peak_mb": b["extra_info"].get("peak_rss_mb"),
                     "base_op_mb": _op_mb(a), "head_op_mb": _op_mb(b)})
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.compare", description=__doc__.split(
        "\n\n")[0])
    p.add_argument("base", help="a commit, branch or tag")
    p.add_argument("head", nargs="?", default=None, help="default: the working tree as it is")
    p.add_argument("--size", choices=("quick", "full"), default="full")
    p.add_argument("--repeat", type=int, default=1, metavar="K",
                   help="alternate the two suites K times; keep each benchmark's best median")
    p.add_argument("--only", metavar="EXPR",
                   help="the benchmarks a pytest -k expression selects, e.g. 'fit or forget'")
    p.add_argument("--json", action="store_true", help="print the rows as JSON")
    p.add_argument("--repo", type=Path, default=ROOT, help="the git repository (default: this one)")
    args = p.parse_args(argv)
    if args.repeat < 1:
        p.error(f"--repeat must be at least 1, got {args.repeat}")
    with tempfile.TemporaryDirectory(prefix="sisa-bench-compare-") as tmp:
        work = Path(tmp)
        codes = {label: _checkout(args.repo, rev, work / f"tree-{label}")
                 for label, rev in (("base", args.base), ("head", args.head))}
        try:
            runs: dict[str, list[dict]] = {"base": [], "head": []}
            for k in range(args.repeat):
                for label, code in codes.items():
                    runs[label].append(run_suite(code, args.size, work / f"{label}-{k}.json",
                                                 work, args.only))
        finally:
            for code in codes.values():
                if code != args.repo:
                    _git("worktree", "remove", "--force", str(code), cwd=args.repo)
        rows = table(best_of(runs["base"]), best_of(runs["head"]))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(f"{'benchmark':<16} {'base ms':>10} {'head ms':>10} {'speed-up':>9} "
          f"{'peak MB (op) base':>18} {'head':>16}")
    for r in rows:
        print(f"{r['benchmark']:<16} {r['base_ms']:>10.2f} {r['head_ms']:>10.2f} "
              f"{r['speedup']:>8.2f}x {r['base_peak_mb']:>9} ({r['base_op_mb']:>6}) "
              f"{r['head_peak_mb']:>7} ({r['head_op_mb']:>6})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
