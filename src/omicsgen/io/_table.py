"""Delimited text tables (CSV/TSV, gzip too) parsed with pandas, with errors that name the cell.

Tables come as spreadsheets, R and pandas write them: RFC 4180 quoting (a quoted field may hold
the separator, a doubled quote or a line break), a UTF-8 byte-order mark, Windows line endings,
and R's header without the row-name column; and as counting tools and GEO write them: metadata
lines before the header (featureCounts, GEO SOFT and series matrix files, QIIME), GEO's
end-of-table line, featureCounts' annotation columns. A first streaming pass checks the structure
(one value per column in every record), which pandas would otherwise repair silently; pandas then
parses the numbers in C. Only when a cell is not a number is the table re-read as text: columns
whose cells are mostly words (sex, class, a gene's description) are annotations, kept beside the
numbers; a word in a column of numbers is an error that names its cell.
"""

from __future__ import annotations

import csv
import io
import itertools
import logging
import re
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pandas as pd

from ..errors import InputError
from ._open import DAMAGED, is_gzip, open_text

log = logging.getLogger(__name__)

SEPARATORS = {"csv": ",", "tsv": "\t"}
WHITESPACE = r"\s+"  # runs of spaces or tabs: R's write.table() default, aligned text tables
QUOTE = '"'
# A column is text (an annotation) when fewer than half of its non-empty cells are numbers;
# otherwise numbers, where a word is a typo to report.
TEXT_SHARE = 0.5
# Lines tools write before a table's header: featureCounts' '# Program:...' line, GEO's SOFT and
# series matrix metadata ('^' and '!' lines, '#' column descriptions). They are skipped and counted.
PREAMBLE = ("#", "!", "^")
# GEO closes its table with '!dataset_table_end' (a GDS SOFT file) or '!series_matrix_table_end'.
TABLE_END = re.compile(r"!\w*table_end\b", re.IGNORECASE)
# featureCounts writes five annotation columns after the gene id. Length is a number but not a sample.
FEATURECOUNTS = ["chr", "start", "end", "strand", "length"]


class Structure(NamedTuple):
    header: list[str]  # the header's fields, unquoted (V1..Vn, as R names them, when the file has no header)
    lines: np.ndarray  # the file line on which each data record starts (blank lines and line breaks inside quotes counted)
    headerless: bool  # the first line is data (`first_line_is_data`)
    sep: str  # the format's delimiter, or WHITESPACE when the file is separated by spaces
    preamble: int = 0  # lines before the header (PREAMBLE), skipped
    table_end: int | None = None  # the line of GEO's end-of-table marker, where reading stops


class Table(NamedTuple):
    values: np.ndarray  # float32, NaN where NA/NaN/empty
    rows: pd.Index  # row labels (text)
    columns: pd.Index
    unnamed: list[int]  # file lines of rows whose name was empty or NA, now named by that line
    data_first_column: str | None  # the first column's name when it held data, not row names (rows numbered 1..n)
    annotations: pd.DataFrame | None = None  # the text columns (mostly words), one row a row of `values`
    headerless: bool = False  # no header line in the file: columns named V1..Vn
    preamble: int = 0  # lines skipped before the header
    table_end: int | None = None  # the line of GEO's end-of-table marker
    tool_columns: tuple = ()  # annotation columns of a known tool's layout (featureCounts'), numbers or not
    empty_columns: int = 0  # columns without a name or a value (trailing delimiters), left out
    lines: np.ndarray | None = None  # the file line of each row, for errors that name one


def read_numeric_table(path: Path, fmt: str) -> Table:
    """The table's numbers and labels; the first column holds the row names unless it is data.
    Text columns, and featureCounts' annotation columns, come back apart, as `annotations`."""
    structure = check_structure(path, SEPARATORS[fmt], fmt)
    tool_columns = featurecounts_columns(structure.header)
    dtypes = {name: str if name in tool_columns else np.float32 for name in structure.header[1:]}
    try:
        table = _read_csv(path, dtypes, structure)
        empty = table.attrs["empty_columns"]
        table, first = _first_column_as_data(table)
        annotations, table = table.loc[:, tool_columns], table.drop(columns=tool_columns)
        values = table.to_numpy(dtype=np.float32)
    except ValueError:  # a cell is not a number: text columns, or a word to report
        table = read_text_table(path, fmt, structure)
        empty = table.attrs["empty_columns"]
        table, first = _first_column_as_data(table)
        text = (numeric_shares(table) < TEXT_SHARE) | table.columns.isin(tool_columns)
        annotations, table = table.loc[:, text], table.loc[:, ~text]
        values = to_numeric(table, path, structure.lines)
    else:
        _require_finite(values, table, path, structure.lines)
    rows, unnamed = _name_missing(table.index, structure.lines)
    return Table(values, rows, table.columns, unnamed, first, annotations if annotations.shape[1] else None,
                 structure.headerless, structure.preamble, structure.table_end, tuple(tool_columns), empty,
                 structure.lines)


