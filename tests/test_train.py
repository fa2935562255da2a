"""train -> generate / impute end to end on tiny data; each family must beat a simple baseline."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
from test_models import make_expression, make_sequences, make_timecourse

from omicsgen.alphabet import GAP, MISSING, PAD, decode
from omicsgen.errors import InputError
from omicsgen.generate import generate
from omicsgen.impute import impute
from omicsgen.models import get_family, load_model
from omicsgen.models.base import observed_mask, split_rows
from omicsgen.train import train, trainable

# Per family: the data, the model's hyper-parameters and the trainer settings of its test run.
SETUPS = {
    "vae": (
        lambda: make_expression(n_cells=600),
        {"hidden_dim": 64, "latent_dim": 4},
        {"batch_size": 32, "max_epochs": 40, "learning_rate": 3e-3},
    ),
    "lstm": (make_sequences, {"hidden_dim": 64}, {"batch_size": 32, "max_epochs": 15}),
    "gru": (lambda: make_timecourse(n_series=24), {}, {"batch_size": 4, "max_epochs": 60, "learning_rate": 1e-2}),
}


@dataclass
class Run:
    data: Path
    checkpoint: Path
    root: Path

    @property
    def adata(self) -> ad.AnnData:
        return ad.read_h5ad(self.data)

    @property
    def metrics(self) -> pd.DataFrame:
        return pd.read_csv(self.checkpoint.parent / "metrics.csv")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """family -> its trained Run, trained once per module on first use."""
    runs = {}

    def get(family: str) -> Run:
        if family not in runs:
            make, hparams, trainer = SETUPS[family]
            root = tmp_path_factory.mktemp(family)
            make().write_h5ad(root / "masked.h5ad")
            checkpoint = train(root / "masked.h5ad", root / "model", family, hparams, trainer, seed=0)
            runs[family] = Run(root / "masked.h5ad", checkpoint, root)
        return runs[family]

    return get


# ---- training ----------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["vae", "lstm", "gru"])
def test_training_writes_a_falling_loss_and_nothing_else(trained, family):
    run = trained(family)
    metrics = run.metrics
    assert list(metrics.columns) == ["epoch", "train_loss", "val_loss"]
    assert metrics["epoch"].is_unique and metrics[["train_loss", "val_loss"]].notna().all().all()
    assert metrics["train_loss"].iloc[-1] < 0.9 * metrics["train_loss"].iloc[0]
    assert metrics["val_loss"].min() < metrics["val_loss"].iloc[0]
    assert sorted(p.name for p in run.checkpoint.parent.iterdir()) == ["metrics.csv", "model.ckpt"]


@pytest.mark.parametrize("family", ["vae", "lstm", "gru"])
def test_checkpoint_loads_without_the_data(trained, family):
    """`load_model` rebuilds the model as Lightning's own `load_from_checkpoint` does."""
    run = trained(family)
    model = load_model(run.checkpoint)
    assert model.family == family and not model.training
    cls = get_family(family).checkpoint_class(torch.load(run.checkpoint, weights_only=True))
    direct = trainable(cls).load_from_checkpoint(run.checkpoint, map_location="cpu")
    assert type(model) is cls and model.hparams == direct.hparams
    assert list(model.state_dict()) == list(direct.state_dict())
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, direct.state_dict()[name])


