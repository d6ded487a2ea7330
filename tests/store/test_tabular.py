"""Real training tables go in as they are (issue 23): typed columns in the store, each
shard model handed its rows in the form it takes, missing values kept, CSV options, and
exact forgetting of a category's last row (no file of the store still holds it)."""

from __future__ import annotations

import datetime as dt
import json
import warnings

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import SGDClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from sisa import CsvOptions, IngestOptions, SISAClassifier, Store
from sisa.datasets._dataset import package_file
from sisa.datasets.adult import ADULT_COLUMNS
from sisa.engine import forms
from sisa.engine.spec import to_spec
from sisa.errors import InputError
from sisa.store.format.layout import FEATURES, slice_schema
from sisa.unlearn import verify
from tests.helpers import LOCAL, run_cli, tree_digest

RARE = "Holand-Netherlands"  # one row of adult.data has it (line 19609)
CATS = ["workclass", "education", "marital-status", "occupation", "relationship", "race",
        "gender", "native-country"]
NUMS = ["age", "fnlwgt", "education-num", "capital-gain", "capital-loss", "hours-per-week"]


def adult_lines(n: int = 2400) -> list[str]:
    """The first ``n`` rows of the published adult.data plus the one Holand-Netherlands row:
    ``, ``-separated, ``?`` for a missing value, string categories."""
    path = package_file("mglearn", "data/adult.data", "SISA_ADULT_PATH", None, "UCI Adult")
    with open(path) as f:
        lines = [ln for ln in f.read().splitlines() if ln.strip()]
    rare = [ln for ln in lines if RARE in ln]
    assert len(rare) == 1
    return lines[:n] + rare


def adult_frame(n: int = 2400) -> tuple[pd.DataFrame, np.ndarray]:
    """Adult as a user has it in pandas: category dtypes, NaN for ``?`` (and a few ages)."""
    rows = [[v.strip() for v in ln.split(",")] for ln in adult_lines(n)]
    df = pd.DataFrame(rows, columns=ADULT_COLUMNS).replace("?", np.nan)
    for c in NUMS:
        df[c] = df[c].astype(float)
    df.loc[::13, "age"] = np.nan
    for c in CATS:
        df[c] = df[c].astype("category")
    y = (df.pop("income") == ">50K").astype(int).to_numpy()
    return df, y


def pipeline():
    return make_pipeline(ColumnTransformer([
        ("cat", OneHotEncoder(handle_unknown="ignore"), CATS),
        ("num", make_pipeline(SimpleImputer(), StandardScaler()), NUMS)]),
        SGDClassifier(loss="log_loss", random_state=0))


def hgb():
    return HistGradientBoostingClassifier(categorical_features="from_dtype", max_iter=20)


def fit(est, X, y, path, ids=None):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "no partial_fit: refit per shard"
        return SISAClassifier(est, n_shards=3, n_slices=2, backend="local",
                              store=str(path)).fit(X, y, sample_ids=ids)


def plain_bytes(path) -> bytes:
    """A file's bytes; for an Arrow file (slices are zstd-compressed) also its content
    written out uncompressed, dictionaries as stored (unused entries included)."""
    data = path.read_bytes()
    if path.suffix == ".arrow":
        reader = pa.ipc.open_file(pa.BufferReader(data))
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, reader.schema) as w:
            for i in range(reader.num_record_batches):
                w.write_batch(reader.get_batch(i))
        data += sink.getvalue().to_pybytes()
    return data


def files_holding(root, text: str) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*")
                  if p.is_file() and text.encode() in plain_bytes(p))


def checkpoints(model) -> dict:
    return {k: v.sha256 for k, v in model.store_.manifest.checkpoints.items()}


# ------------------------------------------------------------------ DataFrames in, exactly out
@pytest.mark.parametrize("make", [pipeline, hgb],
                         ids=["column-transformer-pipeline", "hgb-from-dtype"])
