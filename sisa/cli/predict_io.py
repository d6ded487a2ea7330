"""``sisa predict``'s input and output, a batch at a time: the rows of a data file read in
record batches (Parquet page by page), and the predictions written batch by batch to a
temporary file beside ``--out`` that is renamed over it only once every row is scored.

Why batches: a 10M-row x 50-column file is 2-4 GB decoded; read whole (as ``sisa
predict`` once did) it needs that much memory and more for the float64 matrix, while a
batch of 4k rows needs a few MB whatever the file's length. Why the rename: a run that
fails or is interrupted at row 9M must leave no output that looks complete, and must not
destroy the output of an earlier run.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa

from ..errors import InputError, SisaError
from ..store.format.arrow_checks import validated
from ..store.write.pages import table_batches
from ..store.write.sources import csv_only, reading, to_dataset
from ..store.write.text import CsvOptions

ROW_GROUP_ROWS = 65_536  # rows per Parquet row group (CSV block) of the output
PARTIAL = ".partial"  # suffix of the temporary output (its name starts with a dot too)


class Input:
    """The columns ``sisa predict`` reads from DATA, and their record batches.

    Parameters
    ----------
    data : str
        A Parquet, CSV or Arrow/Feather file or folder.
    csv : CsvOptions
        How CSV text is read (ignored for the other formats).
    """

    def __init__(self, data: str, csv: CsvOptions) -> None:
        self.what = data
        self.csv = csv_only(data, csv)
        self.dataset = to_dataset(data, self.csv)  # one line for a missing or unreadable path
        self.schema = self.dataset.schema
        self.names = self.schema.names

    def require(self, names: list[str], role: str) -> None:
        """Refuse, before any row is read, columns the model needs that DATA lacks."""
        missing = [c for c in names if c not in self.names]
        if missing:
            more = "..." if len(self.names) > 8 else ""
            fix = ("name one of its columns" if role.startswith("--") else
                   "pass a file with every column the model was trained on")
            raise InputError(f"{self.what} lacks {role} column(s) {missing[:5]}: {fix} "
                             f"({self.names[:8]}{more})")

    def count_rows(self) -> int | None:
        """The row count from the files' metadata (Parquet, Arrow), or None where only a full
        read would tell (CSV): a progress bar's total, never a second pass."""
        if self.csv is not None:
            return None
        with reading(self.what):
            return self.dataset.count_rows()

    def batches(self, names: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
        """The columns ``names`` in record batches of at most ``batch_rows`` rows, each
        validated (and, for CSV, tidied) before any of its values is used."""
        stream = table_batches(self.dataset, names, batch_rows)
        while True:
            with reading(self.what):
                rb = next(stream, None)
                if rb is not None:
                    rb = validated(rb, self.what)
                    if self.csv is not None:
                        rb = self.csv.tidy(rb)
            if rb is None:
                return
            if rb.num_rows:
                yield rb


def partial_path(out: str) -> str:
    """Where the output is written until it is complete: a hidden file beside ``out`` (the
    same folder, so the final rename is atomic), named for this process."""
    p = Path(out)
    return str(p.with_name(f".{p.name}.{os.getpid()}{PARTIAL}"))


class AtomicOutput:
    """Record batches written to ``out`` (Parquet, or CSV when it ends in ``.csv``) through a
    temporary file renamed over ``out`` on :meth:`commit`; anything else (an error, Ctrl-C,
    SIGTERM) removes the temporary file and leaves ``out`` as it was.

    Use as a context manager around the writes; call :meth:`commit` as its last step.
    """

    def __init__(self, out: str) -> None:
        self.out = os.path.expanduser(out)
        self.tmp = partial_path(self.out)
        self.csv = self.out.lower().endswith(".csv")
        self.writer = None
        self.rows = 0
        self._held: list[pa.RecordBatch] = []
        self._held_rows = 0
        self._term = None

    def write(self, rb: pa.RecordBatch) -> None:
        """Add ``rb``'s rows; they reach the file in row groups of :data:`ROW_GROUP_ROWS`
        (scoring batches are small for the cache's sake, row groups large for readers')."""
        if self.writer is None:  # the file is there from the first batch on
            with self._writing():
                import pyarrow.csv as pacsv
                import pyarrow.parquet as pq

                self.writer = (pacsv.CSVWriter(self.tmp, rb.schema) if self.csv
                               # dictionaries only for the class labels: trying one on
                               # each float column doubled the write's time
                               else pq.ParquetWriter(self.tmp, rb.schema,
                                                     use_dictionary=["prediction"]))
        self._held.append(rb)
        self._held_rows += rb.num_rows
        self.rows += rb.num_rows
        if self._held_rows >= ROW_GROUP_ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._held:
            return
        table = pa.Table.from_batches(self._held).combine_chunks()
        self._held, self._held_rows = [], 0
        with self._writing():
            self.writer.write(table) if self.csv else self.writer.write_table(table)

    def commit(self) -> None:
        """Close the file, flush it to disk and rename it over ``out``."""
        self._flush()
        with self._writing():
            self.writer.close()
            self.writer = None
            with open(self.tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(self.tmp, self.out)

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """A failed write (a full disk, a file size limit, no permission) as one line."""
        try:
            yield
        except OSError as exc:  # pyarrow's IO errors are OSErrors too
            why = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:160]
            raise SisaError(f"cannot write {self.out} ({why}): check the disk's free space "
                            "and permissions; nothing was written there") from None

    def __enter__(self) -> AtomicOutput:
        if threading.current_thread() is threading.main_thread():
            # SIGTERM (a job scheduler's stop) cleans up as Ctrl-C does, instead of
            # killing the process with a partial file beside the output
            self._term = signal.signal(signal.SIGTERM, _interrupt)
        return self

    def __exit__(self, *exc) -> None:
        if self._term is not None:
            signal.signal(signal.SIGTERM, self._term)
        if self.writer is not None:  # not committed: a failure
            with contextlib.suppress(Exception):
                self.writer.close()
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.tmp)


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
