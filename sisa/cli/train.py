"""``sisa train``: build a store from a data file or a built-in dataset and fit on it."""

from __future__ import annotations

import argparse
import time
import warnings

from ..datasets import DATASETS
from ..errors import InputError
from ..estimators import columns_by_name
from ..store import IngestOptions
from ..store.write.holdout import split, split_file
from .common import emit, estimator_params, load_builtin, settings

DEFAULT_MODEL = "sgd"  # the preset --model names when not given (parser.py)


def cmd_train(args: argparse.Namespace) -> int:
    """Build a store at ``--store`` from DATA and train a SISA model on it.

    Every check that needs no data runs first; the store is built and trained beside any
    store already at ``--store`` and published in one step, so a bad row, a bad holdout
    row or a failed fit leaves the old store exactly as it was.

    Parameters
    ----------
    args : argparse.Namespace
        The parsed ``sisa train`` options (see :func:`sisa.cli.build_parser`).

    Returns
    -------
    int
        0; failures raise (and :func:`sisa.cli.main` turns them into exit codes).
    """
    from sklearn.base import is_regressor

    from ..estimators import SISAClassifier, SISARegressor

    est = _checked_estimator(args)
    t0 = time.perf_counter()
    if args.data in DATASETS:
        est, source, options, hold = _builtin_source(args, est)
    else:
        source, options, hold = _file_source(args, est)
    regression = is_regressor(est)
    cls = SISARegressor if regression else SISAClassifier
    many = {} if regression else {"allow_many_classes": args.allow_many_classes}
    model = cls(est, n_shards=args.shards, n_slices=args.slices, random_state=args.seed,
                store=args.store, schedule=args.schedule,
                epochs=args.epochs if args.epochs else "auto", **estimator_params(args), **many)
    result = _build_and_fit(args, model, source, options, hold, "r2" if regression
                            else "accuracy", t0)
    emit(args, result, f"trained {result['rows']:,} rows into {args.shards} shards x "
         f"{args.slices} slices at {args.store} in {result['seconds']}s (shard sizes "
         f"{result['spread']})" + (f"; holdout {result['holdout']['metric']} "
                                   f"{result['holdout']['score']:.4f}" if hold is not None
                                   else ""))
    return 0


def _checked_estimator(args: argparse.Namespace):
    """The estimator ``--model``/``--model-spec`` names, once every option that needs no
    data is checked (so a bad one fails before anything is read or written)."""
    from ..engine.presets import from_preset, from_spec

    if not 0 <= args.holdout < 1:
        raise InputError(f"--holdout must be a fraction in [0, 1), got {args.holdout}")
    est = from_spec(args.model_spec) if args.model_spec else from_preset(args.model)
    if not (hasattr(est, "fit") and hasattr(est, "predict")):
        raise InputError(f"--model-spec names {type(est).__name__}, which does not predict: "
                         "name a classifier or regressor (or a Pipeline ending in one)")
    if args.epochs is not None and args.epochs < 1:
        raise InputError(f"--epochs must be at least 1, got {args.epochs} (omit it for auto)")
    if hasattr(est, "_validate_params"):  # bad estimator params: fail before writing data
        try:
            est._validate_params()
        except ValueError as exc:
            raise InputError(f"invalid model parameters: {exc}") from None
    if args.data not in DATASETS and not args.label:
        raise InputError(f"--label COL is required with a data file: name the label column of "
                         f"{args.data}")
    return est


def _builtin_source(args: argparse.Namespace, est):
    """A built-in dataset as a table to ingest: ``(estimator, table, ingest options,
    holdout)``; the default preset becomes its regressor on a regression dataset."""
    import pyarrow as pa
    from sklearn.base import is_regressor

    from ..engine.presets import REGRESSION_PRESETS, from_preset

    ds = load_builtin(args.data, args.rows)
    if ds.task == "regression" and not is_regressor(est):
        if args.model_spec or args.model != DEFAULT_MODEL:
            raise InputError(f"{args.data} is a regression dataset: pick a regressor "
                             f"({', '.join(sorted(REGRESSION_PRESETS))})")
        est = from_preset("sgd-regressor")
    tr, te = split(len(ds.y), args.holdout, args.seed)
    hold = (ds.X[te], ds.y[te]) if len(te) else None
    # a table, so the store keeps the dataset's column names (predict matches on them)
    source = pa.table({**{n: ds.X[tr, i] for i, n in enumerate(ds.feature_names)},
                       "label": ds.y[tr], "sample_id": tr})
    return est, source, _options(args, label="label", id_column="sample_id"), hold


def _file_source(args: argparse.Namespace, est):
    """A data file to ingest: ``(path or training table, ingest options, holdout)``.
    Missing values are kept when the model takes them; a column kind it cannot take is
    refused before any row is read."""
    from ..engine import forms
    from ..store import CsvOptions

    csv = CsvOptions.of(args.na_values, not args.keep_whitespace)
    nan = forms.accepts(est).nan
    feats = None
    if args.features is not None:
        feats = args.features.split(",")
        if not all(feats):
            raise InputError(f"--features {args.features!r} has an empty column name: "
                             "pass column names separated by commas, like a,b,c")
    source, id_column, hold = args.data, args.id, None
    if args.holdout:
        part = split_file(args.data, args.label, args.holdout, args.seed, id_column=args.id,
                          group_column=args.group, deletion_prob_column=args.deletion_prob,
                          feature_columns=feats, allow_missing=nan, csv=csv)
        if not part.train.num_rows:
            raise InputError(f"--holdout {args.holdout} keeps every one of the {part.n_rows:,} "
                             "rows out of training: use a smaller fraction, like 0.2")
        source, id_column, hold = part.train, part.id_column, part.holdout
    options = _options(args, label=args.label, id_column=id_column, group_column=args.group,
                       deletion_prob_column=args.deletion_prob, feature_columns=feats,
                       allow_missing=nan,
                       csv=csv if source is args.data else None)  # a split table was read
    return source, options, hold


def _options(args: argparse.Namespace, **columns) -> IngestOptions:
    """The store's layout from ``--shards``/``--slices``/``--seed``/``--hot-*``, and how
    the source is read (``columns``)."""
    return IngestOptions(n_shards=args.shards, n_slices=args.slices, random_state=args.seed,
                         hot_shards=args.hot_shards, hot_threshold=args.hot_threshold,
                         **columns)


def _build_and_fit(args: argparse.Namespace, model, source, options: IngestOptions, hold,
                   metric: str, t0: float) -> dict:
    """Ingest, fit, score the holdout and publish the new store; returns the result."""
    from ..engine import forms
    from ..store import Store

    est = model.estimator
    with Store.building(args.store, overwrite=args.overwrite) as store:
        # in this process (a Ray ingest is the library's, for a big Parquet file)
        store.ingest(source, options=options, settings=settings(args).replace(backend="local"),
                     check=lambda schema: forms.check(est, schema))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore" if args.quiet else "default")
            model.fit(store)
        result = {"store": args.store, "rows": store.n_rows, "shards": args.shards,
                  "slices": args.slices, "spread": store.spread(),
                  "seconds": round(time.perf_counter() - t0, 2)}
        if hold is not None:
            with columns_by_name():
                score = float(model.score(*hold))
            result["holdout"] = {"rows": len(hold[1]), "metric": metric,
                                 "score": round(score, 4)}
            store.commit(store.manifest.with_holdout({**result["holdout"], "at": "training"}))
        store.publish()
    return result
