"""generate: expression samples drawn and written a chunk of rows at a time, atomically."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch
from test_models import make_expression

import omicsgen.generate as generate_module
from omicsgen.generate import generate
from omicsgen.models.vae import VAE
from omicsgen.train import train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("generate")
    make_expression(n_cells=120).write_h5ad(root / "masked.h5ad")
    return root / "masked.h5ad", train(root / "masked.h5ad", root / "vae", "vae", {"hidden_dim": 16}, {"max_epochs": 1}, seed=0)


def test_samples_are_written_in_chunks_of_rows(trained, tmp_path, monkeypatch):
    data, ckpt = trained
    asked = []
    original = VAE.sample

    def spy(self, n, generator, labels=None):
        asked.append(n)
        return original(self, n, generator, labels)

    monkeypatch.setattr(VAE, "sample", spy)
    monkeypatch.setattr(generate_module, "GENERATE_CHUNK", 7)
    out = ad.read_h5ad(generate(data, ckpt, tmp_path / "samples.h5ad", 20, seed=2))
    assert asked == [7, 7, 6]
    assert out.shape == (20, 30) and out.X.dtype == np.float32 and np.isfinite(out.X).all()
    assert list(out.obs_names) == [f"sample_{i + 1}" for i in range(20)]
    assert (out.obs["origin"] == "generated").all() and "generate" in out.uns["omicsgen"]["provenance"]
    # The rows are the chunks' draws in order, from one generator seeded once.
    generator = torch.Generator().manual_seed(2)
    model = generate_module.load_model_for(ckpt, ad.read_h5ad(data), data)
    expected = np.concatenate([original(model, n, generator) for n in (7, 7, 6)])
    assert np.array_equal(out.X, expected)
    again = ad.read_h5ad(generate(data, ckpt, tmp_path / "again.h5ad", 20, seed=2))
    assert np.array_equal(out.X, again.X)


def test_a_failure_mid_way_leaves_no_output(trained, tmp_path, monkeypatch):
    data, ckpt = trained
    calls = []
    original = VAE.sample

    def failing(self, n, generator, labels=None):
        calls.append(n)
        if len(calls) == 2:
            raise RuntimeError("out of memory")
        return original(self, n, generator, labels)

    monkeypatch.setattr(VAE, "sample", failing)
    monkeypatch.setattr(generate_module, "GENERATE_CHUNK", 5)
    with pytest.raises(RuntimeError, match="out of memory"):
        generate(data, ckpt, tmp_path / "samples.h5ad", 12, seed=0)
    assert list(tmp_path.iterdir()) == []


def test_zero_samples(trained, tmp_path):
    data, ckpt = trained
    out = ad.read_h5ad(generate(data, ckpt, tmp_path / "samples.h5ad", 0, seed=0))
    assert out.shape == (0, 30)


def test_whole_number_features_get_whole_number_samples(tmp_path):
    """Codes, scores and ages (train values all whole numbers) come out whole and within their
    train range; the other features are left as drawn, and --keep-fractions keeps them all."""
    data = make_expression(n_cells=120)
    data.X[:, 0] = np.round(data.X[:, 0] * 3)  # a score of 0..~12
    data.X[:, 1] = (data.X[:, 1] > 2).astype(np.float32)  # a 0/1 code
    data.X[5, 1] = np.nan  # natively missing: does not make the feature fractional
    data.write_h5ad(tmp_path / "masked.h5ad")
    ckpt = train(tmp_path / "masked.h5ad", tmp_path / "vae", "vae", {"hidden_dim": 16}, {"max_epochs": 1}, seed=0)
    out = ad.read_h5ad(generate(tmp_path / "masked.h5ad", ckpt, tmp_path / "samples.h5ad", 200, seed=0))
    train_x = data.X[(data.obs["split"] == "train").to_numpy()]
    for j in (0, 1):
        assert np.array_equal(out.X[:, j], np.round(out.X[:, j]))
        assert np.nanmin(train_x[:, j]) <= out.X[:, j].min() and out.X[:, j].max() <= np.nanmax(train_x[:, j])
    assert len(np.unique(out.X[:, 1])) == 2  # both codes drawn, nothing between
    assert not np.array_equal(out.X[:, 2], np.round(out.X[:, 2]))
    assert list(out.uns["omicsgen"]["whole_number_features"]) == list(data.var_names[:2])
    kept = ad.read_h5ad(generate(tmp_path / "masked.h5ad", ckpt, tmp_path / "kept.h5ad", 200, seed=0, whole_numbers=False))
    assert not np.array_equal(kept.X[:, 1], np.round(kept.X[:, 1]))
    assert np.array_equal(np.clip(np.round(kept.X[:, 1]), 0, 1), out.X[:, 1])  # the same draws, rounded
