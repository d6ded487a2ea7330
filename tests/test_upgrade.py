"""Format 3 → 4: `sisa upgrade` converts a store in place, keeping every data file,
checkpoint and the audit log, so the upgraded store verifies and forgets as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sisa import SISAClassifier, Store
from sisa.errors import StoreError
from sisa.store import manifest_io
from sisa.unlearn import history, verify

from .conftest import LOCAL, run_cli

FIXTURE = Path(__file__).parent / "data" / "store-v3"


@pytest.fixture
def v3(tmp_path) -> Path:
    dst = tmp_path / "v3"
    shutil.copytree(FIXTURE, dst)
    return dst


def _v3_manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())["manifest"]


def test_an_old_store_is_refused_with_the_command_that_upgrades_it(v3):
    before = sorted(p.name for p in v3.rglob("*"))
    with pytest.raises(StoreError, match=r"sisa-store/3.*sisa upgrade"):
        Store.open(v3)
    with pytest.raises(StoreError, match="sisa upgrade"):
        SISAClassifier.load(str(v3))
    assert sorted(p.name for p in v3.rglob("*")) == before  # refused: nothing written


def test_upgrade_keeps_data_checkpoints_and_the_audit_log(v3):
    old = _v3_manifest(v3)
    log_before = (v3 / f"audit/receipts-{old['store_id']}.jsonl").read_bytes()
    assert Store.upgrade(str(v3)) is True
    st = Store.open(v3)
    assert st.manifest["format"] == manifest_io.FORMAT
    assert st.fingerprint == old["fingerprint"]  # same data state, same fingerprint
    assert {k: m["sha256"] for k, m in st.manifest.slices.items()} == {
        k: m["sha256"] for k, m in old["slices"].items()}
    assert {k: m["sha256"] for k, m in st.manifest.checkpoints.items()} == {
        k: m["sha256"] for k, m in old["model"]["checkpoints"].items()}
    assert st.manifest.n_tombstones == old["tombstones"]["rows"] == st.manifest.n_deleted == 2
    assert (v3 / f"audit/receipts-{old['store_id']}.jsonl").read_bytes() == log_before
    assert st.manifest.generation == old["generation"] + 1
    assert not st.unreferenced_files()
    assert verify(st, settings=LOCAL).ok  # retrains every shard: the same bytes
    assert Store.upgrade(str(v3)) is False  # already current: a no-op


def test_an_upgraded_store_forgets_exactly(v3):
    Store.upgrade(str(v3))
    model = SISAClassifier.load(str(v3))
    receipt = model.forget([40, 41])
    assert receipt["n_ids"] == 2 and len(history(model.store_)) == 2
    assert not model.store_.locate([5, 17, 40, 41])[0].any()
    assert verify(model.store_, settings=LOCAL).ok


def test_a_tampered_old_manifest_is_not_upgraded(v3):
    raw = json.loads((v3 / "manifest.json").read_text())
    raw["manifest"]["n_deleted"] = 0  # without the checksum
    (v3 / "manifest.json").write_text(json.dumps(raw))
    with pytest.raises(StoreError, match="corrupt"):
        Store.upgrade(str(v3))


def test_the_cli_names_the_command_and_runs_it(v3):
    code, _, err = run_cli("status", str(v3))
    assert code != 0 and f"sisa upgrade {v3}" in err and len(err.strip().splitlines()) == 1
    code, out, _ = run_cli("upgrade", str(v3))
    assert code == 0 and "upgraded" in out
    code, out, _ = run_cli("upgrade", str(v3))
    assert code == 0 and "already" in out
    code, out, _ = run_cli("status", str(v3))
    assert code == 0 and "238" in out
