"""Fill held-out and natively missing entries with a trained model: imputed.h5ad."""

from __future__ import annotations

import logging
from pathlib import Path

import anndata as ad
import numpy as np
import torch

from .generate import inherited_provenance, unsupported
from .models.base import INFERENCE_CHUNK, Unsupported, data_matrix, modality, observed_mask
from .models.registry import load_model_for
from .provenance import meta, stamp, write_h5ad

log = logging.getLogger(__name__)

N_DRAWS = 20  # multiple imputation: draws per entry when the family can draw (config impute.n_draws)
INTERVAL = 0.9  # imputed_lower / imputed_upper: the central 90% interval of the draws
DRAWS_KEY = "imputation_draws"  # uns: the draws at the unobserved entries (evaluate scores calibration)


def impute(data_path, checkpoint, out_path, seed: int, n_draws: int = N_DRAWS) -> Path:
    """Write a copy of masked.h5ad with the model's filled matrix beside the truth.

    Expression / time course: `layers["imputed"]` (X stays the truth, NaN included);
    sequence: `obsm["tokens_imputed"]` (tokens stay the truth). Every entry the model could see
    is copied unchanged; held-out and missing entries (NaN, MISSING token) are predicted.
    Families with a latent space add its per-row means as `obsm["X_<family>"]`.

    Probabilistic families (`can_draw_imputations`) also draw `n_draws` imputations (0 = none):
    `layers["imputed_sd"]`, `["imputed_lower"]`, `["imputed_upper"]` (their standard deviation
    and central 90% interval; sd 0 and lower = upper = the value where observed) and, for
    calibration scoring, the draws at the unobserved entries in `uns["imputation_draws"]`.
    """
    data_path, checkpoint, out_path = Path(data_path), Path(checkpoint), Path(out_path)
    adata = ad.read_h5ad(data_path)
    model = load_model_for(checkpoint, adata, data_path)
    if not model.can_impute:
        raise unsupported(checkpoint, model, "impute", model.cannot_impute)

    torch.manual_seed(seed)
    values, observed = data_matrix(adata), observed_mask(adata)
    try:
        filled = model.impute(values, observed, obs=adata.obs)
    except Unsupported as err:
        raise unsupported(checkpoint, model, "impute", str(err)) from None
    if modality(adata) == "sequence":
        adata.obsm["tokens_imputed"] = filled
    else:
        adata.layers["imputed"] = filled
    if model.has_latent:
        # a conditional model embeds each row with its own label
        labelled = {"obs": adata.obs} if model.hparams.get("condition_on") else {}
        adata.obsm[f"X_{model.family}"] = model.embed(values, observed, **labelled)
    drawn = 0
    if n_draws > 0 and getattr(model, "can_draw_imputations", False) and modality(adata) != "sequence":
        summary = summarise_draws(model, values, observed, n_draws, torch.Generator().manual_seed(seed), adata.obs)
        adata.uns[DRAWS_KEY] = summary.pop("draws")
        adata.layers.update(summary)
        drawn = n_draws
    elif n_draws > 0:
        log.info("%s: one imputation (the family draws none)", model.family)

    meta(adata)["provenance"] = inherited_provenance(adata, checkpoint)
    params = {"checkpoint": str(checkpoint), "family": model.family, "n_draws": drawn}
    stamp(adata, "impute", params, inputs=[data_path, checkpoint], seed=seed)
    write_h5ad(adata, out_path)
    return out_path


def summarise_draws(model, values: np.ndarray, observed: np.ndarray, n_draws: int, generator: torch.Generator, obs=None) -> dict:
    """Per-entry spread of `n_draws` imputations, drawn a block of rows at a time so that memory
    holds n_draws x block x columns, never n_draws x all rows.

    Returns layers `imputed_sd`, `imputed_lower`, `imputed_upper` (float32, shaped like
    `values`) and `draws`: {"rows", "cols", "values"} with the draws (entries x n_draws, float32)
    at the unobserved entries only, in row-major order. Rows are drawn independently (obs, if
    given, is cut to the block)."""
    n_rows, n_cols = values.shape
    sd = np.zeros((n_rows, n_cols), dtype=np.float32)
    lower = np.array(values, dtype=np.float32)
    upper = lower.copy()
    kept = []
    quantiles = [(1 - INTERVAL) / 2, (1 + INTERVAL) / 2]
    for start in range(0, n_rows, INFERENCE_CHUNK):
        block = slice(start, min(start + INFERENCE_CHUNK, n_rows))
        block_obs = obs.iloc[block] if obs is not None else None
        draws = np.asarray(model.impute_draws(values[block], observed[block], n_draws, generator, obs=block_obs), dtype=np.float32)
        if draws.shape != (n_draws, block.stop - block.start, n_cols):
            raise ValueError(f"{model.family}.impute_draws returned shape {draws.shape}, expected {(n_draws, block.stop - block.start, n_cols)}")
        hidden = ~observed[block]
        at_hidden = draws[:, hidden]  # n_draws x hidden entries of the block
        sd[block][hidden] = at_hidden.std(axis=0)
        low, high = np.quantile(at_hidden, quantiles, axis=0)
        lower[block][hidden], upper[block][hidden] = low, high
        kept.append(at_hidden.T)
    rows, cols = np.nonzero(~observed)
    entries = np.concatenate(kept) if kept else np.zeros((0, n_draws), dtype=np.float32)
    draws = {"rows": rows.astype(np.int32), "cols": cols.astype(np.int32), "values": entries.astype(np.float32)}
    return {"imputed_sd": sd, "imputed_lower": lower, "imputed_upper": upper, "draws": draws}
