"""Stage `ingest`: a user's raw file -> results/{dataset}/ingested.h5ad, validated, nothing dropped."""

from __future__ import annotations

import logging
from pathlib import Path

from .io import read_dataset
from .provenance import meta, stamp, write_h5ad

log = logging.getLogger(__name__)


def ingest(path, out, dataset: str, modality: str, fmt: str | None = None,
           alphabet: str = "auto", orientation: str = "auto") -> None:
    adata = read_dataset(path, modality, fmt, alphabet, orientation)
    info = meta(adata)
    info.update(dataset=dataset, modality=modality, source=str(path))
    stamp(adata, "ingest", {"format": fmt, "alphabet": alphabet, "orientation": orientation}, inputs=[path])
    log.info("%s: read %d %s x %d features from %s", dataset, adata.n_obs,
             "records" if modality == "sequence" else "samples", adata.n_vars, Path(path).name)
    write_h5ad(adata, out)
