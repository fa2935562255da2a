"""A language model on large data trains on small batches for few epochs (models/sizing.py,
`lm_budget`): at most 32 records a batch, at most 10 epochs or about 5M positions, at twice the
rate, annealed; small data and a configuration already that modest train as before."""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import pandas as pd
import torch
from test_models_rnn import make_keyed_motifs

from omicsgen.models import sizing
from omicsgen.models.forecaster import LSTMForecaster
from omicsgen.models.lstm import GRULanguageModel, LSTMLanguageModel
from omicsgen.train import train

CONFIGURED = {"batch_size": 128, "max_epochs": 30, "patience": 5, "lr_schedule": "plateau", "size_to_data": True}


def records(n: int, length: int) -> ad.AnnData:
    """n train records of `length` tokens (no val or test rows: sizing counts the train split)."""
    obs = pd.DataFrame({"split": ["train"] * n}, index=[f"r{i}" for i in range(n)])
    return ad.AnnData(np.zeros((n, 0), dtype=np.float32), obs=obs, obsm={"tokens": np.full((n, length), 3, np.int8)},
                      uns={"omicsgen": {"modality": "sequence"}})


def test_many_long_records_read_a_budget_of_positions():
    chipseq = records(2730, 200)  # the bundled ChIP-seq peaks: 16.5M positions in the configured 30 epochs
    hparams, trainer = sizing.sized_for_data(LSTMLanguageModel, chipseq, {}, CONFIGURED)
    assert hparams == {"learning_rate": 2 * LSTMLanguageModel.defaults["learning_rate"]}
    assert trainer["lr_schedule"] == "cosine" and trainer["patience"] == 5
    assert trainer["batch_size"] == 32 and trainer["max_epochs"] == 10  # 32 x 201 = 6,432 positions a batch
    read = 2730 * 201 * trainer["max_epochs"]
    assert sizing.LM_POSITIONS <= read < sizing.LM_POSITIONS + 2730 * 201  # the budget, to the epoch
    # the GRU language model is not measured: it trains as configured
    assert sizing.sized_for_data(GRULanguageModel, chipseq, {}, CONFIGURED)[1]["max_epochs"] == 30
    # what it chose is what `train` records and the page lists
    given_hparams, given_trainer = {}, dict(CONFIGURED)
    sized = sizing.sized_for_data(LSTMLanguageModel, chipseq, given_hparams, given_trainer)
    chosen = sizing.sized_settings(given_hparams, given_trainer, *sized)
    assert chosen == {"learning_rate": 0.004, "batch_size": 32, "max_epochs": 10, "lr_schedule": "cosine"}


def test_the_config_wins_and_other_data_train_as_before():
    chipseq = records(2730, 200)
    hparams, trainer = sizing.sized_for_data(LSTMLanguageModel, chipseq, {"learning_rate": 1e-3}, CONFIGURED)
    assert hparams == {"learning_rate": 1e-3} and trainer["batch_size"] == 32  # a configured rate stays
    hparams, _ = sizing.sized_for_data(LSTMLanguageModel, chipseq, {}, {**CONFIGURED, "learning_rate": 1e-3})
    assert hparams == {}  # the trainer's rate applies (train.model_settings)
    off = sizing.sized_for_data(LSTMLanguageModel, chipseq, {}, {**CONFIGURED, "size_to_data": False})
    assert off[1]["max_epochs"] == 30
    # ww_domain's alignment (2,818 train records of 44 columns): 3.8M positions in 30 epochs, under
    # the budget, but batches of 32 records for 10 epochs learned more (bench/figures.md)
    hparams, trainer = sizing.sized_for_data(LSTMLanguageModel, records(2818, 44), {}, CONFIGURED)
    assert hparams == {"learning_rate": 0.004}
    assert (trainer["batch_size"], trainer["max_epochs"], trainer["lr_schedule"]) == (32, 10, "cosine")
    # many short records: 32 records a batch, epochs to about 5M positions (7 of 820k)
    _, trainer = sizing.sized_for_data(LSTMLanguageModel, records(20_000, 40), {}, CONFIGURED)
    assert (trainer["batch_size"], trainer["max_epochs"]) == (32, 7)
    # a configured batch and epochs no larger than the rule's: trained as configured
    modest = {**CONFIGURED, "batch_size": 16, "max_epochs": 5}
    unchanged = {k: v for k, v in modest.items() if k != "size_to_data"}
    assert sizing.sized_for_data(LSTMLanguageModel, chipseq, {}, modest) == ({}, unchanged)
    # a few epochs asked for: under the budget
    assert sizing.sized_for_data(LSTMLanguageModel, chipseq, {}, {**CONFIGURED, "max_epochs": 9})[1]["max_epochs"] == 9
    # small data keeps the small-data regime (more steps, not fewer)
    _, small = sizing.sized_for_data(LSTMLanguageModel, records(1000, 200), {}, CONFIGURED)
    assert small["max_epochs"] > 30 and small["lr_schedule"] == "plateau"
    assert sizing.lm_budget(1999, 201.0, 128, 30) == {}
    assert not getattr(LSTMForecaster, "reads_positions", False)  # a forecaster is no language model


def test_train_reads_the_budget_and_records_it(tmp_path, monkeypatch):
    """End to end on tiny records: the budget scaled down, `train` runs the chosen epochs at the
    chosen batch and rate, and keeps the choice in the checkpoint's provenance."""
    adata = make_keyed_motifs(n=200, length=30)
    n_train = int((adata.obs["split"] == "train").sum())
    monkeypatch.setattr(sizing, "LARGE_ROWS", 50)  # tiny data counts as large here
    monkeypatch.setattr(sizing, "LM_POSITIONS", 6 * n_train * 31)
    monkeypatch.setattr(sizing, "LM_BATCH_POSITIONS", 16 * 31)
    adata.write_h5ad(tmp_path / "masked.h5ad")
    ckpt = train(tmp_path / "masked.h5ad", tmp_path / "model", "lstm", {"hidden_dim": 16},
                 {**CONFIGURED, "max_epochs": 8}, seed=0)
    assert len(pd.read_csv(tmp_path / "model" / "metrics.csv")) == 6
    contents = torch.load(ckpt, map_location="cpu", weights_only=True)
    assert contents["hyper_parameters"]["learning_rate"] == 2 * LSTMLanguageModel.defaults["learning_rate"]
    params = contents["omicsgen"]["params"]
    params = json.loads(params) if isinstance(params, str) else params
    assert params["sized_for_data"] == {"learning_rate": 0.004, "batch_size": 16, "max_epochs": 6,
                                        "lr_schedule": "cosine"}
    assert params["trainer"]["lr_schedule"] == "cosine" and params["trainer"]["batch_size"] == 16
