"""The real `snakemake` run with families that cannot sample (GAIN) or cannot impute (WGAN):
only the jobs a family can do enter the DAG, and scores and reports say what is missing and why.
A VAE in the same run draws imputations, and its calibration reaches scores and report."""

from __future__ import annotations

import json

import pytest

import anndata as ad
import numpy as np
from test_workflow import job_counts, make_project, snakemake, tiny_config

from omicsgen.evaluate import data


def gain_and_wgan_config() -> dict:
    config = tiny_config()
    config["models"] = {
        "gain": {"family": "gain", "hidden_dim": 32},
        "wgan": {"family": "wgan", "hidden_dim": 32},
        "vae": {"family": "vae", "latent_dim": 4, "hidden_dim": 32},
    }
    return config


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, tiny_data):
    folder = make_project(tmp_path_factory.mktemp("gans"), tiny_data,
                          [("cells", "expression", str(tiny_data["cells"]))], gain_and_wgan_config())  # fmt: skip
    result = snakemake(folder)
    assert result.returncode == 0, result.stderr[-5000:]
    # the jobs after the preprocess checkpoint enter the DAG once its facts exist: count them now
    # (forcing train and what follows it; forcing the checkpoint itself would hide them again)
    dry = snakemake(folder, "--dry-run", "--forcerun", "train")
    assert dry.returncode == 0, dry.stderr[-3000:]
    return folder, job_counts(dry.stdout + dry.stderr)


def test_only_what_a_family_can_do_enters_the_dag(gan_run):
    folder, counts = gan_run
    assert counts["train"] == 3 and counts["evaluate"] == 3
    assert counts["generate"] == 2 and counts["impute"] == 2  # wgan and vae sample, gain and vae impute
    results = folder / "results" / "cells"
    assert (results / "gain" / "imputed.h5ad").is_file() and not (results / "gain" / "samples.h5ad").exists()
    assert (results / "wgan" / "samples.h5ad").is_file() and not (results / "wgan" / "imputed.h5ad").exists()


def test_scores_hold_what_exists_and_say_why_the_rest_is_missing(gan_run):
    folder, _ = gan_run
    gain = json.loads((folder / "results" / "cells" / "gain" / "scores.json").read_text())
    wgan = json.loads((folder / "results" / "cells" / "wgan" / "scores.json").read_text())
    assert gain["imputation"]["rmse"] > 0 and "generation" not in gain
    assert "cannot sample" in gain["not_scored"]["generation"] and "imputation" not in gain["not_scored"]
    assert 0 <= wgan["generation"]["c2st_auc"] <= 1 and "imputation" not in wgan
    assert "cannot impute" in wgan["not_scored"]["imputation"]


def test_reports_show_a_dash_with_the_reason(gan_run):
    folder, _ = gan_run
    page = (folder / "results" / "cells" / "report.html").read_text()
    assert page.count("— not scored:") == 2 and "cannot sample" in page and "cannot impute" in page
    board = (folder / "results" / "report.html").read_text()
    assert "—<sup>1</sup>" in board and "cannot sample" in board and "cannot impute" in board


def test_vae_imputation_draws_are_summarised_and_their_calibration_scored(gan_run):
    folder, _ = gan_run
    results = folder / "results" / "cells"
    imputed = ad.read_h5ad(results / "vae" / "imputed.h5ad")
    masked = ad.read_h5ad(results / "masked.h5ad")
    held, x = data.dense(masked.layers["heldout"]).astype(bool), data.values(masked)
    sd, lower, upper = (data.dense(imputed.layers[k]) for k in ("imputed_sd", "imputed_lower", "imputed_upper"))
    test = (masked.obs["split"] == "test").to_numpy()[:, None]
    assert np.all(sd[~held & np.isfinite(x)] == 0) and np.all(sd[held & test] >= 0) and sd[held & test].mean() > 0
    assert np.all(lower[held & test] <= upper[held & test])
    assert np.isnan(sd[held & ~test]).all()  # held-out train / val entries are filled, not drawn
    assert np.asarray(imputed.uns["imputation_draws"]["values"]).shape[1] == 20  # the rule's default n_draws
    calibration = json.loads((results / "vae" / "scores.json").read_text())["calibration"]
    assert calibration["n_draws"] == 20 and calibration["n_scored"] > 100
    assert 0 < calibration["coverage_50"] <= calibration["coverage_90"] <= 1
    assert calibration["interval_width_50"] < calibration["interval_width_90"]
    assert "Calibration of multiple imputation" in (results / "report.html").read_text()
