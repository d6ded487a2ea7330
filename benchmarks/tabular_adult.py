"""UCI Adult as published, into sisa with no preprocessing by hand (issue 23's figure).

Writes adult.data in its published layout (``, `` separators, ``?`` for a missing value,
string categories, ``<=50K``/``>50K`` labels, with a header row) split 80/20 into
``train.csv`` and ``test.csv``, then:

* trains ``sisa train train.csv --label income --na-values '?' --model hgb --shards S``
  (the CLI, as a user would) and scores it on ``test.csv``;
* fits a plain ``HistGradientBoostingClassifier(categorical_features="from_dtype")`` on
  the same training rows (pandas ``read_csv(na_values="?", skipinitialspace=True)``,
  string columns as ``category``) and scores it on the same test rows;
* compares the store's size (slice files, and everything) with the training rows as
  Parquet (pyarrow's defaults), forgets the one Holand-Netherlands row and verifies.

Usage::

    python -m benchmarks.tabular_adult [--shards 8] [--slices 1] [--seed 0]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

COLUMNS = ["age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
           "occupation", "relationship", "race", "gender", "capital-gain", "capital-loss",
           "hours-per-week", "native-country", "income"]


def _sisa(*argv: str) -> tuple[float, str]:
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "sisa.cli", *argv, "--quiet"], check=True,
                         capture_output=True, text=True).stdout
    return time.perf_counter() - t0, out


def _bytes(root: Path, pattern: str = "**/*") -> int:
    return sum(p.stat().st_size for p in root.glob(pattern) if p.is_file())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shards", type=int, default=8)
    ap.add_argument("--slices", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import pandas as pd
    import pyarrow.parquet as pq
    from sklearn.ensemble import HistGradientBoostingClassifier

    from sisa import SISAClassifier
    from sisa.datasets._dataset import package_file
    from sisa.store.write.sources import read_table
    from sisa.store.write.text import CsvOptions

    src = package_file("mglearn", "data/adult.data", "SISA_ADULT_PATH", None, "UCI Adult")
    lines = [ln for ln in Path(src).read_text().splitlines() if ln.strip()]
    order = np.random.default_rng(args.seed).permutation(len(lines))
    cut = int(0.8 * len(lines))
    tmp = Path(tempfile.mkdtemp(prefix="sisa-adult-"))
    header = ", ".join(COLUMNS)
    for name, part in (("train", order[:cut]), ("test", order[cut:])):
        (tmp / f"{name}.csv").write_text("\n".join([header, *(lines[i] for i in part)]) + "\n")

    store = tmp / "store"
    fit_s, _ = _sisa("train", str(tmp / "train.csv"), "--label", "income", "--na-values", "?",
                     "--model", "hgb", "--shards", str(args.shards), "--slices",
                     str(args.slices), "--store", str(store), "--backend", "local")
    test = read_table(str(tmp / "test.csv"), CsvOptions(na_values=["?"], trim_whitespace=True))
    y_test = np.asarray(test.column("income").to_pylist())
    model = SISAClassifier.load(str(store))
    acc_sisa = float(np.mean(model.predict(test.drop_columns(["income"])) == y_test))

    def frame(name: str):
        df = pd.read_csv(tmp / f"{name}.csv", na_values="?", skipinitialspace=True)
        y = df.pop("income").to_numpy()
        for c in df.select_dtypes(exclude="number").columns:  # pandas 3 reads str dtype
            df[c] = df[c].astype("category")
        return df, y

    (X_tr, y_tr), (X_te, y_te) = frame("train"), frame("test")
    X_te = X_te.astype({c: pd.CategoricalDtype(X_tr[c].cat.categories)
                        for c in X_tr.columns[X_tr.dtypes == "category"]})
    plain = HistGradientBoostingClassifier(categorical_features="from_dtype",
                                           random_state=0).fit(X_tr, y_tr)
    acc_plain = float(plain.score(X_te, y_te))

    csv = CsvOptions(na_values=["?"], trim_whitespace=True)
    pq.write_table(read_table(str(tmp / "train.csv"), csv), tmp / "train.parquet")
    parquet = (tmp / "train.parquet").stat().st_size
    data = _bytes(store, "data/**/*")
    index = _bytes(store, "index/**/*")
    total = _bytes(store)

    rare = next(i for i, ln in enumerate((tmp / "train.csv").read_text().splitlines()[1:])
                if "Holand-Netherlands" in ln)
    forget_s, _ = _sisa("forget", str(store), "--id", str(rare), "--backend", "local")
    verify_s, _ = _sisa("verify", str(store), "--backend", "local")

    print(f"rows: {cut:,} train, {len(lines) - cut:,} test; S={args.shards}, R={args.slices}")
    print(f"holdout accuracy: sisa --model hgb {acc_sisa:.4f}, plain HGB(from_dtype) "
          f"{acc_plain:.4f} (difference {100 * (acc_sisa - acc_plain):+.2f} points)")
    print(f"store: slice files {data / 1e6:.3f} MB = {data / parquet:.3f}x the Parquet input "
          f"({parquet / 1e6:.3f} MB; with the id index {(data + index) / parquet:.3f}x); whole "
          f"store with checkpoints {total / 1e6:.2f} MB")
    print(f"sisa train {fit_s:.1f} s; forget the Holand-Netherlands row {forget_s:.1f} s; "
          f"verify {verify_s:.1f} s (commands, with process start-up)")


if __name__ == "__main__":
    main()
