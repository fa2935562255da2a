"""Sequences: a length filter, duplicates counted, tokens trimmed to the longest kept record."""

from __future__ import annotations

import anndata as ad
import numpy as np

from ..errors import InputError
from ..provenance import meta
from .expression import _record


def prepare_sequences(adata: ad.AnnData, params: dict, removed: list[dict]) -> ad.AnnData:
    lengths = adata.obs["length"].to_numpy()
    min_length, max_length = int(params.get("min_length", 1)), params.get("max_length")
    keep = lengths >= min_length
    if max_length:
        keep &= lengths <= int(max_length)
    _record(removed, "length", int((~keep).sum()), 0,
            f"length outside [{min_length}, {max_length or 'any'}]")
    if not keep.any():
        raise InputError(meta(adata).get("source", "input"), "no record passes the length filter",
                         hint="change min_length / max_length in the config's preprocess section")
    adata = adata[keep].copy()
    tokens = adata.obsm["tokens"][:, : int(adata.obs["length"].max())]
    adata.obsm["tokens"] = tokens
    adata.obs["padded_length"] = tokens.shape[1]
    meta(adata)["duplicate_sequences"] = count_duplicates(tokens)
    return adata


def count_duplicates(tokens: np.ndarray) -> int:
    """Records identical to an earlier one (kept; reported so a user knows)."""
    unique = np.unique(np.ascontiguousarray(tokens).view(f"V{tokens.shape[1]}"))
    return int(tokens.shape[0] - unique.size)
