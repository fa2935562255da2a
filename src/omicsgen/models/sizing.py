"""Defaults that depend on the data size: one place for the small-data regime of the deep families,
and for the reading budget of the language models on large sets of long records.

Most omics tables users bring have tens to hundreds of samples. Defaults made for 10,000 cells
(128 rows a batch, 30 epochs, no regularisation) give such a table one batch an epoch and a few
dozen optimiser steps: the networks stop before they have learned anything and lose to the
per-feature mean. `sized_for_data` is called by `train` before the settings are checked; it

- sets a family's hyper-parameters that the config leaves unset (capacity, dropout, masked
  denoising, ensembles over seeds) from the number of training rows and features;
- shrinks the batch and lengthens training so that small data gets enough optimiser steps, and
  scales the early-stopping patience with it (in steps, not epochs). Steps are what a family
  takes per batch (`GenerativeModel.steps_per_batch`): a language model steps once per
  truncated-BPTT chunk, the sequence WGAN once per minibatch. Families whose class sets
  `sized_to_data` take part: the VAEs and the AE (capacity and steps), the language models
  (steps, and capacity for records of `LONG_RECORDS` positions or more), the sequence VAE and
  the WGANs (steps only). 70 unaligned 16S genes got 54 LSTM steps, one batch an epoch, and
  stopped at a uniform model, perplexity 4.0. GAIN and the forecasters keep their configs' own;

and leaves everything as it is from `LARGE_ROWS` training rows on, so the single-cell defaults
(and their published figures) are untouched; except that an LSTM language model (`lm_budget`)
trains on batches of at most `LM_BATCH_RECORDS` records for at most `LM_MAX_EPOCHS` epochs (about
`LM_POSITIONS` positions on long records), at twice the family's rate annealed by a cosine
schedule. Its cost is arithmetic per position (a bare LSTM of 128 units is
no faster per position at larger batches), and it learned per optimiser step, not per position read.
The shipped config turns it on (`trainer: {size_to_data: true}`); a `train` call whose settings do
not name it trains exactly as told, so a test's or a script's few epochs stay few.
Every change is logged and kept in the checkpoint's provenance (the settings `train` records).
"""

from __future__ import annotations

import logging
import math

import anndata as ad
import numpy as np

from ..alphabet import PAD
from ..provenance import meta

LOG = logging.getLogger(__name__)

# From this many training rows on, nothing changes.
LARGE_ROWS = 2000
# Optimiser steps small data trains for at least, and the patience in steps it is given.
MIN_STEPS = 1500
PATIENCE_STEPS = 300
# Epochs are capped: each epoch also validates and writes a checkpoint.
MAX_EPOCHS = 600
# Members of a small-data Gaussian VAE or AE (`ensemble`): trained together, the fill their mean.
# Small-data benchmark, 8 tables (docs/small-data.md, "Ensembles over seeds"): members trained
# apart, the mean of 5 fills was below the average member in every case (AE 2-9%, VAE 0.5-5%
# per table; 3 members gave most of it). Trained together, as here, against one network: lower
# on all 8 tables for the AE (1-18%) and on 7 of 8 for the VAE (wine +0.4%).
ENSEMBLE = 5
# A Gaussian AE on a table of at least as many features as training rows (and at most
# SKIP_MAX_FEATURES: the skip is features x features per member) adds each feature's ridge
# regression on the others (`linear_skip`). Small-data benchmark, seeds 0-2 (bench/figures.md,
# "Issue 15: ridge skip"): nci60 (45 train rows x 500 genes) AE 1.411 -> 1.330 (iterative 1.370),
# tissue_expr (132 x 500) 0.300 -> 0.303 (iterative 0.308); on breast_cancer (398 x 30) it
# lost (9.0 -> 12.1): with few features per row a network learns more than a ridge.
SKIP_MAX_FEATURES = 1000
# Records at least this long give a small-data language model more capacity.
LONG_RECORDS = 1000
# Language models on large data (`lm_budget`): positions read in training (epochs x record
# positions, each record's end counted) and positions a batch holds. ChIP-seq peaks (2,730 train
# records of 200 nt, bench/figures.md "issue 13"): 30 epochs of 128 records read 16.5M positions
# in 660 steps (~250 CPU s) and were still improving; batches of 32 records step 4x as often for
# the same arithmetic, and 10 epochs of them (5.5M positions, 860 steps) at lr 4e-3 with a cosine
# schedule reached the same held-out perplexity and c2st at a third of the CPU. The constant rate
# left the last weights noisy (sampled GC 0.41-0.42 against 0.39, c2st 0.68); cosine at the
# family's 2e-3 lost perplexity (3.69 against 3.64): twice the rate, annealed, did neither.
# Short records learn the same way: ww_domain's 44-column alignment (2,818 records, 3.8M positions
# in the configured 30 epochs of 128) at batches of 32, 10 epochs, 4e-3, cosine: c2st 0.677 / 0.665
# / 0.627 against 0.704 / 0.707 / 0.669 (seeds 0-2), perplexity lower on every seed, 19 CPU s
# against 52-62. So the batch holds at most 32 records and training at most 10 epochs.
LM_POSITIONS = 5_000_000
LM_BATCH_POSITIONS = 6400  # the configured 128 records of 50 positions
LM_BATCH_RECORDS = 32
LM_MAX_EPOCHS = 10
LM_RATE_FACTOR = 2.0
LM_MIN_EPOCHS = 5  # the cosine schedule anneals by epoch
# The trainer key that turns sizing off (removed before `train` checks the trainer settings).
SWITCH = "size_to_data"


