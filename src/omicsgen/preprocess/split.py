"""The train/val/test split, recorded in obs["split"]; time courses split whole series."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

SPLITS = ["train", "val", "test"]


def assign_split(adata: ad.AnnData, val: float, test: float, seed: int, group: str | None = None) -> None:
    units = adata.obs[group].astype(str).to_numpy() if group else np.arange(adata.n_obs)
    unique = np.unique(units)
    order = np.random.default_rng(seed).permutation(unique.size)
    n_test = max(1, round(test * unique.size)) if test > 0 else 0
    n_val = max(1, round(val * unique.size)) if val > 0 else 0
    labels = np.array(["train"] * unique.size, dtype=object)
    labels[order[:n_test]] = "test"
    labels[order[n_test : n_test + n_val]] = "val"
    by_unit = dict(zip(unique, labels))
    adata.obs["split"] = pd.Categorical([by_unit[u] for u in units], categories=SPLITS)
