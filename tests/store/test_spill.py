"""Pass 1 of a build (sisa.store.write.spill): rows assigned as they stream in and spilled
in sorted runs of bounded size, read back here as the real Arrow files they are.

What pass 2 (merge) relies on: every row in exactly one run, at the place ``assign`` gives
it; a run's record batches never mix two slices, hold at most WINDOW rows, and are sorted
by (slice, order hash), with the per-batch summary (RowRun) matching the file; the index
entries of any power-of-two bucket one contiguous range (IndexRun.starts, key_range); a run
written whenever the buffered rows reach the budget."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from sisa.store.format import ids as idmod
from sisa.store.format.assign import AssignmentConfig, assign, group_hash
from sisa.store.format.index import MAX_INDEX_BUCKETS, id_buckets
from sisa.store.format.layout import FEATURES, GROUP, ID, LABEL
from sisa.store.write.ingest import Batch
from sisa.store.write.spill import (
    FINE_BITS,
    ORDER,
    WINDOW,
    Job,
    Scratch,
    Shape,
    Spilled,
    index_keys,
    key_range,
    spill,
)

D = 3
INT_LABELS = pa.int64()
CONFIG = AssignmentConfig(n_shards=3, n_slices=2, random_state=11)


def _job(tmp_path, *, budget=1 << 30, batch_rows=65_536, config=CONFIG, id_type=idmod.INT,
         label_type=INT_LABELS, grouped=False, prefix="t-") -> Job:
    shape = Shape(id_type, label_type, D, np.dtype(np.float32), None, grouped)
    scratch = Scratch(str(tmp_path), "runs", prefix)
    return Job(str(tmp_path), scratch, config, shape, {}, budget, 1 << 20, batch_rows)


def _rows(n, seed=0, ids=None):
    rng = np.random.default_rng(seed)
    ids = np.arange(n, dtype=np.int64) * 7 + 3 if ids is None else ids  # not row numbers
    return ids, rng.normal(size=(n, D)).astype(np.float32), rng.integers(0, 4, n)


def _batches(job: Job, name: str) -> list[pa.RecordBatch]:
    reader = pa.ipc.open_file(job.scratch.open_input(name))
    assert reader.schema.equals(job.shape.run_schema)
    return [reader.get_batch(i) for i in range(reader.num_record_batches)]


def _index(job: Job, name: str) -> pa.Table:
    return pa.ipc.open_file(job.scratch.open_input(name)).read_all()


def _all_rows(job: Job, out: Spilled) -> pa.Table:
    return pa.Table.from_batches([b for run in out.row_runs for b in _batches(job, run.name)])


def test_every_row_is_in_one_run_at_the_place_assign_gives_it(tmp_path):
    ids, X, y = _rows(3000)
    job = _job(tmp_path, budget=700 * (D * 4 + 100), batch_rows=250)  # ~700 rows a run
    out = spill(job, "d", [Batch(ids, X, y, None, None)])
    assert out.rows == 3000 and len(out.row_runs) == len(out.index_runs) > 1
    rows = _all_rows(job, out)
    got = rows.column(ID).to_numpy()
    assert sorted(got.tolist()) == ids.tolist()  # each row once, none lost or doubled
    at = {int(v): i for i, v in enumerate(ids)}
    order = [at[int(v)] for v in got]
    feats = np.stack(rows.column(FEATURES).to_pylist()).astype(np.float32)
    np.testing.assert_array_equal(feats, X[order])
    np.testing.assert_array_equal(rows.column(LABEL).to_numpy(), y[order])
    shard, sl, key = assign(CONFIG, ids)
    np.testing.assert_array_equal(rows.column(ORDER).to_numpy(), key[order])
    cells = np.concatenate([np.repeat(run.cells, run.rows) for run in out.row_runs])
    np.testing.assert_array_equal(cells, (shard * CONFIG.n_slices + sl)[order])


def test_a_run_is_written_each_time_the_buffered_rows_reach_the_budget(tmp_path):
    ids, X, y = _rows(3500)
    row_bytes = _job(tmp_path).shape.row_bytes
    job = _job(tmp_path, budget=1000 * row_bytes, batch_rows=250)
    out = spill(job, "d", [Batch(ids, X, y, None, None)])
    assert [int(run.rows.sum()) for run in out.row_runs] == [1000, 1000, 1000, 500]
    assert [int(run.starts[-1]) for run in out.index_runs] == [1000, 1000, 1000, 500]
    one = spill(_job(tmp_path, prefix="u-"), "d", [Batch(ids, X, y, None, None)])
    assert len(one.row_runs) == 1  # the same rows under a large budget: one run


def test_the_text_of_string_ids_counts_against_the_budget(tmp_path):
    _, X, y = _rows(3500)
    ids = np.array([f"{i:0100d}" for i in range(3500)], dtype=object)  # 100 bytes of text each
    job = _job(tmp_path, budget=1000 * (D * 4 + 100), batch_rows=50, id_type=idmod.STR)
    out = spill(job, "d", [Batch(ids, X, y, None, None)])
    sizes = [int(run.rows.sum()) for run in out.row_runs]
    assert sum(sizes) == 3500 and max(sizes) <= 1000 * 112 // 212 + 50  # not the 1000 of X
    assert sum(int(run.text[:, 0].sum()) for run in out.row_runs) == 3500 * 100


def test_batches_never_mix_slices_and_hold_at_most_a_window_sorted_by_order(tmp_path):
    config = AssignmentConfig(n_shards=1, n_slices=2, random_state=3)
    n = 2 * WINDOW + 5000  # a slice of ~10.7k rows: more than one window
    ids, X, y = _rows(n)
    job = _job(tmp_path, config=config)
    (run,) = spill(job, "d", [Batch(ids, X, y, None, None)]).row_runs
    batches = _batches(job, run.name)
    _, sl, _ = assign(config, ids)
    cell_of = dict(zip(ids.tolist(), sl.tolist(), strict=True))
    assert len(batches) == len(run.cells) >= 4
    keys = []
    for j, b in enumerate(batches):
        assert 0 < b.num_rows <= WINDOW and b.num_rows == run.rows[j]
        assert {cell_of[i] for i in b.column(ID).to_pylist()} == {run.cells[j]}
        order = b.column(ORDER).to_numpy()
        assert (run.first[j], run.last[j]) == (order[0], order[-1])
        keys += [(run.cells[j], int(o)) for o in order]
    assert keys == sorted(keys)  # by slice, then order hash, across batches too
    for cell in (0, 1):
        span = run.batches_of(cell)
        assert len(span) >= 2 and run.rows[span.start:span.stop].sum() == (sl == cell).sum()


@pytest.mark.parametrize("n_buckets", [1, 2, 8, 64, MAX_INDEX_BUCKETS])
def test_key_ranges_cover_the_keys_once_and_hold_exactly_their_buckets_ids(n_buckets):
    ranges = [key_range(b, n_buckets) for b in range(n_buckets)]
    assert sorted(ranges)[0][0] == 0 and sorted(ranges)[-1][1] == 1 << FINE_BITS
    assert all(a[1] == b[0] for a, b in zip(sorted(ranges), sorted(ranges)[1:], strict=False))
    ids, _, _ = _rows(20_000)
    keys = index_keys(ids)
    lo, hi = np.array(ranges).T
    bucket = id_buckets(pa.array(ids), n_buckets)
    assert ((lo[bucket] <= keys) & (keys < hi[bucket])).all()


def test_the_index_run_is_grouped_by_key_with_each_entrys_place(tmp_path):
    ids, X, y = _rows(5000)
    job = _job(tmp_path)
    out = spill(job, "d", [Batch(ids, X, y, None, None)])
    (run,) = out.index_runs
    table = _index(job, run.name)
    got = table.column(ID).to_numpy()
    keys = index_keys(got)
    assert len(run.starts) == (1 << FINE_BITS) + 1 and (np.diff(keys) >= 0).all()
    np.testing.assert_array_equal(run.starts, np.searchsorted(keys, np.arange(4097)))
    shard, sl, _ = assign(CONFIG, got)
    np.testing.assert_array_equal(table.column("shard").to_numpy(), shard)
    np.testing.assert_array_equal(table.column("slice").to_numpy(), sl)
    bucket = id_buckets(pa.array(got), 16)
    for b in range(16):  # what merge reads for bucket b: one contiguous range of the run
        lo, hi = key_range(b, 16)
        assert set(got[run.starts[lo]:run.starts[hi]]) == set(got[bucket == b])


def test_an_unhashed_index_puts_every_entry_under_key_zero(tmp_path):
    ids, X, y = _rows(500)
    job = _job(tmp_path)
    sp = spill(job, "d", [Batch(ids, X, y, None, None)], hash_index=False)
    (run,) = sp.index_runs
    assert run.starts[0] == 0 and (run.starts[1:] == 500).all()


def test_default_ids_count_rows_from_first_row_and_tick_counts_each_batch(tmp_path):
    _, X, y = _rows(700)
    job = _job(tmp_path, batch_rows=64)  # an input batch is taken in steps of 64 rows
    ticks: list[int] = []
    out = spill(job, "p3", [Batch(None, X[:300], y[:300], None, None),
                            Batch(None, X[300:], y[300:], None, None)],
                first_row=1000, tick=ticks.append)
    assert ticks == [300, 400] and out.rows == 700
    rows = _all_rows(job, out)
    got = rows.column(ID).to_numpy()
    assert sorted(got.tolist()) == list(range(1000, 1700))
    feats = np.stack(rows.column(FEATURES).to_pylist()).astype(np.float32)
    np.testing.assert_array_equal(feats, X[got - 1000])
    assert all(run.name.startswith("p3-r") for run in out.row_runs)


def test_string_ids_and_labels_record_their_text_bytes_per_batch(tmp_path):
    n = 900
    ids = np.array([f"user-{i:05d}" + "é" * (i % 3) for i in range(n)], dtype=object)
    _, X, _ = _rows(n)
    y = np.array(["cat", "dog", "émeu"], dtype=object)[np.arange(n) % 3]
    job = _job(tmp_path, id_type=idmod.STR, label_type=pa.string())
    (run,) = spill(job, "d", [Batch(ids, X, y, None, None)]).row_runs
    for j, b in enumerate(_batches(job, run.name)):
        want = [sum(len(v.encode()) for v in b.column(c).to_pylist()) for c in (ID, LABEL)]
        assert run.text[j].tolist() == want


def test_grouped_rows_carry_their_group_hash_and_share_a_slice(tmp_path):
    ids, X, y = _rows(1200)
    groups = np.array([f"g{i % 37}" for i in range(1200)], dtype=object)
    job = _job(tmp_path, grouped=True)
    out = spill(job, "d", [Batch(ids, X, y, groups, None)])
    rows = _all_rows(job, out)
    at = {int(v): i for i, v in enumerate(ids)}
    order = [at[int(v)] for v in rows.column(ID).to_numpy()]
    np.testing.assert_array_equal(rows.column(GROUP).to_numpy(),
                                  group_hash(CONFIG, groups)[order])
    cells = np.concatenate([np.repeat(run.cells, run.rows) for run in out.row_runs])
    for g in np.unique(groups):
        assert len(set(cells[groups[order] == g])) == 1


def test_clearing_a_scratch_removes_its_runs_and_nothing_else(tmp_path):
    ids, X, y = _rows(800)
    job = _job(tmp_path, budget=300 * (D * 4 + 100), batch_rows=100)
    out = spill(job, "d", [Batch(ids, X, y, None, None)])
    other = tmp_path / "runs" / "ingest-other-d-r0"  # another ingest's run in the same folder
    other.write_bytes(b"keep")
    names = sorted(p.name for p in (tmp_path / "runs").iterdir())
    assert len(names) == 2 * len(out.row_runs) + 1 and len(out.row_runs) >= 3
    job.scratch.clear()
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == [other.name]
    assert Scratch(str(tmp_path), "", "x-").rel("d-r0") == "x-d-r0"
