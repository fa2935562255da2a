"""The real `snakemake` run with families that cannot sample (GAIN) or cannot impute (WGAN):
only the jobs a family can do enter the DAG, and scores and reports say what is missing and why."""

from __future__ import annotations

import json

import pytest

from test_workflow import job_counts, make_project, snakemake, tiny_config


def gain_and_wgan_config() -> dict:
    config = tiny_config()
    config["models"] = {"gain": {"family": "gain", "hidden_dim": 32}, "wgan": {"family": "wgan", "hidden_dim": 32}}
    return config


@pytest.fixture(scope="module")
def gan_run(tmp_path_factory, tiny_data):
    folder = make_project(tmp_path_factory.mktemp("gans"), tiny_data,
                          [("cells", "expression", str(tiny_data["cells"]))], gain_and_wgan_config())  # fmt: skip
    dry = snakemake(folder, "--dry-run")
    assert dry.returncode == 0, dry.stderr[-3000:]
    result = snakemake(folder)
    assert result.returncode == 0, result.stderr[-5000:]
    return folder, job_counts(dry.stdout + dry.stderr)


def test_only_what_a_family_can_do_enters_the_dag(gan_run):
    folder, counts = gan_run
    assert counts["train"] == 2 and counts["evaluate"] == 2
    assert counts["generate"] == 1 and counts["impute"] == 1  # wgan samples, gain imputes
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
