"""Sparse input (issue 23): a scipy CSR matrix goes in kept sparse, the shard models get
CSR, and forget/verify stay exact (sisa.store.format.sparse)."""

from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import pytest
import scipy.sparse as sp
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import SGDClassifier
from sklearn.naive_bayes import MultinomialNB

from benchmarks.sparse import adult_onehot  # the same matrix the benchmark measures
from sisa import IngestOptions, SISAClassifier, Store
from sisa.errors import InputError
from sisa.store.format.layout import FEATURES
from tests.helpers import run_cli, tree_digest


@pytest.fixture(scope="module")
def onehot():
    return adult_onehot(20_000)


def sgd():
    return SGDClassifier(loss="log_loss", random_state=0)


def fit(est, X, y, path, ids=None, shards=2, slices=2):
    return SISAClassifier(est, n_shards=shards, n_slices=slices, backend="local",
                          store=str(path)).fit(X, y, sample_ids=ids)


def checkpoints(model) -> dict:
    return {k: v.sha256 for k, v in model.store_.manifest.checkpoints.items()}


def data_bytes(path) -> int:
    return sum(p.stat().st_size for p in (path / "data").rglob("*.arrow"))


def csr_bytes(X) -> int:
    return X.data.nbytes + X.indices.nbytes + X.indptr.nbytes


# ------------------------------------------------------------------ kept sparse, exactly
def test_onehot_20k_by_3k_stays_sparse_and_small(onehot, tmp_path):
    X, y = onehot
    assert X.shape[0] >= 20_000 and X.shape[1] >= 3_000
    model = fit(MultinomialNB(), X, y, tmp_path / "s", shards=1, slices=1)
    schema = model.store_.manifest.schema
    assert schema["layout"] == "sparse" and schema["columns"][0]["n_features"] == X.shape[1]
    assert model.n_features_in_ == X.shape[1]
    # kept sparse on disk: within 1.5x of the CSR's own bytes (dense would be 480 MB)
    assert data_bytes(tmp_path / "s") <= 1.5 * csr_bytes(X)
    # one row is one Arrow row of (indices, values)
    t = model.store_.rows.read_slice_table(0, 0)
    assert t.num_rows == X.shape[0] and pa.types.is_struct(t.schema.field(FEATURES).type)
    # S=1, R=1: the same model as a plain fit (MultinomialNB counts: order-free)
    plain = MultinomialNB().fit(X, y)
    assert np.array_equal(model.predict(X), plain.predict(X))
    assert np.allclose(model.predict_proba(X[:500]), plain.predict_proba(X[:500]))


SEEN: list = []


class Spy(MultinomialNB):
    """Records the form of X each shard fit gets (backend local: in this process)."""

    def partial_fit(self, X, y, classes=None, sample_weight=None):
        SEEN.append((type(X).__name__, X.shape[1], X.has_sorted_indices))
        return super().partial_fit(X, y, classes=classes, sample_weight=sample_weight)


def test_shard_model_gets_csr_of_declared_width(tmp_path):
    seen = SEEN
    seen.clear()
    X = sp.random(400, 50, density=0.05, format="csr", random_state=1)
    X = sp.csr_matrix((X.data, X.indices, X.indptr), shape=(400, 7_000))  # width declared
    y = np.arange(400) % 2
    model = fit(Spy(), X, y, tmp_path / "s")
    assert seen and all(s == ("csr_matrix", 7_000, True) for s in seen)
    assert model.n_features_in_ == 7_000


def test_values_round_trip_exactly_in_canonical_form(tmp_path):
    # unsorted indices, a duplicate entry and an explicit zero; float32 stays float32
    data = np.array([0.1, 0.2, 0.0, 1 / 3, 5.0, -2.5], np.float32)
    indices = np.array([3, 1, 2, 1, 0, 4])
    indptr = np.array([0, 3, 4, 6])
    X = sp.csr_matrix((data, indices, indptr), shape=(3, 6))
    X = sp.vstack([X] * 4, format="csr")
    X.has_sorted_indices = False
    want = X.copy()
    want.sum_duplicates()
    want.eliminate_zeros()
    model = fit(MultinomialNB(), abs(X), np.arange(12) % 2, tmp_path / "s", shards=1,
                slices=1)
    store = model.store_
    assert store.manifest.schema["dtype"] == "float32"
    got = store.rows.read_slice(0, 0)
    from sisa.engine.forms import model_input
    csr = model_input(got.X, store.manifest.schema, None)
    order = np.argsort(got.ids)
    assert csr.dtype == np.float32 and csr.has_sorted_indices
    assert (csr[order] != abs(want)).nnz == 0 and csr[order].nnz == abs(want).nnz


