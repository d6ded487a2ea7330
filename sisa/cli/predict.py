"""``sisa predict``: predictions for the rows of a data file, written to a file."""

from __future__ import annotations

import argparse
import os

import numpy as np
import pyarrow as pa

from ..errors import InputError
from ..estimators import columns_by_name
from ..estimators import load as open_model
from ..store.write.text import CsvOptions
from .common import emit

PROGRESS_AFTER_S = 2.0  # a run shorter than this prints no progress


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict the rows of DATA with the model in STORE and write them to ``--out``, a
    record batch at a time (:mod:`.predict_io`): memory stays that of one batch whatever
    the file's length, and ``--out`` appears only once every row is scored.

    The output holds an id column (``--id-column``; else the store's id column when DATA
    has it; else ``row``, the row number from 0), ``prediction``, and for a classifier
    with ``predict_proba`` one ``proba_<class>`` column per class, in ``classes_`` order.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa predict`` options.

    Returns
    -------
    int
        0; failures raise (and :func:`sisa.cli.main` turns them into exit codes).
    """
    import time

    from ..progress import bar
    from .predict_io import AtomicOutput, Input

    _check_out(args.out, args.store)  # before any work: a usage error, exit 2
    if args.batch_rows < 1:
        raise InputError(f"--batch-rows {args.batch_rows}: give a positive number of rows")
    model = open_model(args.store)
    schema = model.store_.manifest.schema
    src = Input(args.data, CsvOptions.of(args.na_values, not args.keep_whitespace))
    features = _feature_columns(src, schema)
    id_name = _id_column(args.id_column, src, schema)
    proba = hasattr(model, "predict_proba")  # soft vote: prediction = argmax, as predict()
    names = [f"proba_{c}" for c in model.classes_] if proba else []
    if id_name in ("prediction", *names):
        raise InputError(f"--id-column {id_name} is also an output column's name: rename it")
    t0, done = time.perf_counter(), 0
    progress = bar(total=src.count_rows(), desc="predict", unit="rows", unit_scale=True,
                   enabled=not args.quiet, delay=PROGRESS_AFTER_S)
    with progress, AtomicOutput(args.out) as out:
        # every column is read and validated, the ones the model ignores too: a forged
        # column is refused, not passed over (the label column is small beside features)
        for rb in src.batches(src.names, args.batch_rows):
            cols = {id_name or "row": rb.column(id_name) if id_name
                    else pa.array(np.arange(done, done + rb.num_rows))}
            cols.update(_score(model, _model_input(rb, features, schema, src.what), names))
            out.write(pa.RecordBatch.from_pydict(cols))
            done += rb.num_rows
            progress.update(rb.num_rows)
        if not done:
            raise InputError(f"{args.data} has no rows: there is nothing to predict")
        out.commit()
    secs = time.perf_counter() - t0
    emit(args, {"rows": done, "out": args.out, "seconds": round(secs, 3)},
         f"wrote {done:,} predictions to {args.out} in {secs:.1f}s "
         f"({done / max(secs, 1e-9):,.0f} rows/s)")
    return 0


def _feature_columns(src, schema: dict) -> list[str]:
    """The columns of DATA the model reads, checked against DATA's columns up front."""
    if schema.get("layout") == "sparse":
        from .predict_sparse import sparse_column

        return [sparse_column(src, schema)]
    names = schema["feature_names"]
    src.require(names, "feature")
    return names


def _id_column(given: str | None, src, schema: dict) -> str | None:
    """The id column passed through to the output: ``--id-column`` (which DATA must have),
    else the store's id column when DATA has it, else None (row numbers)."""
    if given is not None:
        src.require([given], "--id-column")
        return given
    stored = schema.get("id_name")
    return stored if stored and stored in src.names else None


def _model_input(rb, features: list[str], schema: dict, what: str):
    """One batch as the model takes it: a table of typed columns (read by name, as at
    fit), a CSR matrix for a sparse store, else a float64 matrix."""
    from ..store.format.columns import is_columns

    if is_columns(schema):
        return pa.Table.from_batches([rb.select(features)])
    if schema.get("layout") == "sparse":
        from .predict_sparse import to_matrix

        return to_matrix(rb.column(features[0]), schema, what)
    return _features(rb.select(features), features, what)


def _score(model, X, proba_names: list[str]) -> dict:
    """``prediction`` and the ``proba_*`` columns of one batch."""
    with columns_by_name():
        if not proba_names:
            return {"prediction": pa.array(model.predict(X))}
        p = model.predict_proba(X)
    # the ensemble's own predict is this argmax of the same mean (a second pass would
    # score every row twice)
    out = {"prediction": pa.array(model.classes_[p.argmax(axis=1)])}
    out.update({n: pa.array(p[:, k]) for k, n in enumerate(proba_names)})
    return out


def _features(table: pa.RecordBatch, names: list[str], data: str) -> np.ndarray:
    """The model's feature columns of ``table`` (one batch) as a float64 matrix, with every
    problem reported by column name before the model sees a row."""
    import pyarrow.types as pat

    text = [c for c in names if not (
        pat.is_integer(t := table.schema.field(c).type) or pat.is_floating(t)
        or pat.is_boolean(t))]
    if text:
        raise InputError(f"{data}: feature column(s) {text[:5]} are not numeric: encode "
                         "them as the training data were encoded")
    try:  # one row-major copy in C++ (about half the time of column by column)
        rows = np.asarray(table.to_tensor(row_major=True, null_to_nan=True))
        X = np.empty(rows.shape)
        X[...] = rows
    except (pa.ArrowNotImplementedError, pa.ArrowInvalid, pa.ArrowTypeError):  # booleans
        X = np.column_stack([table.column(c).to_numpy(zero_copy_only=False)
                             for c in names]).astype(np.float64)
    # a column's sum is finite when all its values are (one pass, no n x d mask); a
    # non-finite sum (a NaN, an infinity, or an overflow of the sum) looks value by value
    with np.errstate(over="ignore", invalid="ignore"):  # inf - inf: NaN, looked at below
        if np.isfinite(X.sum(axis=0)).all():
            return X
    bad = [c for c, ok in zip(names, np.isfinite(X).all(axis=0), strict=True) if not ok]
    if bad:
        raise InputError(f"{data}: feature column(s) {bad[:5]} hold NaN or infinite values: "
                         "impute or drop those rows before predicting")
    return X


def _is_store_dir(d: str) -> bool:
    try:
        with open(os.path.join(d, "manifest.json"), "rb") as f:
            return b'"format":"sisa-store/' in f.read(1 << 16)
    except OSError:
        return False


def _check_out(out: str, store: str) -> None:
    """``--out`` must name a file in an existing folder outside every sisa store: a file
    written into a store fails its ``verify`` and its ``repair`` deletes it."""
    from ..store.io.fs import Location

    path = os.path.expanduser(out)
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        raise InputError(f"--out {out}: folder {folder} does not exist; create it first or "
                         "write elsewhere")
    if os.path.isdir(path):
        raise InputError(f"--out {out} is a folder: name a .parquet or .csv file")
    d = os.path.realpath(path)  # through any links, so a link into a store is caught too
    loc = Location(store)
    own = loc.root if loc.is_local else None
    while d != os.path.dirname(d):
        d = os.path.dirname(d)
        if d == own or _is_store_dir(d):
            raise InputError(f"--out {out} is inside the sisa store {d}: files there fail "
                             "`sisa verify` and `sisa repair` deletes them; write the predictions "
                             "outside the store")
