"""Report pages from real evaluate()/baselines() output on tiny synthetic datasets."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
from conftest import kernels_cached_by
from test_evaluate import (
    ONE_DRAW,
    make_expression,
    make_sequence,
    make_timecourse,
    noisy_truth,
    numeric_samples,
    sequence_samples,
    write_model_outputs,
)

from omicsgen.evaluate import baseline_methods, baselines, data, evaluate
from omicsgen.report import dataset_report, leaderboard
from omicsgen.report.html import format_value

MODELS = {"vae": 0.2, "flow": 0.6}  # name -> how noisy its outputs are


def _model_outputs(adata, noise: float, seed: int):
    """A fill and samples of the given quality, in the modality's format."""
    if data.modality(adata) != "sequence":
        return noisy_truth(adata, seed, noise), numeric_samples(noisy_truth(adata, seed + 10, noise), adata.var_names)
    fill = data.tokens(adata)
    wrong = data.heldout_mask(adata) & (np.random.default_rng(seed).random(fill.shape) < noise)
    fill[wrong] = 3 + (fill[wrong] - 2) % 4  # another residue
    return fill, sequence_samples(baseline_methods.sequence_samples(adata, seed, 50)["markov"])


def build_dataset(folder, make):
    """masked.h5ad, two evaluated models (with loss curves) and the baselines, as the pipeline lays them out."""
    adata = make()
    folder.mkdir(parents=True)
    adata.write_h5ad(folder / "masked.h5ad")
    model_dirs = {}
    for seed, (name, noise) in enumerate(MODELS.items()):
        model_dir = folder / name
        imputed, samples = write_model_outputs(model_dir, adata, *_model_outputs(adata, noise, seed))
        losses = np.linspace(2, 1, 5) + noise
        pd.DataFrame({"epoch": range(5), "train_loss": losses, "val_loss": losses + 0.1}).to_csv(model_dir / "metrics.csv", index=False)
        last_value = baseline_methods.last_value_forecaster(np.zeros(adata.n_vars))
        evaluate(folder / "masked.h5ad", imputed, samples, model_dir / "scores.json", forecast_fn=last_value, settings=ONE_DRAW)
        model_dirs[name] = model_dir
    baselines(folder / "masked.h5ad", folder / "baselines" / "scores.json", settings=ONE_DRAW)
    return model_dirs, folder / "baselines" / "scores.json"


def scalar_numbers(section: dict) -> list:
    return [v for v in section.values() if isinstance(v, (int, float)) and not isinstance(v, bool)]


def assert_self_contained(page: str):
    assert "http" not in page and "<script" not in page.lower() and "<link" not in page.lower()
    sources = re.findall(r'<img src="([^"]*)"', page)
    assert sources and all(src.startswith("data:image/png;base64,") for src in sources)


@pytest.mark.parametrize("make", [make_expression, make_timecourse, make_sequence])
def test_dataset_report_is_self_contained_and_shows_every_score(tmp_path, make):
    model_dirs, baselines_path = build_dataset(tmp_path / "toy", make)
    out = tmp_path / "toy" / "report.html"
    dataset_report("toy", tmp_path / "toy" / "masked.h5ad", model_dirs, baselines_path, out)
    page = out.read_text()
    assert_self_contained(page)
    for name, model_dir in model_dirs.items():
        scores = json.loads((model_dir / "scores.json").read_text())
        assert f"<td>{name}</td>" in page
        sections = [scores["imputation"], scores["generation"], scores["generation"]["reference_train_vs_test"], scores.get("forecast", {})]
        for value in (v for section in sections for v in scalar_numbers(section)):
            assert format_value(value) in page
    for name, method in json.loads(baselines_path.read_text())["methods"].items():
        assert f"baseline: {name}" in page
        for value in (v for section in method.values() for v in scalar_numbers(section)):
            assert format_value(value) in page
    assert "sha256:abab" in page and "expressed in &lt; 3 cells" in page  # provenance and filters
    # how the c2st was run: the baselines' protocol (these tests score with one draw)
    assert "fits one balanced draw (<code>evaluate.c2st_rows</code>: 0)" in page
    if make is not make_sequence:  # the PCA space of MMD and the c2st, with its setting
        assert "work in a PCA of raw values (feature sds span" in page and "evaluate.pca_scale: auto" in page
    assert page.count("<img") >= {make_expression: 4, make_timecourse: 6, make_sequence: 2}[make]
    assert "<h2>Winners</h2>" in page
    if make is make_timecourse:
        assert "Forecast RMSE by horizon" in page
    if make is make_sequence:
        assert "<h2>Likelihood</h2>" in page  # the Markov baseline's held-out likelihood