def test_forgetting_the_last_row_of_a_category_leaves_no_trace(tmp_path, make):
    df, y = adult_frame()
    ids = np.arange(len(y)) * 3 + 7
    model = fit(make(), df, y, tmp_path / "a", ids)
    schema = model.store_.manifest.schema
    assert schema["layout"] == "columns"
    kinds = dict(zip(schema["feature_names"], (c["kind"] for c in schema["columns"]),
                     strict=True))
    assert {kinds[c] for c in CATS} == {"category"} and {kinds[c] for c in NUMS} == {"number"}
    holding = files_holding(tmp_path / "a", RARE)  # a slice and a shard model, now
    assert any(f.startswith("data/") for f in holding)
    assert any(f.startswith("checkpoints/") for f in holding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no "X does not have valid feature names"
        before = model.predict_proba(df)
    assert before.shape == (len(y), 2) and (model.predict(df) == y).mean() > 0.75

    rare = int(np.flatnonzero(df["native-country"] == RARE)[0])
    gone = np.r_[ids[rare], ids[[0, 5, 600]]]  # with the rare row: a NaN age and others
    model.forget(gone)
    assert files_holding(tmp_path / "a", RARE) == []  # data, index, checkpoints, manifest
    keep = ~np.isin(ids, gone)
    fresh = fit(make(), df[keep].reset_index(drop=True), y[keep], tmp_path / "b", ids[keep])
    assert checkpoints(model) == checkpoints(fresh)
    assert model.store_.manifest.slices == fresh.store_.manifest.slices  # slice bytes too
    assert np.array_equal(model.predict_proba(df), fresh.predict_proba(df))
    assert verify(model.store_, settings=LOCAL).ok


def test_a_slice_rewritten_on_delete_keeps_only_the_categories_of_its_rows(tmp_path):
    """Arrow's filter keeps a dictionary's unused entries: the rewritten slice must not."""
    df, y = adult_frame(600)
    table = pa.Table.from_pandas(df.assign(label=y, rid=np.arange(len(y))),
                                 preserve_index=False)
    st_ = Store.create(tmp_path / "a", table,
                       options=IngestOptions(label="label", id_column="rid", n_shards=2, n_slices=2,
                                             allow_missing=True))
    rare = int(np.flatnonzero(df["native-country"] == RARE)[0])
    key = next(k for k, m in st_.manifest.slices.items()
               if rare in st_.rows.read_slice(*map(int, k.split("/"))).ids.tolist())
    st_.delete([rare])
    assert files_holding(tmp_path / "a", RARE) == []
    keep = table.filter(pa.array(np.arange(len(y)) != rare))
    fresh = Store.create(tmp_path / "b", keep,
                         options=IngestOptions(label="label", id_column="rid", n_shards=2,
                                               n_slices=2, allow_missing=True))
    assert st_.manifest.slices[key].sha256 == fresh.manifest.slices[key].sha256
    feats = st_.rows.read_slice_table(*map(int, key.split("/"))).column(FEATURES).combine_chunks()
    country = feats.field("native-country")
    assert pa.types.is_dictionary(country.type)
    assert sorted(country.dictionary.to_pylist()) == sorted(
        set(country.dictionary_decode().drop_null().to_pylist()))


def test_bool_date_and_timestamp_columns_reach_a_numeric_model_as_floats(tmp_path):
    rng = np.random.default_rng(3)
    n = 400
    day = np.datetime64("2021-03-01")
    table = pa.table({
        "amount": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
                           from_pandas=True),
        "count": pa.array([None if i % 17 == 0 else int(i % 5) for i in range(n)], pa.int32()),
        "member": pa.array(rng.random(n) > 0.5),
        "joined": pa.array((day + rng.integers(0, 900, n)).astype("datetime64[D]")),
        "seen": pa.array(pd.Timestamp("2024-01-01", tz="UTC")
                         + pd.to_timedelta(rng.integers(0, 10**6, n), unit="s")),
        "label": pa.array(rng.integers(0, 2, n)),
    })
    table = table.append_column("rid", pa.array(np.arange(n) * 2 + 1))
    est = make_pipeline(SimpleImputer(), StandardScaler(), SGDClassifier(random_state=0))

    def build(rows, path):
        st_ = Store.create(path, rows,
                           options=IngestOptions(label="label", id_column="rid", n_shards=3,
                                                 n_slices=2, allow_missing=True))
        return fit(est, st_, None, path)

    model = build(table, tmp_path / "a")
    schema = model.store_.manifest.schema
    assert [c["kind"] for c in schema["columns"]] == ["number", "number", "bool", "date",
                                                      "timestamp"]
    assert schema["columns"][4] == {"kind": "timestamp", "type": "timestamp", "unit": "us",
                                    "tz": "UTC"}
    assert slice_schema(schema).field(FEATURES).type.field("joined").type == pa.date32()
    part = model.store_.rows.read_slice(0, 0)
    X = forms.model_input(part.X, schema, forms.accepts(est))
    row = table.filter(pa.compute.equal(table["rid"], part.ids[0])).to_pylist()[0]
    assert isinstance(X, np.ndarray) and X.dtype == np.float64
    assert X[0, 3] == (row["joined"] - dt.date(1970, 1, 1)).days
    assert X[0, 4] == row["seen"].timestamp()
    assert X[0, 2] == float(row["member"])
    gone = [1, 35, 69]  # rids of rows 0, 17, 34: a null count among them
    model.forget(gone)
    fresh = build(table.filter(pa.array(~np.isin(table["rid"].to_numpy(), gone))),
                  tmp_path / "b")
    assert checkpoints(model) == checkpoints(fresh)
    features = table.drop_columns(["label", "rid"])
    assert np.array_equal(model.predict(features), fresh.predict(features))
    assert verify(model.store_, settings=LOCAL).ok


