"""Format 3 → 4: `sisa upgrade` converts a store in place, keeping every data file,
checkpoint and the audit log, so the upgraded store verifies and forgets as before."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from sisa import SISAClassifier, Store
from sisa.errors import StoreError
from sisa.store.manifest import codec as manifest_io
from sisa.unlearn import history, verify
from tests.helpers import LOCAL, run_cli

FIXTURE = Path(__file__).parents[1] / "data" / "store-v3"


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
    # every entry as format 3 held it, field for field
    assert {k: m.to_json() for k, m in st.manifest.slices.items()} == old["slices"]
    assert {k: m.to_json() for k, m in st.manifest.checkpoints.items()} == \
        old["model"]["checkpoints"]
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
    assert not model.store_.rows.locate([5, 17, 40, 41])[0].any()
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


# ------------------------------------------ format 5: slice files an older sisa would misread
def _fit_to(path, X, y, **fit_kw):
    import warnings

    from sklearn.linear_model import SGDClassifier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return SISAClassifier(SGDClassifier(loss="log_loss", random_state=0), n_shards=2,
                              n_slices=2, store=str(path), backend="local").fit(X, y, **fit_kw)


def test_a_store_an_older_sisa_would_misread_is_format_5_and_a_plain_one_stays_4(tmp_path):
    """Typed columns, a sparse block or a group-hash column change what a slice file holds:
    such a store says format 5, so a sisa that reads only format 4 refuses it in one line
    (rather than misreading its slices); a dense store without groups stays format 4, byte
    for byte what an older sisa reads. This sisa reads both."""
    import numpy as np
    import pandas as pd
    import scipy.sparse as sp

    from tests.helpers import make_classification

    X, y = make_classification(240, 4)
    plain = _fit_to(tmp_path / "plain", X, y)
    grouped = _fit_to(tmp_path / "grouped", X, y, groups=np.arange(240) // 3)
    csr = _fit_to(tmp_path / "sparse", sp.csr_matrix(np.where(X > 0.5, X, 0)), y)
    df = pd.DataFrame({"a": X[:, 0], "b": pd.Categorical(np.where(X[:, 1] > 0, "u", "v"))})
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import SGDClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder

    pipe = make_pipeline(make_column_transformer((OneHotEncoder(handle_unknown="ignore"), ["b"]),
                                                 remainder="passthrough"),
                         SGDClassifier(loss="log_loss", random_state=0))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        typed = SISAClassifier(pipe, n_shards=2, n_slices=1, store=str(tmp_path / "typed"),
                               backend="local").fit(df, y)
    assert plain.store_.manifest["format"] == manifest_io.FORMAT == "sisa-store/4"
    for model in (grouped, csr, typed):
        st = model.store_
        assert st.manifest["format"] == manifest_io.FORMAT_LAYOUTS == "sisa-store/5"
        with pytest.raises(StoreError, match="has format 'sisa-store/5'") as info:
            manifest_io.read_root(st.loc, formats=(manifest_io.FORMAT,))  # an older reader
        assert "\n" not in str(info.value)
        assert verify(Store.open(st.uri)).ok  # this sisa reads and proves it
