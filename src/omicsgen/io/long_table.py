"""A long ("tidy") expression table -> the matrix it lists.

R's `pivot_longer`, pandas' `melt` and many databases write one row per (gene, sample) pair: two
columns of names and one of numbers. Read as a wide table, that is thousands of samples of a single
feature. It is recognised by its shape (exactly two text columns and one numeric column) and by what
a list of pairs must hold: each name on many rows, and most of the gene x sample grid present.
Which of the two name columns holds the samples is then decided from the names, as for any table
(`orientation`). A pair listed twice is an error that names both lines (replicates or a join gone
wrong: which value is meant is the user's call), unless the pairs repeat throughout, as two
annotations of each sample do (sex, treatment).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import InputError
from ._table import Table, _line

# Share of the name x name grid a long table lists at least: a table of two categorical columns
# (sex, treatment) and a measurement repeats its pairs or covers few of them.
MIN_GRID_SHARE = 0.5
# Share of the rows that may repeat an earlier pair in a table otherwise long: at most this many, it is
# a long table with a fault to report; more, and the pairs are annotations (sex, treatment) of samples.
MAX_REPEATED_SHARE = 0.1


def pivot_long(table: Table, path) -> tuple[Table, str, str] | None:
    """The matrix of a long table (pairs not listed are missing values) and the decision (what was
    read, and why), or None when `table` is not one. A long table that lists a pair twice raises
    InputError (`path` names the file)."""
    names = table.annotations
    if len(table.columns) != 1 or names is None or names.shape[1] != 2 or names.isna().any().any():
        return None
    first, second = (names.iloc[:, i].astype(str) for i in range(2))
    row_codes, row_names = pd.factorize(first)
    col_codes, col_names = pd.factorize(second)
    n = len(names)
    repeated = pd.MultiIndex.from_arrays([first, second]).duplicated()
    listed = (n - repeated.sum()) / (len(row_names) * len(col_names))
    repeats = 2 <= len(row_names) < n and 2 <= len(col_names) < n
    if not repeats or listed < MIN_GRID_SHARE or repeated.mean() > MAX_REPEATED_SHARE:
        return None
    if repeated.any():
        _refuse_repeated_pairs(names, first, second, repeated, table.lines, path)
    grid = np.full((len(row_names), len(col_names)), np.nan, dtype=np.float32)
    grid[row_codes, col_codes] = table.values[:, 0]
    absent = grid.size - n
    value = f"long: one row per pair of '{names.columns[0]}' and '{names.columns[1]}', pivoted into a matrix"
    why = (f"two columns of names ('{names.columns[0]}': {len(row_names):,} names, '{names.columns[1]}': "
           f"{len(col_names):,}) and one of numbers ('{table.columns[0]}'), every pair on one row; {n:,} rows give "
           f"{len(row_names):,} x {len(col_names):,} values"
           + (f", and the {absent:,} pairs not listed are missing values (NA), not zeros" if absent else ""))
    pivoted = table._replace(values=grid, rows=pd.Index(row_names, name=names.columns[0]),
                             columns=pd.Index(col_names, name=names.columns[1]), unnamed=[], data_first_column=None,
                             annotations=None, tool_columns=(), lines=None)
    return pivoted, value, why


def _refuse_repeated_pairs(names: pd.DataFrame, first: pd.Series, second: pd.Series, repeated: np.ndarray,
                           lines, path) -> None:
    again = int(np.flatnonzero(repeated)[0])
    earlier = int(np.flatnonzero((first == first.iloc[again]).to_numpy() & (second == second.iloc[again]).to_numpy())[0])
    pair = f"'{names.columns[0]}' {first.iloc[again]!r} and '{names.columns[1]}' {second.iloc[again]!r}"
    raise InputError(
        path, f"a long table (one row per pair of '{names.columns[0]}' and '{names.columns[1]}') lists a pair twice: "
        f"{pair} on line {_line(lines, earlier)} and again on line {_line(lines, again)} "
        f"({_rows(int(repeated.sum()))} an earlier pair)",
        hint="keep one row per pair: average or sum the replicates first, as your analysis means them; "
             "or write the table wide, one row a gene or a sample")


def _rows(n: int) -> str:
    return "1 row repeats" if n == 1 else f"{n:,} rows repeat"
