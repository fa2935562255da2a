"""The gain family: adversarial imputation; it cannot sample, and generate says so in one line."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import heldout_mse_vs_gene_means
from test_models import make_expression, make_timecourse

from omicsgen.errors import InputError
from omicsgen.generate import generate
from omicsgen.impute import impute
from omicsgen.models import load_model
from omicsgen.models.base import Unsupported
from omicsgen.models.gain import GAIN
from omicsgen.train import train, trainable

HPARAMS = {"hidden_dim": 64}
TRAINER = {"batch_size": 32, "max_epochs": 12}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("gain")
    make_expression(n_cells=400).write_h5ad(root / "masked.h5ad")
    return root, train(root / "masked.h5ad", root / "model", "gain", HPARAMS, TRAINER, seed=0)


def test_gain_imputes_better_than_gene_means(run):
    root, checkpoint = run
    adata = ad.read_h5ad(root / "masked.h5ad")
    out = ad.read_h5ad(impute(root / "masked.h5ad", checkpoint, root / "imputed.h5ad", seed=0))
    model_mse, baseline_mse = heldout_mse_vs_gene_means(adata, out)
    assert model_mse < 0.3 * baseline_mse


def test_gain_validation_loss_falls(run):
    _, checkpoint = run
    metrics = pd.read_csv(checkpoint.parent / "metrics.csv")
    assert list(metrics.columns) == ["epoch", "train_loss", "val_loss"]
    assert metrics["val_loss"].min() < 0.5 * metrics["val_loss"].iloc[0]


def test_gain_cannot_sample_and_generate_says_so(run):
    root, checkpoint = run
    with pytest.raises(Unsupported):
        load_model(checkpoint).sample(3, torch.Generator().manual_seed(0))
    with pytest.raises(InputError, match="a gain model cannot generate samples") as err:
        generate(root / "masked.h5ad", checkpoint, root / "samples.h5ad", 3, seed=0)
    assert "\n" not in str(err.value)
    assert not (root / "samples.h5ad").exists()


def test_gain_same_seed_same_weights_and_time_courses(tmp_path):
    make_timecourse().write_h5ad(tmp_path / "tc.h5ad")
    first, second = (
        load_model(train(tmp_path / "tc.h5ad", tmp_path / name, "gain", HPARAMS, {"max_epochs": 2}, seed=5))
        for name in ("a", "b")
    )
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    imputed = ad.read_h5ad(impute(tmp_path / "tc.h5ad", tmp_path / "a" / "model.ckpt", tmp_path / "imputed.h5ad", seed=0))
    assert np.isfinite(imputed.layers["imputed"]).all()


def test_gain_validation_hides_the_same_entries_every_epoch(monkeypatch):
    """Early stopping compares epochs on one set of hidden val entries, and drawing it leaves the
    training noise (the global RNG) alone."""
    adata = make_expression(n_cells=60)
    model = trainable(GAIN).from_data(adata, **HPARAMS)  # validation_step is a Lightning hook
    batch = {key: value[:32] for key, value in GAIN.tensors(adata, ["train", "val"]).items()}
    logged = []
    monkeypatch.setattr(model, "record_epoch_metric", lambda name, value: logged.append(float(value)))
    torch.manual_seed(0)
    state = torch.get_rng_state()
    with torch.no_grad():
        model.validation_step(batch, 0)
        model.on_validation_epoch_end()
        assert torch.equal(torch.get_rng_state(), state)
        torch.rand(1000)  # the training steps between two validation passes draw noise
        model.validation_step(batch, 0)
        model.on_validation_epoch_end()
    assert len(logged) == 2 and logged[0] == logged[1]
    hide = GAIN.validation_hide((400, 50), 0, "cpu")
    assert 0.15 < hide.float().mean() < 0.25
    assert torch.equal(hide, GAIN.validation_hide((400, 50), 0, "cpu"))
    assert not torch.equal(hide, GAIN.validation_hide((400, 50), 1, "cpu"))  # batches differ
