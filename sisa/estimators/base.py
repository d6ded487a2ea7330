"""What SISAClassifier and SISARegressor share: fit, load, forget, verify."""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import weakref
from numbers import Integral, Real
from typing import ClassVar

import numpy as np
from sklearn.base import BaseEstimator, is_classifier
from sklearn.utils._param_validation import HasMethods, Interval, StrOptions
from sklearn.utils.multiclass import check_classification_targets, type_of_target
from sklearn.utils.validation import check_is_fitted, validate_data

from ..aggregate import stacked
from ..engine import driver, forms
from ..engine.schedule import SCHEDULES, resolve_epochs, warn_refit_once
from ..errors import InputError, SisaError, StaleModelError
from ..store import IngestOptions, Store
from ..store.format import columns as colmod
from ..store.format import sparse
from ..tasks.backend import choose, connect
from ..tasks.settings import BACKENDS, ExecutionSettings
from . import inputs

# float32 stays float32 (half the store size); anything else becomes float64.
FLOAT_DTYPES = (np.float64, np.float32)


_UNSET = object()  # forget(groups=...) without ids (None is an id, refused by the id boundary)


class _SISABase(BaseEstimator):
    _parameter_constraints: ClassVar[dict] = {
        "estimator": [HasMethods(["fit", "predict"]), None],
        "n_shards": [Interval(Integral, 1, None, closed="left")],
        "n_slices": [Interval(Integral, 1, None, closed="left")],
        "store": [str, os.PathLike, None],
        "random_state": [Interval(Integral, 0, None, closed="left")],
        "ray_address": [str, None],
        "backend": [StrOptions(set(BACKENDS))],
        "schedule": [StrOptions(set(SCHEDULES))],
        "epochs": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "num_cpus": [Interval(Real, 0, None, closed="neither")],
        "verbose": ["boolean"],
    }

    def __init__(self, estimator=None, *, n_shards=5, n_slices=4, aggregation=None, store=None,
                 random_state=0, ray_address=None, backend="auto", schedule="streaming",
                 epochs="auto", num_cpus=1, verbose=False):
        self.estimator = estimator
        self.n_shards = n_shards
        self.n_slices = n_slices
        self.aggregation = aggregation
        self.store = store
        self.random_state = random_state
        self.ray_address = ray_address
        self.backend = backend
        self.schedule = schedule
        self.epochs = epochs
        self.num_cpus = num_cpus
        self.verbose = verbose

    # -------------------------------------------------------------- fitting
    def _store_uri(self) -> str:
        if self.store is not None:
            return str(self.store)
        tmp = tempfile.mkdtemp(prefix="sisa-store-")
        # The estimator owns its default store: removed when the estimator goes away.
        weakref.finalize(self, shutil.rmtree, tmp, True)
        return tmp

    def fit(self, X, y=None, sample_ids=None, groups=None):
        """Build the store, then train every shard slice by slice.

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features), DataFrame, pyarrow.Table,
            path to a Parquet/CSV/Arrow file or directory, or a :class:`~sisa.Store`
            Training features. With a table or path, ``y`` names the label column;
            with a Store (or its URI and ``y=None``), its rows are used as they are.
            Category (string), boolean, date and timestamp columns and missing values
            are stored as they are; each shard model gets them in the form it takes
            (:mod:`sisa.engine.forms`). A scipy sparse matrix is stored kept sparse and
            reaches a shard model that takes sparse input as CSR (:mod:`sisa.store.format.sparse`).
        y : array-like of shape (n_samples,) or str, default=None
            Labels, or the label column's name.
        sample_ids : array-like of shape (n_samples,), default=None
            Stable id per row (int or str), used to forget rows later. Default:
            0..n-1 in input order.
        groups : array-like of shape (n_samples,) or str, default=None
            Group key per row (int or str), as in scikit-learn's ``GroupKFold``: a person,
            a user id. A group's rows share one shard and slice, and
            ``forget(groups=[key])`` forgets all of them. With a table, the name of its
            group column may be given instead.

        Returns
        -------
        self : object
        """
        self._validate_params()
        self.aggregation_ = self._resolved_aggregation()
        est = self._base_estimator()
        if self.aggregation_ == "soft" and not hasattr(est, "predict_proba"):
            raise InputError(
                f"aggregation='soft' averages predict_proba, which {type(est).__name__} does "
                "not provide with these parameters: use aggregation='hard' or an estimator "
                "with predict_proba (e.g. SGDClassifier(loss='log_loss'))"
            )
        if not hasattr(est, "partial_fit"):
            warn_refit_once(est)
        if choose(self._settings(), self.n_shards) == "ray":
            connect(self.ray_address)  # Ray and its workers start while the store is built
        if isinstance(X, Store) or (isinstance(X, (str, os.PathLike)) and y is None):
            if groups is not None:
                raise InputError("a store's groups are fixed when it is built: pass groups= "
                                 "with the training rows, or build the store with "
                                 "group_column= / `sisa train --group COL`")
            store = X if isinstance(X, Store) else Store.open(str(X))
            self._check_same_layout(store)
            with store.lock():
                self._train(store, est)
        else:
            # Built and trained beside any store already there; one manifest write swaps it
            # in, so a bad row or a failed fit leaves the old store as it was.
            with Store.building(self._store_uri(), overwrite=True) as store:
                self._ingest(store, X, y, sample_ids, est, groups)
                self._train(store, est)
                store.publish()
        self._set_fitted(store)
        return self

    def _train(self, store: Store, est) -> None:
        """Record the model spec and train every shard (the caller holds the lock)."""
        forms.check(est, store.manifest.schema)
        if not is_classifier(self) and store.manifest.schema["label_type"] == "string":
            raise InputError("the labels are strings: a regressor needs numeric labels; use a "
                             "classifier (SISAClassifier; on the CLI a classification preset) "
                             "or a numeric label column")
        classes = self._classes_from_store(store) if is_classifier(self) else None
        if classes is not None and type_of_target(classes) == "continuous":
            raise InputError(
                f"the labels hold {len(classes):,} distinct non-integer values, like a "
                "regression target: a classifier needs discrete classes; use a regressor "
                "(SISARegressor; on the CLI a regression preset) or encode the label")
        if classes is not None and not getattr(self, "allow_many_classes", True):
            inputs.refuse_many_classes(store, classes)
        if classes is not None and len(classes) < 2:
            raise InputError(f"the training labels hold only 1 class "
                             f"({np.asarray(classes[0]).item()!r}): a "
                             "classifier needs at least two classes")
        spec = driver.model_spec(est, classes=classes, schedule=self.schedule,
                                 epochs=resolve_epochs(est, self.epochs),
                                 aggregation=self.aggregation_)
        # a fresh fit replaces any model, in one commit once every shard is trained
        driver.fit(store, spec, self._settings())

    def _settings(self, progress: bool | None = None) -> ExecutionSettings:
        """Where this model's tasks run, from its parameters."""
        return ExecutionSettings(backend=self.backend, address=self.ray_address,
                                 num_cpus=self.num_cpus,
                                 progress=self.verbose if progress is None else progress)

    def _ingest(self, store: Store, X, y, sample_ids, est, groups=None) -> None:
        """Fill a staged store with the training rows, refusing to replace an audit log.
        Missing values are kept if ``est`` takes them; a column kind it cannot take is
        refused before any row is read."""
        nan = forms.accepts(est).nan
        options = IngestOptions(n_shards=self.n_shards, n_slices=self.n_slices,
                                random_state=self.random_state, allow_missing=nan)
        if self.store is not None:
            _refuse_replacing_a_log(store.uri)
        typed = None
        if inputs.is_frame(X) and y is not None and not isinstance(y, str):
            if is_classifier(self):
                check_classification_targets(np.asarray(y))
            typed = inputs.typed_frame(X, y, sample_ids)
        if sparse.is_sparse_input(X):  # kept sparse (sisa.store.format.sparse)
            y = np.asarray(y)
            if is_classifier(self):
                check_classification_targets(y)
            if isinstance(groups, str):
                raise InputError(f"groups={groups!r} names a column, but X is a sparse "
                                 "matrix: pass one group key per row")
            store.ingest(X, y, sample_ids=sample_ids, groups=groups, options=options,
                         check=lambda schema: forms.check(est, schema))
        elif typed is not None:
            table, label, ids, feats = typed
            table, group_column = inputs.with_groups(table, groups)
            store.ingest(table, options=options.replace(
                label=label, id_column=ids, group_column=group_column,
                feature_columns=[f for f in feats if f != group_column]),
                check=lambda schema: forms.check(est, schema))
        elif inputs.is_table_like(X) or isinstance(y, str):
            if not isinstance(y, str):
                raise InputError("with a table or file, pass the label column name as y='col'")
            settings = self._settings()  # a big Parquet/Arrow file: Ray tasks when Ray is in use
            X, group_column = inputs.with_groups(X, groups)
            store.ingest(X, options=options.replace(label=y, group_column=group_column),
                         settings=settings if settings.backend == "local"
                         else settings.replace(backend="auto"),
                         check=lambda schema: forms.check(est, schema))
        else:
            # NaN is ingest's to judge (allowed if the model takes it, else refused with
            # the fix); infinities are refused here
            X, y = validate_data(self, X, y, dtype=FLOAT_DTYPES, y_numeric=not is_classifier(self),
                                 ensure_all_finite="allow-nan")
            if is_classifier(self):
                check_classification_targets(y)
            n = X.shape[0]
            if n < self.n_shards * self.n_slices:
                raise InputError(
                    f"got n_samples = {n}, fewer than n_shards * n_slices = "
                    f"{self.n_shards * self.n_slices}: use fewer shards or slices"
                )
            if isinstance(groups, str):
                raise InputError(f"groups={groups!r} names a column, but X is an array: pass "
                                 "one group key per row, or a table with y='label column'")
            store.ingest(X, y, sample_ids=sample_ids, groups=groups, options=options)
        self.n_features_in_ = store.n_features

    def _check_same_layout(self, store: Store) -> None:
        got = (store.n_shards, store.n_slices, store.random_state)
        want = (self.n_shards, self.n_slices, self.random_state)
        if got != want:
            raise InputError(
                f"store {store.uri} is laid out as (n_shards, n_slices, random_state)={got} but "
                f"this estimator asks for {want}: match the parameters or build a new store"
            )

    @staticmethod
    def _classes_from_store(store: Store) -> np.ndarray:
        # the union of the manifest's per-slice label lists: no slice is read (except
        # for float labels, which record none)
        return np.asarray(store.rows.classes())

    def _set_fitted(self, store: Store, strict: bool = True, fresh: dict | None = None
                    ) -> None:
        """Load the shard models; with ``strict=False`` a store that may not serve (an
        unfinished forget) leaves this model refusing to predict instead of raising.
        ``fresh`` maps checkpoint hashes to models a forget just retrained in this
        process, as loading those checkpoints gives them."""
        self.store_ = store
        # models of checkpoints that did not change are kept, and those a forget retrained
        # here come from it: a forget reads no checkpoint back
        previous = {**getattr(self, "_loaded", {}), **(fresh or {})}
        try:
            self.estimators_, self._loaded = driver.final_models(store, previous,
                                                                 with_hashes=True)
            self._unservable = None
        except SisaError as exc:
            if strict:
                raise
            self.estimators_, self._unservable = None, str(exc)
        # what the shard models take, decided here rather than on every predict, and again
        # only when the estimator or the store's model spec is another object (a forget's
        # reload keeps both: cloning the estimator to ask took ~0.5 ms of it)
        spec = (store.manifest.model or {}).get("estimator")
        made_for = getattr(self, "_accepts_for", (None, None))
        if made_for[0] is not self.estimator or made_for[1] is not spec or spec is None:
            self._accepts = forms.accepts(self._base_estimator())
            self._accepts_for = (self.estimator, spec)
        self.n_features_in_ = store.n_features
        names = store.manifest.schema["feature_names"]
        if names and not all(n.startswith("x") and n[1:].isdigit() for n in names):
            self.feature_names_in_ = np.asarray(names, dtype=object)
        classes = store.manifest.model["classes"]
        if classes is not None:
            self.classes_ = np.asarray(classes)
        # the shard models stacked for one vectorized pass, derived again from every
        # reload (never stored); None: the per-shard loop serves (sisa.aggregate.stacked)
        self._stacked = None if self.estimators_ is None else stacked.build(
            self.estimators_, self.classes_ if is_classifier(self) else None,
            previous=getattr(self, "_stacked", None))

    # -------------------------------------------------------------- persistence
    @classmethod
    def load(cls, uri: str):
        """Reopen a fitted model from its store alone (another process or machine).

        Examples
        --------
        >>> clf = SISAClassifier.load("runs/adult-store")  # doctest: +SKIP
        """
        # a forget committing meanwhile may delete the files of the manifest just read:
        # rerun on the new manifest rather than report a damaged store
        return Store.open(uri).read_consistent(lambda store: cls._load(store, uri))

    @classmethod
    def _load(cls, store: Store, uri: str):
        model = driver.final_models(store) and store.manifest.model
        from ..engine.checkpoints import prototype

        a = store.manifest.assignment
        est = cls(prototype(store), n_shards=a["n_shards"],
                  n_slices=a["n_slices"], aggregation=model["aggregation"], store=str(uri),
                  random_state=a["random_state"], schedule=model["schedule"],
                  epochs=model["epochs"])
        if is_classifier(est) != (model["task"] == "classification"):
            right = "SISAClassifier" if model["task"] == "classification" else "SISARegressor"
            raise InputError(f"store {uri} holds a {model['task']} model: load it with {right}")
        est.aggregation_ = est._resolved_aggregation()
        est._set_fitted(store)
        return est

    def refresh(self):
        """Reload the shard models from the store (after a forget from another process)."""
        check_is_fitted(self)
        self.store_.reload()
        self.store_.read_consistent(self._set_fitted)
        return self

    # -------------------------------------------------------------- unlearning
    def forget(self, ids=_UNSET, *, groups=None, record_ids: bool = False,
               progress: bool | None = None):
        """Exactly unlearn the rows with these sample ids, or every row of these groups;
        returns the receipt.

        The rows are deleted from the store, every checkpoint that saw them is
        destroyed, and each affected shard retrains from its last clean checkpoint.
        The result is byte-identical to a fresh fit without the rows.

        Parameters
        ----------
        ids : iterable of int or str, optional
            Sample ids.
        groups : iterable of int or str, optional
            Group keys given to ``fit(groups=...)`` (a person): all their rows are
            forgotten, and the receipt names the groups (keyed hashes; raw keys only with
            ``record_ids``). Give ``ids`` or ``groups``, not both.
        record_ids : bool, default=False
            Keep the raw ids (and group keys) in the receipt.
        progress : bool, optional
            Show progress bars (default: ``verbose``).

        Returns
        -------
        dict
            The signed receipt, plus ``timings`` (not part of it): the forget's wall time
            split into the shard models' training and the rest, the model reload
            included, and its fsync count (:mod:`sisa.unlearn.timings`).
        """
        from ..unlearn import forget, forget_groups, timings

        check_is_fitted(self)
        if (ids is _UNSET) == (groups is None):
            raise InputError("pass the sample ids to forget, or groups=[...], not "
                             + ("both" if groups is not None else "neither"))
        fresh: dict = {}  # the retrained shards' models, as their checkpoints load
        try:
            if groups is not None:
                receipt = forget_groups(self.store_, groups, record_ids=record_ids,
                                        settings=self._settings(progress), loaded=fresh)
            else:
                receipt = forget(self.store_, ids, record_ids=record_ids,
                                 settings=self._settings(progress), loaded=fresh)
        finally:  # reload even on failure: never keep serving models that saw the rows
            started = time.perf_counter()
            self._set_fitted(self.store_, strict=False, fresh=fresh)
        return timings.with_reload(receipt, time.perf_counter() - started)

    def verify(self, *, shards=None, sample: int | None = None, progress: bool | None = None):
        """Prove the store: retrain shards from scratch and compare checkpoint bytes, scan
        for deleted ids, check lineage. Returns a report whose ``ok`` is the verdict."""
        from ..unlearn import verify

        check_is_fitted(self)
        return verify(self.store_, shards=shards, sample=sample,
                      settings=self._settings(progress))

    def deletions(self) -> list[dict]:
        """Every forget receipt recorded for this model's store, oldest first."""
        from ..unlearn import history

        check_is_fitted(self)
        return history(self.store_)

    # -------------------------------------------------------------- helpers
    def _check_X(self, X):
        """``X`` checked once and in the form the shard models were fit on."""
        check_is_fitted(self)
        if self.estimators_ is None:
            raise StaleModelError(
                f"this model will not predict: {getattr(self, '_unservable', '')}; after "
                "`sisa repair` (or rerunning the same forget), call model.refresh()")
        schema = self.store_.manifest.schema
        acc = self._accepts
        if colmod.is_columns(schema):
            return forms.model_input(inputs.typed_rows(X, schema), schema, acc)
        if sparse.is_sparse(schema):
            return sparse.predict_input(X, schema)
        return validate_data(self, X, reset=False, dtype=FLOAT_DTYPES,
                             ensure_all_finite="allow-nan" if acc.nan else True)

    def _stacked_for(self, X):
        """The stacked shard models (:mod:`sisa.aggregate.stacked`) when they were built
        from the models now loaded and ``X`` is a dense matrix; else None (the loop)."""
        fast = getattr(self, "_stacked", None)
        return fast if fast is not None and fast.serves(self.estimators_, X) else None

    def __sklearn_tags__(self):
        from sklearn.utils import get_tags

        tags = super().__sklearn_tags__()
        tags.non_deterministic = False
        # sparse X is kept sparse and handed to the shard model (sisa.store.format.sparse), so
        # the ensemble takes it exactly when its shard model does
        # (tags of the estimator as given: a clone here would cost every predict a clone,
        # since validate_data reads the tags)
        est = self.estimator if self.estimator is not None else self._base_estimator()
        tags.input_tags.sparse = get_tags(est).input_tags.sparse
        return tags


def _refuse_replacing_a_log(uri: str) -> None:
    """A refit over a store whose audit log holds receipts would erase that log."""
    if not Store.exists(uri):
        return
    from ..unlearn import history

    try:
        n = len(history(Store.open(uri, check_files=False)))
    except SisaError:  # damaged or another format: nothing to keep
        n = 0
    if n:
        raise InputError(
            f"store {uri} holds an audit log of {n} forget request(s); refitting would erase "
            "it: pass another store path (or archive and delete this one first)")