def test_naive_timestamps_on_a_zoned_column_are_refused_not_shifted(tmp_path):
    """Arrow reads naive timestamps cast to a zoned type as UTC: local wall times shifted
    by the zone's offset, silently other predictions (was so); the same instants in
    another zone are the same rows."""
    n = 200
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"a": rng.normal(size=n),
                       "t": pd.date_range("2020-01-01", periods=n, freq="h", tz="Europe/Paris")})
    y = (np.arange(n) > 100).astype(int)
    model = fit(HistGradientBoostingClassifier(max_iter=5), df, y, tmp_path / "a")
    before = model.predict_proba(df)
    utc = df.assign(t=df["t"].dt.tz_convert("UTC"))
    assert np.array_equal(model.predict_proba(utc), before)
    with pytest.raises(InputError,
                       match=r"'t' holds timestamps without a time zone.*Europe/Paris"):
        model.predict(df.assign(t=df["t"].dt.tz_localize(None)))
    naive = fit(HistGradientBoostingClassifier(max_iter=5),
                df.assign(t=df["t"].dt.tz_localize(None)), y, tmp_path / "b")
    with pytest.raises(InputError, match=r"holds timestamps with a time zone.*without"):
        naive.predict(df)


def test_a_categorical_of_integers_is_a_category_column(tmp_path):
    """pandas ``Categorical([3, 7, 11])`` (Arrow ``dictionary<int64>``) was refused as a
    type sisa cannot store: it is a category column (its values as text), forgotten
    exactly like one of strings."""
    rng = np.random.default_rng(0)
    n = 300
    codes = rng.choice([3, 7, 11], n)
    codes[17] = 42  # the only row of category 42
    df = pd.DataFrame({"a": rng.normal(size=n), "k": pd.Categorical(codes)})
    y = (codes == 7).astype(int)
    model = fit(hgb(), df, y, tmp_path / "a")
    assert [c["kind"] for c in model.store_.manifest.schema["columns"]] == ["number",
                                                                          "category"]
    assert (model.predict(df) == y).mean() > 0.9
    assert np.array_equal(model.predict_proba(df.assign(k=df["k"].astype(str))),
                          model.predict_proba(df))
    model.forget([17])
    keep = np.arange(n) != 17
    fresh = fit(hgb(), df[keep], y[keep], tmp_path / "b", np.flatnonzero(keep))
    assert checkpoints(model) == checkpoints(fresh)
    assert verify(model.store_, settings=LOCAL).ok


def test_missing_values_reach_hgb_in_a_dense_store(tmp_path):
    """All-numeric input keeps the dense float layout (NaN for missing) for a model that
    takes NaN; one that does not is told what to do."""
    df, y = adult_frame(600)
    nums = df[NUMS]
    model = fit(HistGradientBoostingClassifier(max_iter=10), nums, y, tmp_path / "a")
    assert "layout" not in model.store_.manifest.schema  # the dense layout, unchanged
    X = model.store_.rows.read_slice(0, 0).X
    assert np.isnan(X).any() and np.isnan(X[:, 0]).any()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert model.predict(nums).shape == (len(y),)
    model.forget([0, 13])  # rows with a missing age
    assert verify(model.store_, settings=LOCAL).ok
    with pytest.raises(InputError, match=r"missing value.*SimpleImputer"):
        fit(SGDClassifier(), nums, y, tmp_path / "b")


