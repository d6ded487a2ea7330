"""IngestOptions: one validated value for how rows become a store (issue 25).

A bad option is one line naming the field and the fix, raised when the value is made, so
no build starts and a store already at the location keeps every byte."""

from __future__ import annotations

import dataclasses

import numpy as np
import pyarrow as pa
import pytest

from sisa import CsvOptions, ExecutionSettings, IngestOptions, Store
from sisa.errors import InputError
from sisa.store.write import builder
from tests.helpers import make_classification, tree_digest

GOOD = {"n_shards": 2, "n_slices": 2}

# field -> (bad value, words the one-line error must hold); each a mistake a user makes
BAD = {
    "shards-zero": ({"n_shards": 0}, "n_shards must be an integer >= 1"),
    "shards-str": ({"n_shards": "4"}, "n_shards must be an integer >= 1"),
    "slices-float": ({"n_slices": 2.5}, "n_slices must be an integer >= 1"),
    "seed-negative": ({"random_state": -1}, "random_state must be a non-negative integer"),
    "hot-too-many": ({"hot_shards": 2, "deletion_prob_column": "p"},
                     "hot_shards must be between 1 and n_shards-1"),
    "threshold-range": ({"hot_threshold": 1.5}, r"hot_threshold must be in \(0, 1\]"),
    "threshold-str": ({"hot_threshold": "high"}, "hot_threshold must be a number"),
    "label-empty": ({"label": ""}, "label must be a column name"),
    "id-not-str": ({"id_column": 3}, "id_column must be a column name"),
    "two-roles": ({"label": "y", "group_column": "y"}, r"\['y'\] are given for two roles"),
    "features-str": ({"feature_columns": "f0"}, "feature_columns must be a list of column "
                                                "names.*pass a list"),
    "features-twice": ({"feature_columns": ["f0", "f0"]}, "names a column twice"),
    "features-empty": ({"feature_columns": []}, "feature_columns is empty"),
    "features-label": ({"label": "y", "feature_columns": ["f0", "y"]},
                       "cannot also be features"),
    "dtype": ({"dtype": "int8"}, "dtype must be float32 or float64"),
    "allow-missing-str": ({"allow_missing": "yes"}, "allow_missing must be True or False"),
    "csv-dict": ({"csv": {"na_values": ["?"]}}, "csv must be a CsvOptions.*CsvOptions.of"),
    "budget-negative": ({"memory_budget_mb": -1}, "memory_budget_mb must be an integer >= 0"),
    "batch-zero": ({"batch_rows": 0}, "batch_rows must be an integer >= 1"),
    "batch-bool": ({"batch_rows": True}, "batch_rows must be an integer >= 1"),
}


@pytest.fixture(scope="module")
def existing(tmp_path_factory):
    """A store the bad calls try to replace (overwrite=True): it must keep every byte."""
    path = tmp_path_factory.mktemp("opts") / "s"
    X, y = make_classification(200, 3)
    Store.create(path, X, y, options=IngestOptions(**GOOD))
    return path, X, y


@pytest.mark.parametrize("name", list(BAD))
def test_a_bad_option_is_one_line_naming_the_field_and_nothing_is_written(existing, name):
    path, X, y = existing
    bad, words = BAD[name]
    before = tree_digest(path)
    with pytest.raises(InputError, match=words) as exc:
        Store.create(path, X, y, options=IngestOptions(**{**GOOD, **bad}), overwrite=True)
    message = str(exc.value)
    assert "\n" not in message and len(message) < 220, message
    field = next(iter(bad)) if name != "two-roles" else "roles"
    assert field.split("_")[0] in message, (field, message)
    assert tree_digest(path) == before
    assert Store.open(path).n_rows == 200


@pytest.mark.parametrize("bad, words", [
    ({"na_values": "?"}, "na_values must be a list of strings.*pass a list"),
    ({"na_values": ["?", 1]}, "na_values must be a list of strings"),
    ({"trim_whitespace": "yes"}, "trim_whitespace must be True or False"),
])
def test_csv_options_are_checked_too(bad, words):
    with pytest.raises(InputError, match=words):
        CsvOptions(**bad)


