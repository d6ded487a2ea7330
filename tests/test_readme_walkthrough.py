"""The README's CLI walkthrough runs as written: every ``$`` line, verbatim, in order, in an
empty folder with a fresh home (so ``sisa keygen`` writes a new key), each exiting 0; the
files it names are the ones earlier lines wrote. The tutorial page carries the same block."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

ROOT = Path(__file__).resolve().parent.parent


def _walkthrough(text: str) -> str:
    section = text.split("## CLI walkthrough\n", 1)[1]
    return re.search(r"```console\n(.*?)```", section, re.S).group(1)


def test_tutorial_page_carries_the_readme_walkthrough():
    block = _walkthrough((ROOT / "README.md").read_text())
    assert block in (ROOT / "docs" / "tutorial.md").read_text()


@pytest.mark.slow
def test_readme_cli_walkthrough_runs_as_written(tmp_path):
    block = _walkthrough((ROOT / "README.md").read_text())
    commands = [line[2:] for line in block.splitlines() if line.startswith("$ ")]
    assert len(commands) >= 12 and all(c.split()[0] in ("sisa", "python") for c in commands)
    bindir = str(Path(sys.executable).parent)  # the sisa this interpreter installed
    assert shutil.which("sisa", path=bindir), "the sisa command is not installed beside python"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SISA_", "RAY_ADDRESS"))}
    env.update(HOME=str(tmp_path / "home"), PATH=f"{bindir}:{env['PATH']}",
               PYTHONPATH=str(ROOT))
    (tmp_path / "home").mkdir()
    work = tmp_path / "work"
    work.mkdir()
    for command in commands:
        done = subprocess.run(["bash", "-c", command], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, f"{command!r} exited {done.returncode}: {done.stderr[-800:]}"
    receipt = json.loads((work / "receipt.json").read_text())
    assert receipt["n_ids"] == 1 and receipt["signature"]
    assert (work / "owner.pub").read_text().startswith("ed25519:")
    predictions = pq.read_table(work / "predictions.parquet")
    assert predictions.num_rows == pq.read_metadata(work / "new.parquet").num_rows > 30_000
