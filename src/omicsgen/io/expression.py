"""Expression matrices (CSV/TSV either orientation, h5ad, 10x HDF5 / Matrix Market, zarr) -> AnnData."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

from ..decisions import record_decision
from ..errors import InputError
from ..provenance import meta
from ._table import read_numeric_table, require_unique
from .geo import gds_value_type, geo_annotations, read_preamble
from .long_table import pivot_long
from .orientation import ORIENTATIONS, decide

EXPRESSION_FORMATS = ("csv", "tsv", "h5ad", "10x-h5", "10x-mtx", "zarr")
VALUES = ("auto", "counts", "estimated_counts", "intensities", "normalised")
VALUES_SETTING = "the sheet's 'values' column (counts, estimated_counts, intensities or normalised)"
# What `values` says of fractional values that may be estimated counts (Salmon, RSEM, kallisto).
ESTIMATED = "estimated counts (Salmon, RSEM, kallisto)? set values to 'estimated_counts' to round them as DESeq2 does"
# `values: auto` reads fractional, non-negative values as linear-scale intensities (MAS5, TPM, LFQ),
# which preprocess log2-transforms, by GEO2R's test for data not yet logged (its R script's `LogC`:
# 99th percentile above 100, or a range above 50 with a positive lower quartile), on tables of at
# least this many features: an expression matrix shares one scale across its features, a clinical
# table of a few variables (days, years, codes) does not.
LINEAR_MIN_FEATURES = 50
# Values the quantiles are taken over (every k-th): enough for percentiles, quick on a 10x matrix.
QUANTILE_SAMPLE = 1_000_000


def read_expression(path: Path, fmt: str, orientation: str = "auto", values: str = "auto",
                    matrix: str = "X") -> ad.AnnData:
    if matrix != "X" and fmt not in ("h5ad", "zarr"):
        raise InputError(path, f"matrix '{matrix}' asked of a {fmt} file, which holds one matrix",
                         hint="'matrix' chooses among the matrices of an h5ad or zarr file (X, raw, layers)")
    if fmt in ("csv", "tsv"):
        adata = _read_delimited(path, fmt, orientation)
    else:
        adata = choose_matrix(_read_container(path, fmt), matrix, path)
        make_gene_names_unique(adata)  # 10x symbols repeat across distinct gene ids; the ids stay in var["gene_ids"]
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(path, f"the matrix is empty ({adata.n_obs} samples x {adata.n_vars} genes)")
    adata.X = _as_float32(adata.X)
    _check_finite(adata, path)
    label_values(adata, values, path)
    return adata


def label_values(adata: ad.AnnData, values: str, path: Path) -> None:
    """Decide (or check) whether X holds counts, and record it: counts are log-normalised by
    preprocess and can take the NB/ZINB models; normalised values are used as given."""
    if values not in VALUES:
        raise InputError(path, f"unknown values '{values}'", hint=f"use one of {', '.join(VALUES)}")
    declared = meta(adata).pop("declared_value_type", None)
    scale, why = _input_scale(adata, values, path, declared)
    meta(adata)["input_scale"] = scale
    record_decision(adata, "values", scale, why, VALUES_SETTING)


def _input_scale(adata: ad.AnnData, values: str, path: Path, declared: str | None = None) -> tuple[str, str]:
    """Counts when declared (then checked) or when every value is a non-negative whole number;
    intensities when declared (checked: none negative) or when fractional, non-negative values pass
    GEO2R's test for un-logged data (a GDS file's `declared` value type decides in its place);
    normalised when declared or for other fractional values. Whole numbers with a negative one are
    neither for sure (centred data? a sign error?), so they stop with the cell named."""
    if values == "normalised":
        return "normalised", "set in the sheet"
    negative, fraction = first_offending(adata.X)
    if values == "intensities":
        if negative:
            _raise_not_counts(adata, path, negative, "declared intensities")
        return "intensities", "set in the sheet (checked: none negative); preprocess takes log2(x + 1)"
    if values == "estimated_counts":
        if negative:
            _raise_not_counts(adata, path, negative, "declared estimated counts")
        rounded = _round_counts(adata)
        return "counts", (f"set in the sheet (estimated counts: {rounded:,} values with a fraction rounded to whole "
                          "numbers, as DESeq2 rounds tximport's counts; checked: none negative)")
    if values == "counts":
        if negative or fraction:
            _raise_not_counts(adata, path, negative or fraction, "declared counts")
        return "counts", "set in the sheet (checked: every value is a whole number >= 0)"
    if fraction:
        row, col, value = fraction
        first = f"values with a fraction, the first {value:g} at sample '{adata.obs_names[row]}', feature '{adata.var_names[col]}'"
        estimated = f"; {ESTIMATED}" if _may_be_estimated(adata.X, negative) else ""
        linear = None if negative else _linear_scale(adata.X)
        if declared:  # it decides; what GEO2R's test said stays on the page beside it
            test = f", none negative; on a linear scale by GEO2R's test: {linear}" if linear else ""
            return _as_declared(declared, negative, first + test + estimated)
        if linear:
            return "intensities", (f"{first}, none negative; on a linear scale by GEO2R's test for values not yet "
                                   f"logged, over {adata.n_vars:,} features: {linear}. preprocess takes log2(x + 1); "
                                   f"set values to 'normalised' if they are on a log scale already{estimated}")
        return "normalised", first + estimated
    if negative:
        _raise_not_counts(adata, path, negative, "every value is a whole number, as counts are")
    if not _has_values(adata.X):
        return "normalised", "no values at all (every cell is missing)"
    return "counts", "every value is a whole number >= 0"


def _as_declared(declared: str, negative, values: str) -> tuple[str, str]:
    """The scale a GDS file's `!dataset_value_type` gives fractional values, in place of GEO2R's
    test: logged (transformed, a log ratio) values are used as given, `count` values (a linear
    scale) are intensities unless one is negative. `values` says what the values showed."""
    said = f"the GDS file declares !dataset_value_type = {declared}"
    if any(word in declared for word in ("log", "transformed", "ratio", "z-score")):
        return "normalised", f"{said}: on a log scale already, used as given (the values: {values})"
    if declared == "count" and not negative:
        return "intensities", (f"{said}, a linear scale: preprocess takes log2(x + 1); set values to "
                               f"'normalised' if they are logged already (the values: {values})")
    return "normalised", f"{values} ({said}, not read as a scale)"


def _may_be_estimated(matrix, negative) -> bool:
    """Fractional values that may be estimated counts: none negative, and zeros (genes no read
    reached), which intensities and normalised levels rarely hold."""
    if negative:
        return False
    return (matrix.nnz < matrix.shape[0] * matrix.shape[1]) if sp.issparse(matrix) else bool((matrix == 0).any())


def _linear_scale(matrix) -> str | None:
    """Why the values look un-logged by GEO2R's test, or None (few features: see LINEAR_MIN_FEATURES)."""
    if matrix.shape[1] < LINEAR_MIN_FEATURES:
        return None
    low, q25, q99, high = _quantiles(matrix, (0.0, 0.25, 0.99, 1.0))
    if q99 > 100:
        return f"the 99th percentile is {q99:.4g}, above 100"
    if high - low > 50 and q25 > 0:
        return f"the values span {low:.4g}-{high:.4g}, more than 50, and the lower quartile {q25:.4g} is above 0"
    return None


