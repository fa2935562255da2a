"""Both recurrent cells for both jobs: families lstm and gru are each a language model on
sequences and a forecaster on time courses, load back through the registry, and beat simple
baselines; two-sided imputation uses the right-hand context."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from test_models import _omicsgen_uns, _splits, make_sequences, make_timecourse

from omicsgen.alphabet import FIRST_RESIDUE, GAP, MISSING, PAD, symbols
from omicsgen.models import get_family, load_model
from omicsgen.models.base import observed_mask
from omicsgen.train import train

LM_HPARAMS = {"hidden_dim": 64}
LM_TRAINER = {"batch_size": 32, "max_epochs": 15}
FORECAST_TRAINER = {"batch_size": 4, "max_epochs": 60, "learning_rate": 1e-2}
# Two motifs that share nothing but their length: the first base is fixed by what follows it.
KEYED_MOTIFS = {"A": "CCGGTTC", "T": "GGAACCG"}


def make_keyed_motifs(n=600, length=30, seed=0) -> ad.AnnData:
    """Uniform background with one of KEYED_MOTIFS planted at a random offset, preceded by its key
    base. obs["key_position"] holds the key's position: the left context says nothing about the
    key, the right context (the motif) determines it."""
    rng = np.random.default_rng(seed)
    tokens = rng.integers(FIRST_RESIDUE, FIRST_RESIDUE + 4, size=(n, length)).astype(np.int8)
    starts = rng.integers(3, length - 8, size=n)
    keys = rng.choice(list(KEYED_MOTIFS), size=n)
    for i, (start, key) in enumerate(zip(starts, keys)):
        planted = key + KEYED_MOTIFS[key]
        tokens[i, start : start + len(planted)] = [FIRST_RESIDUE + "ACGT".index(c) for c in planted]
    ids = [f"seq{i}" for i in range(n)]
    obs = pd.DataFrame({"id": ids, "length": length, "key_position": starts}, index=ids)
    adata = ad.AnnData(np.zeros((n, 0), dtype=np.float32), obs=obs)
    adata.obsm["tokens"] = tokens
    adata.obsm["heldout"] = np.zeros_like(tokens, dtype=bool)
    adata.obs["split"] = _splits(n, rng)
    adata.uns["alphabet"] = {"name": "dna", "symbols": symbols("dna")}
    adata.uns["omicsgen"] = _omicsgen_uns("sequence", "obsm", 0)
    return adata


def _train(tmp_path_factory, name, adata, family, hparams, trainer):
    root = tmp_path_factory.mktemp(name)
    adata.write_h5ad(root / "masked.h5ad")
    return root, train(root / "masked.h5ad", root / "model", family, hparams, trainer, seed=0)


@pytest.fixture(scope="module")
def language_models(tmp_path_factory):
    return {family: _train(tmp_path_factory, f"lm_{family}", make_keyed_motifs(), family, LM_HPARAMS, LM_TRAINER)
            for family in ("lstm", "gru")}


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_language_model_loads_back_as_its_cell_and_beats_position_frequencies(language_models, family):
    root, checkpoint = language_models[family]
    model = load_model(checkpoint)
    assert model.family == family and type(model).__name__ == f"{family.upper()}LanguageModel"
    assert isinstance(getattr(model, family), torch.nn.Module)
    metrics = pd.read_csv(checkpoint.parent / "metrics.csv")
    assert metrics["val_loss"].iloc[-1] < 0.9 * metrics["val_loss"].iloc[0]
    adata = ad.read_h5ad(root / "masked.h5ad")
    tokens = adata.obsm["tokens"]
    split = adata.obs["split"].to_numpy()
    log_p = model.log_likelihood(tokens[split == "test"])
    model_nll = -np.nanmean(log_p)
    counts = np.ones((tokens.shape[1], 7))
    for position in range(tokens.shape[1]):
        counts[position] += np.bincount(tokens[split == "train", position], minlength=7)
    log_freq = np.log(counts / counts.sum(1, keepdims=True))
    baseline_nll = -log_freq[np.arange(tokens.shape[1]), tokens[split == "test"]].mean()
    assert model_nll < baseline_nll - 0.1
    samples = model.sample(40, torch.Generator().manual_seed(0))
    assert samples.shape == (40, tokens.shape[1]) and ((samples >= GAP) | (samples == PAD)).all()


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_two_sided_imputation_reads_the_right_context(language_models, family):
    root, checkpoint = language_models[family]
    model = load_model(checkpoint)
    adata = ad.read_h5ad(root / "masked.h5ad")
    test = (adata.obs["split"] == "test").to_numpy()
    tokens, keys = adata.obsm["tokens"][test], adata.obs["key_position"].to_numpy()[test]
    rows = np.arange(len(tokens))
    observed = np.ones_like(tokens, dtype=bool)
    observed[rows, keys] = False
    observed[rows, keys - 1] = False  # a second gap just left of it: filled before the key is
    assert model.hparams.impute_mode == "two_sided"  # the default
    two_sided = model.impute(tokens, observed)
    model.hparams.impute_mode = "left"
    left_only = model.impute(tokens, observed)
    for filled in (two_sided, left_only):
        assert np.array_equal(filled[observed], tokens[observed]) and (filled[~observed] >= GAP).all()
    truth = tokens[rows, keys]
    two_sided_accuracy = (two_sided[rows, keys] == truth).mean()
    left_accuracy = (left_only[rows, keys] == truth).mean()
    # The left context holds nothing about the key: at best a coin flip between A and T.
    assert left_accuracy < 0.7
    assert two_sided_accuracy > 0.9 and two_sided_accuracy > left_accuracy + 0.25


def test_two_sided_imputation_handles_gaps_at_both_ends():
    adata = make_sequences(n=60)
    torch.manual_seed(0)
    model = get_family("gru").from_data(adata)
    tokens = adata.obsm["tokens"]
    observed = observed_mask(adata)
    observed[:, 0] = observed[:, -1] = False
    filled = model.impute(tokens, observed)
    unobserved = ~observed | (tokens == MISSING)
    assert np.array_equal(filled[~unobserved], tokens[~unobserved]) and (filled[unobserved] >= GAP).all()
    assert filled.dtype == np.int8


@pytest.mark.parametrize("family", ["lstm"])  # the gru forecaster: tests/test_train.py
def test_forecaster_of_each_cell_beats_the_last_value(tmp_path_factory, family):
    root, checkpoint = _train(tmp_path_factory, f"forecast_{family}", make_timecourse(n_series=24), family, {},
                              FORECAST_TRAINER)
    model = load_model(checkpoint)
    assert model.family == family and type(model).__name__ == f"{family.upper()}Forecaster"
    adata = ad.read_h5ad(root / "masked.h5ad")
    series = get_family(family).tensors(adata, "test")
    with torch.no_grad():
        predicted = model.one_step_predictions(series["x"], series["observed"], series["time"]).numpy()
    x, observed = series["x"].numpy(), series["observed"].numpy()
    last = np.broadcast_to(model.gene_mean.numpy(), x[:, 0].shape).copy()
    carried = np.empty_like(x)
    for t in range(x.shape[1]):
        carried[:, t] = last
        last = np.where(observed[:, t], x[:, t], last)
    target = observed[:, 1:]
    model_mse = np.mean((predicted[:, 1:] - x[:, 1:])[target] ** 2)
    baseline_mse = np.mean((carried[:, 1:] - x[:, 1:])[target] ** 2)
    assert model_mse < 0.5 * baseline_mse
    filled = model.impute(adata.X, observed_mask(adata), obs=adata.obs)
    assert np.array_equal(filled[observed_mask(adata)], adata.X[observed_mask(adata)]) and np.isfinite(filled).all()
    x_sampled, obs = model.sample(3, torch.Generator().manual_seed(0))
    assert x_sampled.shape == (len(obs), adata.n_vars) and obs["series"].nunique() == 3


def test_family_objects_dispatch_on_the_data():
    sequences, courses = make_sequences(n=40), make_timecourse()
    for family in ("lstm", "gru"):
        assert "tokens" in get_family(family).tensors(sequences, "train")
        assert "time" in get_family(family).tensors(courses, "train")
        assert type(get_family(family).from_data(courses)).__name__ == f"{family.upper()}Forecaster"


def test_language_model_chooses_its_sampling_temperature_on_validation_rows(language_models):
    from omicsgen.models.lstm import TEMPERATURES

    for family, (root, checkpoint) in language_models.items():
        model = load_model(checkpoint)
        assert model.hparams.temperature == "auto"
        assert model.hparams.sampling_temperature in TEMPERATURES, family
        # Chosen once when fitting ends, with the weights written (the best epoch's), not the last.
        val = get_family(family).tensors(ad.read_h5ad(root / "masked.h5ad"), "val")["tokens"].numpy()
        assert model.choose_temperature(val) == model.hparams.sampling_temperature, family
        assert model.sampling_temperature == model.hparams.sampling_temperature
        model.hparams.temperature = 0.5  # a number given by the user wins
        assert model.sampling_temperature == 0.5


def test_truncated_bptt_steps_per_chunk_and_carries_the_state(tmp_path_factory):
    """Records of 30 read 8 positions at a time: 4 optimiser steps per batch; a motif crossing a
    chunk boundary is still predicted, since the state is carried from chunk to chunk."""
    adata = make_keyed_motifs(n=400)
    root, checkpoint = _train(tmp_path_factory, "lm_bptt", adata, "lstm", {**LM_HPARAMS, "bptt_steps": 8},
                              {"batch_size": 32, "max_epochs": 10})
    model = load_model(checkpoint)
    assert model.hparams.bptt_steps == 8
    metrics = pd.read_csv(checkpoint.parent / "metrics.csv")
    assert metrics["val_loss"].min() < 0.9 * metrics["val_loss"].iloc[0]
    tokens, split = adata.obsm["tokens"], adata.obs["split"].to_numpy()
    log_p = model.log_likelihood(tokens[split == "test"])
    # The last 6 motif bases follow from the key and the first base: a model that carries no
    # state across chunks would be near log(1/4) wherever the motif crosses a boundary.
    starts = adata.obs["key_position"].to_numpy()[split == "test"]
    rows = np.arange(len(starts))
    motif_tail = np.stack([log_p[rows, starts + offset] for offset in range(3, 9)], axis=1)
    crossing = (starts // 8) != ((starts + 8) // 8)
    assert np.exp(motif_tail[crossing]).mean() > 0.5  # chance: 0.25 (measured 0.63 after 10 epochs)


def test_truncated_bptt_drops_ended_records_from_the_batch():
    """Padded records: rows leave the batch at the first chunk past their end, and each chunk
    takes one optimiser step."""
    adata = make_keyed_motifs(n=40)
    tokens = adata.obsm["tokens"]
    tokens[::2, 12:] = PAD  # half the records end after 12 positions (the pad at 12 is their end)
    model = get_family("lstm").from_data(adata, bptt_steps=8, hidden_dim=16)
    rows_seen, steps = [], []
    forward = model.forward

    def counting_forward(inputs, state=None, start=0):
        rows_seen.append(len(inputs))
        return forward(inputs, state, start)

    model.forward = counting_forward
    model.optimizers = lambda: None
    model.manual_step = lambda optimizer, loss: steps.append(float(loss.detach()))
    model.training_step({"tokens": torch.from_numpy(tokens.astype(np.int64))}, 0)
    assert rows_seen == [40, 40, 20, 20]  # 31 positions (30 + the end) in 4 chunks of 8
    assert len(steps) == 4 and np.isfinite(steps).all()


def test_killed_language_model_run_resumes_to_the_same_temperature_and_weights(tmp_path):
    """The temperature is chosen when fitting ends with the best weights so far: a run killed
    after an epoch keeps them in its resume checkpoint and ends as an uninterrupted run does."""
    import json
    import os
    import subprocess
    import sys

    from omicsgen.train import FAIL_AFTER_EPOCH_ENV

    make_keyed_motifs(n=300).write_h5ad(tmp_path / "masked.h5ad")

    def run(outdir, kill_after=None):
        env = {key: value for key, value in os.environ.items() if key != FAIL_AFTER_EPOCH_ENV}
        env["OMP_NUM_THREADS"] = "1"
        if kill_after is not None:
            env[FAIL_AFTER_EPOCH_ENV] = str(kill_after)
        command = [sys.executable, "-m", "omicsgen.cli", "train", "--input", str(tmp_path / "masked.h5ad"),
                   "--outdir", str(tmp_path / outdir), "--family", "lstm", "--params", json.dumps({"hidden_dim": 16}),
                   "--trainer", json.dumps({"batch_size": 32, "max_epochs": 4, "patience": 20}), "--seed", "3"]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)

    assert run("resumed", kill_after=1).returncode == -9
    rerun = run("resumed")
    assert rerun.returncode == 0 and "Restoring states from the checkpoint" in rerun.stderr, rerun.stderr[-2000:]
    assert run("whole").returncode == 0
    resumed, whole = (load_model(tmp_path / name / "model.ckpt") for name in ("resumed", "whole"))
    assert resumed.hparams.sampling_temperature == whole.hparams.sampling_temperature
    for name, tensor in whole.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_sampled_records_take_the_train_records_lengths(family):
    """Peaks of one length came back 8-200 nt long from the model's own end token, which a
    classifier spots at once; `lengths: train` draws each record's length from the train rows'."""
    adata = make_keyed_motifs(n=300)
    tokens = adata.obsm["tokens"]
    tokens[::2, 20:] = PAD  # half the records 20 long, half 30
    train_lengths = set((tokens[adata.obs["split"].to_numpy() == "train"] != PAD).sum(1))
    assert train_lengths == {20, 30}
    model = get_family(family).from_data(adata, hidden_dim=16)  # untrained: it would end anywhere
    lengths = (model.sample(200, torch.Generator().manual_seed(0)) != PAD).sum(1)
    assert set(lengths) == {20, 30} and 60 < (lengths == 20).sum() < 140
    own = get_family(family).from_data(adata, hidden_dim=16, lengths="model")
    assert len(set((own.sample(200, torch.Generator().manual_seed(0)) != PAD).sum(1))) > 2
    with pytest.raises(ValueError, match="lengths must be one of"):
        get_family(family).from_data(adata, lengths="longest")


@pytest.mark.parametrize("family", ["lstm", "gru"])
def test_position_features_follow_the_record_through_chunks_and_sampling_steps(family):
    """The position fed beside each token is its place in the record whether the record is read
    whole, in truncated-BPTT chunks or one token at a time as sampling and imputation read it."""
    adata = make_keyed_motifs(n=20)
    model = get_family(family).from_data(adata, hidden_dim=16).eval()
    assert model.hparams.position_features == 16
    inputs = torch.cat([torch.full((4, 1), model.bos), torch.from_numpy(adata.obsm["tokens"][:4].astype(np.int64))], 1)
    with torch.no_grad():
        whole, _ = model(inputs)
        chunks, state = [], None
        for start in range(0, inputs.shape[1], 8):
            logits, state = model(inputs[:, start : start + 8], state, start)
            chunks.append(logits)
        steps, state = [], None
        for position in range(inputs.shape[1]):
            logits, state = model(inputs[:, position : position + 1], state, position)
            steps.append(logits)
        unplaced, _ = model(inputs[:, 8:16])  # the same tokens, read as if they opened the record
    assert torch.allclose(torch.cat(chunks, 1), whole, atol=1e-5)
    assert torch.allclose(torch.cat(steps, 1), whole, atol=1e-5)
    assert not torch.allclose(unplaced, model(inputs[:, 8:16], None, 8)[0], atol=1e-3)


def test_position_features_let_the_model_place_a_far_fixed_base(tmp_path_factory):
    """Random records with a G at position 50 that nothing in the content announces: with the
    position beside each token the language model learns it in a few epochs (chance 0.25).
    Checkpoints from before the position features (none in their hyper-parameters) read tokens only."""
    rng = np.random.default_rng(0)
    adata = make_keyed_motifs(n=300, length=64)
    adata.obsm["tokens"] = rng.integers(FIRST_RESIDUE, FIRST_RESIDUE + 4, size=(300, 64)).astype(np.int8)
    adata.obsm["tokens"][:, 50] = FIRST_RESIDUE + "ACGT".index("G")
    test = adata.obsm["tokens"][adata.obs["split"].to_numpy() == "test"]
    placed = {}
    for width in (16, 0):
        _, checkpoint = _train(tmp_path_factory, f"lm_position_{width}", adata, "lstm",
                               {"hidden_dim": 16, "learning_rate": 1e-2, "position_features": width},
                               {"batch_size": 32, "max_epochs": 40, "patience": 40})
        placed[width] = float(np.exp(load_model(checkpoint).log_likelihood(test)[:, 50]).mean())
    assert placed[16] > 0.6 and placed[16] > placed[0] + 0.2, placed  # measured 0.79 and 0.25 (chance)
    tokens_only = get_family("lstm").from_data(adata, hidden_dim=16, position_features=0)
    assert tokens_only.lstm.input_size == tokens_only.hparams.embed_dim
    with pytest.raises(ValueError, match="position_features must be an even number"):
        get_family("lstm").from_data(adata, hidden_dim=16, position_features=3)