@pytest.mark.parametrize("make", [sgd, MultinomialNB], ids=["sgd", "multinomial-nb"])
def test_forget_is_byte_identical_to_fresh_fit(make, onehot, tmp_path):
    X, y = onehot
    X, y = X[:3000], y[:3000]
    ids = np.arange(3000) + 10_000
    model = fit(make(), X, y, tmp_path / "a", ids=ids, shards=3, slices=2)
    before = model.predict(X)
    gone = [10_000, 10_007, 12_999, 11_234]
    model.forget(gone)
    keep = ~np.isin(ids, gone)
    fresh = fit(make(), X[keep], y[keep], tmp_path / "b", ids=ids[keep], shards=3, slices=2)
    assert checkpoints(model) == checkpoints(fresh)
    assert {k: v.sha256 for k, v in model.store_.manifest.slices.items()} == \
        {k: v.sha256 for k, v in fresh.store_.manifest.slices.items()}
    assert np.array_equal(model.predict(X), fresh.predict(X))
    assert model.verify().ok
    assert len(before) == 3000
    # the store is sparse after the forget too, and reloads by itself
    again = SISAClassifier.load(str(tmp_path / "a"))
    assert np.array_equal(again.predict(X[:50]), model.predict(X[:50]))


def test_sgd_s1_r1_accuracy_matches_a_plain_fit(onehot, tmp_path):
    # scikit-learn's SGD differs on CSR and dense by design (a damped intercept update on
    # sparse rows), and sisa's incremental schedule passes over the rows in its own order:
    # held-out accuracy, not bytes, is what a plain fit on the same CSR rows can match
    X, y = onehot
    train, test = slice(0, 16_000), slice(16_000, 20_000)
    model = fit(sgd(), X[train], y[train], tmp_path / "s", shards=1, slices=1)
    plain = sgd().fit(X[train], y[train])
    got, want = model.score(X[test], y[test]), plain.score(X[test], y[test])
    assert abs(got - want) <= 0.01, (got, want)
    assert got > 0.8


# ------------------------------------------------------------------ refused in one line
def _small():
    X = sp.random(200, 30, density=0.1, format="csr", random_state=0)
    return X, np.arange(200) % 2


def _bad_inputs():
    X, _ = _small()
    down = X.copy()
    down.indptr = down.indptr.copy()
    down.indptr[5], down.indptr[6] = down.indptr[6], down.indptr[5] - 1  # not monotone
    out = X.copy()
    out.indices = out.indices.copy()
    out.indices[3] = 30  # column 30 of 30
    neg = X.copy()
    neg.indices = neg.indices.copy()
    neg.indices[0] = -1
    short = X.copy()
    short.indptr = short.indptr[:-1]  # 199 rows' pointers for 200 rows
    ragged = X.copy()
    ragged.data = ragged.data[:-2]  # fewer values than indices
    shape_neg = X.copy()
    shape_neg._shape = (-200, 30)
    zero_cols = sp.csr_matrix((200, 0))
    inf = X.copy()
    inf.data = inf.data.copy()
    inf.data[4] = np.inf
    cplx = X.astype(np.complex128)
    flat = sp.coo_array(np.ones(200))  # 1-D
    cases = {"complex-values": cplx, "one-dimensional": flat,
             "indptr-not-monotone": down, "index-out-of-range": out, "negative-index": neg,
             "indptr-shape-mismatch": short, "data-shorter-than-indices": ragged,
             "negative-shape": shape_neg, "no-columns": zero_cols, "infinite-value": inf}
    return cases