def test_checkpoint_load_generate_and_impute_never_import_lightning(trained, tmp_path):
    """Importing Lightning costs a job ~3.5 s: only `train` may (issue 13)."""
    run = trained("vae")
    script = f"""
import sys
import omicsgen.cli, omicsgen.complete, omicsgen.evaluate, omicsgen.report
from omicsgen.generate import generate
from omicsgen.impute import impute
generate({str(run.data)!r}, {str(run.checkpoint)!r}, {str(tmp_path / "samples.h5ad")!r}, n_samples=20, seed=0)
impute({str(run.data)!r}, {str(run.checkpoint)!r}, {str(tmp_path / "imputed.h5ad")!r}, seed=0, n_draws=2)
assert "lightning" not in sys.modules, sorted(name for name in sys.modules if "lightning" in name)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-2000:]
    assert (tmp_path / "imputed.h5ad").exists()


@pytest.mark.parametrize("family", ["vae", "lstm", "gru"])
def test_same_seed_gives_identical_weights(tmp_path, monkeypatch, family):
    monkeypatch.chdir(tmp_path)  # Lightning must not leave lightning_logs/ in the working directory
    make, hparams, trainer = SETUPS[family]
    make().write_h5ad(tmp_path / "masked.h5ad")
    trainer = {**trainer, "max_epochs": 2}
    first, second = (
        load_model(train(tmp_path / "masked.h5ad", tmp_path / name, family, hparams, trainer, seed=7))
        for name in ("a", "b")
    )
    for name, tensor in first.state_dict().items():
        assert torch.equal(tensor, second.state_dict()[name]), name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b", "masked.h5ad"]


def test_train_rejects_a_family_for_another_modality(tmp_path):
    make_expression().write_h5ad(tmp_path / "masked.h5ad")
    with pytest.raises(InputError, match="takes sequence.* data, not expression.*families for expression: ae, gain, vae, wgan"):
        train(tmp_path / "masked.h5ad", tmp_path / "out", "lstm", {}, {}, seed=0)
    with pytest.raises(InputError, match="unknown model family 'gan'"):
        train(tmp_path / "masked.h5ad", tmp_path / "out", "gan", {}, {}, seed=0)
    assert not (tmp_path / "out").exists()


def test_train_rejects_unknown_settings_and_lists_the_valid_ones(tmp_path):
    make_expression().write_h5ad(tmp_path / "masked.h5ad")
    with pytest.raises(InputError, match="unknown vae hyper-parameter 'hiden_dim'.*valid: hidden_dim, latent_dim"):
        train(tmp_path / "masked.h5ad", tmp_path / "out", "vae", {"hiden_dim": 8}, {}, seed=0)
    with pytest.raises(InputError, match="unknown trainer setting 'epochs'.*max_epochs"):
        train(tmp_path / "masked.h5ad", tmp_path / "out", "vae", {}, {"epochs": 3}, seed=0)


# ---- each family beats a simple baseline ---------------------------------------------------
def test_vae_imputes_heldout_entries_better_than_gene_means(trained):
    run = trained("vae")
    impute(run.data, run.checkpoint, run.root / "imputed.h5ad", seed=0)
    imputed, adata = ad.read_h5ad(run.root / "imputed.h5ad"), run.adata
    heldout = adata.layers["heldout"]
    train_rows = (adata.obs["split"] == "train").to_numpy()
    visible = np.where(observed_mask(adata), adata.X, np.nan)
    gene_means = np.broadcast_to(np.nanmean(visible[train_rows], axis=0), adata.shape)
    model_mse = np.mean((imputed.layers["imputed"][heldout] - adata.X[heldout]) ** 2)
    baseline_mse = np.mean((gene_means[heldout] - adata.X[heldout]) ** 2)
    assert model_mse < 0.5 * baseline_mse


def test_lstm_per_token_nll_beats_position_frequencies(trained):
    run = trained("lstm")
    adata, model = run.adata, load_model(run.checkpoint)
    tokens, observed = adata.obsm["tokens"], observed_mask(adata)
    test_rows = (adata.obs["split"] == "test").to_numpy()
    scored = _scored(tokens) & observed
    log_p = model.log_likelihood(tokens[test_rows], observed[test_rows])
    model_nll = -log_p[scored[test_rows]].mean()
    baseline_nll = _position_frequency_nll(tokens, scored, (adata.obs["split"] == "train").to_numpy(), test_rows)
    assert model_nll < baseline_nll - 0.1


def test_gru_forecasts_better_than_the_last_value(trained):
    run = trained("gru")
    adata, model = run.adata, load_model(run.checkpoint)
    series = get_family("gru").tensors(adata, "test")
    with torch.no_grad():
        predicted = model.one_step_predictions(series["x"], series["observed"], series["time"]).numpy()
    x, observed = series["x"].numpy(), series["observed"].numpy()
    last_value = _carry_forward(x, observed, model.gene_mean.numpy())
    target = observed[:, 1:]
    model_mse = np.mean((predicted[:, 1:] - x[:, 1:])[target] ** 2)
    baseline_mse = np.mean((last_value[:, 1:] - x[:, 1:])[target] ** 2)
    assert model_mse < 0.5 * baseline_mse


# ---- impute and generate outputs --------------------------------------------------------------
@pytest.mark.parametrize("family", ["vae", "lstm", "gru"])
def test_impute_file_keeps_observed_entries_and_fills_the_rest(trained, family):
    run = trained(family)
    out = impute(run.data, run.checkpoint, run.root / f"imputed_{family}.h5ad", seed=0)
    imputed, adata = ad.read_h5ad(out), run.adata
    observed = observed_mask(adata)
    if family == "lstm":
        filled, truth = imputed.obsm["tokens_imputed"], imputed.obsm["tokens"]
        # Filled: val and test rows, and rows with a native gap; the other train rows' held-out
        # positions, which no stage reads, stay MISSING.
        read = split_rows(adata, ["val", "test"]) | (truth == MISSING).any(1)
        assert read.any() and (~read).any() and (~observed[~read]).any()
        assert filled.dtype == np.int8 and (filled[~observed & read[:, None]] >= GAP).all()
        assert (filled[~observed & ~read[:, None]] == MISSING).all()
    else:
        filled, truth = imputed.layers["imputed"], imputed.X
        assert np.isfinite(filled).all()
    assert np.array_equal(truth, adata.obsm["tokens"] if family == "lstm" else adata.X, equal_nan=family != "lstm")
    assert np.array_equal(filled[observed], truth[observed])
    assert ("X_vae" in imputed.obsm) == (family == "vae")
    assert {"impute", "train"} <= set(imputed.uns["omicsgen"]["provenance"])


def test_generate_expression(trained):
    run = trained("vae")
    out = generate(run.data, run.checkpoint, run.root / "samples.h5ad", n_samples=25, seed=3)
    samples = ad.read_h5ad(out)
    assert samples.shape == (25, run.adata.n_vars) and samples.X.dtype == np.float32
    assert list(samples.var_names) == list(run.adata.var_names)
    assert (samples.obs["origin"] == "generated").all()
    assert samples.uns["omicsgen"]["modality"] == "expression"
    again = ad.read_h5ad(generate(run.data, run.checkpoint, run.root / "again.h5ad", n_samples=25, seed=3))
    assert np.array_equal(samples.X, again.X)


def test_generate_sequences_and_fasta(trained):
    run = trained("lstm")
    fasta = run.root / "samples.fasta"
    samples = ad.read_h5ad(generate(run.data, run.checkpoint, run.root / "samples.h5ad", 30, seed=3, fasta_path=fasta))
    tokens = samples.obsm["tokens"]
    assert tokens.shape == (30, run.adata.obsm["tokens"].shape[1]) and tokens.dtype == np.int8
    assert not (tokens == MISSING).any()
    assert samples.obs["id"].tolist()[:2] == ["sample_1", "sample_2"]
    assert samples.uns["alphabet"]["name"] == "dna"
    records = decode(tokens, list(samples.uns["alphabet"]["symbols"]))
    assert (samples.obs["length"].to_numpy() == [len(r) for r in records]).all()
    assert fasta.read_text().replace("\n", "").count(">") == 30
    assert "".join(line for line in fasta.read_text().splitlines() if not line.startswith(">")) == "".join(records)


def test_generate_timecourse(trained):
    run = trained("gru")
    samples = ad.read_h5ad(generate(run.data, run.checkpoint, run.root / "samples.h5ad", 4, seed=3))
    assert samples.obs["series"].nunique() == 4 and samples.n_vars == run.adata.n_vars
    assert np.isfinite(samples.X).all() and samples.obs["time"].notna().all()


def test_vae_takes_time_courses_as_independent_rows(tmp_path):
    make_timecourse().write_h5ad(tmp_path / "masked.h5ad")
    checkpoint = train(tmp_path / "masked.h5ad", tmp_path / "vae", "vae", {}, {"max_epochs": 2}, seed=0)
    samples = ad.read_h5ad(generate(tmp_path / "masked.h5ad", checkpoint, tmp_path / "samples.h5ad", 5, seed=0))
    assert samples.uns["omicsgen"]["modality"] == "timecourse"
    assert samples.obs["series"].nunique() == 5 and samples.obs["time"].isna().all()
    imputed = ad.read_h5ad(impute(tmp_path / "masked.h5ad", checkpoint, tmp_path / "imputed.h5ad", seed=0))
    assert np.isfinite(imputed.layers["imputed"]).all() and "X_vae" in imputed.obsm


def test_generate_refuses_fasta_for_expression(trained):
    run = trained("vae")
    with pytest.raises(InputError, match="FASTA"):
        generate(run.data, run.checkpoint, run.root / "x.h5ad", 3, seed=0, fasta_path=run.root / "x.fasta")


# ---- baselines ----------------------------------------------------------------------------------
def _scored(tokens: np.ndarray) -> np.ndarray:
    """Positions up to and including the first pad (the end), as the language model scores them."""
    is_pad = (tokens == PAD).astype(int)
    return (np.cumsum(is_pad, axis=1) - is_pad) == 0


def _position_frequency_nll(tokens, scored, train_rows, test_rows, vocab=7) -> float:
    """Per-token NLL of a model that knows only each position's token frequencies (add-one)."""
    counts = np.ones((tokens.shape[1], vocab))
    rows, positions = np.nonzero(scored & train_rows[:, None])
    np.add.at(counts, (positions, tokens[rows, positions]), 1)
    log_freq = np.log(counts / counts.sum(1, keepdims=True))
    rows, positions = np.nonzero(scored & test_rows[:, None])
    return float(-log_freq[positions, tokens[rows, positions]].mean())


