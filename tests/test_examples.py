"""Every example runs as is (at small size)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_quickstart_runs_and_verifies(tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py"), "--rows",
                          "3000", "--store", str(tmp_path / "st")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "forgot 25 rows" in out.stdout and out.stdout.strip().splitlines()[-1].startswith(
        "PASS")


def test_demo_command_is_the_main_job(tmp_path):
    out = subprocess.run([sys.executable, "-m", "sisa.cli", "demo", "--rows", "3000",
                          "--forget", "30", "--shards", "3", "--slices", "2", "--store",
                          str(tmp_path / "demo"), "--backend", "local"], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "[4/4] receipt" in out.stdout and "PASS" in out.stdout


def test_deep_fashion_mnist_example_runs_and_verifies(tmp_path):
    pytest.importorskip("torch")
    out = subprocess.run([sys.executable, str(ROOT / "examples" / "deep_fashion_mnist.py"),
                          "--rows", "800", "--epochs", "1", "--shards", "2", "--slices", "2",
                          "--backend", "local", "--store", str(tmp_path / "st")],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "forgot 50 row(s)" in out.stdout and "PASS" in out.stdout
