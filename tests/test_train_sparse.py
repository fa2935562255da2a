"""Sparse end to end: a CSR X and a CSR held-out mask train the VAE batch by batch, exactly as
the same data stored dense."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import scipy.sparse as sp
import torch

from omicsgen import impute as impute_module
from omicsgen.batches import CsrRows, InMemoryBatches
from omicsgen.impute import impute
from omicsgen.ingest import ingest
from omicsgen.mask import mask
from omicsgen.models import load_model
from omicsgen.models.vae import VAE
from omicsgen.preprocess import preprocess
from omicsgen.train import train

TRAINER = {"max_epochs": 2, "batch_size": 64}


@pytest.fixture(scope="module")
def masked(tmp_path_factory, tiny_data):
    """The tiny 10x cells through ingest, preprocess and mask (sparse), and a dense copy."""
    folder = tmp_path_factory.mktemp("sparse")
    ingest(tiny_data["cells"], folder / "i.h5ad", "cells", "expression")
    preprocess(folder / "i.h5ad", folder / "p.h5ad", {"n_top_genes": 100, "min_cells": 3}, {"val": 0.1, "test": 0.2}, 0)
    mask(folder / "p.h5ad", folder / "sparse.h5ad", rate=0.1, mechanism="mcar", seed=0)
    dense = ad.read_h5ad(folder / "sparse.h5ad")
    dense.X = dense.X.toarray()
    for key in list(dense.layers):
        dense.layers[key] = dense.layers[key].toarray()
    dense.write_h5ad(folder / "dense.h5ad")
    return folder


def test_sparse_tensors_are_row_sources_with_the_dense_values(masked):
    sparse, dense = ad.read_h5ad(masked / "sparse.h5ad"), ad.read_h5ad(masked / "dense.h5ad")
    assert sp.issparse(sparse.X) and sp.issparse(sparse.layers["heldout"])
    from_sparse, from_dense = VAE.tensors(sparse, "train"), VAE.tensors(dense, "train")
    assert isinstance(from_sparse["x"], CsrRows) and isinstance(from_sparse["observed"], CsrRows)
    assert set(from_sparse) == set(from_dense) == {"x", "observed", "counts", "library"}
    rows = torch.tensor([5, 0, 17, 3])
    for name, tensor in from_dense.items():
        assert torch.equal(from_sparse[name][rows], tensor[rows]), name
    # held-out entries never reach a batch
    batch = next(iter(InMemoryBatches(from_sparse, 32)))
    assert (batch["x"][~batch["observed"]] == 0).all() and (~batch["observed"]).any()


@pytest.mark.parametrize("likelihood", ["gaussian", "nb"])
def test_sparse_and_dense_data_train_the_same_weights(tmp_path, masked, likelihood):
    weights = {}
    for name in ("sparse", "dense"):
        path = train(masked / f"{name}.h5ad", tmp_path / name, "vae", {"likelihood": likelihood, "hidden_dim": 32},
                     TRAINER, seed=0)
        weights[name] = load_model(path).state_dict()
    for key, tensor in weights["dense"].items():
        torch.testing.assert_close(weights["sparse"][key], tensor, rtol=1e-5, atol=1e-6, msg=key)


def test_batches_stay_on_the_host_for_a_cpu_device(masked):
    sparse = ad.read_h5ad(masked / "sparse.h5ad")
    loader = InMemoryBatches(VAE.tensors(sparse, "train"), 16)
    assert loader.to_device(torch.device("cpu")) == "host"
    assert isinstance(loader.tensors["x"], CsrRows) and not loader.tensors["x"].pin


def test_imputing_sparse_data_block_by_block_writes_the_dense_result_as_csr(tmp_path, masked, monkeypatch):
    checkpoint = train(masked / "sparse.h5ad", tmp_path / "model", "vae", {"likelihood": "nb", "hidden_dim": 32},
                       TRAINER, seed=0)
    whole = ad.read_h5ad(impute(masked / "dense.h5ad", checkpoint, tmp_path / "dense_imputed.h5ad", seed=0, n_draws=4))
    monkeypatch.setattr(impute_module, "INFERENCE_CHUNK", 37)  # many blocks, the last one short
    monkeypatch.setattr(impute_module, "MAX_DRAW_ENTRIES", 50)  # fewer than the unobserved test entries
    blocks = ad.read_h5ad(impute(masked / "sparse.h5ad", checkpoint, tmp_path / "sparse_imputed.h5ad", seed=0, n_draws=4))
    for key in ("imputed", "imputed_sd", "imputed_lower", "imputed_upper"):
        assert sp.issparse(blocks.layers[key]), key
        assert not isinstance(whole.layers[key], sp.spmatrix), key
    np.testing.assert_allclose(blocks.layers["imputed"].toarray(), whole.layers["imputed"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(blocks.obsm["X_vae"], whole.obsm["X_vae"], rtol=1e-5, atol=1e-6)
    held = whole.layers["heldout"].astype(bool)
    assert (blocks.layers["imputed"].toarray()[held] > 0).all()  # every held-out entry predicted
    assert (blocks.layers["imputed_sd"].toarray()[~held] == 0).all() and (blocks.layers["imputed_sd"].toarray()[held] > 0).any()
    # draws: all unobserved test entries when they fit, a seeded subset when capped
    test = (whole.obs["split"] == "test").to_numpy()
    kept, capped = whole.uns[impute_module.DRAWS_KEY], blocks.uns[impute_module.DRAWS_KEY]
    assert not kept["sampled"] and len(kept["rows"]) == held[test].sum()
    assert capped["sampled"] and 0 < len(capped["rows"]) < len(kept["rows"])
    assert test[capped["rows"]].all() and held[capped["rows"], capped["cols"]].all()