def test_predict_on_a_dataframe_warns_nothing(tmp_path):
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(300, 3)), columns=["a", "b", "c"])
    y = (df["a"] > 0).astype(int).to_numpy()
    model = fit(SGDClassifier(loss="log_loss"), df, y, tmp_path / "a")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert (model.predict(df) == y).mean() > 0.9


def test_every_column_of_a_typed_dataframe_is_a_feature_whatever_its_name(tmp_path):
    """Columns named like the ones sisa adds (``label``, ``__label``, ``__sample_id``) or
    starting with ``__`` are features, as in a float matrix (were a raw KeyError 'Column
    __label does not exist in schema', or silently dropped)."""
    rng = np.random.default_rng(0)
    n = 300
    df = pd.DataFrame({"c": pd.Categorical(rng.choice(["x", "y", "z"], n)),
                       "label": rng.normal(size=n), "__label": rng.normal(size=n),
                       "__sample_id": rng.normal(size=n), "__x": rng.normal(size=n)})
    y = (df["__x"] > 0).astype(int).to_numpy()
    ids = np.arange(n) * 2 + 1
    model = fit(hgb(), df, y, tmp_path / "a", ids)
    assert list(model.feature_names_in_) == list(df.columns)
    assert model.store_.manifest.schema["feature_names"] == list(df.columns)
    assert (model.predict(df) == y).mean() > 0.9  # it learnt from "__x"
    assert model.forget([ids[4]])["n_ids"] == 1
    assert verify(model.store_, settings=LOCAL).ok


# ------------------------------------------------------------------ CSV as published, CLI
def write_adult_csv(path, n: int = 2400) -> None:
    lines = adult_lines(n)
    lines = [("?" + ln[ln.index(","):]) if i % 11 == 0 else ln for i, ln in enumerate(lines)]
    path.write_text(", ".join(ADULT_COLUMNS) + "\n" + "\n".join(lines) + "\n")


def test_csv_options_in_python_trim_and_mark_missing(tmp_path):
    write_adult_csv(tmp_path / "adult.csv", 600)
    st_ = Store.create(tmp_path / "s", tmp_path / "adult.csv",
                       options=IngestOptions(label="income", n_shards=2, n_slices=2,
                                             allow_missing=True, csv=CsvOptions(
                                                 na_values=("?",), trim_whitespace=True)))
    schema = st_.manifest.schema
    assert schema["feature_names"] == ADULT_COLUMNS[:-1] and schema["label_name"] == "income"
    assert st_.rows.classes() == ["<=50K", ">50K"]
    assert schema["columns"][0] == {"kind": "number", "type": "int64"}  # age, with '?'
    feats = st_.rows.read_slice_table(0, 0).column(FEATURES).combine_chunks()
    assert feats.field("age").null_count > 0 and feats.field("workclass").null_count > 0
    assert not any(v.startswith(" ") for v in
                   feats.field("workclass").dictionary_decode().drop_null().to_pylist())


def train_predict_forget_verify(tmp_path, *model: str) -> float:
    """The published Adult file through the CLI: train (holdout score), predict, forget the
    Holand-Netherlands row (no file keeps it), verify."""
    write_adult_csv(tmp_path / "adult.csv")
    store = str(tmp_path / "s")
    code, out, err = run_cli("train", str(tmp_path / "adult.csv"), "--label", "income",
                             "--na-values", "?", *model, "--store", store, "--shards", "4",
                             "--slices", "1", "--holdout", "0.2", "--json")
    assert code == 0, err
    assert Store.open(store).manifest.schema["layout"] == "columns"
    code, _, err = run_cli("predict", store, str(tmp_path / "adult.csv"), "--na-values", "?",
                           "--out", str(tmp_path / "p.parquet"))
    assert code == 0, err
    pred = pq.read_table(tmp_path / "p.parquet").column("prediction").to_pylist()
    assert len(pred) == 2401 and set(pred) == {"<=50K", ">50K"}
    assert files_holding(tmp_path / "s", RARE)
    code, _, err = run_cli("forget", store, "--id", "2400")  # the row number of the rare row
    assert code == 0, err
    assert files_holding(tmp_path / "s", RARE) == []
    assert run_cli("verify", store)[0] == 0
    return json.loads(out)["holdout"]["score"]