@pytest.mark.parametrize("case", sorted(_bad_inputs()))
def test_bad_csr_is_one_line_and_store_unchanged(case, tmp_path):
    X, y = _small()
    model = fit(MultinomialNB(), X, y, tmp_path / "s")
    before = tree_digest(tmp_path / "s")
    with pytest.raises(InputError) as exc:
        fit(MultinomialNB(), _bad_inputs()[case], y, tmp_path / "s")
    msg = str(exc.value)
    assert "\n" not in msg and len(msg) < 300 and "X" in msg
    assert tree_digest(tmp_path / "s") == before
    assert model.verify().ok


def test_labels_of_the_wrong_length_refused(tmp_path):
    X, y = _small()
    with pytest.raises(InputError, match="one label per row"):
        fit(MultinomialNB(), X, y[:-1], tmp_path / "s")
    assert tree_digest(tmp_path / "s") == "absent"


def test_model_without_sparse_input_refused_before_writing(tmp_path):
    X, y = _small()
    with warnings.catch_warnings(), \
            pytest.raises(InputError, match=r"cannot take.*sparse input.*toarray"):
        warnings.simplefilter("ignore", UserWarning)  # "no partial_fit: refit per shard"
        fit(HistGradientBoostingClassifier(max_iter=5), X, y, tmp_path / "s")
    assert tree_digest(tmp_path / "s") == "absent"


def test_predict_checks_width_and_takes_dense_rows(tmp_path):
    X, y = _small()
    model = fit(MultinomialNB(), X, y, tmp_path / "s")
    assert np.array_equal(model.predict(X.toarray()), model.predict(X))
    assert np.array_equal(model.predict(sp.csr_array(X)), model.predict(X))
    with pytest.raises(InputError, match="has 31 columns; this model was fit on 30"):
        model.predict(sp.hstack([X, X[:, :1]], format="csr"))
    wide = Store.open(str(tmp_path / "s")).n_features
    assert wide == 30
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no feature-name warning on CSR
        model.predict_proba(X[:5])


def test_cli_predict_on_a_sparse_store_is_one_line(tmp_path):
    X, y = _small()
    fit(MultinomialNB(), X, y, tmp_path / "s")
    pacsv.write_csv(pa.table({"x0": [1.0]}), tmp_path / "rows.csv")
    before = tree_digest(tmp_path / "s")
    code, _out, err = run_cli("predict", str(tmp_path / "s"), str(tmp_path / "rows.csv"),
                             "--out", str(tmp_path / "p.parquet"))
    assert code == 2 and "sparse matrix" in err and "Python" in err
    assert len(err.strip().splitlines()) == 1
    assert tree_digest(tmp_path / "s") == before and not (tmp_path / "p.parquet").exists()


def test_bytes_do_not_depend_on_memory_budget_or_input_format(tmp_path):
    # 1 MB of budget spills many runs and merges slices in ranges; CSR, csr_array and
    # COO input give the same canonical rows
    X = sp.random(6_000, 2_000, density=0.02, format="csr", random_state=3)
    y = np.arange(6_000) % 3
    digests = []
    for k, (data, budget) in enumerate([(X, 256), (sp.csr_array(X), 1), (X.tocoo(), 1)]):
        with Store.building(str(tmp_path / f"s{k}"), overwrite=True) as st:
            st.ingest(data, y,
                      options=IngestOptions(n_shards=4, n_slices=3, memory_budget_mb=budget))
            st.publish()
        digests.append({key: v.sha256 for key, v in st.manifest.slices.items()})
    assert digests[0] == digests[1] == digests[2]


def test_ray_training_writes_the_local_checkpoints(ray_session, tmp_path):
    X = sp.random(3_000, 500, density=0.02, format="csr", random_state=4)
    s = np.asarray(X.sum(axis=1)).ravel()
    y = (s > np.median(s)).astype(int)
    local = fit(sgd(), X, y, tmp_path / "local", shards=3, slices=2)
    on_ray = SISAClassifier(sgd(), n_shards=3, n_slices=2, backend="ray",
                            store=str(tmp_path / "ray")).fit(X, y)
    assert checkpoints(on_ray) == checkpoints(local)
    on_ray.forget([1, 2, 3])
    assert on_ray.verify().ok
