"""Stage `mask`: hold out a recorded random set of observed entries for imputation scoring.

The truth stays in the file; the boolean mask says which entries every model and baseline must
treat as unobserved (docs/data-format.md).
"""

from __future__ import annotations

import anndata as ad
import numpy as np

from . import alphabet as alph
from .errors import InputError
from .provenance import meta, stamp, write_h5ad

MECHANISMS = ("mcar",)


def heldout_mask(candidates: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    """Missing completely at random: each candidate entry is held out with probability `rate`."""
    return candidates & (rng.random(candidates.shape) < rate)


def mask(data_path, out, rate: float, mechanism: str, seed: int) -> None:
    if mechanism not in MECHANISMS:
        raise InputError(data_path, f"unknown mask mechanism '{mechanism}'", hint=f"use one of {', '.join(MECHANISMS)}")
    adata = ad.read_h5ad(data_path)
    rng = np.random.default_rng(seed)
    if meta(adata)["modality"] == "sequence":
        slot, candidates = "obsm", adata.obsm["tokens"] >= alph.GAP
        adata.obsm["heldout"] = heldout_mask(candidates, rate, rng)
        n_heldout = int(adata.obsm["heldout"].sum())
    else:
        slot, candidates = "layers", ~np.isnan(np.asarray(adata.X))
        adata.layers["heldout"] = heldout_mask(candidates, rate, rng)
        n_heldout = int(adata.layers["heldout"].sum())
    meta(adata)["mask"] = {"key": "heldout", "slot": slot, "mechanism": mechanism, "rate": float(rate),
                           "seed": int(seed), "n_heldout": n_heldout}
    stamp(adata, "mask", {"rate": rate, "mechanism": mechanism}, inputs=[data_path], seed=seed)
    write_h5ad(adata, out)
