"""DDP on CPU (gloo): `omicsgen train` with 2 processes trains on disjoint halves of the rows,
only rank 0 writes, and the model is as good as a 1-process run's; batches shard by rank."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import anndata as ad
import pandas as pd
import pytest
import torch

from omicsgen import batches
from omicsgen.batches import InMemoryBatches
from omicsgen.ingest import ingest
from omicsgen.mask import mask
from omicsgen.preprocess import preprocess

RESOURCES = os.path.join(os.path.dirname(__file__), "..", "resources")
HPARAMS = {"hidden_dim": 32, "latent_dim": 4, "likelihood": "nb"}
TRAINER = {"max_epochs": 10, "batch_size": 64, "patience": 20, "learning_rate": 3e-3, "accelerator": "cpu"}


@pytest.mark.parametrize("n_rows", [10, 11])
def test_ranks_get_disjoint_shards_of_equal_length(monkeypatch, n_rows):
    tensors = {"x": torch.arange(n_rows).float()[:, None]}
    seen = []
    for rank in (0, 1):
        monkeypatch.setattr(batches, "_rank_and_world", lambda rank=rank: (rank, 2))
        loader = InMemoryBatches(tensors, batch_size=4, shuffle=True, seed=5)
        rows = torch.cat([b["x"][:, 0] for b in loader]).long().tolist()
        assert len(loader) == math.ceil(math.ceil(n_rows / 2) / 4) and len(rows) == math.ceil(n_rows / 2)
        seen.append(rows)
    assert set(seen[0]) | set(seen[1]) == set(range(n_rows))
    assert len(set(seen[0]) & set(seen[1])) == (n_rows % 2)  # one row repeated to even up an odd count


@pytest.fixture(scope="module")
def masked(tmp_path_factory):
    """1500 real 10x cells, 200 highly variable genes."""
    folder = tmp_path_factory.mktemp("ddp")
    cells = ad.read_h5ad(os.path.join(RESOURCES, "mouse_10x_counts.h5ad"))[:1500].copy()
    cells.write_h5ad(folder / "cells.h5ad")
    ingest(folder / "cells.h5ad", folder / "i.h5ad", "cells", "expression")
    preprocess(folder / "i.h5ad", folder / "p.h5ad", {"n_top_genes": 200, "min_cells": 3, "min_genes": 20},
               {"val": 0.1, "test": 0.2}, 0)
    mask(folder / "p.h5ad", folder / "masked.h5ad", rate=0.1, mechanism="mcar", seed=0)
    return folder / "masked.h5ad"


def omicsgen_train(data, workdir, outdir, trainer) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "omicsgen.cli", "train", "--input", str(data), "--outdir", str(outdir),
               "--family", "vae", "--params", json.dumps(HPARAMS), "--trainer", json.dumps(trainer), "--seed", "0"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(command, cwd=workdir, env=env, capture_output=True, text=True, timeout=900)


def test_two_process_ddp_matches_one_process(tmp_path, masked):
    n_train = int((ad.read_h5ad(masked, backed="r").obs["split"] == "train").sum())
    # the same effective batch (2 ranks x 32 rows = 64), so the same number of optimiser steps
    runs = {"one": {**TRAINER, "devices": 1}, "ddp": {**TRAINER, "devices": 2, "strategy": "ddp", "batch_size": 32}}
    for name, trainer in runs.items():
        done = omicsgen_train(masked, tmp_path, tmp_path / name, trainer)
        assert done.returncode == 0, done.stderr[-3000:]
        assert sorted(p.name for p in (tmp_path / name).iterdir()) == ["metrics.csv", "model.ckpt"]
    assert "Starting with 2 processes" in done.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ddp", "one"]  # nothing else written

    # each rank took half the rows (in batches of 32): as many optimiser steps as one process
    steps = {}
    for name in runs:
        best = torch.load(tmp_path / name / "model.ckpt", weights_only=False)
        # patience outlasts max_epochs: every epoch ran, and the file is written after the last
        steps[name] = best["global_step"] / TRAINER["max_epochs"]
    assert steps["one"] == math.ceil(n_train / 64)
    assert steps["ddp"] == math.ceil(math.ceil(n_train / 2) / 32)
    epochs = TRAINER["max_epochs"]

    losses = {name: pd.read_csv(tmp_path / name / "metrics.csv")["val_loss"] for name in runs}
    for loss in losses.values():
        assert len(loss) == epochs and loss.min() < loss.iloc[0]
    # DDP learns as much as one process: its held-out loss falls by at least 70% of the
    # 1-process run's improvement over the starting point (the per-gene fit)
    one, ddp = losses["one"], losses["ddp"]
    assert ddp.iloc[0] - ddp.min() > 0.7 * (one.iloc[0] - one.min())
    assert ddp.min() < one.iloc[0] - 0.7 * (one.iloc[0] - one.min())
