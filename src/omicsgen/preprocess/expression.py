"""Expression and time-course matrices: scanpy QC, normalisation, log and gene selection.

Native missing values (NaN) survive every step: scanpy's functions see them as zeros and the
NaNs are put back afterwards, so `impute` has them to fill.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scanpy as sc
import scipy.sparse as sp

from ..errors import InputError
from ..provenance import meta


def prepare_expression(adata: ad.AnnData, params: dict, removed: list[dict]) -> ad.AnnData:
    source = meta(adata).get("source", "input")
    adata.X = _dense(adata.X)
    missing = np.isnan(adata.X)
    adata.layers["missing"] = missing
    adata.X[missing] = 0.0
    adata = _filter(adata, params, removed, source)
    is_counts = meta(adata).get("input_scale") == "counts"
    if is_counts:
        adata.layers["counts"] = adata.X.copy()
        adata.obs["library_size"] = adata.X.sum(axis=1)
        sc.pp.normalize_total(adata, target_sum=float(params.get("target_sum", 1e4)))
        sc.pp.log1p(adata)
    adata = _select_genes(adata, params, removed, is_counts)
    adata.X[adata.layers.pop("missing")] = np.nan
    meta(adata)["x_scale"] = "log1p_normalised" if is_counts else "as_given"
    return adata


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float32)


def _filter(adata: ad.AnnData, params: dict, removed: list[dict], source: str) -> ad.AnnData:
    """Cells with too few detected genes, then genes detected in too few cells."""
    min_genes, min_cells = int(params.get("min_genes", 0)), int(params.get("min_cells", 0))
    detected = adata.X > 0
    keep_obs = detected.sum(axis=1) >= min_genes
    _record(removed, "min_genes", int((~keep_obs).sum()), 0, f"fewer than {min_genes} detected genes")
    adata = adata[keep_obs].copy()
    keep_vars = (adata.X > 0).sum(axis=0) >= min_cells
    _record(removed, "min_cells", 0, int((~keep_vars).sum()), f"detected in fewer than {min_cells} samples")
    adata = adata[:, keep_vars].copy()
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(source, f"no {'samples' if adata.n_obs == 0 else 'genes'} pass the filters "
                         f"min_genes={min_genes}, min_cells={min_cells}", hint="lower them in the config's preprocess section")
    return adata


def _select_genes(adata: ad.AnnData, params: dict, removed: list[dict], is_counts: bool) -> ad.AnnData:
    """Highly variable genes (scanpy's dispersion method) on log counts; the most variable ones otherwise."""
    n_top = params.get("n_top_genes")
    if not n_top or n_top >= adata.n_vars:
        return adata
    if is_counts:
        sc.pp.highly_variable_genes(adata, n_top_genes=int(n_top), flavor="seurat")
        keep = adata.var["highly_variable"].to_numpy()
        reason = f"not among the {n_top} highly variable genes (scanpy, seurat flavor)"
    else:
        variance = np.where(adata.layers["missing"], np.nan, adata.X)
        order = np.argsort(-np.nan_to_num(np.nanvar(variance, axis=0), nan=-1.0), kind="stable")
        keep = np.zeros(adata.n_vars, dtype=bool)
        keep[order[: int(n_top)]] = True
        reason = f"not among the {n_top} most variable genes"
    _record(removed, "n_top_genes", 0, int((~keep).sum()), reason)
    return adata[:, keep].copy()


def _record(removed: list[dict], step: str, n_obs: int, n_vars: int, reason: str) -> None:
    removed.append({"step": step, "removed_obs": n_obs, "removed_vars": n_vars, "reason": reason})
