"""Long generate and impute jobs log their progress: the share done, the time so far, the time left."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import torch
from test_models import make_expression, make_sequences

import omicsgen.generate as generate_module
import omicsgen.impute as impute_module
from omicsgen import progress
from omicsgen.generate import generate
from omicsgen.impute import impute
from omicsgen.models import get_family
from omicsgen.models.base import observed_mask
from omicsgen.train import train

LINE = re.compile(r"^(?P<what>.+): (?P<pct>\d+)% done in \d+ s, about \d+ s left$")


def progress_lines(caplog) -> list[tuple[str, int]]:
    found = [LINE.match(r.getMessage()) for r in caplog.records]
    return [(m["what"], int(m["pct"])) for m in found if m]


@pytest.fixture
def every_step(monkeypatch, caplog):
    """A progress line at every step of a loop, not every 30 s."""
    monkeypatch.setattr(progress, "EVERY", 0.0)
    caplog.set_level(logging.INFO)
    return caplog


@pytest.fixture(scope="module")
def trained_vae(tmp_path_factory):
    root = tmp_path_factory.mktemp("progress")
    make_expression(n_cells=120).write_h5ad(root / "masked.h5ad")
    return root / "masked.h5ad", train(root / "masked.h5ad", root / "vae", "vae", {"hidden_dim": 16},
                                       {"max_epochs": 1}, seed=0)


def test_a_table_is_sampled_and_filled_with_progress_between_blocks(trained_vae, tmp_path, monkeypatch, every_step):
    data, checkpoint = trained_vae
    monkeypatch.setattr(generate_module, "GENERATE_CHUNK", 7)
    generate(data, checkpoint, tmp_path / "samples.h5ad", 20, seed=0)
    assert progress_lines(every_step) == [("vae: sampling 20 rows", 35), ("vae: sampling 20 rows", 70)]
    every_step.clear()
    monkeypatch.setattr(impute_module, "INFERENCE_CHUNK", 50)
    impute(data, checkpoint, tmp_path / "imputed.h5ad", seed=0)
    assert progress_lines(every_step) == [("vae: filling 120 rows", 42), ("vae: filling 120 rows", 83)]


def test_a_short_loop_logs_no_progress(trained_vae, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    data, checkpoint = trained_vae
    impute(data, checkpoint, tmp_path / "imputed.h5ad", seed=0)
    assert progress_lines(caplog) == []


@pytest.mark.parametrize("mode", ["two_sided", "left"])
def test_a_language_model_logs_progress_along_the_records(mode, every_step):
    adata = make_sequences(n=30, length=40)
    length = adata.obsm["tokens"].shape[1]
    torch.manual_seed(0)
    model = get_family("lstm").from_data(adata)
    model.hparams.impute_mode = mode
    model.impute(adata.obsm["tokens"], observed_mask(adata))
    filling = progress_lines(every_step)
    # one line a position but the last
    assert [w for w, _ in filling] == [f"lstm: filling 30 records of {length} positions"] * (length - 1)
    assert [p for _, p in filling] == [round(100 * k / length) for k in range(1, length)]
    every_step.clear()
    model.sample(5, torch.Generator().manual_seed(0))
    sampling = progress_lines(every_step)
    assert len(sampling) == length - 1
    assert {w for w, _ in sampling} == {f"lstm: sampling 5 records of {length} positions"}
    assert np.all(np.diff([p for _, p in sampling]) > 0)