def train_rows(adata: ad.AnnData) -> int:
    return int((adata.obs["split"].astype(str) == "train").sum()) if "split" in adata.obs else adata.n_obs


def family_defaults(family: str, n_rows: int, n_features: int, likelihood: str | None = None,
                    modality: str | None = None) -> dict:
    """Hyper-parameters for `n_rows` training rows of `n_features` features (positions, for
    sequences) ({} for large data)."""
    if n_rows >= LARGE_ROWS:
        return {}
    if modality == "sequence":
        # A language model must learn where it is in a long conserved record: 70 16S genes
        # (1.5 kb) gave held-out perplexity 3.69 with 128 units at lr 2e-3 (Markov chain 3.86),
        # 2.52 at lr 1e-2 and 2.22 with 256 units at 3e-3. Short families did well at 128.
        # The 256 units overfit 70 genes within 40 epochs; dropout 0.3 took perplexity 2.04 ->
        # 1.84 and c2st 0.91 -> 0.85 (0.5: 1.82, 0.85). On short families (globins, amplicons)
        # it cost c2st (0.51 -> 0.58, 0.81 -> 0.87): their default dropout stays.
        if family in ("lstm", "gru") and n_features >= LONG_RECORDS:
            return {"hidden_dim": 256, "learning_rate": 3e-3, "dropout": 0.3}
        return {}
    gaussian = likelihood in (None, "gaussian")  # the ensemble is for the Gaussian VAE and AE only
    if family == "vae":
        return {
            # a latent no wider than a quarter of the features (10 features: 2 factors), at most 10
            "latent_dim": int(np.clip(n_features // 4, 2, 10)),
            "hidden_dim": 64 if n_rows < 300 else 128,
            "dropout": 0.1,
            # hide a quarter of the observed entries each step: the imputation task, practised
            "denoise_rate": 0.25,
            "kl_warmup_epochs": 20,
            **({"ensemble": ENSEMBLE} if gaussian else {}),
        }
    # The AE already hides a share of entries each step (`noise`): it gets the steps only, the
    # ensemble (its fill varied most from seed to seed: the ensemble helped it most, breast_cancer
    # -9%), and the ridge skip when the features outnumber the rows (SKIP_MAX_FEATURES).
    if family != "ae" or not gaussian:
        return {}
    return {"ensemble": ENSEMBLE, **({"linear_skip": True} if n_rows <= n_features <= SKIP_MAX_FEATURES else {})}


def trainer_defaults(n_rows: int, batch_size: int, max_epochs: int, patience: int, steps_per_batch=None,
                     min_steps: int = MIN_STEPS) -> dict:
    """Batch size, epochs and patience so that `n_rows` training rows get at least `min_steps`
    optimiser steps and PATIENCE_STEPS steps of patience ({} for large data).
    `steps_per_batch(batch_size)`: optimiser steps a family takes per batch (1 when None)."""
    if n_rows >= LARGE_ROWS:
        return {}
    batch = int(min(batch_size, max(16, n_rows // 8)))
    steps_per_epoch = max(1, math.ceil(n_rows / batch) * (steps_per_batch(batch) if steps_per_batch else 1))
    epochs = int(min(MAX_EPOCHS, max(max_epochs, math.ceil(min_steps / steps_per_epoch))))
    wait = int(min(epochs, max(patience, math.ceil(PATIENCE_STEPS / steps_per_epoch))))
    return {"batch_size": batch, "max_epochs": epochs, "patience": wait}


def lm_budget(n_rows: int, record_positions: float, batch_size: int, max_epochs: int) -> dict:
    """Batch size and epochs for a language model on `n_rows` training records of
    `record_positions` positions on average (the end included): batches of at most
    `LM_BATCH_RECORDS` records and about `LM_BATCH_POSITIONS` positions (at least 16 records), for
    at most `LM_MAX_EPOCHS` epochs and about `LM_POSITIONS` positions (at least `LM_MIN_EPOCHS`
    epochs). Never more epochs or a larger batch than configured; {} when neither shrinks, and
    under `LARGE_ROWS` rows (the small-data regime's). The caller adds the rate and the schedule
    that go with the smaller batch."""
    if n_rows < LARGE_ROWS:
        return {}
    epochs = math.ceil(LM_POSITIONS / (n_rows * record_positions))
    epochs = int(min(max_epochs, LM_MAX_EPOCHS, max(LM_MIN_EPOCHS, epochs)))
    batch = int(min(batch_size, LM_BATCH_RECORDS, max(16, round(LM_BATCH_POSITIONS / record_positions))))
    if epochs == max_epochs and batch == batch_size:
        return {}
    return {"batch_size": batch, "max_epochs": epochs}


def sized_settings(given_hparams: dict, given_trainer: dict, hparams: dict, trainer: dict) -> dict:
    """What `sized_for_data` chose: the hyper-parameters it added and the trainer settings it
    changed (recorded with the model, shown on the dataset's page)."""
    added = {k: v for k, v in hparams.items() if k not in given_hparams}
    changed = {k: v for k, v in trainer.items() if k != SWITCH and given_trainer.get(k) != v}
    return {**added, **changed}


def sized_for_data(cls, adata: ad.AnnData, hparams: dict, trainer: dict) -> tuple[dict, dict]:
    """(hparams, trainer) with the size-dependent defaults filled in where the config is silent
    (hparams) or where small data needs more, or a language model less (trainer); unchanged with
    `size_to_data: false`."""
    trainer = dict(trainer)
    if not trainer.pop(SWITCH, False) or not getattr(cls, "sized_to_data", False):
        return hparams, trainer
    from ..train import TRAINER_DEFAULTS  # the defaults of the settings the config may leave out

    data_modality = meta(adata).get("modality")
    n_rows = train_rows(adata)
    n_features = int(adata.obsm["tokens"].shape[1]) if data_modality == "sequence" else int(adata.n_vars)
    chosen = family_defaults(cls.family, n_rows, n_features, hparams.get("likelihood", hparams.get("output")),
                             data_modality)
    if data_modality == "timecourse":  # any size: a person's level, from their other time points
        chosen["series_offsets"] = True
    chosen = {k: v for k, v in chosen.items() if k in cls.defaults and k not in hparams}
    given = {k: trainer.get(k, TRAINER_DEFAULTS[k]) for k in ("batch_size", "max_epochs", "patience")}
    settings = {**cls.defaults, **hparams}
    steps = trainer_defaults(n_rows, **given, steps_per_batch=lambda batch: cls.steps_per_batch(settings, adata, batch),
                             min_steps=getattr(cls, "small_data_steps", MIN_STEPS))
    regime = "small-data regime"
    if getattr(cls, "reads_positions", False) and data_modality == "sequence":
        budget = lm_budget(n_rows, record_positions(adata), given["batch_size"], given["max_epochs"])
        if budget:
            regime = (f"language model: batches of at most {LM_BATCH_RECORDS} records, at most "
                      f"{LM_MAX_EPOCHS} epochs or about {LM_POSITIONS:,} positions")
            steps = {**budget, "lr_schedule": "cosine"}
            given["lr_schedule"] = trainer.get("lr_schedule", TRAINER_DEFAULTS["lr_schedule"])
            if "learning_rate" not in hparams and trainer.get("learning_rate") is None:  # the config's rate wins
                chosen["learning_rate"] = cls.defaults["learning_rate"] * LM_RATE_FACTOR
    changed = {k: v for k, v in steps.items() if v != given[k]}
    for key, value in {**chosen, **changed}.items():
        LOG.info("decision: %s = %s for %d training rows x %d %s (%s; setting: "
                 "the model's %s in the config, or trainer.%s: false)", key, value, n_rows, n_features,
                 "positions" if data_modality == "sequence" else "features", regime, key, SWITCH)
    return {**hparams, **chosen}, {**trainer, **changed}


def record_positions(adata: ad.AnnData) -> float:
    """Mean positions a training record gives a language model: its tokens and its end."""
    tokens = adata.obsm["tokens"]
    if "split" in adata.obs:
        tokens = tokens[(adata.obs["split"].astype(str) == "train").to_numpy()]
    return float((tokens != PAD).sum(axis=1).mean()) + 1 if len(tokens) else 1.0

