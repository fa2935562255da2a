"""Expression and time-course matrices: scanpy QC, normalisation, log and gene selection.

A sparse input stays sparse (CSR float32) through every step, so a million cells fit in memory;
scanpy's functions work on CSR. Native missing values (NaN) exist only in dense inputs: scanpy
sees them as zeros and the NaNs are put back afterwards, so `impute` has them to fill.
"""

from __future__ import annotations

import json
import logging

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..decisions import record_decision
from ..errors import InputError
from ..provenance import meta
from .removed import record_removed

LOG = logging.getLogger(__name__)

# `scale` values: false (none), true / "zscore" (z-score per feature, clipped), "minmax" ([0, 1]).
SCALINGS = (False, True, "zscore", "minmax")


def prepare_expression(adata: ad.AnnData, params: dict, removed: list[dict]) -> ad.AnnData:
    source = meta(adata).get("source", "input")
    scaling = _scaling(params.get("scale", False), source)
    adata.X = _as_matrix(adata.X)
    if not sp.issparse(adata.X):
        missing = np.isnan(adata.X)
        adata.layers["missing"] = missing
        adata.X[missing] = 0.0
    input_scale = meta(adata).get("input_scale")
    is_counts = input_scale == "counts"
    filters = _applies_filters(adata, params, is_counts)
    if filters:
        adata = _filter(adata, params, removed, source)
        adata = _filter_mito(adata, params, removed, source)
    if is_counts:
        # scanpy is imported where it is used: it takes ~1.5 s, and sequences and continuous tables need none
        import scanpy as sc

        adata.layers["counts"] = adata.X.copy()
        adata.obs["library_size"] = np.asarray(adata.X.sum(axis=1), dtype=np.float32).ravel()
        sc.pp.normalize_total(adata, target_sum=float(params.get("target_sum", 1e4)))
        sc.pp.log1p(adata)
    elif input_scale == "intensities":
        log2_intensities(adata)
    if filters:
        adata = _select_genes(adata, params, removed, is_counts)
    if scaling in (True, "zscore"):
        import scanpy as sc

        adata.X = _dense(adata.X)  # z-scores are dense whatever the input
        sc.pp.scale(adata, max_value=10)  # z-scores per gene, clipped: for Gaussian models only
    elif scaling == "minmax":
        minmax_scale(adata)
    if "missing" in adata.layers:
        adata.X[adata.layers.pop("missing")] = np.nan
    suffix = {True: "_scaled", "zscore": "_scaled", "minmax": "_minmax"}.get(scaling, "")
    base = {"counts": "log1p_normalised", "intensities": LOG2_INTENSITIES}.get(input_scale, "as_given")
    meta(adata)["x_scale"] = base + suffix
    return adata


# `x_scale` of intensities (io.expression: values) after `log2_intensities`.
LOG2_INTENSITIES = "log2p1_intensities"


def log2_intensities(adata: ad.AnnData) -> None:
    """log2(x + 1), as microarray and proteomics intensities are modelled: their linear scale is
    dominated by a few bright features. Zeros stay zeros, so a sparse X stays sparse."""
    values = adata.X.data if sp.issparse(adata.X) else adata.X  # float32 (_as_matrix): in place, no temporary
    np.add(values, 1, out=values)
    np.log2(values, out=values)


def _applies_filters(adata: ad.AnnData, params: dict, is_counts: bool) -> bool:
    """Detection-based QC (min_genes, min_cells, mito share) and HVG selection measure counts:
    on continuous or normalised values (centred, negative, log ratios) "detected" means nothing,
    and a removed feature would never be filled. So they run on counts, and on other values only
    when the config's `filter_continuous` asks; the choice is recorded as a decision."""
    if is_counts:
        return True
    asked = bool(params.get("filter_continuous", False))
    wanted = [k for k in ("min_genes", "min_cells", "n_top_genes", "max_pct_mito") if params.get(k)]
    if asked:
        why = "the config asks for the count filters on continuous values too"
    else:
        why = ("the values are not counts: detection filters and HVG selection by counts do not apply, "
               "so every feature is modelled and comes back filled")
        if wanted:
            why += f" (not applied: {', '.join(f'{k}={params[k]}' for k in wanted)})"
    record_decision(adata, "feature and sample filters on continuous values", "applied" if asked else "none",
                    why, "preprocess.<modality>.filter_continuous")
    return asked


