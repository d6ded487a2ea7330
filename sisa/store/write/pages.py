"""Read an input's record batches with flat memory: no read-ahead, and Parquet files
decoded page by page rather than a row group at a time (pyarrow's and pandas' default row
group is 1M rows, Spark's 128 MB)."""

from __future__ import annotations

from collections.abc import Iterator

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq

from ..format.arrow_checks import validated


def scan_options(fmt: ds.FileFormat | None) -> dict:
    """``to_batches`` options that keep a scan's memory flat: no read-ahead threads
    (pyarrow's defaults buffer up to 16 batches per file and 4 files: 3 GB of a 10M-row
    Parquet file), and Parquet column chunks read as decoded rather than a whole row
    group pre-buffered."""
    opts: dict = {"batch_readahead": 1, "fragment_readahead": 1, "use_threads": False}
    if isinstance(fmt, ds.ParquetFileFormat):
        opts["fragment_scan_options"] = ds.ParquetFragmentScanOptions(pre_buffer=False)
    return opts


PARQUET_BUFFER = 1 << 20  # bytes read from a Parquet column chunk at a time


def parquet_batches(fs, path: str, row_groups, schema: pa.Schema,
                    batch_rows: int) -> Iterator[pa.RecordBatch]:
    """A Parquet file's rows (``row_groups``, None: all) in batches of ``schema``'s columns,
    decoded page by page. A dataset scan decodes a whole row group before its first batch
    (200 MB for pyarrow's default of 1M rows x 50 float32, plus the column chunks read
    whole); this reader holds a buffer and a page per column."""
    with fs.open_input_file(path) as f:
        pf = pq.ParquetFile(f, buffer_size=PARQUET_BUFFER, pre_buffer=False)
        # batches cut at row group ends, as a dataset scan cuts them: a part of a parallel
        # ingest (whole row groups) sees the batches, and so the errors, of a serial read
        present = [n for n in schema.names if n in pf.schema_arrow.names]
        for rg in range(pf.num_row_groups) if row_groups is None else row_groups:
            for rb in pf.iter_batches(batch_size=batch_rows, row_groups=[rg],
                                      columns=present, use_threads=False):
                # validated before the cast reads its values (checked_batches validates the
                # batch again, as it does every batch from outside)
                yield rb if rb.schema.equals(schema) else _as_scanned(validated(rb, path), schema)


def _as_scanned(rb: pa.RecordBatch, schema: pa.Schema) -> pa.RecordBatch:
    """``rb`` as a dataset scan gives it: the dataset's column order and types, and a
    column this file lacks all null."""
    return pa.RecordBatch.from_arrays(
        [rb.column(f.name).cast(f.type) if f.name in rb.schema.names
         else pa.nulls(rb.num_rows, f.type) for f in schema], schema=schema)


def table_batches(dataset: ds.Dataset, names: list[str],
                  batch_rows: int) -> Iterator[pa.RecordBatch]:
    """``dataset``'s columns ``names`` in record batches; Parquet files page by page
    (:func:`parquet_batches`), in the order a dataset scan reads them."""
    fmt = getattr(dataset, "format", None)
    if not isinstance(fmt, ds.ParquetFileFormat):
        yield from dataset.to_batches(columns=names, batch_size=batch_rows,
                                      **scan_options(fmt))
        return
    schema = pa.schema([dataset.schema.field(n) for n in names])
    for frag in dataset.get_fragments():
        yield from parquet_batches(dataset.filesystem, frag.path, None, schema, batch_rows)
