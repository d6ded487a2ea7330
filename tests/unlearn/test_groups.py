"""Forget a person (issue 23): ``fit(groups=)``, ``forget(groups=)``, ``sisa forget --group``;
dataframes read through the Arrow C stream (polars); a classifier refusing a numeric label
with very many distinct values (a regression target) unless told otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest

from sisa import SISAClassifier
from sisa.errors import InputError, UnknownIdError
from sisa.store import IngestOptions, Store
from sisa.store.format.layout import GROUP
from sisa.unlearn import forget_groups, history
from tests.helpers import run_cli, tree_digest

N, S, R = 600, 3, 2


def _data(n=N, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 4))
    y = (X[:, 0] + 0.3 * rng.normal(size=n) > 0).astype(int)
    users = np.array([f"u{i % 45:05d}" for i in range(n)])
    return X, y, users


def _model(store: Path, **kw) -> SISAClassifier:
    return SISAClassifier(n_shards=S, n_slices=R, backend="local", store=str(store), **kw)


def _store_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def _hash_bytes(store: Store, key) -> bytes:
    """The 8 bytes a slice stores for this group key (its keyed hash)."""
    from sisa.store.format.assign import group_hash

    return int(group_hash(store.config, np.array([key]))[0]).to_bytes(8, "little")


def test_forget_groups_equals_a_fresh_fit_without_them_and_leaves_no_trace(tmp_path):
    X, y, users = _data()
    clf = _model(tmp_path / "a").fit(X, y, groups=users)
    gone = ["u00007", "u00031"]
    held_hash = _hash_bytes(clf.store_, "u00007")
    assert held_hash in _store_bytes(tmp_path / "a")  # the slices hold it before
    receipt = clf.forget(groups=gone)
    assert receipt["n_groups"] == 2 and receipt["n_ids"] == int(np.isin(users, gone).sum())

    keep = ~np.isin(users, gone)
    ref = _model(tmp_path / "b").fit(X[keep], y[keep], sample_ids=np.flatnonzero(keep),
                                     groups=users[keep])
    a, b = clf.store_, ref.store_
    assert a.fingerprint == b.fingerprint  # the same rows, in the same slices and order
    for s in range(S):
        assert (a.manifest.checkpoint(s, R - 1).sha256
                == b.manifest.checkpoint(s, R - 1).sha256)
    np.testing.assert_array_equal(clf.predict_proba(X), ref.predict_proba(X))
    # no file of the store holds the key, nor the hash that stood for it
    raw = _store_bytes(tmp_path / "a")
    for key in gone:
        assert key.encode() not in raw
    assert held_hash not in raw
    assert clf.verify().ok


def test_one_groups_rows_share_one_shard_and_slice(tmp_path):
    X, y, users = _data()
    clf = _model(tmp_path / "a").fit(X, y, groups=users)
    st = clf.store_
    where: dict = {}
    for s in range(S):
        for r in range(R):
            t = st.rows.read_slice_table(s, r)
            for sid in t.column("sample_id").to_pylist():
                where.setdefault(users[sid], set()).add((s, r))
            assert t.schema.names[-1] == GROUP  # a hash beside each row, never the key
    assert len(where) == 45 and all(len(cells) == 1 for cells in where.values())
    assert len({c for cells in where.values() for c in cells}) > 1  # and groups spread


def test_receipt_names_the_group_by_keyed_hash_unless_recorded(tmp_path):
    X, y, users = _data()
    clf = _model(tmp_path / "a").fit(X, y, groups=users)
    r = clf.forget(groups=["u00003"])
    assert "groups" not in r and "ids" not in r
    assert len(r["groups_sha256"]) == 64 and len(r["group_hashes"]) == 1
    assert "u00003" not in json.dumps(history(clf.store_))
    r2 = clf.forget(groups=["u00004"], record_ids=True)
    assert r2["groups"] == ["u00004"] and sorted(r2["ids"]) == sorted(
        np.flatnonzero(users == "u00004").tolist())
    # the same request again: its receipt, nothing retrained
    again = clf.forget(groups=["u00003"])
    assert again["replayed"] and again["request_id"] == r["request_id"]
    # one forgotten before and one new: the new one's rows, the old one counted
    r3 = clf.forget(groups=["u00003", "u00005"])
    assert r3["groups_already_forgotten"] == 1 and r3["n_ids"] == int((users == "u00005").sum())
    assert len(history(clf.store_)) == 3
    assert clf.verify().ok


def test_wrong_unknown_and_empty_group_requests_change_nothing(tmp_path):
    X, y, _ = _data()
    ints = np.arange(N) % 40
    clf = _model(tmp_path / "a").fit(X, y, groups=ints)
    before = tree_digest(tmp_path / "a")
    for bad in (["7"], [7.0], [True], [None], [2**70], []):
        with pytest.raises(InputError) as exc:
            clf.forget(groups=bad)
        assert "\n" not in str(exc.value)
    with pytest.raises(UnknownIdError, match="never forgotten"):
        clf.forget(groups=[7, 99])  # 99 has no rows: nothing is forgotten, not even 7
    with pytest.raises(InputError, match="not both"):
        clf.forget([1], groups=[2])
    assert tree_digest(tmp_path / "a") == before
    plain = _model(tmp_path / "p").fit(X, y)
    with pytest.raises(InputError, match="built without groups"):
        plain.forget(groups=[1])
    assert clf.forget(groups=np.array([7], np.int32))["n_ids"] == 15


def test_keys_with_no_int64_or_text_form_are_one_line_errors(tmp_path):
    X, y, _ = _data()
    t = pa.table({"a": X[:, 0], "label": y,
                  "big": np.arange(N, dtype=np.uint64) + np.uint64(2**63)})
    with pytest.raises(InputError, match="out of range"):
        _model(tmp_path / "a").fit(t, "label", groups="big")
    with pytest.raises(InputError, match="lone surrogate"):
        _model(tmp_path / "a").fit(X, y, groups=np.array(["\ud800"] * N))
    assert not Store.exists(tmp_path / "a")
    clf = _model(tmp_path / "a").fit(X, y, groups=np.array(["\u00fc-\u00df", ""] * (N // 2)))
    before = tree_digest(tmp_path / "a")
    with pytest.raises(InputError, match="lone surrogate"):
        clf.forget(groups=["\ud800"])
    assert tree_digest(tmp_path / "a") == before
    assert clf.forget(groups=[""])["n_ids"] == N // 2  # the empty string is a key like others


@pytest.mark.parametrize("groups", [
    [1.5] * N, [True] * N, [None] * N, [1] * (N - 1) + ["a"], [1] * (N - 1)])
def test_fit_refuses_group_keys_that_are_not_one_int_or_str_per_row(tmp_path, groups):
    X, y, _ = _data()
    with pytest.raises(InputError, match=r"group keys|one key per row") as exc:
        _model(tmp_path / "a").fit(X, y, groups=np.array(groups, dtype=object))
    assert "\n" not in str(exc.value)
    assert not Store.exists(tmp_path / "a")


def test_cli_train_group_status_forget_group_and_groups_file(tmp_path):
    X, y, users = _data()
    data = tmp_path / "d.csv"
    pacsv.write_csv(pa.table({"a": X[:, 0], "b": X[:, 1], "label": y, "user": users}), data)
    st = str(tmp_path / "s")
    code, _, err = run_cli("train", str(data), "--label", "label", "--group", "user",
                           "--store", st, "--shards", "3", "--slices", "2", "--quiet")
    assert code == 0, err
    code, out, _ = run_cli("status", st)
    assert code == 0 and "'user' (string keys)" in out
    code, out, _ = run_cli("status", st, "--json")
    assert json.loads(out)["group_column"] == "user"

    code, out, err = run_cli("forget", st, "--group", "u00007", "--json", "--quiet")
    assert code == 0, err
    r = json.loads(out)
    assert r["n_groups"] == 1 and r["n_ids"] == int((users == "u00007").sum())
    keys = tmp_path / "keys.txt"
    keys.write_text("u00008\nu00009\n")
    code, out, err = run_cli("forget", st, "--groups", str(keys), "--json", "--quiet")
    assert code == 0, err
    assert json.loads(out)["n_ids"] == int(np.isin(users, ["u00008", "u00009"]).sum())
    raw = _store_bytes(tmp_path / "s")
    assert not any(k.encode() in raw for k in ("u00007", "u00008", "u00009"))
    assert run_cli("verify", st, "--quiet")[0] == 0

    before = tree_digest(tmp_path / "s")
    for argv in (["--group", "nobody"], ["--group", "u00010", "--id", "3"],
                 ["--groups", str(tmp_path / "missing.txt")]):
        code, _, err = run_cli("forget", st, *argv)
        assert code == 2 and len(err.strip().splitlines()) == 1, (argv, err)
    assert tree_digest(tmp_path / "s") == before


def test_cli_group_key_of_the_wrong_type_is_one_line_exit_2(tmp_path):
    X, y, _ = _data()
    data = tmp_path / "d.csv"
    pacsv.write_csv(pa.table({"a": X[:, 0], "label": y, "user": np.arange(N) % 40}), data)
    st = str(tmp_path / "s")
    assert run_cli("train", str(data), "--label", "label", "--group", "user", "--store", st,
                   "--shards", "3", "--slices", "2", "--quiet")[0] == 0
    before = tree_digest(tmp_path / "s")
    for key in ("u7", "007", "+7", "7.0", ""):
        code, _, err = run_cli("forget", st, "--group", key)
        assert code == 2 and len(err.strip().splitlines()) == 1, (key, err)
        assert "group key" in err
    assert tree_digest(tmp_path / "s") == before
    code, out, err = run_cli("forget", st, "--group", "7", "--json", "--quiet")
    assert code == 0 and json.loads(out)["n_ids"] == 15, err


def test_a_polars_frame_with_a_label_name_is_read_as_arrow(tmp_path):
    pl = pytest.importorskip("polars")  # in the test extra: skipped only outside it
    X, y, _ = _data()
    df = pl.DataFrame({"a": X[:, 0], "b": X[:, 1], "income": np.where(y == 1, ">50K", "<=50K")})
    clf = _model(tmp_path / "a").fit(df, "income")  # was AttributeError (sniffed "DataFrame")
    assert list(clf.classes_) == ["<=50K", ">50K"]
    assert list(clf.feature_names_in_) == ["a", "b"]
    assert (clf.predict(df.select("a", "b")) == np.where(y == 1, ">50K", "<=50K")).mean() > 0.8
    assert clf.forget([0, 1])["n_ids"] == 2


def test_polars_in_fit_predict_and_forget(tmp_path):
    pl = pytest.importorskip("polars")  # in the test extra: skipped only outside it
    X, y, users = _data()
    df = pl.DataFrame({"a": X[:, 0], "b": X[:, 1], "c": X[:, 2], "d": X[:, 3],
                       "income": y, "user": users})
    clf = _model(tmp_path / "a").fit(df, "income", groups="user")  # was AttributeError
    assert clf.store_.manifest.schema["group_type"] == "string"
    feats = df.select("a", "b", "c", "d")
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no spurious feature-name warning
        pred = clf.predict(feats)
    assert (pred == y).mean() > 0.8
    r = clf.forget(groups=pl.Series(["u00001"]))
    assert r["n_ids"] == int((users == "u00001").sum())
    clf.forget(pl.Series([int(i) for i in np.flatnonzero(users == "u00002")]))
    # keys given as an array with a polars table
    arr = _model(tmp_path / "c").fit(df.drop("user"), "income", groups=users)
    assert arr.store_.manifest.schema["group_name"] == "groups"
    assert arr.forget(groups=["u00001"])["n_ids"] == r["n_ids"]


def test_polars_categorical_and_enum_columns_are_categories(tmp_path):
    """polars exports a Categorical or Enum as ``dictionary<string_view>``, which Arrow can
    neither decode nor cast (was "has type dictionary<values=string_view, ...>, which sisa
    cannot store"): stored as categories, the same bytes as from plain strings."""
    pl = pytest.importorskip("polars")  # in the test extra: skipped only outside it
    from sklearn.ensemble import HistGradientBoostingClassifier

    X, y, users = _data()
    colour = np.array(["red", "green", "blue"])[(X[:, 1] > 0).astype(int) + (X[:, 2] > 0)]
    plain = pl.DataFrame({"a": X[:, 0], "c": colour, "e": users, "label": y})
    typed = plain.with_columns(pl.col("c").cast(pl.Categorical),
                               pl.col("e").cast(pl.Enum(sorted(set(users)))))
    fits = []
    for name, df in (("plain", plain), ("typed", typed)):
        hgb = HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=5)
        clf = _model(tmp_path / name, estimator=hgb).fit(df, "label")
        kinds = [c["kind"] for c in clf.store_.manifest.schema["columns"]]
        assert kinds == ["number", "category", "category"]
        np.testing.assert_array_equal(clf.predict(typed.drop("label")),
                                      clf.predict(plain.drop("label")))
        fits.append(clf)
    assert fits[0].store_.fingerprint == fits[1].store_.fingerprint
    assert ({k: v.sha256 for k, v in fits[0].store_.manifest.checkpoints.items()}
            == {k: v.sha256 for k, v in fits[1].store_.manifest.checkpoints.items()})
    assert fits[1].forget([0])["n_ids"] == 1 and fits[1].verify().ok


