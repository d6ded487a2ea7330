"""The `sisa` command as a newcomer uses it: real processes, real files."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from sisa import Store
from sisa.cli import build_parser

SUBCOMMANDS = ["train", "forget", "predict", "verify", "repair", "history", "status", "plan",
               "demo", "compare", "keygen", "key"]


def sisa(*args: str, cwd=None, check: bool = True) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "sisa.cli", *args], capture_output=True,
                         text=True, cwd=cwd, timeout=300)
    if check and out.returncode != 0:
        raise AssertionError(f"sisa {' '.join(args)} exited {out.returncode}:\n{out.stderr}")
    return out


@pytest.mark.parametrize("cmd", SUBCOMMANDS)
def test_every_subcommand_has_help_with_an_example(cmd, capsys):
    with pytest.raises(SystemExit) as info:
        build_parser().parse_args([cmd, "--help"])
    assert info.value.code == 0
    assert "example: sisa " + cmd in capsys.readouterr().out


@pytest.mark.parametrize("argv", [["train"], ["train", "adult", "--store"],
                                  ["forget", "s", "--shards", "x"], ["plan", "--rows", "ten"],
                                  ["nonsense"]])
def test_bad_arguments_exit_2_with_one_line(argv):
    out = sisa(*argv, check=False)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "error:" in lines[0]


def test_train_forget_verify_status_history_predict(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3000, 4))
    table = pa.table({"uid": np.arange(3000) + 1000, **{f"f{i}": X[:, i] for i in range(4)},
                      "y": (X[:, 0] + X[:, 1] > 0).astype(int)})
    pq.write_table(table, tmp_path / "data.parquet")
    out = sisa("train", "data.parquet", "--label", "y", "--id", "uid", "--shards", "3",
               "--slices", "2", "--store", "st", "--holdout", "0.2", "--backend", "local",
               "--quiet", "--json", cwd=tmp_path)
    trained = json.loads(out.stdout)
    assert trained["holdout"]["score"] > 0.9 and trained["rows"] < 3000
    held = Store.open(tmp_path / "st").rows.read_index().column("sample_id").to_pylist()[:4]
    (tmp_path / "ids.txt").write_text(f"{held[0]}\n{held[1]}, {held[2]}\n")
    receipt = json.loads(sisa("forget", "st", "--ids", "ids.txt", "--id", str(held[3]), "--json",
                              "--quiet", "--backend", "local", cwd=tmp_path).stdout)
    assert receipt["n_ids"] == 4 and receipt["rows_retrained"] < receipt["rows_full_retrain"]
    text = sisa("verify", "st", "--backend", "local", cwd=tmp_path).stdout
    assert "PASS" in text.splitlines()[-1]
    status = sisa("status", "st", cwd=tmp_path).stdout
    assert "4 rows in 1 request(s)" in status and "accuracy" in status
    assert receipt["request_id"] in sisa("history", "st", cwd=tmp_path).stdout
    sisa("predict", "st", "data.parquet", "--out", "pred.parquet", cwd=tmp_path)
    pred = pq.read_table(tmp_path / "pred.parquet")
    assert pred.column_names == ["uid", "prediction", "proba_0", "proba_1"]
    assert pred.num_rows == 3000
    assert (pred.column("prediction").to_numpy() == table.column("y").to_numpy()).mean() > 0.9
    bad = sisa("forget", "st", "--id", "77", cwd=tmp_path, check=False)
    assert bad.returncode == 2 and "77" in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_a_corrupted_store_gives_one_line_naming_the_file(tmp_path):
    sisa("train", "synthetic", "--model", "sgd-regressor", "--shards", "2", "--slices", "2",
         "--store", "st", "--rows", "400", "--backend", "local", "--quiet", cwd=tmp_path)
    victim = next((tmp_path / "st" / "checkpoints").rglob("*.pkl"))
    victim.write_bytes(victim.read_bytes()[:-3] + b"xyz")
    out = sisa("status", "st", cwd=tmp_path, check=False)  # status checks sizes only: fine
    assert out.returncode == 0
    out = sisa("verify", "st", "--backend", "local", cwd=tmp_path, check=False)
    assert out.returncode == 1 and victim.name[:8] in out.stdout
    out = sisa("predict", "st", "x.parquet", "--out", "p.parquet", cwd=tmp_path, check=False)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 1 and len(lines) == 1 and victim.name[:12] in lines[0]
    assert "Traceback" not in out.stderr


def test_plan_recommends_and_measures(tmp_path):
    out = json.loads(sisa("plan", "--rows", "100000", "--deletions-per-day", "10", "--shards",
                          "1,4", "--slices", "1,4", "--json", cwd=tmp_path).stdout)
    by = {(r["n_shards"], r["n_slices"]): r["rows_per_request"] for r in out}
    assert by[(4, 4)] < by[(4, 1)] < by[(1, 1)]


def _csv(path, n=400, label=None):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 3))
    y = (X[:, 0] > 0).astype(np.int64) if label is None else label
    pq.write_table(pa.table({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "label": y}), path)
    return path


def test_train_refuses_a_foreign_directory_and_leaves_no_store_when_training_fails(tmp_path):
    data = _csv(tmp_path / "d.parquet")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not sisa's")
    out = sisa("train", str(data), "--label", "label", "--store", "mine", "--backend", "local",
               "--quiet", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "not empty and holds no sisa store" in out.stderr
    assert (tmp_path / "mine" / "notes.txt").read_text() == "not sisa's"
    # a continuous label for a classifier: one line, exit 2, and nothing left behind
    out = sisa("train", str(data), "--label", "a", "--store", "st", "--backend", "local",
               "--quiet", cwd=tmp_path, check=False)
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1
    assert "distinct non-integer values" in out.stderr and not (tmp_path / "st").exists()
    out = sisa("train", str(data), "--label", "label", "--store", "st", "--epochs", "0",
               cwd=tmp_path, check=False)
    assert out.returncode == 2 and "--epochs" in out.stderr and not (tmp_path / "st").exists()


def test_repair_rebuilds_a_lost_checkpoint_and_refuses_lost_data(tmp_path):
    data = _csv(tmp_path / "d.parquet")
    sisa("train", str(data), "--label", "label", "--store", "st", "--shards", "2", "--slices",
         "2", "--backend", "local", "--quiet", cwd=tmp_path)
    assert sisa("verify", "st", "--quiet", "--backend", "local", cwd=tmp_path).stdout == ""
    st = Store.open(tmp_path / "st")
    (tmp_path / "st" / st.manifest.checkpoints["1/0"].file).unlink()
    out = sisa("verify", "st", "--quiet", "--backend", "local", cwd=tmp_path, check=False)
    assert out.returncode == 1 and "FAIL" in out.stdout
    out = sisa("repair", "st", "--backend", "local", cwd=tmp_path)
    assert "shard 1 from slice 0" in out.stdout and "retrained shards [1]" in out.stdout
    sisa("verify", "st", "--quiet", "--backend", "local", cwd=tmp_path)
    with open(tmp_path / "st" / st.manifest.slices["0/1"].file, "r+b") as f:
        f.truncate(50)
    out = sisa("repair", "st", "--backend", "local", cwd=tmp_path, check=False)
    assert out.returncode == 1 and "restore the store from backup" in out.stderr


def test_train_names_cli_options_in_its_errors_and_takes_features(tmp_path):
    data = _csv(tmp_path / "d.parquet")
    out = sisa("train", str(data), "--store", "st", cwd=tmp_path, check=False)
    assert out.returncode == 2 and "--label COL is required" in out.stderr
    sisa("train", str(data), "--label", "label", "--features", "a,b", "--store", "st",
         "--backend", "local", "--quiet", "--holdout", "0.2", cwd=tmp_path)
    assert Store.open(tmp_path / "st").manifest["schema"]["feature_names"] == ["a", "b"]
    out = sisa("train", str(data), "--label", "label", "--store", "st", cwd=tmp_path,
               check=False)
    assert out.returncode == 2 and "--overwrite" in out.stderr


def test_progress_off_a_terminal_is_a_few_whole_lines(tmp_path):
    """With stderr a pipe (a log file, CI, `ray job logs`), progress bars print whole
    throttled lines: no carriage-return fragments, no blank erasures, a few lines a bar."""
    runs = [["train", "synthetic", "--rows", "2000", "--shards", "4", "--slices", "2",
             "--store", "st", "--backend", "local"],
            ["forget", "st", "--id", "3", "--backend", "local"],
            ["verify", "st", "--backend", "local"]]
    for argv in runs:
        # bytes, not text: text mode would turn every \r into a newline
        out = subprocess.run([sys.executable, "-m", "sisa.cli", *argv], capture_output=True,
                             cwd=tmp_path, timeout=300)
        assert out.returncode == 0, out.stderr.decode()[-2000:]
        assert b"\r" not in out.stderr, out.stderr
        lines = out.stderr.decode().splitlines()
        assert lines and all(line.strip() for line in lines), out.stderr
        assert len(lines) <= 6, out.stderr  # ingest, write, train: a start and an end line
