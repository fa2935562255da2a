"""Expression matrices (CSV/TSV either orientation, h5ad, 10x HDF5 / Matrix Market, zarr) -> AnnData."""

from __future__ import annotations

import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scanpy as sc
import scipy.sparse as sp

from ..errors import InputError
from ..provenance import meta
from ._table import read_numeric_table, require_unique

EXPRESSION_FORMATS = ("csv", "tsv", "h5ad", "10x-h5", "10x-mtx", "zarr")
ORIENTATIONS = ("auto", "samples_as_rows", "genes_as_rows")
_GENE_INDEX_NAME = re.compile(r"gene|symbol|ensembl|feature|probe|transcript", re.IGNORECASE)


VALUES = ("auto", "counts", "normalised")


def read_expression(path: Path, fmt: str, orientation: str = "auto", values: str = "auto") -> ad.AnnData:
    if fmt in ("csv", "tsv"):
        adata = _read_delimited(path, fmt, orientation)
    else:
        adata = _read_container(path, fmt)
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(path, f"the matrix is empty ({adata.n_obs} samples x {adata.n_vars} genes)")
    adata.X = _as_float32(adata.X)
    _check_finite(adata, path)
    meta(adata)["input_scale"] = _input_scale(adata, values, path)
    return adata


def _input_scale(adata: ad.AnnData, values: str, path: Path) -> str:
    """Counts when declared (then checked) or when every value is a non-negative integer."""
    if values not in VALUES:
        raise InputError(path, f"unknown values '{values}'", hint=f"use one of {', '.join(VALUES)}")
    if values == "counts":
        _require_counts(adata, path)
        return "counts"
    if values == "normalised":
        return "normalised"
    return "counts" if looks_like_counts(adata.X) else "normalised"


def _require_counts(adata: ad.AnnData, path: Path) -> None:
    matrix = adata.X.tocoo() if sp.issparse(adata.X) else adata.X
    values = matrix.data if sp.issparse(adata.X) else matrix
    bad = (values < 0) | (values != np.round(values))
    if bad.any():
        if sp.issparse(adata.X):
            index = int(np.argmax(bad))
            row, col = int(matrix.row[index]), int(matrix.col[index])
        else:
            row, col = (int(i) for i in np.argwhere(bad)[0])
        value = float(values[index] if sp.issparse(adata.X) else values[row, col])
        what = "negative" if value < 0 else "not a whole number"
        raise InputError(path, f"declared counts, but {value:g} is {what}",
                         where=f"sample '{adata.obs_names[row]}', gene '{adata.var_names[col]}'",
                         hint="set values to 'normalised' in the sheet if the data are not raw counts")


def _read_delimited(path: Path, fmt: str, orientation: str) -> ad.AnnData:
    if orientation not in ORIENTATIONS:
        raise InputError(path, f"unknown orientation '{orientation}'", hint=f"use one of {', '.join(ORIENTATIONS)}")
    matrix, rows, columns = read_numeric_table(path, fmt)
    genes_as_rows = orientation == "genes_as_rows" or (orientation == "auto" and _genes_look_like_rows(rows, columns))
    samples, genes = (columns, rows) if genes_as_rows else (rows, columns)
    require_unique(genes, path, "gene name")
    require_unique(samples, path, "sample name")
    adata = ad.AnnData(X=matrix.T if genes_as_rows else matrix)
    adata.obs_names, adata.var_names = samples.astype(str), genes.astype(str)
    meta(adata)["orientation"] = "genes_as_rows" if genes_as_rows else "samples_as_rows"
    return adata


def _genes_look_like_rows(rows: pd.Index, columns: pd.Index) -> bool:
    """Genes are rows when the index is named like a gene column, or rows far outnumber columns
    (a bulk table: 20,000 genes x 12 samples). Otherwise one row a sample, as scanpy expects."""
    if rows.name and _GENE_INDEX_NAME.search(str(rows.name)):
        return True
    return len(rows) > 5 * len(columns)


def _read_container(path: Path, fmt: str) -> ad.AnnData:
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
    duplicated = int(adata.var_names.duplicated().sum())
    if duplicated:
        # 10x symbols repeat across distinct gene ids; the ids stay in var["gene_ids"].
        adata.var_names_make_unique()
        meta(adata)["renamed_duplicate_genes"] = duplicated
    return adata


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


def looks_like_counts(matrix) -> bool:
    """Raw counts are non-negative integers; anything else was normalised upstream."""
    values = matrix.data if sp.issparse(matrix) else matrix[~np.isnan(matrix)]
    return bool(values.size) and bool((values >= 0).all() and (values == np.round(values)).all())