def _quantiles(matrix, qs: tuple[float, ...]) -> np.ndarray:
    """Quantiles of the non-missing values (a sparse matrix's unstored zeros included), from
    every k-th value when there are more than QUANTILE_SAMPLE; 0 and 1 are the exact min and max."""
    if sp.issparse(matrix):
        stored = matrix.data[~np.isnan(matrix.data)]
        n_zeros = matrix.shape[0] * matrix.shape[1] - matrix.nnz
        every = max(1, (n_zeros + len(stored)) // QUANTILE_SAMPLE)
        sample = np.concatenate([stored[::every], np.zeros(n_zeros // every, dtype=stored.dtype)])
        low = min(stored.min(initial=np.inf), 0.0 if n_zeros else np.inf)
        high = max(stored.max(initial=-np.inf), 0.0 if n_zeros else -np.inf)
    else:
        flat = matrix.reshape(-1)
        sample = flat[:: max(1, flat.size // QUANTILE_SAMPLE)]
        sample = sample[~np.isnan(sample)]
        low, high = np.nanmin(matrix), np.nanmax(matrix)
    inner = np.quantile(sample, qs) if len(sample) else np.zeros(len(qs))
    return np.array([low if q == 0 else high if q == 1 else value for q, value in zip(qs, inner)], dtype=np.float64)


def _round_counts(adata: ad.AnnData) -> int:
    """X rounded to whole numbers in place (NaN stays missing); the number of values changed."""
    values = adata.X.data if sp.issparse(adata.X) else adata.X
    with np.errstate(invalid="ignore"):
        changed = int(((values != np.round(values)) & ~np.isnan(values)).sum())
    np.round(values, out=values)
    if sp.issparse(adata.X):
        adata.X.eliminate_zeros()
    return changed


def _raise_not_counts(adata: ad.AnnData, path: Path, cell: tuple[int, int, float], what: str):
    row, col, value = cell
    problem = "negative" if value < 0 else "not a whole number"
    hint = ("set values to 'normalised' in the sheet if the data are centred (z-scores, log ratios, delta Ct); "
            "counts cannot be negative" if value < 0 else
            f"set values to 'normalised' in the sheet if the data are not raw counts; {ESTIMATED}")
    raise InputError(path, f"{what}, but {value:g} is {problem}",
                     where=f"sample '{adata.obs_names[row]}', feature '{adata.var_names[col]}'", hint=hint)


def first_offending(matrix, block: int = 4096) -> tuple[tuple | None, tuple | None]:
    """The first negative and the first fractional value (row-major), as (row, column, value),
    or None each. NaN is a missing value, neither. Dense matrices are scanned a block of rows at
    a time, so no matrix-sized temporary is made."""
    if sp.issparse(matrix):
        csr = matrix.tocsr()
        csr.sort_indices()
        with np.errstate(invalid="ignore"):
            masks = (csr.data < 0, (csr.data != np.round(csr.data)) & ~np.isnan(csr.data))
        return tuple(_first_stored(csr, mask) for mask in masks)
    negative = fraction = None
    for start in range(0, matrix.shape[0], block):
        rows = matrix[start : start + block]
        with np.errstate(invalid="ignore"):
            negative = negative or _first_dense(rows < 0, rows, start)
            fraction = fraction or _first_dense((rows != np.round(rows)) & ~np.isnan(rows), rows, start)
        if negative and fraction:
            break
    return negative, fraction


def _first_dense(mask: np.ndarray, rows: np.ndarray, start: int) -> tuple | None:
    if not mask.any():
        return None
    row, col = divmod(int(np.argmax(mask)), rows.shape[1])
    return row + start, col, float(rows[row, col])


def _first_stored(csr: sp.csr_matrix, mask: np.ndarray) -> tuple | None:
    if not mask.any():
        return None
    i = int(np.argmax(mask))
    row = int(np.searchsorted(csr.indptr, i, side="right")) - 1
    return row, int(csr.indices[i]), float(csr.data[i])


def _has_values(matrix) -> bool:
    if sp.issparse(matrix):
        return matrix.shape[0] * matrix.shape[1] > 0
    return bool((~np.isnan(matrix)).any())


def _read_delimited(path: Path, fmt: str, orientation: str) -> ad.AnnData:
    if orientation not in ORIENTATIONS:
        raise InputError(path, f"unknown orientation '{orientation}'", hint=f"use one of {', '.join(ORIENTATIONS)}")
    table = read_numeric_table(path, fmt)
    _refuse_one_sample_quantification(table.columns, path)
    long = pivot_long(table, path)
    if long:
        table = long[0]
    if not len(table.columns):
        words = [] if table.annotations is None else table.annotations.columns
        raise InputError(path, f"no column of numbers: every column is mostly words ({_names(words)})",
                         hint="an expression table holds one number a cell; NA or an empty cell is a missing value")
    if orientation == "auto" and table.headerless:
        genes_as_rows, why = False, ("the file has no header line, so no names tell the axes apart: one row a "
                                     "sample, as a matrix without names is laid out (numpy.savetxt, scikit-learn)")
    elif orientation == "auto":
        genes_as_rows, why = decide(table.rows, table.columns, path)
    else:
        genes_as_rows, why = orientation == "genes_as_rows", "set in the sheet"
    matrix = table.values.T if genes_as_rows else table.values
    samples, genes = (table.columns, table.rows) if genes_as_rows else (table.rows, table.columns)
    require_unique(samples, path, "sample name")
    adata = ad.AnnData(X=matrix, obs=pd.DataFrame(index=samples.astype(str)), var=pd.DataFrame(index=genes.astype(str)))
    meta(adata)["orientation"] = "genes_as_rows" if genes_as_rows else "samples_as_rows"
    record_decision(adata, "orientation", meta(adata)["orientation"], why,
                    "the sheet's 'orientation' column (samples_as_rows or genes_as_rows)")
    if long:
        record_decision(adata, "layout", *long[1:], "none: write the table wide (one row a gene or a sample) "
                        "to have it read as it stands")
    record_row_names(adata, len(table.rows), table.unnamed, table.data_first_column)
    record_preamble(adata, table.preamble, table.table_end, table.empty_columns)
    if table.headerless:
        record_decision(adata, "column names", "none in the file: line 1 is data, columns named by position "
                        "(V1, V2, ... as R names them)", "line 1 holds only numbers, some repeated or with fractions",
                        "put a header line of column names first")
    _keep_annotations(adata, table.annotations, genes_as_rows, table.tool_columns)
    if table.preamble:
        preamble = read_preamble(path, table.preamble)
        _keep_geo_annotations(adata, geo_annotations(preamble))
        # label_values reads it (and removes it): the scale the file declares, for values: auto
        meta(adata)["declared_value_type"] = gds_value_type(preamble)
    adata = _drop_read_counters(adata, _read_counters(adata.var_names))
    make_gene_names_unique(adata)
    return adata


# Quantifiers' per-sample outputs: (tool, the columns that give it away, its estimated-counts column).
# Read as a matrix, their columns (lengths, TPM, counts) would be taken for samples.
ONE_SAMPLE_LAYOUTS = (("Salmon quant.sf", {"effectivelength", "numreads"}, "NumReads"),
                      ("kallisto abundance.tsv", {"eff_length", "est_counts"}, "est_counts"),
                      ("RSEM .results", {"effective_length", "expected_count"}, "expected_count"))


def _refuse_one_sample_quantification(columns: pd.Index, path: Path) -> None:
    names = {str(c).lower() for c in columns}
    for tool, signature, counts in ONE_SAMPLE_LAYOUTS:
        if signature <= names:
            raise InputError(path, f"a {tool} file: one sample's quantification (columns {_names(columns)}), "
                             "not a table of samples",
                             hint=f"merge your samples' '{counts}' columns into one table, one column a sample, as "
                                  "tximport does; then set values to 'estimated_counts' in the sheet")


# Rows that count reads no gene took: HTSeq-count's and STAR's (ReadsPerGene) summary lines, which
# a table merged from their per-sample outputs keeps beside the genes (lower case here).
READ_COUNTERS = frozenset({"__no_feature", "__ambiguous", "__too_low_aqual", "__not_aligned", "__alignment_not_unique",
                           "n_unmapped", "n_multimapping", "n_nofeature", "n_ambiguous"})


def _read_counters(genes: pd.Index) -> np.ndarray:
    return genes.astype(str).str.lower().isin(READ_COUNTERS)


def _drop_read_counters(adata: ad.AnnData, counters: np.ndarray) -> ad.AnnData:
    """The table without HTSeq's / STAR's read counters, which are removed, counted and named on the page."""
    if not counters.any():
        return adata
    names = list(adata.var_names[counters])
    kept = adata[:, ~counters].copy()
    record_decision(kept, "read counters", f"{len(names)} rows removed: {_names(names)}",
                    "HTSeq-count and STAR write these summary lines beside the genes: they count reads that no "
                    "gene took, and would be modelled as the most expressed genes",
                    "rename a row in the file to keep it as a feature")
    return kept


def make_gene_names_unique(adata: ad.AnnData) -> None:
    """Repeated feature names (gene symbols of distinct ids, several probes of one gene) made unique
    as scanpy does ('TP53', 'TP53-1', ...), each kept as its own feature; said on the page."""
    repeated = adata.var_names[adata.var_names.duplicated()]
    if not len(repeated):
        return
    first = repeated[0]
    adata.var_names_make_unique()
    meta(adata)["renamed_duplicate_genes"] = len(repeated)
    record_decision(adata, "repeated feature names", f"{len(repeated)} renamed with a suffix as scanpy does "
                    f"(e.g. '{first}', '{first}-1')", f"{len(set(repeated))} names are given to several features "
                    "(gene symbols of distinct ids, probes of one gene); each is kept as a feature of its own",
                    "give every feature a unique name in the file (e.g. its Ensembl id), or sum the repeats first")


def record_preamble(adata: ad.AnnData, preamble: int, table_end: int | None, empty_columns: int = 0) -> None:
    """Say on the page which lines around the table, and which empty columns, were not read as data."""
    if empty_columns:
        record_decision(adata, "empty columns", f"{empty_columns} left out", "no name in the header and no value in "
                        "any row: a delimiter at the end of every line, as spreadsheets write", "none: they hold nothing")
    if preamble:
        record_decision(adata, "lines before the header", f"{preamble} skipped (line{'s 1-' if preamble > 1 else ' '}{preamble})",
                        "they start with '#', '!' or '^': comments and metadata, as featureCounts and GEO write them",
                        "remove the marks to read such a line as the header or as data")
    if table_end is not None:
        record_decision(adata, "end of the table", f"line {table_end}", "GEO's end-of-table marker: nothing after "
                        "it is read", "none: a second table after it is an error")


# obs columns the pipeline writes itself: a text column of the file by such a name keeps it with "_file"
RESERVED = ("split", "library_size", "series", "time")


def _keep_annotations(adata: ad.AnnData, annotations: pd.DataFrame | None, genes_as_rows: bool,
                      tool_columns: tuple = ()) -> None:
    """The file's text columns (sex, class, a gene's description) and featureCounts' annotation
    columns (`tool_columns`) kept as they are, beside the numbers: sample annotations (obs) when
    samples are rows, gene annotations (var) when genes are."""
    if annotations is None or annotations.shape[1] == 0:
        return
    frame = adata.var if genes_as_rows else adata.obs
    names = []
    for column in annotations.columns:
        name = f"{column}_file" if not genes_as_rows and str(column) in RESERVED else str(column)
        frame[name] = pd.Categorical(annotations[column].to_numpy(dtype=object))
        if column not in tool_columns:
            names.append(name)
    record_text_columns(adata, names, "gene" if genes_as_rows else "sample")
    if tool_columns:
        record_decision(adata, "featureCounts columns", f"kept as {'gene' if genes_as_rows else 'sample'} "
                        f"annotations, not modelled: {_names(tool_columns)}",
                        "the header is laid out as featureCounts writes it (Geneid, Chr, Start, End, Strand, Length, "
                        "then one column a sample)", "rename a column to model it as a sample")


def _keep_geo_annotations(adata: ad.AnnData, geo: pd.DataFrame | None) -> None:
    """GEO's sample metadata (`io.geo`) as sample annotations, when the table's samples are its accessions."""
    if geo is None or not adata.obs_names.isin(geo.index).all():
        return
    names = []
    for column in geo.columns:
        name = f"{column}_file" if column in RESERVED or column in adata.obs else str(column)
        adata.obs[name] = geo[column].reindex(adata.obs_names).to_numpy()
        names.append(name)
    record_decision(adata, "GEO sample annotations", f"kept as sample annotations, not modelled: {_names(names)}",
                    "GEO's metadata above the table describes each sample (a GDS file's subsets, a series "
                    "matrix's titles and characteristics)", "name one in the sheet's 'label' column to condition "
                    "models on it")


def record_text_columns(adata: ad.AnnData, names: list[str], kind: str) -> None:
    """Say on the page which text columns were kept as `kind` annotations rather than modelled."""
    if not names:
        return
    label_hint = "; name one in the sheet's 'label' column to condition models on it" if kind == "sample" else ""
    record_decision(adata, "text columns", f"kept as {kind} annotations, not modelled: {_names(names)}",
                    "most of their cells are words, not numbers",
                    f"write a column as numbers (e.g. 0/1) to model it as a feature{label_hint}")


def _names(names) -> str:
    names = [str(n) for n in names]
    return ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")


def record_row_names(adata: ad.AnnData, n_rows: int, unnamed: list[int], data_first_column: str | None,
                     why: str = "holds values that repeat, or numbers with fractions") -> None:
    """Rows of the file that had no name, or a table with no name column at all (then
    `data_first_column` names the first column, which held data, and `why` says how that was told)."""
    if data_first_column is not None:
        record_decision(adata, "row names", f"none in the file: rows numbered 1-{n_rows}",
                        f"the first column ('{data_first_column}') {why}, so it is data, not names",
                        "put unique row names in the first column")
    if unnamed:
        shown = ", ".join(map(str, unnamed[:5])) + (", ..." if len(unnamed) > 5 else "")
        record_decision(adata, "unnamed rows", f"{len(unnamed)} named by their line, e.g. 'unnamed (line {unnamed[0]})'",
                        f"their name is empty or NA in the file (lines {shown}); they are kept",
                        "give every row a name in the file")


def _read_container(path: Path, fmt: str) -> ad.AnnData:
    if fmt.startswith("10x"):
        import scanpy as sc  # here: only 10x files need it, and it costs every ingest job ~1.5 s to import

    try:
        if fmt == "h5ad":
            adata = ad.read_h5ad(path)
        elif fmt == "10x-h5":
            adata = sc.read_10x_h5(path)
        elif fmt == "10x-mtx":
            adata = sc.read_10x_mtx(path, var_names="gene_symbols", make_unique=False)
        else:
            adata = ad.read_zarr(path)
    except (OSError, KeyError, ValueError) as err:
        raise InputError(path, f"cannot be read as {fmt}: {err}") from None
    return adata


def choose_matrix(adata: ad.AnnData, matrix: str, path: Path) -> ad.AnnData:
    """The matrix to model from a file that may hold several (scanpy keeps log-normalised or
    scaled values in X, counts in a layer or in .raw): X unless `matrix` names raw or a layer.
    The choice is recorded whenever the file held another matrix."""
    held = {"X": adata.shape} if adata.X is not None else {}
    if adata.raw is not None:
        held["raw"] = adata.raw.shape
    held.update({name: layer.shape for name, layer in adata.layers.items()})
    if matrix not in held:
        hint = f"it holds {_held(held)}: name one in the sheet's 'matrix' column" if held else "it holds no matrix"
        raise InputError(path, f"no matrix '{matrix}' in the file", hint=hint)
    chosen = adata
    if matrix == "raw":  # .raw may hold more genes than X: its own var
        chosen = ad.AnnData(X=adata.raw.X, obs=adata.obs, var=adata.raw.var, uns=adata.uns, obsm=adata.obsm)
    elif matrix != "X":
        chosen.X = adata.layers[matrix]
    if len(held) > 1:
        others = _held({name: shape for name, shape in held.items() if name != matrix})
        why = "set in the sheet" if matrix != "X" else "the file's main matrix"
        record_decision(chosen, "matrix", matrix, f"{why}; the file also holds {others}, not used",
                        "the sheet's 'matrix' column (X, raw or a layer's name, e.g. counts)")
    return chosen


def _held(held: dict) -> str:
    return ", ".join(f"{'layer ' if name not in ('X', 'raw') else ''}{name} ({shape[0]} x {shape[1]})"
                     for name, shape in held.items())


def _as_float32(matrix):
    """Sparse CSR when at most a third of the entries are nonzero (count data), dense otherwise."""
    if not sp.issparse(matrix):
        matrix = np.asarray(matrix, dtype=np.float32)
        if np.count_nonzero(matrix) > matrix.size / 3 or np.isnan(matrix).any():
            return matrix
    return sp.csr_matrix(matrix, dtype=np.float32)


def _check_finite(adata: ad.AnnData, path: Path) -> None:
    values = adata.X.data if sp.issparse(adata.X) else adata.X
    if np.isinf(values).any():
        raise InputError(path, "the matrix holds infinite values", hint="replace them with NA if they are missing")
