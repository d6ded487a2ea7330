"""``sisa predict``: predictions for the rows of a data file, written to a file."""

from __future__ import annotations

import argparse
import os

import numpy as np

from ..errors import InputError
from ..estimators import columns_by_name
from ..estimators import load as open_model
from .common import emit


def cmd_predict(args: argparse.Namespace) -> int:
    """Predict the rows of DATA with the model in STORE and write them to ``--out``.

    The output keeps the store's id column when DATA has it, so predictions can be joined
    back to their rows.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa predict`` options.

    Returns
    -------
    int
        0; failures raise (and :func:`sisa.cli.main` turns them into exit codes).
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from ..store.format.columns import is_columns
    from ..store.write.sources import read_table
    from ..store.write.text import CsvOptions

    _check_out(args.out, args.store)  # before any work: a usage error, exit 2
    model = open_model(args.store)
    schema = model.store_.manifest.schema
    if schema.get("layout") == "sparse":
        raise InputError(f"store {args.store} was fit on a sparse matrix, which a CSV or "
                         "Parquet file cannot carry: predict through Python "
                         "(SISAClassifier.load(store).predict(X_csr))")
    table = read_table(args.data, CsvOptions.of(args.na_values, not args.keep_whitespace))
    # typed columns: the model reads them by name, as at fit
    X = table if is_columns(schema) else _features(table, schema["feature_names"], args.data)
    with columns_by_name():
        cols = {"prediction": model.predict(X)}
    if schema.get("id_name") and schema["id_name"] in table.column_names:
        cols = {schema["id_name"]: table.column(schema["id_name"]), **cols}
    out = pa.table(cols)
    if args.out.endswith(".csv"):
        pacsv.write_csv(out, args.out)
    else:
        pq.write_table(out, args.out)
    emit(args, {"rows": out.num_rows, "out": args.out},
         f"wrote {out.num_rows:,} predictions to {args.out}")
    return 0


def _features(table, names: list[str], data: str) -> np.ndarray:
    """The model's feature columns of ``table`` as a float64 matrix, with every problem
    reported by column name before the model sees a row."""
    import pyarrow.types as pat

    if table.num_rows == 0:
        raise InputError(f"{data} has no rows: there is nothing to predict")
    missing = [c for c in names if c not in table.column_names]
    if missing:
        raise InputError(f"{data} lacks feature column(s) {missing[:5]} the model was trained "
                         "on")
    text = [c for c in names if not (
        pat.is_integer(t := table.schema.field(c).type) or pat.is_floating(t)
        or pat.is_boolean(t))]
    if text:
        raise InputError(f"{data}: feature column(s) {text[:5]} are not numeric: encode "
                         "them as the training data were encoded")
    X = np.column_stack([table.column(c).to_numpy(zero_copy_only=False)
                         for c in names]).astype(np.float64)
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