def test_cli_trains_the_published_adult_file_with_hgb(tmp_path):
    assert train_predict_forget_verify(tmp_path, "--model", "hgb") > 0.8


def test_cli_trains_the_published_adult_file_with_an_encoding_pipeline(tmp_path):
    spec = json.dumps(to_spec(pipeline()))
    assert train_predict_forget_verify(tmp_path, "--model-spec", spec) > 0.75


def test_cli_reads_the_published_layout_and_refuses_categories_sgd_cannot_take(tmp_path):
    write_adult_csv(tmp_path / "adult.csv", 1200)
    store = tmp_path / "s"
    # numeric columns only: headers and labels trimmed, '?' in age missing, HGB takes NaN
    code, out, err = run_cli("train", str(tmp_path / "adult.csv"), "--label", "income",
                             "--na-values", "?", "--model", "hgb", "--store", str(store),
                             "--features", ",".join(NUMS), "--shards", "2", "--slices", "1",
                             "--holdout", "0.2", "--json")
    assert code == 0, err
    st_ = Store.open(store)
    assert st_.rows.classes() == ["<=50K", ">50K"] and st_.manifest.schema["feature_names"] == NUMS
    assert json.loads(out)["holdout"]["score"] > 0.7
    before = tree_digest(store)
    code, out, err = run_cli("train", str(tmp_path / "adult.csv"), "--label", "income",
                             "--na-values", "?", "--model", "sgd", "--store", str(store),
                             "--overwrite")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "are categories" in err and "OneHotEncoder" in err and "hgb" in err
    assert tree_digest(store) == before


# ------------------------------------------------------------------ bad input
def test_a_category_column_on_a_model_that_cannot_take_it_is_refused_first(tmp_path):
    df, y = adult_frame(300)
    model = fit(SGDClassifier(), df[NUMS].fillna(0), y, tmp_path / "a")
    before = tree_digest(tmp_path / "a")
    with pytest.raises(InputError, match=r"\[.workclass.*are categories.*SGDClassifier "
                                         r"cannot take.*OneHotEncoder"):
        fit(SGDClassifier(), df.fillna({c: 0 for c in NUMS}), y, tmp_path / "a")
    assert tree_digest(tmp_path / "a") == before
    assert model.predict(df[NUMS].fillna(0)).shape == (len(y),)


@pytest.mark.parametrize("column, match", [
    ([[1, 2]] * 200, r"column 'bad' has type list<item: int64>, which sisa cannot store"),
    ([b"\x00\x01"] * 200, r"column 'bad' has type binary \(bytes, not UTF-8 text\)"),
    ([1, "a"] * 100, r"cannot convert the DataFrame to Arrow .*give each column one type"),
    ([{"k": 1}] * 200, r"column 'bad' has type struct<k: int64>, which sisa cannot store"),
], ids=["nested-list", "binary", "mixed-object", "struct"])
def test_unsupported_column_types_are_one_line_and_change_nothing(tmp_path, column, match):
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"x": rng.normal(size=200), "bad": column})
    y = rng.integers(0, 2, 200)
    fit(SGDClassifier(), df[["x"]], y, tmp_path / "a")
    before = tree_digest(tmp_path / "a")
    with pytest.raises(InputError, match=match) as info:
        fit(SGDClassifier(), df, y, tmp_path / "a")
    assert "\n" not in str(info.value)
    assert tree_digest(tmp_path / "a") == before


def test_unsupported_parquet_columns_exit_2_on_the_cli(tmp_path):
    rng = np.random.default_rng(0)
    pq.write_table(pa.table({"x": rng.normal(size=200), "blob": [b"ab"] * 200,
                             "label": rng.integers(0, 2, 200)}), tmp_path / "d.parquet")
    code, _, err = run_cli("train", str(tmp_path / "d.parquet"), "--label", "label",
                             "--store", str(tmp_path / "s"), "--shards", "2", "--slices", "1")
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "'blob' has type binary (bytes, not UTF-8 text), which sisa cannot store" in err
    assert tree_digest(tmp_path / "s") == "absent"


