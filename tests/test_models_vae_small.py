"""The VAE's small-data regime: size-dependent defaults, masked denoising, z-scored Gaussian
features (centred, negative, wildly scaled), latent refinement at imputation."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pytest
import torch

from omicsgen.impute import impute
from omicsgen.ingest import ingest
from omicsgen.mask import mask
from omicsgen.models import sizing
from omicsgen.models.registry import load_model
from omicsgen.models.vae import VAE, hide_at_random
from omicsgen.preprocess import preprocess
from omicsgen.report.decisions import decisions_section, training_choices
from omicsgen.train import train

from conftest import heldout_mse_vs_gene_means


def test_sizing_only_touches_small_data():
    small = sizing.family_defaults("vae", 120, 30)
    assert small["denoise_rate"] > 0 and small["dropout"] > 0 and small["latent_dim"] <= 10
    assert sizing.family_defaults("vae", 20_000, 30) == {} and sizing.family_defaults("gain", 120, 30) == {}
    steps = sizing.trainer_defaults(120, batch_size=128, max_epochs=30, patience=5)
    per_epoch = np.ceil(120 / steps["batch_size"])
    assert steps["batch_size"] < 120 and steps["max_epochs"] * per_epoch >= sizing.MIN_STEPS
    assert sizing.trainer_defaults(20_000, batch_size=128, max_epochs=30, patience=5) == {}


def test_config_settings_win_and_switch_turns_sizing_off(tmp_path):
    adata = ad.AnnData(np.zeros((100, 12), dtype=np.float32))
    adata.obs["split"] = "train"
    hparams, trainer = sizing.sized_for_data(VAE, adata, {"dropout": 0.0}, {"batch_size": 64, "size_to_data": True})
    assert hparams["dropout"] == 0.0 and hparams["denoise_rate"] > 0 and trainer["batch_size"] == 16
    assert sizing.sized_for_data(VAE, adata, {}, {"size_to_data": False}) == ({}, {})


def test_sequence_families_get_their_steps_not_new_capacity():
    """A language model steps once per truncated-BPTT chunk, the sequence WGAN once per minibatch:
    sizing counts those steps, and leaves the sequence families' hyper-parameters alone."""
    from omicsgen.models.lstm import LSTMLanguageModel
    from omicsgen.models.wgan import SequenceWGAN

    tokens = np.full((70, 600), 3, dtype=np.int8)
    tokens[:35, 300:] = 0  # half the records end at 300: the longest (600) sets the chunks
    adata = ad.AnnData(np.zeros((70, 0), dtype=np.float32), obsm={"tokens": tokens})
    adata.obs["split"] = "train"
    adata.uns["omicsgen"] = {"modality": "sequence"}
    given = {"batch_size": 128, "max_epochs": 30, "patience": 5, "size_to_data": True}
    hparams, lm = sizing.sized_for_data(LSTMLanguageModel, adata, {}, given)
    chunks = np.ceil(601 / 256)  # bptt_steps 256: three steps per batch
    assert hparams == {} and lm["batch_size"] == 16
    budget = LSTMLanguageModel.small_data_steps  # language models learn long families slowly: more steps
    assert budget > sizing.MIN_STEPS and lm["max_epochs"] * np.ceil(70 / 16) * chunks >= budget
    assert (lm["max_epochs"] - 1) * np.ceil(70 / 16) * chunks < budget  # no more than needed
    long_records = ad.AnnData(np.zeros((70, 0), dtype=np.float32), obsm={"tokens": np.full((70, 1500), 3, np.int8)},
                              obs={"split": ["train"] * 70}, uns={"omicsgen": {"modality": "sequence"}})
    hparams, _ = sizing.sized_for_data(LSTMLanguageModel, long_records, {"learning_rate": 1e-3}, given)
    assert hparams == {"hidden_dim": 256, "learning_rate": 1e-3, "dropout": 0.3}  # capacity and dropout for long records; the config's rate wins
    _, gan = sizing.sized_for_data(SequenceWGAN, adata, {"minibatch_size": 8}, given)
    assert gan["max_epochs"] * np.ceil(70 / 16) * 2 >= sizing.MIN_STEPS > (gan["max_epochs"] - 1) * np.ceil(70 / 16) * 2


def test_denoising_hides_a_fresh_share_of_observed_entries_only():
    # not seed 0: a job before this one in the process may leave torch's global generator seeded
    # 0 (generate does), and the global draws would then be these very draws
    observed = torch.rand(400, 50, generator=torch.Generator().manual_seed(2024)) > 0.3
    seen = hide_at_random(observed, 0.25, None)
    assert not (seen & ~observed).any()
    assert (observed & ~seen).sum() / observed.sum() == pytest.approx(0.25, abs=0.02)
    assert not torch.equal(seen, hide_at_random(observed, 0.25, None))


