"""Shared fixtures: tiny real data cut from resources/, so tests run in seconds."""

from __future__ import annotations

import gzip
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

ROOT = Path(__file__).resolve().parent.parent
RESOURCES = ROOT / "resources"


def head_fasta(source: Path, n_records: int) -> str:
    opener = gzip.open if source.suffix == ".gz" else open
    out, count = [], 0
    with opener(source, "rt") as handle:
        for line in handle:
            if line.startswith(">"):
                count += 1
                if count > n_records:
                    break
            if count:
                out.append(line)
    return "".join(out)


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> dict[str, Path]:
    """Real data, cut small: 300 cells, 120 DNA records, 120 aligned proteins, 6 people's time courses."""
    folder = tmp_path_factory.mktemp("tiny_data")
    cells = ad.read_h5ad(RESOURCES / "mouse_10x_counts.h5ad")
    cells = cells[(cells.X > 0).sum(axis=1).A1 >= 60][:300].copy()
    cells.write_h5ad(folder / "cells.h5ad")
    (folder / "peaks.fa").write_text(head_fasta(RESOURCES / "oct4_peaks.fa.gz", 120))
    (folder / "ww.fa").write_text(head_fasta(RESOURCES / "ww_domain_alignment.fa", 120))
    flu = pd.read_csv(RESOURCES / "flu_timecourse.tsv.gz", sep="\t", index_col=0)
    people = sorted(flu["series"].unique())[:6]
    flu = flu[flu["series"].isin(people)].iloc[:, :203]  # series, time, condition + 200 genes
    flu.to_csv(folder / "flu.tsv", sep="\t")
    return {"cells": folder / "cells.h5ad", "peaks": folder / "peaks.fa", "ww": folder / "ww.fa",
            "flu": folder / "flu.tsv"}


def heldout_mse_vs_gene_means(adata, imputed):
    """(model MSE, per-gene-mean MSE) on the held-out entries, after checking that `imputed`
    kept every observed entry and filled everything with finite values."""
    from omicsgen.models.base import observed_mask

    observed, heldout = observed_mask(adata), adata.layers["heldout"]
    filled = imputed.layers["imputed"]
    assert np.array_equal(filled[observed], adata.X[observed]) and np.isfinite(filled).all()
    gene_means = np.nanmean(np.where(observed, adata.X, np.nan), axis=0)
    model_mse = np.mean((filled[heldout] - adata.X[heldout]) ** 2)
    baseline_mse = np.mean((np.broadcast_to(gene_means, adata.shape)[heldout] - adata.X[heldout]) ** 2)
    return model_mse, baseline_mse


def kernels_cached_by(script: str, cache_dir: Path) -> set[str]:
    """The numba kernels a fresh Python process running `script` leaves in `cache_dir`
    (NUMBA_CACHE_DIR): the names of the functions whose compiled code is on disk."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "NUMBA_CACHE_DIR": str(cache_dir), "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-c", script], env=env, check=True)
    return {path.name.split(".")[1].split("-")[0] for path in cache_dir.rglob("*.nbi")}