def test_the_form_a_model_takes_comes_from_the_estimator():
    assert forms.accepts(hgb()) == forms.Accepts(True, True, True)
    assert forms.accepts(HistGradientBoostingClassifier(categorical_features=None)) == \
        forms.Accepts(False, False, True)
    assert forms.accepts(pipeline()) == forms.Accepts(True, True, True)
    assert forms.accepts(SGDClassifier()) == forms.Accepts(False, False, False)
    assert forms.accepts(Pipeline([("i", SimpleImputer()), ("m", SGDClassifier())])) == \
        forms.Accepts(False, False, True)
    # StandardScaler takes NaN but passes it on to a model that does not
    assert forms.accepts(make_pipeline(StandardScaler(), SGDClassifier())).nan is False
    assert forms.accepts(make_pipeline(ColumnTransformer(
        [("c", OneHotEncoder(), CATS)], remainder="passthrough"), SGDClassifier())).nan is False


# ------------------------------------------------------------------ ingest: budget, Ray
def typed_table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    words = np.array(["red", "green", "blue", "ünïcode", "a b"])
    cat = words[rng.integers(0, 5, n)].astype(object)
    cat[rng.random(n) < 0.05] = None
    return pa.table({
        "x": pa.array(np.where(rng.random(n) < 0.1, np.nan, rng.normal(size=n)),
                      from_pandas=True),
        "k": pa.array(rng.integers(-5, 5, n), pa.int16()),
        "flag": pa.array(rng.random(n) > 0.3),
        "day": pa.array(rng.integers(0, 20_000, n).astype("datetime64[D]")),
        "cat": pa.array(cat, pa.string()),
        "dict": pa.array(words[rng.integers(0, 3, n)]).dictionary_encode(),
        "label": pa.array(rng.integers(0, 3, n)),
        "uid": pa.array(rng.permutation(n) * 7 + 3),
    })


def stored_rows(st_: Store) -> dict:
    out = {}
    for key in st_.manifest.slices:
        t = st_.rows.read_slice_table(*map(int, key.split("/")))
        feats = t.column(FEATURES).combine_chunks()
        for uid, label, row in zip(t.column("sample_id").to_pylist(),
                                   t.column("label").to_pylist(), feats.to_pylist(),
                                   strict=True):
            out[uid] = (label, row)
    return out


def test_typed_ingest_is_the_same_whatever_the_budget_and_keeps_every_value(tmp_path):
    n = 70_000  # two index buckets
    t = typed_table(n)
    pq.write_table(t, tmp_path / "t.parquet", row_group_size=10_000)
    options = IngestOptions(label="label", id_column="uid", n_shards=3, n_slices=2,
                            random_state=5, allow_missing=True)
    roomy = Store.create(tmp_path / "a", tmp_path / "t.parquet", options=options)
    tight = Store.create(tmp_path / "b", tmp_path / "t.parquet", options=options.replace(
        memory_budget_mb=1, batch_rows=3000))  # a spill run every ~3k rows
    assert roomy.manifest.slices == tight.manifest.slices
    first = tmp_path / "a" / roomy.manifest.slices["0/0"].file
    assert 2 * first.stat().st_size < len(plain_bytes(first)) - first.stat().st_size  # zstd
    assert roomy.manifest.index_parts == tight.manifest.index_parts
    assert [c["kind"] for c in roomy.manifest.schema["columns"]] == [
        "number", "number", "bool", "date", "category", "category"]
    got = stored_rows(roomy)
    want = t.to_pylist()
    assert len(got) == n
    for r in want[:: 97]:
        label, row = got[r["uid"]]
        assert label == r["label"]
        assert row == {"x": r["x"], "k": r["k"], "flag": r["flag"], "day": r["day"],
                       "cat": r["cat"], "dict": r["dict"]}


def test_typed_ingest_on_ray_writes_the_serial_files(ray_session, tmp_path, monkeypatch):
    from sisa.engine import ExecutionSettings
    from sisa.store.write import parallel_ingest

    monkeypatch.setattr(parallel_ingest, "PART_ROWS", 9_000)  # several parts per file
    pq.write_table(typed_table(40_000, seed=2), tmp_path / "t.parquet", row_group_size=8_000)
    options = IngestOptions(label="label", id_column="uid", n_shards=3, n_slices=2,
                            allow_missing=True)
    serial = Store.create(tmp_path / "serial", tmp_path / "t.parquet", options=options)
    par = Store.create(tmp_path / "par", tmp_path / "t.parquet", options=options,
                       settings=ExecutionSettings(backend="ray"))
    assert parallel_ingest.LAST_RUN["parts"] >= 4
    assert par.manifest.slices == serial.manifest.slices
    assert par.manifest.index_parts == serial.manifest.index_parts