def _scaling(value, source: str):
    if value is None:
        return False
    if value not in SCALINGS:
        raise InputError(source, f"unknown preprocess scale {value!r}", hint="use false, zscore (or true) or minmax")
    return value


def minmax_scale(adata: ad.AnnData) -> None:
    """Each feature mapped onto [0, 1] by its observed min and max (GAIN's normalisation); a
    constant feature becomes 0. The min and range are kept in var (`minmax_min`,
    `minmax_range`) so values can be mapped back. A sparse X whose minima are all 0 stays sparse."""
    if sp.issparse(adata.X):
        low = np.asarray(adata.X.min(axis=0).toarray(), dtype=np.float64).ravel()
        high = np.asarray(adata.X.max(axis=0).toarray(), dtype=np.float64).ravel()
        if (low != 0).any():
            adata.X = _dense(adata.X)
    if not sp.issparse(adata.X):
        seen = np.where(adata.layers["missing"], np.nan, adata.X) if "missing" in adata.layers else adata.X
        low = np.nan_to_num(np.nanmin(seen, axis=0), nan=0.0).astype(np.float64)
        high = np.nan_to_num(np.nanmax(seen, axis=0), nan=0.0).astype(np.float64)
    span = high - low
    scale = np.where(span > 0, 1.0 / np.where(span > 0, span, 1.0), 0.0)
    if sp.issparse(adata.X):
        adata.X = sp.csr_matrix(adata.X.multiply(scale[None, :].astype(np.float32)), dtype=np.float32)
    else:
        adata.X = ((adata.X - low) * scale).astype(np.float32)
        adata.X = np.clip(adata.X, 0.0, 1.0)  # rounding may step a hair outside
    adata.var["minmax_min"], adata.var["minmax_range"] = low.astype(np.float32), span.astype(np.float32)


def _as_matrix(matrix):
    """CSR float32 for sparse input (dense when it stores NaN: missing values need the dense
    path), float32 ndarray otherwise."""
    if sp.issparse(matrix):
        matrix = sp.csr_matrix(matrix, dtype=np.float32)
        return matrix.toarray() if np.isnan(matrix.data).any() else matrix
    return np.asarray(matrix, dtype=np.float32)


def _dense(matrix) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float32)


def _detected(matrix, axis: int) -> np.ndarray:
    """Entries > 0 per row (axis 1) or per column (axis 0), without a boolean copy of a CSR matrix."""
    if not sp.issparse(matrix):
        return (matrix > 0).sum(axis=axis)
    positive = matrix.data > 0
    if axis == 0:
        return np.bincount(matrix.indices[positive], minlength=matrix.shape[1])
    running = np.concatenate([[0], np.cumsum(positive, dtype=np.int64)])
    return running[matrix.indptr[1:]] - running[matrix.indptr[:-1]]


def _rows(adata: ad.AnnData, keep: np.ndarray) -> ad.AnnData:
    return adata if keep.all() else adata[keep].copy()


