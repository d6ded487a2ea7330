"""The ``sisa`` command line: train, forget, predict, verify, repair, history, status, plan.

Exit codes: 0 ok, 1 failure (a failed verify, a corrupt store), 2 usage error.
Errors print one line saying what is wrong and how to fix it; ``--debug`` adds the
traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import traceback
import warnings
from pathlib import Path

import numpy as np

from .errors import InputError, SisaError

EXAMPLES = {
    "train": "sisa train adult --model sgd --shards 8 --slices 4 --store runs/adult --holdout 0.2",
    "forget": "sisa forget runs/adult --id 17 --id 42      (or --ids ids.txt)",
    "predict": "sisa predict runs/adult new_rows.parquet --out predictions.parquet",
    "verify": "sisa verify runs/adult --sample 4",
    "repair": "sisa repair runs/adult",
    "history": "sisa history runs/adult",
    "status": "sisa status runs/adult",
    "plan": "sisa plan --rows 1000000 --deletions-per-day 50",
    "demo": "sisa demo --dataset adult --forget 200",
    "keygen": "sisa keygen                 (then: sisa key public > owner.pub)",
    "key": "sisa key public > owner.pub",
    "serve": "sisa serve runs/adult --token-file tokens.txt --batch-window 5",
    "erase": "sisa erase --server http://127.0.0.1:8080 --id 17 --wait   (token: $SISA_TOKEN)",
}
BUILTIN = ("synthetic", "adult", "diamonds", "fashion-mnist")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and still exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _out(args, obj, text: str) -> None:
    if getattr(args, "json", False):
        print(json.dumps(obj, indent=1, default=str))
    elif not getattr(args, "quiet", False):
        print(text)


@contextlib.contextmanager
def _columns_by_name():
    """The CLI builds X from columns picked by name, in training order: silence
    scikit-learn's warning that a plain array carries no names."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="X does not have valid feature names")
        yield


def _open_model(uri: str):
    from .estimators import SISAClassifier, SISARegressor
    from .store import Store

    store = Store.open(uri)
    model = store.manifest.model or {}
    cls = SISARegressor if model.get("task") == "regression" else SISAClassifier
    return cls.load(uri)


def _settings(args):
    """The execution settings of a command's ``--backend``/``--address``/``--quiet``."""
    from .engine.settings import ExecutionSettings

    return ExecutionSettings(backend=args.backend, address=args.address,
                             progress=not args.quiet)


# ---------------------------------------------------------------------------- train
def _load_builtin(name: str, rows: int | None):
    from .datasets import load

    return load(name, n_rows=rows)


