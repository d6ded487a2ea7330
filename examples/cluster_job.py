"""A sisa job for a Ray cluster with shared storage: train, forget, verify on an S3 store.

Run it as a Ray job (``RAY_ADDRESS`` is then set for you)::

    ray job submit --address http://HEAD:8265 --working-dir examples -- \\
        python cluster_job.py --store s3://my-bucket/sisa/demo

or as a plain driver next to the cluster::

    RAY_ADDRESS=HEAD:6379 python examples/cluster_job.py --store s3://my-bucket/sisa/demo

The data is synthetic (scikit-learn's ``make_classification``), so the job needs nothing
but the store. Each shard is one Ray task that reads its slices from the store and writes
its checkpoints back to it; the driver only commits the small manifest. The last line of
output is a JSON summary: timings, the forget receipt, ``verify``'s verdict and how many
shard tasks each node ran (from Ray's state API). The exit status is 0 only if ``verify``
passed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections import Counter

import numpy as np
from sklearn.datasets import make_classification
from sklearn.linear_model import SGDClassifier
from sklearn.neural_network import MLPClassifier

from sisa import SISAClassifier
from sisa.tasks.backend import connect


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default=os.environ.get("SISA_STORE"),
                   help="store URI, e.g. s3://bucket/path (default: $SISA_STORE)")
    p.add_argument("--shards", type=int, default=4, help="S, number of shards")
    p.add_argument("--slices", type=int, default=3, help="R, slices per shard")
    p.add_argument("--rows", type=int, default=6000, help="synthetic rows")
    p.add_argument("--features", type=int, default=20, help="synthetic features")
    p.add_argument("--forget", type=int, default=25, help="rows to forget after training")
    p.add_argument("--model", choices=("sgd", "mlp"), default="sgd",
                   help="shard model: SGDClassifier (fast) or MLPClassifier (slower)")
    p.add_argument("--wait-nodes", type=int, default=0,
                   help="wait (up to --wait-timeout s) until this many nodes are alive")
    p.add_argument("--wait-timeout", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if not args.store:
        p.error("pass --store s3://bucket/path (or set SISA_STORE)")
    return args


def wait_for_nodes(ray, n: int, timeout: float) -> None:
    """Block until ``n`` nodes are alive (workers may still be joining after ``ray up``)."""
    deadline = time.monotonic() + timeout
    while True:
        alive = [nd for nd in ray.nodes() if nd["Alive"]]
        if len(alive) >= n:
            return
        if time.monotonic() > deadline:
            raise SystemExit(f"only {len(alive)} of {n} Ray nodes joined within {timeout:.0f} s")
        time.sleep(0.5)


def shard_tasks(ray, expected: int, timeout: float = 15.0) -> tuple[dict, list[dict]]:
    """Where this job's ``train_shard`` task attempts ran, from Ray's state API:
    ``({node_id: {state: count}}, [failed attempts with their error])``.

    Task events reach the state API about a second after the fact, so poll (bounded)
    until ``expected`` attempts have finished. Empty if the cluster has no dashboard.
    """
    try:
        from ray.util.state import list_tasks
    except ImportError:
        return {}, []
    job_id = ray.get_runtime_context().get_job_id()
    deadline = time.monotonic() + timeout
    rows: list = []
    while True:
        try:
            rows = list_tasks(filters=[("job_id", "=", job_id), ("name", "=", "train_shard")],
                              detail=True, limit=10_000, raise_on_missing_output=False)
        except Exception as exc:  # no dashboard / state API: report, don't fail the job
            print(f"note: Ray state API unavailable ({type(exc).__name__}: {exc})",
                  file=sys.stderr)
            return {}, []
        if sum(t.state == "FINISHED" for t in rows) >= expected or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    per_node: dict[str, Counter] = {}
    failed = []
    for t in rows:
        per_node.setdefault(t.node_id or "unscheduled", Counter())[t.state] += 1
        if t.state == "FAILED":
            failed.append({"node": t.node_id, "attempt": t.attempt_number,
                           "error_type": t.error_type,
                           "error": (t.error_message or "").strip()[-500:]})
    return {node: dict(c) for node, c in sorted(per_node.items())}, failed


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    address = os.environ.get("RAY_ADDRESS")
    if not address:
        print("note: RAY_ADDRESS is not set; sisa starts a local Ray instead of joining a "
              "cluster", file=sys.stderr)
    t0 = time.perf_counter()
    ray = connect(address)
    if args.wait_nodes:
        wait_for_nodes(ray, args.wait_nodes, args.wait_timeout)
    t_connect = time.perf_counter() - t0

    X, y = make_classification(n_samples=args.rows, n_features=args.features,
                               n_informative=max(2, args.features // 2), random_state=args.seed)
    X = X.astype(np.float32)
    if args.model == "mlp":
        est = MLPClassifier(hidden_layer_sizes=(256, 256), random_state=args.seed)
    else:
        est = SGDClassifier(loss="log_loss", random_state=args.seed)
    clf = SISAClassifier(est, n_shards=args.shards, n_slices=args.slices, store=args.store,
                         ray_address=address, backend="ray", random_state=args.seed)

    t = time.perf_counter()
    clf.fit(X, y)
    t_fit = time.perf_counter() - t
    forget_ids = np.random.default_rng(args.seed).choice(args.rows, args.forget, replace=False)
    t = time.perf_counter()
    receipt = clf.forget(forget_ids.tolist())
    t_forget = time.perf_counter() - t
    t = time.perf_counter()
    report = clf.verify()
    t_verify = time.perf_counter() - t

    retrained = len(receipt["affected"])
    summary = {
        "store": args.store,
        "ray_address": address,
        "nodes_alive": sorted(nd["NodeID"] for nd in ray.nodes() if nd["Alive"]),
        "driver_node": ray.get_runtime_context().get_node_id(),
        "shards": args.shards,
        "slices": args.slices,
        "rows": args.rows,
        "accuracy": round(float((clf.predict(X) == y).mean()), 4),
        "seconds": {"connect": round(t_connect, 2), "fit": round(t_fit, 2),
                    "forget": round(t_forget, 2), "verify": round(t_verify, 2)},
        "receipt": {k: receipt[k] for k in ("request_id", "affected", "rows_retrained",
                                            "rows_full_retrain", "fingerprint_after")},
        "verify_ok": report.ok,
        "verify_problems": report.problems + [f"shard {s.shard}: {p}" for s in report.shards
                                              for p in s.problems],
    }
    # fit trains every shard, forget the affected ones, verify every shard again
    summary["train_tasks_per_node"], summary["failed_attempts"] = shard_tasks(
        ray, 2 * args.shards + retrained)
    print(json.dumps(summary, sort_keys=True))
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