def _carry_forward(x, observed, gene_mean):
    """Each point predicted by the last observed value of each gene (the mean before any)."""
    predicted = np.empty_like(x)
    last = np.broadcast_to(gene_mean, x[:, 0].shape).copy()
    for t in range(x.shape[1]):
        predicted[:, t] = last
        last = np.where(observed[:, t], x[:, t], last)
    return predicted


# ---- progress and best weights (issue 13: no checkpoint file per improvement) ------------------
def test_one_log_line_per_epoch_and_the_best_val_weights_kept(tmp_path, tiny_data, caplog):
    """GAIN's val loss is deterministic (fixed hidden entries, fixed noise), so the weights in
    model.ckpt must reproduce the lowest val_loss of metrics.csv, whichever epoch had it."""
    import logging

    from omicsgen.ingest import ingest
    from omicsgen.mask import mask
    from omicsgen.models.gain import GAIN, NOISE_SCALE
    from omicsgen.preprocess import preprocess

    ingest(tiny_data["cells"], tmp_path / "i.h5ad", "cells", "expression")
    preprocess(tmp_path / "i.h5ad", tmp_path / "p.h5ad", {"n_top_genes": 100, "min_cells": 3}, {"val": 0.1, "test": 0.2}, 0)
    mask(tmp_path / "p.h5ad", tmp_path / "masked.h5ad", rate=0.1, mechanism="mcar", seed=0)
    caplog.set_level(logging.INFO, logger="omicsgen.train")
    trainer = {"max_epochs": 8, "batch_size": 64, "patience": 20, "size_to_data": False, "learning_rate": 3e-3}
    path = train(tmp_path / "masked.h5ad", tmp_path / "gain", "gain", {"hidden_dim": 32}, trainer, seed=0)

    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("epoch ")]
    assert [line.split(":")[0] for line in lines] == [f"epoch {k}/8" for k in range(1, 9)]
    assert all("val_loss" in line and "s/epoch" in line and "left" in line for line in lines)

    metrics = pd.read_csv(tmp_path / "gain" / "metrics.csv")
    model = load_model(path)
    val = GAIN.tensors(ad.read_h5ad(tmp_path / "masked.h5ad"), "val")
    assert len(val["x"]) <= 64  # one val batch: its loss is the epoch's val_loss
    with torch.no_grad():
        scaled, observed = model.scale(val["x"]), val["observed"]
        hide = observed & model.validation_hide(observed.shape, 0, observed.device)
        fake = model.generate(scaled, observed & ~hide, torch.full_like(scaled, NOISE_SCALE / 2))
        loss = float(((fake - scaled) ** 2 * hide).sum() / hide.sum().clamp_min(1))
    assert loss == pytest.approx(metrics["val_loss"].min(), rel=1e-4)


