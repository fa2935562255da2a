"""Count likelihoods of the vae family (nb, zinb): they must model counts better than per-gene fits
and sample with a realistic zero fraction, on X's scale."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from test_models import _heldout, _omicsgen_uns, _splits

from omicsgen.errors import InputError
from omicsgen.models.base import observed_mask
from omicsgen.models.counts import draw_counts, expected_log_normalised, nb_log_prob, target_sum, zinb_log_prob
from omicsgen.train import train


def make_counts(n_cells=600, n_genes=40, n_types=4, seed=0, target=1e4) -> ad.AnnData:
    """Cell types with their own gene profiles, log-normal libraries, NB noise (theta 3), and half of
    each library in genes outside the matrix; X = log1p(counts / library * target_sum)."""
    rng = np.random.default_rng(seed)
    profiles = rng.dirichlet(np.full(n_genes, 0.3), size=n_types) * 0.5
    types = rng.integers(0, n_types, size=n_cells)
    library = np.round(np.exp(rng.normal(np.log(800), 0.4, size=n_cells)))
    mu = profiles[types] * library[:, None]
    counts = rng.poisson(rng.gamma(3.0, mu / 3.0)).astype(np.float32)
    x = np.log1p(counts / library[:, None] * target).astype(np.float32)
    heldout = _heldout(np.ones_like(x, dtype=bool), 0.1, rng)
    adata = ad.AnnData(x, obs=pd.DataFrame({"library_size": library}, index=[f"cell{i}" for i in range(n_cells)]))
    adata.var_names = [f"gene{j}" for j in range(n_genes)]
    adata.layers["counts"] = counts
    adata.layers["heldout"] = heldout
    adata.obs["split"] = _splits(n_cells, rng)
    adata.obs["type"] = types
    uns = _omicsgen_uns("expression", "layers", int(heldout.sum()))
    uns["provenance"] = {"preprocess": {"params": json.dumps({"params": {"target_sum": target}})}}
    adata.uns["omicsgen"] = uns
    return adata


TRAINER = {"batch_size": 64, "max_epochs": 15, "learning_rate": 3e-3, "patience": 5}
SMALL = {"hidden_dim": 64, "latent_dim": 4}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("counts")
    make_counts(n_cells=400).write_h5ad(root / "masked.h5ad")
    out = {}
    for likelihood in ("gaussian", "nb", "zinb"):
        ckpt = train(root / "masked.h5ad", root / likelihood, "vae", {**SMALL, "likelihood": likelihood}, TRAINER, seed=0)
        out[likelihood] = ckpt
    return root / "masked.h5ad", out


def _per_gene_nb_loglik(adata, train_rows, rows, entries):
    """Independent per-gene NB: share of the library and dispersion by moments on the train rows."""
    counts, library = adata.layers["counts"], adata.obs["library_size"].to_numpy()[:, None]
    seen = observed_mask(adata) & train_rows[:, None]
    share = np.where(seen, counts / library, 0).sum(0) / seen.sum(0)
    mu = share * library
    excess = np.where(seen, (counts - mu) ** 2 - mu, 0).sum(0)
    theta = np.clip(np.where(seen, mu**2, 0).sum(0) / np.maximum(excess, 1e-6), 1e-2, 1e3)
    log_p = nb_log_prob(torch.tensor(counts), torch.tensor(mu, dtype=torch.float32),
                        torch.tensor(theta, dtype=torch.float32)).numpy()
    return log_p[rows][entries[rows]].mean()


def test_target_sum_is_read_from_the_preprocess_record():
    assert target_sum(make_counts(n_cells=20, target=5e3)) == 5e3
    bare = make_counts(n_cells=20)
    del bare.uns["omicsgen"]["provenance"]
    assert target_sum(bare) == 1e4


@pytest.mark.parametrize("zero_inflated", [False, True])
def test_expected_log_normalised_is_the_sum_over_every_count(zero_inflated):
    """E[log1p(count / library * total)]: entries of small means (summed to 16 counts first) and
    larger ones (to 64) are a float64 sum over 64 counts, and within 0.2% of the sum over 5,000;
    entries with over 0.1% of their mass beyond 64 take log1p of the mean instead."""
    means = torch.tensor([0.01, 0.3, 2.0, 8.0, 30.0, 400.0])
    theta = torch.tensor([0.2, 1.0, 10.0])
    library = torch.tensor([1000.0, 2000.0, 4000.0, 8000.0, 8000.0, 8000.0])
    params = {"rho": means[:, None].expand(-1, 3) / library[:, None], "theta": theta}
    if zero_inflated:
        params["pi_logits"] = torch.full((6, 3), -1.0)
    value = expected_log_normalised(params, library, 1e4).double()
    k = torch.arange(5000, dtype=torch.float64)[None, None, :]
    mu, th = means.double()[:, None, None].expand(-1, 3, 1), theta.double()[None, :, None]
    log_p = (zinb_log_prob(k, mu, th, torch.full_like(mu, -1.0)) if zero_inflated else nb_log_prob(k, mu, th))
    terms = log_p.exp() * torch.log1p(k * 1e4 / library.double()[:, None, None])
    truth, mass_64 = terms.sum(-1), log_p[..., :64].exp().sum(-1)
    first_64 = terms[..., :64].sum(-1) / mass_64  # what the sum to 64 counts means to give
    summed = mass_64 > 0.999
    assert summed[:3].all() and summed[3, 1:].all()  # means to 2, and 8 unless theta is 0.2 (heavy tail)
    assert not summed[4:].any()
    assert torch.allclose(value[summed], first_64[summed], rtol=1e-5, atol=1e-6)
    assert torch.allclose(value[summed], truth[summed], rtol=2e-3)  # up to 0.1% of the mass left out
    share = params["rho"].double() * (torch.sigmoid(torch.tensor(1.0)) if zero_inflated else 1.0)
    assert torch.allclose(value[~summed], torch.log1p(share * 1e4)[~summed], rtol=1e-5)


def test_nb_draws_match_their_mean_and_variance():
    mu, theta = torch.full((20000, 1), 4.0), torch.tensor([2.0])
    draws = draw_counts({"rho": mu / 10, "theta": theta}, torch.full((20000,), 10.0), torch.Generator().manual_seed(0))
    assert abs(draws.mean() - 4.0) < 0.1 and abs(draws.var() - (4 + 16 / 2)) < 0.6
    again = draw_counts({"rho": mu / 10, "theta": theta}, torch.full((20000,), 10.0), torch.Generator().manual_seed(0))
    assert torch.equal(draws, again)


def test_count_likelihood_needs_counts(tmp_path):
    adata = make_counts(n_cells=50)
    del adata.layers["counts"]
    adata.write_h5ad(tmp_path / "masked.h5ad")
    with pytest.raises(InputError, match="needs raw counts"):
        train(tmp_path / "masked.h5ad", tmp_path / "out", "vae", {"likelihood": "nb"}, {"max_epochs": 1}, seed=0)


@pytest.mark.parametrize("likelihood", ["nb", "zinb"])
def test_count_vae_heldout_loglik_beats_per_gene_nb(runs, likelihood):
    from omicsgen.models import load_model

    data, ckpts = runs
    adata, model = ad.read_h5ad(data), load_model(ckpts[likelihood])
    test_rows = (adata.obs["split"] == "test").to_numpy()
    train_rows = (adata.obs["split"] == "train").to_numpy()
    heldout = adata.layers["heldout"]
    observed = observed_mask(adata)
    log_p = model.count_log_likelihood(adata.X[test_rows], observed[test_rows],
                                       adata.layers["counts"][test_rows], adata.obs["library_size"].to_numpy()[test_rows])
    model_ll = log_p[heldout[test_rows]].mean()
    baseline_ll = _per_gene_nb_loglik(adata, train_rows, test_rows, heldout)
    assert model_ll > baseline_ll + 0.1, (model_ll, baseline_ll)


def test_count_vae_imputes_on_x_scale_and_samples_realistic_zeros(runs):
    from omicsgen.models import load_model

    data, ckpts = runs
    adata = ad.read_h5ad(data)
    observed, heldout = observed_mask(adata), adata.layers["heldout"]
    real_zeros = (adata.X == 0).mean()
    zero_gap = {}
    for likelihood, ckpt in ckpts.items():
        model = load_model(ckpt)
        samples = model.sample(500, torch.Generator().manual_seed(0))
        assert samples.shape == (500, adata.n_vars)
        assert np.isfinite(samples).all() and samples.dtype == np.float32
        zero_gap[likelihood] = abs((samples == 0).mean() - real_zeros)
        filled = model.impute(adata.X, observed, obs=adata.obs)
        assert np.array_equal(filled[observed], adata.X[observed])
        gene_means = np.nanmean(np.where(observed, adata.X, np.nan), axis=0)
        model_mse = np.mean((filled[heldout] - adata.X[heldout]) ** 2)
        baseline_mse = np.mean((np.broadcast_to(gene_means, adata.shape)[heldout] - adata.X[heldout]) ** 2)
        assert model_mse < 0.8 * baseline_mse, (likelihood, model_mse, baseline_mse)
    assert zero_gap["nb"] < 0.1 and zero_gap["zinb"] < 0.1
    assert zero_gap["nb"] < zero_gap["gaussian"] - 0.1


@pytest.mark.parametrize("family, hparams", [("vae", {"likelihood": "zinb"}), ("ae", {"output": "nb"})])
def test_count_models_same_seed_same_weights(tmp_path, family, hparams):
    from omicsgen.models import load_model

    make_counts(n_cells=80).write_h5ad(tmp_path / "masked.h5ad")
    first, second = (
        load_model(train(tmp_path / "masked.h5ad", tmp_path / name, family, {**SMALL, **hparams}, {"max_epochs": 2}, seed=4))
        for name in ("a", "b")
    )
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
