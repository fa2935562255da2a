"""The ae family (denoising autoencoder): imputes by reconstruction, samples near training rows."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import heldout_mse_vs_gene_means
from test_models import make_expression, make_timecourse
from test_models_counts import make_counts

from omicsgen.generate import generate
from omicsgen.impute import impute
from omicsgen.models import get_family, load_model
from omicsgen.models.base import observed_mask
from omicsgen.train import train

HPARAMS = {"hidden_dim": 64, "latent_dim": 8}
TRAINER = {"batch_size": 32, "max_epochs": 12, "learning_rate": 3e-3}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("ae")
    make_expression(n_cells=400).write_h5ad(root / "masked.h5ad")
    return root, train(root / "masked.h5ad", root / "model", "ae", HPARAMS, TRAINER, seed=0)


def _corr_error(x, reference):
    return np.abs(np.corrcoef(x.T) - reference).mean()


def test_ae_imputes_better_than_gene_means_and_keeps_observed(run):
    root, checkpoint = run
    adata = ad.read_h5ad(root / "masked.h5ad")
    out = ad.read_h5ad(impute(root / "masked.h5ad", checkpoint, root / "imputed.h5ad", seed=0))
    assert out.obsm["X_ae"].shape == (adata.n_obs, HPARAMS["latent_dim"])
    model_mse, baseline_mse = heldout_mse_vs_gene_means(adata, out)
    assert model_mse < 0.2 * baseline_mse


def test_ae_samples_keep_the_gene_correlations(run):
    root, checkpoint = run
    adata = ad.read_h5ad(root / "masked.h5ad")
    visible = pd.DataFrame(np.where(observed_mask(adata), adata.X, np.nan))
    reference = visible.corr().to_numpy()
    model = load_model(checkpoint)
    samples = model.sample(800, torch.Generator().manual_seed(0))
    assert samples.shape == (800, adata.n_vars) and samples.dtype == np.float32
    assert np.array_equal(samples, model.sample(800, torch.Generator().manual_seed(0)))
    independent = np.abs(np.eye(adata.n_vars) - reference).mean()  # genes drawn independently
    untrained = get_family("ae").from_data(adata, **HPARAMS).sample(800, torch.Generator().manual_seed(0))
    assert _corr_error(samples, reference) < 0.6 * independent
    assert _corr_error(samples, reference) < 0.6 * _corr_error(untrained, reference)
    out = ad.read_h5ad(generate(root / "masked.h5ad", checkpoint, root / "samples.h5ad", 5, seed=1))
    assert out.shape == (5, adata.n_vars)


def test_ae_input_dropout_hides_entries_only_in_training():
    adata = make_expression(n_cells=60)
    torch.manual_seed(0)
    model = get_family("ae").from_data(adata, noise=0.5)
    batch = get_family("ae").tensors(adata, "train")
    model.train()
    assert not torch.equal(model.loss(batch), model.loss(batch))  # a new dropout draw each call
    values, observed = adata.X, observed_mask(adata)
    assert np.array_equal(model.impute(values, observed), model.impute(values, observed))


def test_ae_nb_output_and_time_courses(tmp_path):
    make_counts(n_cells=120).write_h5ad(tmp_path / "counts.h5ad")
    ckpt = train(tmp_path / "counts.h5ad", tmp_path / "nb", "ae", {**HPARAMS, "output": "nb"}, {"max_epochs": 2}, seed=0)
    samples = load_model(ckpt).sample(50, torch.Generator().manual_seed(0))
    assert (samples == 0).mean() > 0.1 and np.isfinite(samples).all()  # drawn counts, normalised
    make_timecourse().write_h5ad(tmp_path / "tc.h5ad")
    ckpt = train(tmp_path / "tc.h5ad", tmp_path / "tc", "ae", HPARAMS, {"max_epochs": 2}, seed=0)
    out = ad.read_h5ad(generate(tmp_path / "tc.h5ad", ckpt, tmp_path / "samples.h5ad", 4, seed=0))
    assert out.obs["series"].nunique() == 4
    imputed = ad.read_h5ad(impute(tmp_path / "tc.h5ad", ckpt, tmp_path / "imputed.h5ad", seed=0))
    assert np.isfinite(imputed.layers["imputed"]).all()


def test_ae_zinb_output_uses_the_size_factor_and_imputes_counts(tmp_path):
    """DCA-like ZINB output: the mean scales with the row's library (its size factor), and the
    imputation of held-out entries beats per-gene means."""
    adata = make_counts(n_cells=300)
    adata.write_h5ad(tmp_path / "counts.h5ad")
    ckpt = train(tmp_path / "counts.h5ad", tmp_path / "zinb", "ae", {**HPARAMS, "output": "zinb"},
                 {"max_epochs": 15, "batch_size": 32, "learning_rate": 3e-3}, seed=0)
    model = load_model(ckpt)
    observed, heldout = observed_mask(adata), adata.layers["heldout"]
    filled = model.impute(adata.X, observed, obs=adata.obs)
    assert np.array_equal(filled[observed], adata.X[observed])
    gene_means = np.nanmean(np.where(observed, adata.X, np.nan), axis=0)
    model_mse = np.mean((filled[heldout] - adata.X[heldout]) ** 2)
    baseline_mse = np.mean((np.broadcast_to(gene_means, adata.shape)[heldout] - adata.X[heldout]) ** 2)
    assert model_mse < 0.8 * baseline_mse, (model_mse, baseline_mse)
    code = model.embed(adata.X[:1], observed[:1])
    params = model.head(torch.from_numpy(code))
    assert set(params) == {"rho", "theta", "pi_logits"}
    small, large = (
        model.impute(np.full((1, adata.n_vars), np.nan, dtype=np.float32), np.zeros((1, adata.n_vars), bool),
                     obs=pd.DataFrame({"library_size": [library]}))
        for library in (200.0, 5000.0)
    )
    # Same row, more counts at a larger size factor: fewer zeros, so E[log1p(normalised)] rises.
    assert (large > small).mean() > 0.9


def test_ae_linear_skip_never_reads_the_feature_it_predicts():
    from omicsgen.models.ae import Autoencoder as AE

    model = AE(n_genes=6, hidden_dim=8, latent_dim=3, n_layers=1, noise=0.2, output="gaussian", sample_noise=0.5,
               learning_rate=1e-3, linear_skip=True)
    with torch.no_grad():
        model.skip.copy_(torch.randn(6, 6, generator=torch.Generator().manual_seed(0)))
    x, seen = torch.zeros(1, 6), torch.ones(1, 6, dtype=torch.bool)
    x[0, 2] = 5.0  # only feature 2 moves: its own prediction must not
    term = model.skip_term(x, seen)
    assert term[0, 2] == 0 and term[0, [0, 1, 3, 4, 5]].abs().sum() > 0


def test_epoch_loss_is_the_row_weighted_mean_of_the_batch_losses(monkeypatch):
    """Losses are summed over an epoch's batches and logged once, as the mean over its rows
    (what Lightning's per-batch on_epoch logging gave), for train and val alike."""
    from omicsgen.train import trainable

    adata = make_expression(n_cells=60)
    cls = get_family("ae").model_class("expression")
    model = trainable(cls).from_data(adata, **HPARAMS)
    tensors = cls.tensors(adata, ["train", "val"])
    batches = [{key: value[rows] for key, value in tensors.items()} for rows in (slice(0, 32), slice(32, 40))]
    logged = {}
    monkeypatch.setattr(model, "record_epoch_metric", lambda name, value: logged.setdefault(name, []).append(float(value)))
    with torch.no_grad():
        losses = [float(model.validation_step(batch, i)) for i, batch in enumerate(batches)]
        assert logged == {}  # nothing per batch
        model.on_validation_epoch_end()
        model.on_validation_epoch_end()  # a second call has nothing left to log
    assert logged["val_loss"] == pytest.approx([(losses[0] * 32 + losses[1] * 8) / 40], rel=1e-6)
    assert losses[0] != pytest.approx(losses[1])  # the weighting is tested, not a plain mean of equals


def test_fit_skip_predicts_each_feature_from_the_others():
    """The closed-form ridge: a feature that is a sum of two others is predicted from them, its
    own value never counts, and a feature missing in a third of the rows is not shrunk to its mean."""
    from omicsgen.models.ae import fit_skip

    rng = np.random.default_rng(0)
    z = torch.from_numpy(rng.normal(size=(300, 6)))
    z[:, 2] = (z[:, 0] + z[:, 1]) / np.sqrt(2) + 0.05 * torch.from_numpy(rng.normal(size=300))
    z[rng.random(300) < 0.3, 2] = 0.0  # not observed: the mean
    train, val = z[:200].float(), z[200:].float()
    weights = fit_skip(train, val)
    assert torch.all(weights.diagonal() == 0)
    seen = val[:, 2] != 0
    predicted = (val @ weights.t())[seen, 2]
    assert float(((predicted - val[seen, 2]) ** 2).mean()) < 0.05 * float((val[seen, 2] ** 2).mean())
    slope = float((predicted * val[seen, 2]).sum() / (val[seen, 2] ** 2).sum())
    assert 0.9 < slope < 1.1
    unvalidated = fit_skip(train, val[:0])  # no val rows: a fixed moderate penalty, still a fit
    assert torch.isfinite(unvalidated).all() and float(unvalidated[2, :2].sum()) > 0.5


def test_ae_with_linear_skip_imputes_and_samples_with_it(tmp_path):
    """A small table of more features than rows: sizing turns the skip on; the skip is fit
    before training, the fill beats gene means, and samples carry the skip of their stored row,
    so they keep the genes' correlations and spread (the network alone learned only what the
    skip left: without it the samples are narrower)."""
    from omicsgen.models.sizing import family_defaults

    assert family_defaults("ae", 40, 60).get("linear_skip") is True
    assert "linear_skip" not in family_defaults("ae", 400, 30)
    assert "linear_skip" not in family_defaults("ae", 40, 60, likelihood="nb")
    adata = make_expression(n_cells=60, n_genes=80)
    adata.write_h5ad(tmp_path / "masked.h5ad")
    checkpoint = train(tmp_path / "masked.h5ad", tmp_path / "model", "ae", HPARAMS,
                       {**TRAINER, "size_to_data": True}, seed=0)
    model = load_model(checkpoint)
    assert model.hparams.linear_skip and float(model.skip.abs().sum()) > 0
    out = ad.read_h5ad(impute(tmp_path / "masked.h5ad", checkpoint, tmp_path / "imputed.h5ad", seed=0))
    model_mse, baseline_mse = heldout_mse_vs_gene_means(adata, out)
    assert model_mse < 0.2 * baseline_mse
    visible = pd.DataFrame(np.where(observed_mask(adata), adata.X, np.nan))
    reference = visible.corr().to_numpy()
    samples = model.sample(600, torch.Generator().manual_seed(0))
    independent = np.abs(np.eye(adata.n_vars) - reference).mean()
    assert _corr_error(samples, reference) < 0.5 * independent
    spread = np.median(samples.std(0) / np.nanstd(adata.X, 0))
    assert 0.9 < spread < 1.1
    model.code_skips.zero_()  # without the skip: the network's part only
    assert np.median(model.sample(600, torch.Generator().manual_seed(0)).std(0)) < 0.95 * np.median(samples.std(0))