def featurecounts_columns(header: list[str]) -> list[str]:
    """featureCounts' annotation columns (Chr, Start, End, Strand, Length after Geneid) when the
    header is laid out as it writes it, else []."""
    return header[1:6] if [name.lower() for name in header[1:6]] == FEATURECOUNTS else []


def _first_column_as_data(table: pd.DataFrame) -> tuple[pd.DataFrame, str | None]:
    """The table with its first column back among the data (rows numbered 1..n) when that column
    holds data rather than row names (pandas' to_csv(index=False)), and that column's name."""
    first = first_column_is_data(table.index)
    if first is None:
        return table, None
    table = table.reset_index()
    table.index = pd.RangeIndex(1, len(table) + 1)
    return table, first


def first_column_is_data(index: pd.Index) -> str | None:
    """The first column's name when it holds data (pandas wrote the table with index=False), as
    row names are unique: numbers with repeats, gaps or fractions (a measurement), or words of
    which each comes back on average twice or more (a category: sex, species). Unique whole
    numbers stay row names (R's and pandas' row numbers), and so do words that rarely repeat
    (repeated gene symbols are reported as such)."""
    name = str(index.name) if index.name is not None else ""
    if index.dtype == bool:
        return None
    if not pd.api.types.is_numeric_dtype(index):  # a table read as text
        numbers = pd.to_numeric(pd.Series(index), errors="coerce")
        if (numbers.isna() & pd.Series(index).notna()).any():  # words
            return name if index.duplicated().any() and index.nunique() <= len(index) / 2 else None
        index = pd.Index(numbers, name=index.name)
    values = index.to_numpy(dtype=float)
    repeated = index.duplicated().any() or np.isnan(values).any()
    return name if repeated or (values != np.round(values)).any() else None


def _name_missing(index: pd.Index, lines: np.ndarray) -> tuple[pd.Index, list[int]]:
    """Rows without a name (R writes NA for a missing row name) are named by their line, so
    they are kept and can still be found in the file."""
    labels = index.astype(str)
    missing = np.flatnonzero(pd.isna(index) | labels.str.strip().isin(["", "nan"]))
    if not missing.size:
        return labels, []
    unnamed = [_line(lines, int(i)) for i in missing]
    names = labels.to_numpy(dtype=object)
    names[missing] = [f"unnamed (line {line})" for line in unnamed]
    return pd.Index(names, name=index.name), unnamed


def read_text_table(path: Path, fmt: str, structure: Structure | None = None) -> pd.DataFrame:
    """All cells as text, first column as the row index; NA, NaN and empty cells become NaN.
    `structure`: the file's, when `check_structure` has already read it."""
    structure = structure or check_structure(path, SEPARATORS[fmt], fmt)
    table = _read_csv(path, str, structure)
    table.index = table.index.astype(str)
    table.attrs.update(preamble=structure.preamble, table_end=structure.table_end)  # for the page
    return table


def _read_csv(path: Path, dtype, structure: Structure) -> pd.DataFrame:
    """The table as pandas reads it, with the header's own column names: pandas renames a repeated
    name ('g1' -> 'g1.1'); the reader decides what a repeat means on each axis (a gene's is made
    unique, `expression.make_gene_names_unique`; a sample's is an error)."""
    table = _parse_csv(path, dtype, structure)
    names = structure.header[len(structure.header) - table.shape[1]:]  # R's header is one field short
    if len(set(names)) < len(names):
        table.columns = pd.Index(names)
    # A column without a name or a value is a trailing delimiter (spreadsheets end every line with one)
    empty = [i for i, name in enumerate(names) if not name.strip() and table.iloc[:, i].isna().all()]
    if empty:
        table = table.iloc[:, [i for i in range(table.shape[1]) if i not in empty]]
    table.attrs["empty_columns"] = len(empty)
    return table


