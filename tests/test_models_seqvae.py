"""The vae family on sequences: a categorical VAE over one-hot positions (DeepSequence-like) that
learns dependence between positions, samples valid tokens, and imputes from the posterior."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from test_models import make_clustered_sequences, position_frequency_log_p

from omicsgen.alphabet import FIRST_RESIDUE, GAP, MISSING, PAD
from omicsgen.impute import impute
from omicsgen.models import get_family, load_model
from omicsgen.models.base import observed_mask
from omicsgen.train import train

HPARAMS = {"hidden_dim": 64, "latent_dim": 4, "kl_warmup_epochs": 3}
TRAINER = {"batch_size": 32, "max_epochs": 25, "learning_rate": 3e-3}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("seqvae")
    make_clustered_sequences().write_h5ad(root / "masked.h5ad")
    return root, train(root / "masked.h5ad", root / "model", "vae", HPARAMS, TRAINER, seed=0)


def _rows(adata, split):
    return (adata.obs["split"] == split).to_numpy()


def test_loss_falls_and_the_checkpoint_loads_as_the_sequence_vae(run):
    root, checkpoint = run
    model = load_model(checkpoint)
    assert model.family == "vae" and type(model).__name__ == "SequenceVAE"
    metrics = pd.read_csv(checkpoint.parent / "metrics.csv")
    assert metrics["val_loss"].min() < 0.85 * metrics["val_loss"].iloc[0]


def test_heldout_log_likelihood_beats_position_frequencies(run):
    root, checkpoint = run
    adata, model = ad.read_h5ad(root / "masked.h5ad"), load_model(checkpoint)
    tokens, heldout = adata.obsm["tokens"], adata.obsm["heldout"]
    test = _rows(adata, "test")
    log_p = model.log_likelihood(tokens[test], ~heldout[test])
    assert log_p.shape == tokens[test].shape and np.isfinite(log_p).all() and (log_p <= 0).all()
    model_nll = -log_p[heldout[test]].mean()
    baseline_nll = -position_frequency_log_p(tokens, _rows(adata, "train"))[test][heldout[test]].mean()
    # Cluster-aware: about 0.7 nats per residue against about 1.2 for the frequencies.
    assert model_nll < baseline_nll - 0.2


def test_impute_recovers_heldout_residues_and_keeps_observed_ones(run):
    root, checkpoint = run
    out = impute(root / "masked.h5ad", checkpoint, root / "imputed.h5ad", seed=0)
    adata, imputed = ad.read_h5ad(root / "masked.h5ad"), ad.read_h5ad(out)
    filled, tokens, heldout = imputed.obsm["tokens_imputed"], adata.obsm["tokens"], adata.obsm["heldout"]
    observed = observed_mask(adata)
    read = _rows(adata, "val") | _rows(adata, "test") | (tokens == MISSING).any(1)  # filled rows
    assert np.array_equal(filled[observed], tokens[observed]) and (filled[~observed & read[:, None]] >= GAP).all()
    test = _rows(adata, "test")
    counts = np.stack([np.bincount(tokens[_rows(adata, "train"), j], minlength=7) for j in range(tokens.shape[1])])
    mode = counts.argmax(1)
    model_accuracy = (filled[test] == tokens[test])[heldout[test]].mean()
    mode_accuracy = (np.broadcast_to(mode, tokens[test].shape) == tokens[test])[heldout[test]].mean()
    assert model_accuracy > mode_accuracy + 0.2


def test_imputation_draws_vary_only_at_unobserved_positions(run):
    root, checkpoint = run
    adata, model = ad.read_h5ad(root / "masked.h5ad"), load_model(checkpoint)
    tokens, observed = adata.obsm["tokens"][:50], observed_mask(adata)[:50]
    draws = model.impute_draws(tokens, observed, 4, torch.Generator().manual_seed(0))
    assert draws.shape == (4, *tokens.shape)
    assert all(np.array_equal(draw[observed], tokens[observed]) for draw in draws)
    assert (draws[:, ~observed] >= GAP).all() and not (draws[0] == draws[1]).all()


def test_samples_are_valid_and_follow_the_clusters(run):
    root, checkpoint = run
    adata, model = ad.read_h5ad(root / "masked.h5ad"), load_model(checkpoint)
    samples = model.sample(300, torch.Generator().manual_seed(0))
    assert samples.shape == (300, adata.obsm["tokens"].shape[1]) and samples.dtype == np.int8
    assert (samples >= FIRST_RESIDUE).all() and not (samples == MISSING).any()
    assert np.array_equal(samples, model.sample(300, torch.Generator().manual_seed(0)))
    consensus = adata.uns["consensus"]
    # Each sample agrees with one cluster's consensus (data: 0.8 at every position); an
    # independent-positions sampler mixes the clusters and agrees with none (about 0.5).
    nearest = np.max([(samples == c).mean(1) for c in consensus], axis=0)
    assert np.median(nearest) > 0.65
    embedding = model.embed(adata.obsm["tokens"], observed_mask(adata))
    assert embedding.shape == (adata.n_obs, 4) and np.isfinite(embedding).all()


def test_untrained_sequence_vae_starts_at_the_position_frequencies():
    adata = make_clustered_sequences(n=200)
    torch.manual_seed(0)
    model = get_family("vae").from_data(adata, **HPARAMS)
    tokens = adata.obsm["tokens"]
    log_p = model.log_likelihood(tokens)
    frequencies = position_frequency_log_p(tokens, _rows(adata, "train"))
    assert abs(-log_p.mean() - -frequencies.mean()) < 0.3


def test_records_of_an_alignment_are_sampled_whole():
    """No train record ends before the last column, so no sample does: a pad drawn inside a
    record used to cut it (its small start-up probability, over 1,925 columns of 16S)."""
    adata = make_clustered_sequences(n=60, length=400)
    torch.manual_seed(0)
    model = get_family("vae").from_data(adata, **HPARAMS)  # untrained: the position frequencies
    samples = model.sample(200, torch.Generator().manual_seed(0))
    assert (samples != PAD).all()
    # records that do end (padded, of other lengths) still end where train records did
    adata.obsm["tokens"][:20, 300:] = PAD
    model = get_family("vae").from_data(adata, **HPARAMS)
    lengths = (model.sample(200, torch.Generator().manual_seed(0)) != PAD).sum(1)
    assert lengths.min() >= 300 and (lengths < 400).any()


def test_samples_come_from_the_aggregate_posterior_and_old_checkpoints_keep_the_standard_prior(run, tmp_path):
    """Sampled records sit where training records' codes are: closer to their cluster's
    consensus than records decoded from the standard normal prior; a checkpoint without the
    stored posteriors loads and samples from the standard prior."""
    root, checkpoint = run
    model = load_model(checkpoint)
    assert model.hparams.latent_prior == "aggregate" and model.posterior_log_var.abs().sum() > 0
    consensus = ad.read_h5ad(root / "masked.h5ad").uns["consensus"]

    def nearest(samples):
        return np.median(np.max([(samples == c).mean(1) for c in consensus], axis=0))

    aggregate = model.sample(300, torch.Generator().manual_seed(0))
    model.hparams.latent_prior = "standard"
    standard = model.sample(300, torch.Generator().manual_seed(0))
    assert nearest(aggregate) >= nearest(standard) - 0.02 and nearest(aggregate) > 0.6
    old = torch.load(checkpoint, weights_only=True)
    for key in ("posterior_mean", "posterior_log_var"):
        del old["state_dict"][key]
    del old["hyper_parameters"]["latent_prior"]
    torch.save(old, tmp_path / "old.ckpt")
    reloaded = load_model(tmp_path / "old.ckpt")
    assert reloaded.hparams.latent_prior == "standard"
    assert np.array_equal(reloaded.sample(50, torch.Generator().manual_seed(0)),
                          model.sample(50, torch.Generator().manual_seed(0)))
