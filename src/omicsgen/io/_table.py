"""Delimited text tables (CSV/TSV, gzip too) parsed with pandas, with errors that name the cell.

A first streaming pass checks the structure (unique header, one value per column on every line),
which pandas would otherwise repair silently; pandas then parses the numbers in C. Only when a
cell is not a number is the table re-read as text, to say which cell.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ._open import DAMAGED, is_gzip, open_text

SEPARATORS = {"csv": ",", "tsv": "\t"}


def read_numeric_table(path: Path, fmt: str) -> tuple[np.ndarray, pd.Index, pd.Index]:
    """Values (float32, NaN where NA/NaN/empty), row labels, column labels."""
    sep = SEPARATORS[fmt]
    header = check_structure(path, sep, fmt)
    dtypes = {name: np.float32 for name in header[1:]}
    try:
        table = _read_csv(path, sep, dtype=dtypes)
    except ValueError:
        table = read_text_table(path, fmt)  # a cell is not a number: find it for the message
        return to_numeric(table, path), table.index, table.columns
    table.index = table.index.astype(str)
    values = table.to_numpy(dtype=np.float32)
    _require_finite(values, table, path)
    return values, table.index, table.columns


def read_text_table(path: Path, fmt: str) -> pd.DataFrame:
    """All cells as text, first column as the row index; NA, NaN and empty cells become NaN."""
    check_structure(path, SEPARATORS[fmt], fmt)
    table = _read_csv(path, SEPARATORS[fmt], dtype=str)
    table.index = table.index.astype(str)
    return table


def _read_csv(path: Path, sep: str, dtype) -> pd.DataFrame:
    try:
        return pd.read_csv(path, sep=sep, index_col=0, dtype=dtype, engine="c",
                           compression="gzip" if is_gzip(path) else None)
    except pd.errors.ParserError as err:
        raise InputError(path, f"rows of different lengths: {err}".rstrip(), hint="every row needs one value per column") from None
    except DAMAGED as err:
        raise InputError(path, f"the gzip file is damaged or truncated ({err})") from None


def check_structure(path: Path, sep: str, fmt: str) -> list[str]:
    """The header's fields, after checking the table is a rectangle with unique column names."""
    with open_text(path) as handle:
        first = handle.readline()
        if not first.strip():
            raise InputError(path, "the file is empty")
        header = next(csv.reader([first.rstrip("\r\n")], delimiter=sep))
        if len(header) == 1:
            other = "tab" if sep == "," else "comma"
            raise InputError(path, f"found a single column with the '{fmt}' delimiter",
                             hint=f"is the file {other}-separated? set 'format' in the sheet")
        require_unique(pd.Index(header[1:]), path, "column name")
        counts = [line.count(sep) for line in handle if line.strip()]
    if not counts:
        raise InputError(path, "the table has a header but no rows")
    _require_rectangular(np.array(counts), first.count(sep), path, quoted='"' in first)
    return header


def _require_rectangular(counts: np.ndarray, header_count: int, path: Path, quoted: bool) -> None:
    """A short row would be padded with NaN by pandas; here it is an error naming the line.

    R's write.table leaves the row-name column out of the header: every row one field longer.
    Quoted fields may hold the separator, so files with quoted headers are left to pandas.
    """
    if quoted:
        return
    expected = header_count + 1 if (counts == header_count + 1).all() else header_count
    wrong = np.flatnonzero(counts != expected)
    if wrong.size:
        line = int(wrong[0]) + 2  # blank lines are skipped by pandas too, so this is the data line
        raise InputError(path, f"rows of different lengths: {counts[wrong[0]] + 1} fields, the header has {header_count + 1}",
                         where=f"line {line}", hint="every row needs one value per column")


def to_numeric(table: pd.DataFrame, path: Path, first_data_line: int = 2) -> np.ndarray:
    """The table as float32; a cell that is text but not a number is an error naming it."""
    values = table.apply(pd.to_numeric, errors="coerce")
    bad = values.isna().to_numpy() & table.notna().to_numpy()
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(path, f"'{table.iat[row, col]}' is not a number",
                         where=f"line {row + first_data_line}, column '{table.columns[col]}'",
                         hint="leave the cell empty or write NA for a missing value")
    matrix = values.to_numpy(dtype=np.float32)
    _require_finite(matrix, table, path, first_data_line)
    return matrix


def _require_finite(matrix: np.ndarray, table: pd.DataFrame, path: Path, first_data_line: int = 2) -> None:
    infinite = np.argwhere(np.isinf(matrix))
    if infinite.size:
        row, col = (int(i) for i in infinite[0])
        raise InputError(path, "infinite value", where=f"line {row + first_data_line}, column '{table.columns[col]}'",
                         hint="write NA for a missing value")


def numeric_share(column: pd.Series) -> float:
    """Fraction of the non-empty cells of a column that parse as numbers."""
    present = column.dropna()
    if present.empty:
        return 1.0
    return float(pd.to_numeric(present, errors="coerce").notna().mean())


def require_unique(labels: pd.Index, path: Path, what: str) -> None:
    duplicated = labels[labels.duplicated()]
    if len(duplicated):
        raise InputError(path, f"duplicate {what} '{duplicated[0]}' ({len(duplicated)} duplicates in all)",
                         hint=f"{what}s must be unique")
