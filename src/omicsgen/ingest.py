"""Stage `ingest`: a user's raw file -> results/{dataset}/ingested.h5ad, validated, nothing dropped."""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import InputError
from .io import read_dataset
from .provenance import meta, stamp, write_h5ad

log = logging.getLogger(__name__)


def ingest(path, out, dataset: str, modality: str, fmt: str | None = None,
           alphabet: str = "auto", orientation: str = "auto", label: str | None = None,
           values: str = "auto", matrix: str = "X") -> None:
    adata = read_dataset(path, modality, fmt, alphabet, orientation, values, matrix)
    if label:
        adata.obs["label"] = read_labels(adata, label, modality, path)
    info = meta(adata)
    info.update(dataset=dataset, modality=modality, source=str(path))
    stamp(adata, "ingest", {"format": fmt, "alphabet": alphabet, "orientation": orientation, "label": label,
                              "values": values, "matrix": matrix},
          inputs=[path])
    log.info("%s: read %d %s x %d features from %s", dataset, adata.n_obs,
             "records" if modality == "sequence" else "samples", adata.n_vars, Path(path).name)
    write_h5ad(adata, out)


def read_labels(adata, label: str, modality: str, path) -> pd.Categorical:
    """Sequences: a regex with one group over the FASTA header; tables: the name of an annotation column."""
    if modality == "sequence":
        try:
            pattern = re.compile(label)
        except re.error as err:
            raise InputError(path, f"label regex '{label}' is not a valid regular expression: {err}") from None
        headers = (adata.obs["id"] + " " + adata.obs["description"]).str.strip()
        found = headers.str.extract(pattern, expand=False)
        if isinstance(found, pd.DataFrame):
            raise InputError(path, f"label regex '{label}' must have exactly one group")
        if found.isna().any():
            record = adata.obs["id"].iloc[int(np.flatnonzero(found.isna())[0])]
            raise InputError(path, f"label regex '{label}' does not match the header", where=f"record '{record}'",
                             hint=f"{int(found.isna().sum())} records do not match")
        return pd.Categorical(found.to_numpy())
    if label not in adata.obs:
        raise InputError(path, f"no annotation column named '{label}' for the label",
                         hint=f"columns: {', '.join(map(str, adata.obs.columns)) or 'none'}")
    return pd.Categorical(adata.obs[label].astype(str).to_numpy())
