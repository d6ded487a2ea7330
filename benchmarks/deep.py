"""The SISA paper's experiment on data we have: Fashion-MNIST, a small CNN per shard.

For every S in --shards and R in --slices: test accuracy of the aggregate (soft and hard
vote), fit time, and the time of forgetting 1 row (mean of --single requests, each its
own forget) and a batch of --batch rows, against retraining the monolithic CNN from
scratch on what is left; next to the cost model's ideal speed-up
(``sisa.engine.cost.speedup_vs_monolithic``). The monolithic CNN gets the same budget: E epochs
over all rows, where each shard model makes E passes over its rows (streaming schedule,
``epochs=E`` per slice). Every model trains with one torch thread; SISA's shards run as
Ray tasks on the machine's CPUs, forgets of one shard in process.

Needs ``pip install 'sisa[torch,plots]'`` and the Debian package dataset-fashion-mnist.
Run: python -m benchmarks.deep [--rows 20000] [--epochs 4] [--shards 1,5,10,20]
                               [--slices 1,4,8] [--out docs/reports/deep]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

# The SISA paper's reported figures (Bourtoule et al., S&P 2021; see docs/benchmarks.md):
PAPER = {"speedup": {"Purchase (S=20, R=50)": (20, 4.63), "SVHN (S=20, R=50)": (20, 2.45)}}


def _args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=20_000, help="training rows (of 60,000)")
    ap.add_argument("--test-rows", type=int, default=10_000)
    ap.add_argument("--epochs", type=int, default=4, help="E: passes over every row")
    ap.add_argument("--shards", default="1,5,10,20")
    ap.add_argument("--slices", default="1,4,8")
    ap.add_argument("--single", type=int, default=3, help="1-row forget requests timed")
    ap.add_argument("--batch", type=int, default=100, help="rows in the batch forget")
    ap.add_argument("--lr", type=float, default=4e-3)
    ap.add_argument("--out", default="docs/reports/deep")
    ap.add_argument("--seed", type=int, default=0)
    return ap.parse_args()


def main() -> None:
    args = _args()
    from sisa import SISAClassifier, aggregate
    from sisa.datasets import load
    from sisa.deep import SMALL_CNN_LAYERS, TorchClassifier
    from sisa.engine import connect, cost

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    train = load("fashion-mnist", n_rows=args.rows, sample_seed=args.seed)
    test = load("fashion-mnist", kind="t10k", n_rows=args.test_rows, sample_seed=args.seed)
    n, E = len(train.y), args.epochs
    rng = np.random.default_rng(args.seed)
    singles = rng.choice(n, size=args.single, replace=False)
    batch = rng.choice(np.setdiff1d(np.arange(n), singles), size=args.batch, replace=False)
    cnn = TorchClassifier(SMALL_CNN_LAYERS, lr=args.lr, batch_size=64)
    res = {"command": "python -m benchmarks.deep " + " ".join(
        f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
        "train_rows": n, "test_rows": len(test.y), "epochs": E, "grid": []}

    def save() -> None:
        (out / "deep.json").write_text(json.dumps(res, indent=1))

    def mono(keep: np.ndarray) -> tuple[float, float]:
        m = TorchClassifier(SMALL_CNN_LAYERS, lr=args.lr, batch_size=64, max_epochs=E,
                            random_state=args.seed)
        t = time.perf_counter()
        m.fit(train.X[keep], train.y[keep])
        return time.perf_counter() - t, float(m.score(test.X, test.y))

    everything = np.arange(n)
    t_fit, acc = mono(everything)
    t_re1, _ = mono(np.setdiff1d(everything, singles[:1]))
    t_re100, _ = mono(np.setdiff1d(everything, batch))
    res["monolithic"] = {"fit_s": round(t_fit, 2), "accuracy": round(acc, 4),
                         "retrain_without_1_s": round(t_re1, 2),
                         "retrain_without_batch_s": round(t_re100, 2)}
    print(f"monolithic CNN, {n} rows x {E} epochs: {t_fit:.1f}s, accuracy {acc:.4f}; retrain "
          f"without 1 row {t_re1:.1f}s, without {args.batch} rows {t_re100:.1f}s", flush=True)
    save()
    connect()  # Ray up and its workers warm before anything is timed
    SISAClassifier(cnn, n_shards=2, n_slices=1, epochs=1, backend="ray").fit(
        train.X[:400], train.y[:400])

    shards = [int(s) for s in args.shards.split(",")]
    slices = [int(r) for r in args.slices.split(",")]
    # S=5, R=4 (the acceptance point) first, so it lands even if the run is cut
    grid = sorted(((s, r) for s in shards for r in slices), key=lambda p: p != (5, 4))
    for S, R in grid:
        t = time.perf_counter()
        clf = SISAClassifier(cnn, n_shards=S, n_slices=R, epochs=E, random_state=args.seed,
                             aggregation="soft").fit(train.X, train.y)
        fit_s = time.perf_counter() - t
        soft = float(clf.score(test.X, test.y))
        hard = float(np.mean(aggregate.vote(clf.estimators_, test.X, clf.classes_) == test.y))
        times, rows = [], []
        for sid in singles:
            t = time.perf_counter()
            rec = clf.forget([int(sid)], progress=False)
            times.append(time.perf_counter() - t)
            rows.append(rec["rows_retrained"])
        t = time.perf_counter()
        rec = clf.forget(batch.tolist(), progress=False)
        batch_s = time.perf_counter() - t
        ideal1 = cost.speedup_vs_monolithic(n, S, R, "streaming", E, k=1)
        ideal_b = cost.speedup_vs_monolithic(n, S, R, "streaming", E, k=args.batch)
        row = {
            "S": S, "R": R, "fit_s": round(fit_s, 2), "accuracy_soft": round(soft, 4),
            "accuracy_hard": round(hard, 4),
            "forget_1_s": round(float(np.mean(times)), 3),
            "forget_1_each_s": [round(x, 3) for x in times],
            "forget_1_rows_retrained": rows,
            "speedup_1": round(t_re1 / float(np.mean(times)), 2),
            "ideal_speedup_1": round(ideal1, 2),
            "ideal_speedup_1_these_rows": round(E * n / float(np.mean(rows)), 2),
            "forget_batch_s": round(batch_s, 3),
            "forget_batch_rows_retrained": rec["rows_retrained"],
            "speedup_batch": round(t_re100 / batch_s, 2),
            "ideal_speedup_batch": round(ideal_b, 2),
        }
        res["grid"].append(row)
        save()
        print(json.dumps(row), flush=True)
    plot(res, out)


def plot(res: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    grid, mono = res["grid"], res["monolithic"]
    slices = sorted({g["R"] for g in grid})
    colors = dict(zip(slices, ["tab:blue", "tab:orange", "tab:green", "tab:red"], strict=False))

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for R in slices:
        pts = sorted((g["S"], g["accuracy_soft"], g["accuracy_hard"]) for g in grid
                     if g["R"] == R)
        s, soft, hard = zip(*pts, strict=True)
        ax.plot(s, soft, "o-", color=colors[R], label=f"SISA R={R}, soft vote")
        ax.plot(s, hard, "s--", color=colors[R], alpha=0.6, label=f"SISA R={R}, hard vote")
    ax.axhline(mono["accuracy"], color="black", lw=1, label="monolithic CNN, same budget")
    ax.axhline(mono["accuracy"] - 0.03, color="grey", lw=0.8, ls=":", label="monolithic - 3 pts")
    ax.set_xlabel("shards S")
    ax.set_ylabel("test accuracy")
    ax.set_title(f"Fashion-MNIST, small CNN, {res['train_rows']:,} rows, "
                 f"{res['epochs']} epochs")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_shards.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=False)
    for ax, key, title in [(axes[0], "1", "forget 1 row"),
                           (axes[1], "batch", "forget a batch of 100 rows")]:
        for R in slices:
            pts = sorted((g["S"], g[f"speedup_{key}"], g[f"ideal_speedup_{key}"]) for g in grid
                         if g["R"] == R)
            s, got, ideal = zip(*pts, strict=True)
            ax.plot(s, got, "o-", color=colors[R], label=f"R={R} measured")
            ax.plot(s, ideal, "x:", color=colors[R], alpha=0.7, label=f"R={R} cost model")
        if key == "1":
            for name, (S, x) in PAPER["speedup"].items():
                ax.plot([S], [x], "k*", ms=10)
                ax.annotate(f"paper: {name}", (S, x), fontsize=7, xytext=(-95, 8),
                            textcoords="offset points")
        ax.axhline(1, color="grey", lw=0.8)
        ax.set_xlabel("shards S")
        ax.set_ylabel("speed-up vs retraining the monolithic CNN")
        ax.set_yscale("log")
        ax.set_title(title)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "speedup_vs_shards_slices.png", dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    main()
