"""An interrupted `omicsgen train` (SIGKILL after an epoch) resumes from its last checkpoint when
rerun, and ends with the same weights and metrics as an uninterrupted run; a changed setting
starts afresh; the learning-rate schedules and bf16 precision train."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pandas as pd
import pytest
import torch

from omicsgen.ingest import ingest
from omicsgen.mask import mask
from omicsgen.models import load_model
from omicsgen.preprocess import preprocess
from omicsgen.train import FAIL_AFTER_EPOCH_ENV, train

TRAINER = {"max_epochs": 5, "batch_size": 64, "patience": 20}
HPARAMS = {"hidden_dim": 32, "latent_dim": 4, "likelihood": "nb"}


@pytest.fixture(scope="module")
def masked(tmp_path_factory, tiny_data):
    folder = tmp_path_factory.mktemp("resume")
    ingest(tiny_data["cells"], folder / "i.h5ad", "cells", "expression")
    preprocess(folder / "i.h5ad", folder / "p.h5ad", {"n_top_genes": 100, "min_cells": 3}, {"val": 0.1, "test": 0.2}, 0)
    mask(folder / "p.h5ad", folder / "masked.h5ad", rate=0.1, mechanism="mcar", seed=0)
    return folder / "masked.h5ad"


def omicsgen_train(data, outdir, trainer=TRAINER, kill_after=None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop(FAIL_AFTER_EPOCH_ENV, None)
    if kill_after is not None:
        env[FAIL_AFTER_EPOCH_ENV] = str(kill_after)
    command = [sys.executable, "-m", "omicsgen.cli", "train", "--input", str(data), "--outdir", str(outdir),
               "--family", "vae", "--params", json.dumps(HPARAMS), "--trainer", json.dumps(trainer), "--seed", "3"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=600)


def test_killed_run_resumes_to_the_same_weights(tmp_path, masked):
    killed = omicsgen_train(masked, tmp_path / "resumed", kill_after=1)
    assert killed.returncode == -9, killed.stderr[-2000:]
    assert not (tmp_path / "resumed" / "model.ckpt").exists()
    (work_dir,) = (tmp_path / "resumed").glob(".train-*")
    assert (work_dir / "last.ckpt").exists()
    assert torch.load(work_dir / "last.ckpt", weights_only=False)["epoch"] == 1  # epochs 0 and 1 done

    rerun = omicsgen_train(masked, tmp_path / "resumed")
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert "Restoring states from the checkpoint" in rerun.stderr
    assert sorted(p.name for p in (tmp_path / "resumed").iterdir()) == ["metrics.csv", "model.ckpt"]

    whole = omicsgen_train(masked, tmp_path / "whole")
    assert whole.returncode == 0, whole.stderr[-2000:]
    assert "Restoring states" not in whole.stderr
    resumed, uninterrupted = load_model(tmp_path / "resumed" / "model.ckpt"), load_model(tmp_path / "whole" / "model.ckpt")
    for name, tensor in uninterrupted.state_dict().items():
        assert torch.equal(resumed.state_dict()[name], tensor), name
    metrics = pd.read_csv(tmp_path / "resumed" / "metrics.csv")
    assert list(metrics["epoch"]) == list(range(5))
    pd.testing.assert_frame_equal(metrics, pd.read_csv(tmp_path / "whole" / "metrics.csv"))


def test_changed_settings_never_resume_stale_state(tmp_path, masked):
    assert omicsgen_train(masked, tmp_path / "m", kill_after=0).returncode == -9
    (stale,) = (tmp_path / "m").glob(".train-*")
    changed = {**TRAINER, "batch_size": 32, "max_epochs": 2}
    done = omicsgen_train(masked, tmp_path / "m", trainer=changed)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Restoring states" not in done.stderr and not stale.exists()
    assert list(pd.read_csv(tmp_path / "m" / "metrics.csv")["epoch"]) == [0, 1]


@pytest.mark.parametrize("schedule", ["plateau", "cosine", "none"])
def test_lr_schedules_set_the_rate(tmp_path, monkeypatch, masked, schedule):
    """cosine anneals from the start; plateau halves the rate only once the loss stalls
    (patience 2 -> after 1 epoch without improvement); none keeps it."""
    monkeypatch.setattr("omicsgen.train.shutil.rmtree", lambda *args, **kwargs: None)  # keep last.ckpt
    trainer = {"max_epochs": 4, "batch_size": 64, "patience": 2, "lr_schedule": schedule, "learning_rate": 1e-3}
    train(masked, tmp_path / schedule, "vae", HPARAMS, trainer, seed=0)
    (last,) = (tmp_path / schedule).glob(".train-*/last.ckpt")
    checkpoint = torch.load(last, weights_only=False)
    final_lr = checkpoint["optimizer_states"][0]["param_groups"][0]["lr"]
    if schedule == "none":
        assert final_lr == pytest.approx(1e-3)
    elif schedule == "cosine":
        assert final_lr == pytest.approx(1e-5)  # annealed to 1% at max_epochs
        assert len(checkpoint["lr_schedulers"]) == 1
    else:
        assert checkpoint["lr_schedulers"][0]["patience"] == 1 and final_lr <= 1e-3


def test_unknown_lr_schedule_is_a_clear_error(tmp_path, masked):
    from omicsgen.errors import InputError

    with pytest.raises(InputError, match="unknown lr_schedule 'step'.*none, plateau, cosine"):
        train(masked, tmp_path / "x", "vae", HPARAMS, {"lr_schedule": "step"}, seed=0)


@pytest.mark.parametrize("family, hparams", [
    ("ae", {"hidden_dim": 32, "output": "nb"}),
    ("vae", HPARAMS),
])
def test_bf16_mixed_precision_trains_on_cpu(tmp_path, masked, family, hparams):
    trainer = {"max_epochs": 3, "batch_size": 64, "precision": "bf16-mixed"}
    path = train(masked, tmp_path / "bf16", family, hparams, trainer, seed=0)
    metrics = pd.read_csv(tmp_path / "bf16" / "metrics.csv")
    assert metrics[["train_loss", "val_loss"]].notna().all().all()
    assert metrics["val_loss"].iloc[-1] < metrics["val_loss"].iloc[0]
    record = torch.load(path, weights_only=False)["omicsgen"]
    assert "bf16-mixed" in json.dumps(record, default=str)
    model = load_model(path)
    assert all(t.dtype == torch.float32 for t in model.state_dict().values() if t.is_floating_point())
