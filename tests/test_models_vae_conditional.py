"""The conditional VAE (`condition_on: label`): samples asked for a label look like that label's
cells, for every likelihood; generate draws labels at the training frequencies and writes them."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from test_models import make_expression
from test_models_counts import make_counts

from omicsgen.errors import InputError
from omicsgen.generate import generate
from omicsgen.models import get_family, load_model
from omicsgen.models.base import observed_mask
from omicsgen.train import train

SMALL = {"hidden_dim": 64, "latent_dim": 4, "condition_on": "label"}
TRAINER = {"batch_size": 64, "max_epochs": 15, "learning_rate": 3e-3, "patience": 5}


def labelled_counts(n_cells=480, seed=0) -> ad.AnnData:
    """make_counts' cell types (own gene profiles) as obs["label"], in unequal shares."""
    adata = make_counts(n_cells=n_cells, n_types=3, seed=seed)
    adata.obs["label"] = np.array(["alpha", "beta", "gamma"])[adata.obs["type"].to_numpy()]
    return adata


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("cvae")
    labelled_counts().write_h5ad(root / "masked.h5ad")
    ckpts = {
        likelihood: train(root / "masked.h5ad", root / likelihood, "vae", {**SMALL, "likelihood": likelihood}, TRAINER,
                          seed=0)
        for likelihood in ("gaussian", "nb", "zinb")
    }
    return root / "masked.h5ad", ckpts


@pytest.mark.parametrize("likelihood", ["gaussian", "nb", "zinb"])
def test_samples_of_a_label_are_closest_to_that_labels_cells(runs, likelihood):
    data, ckpts = runs
    adata, model = ad.read_h5ad(data), load_model(ckpts[likelihood])
    names = list(model.hparams.label_names)
    assert names == ["alpha", "beta", "gamma"]
    visible = np.where(observed_mask(adata), adata.X, np.nan)
    real_means = np.stack([np.nanmean(visible[adata.obs["label"] == name], axis=0) for name in names])
    generator = torch.Generator().manual_seed(0)
    for k, name in enumerate(names):
        samples = model.sample(300, generator, labels=np.full(300, k))
        assert samples.shape == (300, adata.n_vars) and np.isfinite(samples).all()
        distance = np.linalg.norm(samples.mean(0) - real_means, axis=1)
        others = np.delete(distance, k)
        assert distance[k] < 0.5 * others.min(), (likelihood, name, distance)


def test_labels_are_checked_and_default_to_training_frequencies(runs):
    data, ckpts = runs
    model = load_model(ckpts["nb"])
    with pytest.raises(ValueError, match="indices into label_names"):
        model.sample(5, torch.Generator().manual_seed(0), labels=np.array([0, 1, 2, 3, 0]))
    train_rows = ad.read_h5ad(data).obs.query("split == 'train'")
    expected = train_rows["label"].value_counts(normalize=True).sort_index().to_numpy()
    assert np.allclose(model.label_frequencies.numpy(), expected)
    unconditional = get_family("vae").from_data(labelled_counts(n_cells=60), hidden_dim=8, latent_dim=2)
    with pytest.raises(ValueError, match="not conditional"):
        unconditional.sample(2, torch.Generator().manual_seed(0), labels=np.array([0, 1]))


def test_generate_draws_labels_at_training_frequencies(runs, tmp_path):
    data, ckpts = runs
    out = ad.read_h5ad(generate(data, ckpts["zinb"], tmp_path / "samples.h5ad", 2000, seed=3))
    again = ad.read_h5ad(generate(data, ckpts["zinb"], tmp_path / "again.h5ad", 2000, seed=3))
    assert np.array_equal(out.X, again.X) and out.obs["label"].equals(again.obs["label"])
    train_rows = ad.read_h5ad(data).obs.query("split == 'train'")
    expected = train_rows["label"].value_counts(normalize=True).sort_index()
    drawn = out.obs["label"].value_counts(normalize=True).sort_index()
    assert list(drawn.index) == list(expected.index)
    assert np.abs(drawn.to_numpy() - expected.to_numpy()).max() < 0.04
    # The drawn label decides the profile: each label's samples sit nearest that label's cells.
    real = ad.read_h5ad(data)
    for name in expected.index:
        own = np.linalg.norm(out.X[out.obs["label"] == name].mean(0) - real.X[real.obs["label"] == name].mean(0))
        other = min(np.linalg.norm(out.X[out.obs["label"] == name].mean(0) - real.X[real.obs["label"] == o].mean(0))
                    for o in expected.index if o != name)
        assert own < other


def test_condition_on_needs_labels(tmp_path):
    make_expression(n_cells=60).write_h5ad(tmp_path / "masked.h5ad")
    with pytest.raises(InputError, match="needs labels"):
        train(tmp_path / "masked.h5ad", tmp_path / "out", "vae", {"condition_on": "label"}, {"max_epochs": 1}, seed=0)
    with pytest.raises(InputError, match="condition_on may only be"):
        train(tmp_path / "masked.h5ad", tmp_path / "out", "vae", {"condition_on": "split"}, {"max_epochs": 1}, seed=0)
    assert not (tmp_path / "out" / "model.ckpt").exists()