@pytest.mark.parametrize("through_lightning", [False, True], ids=["plain_steps", "lightning_wrappers"])
def test_an_epoch_in_one_lightning_step_takes_a_plain_loops_steps(tmp_path, monkeypatch, through_lightning):
    """`train` hands Lightning one step an epoch and steps the mini-batches itself (epoch_steps.py):
    its per-epoch losses are those of a plain PyTorch loop over the same batches (zero_grad,
    backward, clip, Adam step; validation after each epoch), and Lightning counts every step,
    whether the steps go through Lightning's wrappers (as under DDP or mixed precision) or not."""
    import lightning

    from omicsgen import epoch_steps
    from omicsgen.batches import InMemoryBatches
    from omicsgen.models.base import dense_train_view
    from omicsgen.train import family_class

    decided = []
    decide = epoch_steps.lightning_adds_nothing_to_a_step
    monkeypatch.setattr(epoch_steps, "lightning_adds_nothing_to_a_step",
                        lambda module: decided.append(decide(module)) or (decided[-1] and not through_lightning))
    make_expression(n_cells=300).write_h5ad(tmp_path / "masked.h5ad")
    hparams = {"hidden_dim": 16, "latent_dim": 4, "noise": 0.2}
    trainer = {"max_epochs": 3, "batch_size": 64, "lr_schedule": "none", "patience": 10, "size_to_data": False,
               "gradient_clip_val": 0.5}
    checkpoint = train(tmp_path / "masked.h5ad", tmp_path / "model", "ae", hparams, trainer, seed=3)
    logged = pd.read_csv(tmp_path / "model" / "metrics.csv")

    adata = ad.read_h5ad(tmp_path / "masked.h5ad")
    lightning.seed_everything(3)
    cls = family_class("ae", adata, tmp_path / "masked.h5ad")
    model = cls.from_data(dense_train_view(adata), **hparams)
    train_batches = InMemoryBatches(cls.tensors(adata, "train"), 64, shuffle=True, seed=3)
    val_batches = InMemoryBatches(cls.tensors(adata, "val"), 64)
    optimizer = torch.optim.Adam(model.parameters(), lr=model.hparams.learning_rate, fused=True)
    plain = []
    for epoch in range(3):
        train_batches.epoch = epoch
        model.train()
        total = rows = 0.0
        for batch in train_batches:
            loss = model.loss(batch)
            optimizer.zero_grad()
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 0.5)
            optimizer.step()
            total, rows = total + float(loss) * len(batch["x"]), rows + len(batch["x"])
        model.eval()
        with torch.no_grad():
            val = [(float(model.loss(batch)) * len(batch["x"]), len(batch["x"])) for batch in val_batches]
        plain.append((total / rows, sum(v for v, _ in val) / sum(n for _, n in val)))
    np.testing.assert_allclose(logged[["train_loss", "val_loss"]].to_numpy(), np.array(plain), rtol=1e-5)
    steps = int(torch.load(checkpoint, weights_only=False)["global_step"])
    assert steps == 3 * len(train_batches) > 3  # optimiser steps, not Lightning's one batch an epoch
    assert decided == [True]  # one CPU, full precision, no step hooks: plain steps unless forced