def _parse_csv(path: Path, dtype, structure: Structure) -> pd.DataFrame:
    # pandas' C parser follows RFC 4180 quoting and drops a UTF-8 byte-order mark itself
    names = {"header": None, "names": structure.header} if structure.headerless else {}
    if structure.table_end is not None:
        names["nrows"] = len(structure.lines)
    try:
        if structure.preamble:  # pandas reads from the header on: the preamble's quotes are not its business
            with open_text(path) as handle:
                for _ in range(structure.preamble):
                    handle.readline()
                return pd.read_csv(handle, sep=structure.sep, index_col=0, dtype=dtype, engine="c", quotechar=QUOTE,
                                   **names)
        return pd.read_csv(path, sep=structure.sep, index_col=0, dtype=dtype, engine="c", quotechar=QUOTE,
                           compression="gzip" if is_gzip(path) else None, **names)
    except pd.errors.ParserError as err:
        raise InputError(path, f"rows of different lengths: {err}".rstrip(), hint="every row needs one value per column") from None
    except DAMAGED as err:
        raise InputError(path, f"the gzip file is damaged or truncated ({err})") from None


def check_structure(path: Path, sep: str, fmt: str) -> Structure:
    """The header's fields and where each record starts, after checking that the table is a
    rectangle; lines before the header (PREAMBLE) and after GEO's end-of-table line are left out."""
    with open_text(path) as handle:
        preamble, header_text, read_ahead = _skip_preamble(handle, sep)
        if not header_text.strip():
            raise InputError(path, "the file is empty" if not preamble else
                             f"no table after the {preamble} lines that start with {', '.join(PREAMBLE)} (comments, metadata)")
        header = _fields(header_text, sep)
        if len(header) == 1 and len(_fields(header_text, WHITESPACE)) > 1 and not {"\t", ";"} & set(header_text):
            sep, header = WHITESPACE, _fields(header_text, WHITESPACE)
            log.info("%s: no '%s' delimiter in its first line: read as separated by spaces (as R's write.table "
                     "writes)", path.name, fmt)
        if len(header) == 1:
            other = "tab" if sep == "," else "comma"
            hint = f"is the file {other}-separated? set 'format' in the sheet"
            if ";" in header_text:  # what spreadsheets write as CSV where the decimal mark is a comma
                hint = "its fields look separated by ';', as spreadsheets write CSV where the decimal mark " \
                       "is a comma: save it as tab-separated text (decimal points) and set format tsv"
            raise InputError(path, f"found a single column with the '{fmt}' delimiter", hint=hint)
        headerless = first_line_is_data(header)
        if headerless:
            header = [f"V{j}" for j in range(1, len(header) + 1)]  # as R names a headerless table's columns
        first_data_line = preamble + max(1, header_text.count("\n")) + 1
        first_record = [(preamble + 1, len(header), 1)] if headerless else []
        records = _records(itertools.chain(read_ahead, handle), sep, first_data_line)
        flat = itertools.chain.from_iterable(itertools.chain(first_record, records))
        lines, fields, spans = np.fromiter(flat, dtype=np.int64).reshape(-1, 3).T
    lines, fields, spans, table_end = _stop_at_table_end(lines, fields, spans, path)
    if not len(lines):
        raise InputError(path, "the table has a header but no rows")
    if (spans < 0).any() or not _is_rectangular(fields, len(header)):
        # Quote counting is exact for RFC 4180 files; a stray quote inside an unquoted field
        # (5"UTR) is literal to pandas and the csv module, so let the csv module judge before failing.
        if sep != WHITESPACE:  # whitespace records were split exactly: no quoted field spans lines
            lines, fields, spans = _csv_records(path, sep, headerless, preamble, table_end)
        _require_rectangular(lines, fields, spans, len(header), path)
    return Structure(header, lines, headerless, sep, preamble, table_end)


def _skip_preamble(handle, sep: str) -> tuple[int, str, list[str]]:
    """(lines before the header, the header, lines read past it). Leading lines that start with
    PREAMBLE (and blank lines among them) are skipped; the last of them is the header when it starts with '#' and has as many
    fields as the line after it (QIIME's '#OTU ID' header below '# Constructed from biom file')."""
    skipped = []
    line = handle.readline()
    while line.startswith(PREAMBLE) or (skipped and line and not line.strip()):  # GEO leaves blank lines between
        skipped.append(line)
        line = handle.readline()
    if skipped and skipped[-1].startswith("#") and line.strip():
        named = len(_fields(skipped[-1], sep))
        if named > 1 and named in (len(_fields(line, sep)), len(_fields(line, sep)) - 1):
            return len(skipped) - 1, skipped[-1], [line]
    return len(skipped), _header_record(handle, line), []