def test_dataset_report_marks_the_best_value_and_notes_missing_files(tmp_path):
    model_dirs, baselines_path = build_dataset(tmp_path / "toy", make_expression)
    (model_dirs["flow"] / "metrics.csv").unlink()
    out = tmp_path / "report.html"
    dataset_report("toy", tmp_path / "toy" / "masked.h5ad", model_dirs, baselines_path, out)
    page = out.read_text()
    vae = json.loads((model_dirs["vae"] / "scores.json").read_text())
    vae_row = re.search(r'<tr class="model"><td>vae</td>(.*?)</tr>', page).group(1)
    assert f'<td class="best">{format_value(vae["imputation"]["rmse"])}<br><small>[' in vae_row  # least noisy fill, its interval beneath
    assert "No metrics.csv for: flow" in page
    assert "real data (train vs test)" in page


def test_leaderboard_links_every_dataset_and_marks_the_best(tmp_path):
    score_paths, baseline_paths = [], []
    for dataset, make in (("toy_expression", make_expression), ("toy_dna", make_sequence)):
        model_dirs, baselines_path = build_dataset(tmp_path / dataset, make)
        score_paths += [d / "scores.json" for d in model_dirs.values()]
        baseline_paths.append(baselines_path)
    out = tmp_path / "leaderboard.html"
    leaderboard(score_paths, baseline_paths, out)
    page = out.read_text()
    assert "http" not in page and "<script" not in page.lower()
    assert 'href="toy_expression/report.html"' in page and 'href="toy_dna/report.html"' in page
    for path in score_paths:
        scores = json.loads(path.read_text())
        assert f"<th>{scores['model']}</th>" in page
        headline = scores["imputation"].get("rmse", scores["imputation"].get("accuracy"))
        assert format_value(headline) in page
    assert page.count('class="best"') >= 4  # at least one per dataset and section


def test_winners_summary_names_the_best_method_of_each_metric(tmp_path):
    model_dirs, baselines_path = build_dataset(tmp_path / "toy", make_expression)
    out = tmp_path / "report.html"
    dataset_report("toy", tmp_path / "toy" / "masked.h5ad", model_dirs, baselines_path, out)
    page = out.read_text()
    winners = re.search(r"<h2>Winners</h2>(.*?)</table>", page, re.DOTALL).group(1)
    rows = {
        (section, metric): best
        for section, metric, best in re.findall(r"<tr><td>(\w+)</td><td>(\w+)[^<]*</td><td>([^<]*)</td>", winners)
    }
    vae = json.loads((model_dirs["vae"] / "scores.json").read_text())
    flow = json.loads((model_dirs["flow"] / "scores.json").read_text())
    assert vae["imputation"]["rmse"] < flow["imputation"]["rmse"]
    assert rows[("imputation", "rmse")] == "vae"  # the least noisy fill beats the baselines on this data
    for metric in ("mmd2", "c2st_auc", "corr_matrix_distance", "gene_mean_pearson_r"):
        assert ("generation", metric) in rows
    assert ("imputation", "n_scored") not in rows  # counts are never ranked
    tally = dict(re.findall(r"<b>([^<]+)</b> (\d+)", re.search(r"Ranked metrics won \(of (\d+)[^<]*:(.*?)</p>", page).group(2)))
    n_won = {label: sum(label in best.split(", ") for best in rows.values()) for label in tally}
    assert {label: int(n) for label, n in tally.items()} == n_won and tally["vae"] != "0"
    assert "Per-gene mean and variance" in page


def build_mixed_dataset(folder):
    """Expression data with labels: a conditional model that draws imputations ("cvae": samples are
    the real test rows asked for their own label) and an imputation-only model ("gain")."""
    from test_evaluate_uncertainty import _imputed_with_draws

    adata = make_expression(n_obs=200)
    x = data.values(adata)
    adata.obs["label"] = np.where(np.nanmean(x, axis=1) > np.nanmedian(np.nanmean(x, axis=1)), "high", "low")
    folder.mkdir(parents=True)
    adata.write_h5ad(folder / "masked.h5ad")
    test = data.split_rows(adata, "test")
    samples = numeric_samples(x[test], adata.var_names)
    samples.obs["label"] = adata.obs["label"].to_numpy()[test]
    for name in ("cvae", "gain"):
        (folder / name).mkdir()
    _imputed_with_draws(adata, 0.2).write_h5ad(folder / "cvae" / "imputed.h5ad")
    samples.write_h5ad(folder / "cvae" / "samples.h5ad")
    _imputed_with_draws(adata, 0.5).write_h5ad(folder / "gain" / "imputed.h5ad")
    evaluate(folder / "masked.h5ad", folder / "cvae" / "imputed.h5ad", folder / "cvae" / "samples.h5ad", folder / "cvae" / "scores.json", settings=ONE_DRAW)
    evaluate(folder / "masked.h5ad", folder / "gain" / "imputed.h5ad", None, folder / "gain" / "scores.json", settings=ONE_DRAW)
    baselines(folder / "masked.h5ad", folder / "baselines" / "scores.json", settings=ONE_DRAW)
    return {name: folder / name for name in ("cvae", "gain")}, folder / "baselines" / "scores.json"


