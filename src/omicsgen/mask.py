"""Stage `mask`: hold out a recorded random set of observed entries for imputation scoring.

The truth stays in the file; the boolean mask says which entries every model and baseline must
treat as unobserved (docs/data-format.md).

Mechanisms (Rubin's taxonomy, plus spans for sequences):
- mcar: every observed entry equally likely;
- mar:  an entry's chance follows the value of another observed feature of the same row
        (for each gene, a randomly chosen "driver" gene; high driver -> more likely held out);
- mnar: an entry's chance follows its own value, low values more likely, like dropout;
- span: contiguous stretches of `span_length` positions (sequences), like an unsequenced gap.
"""

from __future__ import annotations

import anndata as ad
import numpy as np

from . import alphabet as alph
from .errors import InputError
from .provenance import meta, stamp, write_h5ad

MECHANISMS = {"expression": ("mcar", "mar", "mnar"), "timecourse": ("mcar", "mar", "mnar"),
              "sequence": ("mcar", "span")}


def mask(data_path, out, rate: float, mechanism: str, seed: int, span_length: int = 10) -> None:
    adata = ad.read_h5ad(data_path)
    modality = meta(adata)["modality"]
    if mechanism not in MECHANISMS[modality]:
        raise InputError(data_path, f"unknown mask mechanism '{mechanism}' for {modality} data",
                         hint=f"use one of {', '.join(MECHANISMS[modality])}")
    rng = np.random.default_rng(seed)
    if modality == "sequence":
        slot, candidates = "obsm", adata.obsm["tokens"] >= alph.GAP
        held = span_mask(candidates, rate, span_length, rng) if mechanism == "span" else mcar_mask(candidates, rate, rng)
        adata.obsm["heldout"] = held
    else:
        values = np.asarray(adata.X, dtype=np.float64)
        slot, candidates = "layers", ~np.isnan(values)
        held = {"mcar": lambda: mcar_mask(candidates, rate, rng),
                "mar": lambda: weighted_mask(candidates, rate, _mar_weights(values, rng), rng),
                "mnar": lambda: weighted_mask(candidates, rate, _mnar_weights(values), rng)}[mechanism]()
        adata.layers["heldout"] = held
    params = {"rate": float(rate), "mechanism": mechanism, **({"span_length": span_length} if mechanism == "span" else {})}
    meta(adata)["mask"] = {"key": "heldout", "slot": slot, "seed": int(seed), "n_heldout": int(held.sum()), **params}
    stamp(adata, "mask", params, inputs=[data_path], seed=seed)
    write_h5ad(adata, out)


def mcar_mask(candidates: np.ndarray, rate: float, rng: np.random.Generator) -> np.ndarray:
    return candidates & (rng.random(candidates.shape) < rate)


def weighted_mask(candidates: np.ndarray, rate: float, weights: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hold out each candidate with probability proportional to its weight, `rate` on average."""
    weights = np.where(candidates, weights, 0.0)
    probability = np.clip(rate * candidates.sum() * weights / max(weights.sum(), 1e-12), 0.0, 1.0)
    return candidates & (rng.random(candidates.shape) < probability)


def _standardise(values: np.ndarray) -> np.ndarray:
    mean, std = np.nanmean(values, axis=0), np.nanstd(values, axis=0)
    return np.nan_to_num((values - mean) / np.where(std > 0, std, 1.0))


def _mnar_weights(values: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(2.0 * _standardise(values)))  # low values weigh most


def _mar_weights(values: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n_features = values.shape[1]
    driver = (np.arange(n_features) + rng.integers(1, max(n_features, 2), n_features)) % n_features
    return 1.0 / (1.0 + np.exp(-2.0 * _standardise(values)[:, driver]))


def span_mask(candidates: np.ndarray, rate: float, span_length: int, rng: np.random.Generator) -> np.ndarray:
    """Contiguous spans: span starts drawn at rate/span_length, each start covering span_length positions."""
    starts = candidates & (rng.random(candidates.shape) < rate / span_length)
    covered = np.zeros_like(candidates)
    for offset in range(span_length):
        covered[:, offset:] |= starts[:, : candidates.shape[1] - offset]
    return covered & candidates