def _stop_at_table_end(lines, fields, spans, path: Path):
    """The records before GEO's end-of-table marker (`_records` gives it 0 fields) and its line;
    anything but blank lines after it is a second table, which is an error."""
    ends = np.flatnonzero(fields == 0)
    if not ends.size:
        return lines, fields, spans, None
    end = int(ends[0])
    if end < len(lines) - 1:
        raise InputError(path, f"a second table follows the end of the first (line {lines[end]})",
                         where=f"line {lines[end + 1]}",
                         hint="a GEO family SOFT file holds the platform's table and one a sample: give the series "
                              "matrix (GSE..._series_matrix.txt.gz) or the GDS file (GDS..._full.soft.gz)")
    return lines[:end], fields[:end], spans[:end], int(lines[end])


def _fields(line: str, sep: str) -> list[str]:
    """A line's fields, unquoted; under WHITESPACE a run of blanks is one delimiter."""
    if sep == WHITESPACE:
        return next(csv.reader([line.replace("\t", " ").strip()], delimiter=" ", skipinitialspace=True), [""])
    return next(csv.reader(io.StringIO(line), delimiter=sep))


def first_line_is_data(fields: list[str]) -> bool:
    """A first line of numbers only, some repeated or with fractions, is a row of data: the file
    has no header (numpy.savetxt, R's write.table(col.names = FALSE)). Unique whole numbers stay
    column names (pandas writes its default column labels 0..n-1 so)."""
    try:
        values = np.array([float(field) for field in fields])
    except ValueError:
        return False
    return len(set(fields)) < len(fields) or bool((values != np.round(values)).any()) or bool(np.isnan(values).any())


def _header_record(handle, text: str) -> str:
    """The header line `text`, and the following lines while a quoted header field is still open."""
    while text.count(QUOTE) % 2:
        more = handle.readline()
        if not more:
            break
        text += more
    return text


def _records(lines, sep: str, first_line: int):
    """(first line, number of fields, lines spanned) of each non-blank record, numbered from
    `first_line`; -1 lines spanned when a quoted field is still open at the end of the file, 0
    fields for GEO's end-of-table marker.

    Separators are counted per line in C (`str.count`) unless the line holds a quote. Then the
    line is split at its quotes: segments alternate outside / inside a quoted field (a doubled
    quote "" leaves an empty outside segment between two inside ones), so only every other
    segment's separators count, and an odd number of quotes carries the open field to the next line.
    """
    if sep == WHITESPACE:  # no quoted field spans lines here
        for number, line in enumerate(lines, start=first_line):
            if line.startswith("!") and TABLE_END.match(line):
                yield number, 0, 1
            elif line.strip():
                yield number, len(line.split() if QUOTE not in line else _fields(line, sep)), 1
        return
    pending = None  # (first line, separators so far) of a record whose quoted field is open
    for number, line in enumerate(lines, start=first_line):
        if pending is None:
            if line.startswith("!") and TABLE_END.match(line):
                yield number, 0, 1
                continue
            if QUOTE not in line:
                if line.strip() or sep in line:  # pandas skips lines of blanks, but not of tabs in a TSV
                    yield number, line.count(sep) + 1, 1
                continue
            start, separators, inside = number, 0, False
        else:
            (start, separators), inside = pending, True
        segments = line.split(QUOTE)
        separators += sum(segment.count(sep) for segment in segments[int(inside) :: 2])
        if (len(segments) - 1) % 2:
            inside = not inside
        pending = (start, separators) if inside else None
        if not inside:
            yield start, separators + 1, number - start + 1
    if pending is not None:
        yield pending[0], pending[1] + 1, -1


