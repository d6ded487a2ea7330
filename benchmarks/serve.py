"""`sisa serve` benchmark (issue 17): prediction latency with and without a concurrent
forget, and the time from an erasure request to `done` as a function of the batch window.

Trains an MLP SISA model (S=4, R=2) on synthetic rows, starts `sisa serve` on 127.0.0.1,
then:

1. prediction latency p50/p99 and throughput (client side, 4 threads, 20 rows a request)
   with no forget running, and while forget batches run back to back;
2. for each batch window: 40 single-id erasure requests sent at 20/s, the time from each
   202 to `done`, the number of forgets (retrain batches) they cost, and the erasures/s.

With ``--scale-shards 256`` it instead measures a large ensemble (issue 26): an
``SGDClassifier(loss="log_loss")`` model at S shards on 200,000 x 50 float32 rows, 1-row
predict p50/p99 from one client (count-bound), throughput with 8 concurrent clients, and
the in-process rate of the same 1-row ``predict_proba`` (stacked form and per-shard loop).

Run: python -m benchmarks.serve [--rows 20000] [--windows 0.5,2,5]
     python -m benchmarks.serve --scale-shards 256 [--rows 200000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import warnings

import numpy as np
from sklearn.neural_network import MLPClassifier

from sisa import SISAClassifier
from sisa.client import Client

TOKEN = "bench-token-0123456789abcdef"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(store: str, tokens: str, window: float) -> tuple[subprocess.Popen, Client]:
    port = _port()
    proc = subprocess.Popen([sys.executable, "-m", "sisa.cli", "serve", store, "--port",
                             str(port), "--backend", "local", "--token-file", tokens,
                             "--batch-window", str(window), "--max-batch", "1000", "--quiet"])
    client = Client(f"http://127.0.0.1:{port}", token=TOKEN)
    for _ in range(600):
        try:
            client.health()
            return proc, client
        except Exception:
            time.sleep(0.1)
    raise SystemExit("server did not start")


def stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(120)


def latency(client: Client, X: np.ndarray, seconds: float, threads: int = 4) -> dict:
    times: list[float] = []
    end = time.monotonic() + seconds

    def run() -> None:
        while time.monotonic() < end:
            t0 = time.perf_counter()
            client.predict(X)
            times.append(time.perf_counter() - t0)

    ts = [threading.Thread(target=run) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    ms = np.asarray(times) * 1000
    return {"requests": len(ms), "p50_ms": round(float(np.percentile(ms, 50)), 2),
            "p99_ms": round(float(np.percentile(ms, 99)), 2),
            "req_per_s": round(len(ms) / seconds, 1)}


def sequential(client: Client, X: np.ndarray, requests: int) -> dict:
    """One client, ``requests`` calls back to back (bounded by count, not time)."""
    for _ in range(20):
        client.predict(X)  # warm: connection, first-call costs
    ms = []
    for _ in range(requests):
        t0 = time.perf_counter()
        client.predict(X)
        ms.append((time.perf_counter() - t0) * 1000)
    return {"requests": requests, "p50_ms": round(float(np.percentile(ms, 50)), 3),
            "p99_ms": round(float(np.percentile(ms, 99)), 3)}


def in_process_rate(model, X: np.ndarray, calls: int = 300) -> dict:
    """1-row predict_proba in this process: median ms and calls per second."""
    model.predict_proba(X)
    ms = []
    for _ in range(calls):
        t0 = time.perf_counter()
        model.predict_proba(X)
        ms.append((time.perf_counter() - t0) * 1000)
    med = float(np.median(ms))
    return {"p50_ms": round(med, 3), "calls_per_s": round(1000 / med, 1)}


def at_scale(args, tokens: str, tmp: str) -> dict:
    """`sisa serve` of an S-shard SGD model: 1-row latency and 8-client throughput."""
    from sklearn.linear_model import SGDClassifier

    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, 50)).astype(np.float32)
    y = ((X @ rng.normal(size=50) + rng.normal(scale=2.0, size=args.rows)) > 0).astype(int)
    store = os.path.join(tmp, "scale")
    model = SISAClassifier(SGDClassifier(loss="log_loss"), n_shards=args.scale_shards,
                           n_slices=4, store=store, backend="local").fit(X, y)
    out: dict = {"rows": args.rows, "shards": args.scale_shards}
    out["in_process_stacked"] = in_process_rate(model, X[:1])
    fast, model._stacked = model._stacked, None
    out["in_process_loop"] = in_process_rate(model, X[:1], calls=60)
    model._stacked = fast
    proc, c = start(store, tokens, 0.0)
    try:
        out["serve_1_client"] = sequential(c, X[:1], args.requests_scale)
        out["serve_8_clients"] = latency(c, X[:1], 10, threads=8)
    finally:
        stop(proc)
    out["serve_8_clients_vs_in_process"] = round(
        out["serve_8_clients"]["req_per_s"] / out["in_process_stacked"]["calls_per_s"], 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=None)
    ap.add_argument("--windows", default="0.5,2,5")
    ap.add_argument("--requests", type=int, default=40)
    ap.add_argument("--scale-shards", type=int, default=None)
    ap.add_argument("--requests-scale", type=int, default=500)
    args = ap.parse_args()
    if args.scale_shards:
        args.rows = args.rows or 200_000
        with tempfile.TemporaryDirectory() as tmp:
            tokens = os.path.join(tmp, "tokens")
            with open(tokens, "w") as f:
                f.write(f"predict,erase {TOKEN}\n")
            os.chmod(tokens, 0o600)
            print(json.dumps(at_scale(args, tokens, tmp), indent=1))
        return
    args.rows = args.rows or 20_000
    rng = np.random.default_rng(0)
    X = rng.normal(size=(args.rows, 20)).astype(np.float32)
    y = (X @ rng.normal(size=(20, 3))).argmax(axis=1)
    out: dict = {"rows": args.rows}
    with tempfile.TemporaryDirectory() as tmp:
        base = os.path.join(tmp, "base")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            SISAClassifier(MLPClassifier(hidden_layer_sizes=(32,)), n_shards=4, n_slices=2,
                           store=base, backend="local").fit(X, y)
        tokens = os.path.join(tmp, "tokens")
        with open(tokens, "w") as f:
            f.write(f"predict,erase {TOKEN}\n")
        os.chmod(tokens, 0o600)

        # 1. latency without and with a running forget
        store = os.path.join(tmp, "lat")
        shutil.copytree(base, store)
        proc, c = start(store, tokens, 0.0)
        try:
            out["predict_idle"] = latency(c, X[:20], 5)
            busy = threading.Event()
            running = {"forgets": 0}

            def forgets() -> None:  # back-to-back single-shard-spanning batches
                i = 0
                while not busy.is_set():
                    c.wait(c.erase([int(v) for v in range(i, i + 40)]), poll=0.05)
                    running["forgets"] += 1
                    i += 40

            t = threading.Thread(target=forgets)
            t.start()
            time.sleep(0.5)
            out["predict_during_forget"] = latency(c, X[:20], 5)
            busy.set()
            t.join()
            out["predict_during_forget"]["forgets_meanwhile"] = running["forgets"]
        finally:
            stop(proc)

        # 2. request -> done against the batch window
        out["erasure"] = []
        for w in [float(v) for v in args.windows.split(",")]:
            store = os.path.join(tmp, f"w{w}")
            shutil.copytree(base, store)
            proc, c = start(store, tokens, w)
            try:
                sent, rids = [], []
                t0 = time.monotonic()
                for i in range(args.requests):
                    rids.append(c.erase([int(10_000 + i * 97)]))
                    sent.append(time.monotonic())
                    time.sleep(0.05)
                waits, receipts = [], set()
                for rid, ts in zip(rids, sent, strict=True):
                    st = c.wait(rid, poll=0.02)
                    waits.append(time.monotonic() - ts)
                    receipts.add(st["receipt"]["request_id"])
                total = time.monotonic() - t0
            finally:
                stop(proc)
            out["erasure"].append({
                "window_s": w, "requests": args.requests, "forgets": len(receipts),
                "to_done_p50_s": round(float(np.median(waits)), 2),
                "to_done_max_s": round(max(waits), 2),
                "erasures_per_s": round(args.requests / total, 1)})
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
