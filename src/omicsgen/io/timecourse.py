"""Expression time courses -> AnnData, one row a sample, ordered by series then time.

Two layouts are read:
- long: one row a sample, with `series` and `time` columns, genes the other columns;
- wide: the same table transposed, one column a sample, with rows named `series` and `time`
  and one row a gene (as expression tables from arrays often come).
Other text columns (rows, when wide), such as condition or sex, are kept as sample annotations.
A long table may come without sample names (pandas' `index=False`, R's `row.names = FALSE`): when
its first column is `series` or `time`, or holds values that repeat or numbers with fractions, it is data,
and the samples are numbered by row (recorded as a decision, as for expression tables).
"""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd

from ..errors import InputError
from ._table import TEXT_SHARE, first_column_is_data, numeric_shares, read_text_table, require_unique, to_numeric
from .expression import make_gene_names_unique, record_preamble, record_row_names, record_text_columns

TIMECOURSE_FORMATS = ("csv", "tsv")
REQUIRED = ("series", "time")


def read_timecourse(path: Path, fmt: str) -> ad.AnnData:
    table = read_text_table(path, fmt)
    not_data = table.attrs["preamble"], table.attrs["table_end"], table.attrs["empty_columns"]  # said on the page
    first_column, why = _unnamed_rows(table)
    if first_column is not None:
        table = table.reset_index()
        table.index = pd.RangeIndex(1, len(table) + 1).astype(str)
    wide = set(REQUIRED) <= set(table.index) and not set(REQUIRED) <= set(table.columns)
    samples = table.T if wide else table
    where = _locator(table, wide, preamble=not_data[0])
    require_unique(pd.Index([c for c in samples.columns if c in REQUIRED]), path, "column name")
    missing = [c for c in REQUIRED if c not in samples.columns]
    if missing:
        raise InputError(path, f"no column named {' or '.join(repr(c) for c in missing)}",
                         hint="a time course needs one row a sample with 'series' and 'time' columns "
                              "(or, transposed, rows named 'series' and 'time')")
    require_unique(samples.index, path, "sample name")
    obs = _annotations(samples, path, where)
    # Mostly-text columns are annotations; mostly-numeric ones are genes.
    shares = numeric_shares(samples)
    annotation = [c for c, share in zip(samples.columns, shares) if c not in REQUIRED and share < TEXT_SHARE]
    genes = samples.drop(columns=[*REQUIRED, *annotation])
    if genes.shape[1] == 0:
        raise InputError(path, "no gene columns besides the annotations")
    for column in annotation:
        obs[column] = samples[column].to_numpy()
    values = to_numeric(genes.T, path).T if wide else to_numeric(genes, path)
    adata = ad.AnnData(X=values, obs=obs)
    adata.var_names = genes.columns.astype(str)
    record_row_names(adata, len(table), [], first_column, why)
    record_preamble(adata, *not_data)
    make_gene_names_unique(adata)
    record_text_columns(adata, [str(c) for c in annotation], "sample")
    order = np.lexsort((adata.obs["time"].to_numpy(), adata.obs["series"].to_numpy()))
    return adata[order].copy()


def _unnamed_rows(table: pd.DataFrame) -> tuple[str | None, str]:
    """The first column's name when it is data rather than sample names (None otherwise), and how
    that was told: it is `series` or `time` (the long layout's own columns), or it holds values
    that repeat or numbers with fractions (`first_column_is_data`)."""
    name = table.index.name
    if name in REQUIRED and not set(REQUIRED) <= set(table.columns):
        return name, f"is the time course's '{name}'"
    return first_column_is_data(table.index), "holds values that repeat, or numbers with fractions"


def _annotations(samples: pd.DataFrame, path: Path, where) -> pd.DataFrame:
    times = pd.to_numeric(samples["time"], errors="coerce")
    if times.isna().any():
        row = int(np.flatnonzero(times.isna())[0])
        raise InputError(path, f"time '{samples['time'].iat[row]}' is not a number", where=where(row, "time"),
                         hint="give times as numbers in one unit (e.g. hours)")
    if samples["series"].isna().any():
        row = int(np.flatnonzero(samples["series"].isna())[0])
        raise InputError(path, "empty series", where=where(row, "series"))
    obs = pd.DataFrame({"series": samples["series"].astype(str), "time": times.astype(float)}, index=samples.index)
    duplicated = obs.duplicated(["series", "time"])
    if duplicated.any():
        row = int(np.flatnonzero(duplicated)[0])
        raise InputError(path, f"series '{obs['series'].iat[row]}' has two samples at time {obs['time'].iat[row]}",
                         where=where(row, "time"))
    return obs


def _locator(table: pd.DataFrame, wide: bool, preamble: int = 0):
    """Where sample `row`'s `field` stands in the file, for error messages (`preamble`: lines
    before the header)."""
    def where(row: int, field: str) -> str:
        if wide:
            return f"line {preamble + table.index.get_loc(field) + 2}, column '{table.columns[row]}'"
        return f"line {preamble + row + 2}, column '{field}'"
    return where
