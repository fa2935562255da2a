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
from .removed import record_removed


def prepare_expression(adata: ad.AnnData, params: dict, removed: list[dict]) -> ad.AnnData:
    source = meta(adata).get("source", "input")
    adata.X = _dense(adata.X)
    missing = np.isnan(adata.X)
    adata.layers["missing"] = missing
    adata.X[missing] = 0.0
    adata = _filter(adata, params, removed, source)
    adata = _filter_mito(adata, params, removed, source)
    is_counts = meta(adata).get("input_scale") == "counts"
    if is_counts:
        adata.layers["counts"] = adata.X.copy()
        adata.obs["library_size"] = adata.X.sum(axis=1)
        sc.pp.normalize_total(adata, target_sum=float(params.get("target_sum", 1e4)))
        sc.pp.log1p(adata)
    adata = _select_genes(adata, params, removed, is_counts)
    if params.get("scale"):
        sc.pp.scale(adata, max_value=10)  # z-scores per gene, clipped: for Gaussian models only
    adata.X[adata.layers.pop("missing")] = np.nan
    meta(adata)["x_scale"] = ("log1p_normalised" if is_counts else "as_given") + ("_scaled" if params.get("scale") else "")
    return adata


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float32)


def _filter(adata: ad.AnnData, params: dict, removed: list[dict], source: str) -> ad.AnnData:
    """Cells with too few detected genes, then genes detected in too few cells."""
    min_genes, min_cells = int(params.get("min_genes", 0)), int(params.get("min_cells", 0))
    detected = adata.X > 0
    keep_obs = detected.sum(axis=1) >= min_genes
    record_removed(removed, "min_genes", int((~keep_obs).sum()), 0, f"fewer than {min_genes} detected genes")
    adata = adata[keep_obs].copy()
    keep_vars = (adata.X > 0).sum(axis=0) >= min_cells
    record_removed(removed, "min_cells", 0, int((~keep_vars).sum()), f"detected in fewer than {min_cells} samples")
    adata = adata[:, keep_vars].copy()
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(source, f"no {'samples' if adata.n_obs == 0 else 'genes'} pass the filters "
                         f"min_genes={min_genes}, min_cells={min_cells}", hint="lower them in the config's preprocess section")
    return adata


def _filter_mito(adata: ad.AnnData, params: dict, removed: list[dict], source: str) -> ad.AnnData:
    """Cells whose mitochondrial share of counts exceeds `max_pct_mito` (dying or broken cells)."""
    limit = params.get("max_pct_mito")
    if limit is None:
        return adata
    prefix = params.get("mito_prefix", "mt-")
    adata.var["mito"] = adata.var_names.str.lower().str.startswith(prefix.lower())
    if not adata.var["mito"].any():
        raise InputError(source, f"max_pct_mito is set but no gene name starts with '{prefix}'",
                         hint="set mito_prefix (e.g. 'MT-' for human) or remove max_pct_mito")
    sc.pp.calculate_qc_metrics(adata, qc_vars=["mito"], percent_top=None, log1p=False, inplace=True)
    keep = adata.obs["pct_counts_mito"].to_numpy() <= float(limit)
    record_removed(removed, "max_pct_mito", int((~keep).sum()), 0, f"more than {limit}% mitochondrial counts")
    return adata[keep].copy()


def _select_genes(adata: ad.AnnData, params: dict, removed: list[dict], is_counts: bool) -> ad.AnnData:
    """Highly variable genes with scanpy when there are counts; the most variable ones otherwise."""
    n_top = params.get("n_top_genes")
    if not n_top or n_top >= adata.n_vars:
        return adata
    if is_counts:
        flavor = params.get("hvg_flavor", "seurat_v3")
        # seurat_v3 models the raw counts; the other flavors read the log-normalised X
        layer = "counts" if flavor == "seurat_v3" else None
        sc.pp.highly_variable_genes(adata, n_top_genes=int(n_top), flavor=flavor, layer=layer)
        keep = adata.var.pop("highly_variable").to_numpy()
        reason = f"not among the {n_top} highly variable genes (scanpy, {flavor})"
    else:
        variance = np.where(adata.layers["missing"], np.nan, adata.X)
        order = np.argsort(-np.nan_to_num(np.nanvar(variance, axis=0), nan=-1.0), kind="stable")
        keep = np.zeros(adata.n_vars, dtype=bool)
        keep[order[: int(n_top)]] = True
        reason = f"not among the {n_top} most variable genes"
    record_removed(removed, "n_top_genes", 0, int((~keep).sum()), reason)
    return adata[:, keep].copy()
