"""Stage `mask`: hold out a recorded random set of observed entries for imputation scoring.

The truth stays in the file; the boolean mask says which entries every model and baseline must
treat as unobserved (docs/data-format.md).

Mechanisms (Rubin's taxonomy, plus spans for sequences):
- mcar: every observed entry equally likely;
- mar:  an entry's chance follows the value of another observed feature of the same row
        (for each gene, a randomly chosen "driver" gene; high driver -> more likely held out);
- mnar: an entry's chance follows its own value, low values more likely, like dropout;
- span: contiguous stretches of `span_length` positions (sequences), like an unsequenced gap.

`nonzero_only` (expression, time course) holds out only nonzero observed entries: scVI's
"uniform" corruption protocol, which scores imputation where there is signal to recover.

A sparse X gets a sparse (CSR boolean) mask; mcar draws it a block of rows at a time, the same
draws as for the dense matrix, so it never holds a dense copy of a million-cell matrix.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import scipy.sparse as sp

from . import alphabet as alph
from .errors import InputError
from .provenance import meta, stamp, write_h5ad

MECHANISMS = {"expression": ("mcar", "mar", "mnar"), "timecourse": ("mcar", "mar", "mnar"),
              "sequence": ("mcar", "span")}


# Rows drawn at a time for a sparse matrix: bounds the dense random block to a few MB.
SPARSE_BLOCK_ROWS = 4096


def mask(data_path, out, rate: float, mechanism: str, seed: int, span_length: int = 10,
         nonzero_only: bool = False) -> None:
    adata = ad.read_h5ad(data_path)
    modality = meta(adata)["modality"]
    if mechanism not in MECHANISMS[modality]:
        raise InputError(data_path, f"unknown mask mechanism '{mechanism}' for {modality} data",
                         hint=f"use one of {', '.join(MECHANISMS[modality])}")
    if nonzero_only and modality == "sequence":
        raise InputError(data_path, "nonzero_only applies to expression and time courses, not sequences",
                         hint="set mask.nonzero_only: false for sequence datasets")
    rng = np.random.default_rng(seed)
    if modality == "sequence":
        slot, candidates = "obsm", adata.obsm["tokens"] >= alph.GAP
        held = span_mask(candidates, rate, span_length, rng) if mechanism == "span" else mcar_mask(candidates, rate, rng)
        adata.obsm["heldout"] = held
    else:
        slot = "layers"
        held = matrix_mask(adata.X, rate, mechanism, nonzero_only, rng)
        adata.layers["heldout"] = held
    params = {"rate": float(rate), "mechanism": mechanism, "nonzero_only": bool(nonzero_only),
              **({"span_length": span_length} if mechanism == "span" else {})}
    meta(adata)["mask"] = {"key": "heldout", "slot": slot, "seed": int(seed), "n_heldout": int(held.sum()), **params}
    stamp(adata, "mask", params, inputs=[data_path], seed=seed)
    write_h5ad(adata, out)


def matrix_mask(matrix, rate: float, mechanism: str, nonzero_only: bool, rng: np.random.Generator):
    """Held-out entries of an expression matrix: boolean ndarray, or CSR for a sparse matrix."""
    if sp.issparse(matrix) and mechanism == "mcar":
        return sparse_mcar_mask(sp.csr_matrix(matrix), rate, nonzero_only, rng)
    values = np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=np.float64)
    candidates = ~np.isnan(values)
    if nonzero_only:
        candidates &= values != 0
    held = {"mcar": lambda: mcar_mask(candidates, rate, rng),
            "mar": lambda: weighted_mask(candidates, rate, _mar_weights(values, rng), rng),
            "mnar": lambda: weighted_mask(candidates, rate, _mnar_weights(values), rng)}[mechanism]()
    return sp.csr_matrix(held) if sp.issparse(matrix) else held


def sparse_mcar_mask(matrix: sp.csr_matrix, rate: float, nonzero_only: bool, rng: np.random.Generator) -> sp.csr_matrix:
    """`mcar_mask` of a CSR matrix (no NaN in sparse data), block by block: the same random
    stream, so the same entries as the dense computation."""
    blocks = []
    for start in range(0, matrix.shape[0], SPARSE_BLOCK_ROWS):
        rows = matrix[start : start + SPARSE_BLOCK_ROWS]
        held = rng.random(rows.shape) < rate
        if nonzero_only:
            held &= rows.toarray() != 0
        blocks.append(sp.csr_matrix(held))
    if not blocks:
        return sp.csr_matrix(matrix.shape, dtype=bool)
    return sp.vstack(blocks, format="csr")


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
