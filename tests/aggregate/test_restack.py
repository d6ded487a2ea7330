"""A forget's reload restacks only what changed: when every retrained shard keeps its
family key, the groups without a retrained shard are the same objects and the others
have only their changed shards replaced; when a shard's key changes (it lost a class),
the shards are regrouped. Either way the stacked form is the one a build from scratch
gives (values, dtypes, layout), and the answers are those of a fresh load, bit for bit."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.linear_model import LogisticRegression

from sisa import SISAClassifier
from sisa.aggregate import stacked


def _data(n=900):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(n, 6)).astype(np.float32)
    y = (X[:, 0] + 0.5 * X[:, 1] > 0).astype(np.int64)
    y[:12] = 2  # a rare third class: some shards never see it
    return X, y


def _same_as_scratch(model) -> None:
    ours, scratch = model._stacked, stacked.build(model.estimators_, model.classes_)
    assert len(ours.groups) == len(scratch.groups)
    for g, h in zip(ours.groups, scratch.groups, strict=True):
        assert np.array_equal(g.positions, h.positions) and np.array_equal(g.cols, h.cols)
        for u, v in ((g.form.Wst, h.form.Wst), (g.form.b, h.form.b)):
            assert u.dtype == v.dtype and u.strides == v.strides and np.array_equal(u, v)
    assert ours.keys == scratch.keys


def _forget(model, ids) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model.forget([int(i) for i in ids])


def test_a_forget_restacks_only_the_groups_it_changed(tmp_path):
    X, y = _data()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = SISAClassifier(LogisticRegression(), n_shards=6, n_slices=1,
                               backend="local", store=str(tmp_path / "s"),
                               random_state=0).fit(X, y)
    index = model.store_.rows.read_index()
    ids = np.asarray(index.column("sample_id"))
    shard_of = dict(zip(ids.tolist(), np.asarray(index.column("shard")).tolist(), strict=True))
    rare = {}
    for i in range(12):
        rare.setdefault(shard_of[i], []).append(i)
    assert len(model._stacked.groups) == 2 and len(rare) >= 2

    # one common row of a shard that keeps its classes: its group alone is restacked
    i = next(i for i in ids.tolist() if i >= 12)
    s = shard_of[i]
    old = model._stacked
    _forget(model, [i])
    live = [k for k, m in enumerate(model.estimators_) if m is not None]
    pos = live.index(s)
    touched = [g for g in model._stacked.groups if pos in g.positions.tolist()]
    kept = [g for g in model._stacked.groups if pos not in g.positions.tolist()]
    assert len(touched) == 1 and len(kept) == 1
    assert kept[0] is next(g for g in old.groups if pos not in g.positions.tolist())
    assert touched[0] is not next(g for g in old.groups if pos in g.positions.tolist())
    _same_as_scratch(model)

    # a shard that loses its rare rows (others keep the class): its key changes
    s2, rows = next((k, v) for k, v in rare.items() if k != s)
    _forget(model, rows)
    assert len(model.estimators_[s2].classes_) == 2
    _same_as_scratch(model)
    fresh = SISAClassifier.load(str(tmp_path / "s"))
    assert (model.predict_proba(X) == fresh.predict_proba(X)).all()
    assert (model.predict(X) == fresh.predict(X)).all()
