"""The tracked benchmarks: ingest, read one slice, fit, forget one row, verify.

Each records its time (pytest-benchmark's rounds) and, in ``extra_info``, the peak RSS of
the same operation run once in a fresh process. ``python -m benchmarks.compare A B`` runs
this suite at two commits and prints the ratios.
"""

from __future__ import annotations

import itertools

from ops import make_model, make_store, rows


def _record(benchmark, size, figures: dict) -> None:
    benchmark.extra_info.update({"size": size["name"], "rows": size["rows"], **figures})


def test_ingest(benchmark, parquet, size, tmp_path, peak_rss):
    dirs = (str(tmp_path / f"s{i}") for i in itertools.count())
    st = benchmark.pedantic(lambda uri: make_store(uri, parquet, size),
                            setup=lambda: ((next(dirs),), {}), rounds=size["rounds"],
                            warmup_rounds=1)
    assert st.n_rows == size["rows"]
    _record(benchmark, size, peak_rss("ingest"))


def test_read_slice(benchmark, store, size, peak_rss):
    cells = itertools.cycle([(s, r) for s in range(size["shards"]) for r in range(size["slices"])])
    part = benchmark.pedantic(lambda: rows(store).read_slice(*next(cells)),
                              rounds=20 * size["rounds"])
    assert len(part) > 0
    _record(benchmark, size, peak_rss("read_slice"))


def test_fit(benchmark, store, size, peak_rss):
    model = benchmark.pedantic(lambda: make_model(size).fit(store), rounds=size["rounds"])
    assert model.score(rows(store).read_slice(0, 0).X, rows(store).read_slice(0, 0).y) > 0.5
    _record(benchmark, size, peak_rss("fit"))


def test_forget_one_row(benchmark, fitted, store, size, peak_rss):
    ids = iter(rows(store).read_slice(s, size["slices"] - 1).ids[i]
               for i in range(1000) for s in range(size["shards"]))
    receipt = benchmark.pedantic(lambda i: fitted.forget([int(i)]),
                                 setup=lambda: ((next(ids),), {}), rounds=size["rounds"])
    assert receipt["rows_retrained"] > 0
    _record(benchmark, size, peak_rss("forget"))


def test_verify(benchmark, fitted, size, peak_rss):
    report = benchmark.pedantic(fitted.verify, rounds=max(1, size["rounds"] // 2))
    assert report.ok
    _record(benchmark, size, peak_rss("verify"))
