"""The train/val/test split, recorded in obs["split"]; time courses split whole series."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd

SPLITS = ["train", "val", "test"]


def split_rows(adata: ad.AnnData, split) -> np.ndarray:
    """Boolean row selector for one split name or several (torch-free: models, evaluate and
    complete all use this one)."""
    names = [split] if isinstance(split, str) else list(split)
    return adata.obs["split"].astype(str).isin(names).to_numpy()


def assign_split(adata: ad.AnnData, val: float, test: float, seed: int, group: str | None = None) -> None:
    """Whole groups (series) go to one split; otherwise rows, stratified by obs["label"] when there is one."""
    rng = np.random.default_rng(seed)
    if group:
        units = adata.obs[group].astype(str).to_numpy()
        by_unit = _split_units(np.unique(units), val, test, rng)
        labels = [by_unit[u] for u in units]
    else:
        strata = adata.obs["label"].astype(str).to_numpy() if "label" in adata.obs else np.zeros(adata.n_obs, dtype=str)
        labels = np.empty(adata.n_obs, dtype=object)
        for stratum in np.unique(strata):
            rows = np.flatnonzero(strata == stratum)
            by_row = _split_units(rows, val, test, rng)
            labels[rows] = [by_row[r] for r in rows]
    adata.obs["split"] = pd.Categorical(labels, categories=SPLITS)


def _split_units(unique: np.ndarray, val: float, test: float, rng: np.random.Generator) -> dict:
    order = rng.permutation(unique.size)
    n_test, n_val = _at_least_one(test, unique.size), _at_least_one(val, unique.size)
    labels = np.array(["train"] * unique.size, dtype=object)
    labels[order[:n_test]] = "test"
    labels[order[n_test : n_test + n_val]] = "val"
    return dict(zip(unique, labels))


def _at_least_one(fraction: float, n: int) -> int:
    """A wanted split is never empty when there are enough units to spare one (3 or more)."""
    count = round(fraction * n)
    return 1 if fraction > 0 and count == 0 and n >= 3 else count
