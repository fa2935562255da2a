"""Stage `preprocess`: ingested.h5ad -> prepared.h5ad (QC, normalisation, feature selection, split)."""

from __future__ import annotations

import json

import anndata as ad

from ..choose import write_facts
from ..errors import InputError
from ..provenance import meta, stamp, write_h5ad
from .expression import prepare_expression
from .sequence import prepare_sequences
from .split import assign_split

_PREPARE = {"expression": prepare_expression, "timecourse": prepare_expression, "sequence": prepare_sequences}


def preprocess(data_path, out, params: dict, split: dict, seed: int, facts_path=None) -> None:
    """`params` is the config's preprocess section for this modality; `split` its val/test fractions;
    `facts_path` gets the facts that choose the models (`choose.data_facts`)."""
    adata = ad.read_h5ad(data_path)
    modality = meta(adata)["modality"]
    removed: list[dict] = []
    adata = _PREPARE[modality](adata, params, removed)
    if adata.n_obs < 3:
        filtered = any(r["removed_obs"] for r in removed)
        hint = ("loosen the preprocess filters in the config: " + _summary(removed) if filtered else
                "train, validation and test need a row each: give at least 3 rows (samples, records)")
        raise InputError(data_path, f"only {adata.n_obs} rows left after preprocessing", hint=hint)
    assign_split(adata, split["val"], split["test"], seed, group="series" if modality == "timecourse" else None)
    meta(adata)["filtered"] = json.dumps(removed)
    stamp(adata, "preprocess", {"params": params, "split": split}, inputs=[data_path], seed=seed)
    write_h5ad(adata, out)
    if facts_path:
        write_facts(adata, facts_path)


def _summary(removed: list[dict]) -> str:
    return "; ".join(f"{r['step']} removed {r['removed_obs']} rows, {r['removed_vars']} features" for r in removed)