def _csv_records(path: Path, sep: str, headerless: bool, preamble: int = 0,
                 table_end: int | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The same as `_records`, parsed by the csv module (slow; used only to confirm a fault)."""
    starts, fields, spans = [], [], []
    consumed = preamble
    with open_text(path) as handle:
        for _ in range(preamble):
            handle.readline()
        reader = csv.reader(handle, delimiter=sep)
        try:
            if not headerless:
                next(reader)  # the header
                consumed = preamble + reader.line_num
            for row in reader:
                if consumed + 1 == table_end:
                    break
                if row and not (len(row) == 1 and not row[0].strip()):
                    starts.append(consumed + 1)
                    fields.append(len(row))
                    spans.append(preamble + reader.line_num - consumed)
                consumed = preamble + reader.line_num
        except csv.Error as err:  # a quoted field that runs on for more than csv.field_size_limit()
            raise InputError(path, f"a quoted field never ends ({err})", where=f"line {consumed + 1}",
                             hint='is a quote (") left open?') from None
    return np.array(starts, dtype=np.int64), np.array(fields, dtype=np.int64), np.array(spans, dtype=np.int64)


def _is_rectangular(fields: np.ndarray, header_fields: int) -> bool:
    # R's write.table leaves the row-name column out of the header: every record one field longer.
    return bool((fields == header_fields).all() or (fields == header_fields + 1).all())


def _require_rectangular(lines: np.ndarray, fields: np.ndarray, spans: np.ndarray, header_fields: int, path: Path) -> None:
    """A short row would be padded with NaN by pandas; here it is an error naming the line."""
    if _is_rectangular(fields, header_fields):
        return
    r_style = (fields == header_fields + 1).sum() > (fields == header_fields).sum()
    expected = header_fields + 1 if r_style else header_fields
    wrong = int(np.flatnonzero(fields != expected)[0])
    count = int(fields[wrong])
    has = f"the other rows have {expected} (the header names one column fewer, as R writes it)" if r_style \
        else f"the header has {header_fields}"
    hint = "every row needs one value per column"
    if spans[wrong] > 1:
        hint = (f"the record runs on to line {lines[wrong] + spans[wrong] - 1} inside a quoted field: "
                f"is a quote (\") left open? {hint}")
    raise InputError(path, f"rows of different lengths: {count} field{'s' * (count != 1)}, {has}",
                     where=f"line {lines[wrong]}", hint=hint)


def to_numeric(table: pd.DataFrame, path: Path, lines: np.ndarray | None = None) -> np.ndarray:
    """The table as float32; a cell that is text but not a number is an error naming it.

    `lines` gives the file line of each row (from `check_structure`); without it, row i is line i + 2."""
    values = _parse_cells(table)
    bad = np.isnan(values) & table.notna().to_numpy(dtype=bool)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise InputError(path, f"'{table.iat[row, col]}' is not a number",
                         where=f"line {_line(lines, row)}, column '{table.columns[col]}'",
                         hint="leave the cell empty or write NA for a missing value")
    matrix = values.astype(np.float32)
    _require_finite(matrix, table, path, lines)
    return matrix


def _parse_cells(table: pd.DataFrame) -> np.ndarray:
    """Every cell as a number (float64), NaN where it is empty or not a number. One parse of all
    cells: column by column costs ~1 s CPU on a 250 x 12,000 table (the time course)."""
    cells = table.to_numpy(dtype=object)
    parsed = pd.to_numeric(pd.Series(cells.ravel()), errors="coerce")
    return parsed.to_numpy(dtype=np.float64, na_value=np.nan).reshape(cells.shape)


def _line(lines: np.ndarray | None, row: int) -> int:
    return int(lines[row]) if lines is not None and row < len(lines) else row + 2


def _require_finite(matrix: np.ndarray, table: pd.DataFrame, path: Path, lines: np.ndarray | None = None) -> None:
    infinite = np.argwhere(np.isinf(matrix))
    if infinite.size:
        row, col = (int(i) for i in infinite[0])
        raise InputError(path, "infinite value", where=f"line {_line(lines, row)}, column '{table.columns[col]}'",
                         hint="write NA for a missing value")


def numeric_shares(table: pd.DataFrame) -> np.ndarray:
    """Per column, the fraction of its non-empty cells that parse as numbers (1 when all are empty)."""
    present = table.notna().to_numpy()
    parsed = ~np.isnan(_parse_cells(table)) & present
    counts = present.sum(axis=0)
    return np.divide(parsed.sum(axis=0), counts, out=np.ones(len(counts)), where=counts > 0)


def require_unique(labels: pd.Index, path: Path, what: str) -> None:
    duplicated = labels[labels.duplicated()]
    if len(duplicated):
        raise InputError(path, f"duplicate {what} '{duplicated[0]}' ({len(duplicated)} duplicates in all)",
                         hint=f"{what}s must be unique")
