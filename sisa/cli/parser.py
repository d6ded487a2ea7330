"""The argument table of every ``sisa`` command.

Choices come from the modules that own them (backends, schedules, datasets, presets),
so a new one shows up here without being typed twice.
"""

from __future__ import annotations

import argparse
import sys

from ..datasets import DATASETS
from ..engine.cost import SCHEDULES as PLAN_SCHEDULES
from ..engine.presets import PRESETS
from ..engine.schedule import SCHEDULES
from ..tasks.settings import BACKENDS
from .demo import cmd_demo
from .forget import cmd_forget
from .keys import cmd_key, cmd_keygen
from .plan import cmd_plan
from .predict import cmd_predict
from .repair import cmd_repair, cmd_upgrade
from .serving import cmd_erase, cmd_serve
from .status import cmd_history, cmd_status
from .train import DEFAULT_MODEL, cmd_train
from .verify import cmd_verify

EXAMPLES = {
    "train": "sisa train adult --model sgd --shards 8 --slices 4 --store runs/adult --holdout 0.2",
    "forget": "sisa forget runs/adult --id 17 --id 42      (or --ids ids.txt, --group u00007)",
    "predict": "sisa predict runs/adult new_rows.parquet --out predictions.parquet",
    "verify": "sisa verify runs/adult --sample 4",
    "repair": "sisa repair runs/adult",
    "upgrade": "sisa upgrade runs/adult",
    "history": "sisa history runs/adult",
    "status": "sisa status runs/adult",
    "plan": "sisa plan --rows 1000000 --deletions-per-day 50",
    "demo": "sisa demo --dataset adult --forget 200",
    "keygen": "sisa keygen                 (then: sisa key public > owner.pub)",
    "key": "sisa key public > owner.pub",
    "serve": "sisa serve runs/adult --token-file tokens.txt --batch-window 5",
    "erase": "sisa erase --server http://127.0.0.1:8080 --id 17 --wait   (token: $SISA_TOKEN)",
}
# the demo trains a classifier on real rows: the built-in classification datasets but the
# synthetic one (a dataset's task is only known once it is loaded)
DEMO_DATASETS = ("adult", "fashion-mnist")


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors are one line (and still exit 2)."""

    def error(self, message: str):  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")
        sys.exit(2)


def _add_common(p: argparse.ArgumentParser, backend: bool = False) -> None:
    """The options every command takes, and where its tasks run for those that run any."""
    p.add_argument("--quiet", action="store_true", help="no progress bars or chatter")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    if backend:
        p.add_argument("--backend", choices=BACKENDS, default="auto",
                       help="where shard tasks run (default auto: this process, or Ray for "
                            "several shards when a cluster is set or Ray would save time)")
        p.add_argument("--address", default=None,
                       help="Ray cluster address (default: $RAY_ADDRESS, else embedded Ray)")


def _model_help() -> str:
    # the presets module lists the torch presets last among the classifiers ("cnn",
    # "torch-mlp"): say after them which extra they need
    return "preset: " + ", ".join(PRESETS).replace("torch-mlp", "torch-mlp (PyTorch, "
                                                   "sisa[torch])")


def _csv_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--na-values", action="append", metavar="TEXT",
                   help="CSV: a cell holding TEXT is a missing value (repeatable; e.g. '?')")
    p.add_argument("--keep-whitespace", action="store_true",
                   help="CSV: keep blanks around headers and values (default: trimmed)")


def _comma_ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",")]


def build_parser() -> argparse.ArgumentParser:
    """The ``sisa`` argument parser: one subcommand per job, each with ``--help`` and an
    example, ``--quiet``, ``--json`` and ``--debug``.

    This is the argument table, so it is long on purpose: every option of every command,
    in one place, in the order ``--help`` shows them.

    Returns
    -------
    argparse.ArgumentParser
        Parsing sets ``args.func``, the command to run (``None`` without a command).
    """
    from .._version import __version__

    parser = _Parser(prog="sisa", description="Exact machine unlearning with SISA: train "
                     "sharded, sliced models; forget rows; prove it.",
                     epilog="example: " + EXAMPLES["demo"])
    parser.add_argument("--version", action="version", version=f"sisa {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    def add(name: str, help_: str, backend: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_,
                           epilog=f"example: {EXAMPLES[name]}",
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        _add_common(p, backend)
        return p

    p = add("train", "Build a store from DATA and train a SISA model on it.", backend=True)
    p.add_argument("data", metavar="DATA", help="Parquet/CSV/Arrow file or directory, or a "
                   f"built-in: {', '.join(DATASETS)}")
    p.add_argument("--label", help="label column (files)")
    p.add_argument("--features", metavar="COL,COL",
                   help="feature columns (default: every column but label/id/group/prob)")
    p.add_argument("--id", help="sample id column (default: row number)")
    _csv_options(p)
    p.add_argument("--group", help="group column: a group's rows share one shard and slice")
    p.add_argument("--deletion-prob", help="per-row deletion probability column "
                   "(distribution-aware sharding; use with --hot-shards)")
    p.add_argument("--hot-shards", type=int, default=0, help="shards reserved for likely "
                   "deletions (default 0: uniform)")
    p.add_argument("--hot-threshold", type=float, default=0.5)
    group = p.add_mutually_exclusive_group()
    # no choices=: an unknown preset is the presets module's one-line error, which lists them
    group.add_argument("--model", default=DEFAULT_MODEL, help=_model_help())
    group.add_argument("--model-spec", help='JSON: {"class": "sklearn...", "params": {...}}')
    p.add_argument("--shards", type=int, default=8, help="S (default 8)")
    p.add_argument("--slices", type=int, default=4, help="R (default 4)")
    p.add_argument("--store", required=True, help="store path or URI (s3://... on clusters)")
    p.add_argument("--holdout", type=float, default=0.0, help="fraction kept out for scoring")
    p.add_argument("--rows", type=int, default=None, help="subsample a built-in dataset")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--schedule", choices=SCHEDULES, default="streaming")
    p.add_argument("--epochs", type=int, default=None, help="passes per slice (default auto)")
    p.add_argument("--overwrite", action="store_true", help="replace a store already there")
    p.add_argument("--allow-many-classes", action="store_true",
                   help="let a classifier train on a numeric label with more distinct values "
                        "than a tenth of the rows (by default refused: a regression target)")
    p.set_defaults(func=cmd_train)

    p = add("forget", "Exactly unlearn rows by sample id, or every row of some groups (a "
            "person); prints the receipt.", backend=True)
    p.add_argument("store", metavar="STORE")
    p.add_argument("--id", action="append", help="a sample id (repeatable)")
    p.add_argument("--ids", help="file of ids (whitespace/comma separated; - for stdin)")
    p.add_argument("--group", action="append", metavar="KEY",
                   help="a group key (the store's --group column, e.g. a user): forget all "
                        "its rows (repeatable)")
    p.add_argument("--groups", metavar="FILE",
                   help="file of group keys, read as an ids file (- for stdin)")
    p.add_argument("--record-ids", action="store_true",
                   help="keep raw ids (and group keys) in the receipt (default: only keyed "
                        "hashes)")
    p.set_defaults(func=cmd_forget)

    p = add("predict", "Predict rows of DATA with the model in STORE.")
    p.add_argument("store", metavar="STORE")
    p.add_argument("data", metavar="DATA")
    p.add_argument("--out", required=True, help="output .parquet or .csv: an id column, "
                   "prediction and proba_<class> per class; written whole or not at all")
    p.add_argument("--id-column", metavar="NAME", help="DATA's column copied to the output as "
                   "the rows' id (default: the store's id column if DATA has it, else the "
                   "row number as `row`)")
    p.add_argument("--batch-rows", type=int, default=4096, metavar="N",
                   help="rows read and scored at a time (memory scales with N; S shards' "
                        "class probabilities of a batch stay in cache at the default)")
    _csv_options(p)
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

    p = add("upgrade", "Convert a store written by an older sisa to this version's format, "
            "in place (data, checkpoints and audit log kept).")
    p.add_argument("store", metavar="STORE")
    p.set_defaults(func=cmd_upgrade)

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
    p.add_argument("--shards", type=_comma_ints, default=[1, 2, 4, 8, 16, 32],
                   help="candidate S values, comma-separated")
    p.add_argument("--slices", type=_comma_ints, default=[1, 4, 8, 16],
                   help="candidate R values, comma-separated")
    p.add_argument("--schedule", choices=PLAN_SCHEDULES, default="streaming")
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--measure", choices=tuple(DATASETS), help="also measure holdout accuracy "
                   "per S on this built-in dataset")
    p.add_argument("--measure-rows", type=int, default=20_000)
    p.add_argument("--model", default=DEFAULT_MODEL, help="preset used by --measure")
    p.set_defaults(func=cmd_plan)

    p = add("demo", "The main job: train on a real dataset, forget rows, verify, print.",
            backend=True)
    p.add_argument("--dataset", choices=DEMO_DATASETS, default="adult")
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
                   help="file holding the bearer token alone, or the server's token file "
                   "(its first 'erase' token is used; default $SISA_TOKEN)")
    p.add_argument("--wait", action="store_true", help="wait until done; print the receipt")
    p.add_argument("--timeout", type=float, default=600.0)
    p.set_defaults(func=cmd_erase)

    from ..compare.cli import add_parser as add_compare

    add_compare(sub)
    return parser
