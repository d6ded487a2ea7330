"""Forged and damaged Arrow/Parquet files (issue 22, item 11).

Arrow trusts the offsets and buffer sizes a file declares. Before every record batch was
validated, a label column with forged string offsets crashed ``sisa train`` (SIGSEGV, no
message), or put the process's memory into the error text, and a feature buffer declared
shorter than its column trained on whatever memory followed it. Each file here is crafted
by patching the bytes of a valid file; each command runs as a real ``sisa`` process (a
crash must not take the test runner with it) and must end with exit 2, one line on
stderr naming the file, no value of the file in it, and every store byte-for-byte as it
was. A store's own files are hash-checked, but an unsigned store's manifest can be forged
along with a file: such a slice is refused as damage (exit 1), not read.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from sisa import Store
from sisa.store import manifest as manifest_mod
from tests.helpers import run_cli, tree_digest

ROOT = Path(__file__).resolve().parents[2]
N = 400
VALUES = ("yes", "no!", "u00")  # label values and id prefix: never in an error line


def _cols() -> dict:
    X = np.random.default_rng(0).normal(size=(N, 3))
    return {"f0": X[:, 0], "f1": X[:, 1], "f2": X[:, 2],
            "y": pa.array(["yes" if v > 0 else "no!" for v in X[:, 0]]),
            "uid": pa.array([f"u{i:04d}" for i in range(N)])}


def _ipc(cols: dict) -> bytearray:
    table = pa.table(cols)
    sink = pa.BufferOutputStream()
    with ipc.new_file(sink, table.schema) as w:
        w.write_table(table)
    return bytearray(sink.getvalue().to_pybytes())


def _parquet(cols: dict) -> bytearray:
    buf = io.BytesIO()
    pq.write_table(pa.table(cols), buf, compression="none", use_dictionary=False)
    return bytearray(buf.getvalue())


def _patch(raw: bytearray, old: bytes, new: bytes) -> bytearray:
    """``raw`` with the first ``old`` (which must be there) replaced by ``new``."""
    i = raw.find(old)
    assert i >= 0, "the bytes to forge are not in the file"
    raw[i:i + len(old)] = new
    return raw


def _offsets(width: int) -> np.ndarray:
    return np.arange(N + 1, dtype=np.int32) * width  # every label is 3 bytes, every id 5


def _forged_offsets(width: int, forge: Callable[[np.ndarray], None]) -> bytearray:
    old = _offsets(width)
    new = old.copy()
    forge(new)
    return _patch(_ipc(_cols()), old.tobytes(), new.tobytes())


def _shift(start: int, by: int) -> Callable[[np.ndarray], None]:
    return lambda o: o.__setitem__(slice(start, None), o[start:] + by)


def _dict_ids() -> bytearray:
    codes = np.arange(N, dtype=np.int32)
    cols = {**_cols(), "uid": pa.DictionaryArray.from_arrays(pa.array(codes), _cols()["uid"])}
    bad = codes.copy()
    bad[7] = 0x7FFFFFF0
    return _patch(_ipc(cols), codes.tobytes(), bad.tobytes())


def _bad_utf8() -> bytearray:
    return _patch(_ipc(_cols()), b"yes", b"\xff\xfe\xfd")


def _bad_column_name() -> bytearray:
    """Column ``f2`` renamed to two bytes that are not UTF-8 (in every copy of the schema)."""
    return bytearray(bytes(_ipc(_cols())).replace(b"\x02\x00\x00\x00f2",
                                                   b"\x02\x00\x00\x00\xc8\x32"))


def _bad_page_header() -> bytearray:
    raw = _parquet(_cols())
    raw[4:24] = b"\xff" * 20  # the first page header
    return raw


FORGED: dict[str, tuple[str, Callable[[], bytearray]]] = {
    # the label's offsets run past its data (X = 256 KiB: the memory leak)
    "label-offsets-256k": ("arrow", lambda: _forged_offsets(3, _shift(2, 262144))),
    "label-offsets-2g": ("arrow", lambda: _forged_offsets(3, _shift(2, 0x7FFFF000))),
    # one offset forged, the last one still fits: only full validation sees it
    "label-offset-non-monotonic": ("arrow", lambda: _forged_offsets(
        3, lambda o: o.__setitem__(2, 0x7FFFF000))),
    "id-offsets": ("arrow", lambda: _forged_offsets(5, _shift(3, 0x40000000))),
    "id-dictionary-code": ("arrow", _dict_ids),
    "label-not-utf8": ("arrow", _bad_utf8),
    # f0's values buffer declared 8 bytes long instead of 3,200 (offset 0 in the body)
    "feature-buffer-short": ("arrow", lambda: _patch(_ipc(_cols()), struct.pack("<qq", 0, 3200),
                                                     struct.pack("<qq", 0, 8))),
    "column-name-not-utf8": ("arrow", _bad_column_name),  # found by the fuzz run
    "arrow-truncated": ("arrow", lambda: _ipc(_cols())[:9000]),
    "parquet-truncated": ("parquet", lambda: _parquet(_cols())[:4000]),
    "parquet-page-header": ("parquet", _bad_page_header),
    "parquet-string-length": ("parquet", lambda: _patch(_parquet(_cols()), b"\x03\x00\x00\x00yes",
                                                        b"\xf0\xff\xff\x7fyes")),
}
TRAIN = ("--label", "y", "--id", "uid", "--shards", "2", "--slices", "2", "--backend", "local")


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The forged files, and a store ``S`` trained on the good one."""
    root = tmp_path_factory.mktemp("forged")
    for name, (ext, make) in FORGED.items():
        (root / f"{name}.{ext}").write_bytes(bytes(make()))
    pq.write_table(pa.table(_cols()), root / "good.parquet")
    code, _, err = run_cli("train", str(root / "good.parquet"), *TRAIN, "--store",
                           str(root / "S"), "--quiet")
    assert code == 0, err
    return root