def test_report_shows_calibration_umap_per_label_scores_and_what_was_not_scored(tmp_path):
    model_dirs, baselines_path = build_mixed_dataset(tmp_path / "toy")
    out = tmp_path / "toy" / "report.html"
    dataset_report("toy", tmp_path / "toy" / "masked.h5ad", model_dirs, baselines_path, out)
    page = out.read_text()
    assert_self_contained(page)
    cvae = json.loads((model_dirs["cvae"] / "scores.json").read_text())
    assert "<h2>Calibration</h2>" in page and "Calibration of multiple imputation" in page
    for value in scalar_numbers(cvae["calibration"]):
        assert format_value(value) in page
    assert "UMAP of real test rows and generated rows" in page
    assert "<h3>Generation per label</h3>" in page and "<td>cvae: high</td>" in page
    assert format_value(cvae["generation"]["per_label"]["low"]["label_accuracy"]) in page
    gain_row = re.search(r'<tr class="missing"><td>gain</td>(.*?)</tr>', page).group(1)
    assert "— not scored: no samples.h5ad was given" in gain_row
    board = tmp_path / "leaderboard.html"
    leaderboard([d / "scores.json" for d in model_dirs.values()], [baselines_path], board)
    text = board.read_text()
    assert "—<sup>1</sup>" in text and "<li>no samples.h5ad was given</li>" in text


def test_report_figures_read_a_seeded_subsample_of_large_data(tmp_path, monkeypatch):
    """Issue 14: above plots.FIGURE_ROWS rows a split (here 20 of 90 train and 30 test rows),
    the page reads only that many train and test rows of masked.h5ad and of each imputed.h5ad,
    and of each samples.h5ad, never a whole file; the summary still counts every row."""
    from pathlib import Path

    from omicsgen.report import plots

    model_dirs, baselines_path = build_dataset(tmp_path / "toy", make_expression)
    monkeypatch.setattr(plots, "FIGURE_ROWS", 20)
    read, read_rows = [], data.read_rows
    monkeypatch.setattr(data, "read_rows", lambda path, rows, **kw: read.append((Path(path).name, rows)) or read_rows(path, rows, **kw))
    monkeypatch.setattr(data, "read", lambda path: pytest.fail(f"{path} read whole"))
    out = tmp_path / "toy" / "report.html"
    dataset_report("toy", tmp_path / "toy" / "masked.h5ad", model_dirs, baselines_path, out)
    page = out.read_text()
    assert sorted((name, len(rows)) for name, rows in read) == [
        ("imputed.h5ad", 40), ("imputed.h5ad", 40), ("masked.h5ad", 40), ("samples.h5ad", 20), ("samples.h5ad", 20)]
    assert_self_contained(page)
    assert "150 × 24; split: train 90, val 30, test 30" in page and "Figures draw from a seeded subsample" in page
    assert page.count("<img") >= 4


def test_umap_kernels_are_cached_on_disk_for_the_next_report_job(tmp_path):
    """umap-learn compiles its parallel numba kernels without cache=True, so every report job compiled
    them again (about 9 of its 16 CPU s). After one UMAP they are in numba's cache directory."""
    script = (
        "import numpy as np\n"
        "from omicsgen.report.plots import umap_embedding\n"
        "rng = np.random.default_rng(0)\n"
        "umap_embedding(rng.normal(size=(40, 5)), {'m': rng.normal(size=(40, 5))})\n"
    )
    cached = kernels_cached_by(script, tmp_path / "numba")
    assert {"smooth_knn_dist", "compute_membership_strengths"} <= cached, cached


def test_the_page_names_only_the_capped_baselines_that_ran():
    """A wide table skips iterative, MICE and MissForest: the sentence on the training rows the
    slow baselines fit on names kNN and MAGIC only."""
    from omicsgen.report.html import _scoring_protocol

    base = {"n_scored_rows": 50, "n_test_rows": 50, "n_train_rows": 6922, "max_train_rows": 2000}
    wide = _scoring_protocol(base | {"baseline_fit_rows": {"mean": 6922, "knn": 2000, "magic": 2000, "svd": 6922}})
    assert " kNN and MAGIC fit on 2000 of the 6922 training rows" in wide and "MICE" not in wide
    every = _scoring_protocol(base | {"baseline_fit_rows": {name: 2000 for name in baseline_methods.CAPPED}})
    assert " kNN, iterative, MICE, MissForest and MAGIC fit on 2000 of the 6922" in every
    assert "fit on" not in _scoring_protocol(base | {"baseline_fit_rows": {"mean": 6922}})