@pytest.fixture(scope="module")
def diabetes(tmp_path_factory):
    """scikit-learn's diabetes table (442 x 10, real): centred and scaled, half its values negative."""
    from sklearn.datasets import load_diabetes

    folder = tmp_path_factory.mktemp("diabetes")
    frame = load_diabetes(as_frame=True).frame.drop(columns="target")
    frame.index = [f"p{i}" for i in range(len(frame))]
    frame.to_csv(folder / "d.csv", index_label="sample")
    ingest(folder / "d.csv", folder / "i.h5ad", "diabetes", "expression", orientation="samples_as_rows")
    preprocess(folder / "i.h5ad", folder / "p.h5ad", {"min_cells": 10, "min_genes": 5}, {"val": 0.1, "test": 0.2}, 0)
    mask(folder / "p.h5ad", folder / "m.h5ad", 0.1, "mcar", 0)
    return folder


def test_small_table_with_negative_values_beats_gene_means(diabetes):
    trainer = {"max_epochs": 30, "batch_size": 128, "accelerator": "cpu", "patience": 5, "size_to_data": True}
    checkpoint = train(diabetes / "m.h5ad", diabetes / "vae", "vae", {"refine_steps": 50}, trainer, 0)
    model = load_model(checkpoint)
    assert model.hparams.denoise_rate > 0  # sized for 300-odd training rows
    impute(diabetes / "m.h5ad", checkpoint, diabetes / "imputed.h5ad", 0, n_draws=0)
    adata, imputed = ad.read_h5ad(diabetes / "m.h5ad"), ad.read_h5ad(diabetes / "imputed.h5ad")
    assert adata.n_vars == 10 and (adata.X < 0).mean() > 0.4  # every feature kept, negatives as given
    model_mse, mean_mse = heldout_mse_vs_gene_means(adata, imputed)
    assert model_mse < 0.8 * mean_mse
    # What sizing chose, and only that, travels with the model and is shown on the page.
    sized = training_choices(diabetes)
    assert sized["ensemble"] == 5 and sized["denoise_rate"] == model.hparams.denoise_rate
    assert sized["max_epochs"] > 30 and "refine_steps" not in sized and "size_to_data" not in sized
    page = decisions_section(adata, None, {"vae": diabetes})
    assert "<td>vae</td><td>ensemble</td><td><b>5</b></td>" in page and "size_to_data: false" in page


def test_refinement_lowers_the_observed_entries_loss(diabetes):
    """MAP refinement of z fits each row's observed entries better than the encoder's guess."""
    adata = ad.read_h5ad(diabetes / "m.h5ad")
    model = VAE.from_data(adata, latent_dim=3, hidden_dim=32, refine_steps=100)
    values = np.nan_to_num(np.asarray(adata.X, dtype=np.float32))
    observed = np.random.default_rng(0).random(values.shape) > 0.2
    x, seen = model._input(values, observed)
    with torch.no_grad():
        start = model.encode(x, seen)[0]
        refined = model._refine(x, seen, start, None)

        def loss(z):
            nll = (0.5 * ((x - model.decode(z)) ** 2 / model.log_var().exp() + model.log_var())) * seen
            return float(nll.sum() + 0.5 * (z**2).sum())

        assert loss(refined) < loss(start)


def test_checkpoints_without_zscore_buffers_still_load():
    model = VAE(n_genes=5, hidden_dim=8, latent_dim=2, n_layers=1, beta=1.0, kl_warmup_epochs=0, learning_rate=1e-3)
    state = {k: v for k, v in model.state_dict().items() if k not in ("x_center", "x_scale")}
    fresh = VAE(n_genes=5, hidden_dim=8, latent_dim=2, n_layers=1, beta=1.0, kl_warmup_epochs=0, learning_rate=1e-3)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.x_center, torch.zeros(5)) and torch.equal(fresh.x_scale, torch.ones(5))


def test_a_feature_in_other_units_does_not_take_the_fit_from_the_rest(tmp_path):
    """The learned noise variance is bounded in each feature's own units: one feature in units a
    million times larger (an acoustic table's energies beside its ratios) gets the same weight in
    the likelihood as the others. Bounded on X's scale (sd 0.03 to 12) it weighed ~1e10 times the
    rest, and the other features' fills fell back towards their means."""
    from test_models import make_expression

    errors = {}
    for factor in (1.0, 1e6):
        data = make_expression(n_cells=300, n_genes=20, seed=2)
        x = np.asarray(data.X).copy()
        x[:, 0] *= factor
        data.X = x
        data.write_h5ad(tmp_path / f"{factor}.h5ad")
        ckpt = train(tmp_path / f"{factor}.h5ad", tmp_path / str(factor), "vae", {"hidden_dim": 32},
                     {"max_epochs": 40, "size_to_data": False}, seed=0)
        fills = np.asarray(ad.read_h5ad(impute(tmp_path / f"{factor}.h5ad", ckpt, tmp_path / f"i{factor}.h5ad", seed=0)).layers["imputed"])
        held = np.asarray(data.layers["heldout"])[:, 1:]
        errors[factor] = np.sqrt(np.mean((fills[:, 1:] - x[:, 1:])[held] ** 2))
    assert errors[1e6] < 1.2 * errors[1.0]
