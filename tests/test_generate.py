"""generate: expression samples drawn and written a chunk of rows at a time, atomically."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pytest
import torch
from test_models import make_expression

import omicsgen.generate as generate_module
from omicsgen.generate import generate
from omicsgen.models.vae import VAE
from omicsgen.provenance import meta
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
    generate_module.fit_latent_density(model, ad.read_h5ad(data), seed=2)
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
    kept = ad.read_h5ad(generate(tmp_path / "masked.h5ad", ckpt, tmp_path / "kept.h5ad", 200, seed=0, whole_numbers=False,
                                 levels=False))
    assert not np.array_equal(kept.X[:, 1], np.round(kept.X[:, 1]))
    assert np.array_equal(np.clip(np.round(kept.X[:, 1]), 0, 1), out.X[:, 1])  # the same draws, rounded


def test_features_of_a_few_values_get_the_nearest_of_them(tmp_path):
    """A grade of 0 / 0.5 / 1 (not whole numbers) gets only those values, each drawn; a feature
    of many values, or of few values seen too rarely to be a code, is left as drawn; levels=False
    keeps the draws, which fall between the values."""
    data = make_expression(n_cells=120)
    grade = np.array([0.0, 0.5, 1.0])
    data.X[:, 3] = grade[np.arange(120) % 3]  # edema-like
    data.X[:, 4] = 0.1 * np.arange(120) % 1.3  # 13 distinct values: more than MAX_LEVELS
    data.write_h5ad(tmp_path / "masked.h5ad")
    ckpt = train(tmp_path / "masked.h5ad", tmp_path / "vae", "vae", {"hidden_dim": 16}, {"max_epochs": 1}, seed=0)
    out = ad.read_h5ad(generate(tmp_path / "masked.h5ad", ckpt, tmp_path / "samples.h5ad", 300, seed=0))
    assert set(np.unique(out.X[:, 3])) == set(grade)
    assert len(np.unique(out.X[:, 4])) > 20
    assert list(out.uns["omicsgen"]["level_features"]) == [data.var_names[3]]
    drawn = ad.read_h5ad(generate(tmp_path / "masked.h5ad", ckpt, tmp_path / "drawn.h5ad", 300, seed=0, levels=False))
    assert not np.isin(drawn.X[:, 3], grade).all()
    assert np.array_equal(np.asarray(drawn.X[:, 4]), np.asarray(out.X[:, 4]))  # the same draws elsewhere
    from omicsgen.generate import train_support

    assert list(train_support(data, whole_numbers=False).levels) == [3]
    data.uns["omicsgen"]["input_scale"] = "counts"  # log-normalised counts: a few values are cells', not codes
    assert train_support(data, whole_numbers=False) is None


def test_nearest_value():
    from omicsgen.generate import nearest

    values = np.array([0.0, 0.5, 1.0], dtype=np.float32)
    drawn = np.array([-3.0, 0.2, 0.26, 0.74, 0.76, 9.0, np.nan], dtype=np.float32)
    assert np.array_equal(nearest(values, drawn), np.array([0, 0, 0.5, 0.5, 1, 1, np.nan], dtype=np.float32), equal_nan=True)
    assert np.array_equal(nearest(values[:1], drawn[:3]), np.zeros(3, dtype=np.float32))


def test_samples_stay_within_each_features_train_range(tmp_path):
    """With train_range, no sample is below a feature's smallest train value or above its largest
    (a log count is never negative); a feature with no train value is left as drawn; without it
    (the default) the raw draws, which do leave the range, from the same seed."""
    data = make_expression(n_cells=120)
    is_train = (data.obs["split"] == "train").to_numpy()
    data.X[:, 0] = np.where(np.arange(120) % 3 == 0, 0.0, np.abs(data.X[:, 0]) * 0.1)  # a sparse abundance, a third zeros
    data.X[is_train, 4] = np.nan  # no train value at all
    data.write_h5ad(tmp_path / "masked.h5ad")
    ckpt = train(tmp_path / "masked.h5ad", tmp_path / "vae", "vae", {"hidden_dim": 16}, {"max_epochs": 1}, seed=0)
    out = ad.read_h5ad(generate(tmp_path / "masked.h5ad", ckpt, tmp_path / "samples.h5ad", 300, seed=0, train_range=True))
    raw = ad.read_h5ad(generate(tmp_path / "masked.h5ad", ckpt, tmp_path / "raw.h5ad", 300, seed=0))
    train_x = data.X[is_train]
    low, high = np.nanmin(train_x[:, [0, 1, 2, 3]], axis=0), np.nanmax(train_x[:, [0, 1, 2, 3]], axis=0)
    assert ((raw.X[:, [0, 1, 2, 3]] < low) | (raw.X[:, [0, 1, 2, 3]] > high)).any()  # the draws do leave it
    assert (out.X[:, [0, 1, 2, 3]] >= low).all() and (out.X[:, [0, 1, 2, 3]] <= high).all()
    assert (out.X[:, 0] == 0).mean() > 0.05  # draws below 0 became the zeros real rows hold
    inside = (raw.X >= np.nanmin(train_x, axis=0)) & (raw.X <= np.nanmax(train_x, axis=0))
    assert np.array_equal(out.X[inside], raw.X[inside])  # values inside the range are kept as drawn
    assert np.isfinite(out.X[:, 4]).all() and np.array_equal(out.X[:, 4], raw.X[:, 4])
    assert json.loads(meta(out)["provenance"]["generate"]["params"])["train_range"] is True


def test_count_samples_stay_within_the_train_range_of_sparse_data(tmp_path):
    """Sparse log-normalised counts: the range is taken from the sparse train rows, zeros included."""
    import scipy.sparse as sp

    data = make_expression(n_cells=120)
    x = np.nan_to_num(data.X) - 2.0
    x[x < 0] = 0.0
    data.X = sp.csr_matrix(x.astype(np.float32))
    data.write_h5ad(tmp_path / "masked.h5ad")
    ckpt = train(tmp_path / "masked.h5ad", tmp_path / "vae", "vae", {"hidden_dim": 16}, {"max_epochs": 1}, seed=0)
    out = ad.read_h5ad(generate(tmp_path / "masked.h5ad", ckpt, tmp_path / "samples.h5ad", 300, seed=0, train_range=True))
    train_x = x[(data.obs["split"] == "train").to_numpy()]
    assert (np.asarray(out.X) >= train_x.min(axis=0)).all() and (np.asarray(out.X) <= train_x.max(axis=0)).all()
    assert (np.asarray(out.X) == 0).mean() > 0.05


def test_vae_draws_z_from_a_mixture_fit_to_its_train_posteriors(trained, monkeypatch):
    """fit_latent_density fits sample's z density to posterior draws of the rows given (here an
    encoder whose posteriors sit in two tight clusters, at -3 and +3): z is then drawn from
    both clusters, not from N(0, I); latent_sampling: prior keeps N(0, I)."""
    data, ckpt = trained
    reference = ad.read_h5ad(data)
    model = generate_module.load_model_for(ckpt, reference, data)
    latent = model.hparams.latent_dim

    def two_clusters(x, observed, labels=None):
        centre = torch.where(torch.arange(len(x)) % 2 == 0, -3.0, 3.0)[:, None].expand(len(x), latent)
        return centre.clone(), torch.full((len(x), latent), float(np.log(0.01)))

    monkeypatch.setattr(model, "encode", two_clusters)
    values, observed = np.zeros((80, 30), dtype=np.float32), np.ones((80, 30), dtype=bool)
    assert "2-component" in model.fit_latent_density(values, observed, seed=0)
    z = model._draw_latent(4000, torch.Generator().manual_seed(0)).numpy()
    first = z[:, 0]
    assert abs((first > 0).mean() - 0.5) < 0.05 and (np.abs(np.abs(first) - 3) < 0.6).mean() > 0.99
    again = model._draw_latent(4000, torch.Generator().manual_seed(0)).numpy()
    assert np.array_equal(z, again)
    model.hparams.latent_sampling = "prior"
    assert "N(0, I)" in model.fit_latent_density(values, observed, seed=0)
    prior = model._draw_latent(4000, torch.Generator().manual_seed(0)).numpy()[:, 0]
    assert abs(prior.mean()) < 0.1 and abs(prior.std() - 1) < 0.1


def test_sample_noise_follows_each_features_own_scale(tmp_path):
    """The VAE's learned variance is bounded on X's scale (sd 0.03 to 12); samples take each
    feature's residual variance around the decoded train rows instead, so a feature of sd ~1e5
    and one of sd ~1e-3 keep their spread (before: 0.36x and 16x on a real table of such features)."""
    data = make_expression(n_cells=300)
    data.X[:, 0] *= 1e5
    data.X[:, 1] *= 1e-3
    # numerical noise around 0 (a speech table's wavelet means): constant to the networks, yet its
    # samples keep its spread (they took an sd of 1e-15 when the residual was summed in float32)
    data.X[:, 2] = np.random.default_rng(5).normal(0, 1e-19, 300).astype(np.float32)
    data.write_h5ad(tmp_path / "masked.h5ad")
    ckpt = train(tmp_path / "masked.h5ad", tmp_path / "vae", "vae", {"hidden_dim": 32}, {"max_epochs": 20}, seed=0)
    out = ad.read_h5ad(generate(tmp_path / "masked.h5ad", ckpt, tmp_path / "samples.h5ad", 600, seed=0))
    real = np.nanstd(data.X[(data.obs["split"] == "train").to_numpy()], axis=0)
    ratio = np.asarray(out.X).std(axis=0) / real
    assert 0.6 < ratio[0] < 1.6 and 0.6 < ratio[1] < 1.6 and 0.5 < ratio[2] < 2.0
    assert 0.6 < np.median(ratio[3:]) < 1.6
