"""Fill held-out and natively missing entries with a trained model: imputed.h5ad."""

from __future__ import annotations

from pathlib import Path

import anndata as ad
import torch

from .generate import inherited_provenance, unsupported
from .models.base import Unsupported, data_matrix, modality, observed_mask
from .models.registry import load_model_for
from .provenance import meta, stamp, write_h5ad


def impute(data_path, checkpoint, out_path, seed: int) -> Path:
    """Write a copy of masked.h5ad with the model's filled matrix beside the truth.

    Expression / time course: `layers["imputed"]` (X stays the truth, NaN included);
    sequence: `obsm["tokens_imputed"]` (tokens stay the truth). Every entry the model could see
    is copied unchanged; held-out and missing entries (NaN, MISSING token) are predicted.
    Families with a latent space add its per-row means as `obsm["X_<family>"]`.
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
        adata.obsm[f"X_{model.family}"] = model.embed(values, observed)

    meta(adata)["provenance"] = inherited_provenance(adata, checkpoint)
    params = {"checkpoint": str(checkpoint), "family": model.family}
    stamp(adata, "impute", params, inputs=[data_path, checkpoint], seed=seed)
    write_h5ad(adata, out_path)
    return out_path