def _split(n: int, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Holdout rows chosen by a keyed hash of the row number, so the split is stable."""
    from .store.assign import keyed_hash

    h = keyed_hash(np.arange(n), seed, "holdout")
    hold = (h % np.uint64(10_000)) < np.uint64(int(fraction * 10_000))
    return np.flatnonzero(~hold), np.flatnonzero(hold)


def cmd_train(args) -> int:
    from sklearn.base import is_regressor

    from .engine.presets import REGRESSION_PRESETS, from_preset, from_spec
    from .estimators import SISAClassifier, SISARegressor
    from .store import Store

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
    if args.data not in BUILTIN and not args.label:
        raise InputError(f"--label COL is required with a data file: name the label column of "
                         f"{args.data}")
    t0 = time.perf_counter()
    common = {"n_shards": args.shards, "n_slices": args.slices, "random_state": args.seed,
              "hot_shards": args.hot_shards, "hot_threshold": args.hot_threshold}
    hold = None
    if args.data in BUILTIN:
        ds = _load_builtin(args.data, args.rows)
        if ds.task == "regression" and not is_regressor(est):
            if args.model_spec or args.model != "sgd":
                raise InputError(f"{args.data} is a regression dataset: pick a regressor "
                                 f"({', '.join(sorted(REGRESSION_PRESETS))})")
            est = from_preset("sgd-regressor")
        import pyarrow as pa

        tr, te = _split(len(ds.y), args.holdout, args.seed)
        hold = (ds.X[te], ds.y[te]) if len(te) else None
        # a table, so the store keeps the dataset's column names (predict matches on them)
        source = pa.table({**{n: ds.X[tr, i] for i, n in enumerate(ds.feature_names)},
                           "label": ds.y[tr], "sample_id": tr})
        source_kw = {"label": "label", "id_column": "sample_id"}
    else:

        feats = None
        if args.features is not None:
            feats = args.features.split(",")
            if not all(feats):
                raise InputError(f"--features {args.features!r} has an empty column name: "
                                 "pass column names separated by commas, like a,b,c")
        source, id_column, hold = args.data, args.id, None
        if args.holdout:
            source, id_column, hold = _holdout_split(args, feats)
        source_kw = {"label": args.label, "id_column": id_column, "group_column": args.group,
                     "deletion_prob_column": args.deletion_prob, "feature_columns": feats}
    regression = is_regressor(est)
    cls = SISARegressor if regression else SISAClassifier
    model = cls(est, n_shards=args.shards, n_slices=args.slices, random_state=args.seed,
                store=args.store, ray_address=args.address, backend=args.backend,
                schedule=args.schedule, epochs=args.epochs if args.epochs else "auto",
                verbose=not args.quiet)
    # Built and trained beside any store already at --store, published in one step: a bad
    # row, a bad holdout row or a failed fit leaves the old store exactly as it was.
    with Store.building(args.store, overwrite=args.overwrite) as store:
        store.ingest(source, progress=not args.quiet, **source_kw, **common)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore" if args.quiet else "default")
            model.fit(store)
        result = {"store": args.store, "rows": store.n_rows, "shards": args.shards,
                  "slices": args.slices, "spread": store.spread(),
                  "seconds": round(time.perf_counter() - t0, 2)}
        if hold is not None:
            with _columns_by_name():
                score = float(model.score(*hold))
            result["holdout"] = {"rows": len(hold[1]),
                                 "metric": "r2" if regression else "accuracy",
                                 "score": round(score, 4)}
            store.commit(store.manifest.with_holdout({**result["holdout"], "at": "training"}))
        store.publish()
    _out(args, result, f"trained {store.n_rows:,} rows into {args.shards} shards x {args.slices}"
         f" slices at {args.store} in {result['seconds']}s (shard sizes {store.spread()})"
         + (f"; holdout {result['holdout']['metric']} {result['holdout']['score']:.4f}"
            if hold is not None else ""))
    return 0


ROW_ID = "__row"  # the default id column: the row's number in the input file


def _holdout_split(args, feats):
    """Split a data file into training rows and holdout rows, validating the holdout rows
    before anything is written. Ids stay the row numbers of the *file* (or --id)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    from .store.ingest import from_table, read_table

    table = read_table(args.data)
    id_column = args.id
    if not id_column:
        table = table.append_column(ROW_ID, pa.array(np.arange(table.num_rows), pa.int64()))
        id_column = ROW_ID
    columns = {"id_column": id_column, "group_column": args.group,
               "deletion_prob_column": args.deletion_prob, "feature_columns": feats}
    # every row, holdout included, passes the ingest checks under its row number in the
    # file before anything is written; ids must be unique across both parts too
    for _ in from_table(table, args.label, **columns).batches:
        pass
    ids = table.column(id_column)
    if pc.count_distinct(ids, mode="all").as_py() != table.num_rows:
        raise InputError(f"id column {id_column!r} holds duplicate ids: sample ids must be "
                         "unique across the whole file (training and holdout rows)")
    tr, te = _split(table.num_rows, args.holdout, args.seed)
    if not len(tr):
        raise InputError(f"--holdout {args.holdout} keeps every one of the {table.num_rows:,} "
                         "rows out of training: use a smaller fraction, like 0.2")
    if not len(te):
        return table.take(tr), id_column, None
    batches = list(from_table(table.take(te), args.label, **columns).batches)
    X = np.concatenate([b.X for b in batches])
    y = np.concatenate([b.y for b in batches])
    return table.take(tr), id_column, (X, y)


def _record_holdout(store, holdout: dict) -> None:
    with store.lock():
        store.commit(store.manifest.with_holdout({**holdout, "at": "training"}))


# ---------------------------------------------------------------------------- forget
def _read_ids(args, id_type: str, *, flag: str = "id", file_flag: str = "ids"):
    """The ids of ``--id`` flags and an ``--ids`` file, read by the store's id type (never
    guessed from how the text looks: on a string store ``007`` is the id "007")."""
    import pyarrow as pa

    from .store import ids as idmod

    parts = []
    if getattr(args, flag):
        parts.append(idmod.parse_text_ids(getattr(args, flag), id_type,
                                          source=f"--{flag.replace('_', '-')}"))
    path = getattr(args, file_flag)
    if path:
        text = sys.stdin.read() if path == "-" else None
        parts.append(idmod.read_ids_file(path, id_type, text))
    if not parts or not sum(len(p) for p in parts):
        raise InputError(f"give the ids with --{flag.replace('_', '-')} X (repeatable) or "
                         f"--{file_flag.replace('_', '-')} FILE")
    return pa.concat_arrays(parts)


def cmd_forget(args) -> int:
    from .store import Store
    from .unlearn import forget

    store = Store.open(args.store)
    ids = _read_ids(args, store.manifest.id_type)
    r = forget(store, ids, record_ids=args.record_ids, settings=_settings(args))
    text = (f"forgot {r['n_ids']} id(s) (request {r['request_id']}): retrained "
            f"{r['rows_retrained']:,} rows instead of {r['rows_full_retrain']:,} "
            f"({_ratio(r['rows_full_retrain'], r['rows_retrained'])}) in {r['wall_time_s']}s; "
            f"shards touched {[s for s, _ in r['affected']]}"
            + (f"; emptied {r['shards_emptied']}" if r.get("shards_emptied") else "")
            + (" (already forgotten: replayed receipt)" if r.get("replayed") else "")
            + f"\nids sha256 {r['ids_sha256']}\nfingerprint {r['fingerprint_before'][:16]} -> "
            f"{r['fingerprint_after'][:16]}")
    _out(args, r, text)
    return 0


def _ratio(a: float, b: float) -> str:
    return f"{a / b:,.1f}x fewer" if b else "nothing to retrain"


# ---------------------------------------------------------------------------- predict
def cmd_predict(args) -> int:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    from .store.ingest import read_table

    _check_out(args.out, args.store)  # before any work: a usage error, exit 2
    model = _open_model(args.store)
    schema = model.store_.manifest.schema
    table = read_table(args.data)
    if table.num_rows == 0:
        raise InputError(f"{args.data} has no rows: there is nothing to predict")
    missing = [c for c in schema["feature_names"] if c not in table.column_names]
    if missing:
        raise InputError(f"{args.data} lacks feature column(s) {missing[:5]} the model was trained "
                         "on")
    import pyarrow.types as pat

    text = [c for c in schema["feature_names"] if not (
        pat.is_integer(t := table.schema.field(c).type) or pat.is_floating(t)
        or pat.is_boolean(t))]
    if text:
        raise InputError(f"{args.data}: feature column(s) {text[:5]} are not numeric: encode "
                         "them as the training data were encoded")
    X = np.column_stack([table.column(c).to_numpy(zero_copy_only=False)
                         for c in schema["feature_names"]]).astype(np.float64)
    bad = [c for c, ok in zip(schema["feature_names"], np.isfinite(X).all(axis=0), strict=True)
           if not ok]
    if bad:
        raise InputError(f"{args.data}: feature column(s) {bad[:5]} hold NaN or infinite values: "
                         "impute or drop those rows before predicting")
    with _columns_by_name():
        cols = {"prediction": model.predict(X)}
    if schema.get("id_name") and schema["id_name"] in table.column_names:
        cols = {schema["id_name"]: table.column(schema["id_name"]), **cols}
    out = pa.table(cols)
    if args.out.endswith(".csv"):
        pacsv.write_csv(out, args.out)
    else:
        pq.write_table(out, args.out)
    _out(args, {"rows": out.num_rows, "out": args.out},
         f"wrote {out.num_rows:,} predictions to {args.out}")
    return 0


# ---------------------------------------------------------------------------- serve
def cmd_serve(args) -> int:
    from .serve import Limits, serve

    def announce(service, recovered) -> None:
        if not args.quiet:
            extra = (f"; finished interrupted request {recovered['completed_request']}"
                     if recovered["completed_request"] else "")
            sys.stderr.write(f"serving {args.store} (model {service.model[1][:16]}) on "
                             f"http://{args.host}:{args.port}; {recovered['resumed']} queued "
                             f"erasure(s) resumed{extra}\n")
            sys.stderr.flush()

    serve(args.store, host=args.host, port=args.port, batch_window=args.batch_window,
          max_batch=args.max_batch, token_file=args.token_file,
          settings=_settings(args).replace(progress=False),
          limits=Limits(args.max_body, args.max_ids, args.max_rows), announce=announce)
    return 0


def cmd_erase(args) -> int:
    from .client import Client

    client = Client(args.server, token=_token(args))
    ids = _read_ids(args, client.health()["id_type"])  # typed by the store, not the text
    rid = client.erase(ids.to_pylist())
    if not args.wait:
        _out(args, {"request_id": rid, "state": "queued"}, f"queued erasure request {rid}")
        return 0
    st = client.wait(rid, timeout=args.timeout)
    if st["state"] == "failed":
        raise SisaError(f"erasure request {rid} failed: {st['reason']}")
    _out(args, st, f"erasure request {rid} done: receipt {st['receipt']['request_id']} "
         f"(seq {st['receipt'].get('seq')}), ids sha256 {st['receipt']['ids_sha256'][:16]}...")
    return 0


def _token(args) -> str | None:
    if args.token_file:
        try:
            return open(args.token_file, encoding="utf-8").read().strip()
        except OSError as exc:
            raise InputError(f"cannot read --token-file {args.token_file} ({exc.strerror})"
                             ) from None
    return None


def _is_store_dir(d: str) -> bool:
    try:
        with open(os.path.join(d, "manifest.json"), "rb") as f:
            return b'"format":"sisa-store/' in f.read(1 << 16)
    except OSError:
        return False


def _check_out(out: str, store: str) -> None:
    """``--out`` must name a file in an existing folder outside every sisa store: a file
    written into a store fails its ``verify`` and its ``repair`` deletes it."""
    from .store.fs import Location

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


# ---------------------------------------------------------------------------- verify etc.
def cmd_verify(args) -> int:
    from .store import Store
    from .store.keys import parse_public
    from .unlearn import verify

    shards = _int_list(args.shards, "--shards") if args.shards else None
    if args.sample is not None and args.sample < 1:
        raise InputError(f"--sample must be at least 1, got {args.sample} (omit it to retrain "
                         "every shard)")
    public = parse_public(args.public_key) if args.public_key else None
    store = Store.open(args.store, check_files=False)
    gone = (_read_ids(args, store.manifest.id_type, flag="forgotten_id",
                      file_flag="forgotten_ids")
            if args.forgotten_id or args.forgotten_ids else None)
    held = [_read_receipt(path) for path in args.receipt or []]
    rep = verify(store, shards=shards, sample=args.sample, public_key=public,
                 forgotten_ids=gone, held_receipts=held, settings=_settings(args))
    if args.quiet and not args.json:  # quiet: nothing on success, the failures otherwise
        if not rep.ok:
            print("\n".join(ln for ln in rep.table().splitlines() if "FAIL" in ln))
    else:
        _out(args, rep.to_dict(), rep.table())
    return 0 if rep.ok else 1


def _read_receipt(path: str) -> dict:
    try:
        obj = json.loads(Path(path).read_text())
    except (OSError, ValueError) as exc:
        raise InputError(f"--receipt {path}: cannot read a receipt ({exc}): pass the JSON that "
                         "`sisa forget --json` printed") from None
    if not isinstance(obj, dict) or "seq" not in obj:
        raise InputError(f"--receipt {path} is not a sisa receipt (no seq): pass the JSON that "
                         "`sisa forget --json` printed")
    return obj


def _int_list(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise InputError(f"{flag} takes comma-separated integers like 0,3,7; got {text!r}") \
            from None


def cmd_keygen(args) -> int:
    from .store import keys

    path = args.out or os.environ.get(keys.KEY_FILE_ENV) or str(keys.DEFAULT_KEY_FILE)
    target = Path(path).expanduser().resolve()
    inside = next((p for p in target.parents if (p / "manifest.json").is_file()), None)
    if inside is not None:
        raise InputError(f"--out {path} is inside the sisa store {inside}: a private key must "
                         "never travel with a store; keep it outside (default "
                         f"{keys.DEFAULT_KEY_FILE})")
    key = keys.generate()
    saved = keys.save(key, path)
    _out(args, {"key_file": str(saved), "public_key": key.public_line},
         f"wrote {saved} (mode 600: keep it private; stores you build are signed with it)\n"
         f"public key (give it to auditors: sisa verify --public-key): {key.public_line}")
    return 0


def cmd_key(args) -> int:
    from .store import keys

    key = keys.configured(args.key_file)
    if key is None:
        raise InputError(f"no key configured: make one with `sisa keygen`, or set "
                         f"${keys.KEY_FILE_ENV}")
    _out(args, {"public_key": key.public_line}, key.public_line)
    return 0


def cmd_repair(args) -> int:
    from .store import Store
    from .unlearn import repair

    summary = repair(Store.open(args.store, check_files=False), settings=_settings(args))
    done = []
    if summary["removed_files"]:
        done.append(f"removed {len(summary['removed_files'])} stray file(s)")
    if summary["damaged_checkpoints"]:
        done.append(f"dropped damaged checkpoints ({'; '.join(summary['damaged_checkpoints'])})")
    if summary["retrained_shards"]:
        done.append(f"retrained shards {summary['retrained_shards']}")
    if summary["completed_request"]:
        done.append(f"finished forget request {summary['completed_request']}")
    _out(args, summary, f"repaired {args.store}: " + ("; ".join(done) if done else
                                                      "nothing to repair, the store is whole"))
    return 0


def cmd_history(args) -> int:
    from .store import Store
    from .unlearn import history

    rows = history(Store.open(args.store, check_files=False))
    lines = [f"{'completed':<29} {'request':<32} {'ids':>6} {'rows retrained':>15} {'s':>8}"]
    lines += [f"{r['completed_at']:<29} {r['request_id']:<32} {r['n_ids']:>6} "
              f"{r['rows_retrained']:>15,} {r['wall_time_s']:>8}" for r in rows]
    _out(args, rows, "\n".join(lines) + f"\n{len(rows)} forget request(s)")
    return 0


def status(store) -> dict:
    model = store.manifest.model or {}
    sizes = store.shard_sizes()
    files = store.referenced_files()
    from .unlearn import history

    return {
        "store": store.uri, "fingerprint": store.fingerprint, "rows": int(sizes.sum()),
        "shards": store.n_shards, "slices": store.n_slices, "rows_per_shard": sizes.tolist(),
        "spread": store.spread(), "deleted_rows": store.manifest.n_deleted,
        "forget_requests": len(history(store)),
        "model": model.get("estimator", {}).get("class"),
        "aggregation": model.get("aggregation"), "schedule": model.get("schedule"),
        "epochs": model.get("epochs"), "holdout": store.manifest.get("holdout"),
        "bytes": int(sum(m["bytes"] for m in files.values())), "files": len(files),
        "pending": store.manifest.pending,
        "signed_by": f"ed25519:{store.signer}" if store.signer else None,
        "id_type": store.manifest.id_type,
    }


def cmd_status(args) -> int:
    from .store import Store

    s = status(Store.open(args.store))
    hold = s["holdout"]
    rows = [("store", s["store"]), ("fingerprint", s["fingerprint"][:32]),
            ("rows", f"{s['rows']:,} in {s['shards']} shards x {s['slices']} slices"),
            ("rows per shard", ", ".join(f"{n:,}" for n in s["rows_per_shard"])),
            ("shard balance", f"min {s['spread']['min']:,}  max {s['spread']['max']:,}  "
                              f"rel. std {s['spread']['rel_std']:.3f}"),
            ("deletions", f"{s['deleted_rows']:,} rows in {s['forget_requests']} request(s)"),
            ("model", f"{s['model']} ({s['aggregation']} aggregation, {s['schedule']} schedule,"
                      f" {s['epochs']} epoch(s)/slice)"),
            ("holdout", f"{hold['metric']} {hold['score']:.4f} on {hold['rows']:,} rows (at "
                        "training)" if hold else "none kept"),
            ("size", f"{s['bytes'] / 2**20:,.1f} MiB in {s['files']} files"),
            ("sample ids", s["id_type"]),
            ("signed by", s["signed_by"] or "nobody (unsigned: `sisa keygen`, then rebuild, "
                                            "to sign)"),
            ("state", "UNFINISHED: run `sisa repair`" if s["pending"] else "ok")]
    width = max(len(k) for k, _ in rows)
    _out(args, s, "\n".join(f"{k:<{width}}  {v}" for k, v in rows))
    return 0


MIN_ROWS_PER_SLICE = 100  # below this a slice is too small to train a model step on


def cmd_plan(args) -> int:
    from .engine.cost import plan

    table = plan(args.rows, args.deletions_per_day, n_shards_options=args.shards,
                 n_slices_options=args.slices, schedule=args.schedule, epochs=args.epochs)
    measured = _measure_accuracy(args) if args.measure else {}
    for row in table:
        if row["n_shards"] in measured:
            row["holdout_accuracy"] = measured[row["n_shards"]]
    head = (f"{'S':>4} {'R':>4} {'rows/slice':>11} {'rows/request':>13} {'rows/day':>14} "
            f"{'vs monolithic':>14}" + ("  holdout" if measured else ""))
    lines = [head] + [
        f"{r['n_shards']:>4} {r['n_slices']:>4} {r['rows_per_slice']:>11,.0f} "
        f"{r['rows_per_request']:>13,.0f} {r['rows_per_day_batched']:>14,.0f} "
        f"{r['speedup_vs_monolithic']:>13,.1f}x"
        + (f"  {r['holdout_accuracy']:.4f}" if "holdout_accuracy" in r else "")
        for r in table]
    usable = [r for r in table if r["rows_per_slice"] >= MIN_ROWS_PER_SLICE]
    if not usable:
        raise InputError(f"every candidate leaves fewer than {MIN_ROWS_PER_SLICE} rows per "
                         "slice: pass smaller --shards/--slices values")
    best = min(usable, key=lambda r: (r["rows_per_day_batched"], -r["n_shards"]))
    lines.append(f"rows/day assumes one batched forget a day; layouts with fewer than "
                 f"{MIN_ROWS_PER_SLICE} rows per slice are not recommended; more shards cost "
                 "accuracy: measure it with --measure DATASET (a built-in name)")
    lines.append(f"cheapest: S={best['n_shards']}, R={best['n_slices']}")
    _out(args, table, "\n".join(lines))
    return 0


def _measure_accuracy(args) -> dict[int, float]:
    from .engine.presets import from_preset
    from .estimators import SISAClassifier

    ds = _load_builtin(args.measure, args.measure_rows)
    tr, te = _split(len(ds.y), 0.2, 0)
    out = {}
    for S in args.shards:
        m = SISAClassifier(from_preset(args.model), n_shards=S, n_slices=1, backend=args.backend)
        out[S] = round(float(m.fit(ds.X[tr], ds.y[tr]).score(ds.X[te], ds.y[te])), 4)
    return out


def cmd_demo(args) -> int:
    """The main job: train on a real dataset, forget rows, verify, print the result."""
    from .engine.presets import from_preset
    from .estimators import SISAClassifier

    ds = _load_builtin(args.dataset, args.rows)
    if ds.task != "classification":
        raise InputError("the demo trains a classifier: use --dataset adult or fashion-mnist")
    store = args.store or f"runs/demo-{args.dataset}"
    tr, te = _split(len(ds.y), 0.2, 0)
    print(f"[1/4] {ds.name}: {len(tr):,} training rows, {len(te):,} holdout rows, "
          f"{ds.X.shape[1]} features")
    t0 = time.perf_counter()
    clf = SISAClassifier(from_preset("sgd"), n_shards=args.shards, n_slices=args.slices,
                         store=store, backend=args.backend, verbose=True)
    clf.fit(ds.X[tr], ds.y[tr], sample_ids=tr)
    acc = clf.score(ds.X[te], ds.y[te])
    _record_holdout(clf.store_, {"rows": len(te), "metric": "accuracy", "score": round(acc, 4)})
    print(f"      trained {args.shards} shards x {args.slices} slices in "
          f"{time.perf_counter() - t0:.1f}s; holdout accuracy {acc:.4f}")
    rng = np.random.default_rng(0)
    U = rng.choice(tr, size=min(args.forget + 1, len(tr) // 2), replace=False)
    print("[2/4] forgetting: one person's erasure request (1 row), then a batch of "
          f"{len(U) - 1} rows as one request")
    for ids in (U[:1], U[1:]):
        r = clf.forget(ids.tolist(), progress=True)
        print(f"      {len(ids):,} row(s): {len(r['affected'])} of {args.shards} shards retrained"
              f" from the slice that held them, {r['rows_retrained']:,} row-passes instead of "
              f"{r['rows_full_retrain']:,} ({_ratio(r['rows_full_retrain'], r['rows_retrained'])}"
              f"), {r['wall_time_s']:.2f}s")
        if len(r["affected"]) == args.shards and len(ids) > 1:
            print("      (random rows spread over every shard: SISA saves most on few or "
                  "clustered deletions; see `sisa plan`)")
    print(f"      holdout accuracy now {clf.score(ds.X[te], ds.y[te]):.4f}")
    print("[3/4] verifying: retrain every shard from scratch, compare checkpoint bytes, scan for "
          "deleted ids")
    rep = clf.verify(progress=True)
    print("\n".join("      " + line for line in rep.table().splitlines()))
    from .unlearn.receipts import log_path

    print(f"[4/4] receipt {r['request_id']} written to {store}/{log_path(clf.store_)}; inspect "
          f"with `sisa status {store}` and `sisa history {store}`")
    return 0 if rep.ok else 1


# ---------------------------------------------------------------------------- parser
def _add_common(p: argparse.ArgumentParser, backend: bool = False) -> None:
    p.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    if backend:
        p.add_argument("--backend", choices=("auto", "ray", "local"), default="auto",
                       help="where shard tasks run (default auto: this process, or Ray for "
                            "several shards when a cluster is set or Ray would save time)")
        p.add_argument("--address", default=None,
                       help="Ray cluster address (default: $RAY_ADDRESS, else embedded Ray)")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="sisa", description="Exact machine unlearning with SISA: train "
                     "sharded, sliced models; forget rows; prove it.",
                     epilog="example: " + EXAMPLES["demo"])
    from ._version import __version__

    parser.add_argument("--version", action="version", version=f"sisa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_: str, backend: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_,
                           epilog=f"example: {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(p, backend)
        return p

    p = add("train", "Build a store from DATA and train a SISA model on it.", backend=True)
    p.add_argument("data", metavar="DATA",
                   help=f"Parquet/CSV/Arrow file or directory, or a built-in: {', '.join(BUILTIN)}")
    p.add_argument("--label", help="label column (files)")
    p.add_argument("--features", metavar="COL,COL",
                   help="feature columns (default: every column but label/id/group/prob)")
    p.add_argument("--id", help="sample id column (default: row number)")
    p.add_argument("--group", help="group column: a group's rows share one shard and slice")
    p.add_argument("--deletion-prob", help="per-row deletion probability column "
                   "(distribution-aware sharding; use with --hot-shards)")
    p.add_argument("--hot-shards", type=int, default=0, help="shards reserved for likely "
                   "deletions (default 0: uniform)")
    p.add_argument("--hot-threshold", type=float, default=0.5)
    group = p.add_mutually_exclusive_group()
    group.add_argument("--model", default="sgd", help="preset: sgd, logistic, mlp, "
                       "naive-bayes, tree, cnn, torch-mlp (PyTorch, sisa[torch]), "
                       "sgd-regressor, ridge, mlp-regressor, tree-regressor")
    group.add_argument("--model-spec", help='JSON: {"class": "sklearn...", "params": {...}}')
    p.add_argument("--shards", type=int, default=8, help="S (default 8)")
    p.add_argument("--slices", type=int, default=4, help="R (default 4)")
    p.add_argument("--store", required=True, help="store path or URI (s3://... on clusters)")
    p.add_argument("--holdout", type=float, default=0.0, help="fraction kept out for scoring")
    p.add_argument("--rows", type=int, default=None, help="subsample a built-in dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", choices=("streaming", "cumulative"), default="streaming")
    p.add_argument("--epochs", type=int, default=None, help="passes per slice (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace a store already there")
    p.set_defaults(func=cmd_train)

    p = add("forget", "Exactly unlearn rows by sample id; prints the receipt.", backend=True)
    p.add_argument("store", metavar="STORE")
    p.add_argument("--id", action="append", help="a sample id (repeatable)")
    p.add_argument("--ids", help="file of ids (whitespace/comma separated; - for stdin)")
    p.add_argument("--record-ids", action="store_true",
                   help="keep raw ids in the receipt (default: only their sha256)")
    p.set_defaults(func=cmd_forget)

    p = add("predict", "Predict rows of DATA with the model in STORE.")
    p.add_argument("store", metavar="STORE")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, help="output .parquet or .csv")
    p.set_defaults(func=cmd_predict)

    p = add("verify", "Prove the store: retrain from scratch and compare bytes, scan for "
            "deleted ids, check lineage. Exit 1 on any failure.", backend=True)
    p.add_argument("store", metavar="STORE")
    p.add_argument("--shards", help="comma-separated shards to retrain (others: static checks)")
    p.add_argument("--sample", type=int, help="retrain k random shards")
    p.add_argument("--public-key", metavar="KEY",
                   help="the owner's public key (ed25519:HEX, or a file holding it): the store "
                        "must be signed by it; needs no private key")
    p.add_argument("--forgotten-id", action="append", metavar="ID",
                   help="an id that must be absent from every data file (repeatable)")
    p.add_argument("--forgotten-ids", metavar="FILE",
                   help="file of ids that must be absent (as for `sisa forget --ids`)")
    p.add_argument("--receipt", action="append", metavar="FILE",
                   help="a receipt you were given (`sisa forget --json`): it must be signed by "
                        "the owner and in the audit log, so a rolled-back store fails")
    p.set_defaults(func=cmd_verify)

    p = add("keygen", "Make a key file (Ed25519 signing key + audit secret, mode 600) that "
            "signs the stores you build.")
    p.add_argument("--out", metavar="FILE", help="where to write it (default $SISA_KEY_FILE, "
                   "else ~/.config/sisa/key.json)")
    p.set_defaults(func=cmd_keygen)

    p = add("key", "Print the public half of your key, for `sisa verify --public-key`.")
    p.add_argument("what", choices=("public",), help="what to print")
    p.add_argument("--key-file", metavar="FILE", help="default: $SISA_KEY / $SISA_KEY_FILE / "
                   "~/.config/sisa/key.json")
    p.set_defaults(func=cmd_key)

    p = add("repair", "Finish an interrupted forget or training run and remove stray files.",
            backend=True)
    p.add_argument("store", metavar="STORE")
    p.set_defaults(func=cmd_repair)

    p = add("history", "List the forget receipts of STORE.")
    p.add_argument("store", metavar="STORE")
    p.set_defaults(func=cmd_history)

    p = add("status", "Show a store: shards, rows, deletions, model, holdout, size.")
    p.add_argument("store", metavar="STORE")
    p.set_defaults(func=cmd_status)

    p = add("plan", "Recommend S and R for a deletion rate, from the SISA cost model.",
            backend=True)
    p.add_argument("--rows", type=int, required=True, help="training rows N")
    p.add_argument("--deletions-per-day", type=int, required=True)
    p.add_argument("--shards", type=lambda s: [int(v) for v in s.split(",")],
                   default=[1, 2, 4, 8, 16, 32], help="candidate S values, comma-separated")
    p.add_argument("--slices", type=lambda s: [int(v) for v in s.split(",")],
                   default=[1, 4, 8, 16], help="candidate R values, comma-separated")
    p.add_argument("--schedule", choices=("streaming", "cumulative", "refit"),
                   default="streaming")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--measure", choices=BUILTIN, help="also measure holdout accuracy per S "
                   "on this built-in dataset")
    p.add_argument("--measure-rows", type=int, default=20_000)
    p.add_argument("--model", default="sgd", help="preset used by --measure")
    p.set_defaults(func=cmd_plan)

    p = add("demo", "The main job: train on a real dataset, forget rows, verify, print.",
            backend=True)
    p.add_argument("--dataset", choices=("adult", "fashion-mnist"), default="adult")
    p.add_argument("--rows", type=int, default=None)
    p.add_argument("--shards", type=int, default=8)
    p.add_argument("--slices", type=int, default=4)
    p.add_argument("--forget", type=int, default=200,
                   help="rows in the batch request (after a 1-row request)")
    p.add_argument("--store", default=None, help="default runs/demo-<dataset>")
    p.set_defaults(func=cmd_demo)

    p = add("serve", "Serve predictions and erasure requests over HTTP (docs/serve.md).",
            backend=True)
    p.add_argument("store", metavar="STORE")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; "
                   "another needs --token-file)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--batch-window", type=float, default=2.0, metavar="SECONDS",
                   help="wait this long after the oldest queued request before a batch "
                        "(default 2)")
    p.add_argument("--max-batch", type=int, default=100, metavar="N",
                   help="start a batch at once when N requests are queued (default 100)")
    p.add_argument("--token-file", metavar="FILE", help="bearer tokens, one 'SCOPES TOKEN' a "
                   "line, scopes predict and/or erase (mode 600)")
    p.add_argument("--max-body", type=int, default=1 << 20, help="bytes per request body")
    p.add_argument("--max-ids", type=int, default=10_000, help="ids per erasure request")
    p.add_argument("--max-rows", type=int, default=10_000, help="rows per prediction request")
    p.set_defaults(func=cmd_serve)

    p = add("erase", "Send an erasure request to a `sisa serve` endpoint.")
    p.add_argument("--server", required=True, metavar="URL")
    p.add_argument("--id", action="append", help="a sample id (repeatable)")
    p.add_argument("--ids", help="file of ids (as for `sisa forget --ids`)")
    p.add_argument("--token-file", metavar="FILE",
                   help="file holding the bearer token (default $SISA_TOKEN)")
    p.add_argument("--wait", action="store_true", help="wait until done; print the receipt")
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(func=cmd_erase)

    from .compare.cli import add_parser as add_compare

    add_compare(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except (SisaError, ValueError, FileNotFoundError, KeyError) as exc:
        if args.debug:
            traceback.print_exc()
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if len(msg) > 400:  # a library error quoting thousands of values
            msg = msg[:400] + " ..."
        sys.stderr.write(f"sisa {args.command}: error: {msg}\n")
        return 2 if isinstance(exc, InputError) else 1
    except KeyboardInterrupt:
        sys.stderr.write(f"sisa {args.command}: interrupted; run `sisa repair` on the store if a"
                         " write was under way\n")
        return 1
    except Exception as exc:  # a bug, or a store damaged in a way no check foresaw
        if args.debug:
            traceback.print_exc()
        first = (str(exc).splitlines() or [""])[0][:300]
        sys.stderr.write(f"sisa {args.command}: error: unexpected {type(exc).__name__}: {first} "
                         "(a damaged store or a bug in sisa; rerun with --debug for the "
                         "traceback and report it)\n")
        return 1


if __name__ == "__main__":
    sys.exit(main())
