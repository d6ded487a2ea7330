"""The tracked benchmark suite runs (quick mode), and a before/after of two commits is one
command: ``python -m benchmarks.compare BASE HEAD`` on a repository of two real commits of
sisa, the second made slower on purpose, must show it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OPS = {"ingest", "read_slice", "fit", "forget_one_row", "verify"}


def _git(repo: Path, *args: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t",
           "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@t"}
    subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True)


@pytest.mark.slow
def test_compare_two_commits_is_one_command(tmp_path):
    repo = tmp_path / "repo"
    shutil.copytree(ROOT / "sisa", repo / "sisa", ignore=shutil.ignore_patterns("__pycache__"))
    _git(repo, "init", "-q")
    _git(repo, "add", "-A")
    _git(repo, "commit", "-qm", "base")
    # The head commit reads every slice 20 ms slower: the comparison must see it.
    with open(repo / "sisa" / "__init__.py", "a") as f:
        f.write("\nfrom .store.read.reading import RowReader as _Rows\n_read = _Rows.read_slice\n"
                "_Rows.read_slice = lambda self, *a: "
                "(__import__('time').sleep(0.02), _read(self, *a))[1]\n")
    _git(repo, "commit", "-qam", "slower slice reads")
    done = subprocess.run([sys.executable, "-m", "benchmarks.compare", "HEAD~1", "HEAD",
                           "--size", "quick", "--json", "--repo", str(repo)], cwd=ROOT,
                          capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stderr[-2000:] + done.stdout[-2000:]
    rows = {r["benchmark"]: r for r in json.loads(done.stdout)}
    assert set(rows) == OPS
    for r in rows.values():
        assert r["base_ms"] > 0 and r["head_ms"] > 0 and r["base_peak_mb"] > 50
    assert rows["read_slice"]["head_ms"] - rows["read_slice"]["base_ms"] >= 15
    assert rows["read_slice"]["speedup"] < 0.5


def test_best_of_keeps_each_benchmarks_lowest_median_with_its_own_figures():
    from benchmarks.compare import best_of

    def run(fit_ms, forget_ms, mb):
        return {"benchmarks": [
            {"name": "test_fit", "stats": {"median": fit_ms}, "extra_info": {"peak_rss_mb": mb}},
            {"name": "test_forget", "stats": {"median": forget_ms},
             "extra_info": {"peak_rss_mb": mb}}]}

    best = {b["name"]: b for b in best_of([run(5.0, 2.0, 100), run(4.0, 3.0, 200)])["benchmarks"]}
    assert best["test_fit"]["stats"]["median"] == 4.0
    assert best["test_fit"]["extra_info"]["peak_rss_mb"] == 200  # figures of the same run
    assert best["test_forget"]["stats"]["median"] == 2.0
    assert best["test_forget"]["extra_info"]["peak_rss_mb"] == 100


def _breakdown(*args: str) -> dict:
    done = subprocess.run([sys.executable, "-m", "benchmarks.forget_breakdown", *args],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout)


def test_forget_floor_parts_add_up_beside_sisas_own_forget(tmp_path):
    store = tmp_path / "store"
    _breakdown("build", "--rows", "4000", "--dir", str(store), "--shards", "4", "--slices", "2")
    out = _breakdown("floor", "--dir", str(store), "--forgets", "3", "--seed", "1")
    parts, floor = out["floor_parts_ms"], out["floor_outside_ms"]
    assert set(parts) == {p for p in _floor_parts() if p != "fsync_early"}
    assert all(v >= 0 for v in parts.values()) and floor > 0
    assert abs(sum(parts.values()) - floor) < 0.01  # the total is its parts
    # the floor makes the files (and fsyncs) sisa's forget of the same row makes
    assert out["floor_fsyncs"] > 0 and out["fsyncs_match_sisa"] is True
    assert out["floor_fsyncs"] == out["sisa"]["fsyncs"]
    assert out["fit_ms"] > 0 and abs(out["fit_ms"] - out["sisa"]["fit_ms"]) < 0.01
    assert 0 < out["best_possible_share"] < 1
    assert abs(out["best_possible_share"] - floor / (floor + out["fit_ms"])) < 1e-3
    ov = out["overlapped"]
    assert 0 < ov["best_possible_share"] < 1 and ov["fsyncs"] > out["floor_fsyncs"]
    assert ov["floor_outside_ms"] <= ov["before_fit_ms"] + ov["beside_fit_ms"] \
        + ov["after_fit_ms"] + 1e-6
    assert set(out["sisa_above_floor"]) >= {"plan_s", "write_data_s", "commit_s", "fsync_s"}
    assert not list(tmp_path.glob("sisa-floor-*"))  # the scratch folder is gone


def _floor_parts() -> dict:
    from benchmarks.forget_breakdown import FLOOR_PARTS

    return FLOOR_PARTS
