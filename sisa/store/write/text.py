"""Reading tables as people keep them: CSV text options and pandas DataFrames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.dataset as ds

from ...errors import InputError
from ..format.arrow_checks import reading


@dataclass(frozen=True)
class CsvOptions:
    """How CSV text is read (for :class:`~sisa.store.write.options.IngestOptions` ``csv``).

    Parameters
    ----------
    na_values : sequence of str, default=()
        Cells equal to one of these are missing (``"?"``, ``"NA"``...).
    trim_whitespace : bool, default=False
        Headers and string values lose surrounding blanks (``a, b``).
    """

    na_values: tuple[str, ...] = ()
    trim_whitespace: bool = False

    def __post_init__(self) -> None:
        na = self.na_values
        if not isinstance(na, (list, tuple)) or not all(isinstance(v, str) for v in na):
            raise InputError(f"na_values must be a list of strings, got {na!r}: pass a list, "
                             "like ['?', 'NA']")
        if not isinstance(self.trim_whitespace, bool):
            raise InputError(f"trim_whitespace must be True or False, got "
                             f"{self.trim_whitespace!r}")
        object.__setattr__(self, "na_values", tuple(na))  # frozen: normalised once

    @classmethod
    def of(cls, na_values=None, trim_whitespace: bool = False) -> CsvOptions | None:
        if isinstance(na_values, str):
            na_values = [na_values]
        if not na_values and not trim_whitespace:
            return None
        return cls(tuple(str(v) for v in na_values or ()), bool(trim_whitespace))

    def file_format(self, path: Path) -> ds.CsvFileFormat:
        nulls = set(pcsv.ConvertOptions().null_values) | set(self.na_values)  # and pyarrow's
        if self.trim_whitespace:  # numeric columns are typed while parsing: match " ?" too
            nulls |= {f" {v.strip()}" for v in self.na_values} | {v.strip() for v in
                                                                    self.na_values}
        read = None
        if self.trim_whitespace:
            first = path if path.is_file() else min(p for p in path.rglob("*.csv"))
            with reading(first):
                names = pcsv.open_csv(first).schema.names
            read = pcsv.ReadOptions(column_names=[n.strip() for n in names], skip_rows=1)
        return ds.CsvFileFormat(read_options=read, convert_options=pcsv.ConvertOptions(
            null_values=sorted(nulls), strings_can_be_null=True))

    def tidy(self, rb: pa.RecordBatch) -> pa.RecordBatch:
        """String values trimmed and matched against ``na_values`` (after the parse)."""
        cols = []
        for c in rb.columns:
            if pa.types.is_string(c.type) or pa.types.is_large_string(c.type):
                if self.trim_whitespace:
                    c = pc.utf8_trim_whitespace(c)
                if self.na_values:
                    na = pa.array([v.strip() for v in self.na_values], c.type)
                    c = pc.if_else(pc.is_in(c, value_set=na), pa.scalar(None, c.type), c)
            cols.append(c)
        return pa.RecordBatch.from_arrays(cols, schema=pa.schema(
            [f.with_type(c.type) for f, c in zip(rb.schema, cols, strict=True)]))


def from_pandas(df) -> pa.Table:
    """A pandas DataFrame as Arrow; a column Arrow cannot type (mixed numbers and
    strings, arbitrary objects) is one line naming it."""
    try:
        return pa.Table.from_pandas(df, preserve_index=False)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as exc:
        why = " ".join(str(exc).split())[:160]
        raise InputError(f"cannot convert the DataFrame to Arrow ({why}): give each column one "
                         "type (numbers, strings, booleans or dates)") from None
