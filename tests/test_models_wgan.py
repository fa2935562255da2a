"""The wgan family (WGAN-GP): samples learn the gene-gene structure; it cannot impute, and impute
says so in one line."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from test_models import make_expression

from omicsgen.errors import InputError
from omicsgen.generate import generate
from omicsgen.impute import impute
from omicsgen.models import get_family, load_model
from omicsgen.models.base import Unsupported, observed_mask
from omicsgen.train import train

HPARAMS = {"hidden_dim": 64, "latent_dim": 8, "n_critic": 2}
# Many small steps: a GAN needs generator updates more than epochs. All epochs run (no early stopping).
TRAINER = {"batch_size": 32, "max_epochs": 20, "learning_rate": 1e-3}


def _data():
    return make_expression(n_cells=2000, n_genes=10, rank=2)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("wgan")
    _data().write_h5ad(root / "masked.h5ad")
    return root, train(root / "masked.h5ad", root / "model", "wgan", HPARAMS, TRAINER, seed=0)


def _corr_error(x, reference):
    return np.abs(np.corrcoef(x.T) - reference).mean()


def test_wgan_samples_learn_the_gene_correlations(run):
    root, checkpoint = run
    adata = ad.read_h5ad(root / "masked.h5ad")
    reference = pd.DataFrame(np.where(observed_mask(adata), adata.X, np.nan)).corr().to_numpy()
    samples = ad.read_h5ad(generate(root / "masked.h5ad", checkpoint, root / "samples.h5ad", 1000, seed=0)).X
    assert samples.shape == (1000, adata.n_vars) and np.isfinite(samples).all()
    untrained = get_family("wgan").from_data(adata, **HPARAMS).sample(1000, torch.Generator().manual_seed(0))
    independent = np.abs(np.eye(adata.n_vars) - reference).mean()
    assert _corr_error(samples, reference) < 0.6 * independent
    assert _corr_error(samples, reference) < 0.6 * _corr_error(untrained, reference)
    assert (samples >= np.nanmin(np.where(observed_mask(adata), adata.X, np.nan), axis=0) - 1e-6).all()


def test_wgan_cannot_impute_and_impute_says_so(run):
    root, checkpoint = run
    adata = ad.read_h5ad(root / "masked.h5ad")
    with pytest.raises(Unsupported):
        load_model(checkpoint).impute(adata.X, observed_mask(adata))
    with pytest.raises(InputError, match="a wgan model cannot impute") as err:
        impute(root / "masked.h5ad", checkpoint, root / "imputed.h5ad", seed=0)
    assert "\n" not in str(err.value) and not (root / "imputed.h5ad").exists()


def test_wgan_same_seed_same_weights(tmp_path):
    make_expression(n_cells=200, n_genes=10).write_h5ad(tmp_path / "masked.h5ad")
    first, second = (
        load_model(train(tmp_path / "masked.h5ad", tmp_path / name, "wgan", HPARAMS, {"max_epochs": 2}, seed=3))
        for name in ("a", "b")
    )
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
