"""Reading the AnnData contract (docs/data-format.md) the way scoring and baselines need it.

Everything a baseline may see goes through `observed_values` / `hidden_tokens`, which blank the
held-out entries, so no baseline can read a value it is scored on.
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import scipy.sparse as sp

from ..alphabet import MISSING


def read(path) -> ad.AnnData:
    return ad.read_h5ad(path)


def info(adata: ad.AnnData) -> dict:
    return adata.uns["omicsgen"]


def modality(adata: ad.AnnData) -> str:
    return str(info(adata)["modality"])


def dataset(adata: ad.AnnData) -> str:
    return str(info(adata)["dataset"])


def mask_info(adata: ad.AnnData) -> dict:
    return info(adata)["mask"]


def heldout_mask(adata: ad.AnnData) -> np.ndarray:
    """Boolean matrix, True where an entry is held out for imputation scoring."""
    mask = mask_info(adata)
    return dense(getattr(adata, str(mask["slot"]))[str(mask["key"])]).astype(bool)


def split_rows(adata: ad.AnnData, split: str) -> np.ndarray:
    return (adata.obs["split"].astype(str) == split).to_numpy()


def values(adata: ad.AnnData) -> np.ndarray:
    """X as float64 (the truth, held-out entries included)."""
    return dense(adata.X).astype(np.float64)


def observed_values(adata: ad.AnnData) -> np.ndarray:
    """X with held-out entries set to NaN: what a model or baseline is allowed to see."""
    observed = values(adata)
    observed[heldout_mask(adata)] = np.nan
    return observed


def tokens(adata: ad.AnnData, key: str = "tokens") -> np.ndarray:
    return np.asarray(adata.obsm[key]).astype(np.int16)


def hidden_tokens(adata: ad.AnnData) -> np.ndarray:
    """Tokens with held-out positions set to MISSING: what a model or baseline is allowed to see."""
    hidden = tokens(adata)
    hidden[heldout_mask(adata)] = MISSING
    return hidden


def alphabet(adata: ad.AnnData) -> tuple[str, list[str]]:
    table = adata.uns["alphabet"]
    return str(table["name"]), [str(s) for s in table["symbols"]]


def feature_means(observed: np.ndarray) -> np.ndarray:
    """Per-feature mean of the observed entries; features never observed get the overall mean."""
    counts = np.isfinite(observed).sum(axis=0)
    sums = np.nansum(observed, axis=0)
    overall = np.nanmean(observed) if np.isfinite(observed).any() else 0.0
    return np.where(counts > 0, sums / np.maximum(counts, 1), overall)


def filtered_steps(adata: ad.AnnData) -> list[dict]:
    """What preprocessing removed (`uns['omicsgen']['filtered']`), or [] when not recorded."""
    text = info(adata).get("filtered")
    return json.loads(str(text)) if text is not None else []


def dense(matrix) -> np.ndarray:
    return matrix.toarray() if sp.issparse(matrix) else np.asarray(matrix)