def test_options_that_are_not_ingest_options_are_refused_before_anything_is_written(existing):
    path, X, y = existing
    before = tree_digest(path)
    with pytest.raises(InputError, match=r"^options must be an IngestOptions, got dict: pass "
                                         r"options=IngestOptions\(n_shards=\.\.\."):
        Store.create(path, X, y, options=GOOD, overwrite=True)  # type: ignore[arg-type]
    assert tree_digest(path) == before


def test_per_row_arrays_with_a_table_name_the_option_to_use(tmp_path):
    X, y = make_classification(200, 3)
    table = pa.table({"f0": X[:, 0], "y": y})
    for arrays, option in (({"sample_ids": np.arange(200)}, "id_column"),
                           ({"groups": np.arange(200) % 7}, "group_column"),
                           ({"deletion_prob": np.full(200, 0.1)}, "deletion_prob_column")):
        with pytest.raises(InputError, match=rf"IngestOptions\({option}=\.\.\.\) with a table"):
            Store.create(tmp_path / "s", table, options=IngestOptions(label="y", **GOOD),
                         **arrays)
    assert not (tmp_path / "s").exists()


def test_options_are_normalised_frozen_and_replace_validates_again():
    opts = IngestOptions(n_shards=np.int64(3), n_slices=2, dtype=np.float32,
                         feature_columns=["a", "b"], csv=CsvOptions(na_values=["?"]))
    assert opts.dtype == "float32" and opts.feature_columns == ("a", "b")
    assert type(opts.n_shards) is int and type(opts.hot_threshold) is float
    assert opts.csv == CsvOptions(na_values=("?",))
    assert opts == IngestOptions(n_shards=3, n_slices=2, dtype="float32",
                                 feature_columns=("a", "b"), csv=CsvOptions(("?",)))
    assert hash(opts) == hash(opts.replace())
    with pytest.raises(dataclasses.FrozenInstanceError):
        opts.n_shards = 4  # type: ignore[misc]
    with pytest.raises(InputError, match="n_slices must be an integer >= 1"):
        opts.replace(n_slices=0)
    with pytest.raises(TypeError):  # keyword-only: no positional S and R to swap by mistake
        IngestOptions(3, 2)  # type: ignore[misc]


def test_the_same_options_build_the_same_store_by_array_or_table(tmp_path):
    X, y = make_classification(300, 3)
    opts = IngestOptions(n_shards=3, n_slices=2, random_state=4, dtype="float64")
    a = Store.create(tmp_path / "a", X, y, options=opts)
    table = pa.table({"f0": X[:, 0], "f1": X[:, 1], "f2": X[:, 2], "label": y})
    b = Store.create(tmp_path / "b", table, options=opts.replace(label="label"))
    assert a.random_state == b.random_state == 4 and b.manifest.schema["dtype"] == "float64"
    for s in range(3):  # the same rows in the same places: the layout is the options'
        for r in range(2):
            assert a.rows.read_slice(s, r).ids.tolist() == b.rows.read_slice(s, r).ids.tolist()


def test_progress_is_the_execution_settings_flag(tmp_path, capfd):
    """One settings type: the ingest's progress bars follow ExecutionSettings.progress."""
    X, y = make_classification(300, 3)
    Store.create(tmp_path / "quiet", X, y, options=IngestOptions(**GOOD),
                 settings=ExecutionSettings(backend="local"))
    assert "ingesting" not in capfd.readouterr().err
    Store.create(tmp_path / "shown", X, y, options=IngestOptions(**GOOD),
                 settings=ExecutionSettings(backend="local", progress=True))
    err = capfd.readouterr().err
    assert "ingesting" in err and "writing slices" in err


def test_ingest_rows_takes_only_the_option_object():
    """No loose keywords stacked beside the options (one mechanism)."""
    import inspect

    params = inspect.signature(builder.ingest_rows).parameters
    assert "progress" not in params and not any(
        p.kind is p.VAR_KEYWORD for p in params.values())
    assert set(params) == {"store", "data", "y", "options", "settings", "sample_ids", "groups",
                           "deletion_prob", "check"}
    create = inspect.signature(Store.create).parameters
    assert not any(p.kind is p.VAR_KEYWORD for p in create.values())