# One process imports sisa once and runs each command in a forked child: a crash kills
# only that child (its exit is -11), and a case costs no import time.
RUNNER = """
import json, os, sys
from sisa.cli import main
from tests.helpers import tree_digest
out = []
for case in json.loads(sys.stdin.read()):
    pid = os.fork()
    if pid == 0:
        for fd, name in ((1, "out"), (2, "err")):
            os.dup2(os.open(case[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), fd)
        try:
            code = main(case["argv"])
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    status = os.waitpid(pid, 0)[1]
    out.append({"code": os.waitstatus_to_exitcode(status), "store": tree_digest(case["store"])})
print(json.dumps(out))
"""


def run_cases(cases: list[dict]) -> list[dict]:
    """Run each case's ``sisa`` argv: its exit code, stdout, stderr and the digest of
    its store afterwards."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", RUNNER], input=json.dumps(cases), cwd=ROOT,
                          env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout)
    for case, res in zip(cases, results, strict=True):
        res["stdout"] = Path(case["out"]).read_text(errors="replace")
        res["stderr"] = Path(case["err"]).read_text(errors="replace")
    return results


def _one_line(res: dict, code: int, command: str) -> str:
    assert res["code"] == code, (res["code"], res["stderr"][-2000:])
    lines = res["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"sisa {command}: error: "), res["stderr"]
    assert not any(v in lines[0] for v in VALUES), lines[0]  # no value of the file
    return lines[0]


CASES = [(name, "train") for name in FORGED] + [
    (name, "predict") for name in ("label-offsets-2g", "label-offset-non-monotonic",
                                   "id-offsets", "id-dictionary-code", "label-not-utf8",
                                   "feature-buffer-short")] + [
    ("label-offset-non-monotonic", "holdout"), ("feature-buffer-short", "holdout"),
    ("label-offsets-2g", "new-store"), ("label-offsets-2g", "forget-ids")]


def _argv(files: Path, store: str, out: Path, name: str, how: str) -> list[str]:
    path = str(files / f"{name}.{FORGED[name][0]}")
    argv = {"train": ("train", path, *TRAIN, "--store", store, "--overwrite"),
            "holdout": ("train", path, *TRAIN, "--holdout", "0.2", "--store", store,
                        "--overwrite"),
            "new-store": ("train", path, *TRAIN, "--store", str(out / "new")),
            "predict": ("predict", store, path, "--out", str(out / "p.parquet")),
            "forget-ids": ("forget", store, "--ids", path, "--backend", "local")}[how]
    return [*argv, "--quiet"]


@pytest.fixture(scope="module")
def ran(files, tmp_path_factory) -> dict:
    """Every case of :data:`CASES`, run once on its own copy of ``S``: its result and
    its (empty) output folder."""
    before = tree_digest(files / "S")
    cases, outs = [], []
    for name, how in CASES:
        out = tmp_path_factory.mktemp(f"{name}-{how}")
        logs = tmp_path_factory.mktemp("logs")
        shutil.copytree(files / "S", logs / "S")
        outs.append(out)
        cases.append({"argv": _argv(files, str(logs / "S"), out, name, how),
                      "store": str(logs / "S"), "out": str(logs / "out"),
                      "err": str(logs / "err")})
    results = run_cases(cases)
    return {case: (res, out, before) for case, res, out in zip(CASES, results, outs,
                                                               strict=True)}


@pytest.mark.parametrize("name, how", CASES, ids=[f"{n}-{h}" for n, h in CASES])
def test_a_forged_input_file_is_refused_in_one_line_and_changes_nothing(files, ran, name, how):
    res, out, before = ran[(name, how)]
    command = {"holdout": "train", "new-store": "train", "forget-ids": "forget"}.get(how, how)
    line = _one_line(res, 2, command)
    assert f"{name}." in line or how == "forget-ids", line  # names the file
    assert res["store"] == before  # the store S, byte for byte
    assert os.listdir(out) == []  # no new store, no predictions file


def _forge_slice(store: Path, how: str) -> str:
    """What a forger with write access to an unsigned store does: a slice whose id
    offsets run past its data (or whose id column is renamed), under a manifest that
    vouches for its hash. Returns an id stored in that slice."""
    st = Store.open(str(store), check_files=False)
    m = st.manifest.flat()
    meta = m["slices"]["0/0"]
    table = st.rows.read_slice_table(0, 0)
    ids = table.column("sample_id").combine_chunks()
    offsets = np.frombuffer(ids.buffers()[1], np.int32)[:len(ids) + 1]
    bad = offsets.copy()
    bad[2:] += 0x40000000
    raw = bytearray((store / meta["file"]).read_bytes())
    raw = (_patch(raw, offsets.tobytes(), bad.tobytes()) if how == "offsets"
           else bytearray(bytes(raw).replace(b"sample_id", b"sample_iX")))
    (store / meta["file"]).unlink()
    meta.update(st.put_blob(os.path.dirname(meta["file"]), ".arrow", bytes(raw)).to_json())
    manifest_mod.write(st.loc, m, None)
    return ids[0].as_py()


@pytest.mark.parametrize("how", ["offsets", "renamed"])
def test_a_forged_slice_under_a_forged_manifest_is_damage_not_a_crash(files, tmp_path, how):
    store = tmp_path / "S"
    shutil.copytree(files / "S", store)
    victim = _forge_slice(store, how)
    before = tree_digest(store)
    cases = [{"argv": [*argv, "--backend", "local", "--quiet"], "store": str(store),
              "out": str(tmp_path / f"out{i}"), "err": str(tmp_path / f"err{i}")}
             for i, argv in enumerate((["verify", str(store)],
                                       ["forget", str(store), "--id", victim]))]
    for case, res in zip(cases, run_cases(cases), strict=True):
        assert res["code"] == 1, (res["code"], res["stderr"][-2000:])  # damage, not usage
        text = res["stderr"] + res["stdout"]
        assert "matches the manifest's hash" in text and "Traceback" not in text, text
        assert not any(v in text for v in VALUES[2:]), text
        assert res["store"] == before, case["argv"]


KILLED_HOLDER = """
import os, signal, sys
from sisa import Store
with Store.open(sys.argv[1]).lock():
    os.kill(os.getpid(), signal.SIGKILL)  # dies holding the lock, its pid in .lock
"""


def test_a_run_killed_holding_the_lock_does_not_break_the_next_one(files, tmp_path):
    """The killed ``sisa train`` of the issue left ``.lock`` non-empty. The lock is an
    ``flock`` the kernel releases with the process, so the bytes left are only a note:
    the next writer takes the lock and an idle store's ``.lock`` is empty again."""
    store = tmp_path / "S"
    shutil.copytree(files / "S", store)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", KILLED_HOLDER, str(store)], env=env,
                          cwd=ROOT, timeout=600)
    assert proc.returncode == -9
    assert b'"pid"' in (store / ".lock").read_bytes()  # what the killed run left
    for argv in (("status", str(store)), ("forget", str(store), "--id", "u0005", "--backend",
                                          "local"), ("verify", str(store), "--backend",
                                                     "local")):
        code, _, err = run_cli(*argv, "--quiet")
        assert code == 0, err
    assert (store / ".lock").read_bytes() == b""
