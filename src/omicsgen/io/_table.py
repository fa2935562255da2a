"""Delimited text tables (CSV/TSV, gzip too) parsed with pandas, with errors that name the cell."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ._open import read_text

SEPARATORS = {"csv": ",", "tsv": "\t"}


def read_table(path: Path, fmt: str) -> pd.DataFrame:
    """All cells as text, first column as the row index; NA, NaN and empty cells become NaN."""
    sep = SEPARATORS[fmt]
    handle = read_text(path)
    if not handle.getvalue().strip():
        raise InputError(path, "the file is empty")
    _require_unique_header(handle, sep, path)
    _require_rectangular(handle.getvalue(), sep, path)
    try:
        table = pd.read_csv(handle, sep=sep, index_col=0, dtype=str, engine="c")
    except pd.errors.ParserError as err:
        raise InputError(path, f"rows of different lengths: {err}".rstrip(),
                         hint="every row needs one value per column") from None
    if table.shape[1] == 0:
        other = "tab" if sep == "," else "comma"
        raise InputError(path, f"found a single column with the '{fmt}' delimiter",
                         hint=f"is the file {other}-separated? set 'format' in the sheet")
    if table.shape[0] == 0:
        raise InputError(path, "the table has a header but no rows")
    table.index = table.index.astype(str)
    return table


def _require_unique_header(handle, sep: str, path: Path) -> None:
    """pandas renames a repeated column to 'name.1'; a repeated gene must be an error instead."""
    header = next(csv.reader([handle.getvalue().split("\n", 1)[0].rstrip("\r")], delimiter=sep))
    require_unique(pd.Index(header[1:]), path, "column name")


def _require_rectangular(text: str, sep: str, path: Path) -> None:
    """pandas fills a short row with NaN silently; a row with a value too few is an error here.

    Quoted fields may hold the separator, so files with quotes are left to pandas' own check.
    """
    if '"' in text:
        return
    lines = text.rstrip("\n").split("\n")
    counts = np.fromiter((line.count(sep) for line in lines), dtype=np.int64, count=len(lines))
    blank = np.fromiter((not line.strip() for line in lines), dtype=bool, count=len(lines))
    rows = counts[1:][~blank[1:]]
    # R's write.table leaves the row-name column out of the header: every row one field longer.
    expected = counts[0] + 1 if rows.size and (rows == counts[0] + 1).all() else counts[0]
    wrong = np.flatnonzero((counts != expected) & ~blank)
    wrong = wrong[wrong > 0]
    if wrong.size:
        number = int(wrong[0])
        raise InputError(path, f"rows of different lengths: {counts[number] + 1} fields, the header has {counts[0] + 1}",
                         where=f"line {number + 1}", hint="every row needs one value per column")


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
    infinite = np.argwhere(np.isinf(matrix))
    if infinite.size:
        row, col = (int(i) for i in infinite[0])
        raise InputError(path, "infinite value", where=f"line {row + first_data_line}, column '{table.columns[col]}'")
    return matrix


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