def _filter(adata: ad.AnnData, params: dict, removed: list[dict], source: str) -> ad.AnnData:
    """Cells with too few detected genes, then genes detected in too few cells.

    The thresholds are single-cell habits. On a sparse bulk, microbiome or panel table they can
    remove nearly everything (one OTU table lost 68 of 78 samples, then 499 of 500 OTUs), so a
    filter that would remove more than `filter_max_removed` of its axis is not applied, and
    the page says what it would have removed and which setting forces it."""
    min_genes, min_cells = int(params.get("min_genes", 0)), int(params.get("min_cells", 0))
    limit = float(params.get("filter_max_removed", 0.5))
    keep_obs = _detected(adata.X, axis=1) >= min_genes
    keep_obs = _bounded(adata, keep_obs, "min_genes", min_genes, "samples", limit)
    record_removed(removed, "min_genes", int((~keep_obs).sum()), 0, f"fewer than {min_genes} detected genes")
    adata = _rows(adata, keep_obs)
    keep_vars = _detected(adata.X, axis=0) >= min_cells
    keep_vars = _bounded(adata, keep_vars, "min_cells", min_cells, "features", limit)
    record_removed(removed, "min_cells", 0, int((~keep_vars).sum()), f"detected in fewer than {min_cells} samples")
    if not keep_vars.all():
        adata = adata[:, keep_vars].copy()
    if adata.n_obs == 0 or adata.n_vars == 0:
        raise InputError(source, f"no {'samples' if adata.n_obs == 0 else 'genes'} pass the filters "
                         f"min_genes={min_genes}, min_cells={min_cells}", hint="lower them in the config's preprocess section")
    return adata


def _bounded(adata: ad.AnnData, keep: np.ndarray, name: str, threshold: int, axis: str, limit: float) -> np.ndarray:
    """`keep` itself, or all True when it would drop more than `limit` of the axis."""
    dropped = int((~keep).sum())
    if dropped <= limit * keep.size:
        return keep
    record_decision(adata, f"{name} filter", "not applied",
                    f"{name}={threshold} would remove {dropped} of {keep.size} {axis}, more than "
                    f"{limit:.0%}: a threshold for single cells, not for this table",
                    f"preprocess.<modality>.filter_max_removed (1 applies it whatever it removes)")
    return np.ones_like(keep)


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
    import scanpy as sc

    sc.pp.calculate_qc_metrics(adata, qc_vars=["mito"], percent_top=None, log1p=False, inplace=True)
    keep = adata.obs["pct_counts_mito"].to_numpy() <= float(limit)
    record_removed(removed, "max_pct_mito", int((~keep).sum()), 0, f"more than {limit}% mitochondrial counts")
    return _rows(adata, keep)


def _select_genes(adata: ad.AnnData, params: dict, removed: list[dict], is_counts: bool) -> ad.AnnData:
    """Highly variable genes with scanpy when there are counts; the most variable ones otherwise."""
    n_top = params.get("n_top_genes")
    if not n_top or n_top >= adata.n_vars:
        return adata
    if is_counts:
        flavor = params.get("hvg_flavor", "seurat_v3")
        # seurat_v3 models the raw counts; the other flavors read the log-normalised X
        layer = "counts" if flavor == "seurat_v3" else None
        import scanpy as sc

        try:
            sc.pp.highly_variable_genes(adata, n_top_genes=int(n_top), flavor=flavor, layer=layer)
        except ValueError as error:  # seurat_v3's loess fit is singular on near-empty tables
            record_decision(adata, "highly variable genes", "by variance of the log-normalised values",
                            f"scanpy's {flavor} could not fit this table ({error!s:.80})",
                            "preprocess.<modality>.hvg_flavor or n_top_genes: null")
            flavor = None
        else:
            keep = adata.var.pop("highly_variable").to_numpy()
            reason = f"not among the {n_top} highly variable genes (scanpy, {flavor})"
    if not is_counts or flavor is None:
        order = np.argsort(-np.nan_to_num(_variances(adata), nan=-1.0), kind="stable")
        keep = np.zeros(adata.n_vars, dtype=bool)
        keep[order[: int(n_top)]] = True
        reason = f"not among the {n_top} most variable genes"
    record_removed(removed, "n_top_genes", 0, int((~keep).sum()), reason)
    return adata[:, keep].copy()


def _variances(adata: ad.AnnData) -> np.ndarray:
    """Per-feature variance of the observed entries."""
    if sp.issparse(adata.X):
        mean = np.asarray(adata.X.mean(axis=0), dtype=np.float64).ravel()
        return np.asarray(adata.X.multiply(adata.X).mean(axis=0), dtype=np.float64).ravel() - mean**2
    return np.nanvar(np.where(adata.layers["missing"], np.nan, adata.X), axis=0)