def test_a_numeric_label_with_very_many_values_stops_a_classifier(tmp_path):
    from sklearn.tree import DecisionTreeClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(N, 3))
    price = rng.integers(300, 19_000, N)  # whole dollars: an integer column
    with pytest.raises(InputError, match="regression target") as exc:
        _model(tmp_path / "a").fit(X, price)
    assert "\n" not in str(exc.value) and not Store.exists(tmp_path / "a")
    # the override (a tree: one class per price is cheap for it, not for SGD)
    clf = _model(tmp_path / "a", estimator=DecisionTreeClassifier(max_depth=3),
                 allow_many_classes=True).fit(X, price)
    assert len(clf.classes_) > N // 2

    data = tmp_path / "diamonds.csv"
    pacsv.write_csv(pa.table({"carat": X[:, 0], "depth": X[:, 1], "price": price}), data)
    st = str(tmp_path / "s")
    code, _, err = run_cli("train", str(data), "--label", "price", "--store", st, "--quiet")
    assert code == 2 and "--allow-many-classes" in err and len(err.strip().splitlines()) == 1
    assert not Store.exists(st)
    code, _, err = run_cli("train", str(data), "--label", "price", "--store", st, "--quiet",
                           "--model", "tree", "--allow-many-classes")
    assert code == 0, err
    # a regressor on the same column is not a classifier: nothing to refuse
    code, _, err = run_cli("train", str(data), "--label", "price", "--store", st, "--quiet",
                           "--overwrite", "--model", "ridge")
    assert code == 0, err


def test_distribution_aware_sharding_resolves_a_group_in_its_hot_and_cold_shard(tmp_path):
    X, y, _ = _data()
    groups = np.arange(N) % 30
    prob = np.where(np.arange(N) % 4 == 0, 0.9, 0.1)  # a group's rows: some hot, some cold
    st = Store.create(str(tmp_path / "a"), X, y,
                      options=IngestOptions(n_shards=4, n_slices=2, hot_shards=1), groups=groups,
                      deletion_prob=prob)
    SISAClassifier(n_shards=4, n_slices=2, backend="local").fit(st)
    r = forget_groups(st, [6])
    assert r["n_ids"] == int((groups == 6).sum()) and len(r["affected"]) == 2