def test_steps_go_through_lightning_where_its_wrappers_do_something(tmp_path):
    """Plain steps only where Lightning would add nothing: a callback hooked between backward and
    step, a family's own step hook, or mixed precision each keep Lightning's wrappers."""
    import lightning

    from omicsgen.epoch_steps import lightning_adds_nothing_to_a_step

    class GradientWatch(lightning.Callback):
        def on_after_backward(self, trainer, pl_module):
            pass

    class OwnHook(trainable(get_family("ae").model_class("expression"))):
        def on_before_backward(self, loss):
            pass

    adata = make_expression(n_cells=40)

    def decision(module_class, **trainer_settings):
        model = module_class.from_data(adata, hidden_dim=8, latent_dim=2)
        model.trainer = lightning.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, **trainer_settings)
        return lightning_adds_nothing_to_a_step(model)

    ae = trainable(get_family("ae").model_class("expression"))
    assert decision(ae)
    assert decision(ae, callbacks=[lightning.Callback()])  # a callback that hooks no step
    assert not decision(ae, callbacks=[GradientWatch()])
    assert not decision(OwnHook)
    assert not decision(ae, precision="bf16-mixed")


def test_mixed_precision_clips_the_unscaled_gradients(tmp_path):
    """Under fp16 mixed precision the loss is scaled (2**16 here) before backward; the gradients
    are clipped after Lightning unscales them, as the trainer's `gradient_clip_val` means."""
    import lightning
    from lightning.pytorch.plugins.precision import MixedPrecision

    from omicsgen.batches import InMemoryBatches
    from omicsgen.epoch_steps import WholeEpoch

    adata = make_expression(n_cells=120)
    cls = trainable(get_family("ae").model_class("expression"))
    model = cls.from_data(adata, hidden_dim=8, latent_dim=2)
    norms = []
    clip = model.configure_gradient_clipping

    def watched(optimizer, gradient_clip_val=None, gradient_clip_algorithm=None):
        norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]))))
        return clip(optimizer, gradient_clip_val, gradient_clip_algorithm)

    model.configure_gradient_clipping = watched
    model.gradient_clip = 1.0
    train_batches = InMemoryBatches(cls.tensors(adata, "train"), 32, shuffle=True, seed=0)
    model.take_over_steps(None)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**16)
    trainer = lightning.Trainer(accelerator="cpu", max_epochs=3, logger=False, enable_progress_bar=False,
                                enable_checkpointing=False, plugins=[MixedPrecision("16-mixed", "cpu", scaler)])
    trainer.fit(model, train_dataloaders=WholeEpoch(train_batches))
    assert len(norms) == 3 * len(train_batches)
    finite = [norm for norm in norms if np.isfinite(norm)]  # fp16 overflows until the scaler backs off
    assert len(finite) >= len(norms) // 2
    assert 0 < max(finite) < 1e3  # unscaled: the scaled ones are thousands of times larger
