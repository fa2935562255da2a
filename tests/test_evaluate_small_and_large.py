"""Scoring at both ends of the size range on real cells (tests/conftest.py `tiny_data`): tables of
10 rows, one feature, a split of one row, a column all NA and one label run without a traceback,
every skip with its reason; a large test split is scored on a seeded subsample that every model
and baseline share, slow baselines fit on a capped subsample, and both are recorded."""

from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from omicsgen.evaluate import baselines, data, evaluate, metrics
from omicsgen.evaluate.scores import Settings
from test_evaluate import ONE_DRAW, _omicsgen_uns, all_keys, documented_keys, numeric_samples, write_model_outputs

SECTIONS = {"imputation", "generation", "forecast", "likelihood"}


def real_cells(path, n_rows: int, n_genes: int, split: list[str] | None = None, rate: float = 0.2, seed: int = 0) -> ad.AnnData:
    """masked.h5ad-like data from real 10x cells: the first `n_rows` cells, the `n_genes` most
    detected genes, log-normalised counts, a seeded MCAR mask and the given splits."""
    cells = ad.read_h5ad(path)
    counts = cells.X.toarray() if sp.issparse(cells.X) else np.asarray(cells.X)
    genes = np.argsort(-(counts > 0).sum(axis=0), kind="stable")[:n_genes]
    counts = counts[:n_rows][:, genes].astype(np.float64)
    x = np.log1p(counts / np.maximum(counts.sum(axis=1, keepdims=True), 1) * 1e4).astype(np.float32)
    rng = np.random.default_rng(seed)
    if split is None:
        split = list(rng.choice(["train", "train", "train", "val", "test"], n_rows))
    obs = pd.DataFrame({"split": pd.Categorical(split, categories=["train", "val", "test"])}, index=cells.obs_names[:n_rows])
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=cells.var_names[genes]))
    heldout = rng.random(x.shape) < rate
    adata.layers["heldout"] = heldout
    adata.uns["omicsgen"] = _omicsgen_uns("expression", "cells", "layers", rate, int(heldout.sum()))
    return adata


def score_everything(tmp_path, adata, settings=ONE_DRAW, samples=None) -> tuple[dict, dict]:
    """evaluate() of a noisy-truth model and baselines() on `adata`, as the CLI would."""
    adata.write_h5ad(tmp_path / "masked.h5ad")
    truth = data.values(adata)
    fill = np.where(np.isnan(truth), 0.0, truth) + 0.1
    samples = numeric_samples(truth, adata.var_names) if samples is None else samples
    imputed, samples_path = write_model_outputs(tmp_path / "model", adata, fill, samples)
    model = evaluate(tmp_path / "masked.h5ad", imputed, samples_path, tmp_path / "model" / "scores.json", settings=settings)
    base = baselines(tmp_path / "masked.h5ad", tmp_path / "baselines.json", n_samples=20, settings=settings)
    return model, base


def assert_every_baseline_scored_or_explained(base: dict, expected: set[str]) -> None:
    assert expected <= set(base["methods"])
    for name, scores in base["methods"].items():
        reasons = scores.get("not_scored", {})
        assert all(isinstance(why, str) and why for why in reasons.values()), name
        assert (set(scores) & SECTIONS) or reasons, name


# ---------------------------------------------------------------------------- small data


def test_ten_real_cells_run_every_baseline_or_say_why(tmp_path, tiny_data):
    split = ["train"] * 6 + ["val"] + ["test"] * 3
    adata = real_cells(tiny_data["cells"], 10, 5, split)
    model, base = score_everything(tmp_path, adata)
    assert_every_baseline_scored_or_explained(base, {"mean", "median", "knn", "iterative", "mice", "missforest", "svd", "magic"})
    # MAGIC's graph asks 3 * knn + 1 of 9 cells: it runs with fewer neighbours instead of crashing (issue 12)
    assert "imputation" in base["methods"]["magic"] and "imputation" in base["methods"]["knn"]
    # 3 real test rows cannot feed a 5-fold classifier test: null with the reason, the rest scored
    generation = model["generation"]
    assert generation["c2st_auc"] is None and "5 rows a side" in generation["skipped"]["c2st_auc"]
    assert generation["mmd2"] is not None and model["imputation"]["rmse"] is not None
    assert all_keys(model) | all_keys(base) <= documented_keys()


def test_one_feature_skips_regressions_on_other_features(tmp_path, tiny_data):
    adata = real_cells(tiny_data["cells"], 20, 1)
    model, base = score_everything(tmp_path, adata)
    for name in ("iterative", "mice", "missforest"):
        assert "1 feature" in base["methods"][name]["not_scored"]["imputation"]
    for name in ("mean", "median", "knn", "svd", "magic"):
        assert base["methods"][name]["imputation"]["n_scored"] >= 0
    assert "2 features" in model["generation"]["skipped"]["corr_matrix_distance"]
    assert model["generation"]["corr_matrix_distance"] is None


def test_one_test_row_an_empty_column_and_one_label(tmp_path, tiny_data):
    split = ["train"] * 12 + ["val"] * 2 + ["test"]
    adata = real_cells(tiny_data["cells"], 15, 4, split)
    adata.X[:, 2] = np.nan  # a column all NA: nothing observed, nothing scored there
    adata.layers["heldout"][:, 2] = False
    adata.obs["label"] = "only"
    samples = numeric_samples(np.nan_to_num(data.values(adata)), adata.var_names)
    samples.obs["label"] = "only"
    model, base = score_everything(tmp_path, adata, samples=samples)
    assert_every_baseline_scored_or_explained(base, {"mean", "median", "knn", "svd"})
    assert model["protocol"]["n_scored_rows"] == 1
    assert model["generation"]["label_accuracy"] is None  # one label: no classifier to ask
    for scores in base["methods"].values():
        if "imputation" in scores:
            assert scores["imputation"]["n_scored"] == model["imputation"]["n_scored"]


def test_no_test_rows_leave_sections_unscored_with_the_reason(tmp_path, tiny_data):
    adata = real_cells(tiny_data["cells"], 8, 3, ["train"] * 7 + ["val"])
    model, base = score_everything(tmp_path, adata)
    assert "no rows" in model["not_scored"]["imputation"] and "0 test rows" in model["not_scored"]["generation"]
    assert "no rows" in base["methods"]["knn"]["not_scored"]["imputation"]


def test_c2st_names_the_gene_that_separates_real_from_generated(tmp_path, tiny_data):
    adata = real_cells(tiny_data["cells"], 300, 30)
    test = data.values(adata)[data.split_rows(adata, "test")]
    shifted = test.copy()
    shifted[:, 7] += 3.0  # one real gene moved: the forest should lean on it first
    model, _ = score_everything(tmp_path, adata, samples=numeric_samples(shifted, adata.var_names))
    top = model["generation"]["c2st_top_features"]
    assert top[0]["feature"] == adata.var_names[7] and top[0]["importance"] > 0.3
    assert top[0]["generated_mean"] - top[0]["real_mean"] == pytest.approx(3.0, abs=0.3)
    assert len(top) <= 10 and "c2st_top_features" not in model["generation"]["reference_train_vs_test"]


# ---------------------------------------------------------------------------- large data


def test_subsample_rows_are_the_same_for_every_model_and_baseline(tmp_path, tiny_data):
    adata = real_cells(tiny_data["cells"], 300, 20)
    adata.write_h5ad(tmp_path / "masked.h5ad")
    settings = Settings(max_rows=25, max_train_rows=40, bootstrap=50, c2st_rows=0)
    truth = data.values(adata)
    rng = np.random.default_rng(3)
    scored = {}
    for name, noise in (("a", 0.1), ("b", 0.5)):
        fill = truth + noise * rng.normal(size=truth.shape)
        imputed, samples = write_model_outputs(tmp_path / name, adata, fill, numeric_samples(truth, adata.var_names))
        scored[name] = evaluate(tmp_path / "masked.h5ad", imputed, samples, tmp_path / name / "scores.json", seed=4, settings=settings)
    base = baselines(tmp_path / "masked.h5ad", tmp_path / "baselines.json", seed=4, n_samples=30, settings=settings)
    rows = data.scored_rows(adata.obs["split"].to_numpy(), 4, 25)
    expected = int(data.heldout_mask(adata)[rows].sum())
    assert len(rows) == 25 and np.array_equal(rows, data.scored_rows(adata.obs["split"].to_numpy(), 4, 25))
    for result in (scored["a"], scored["b"], base):
        protocol = result["protocol"]
        assert protocol["n_scored_rows"] == 25 and protocol["scored_rows_subsampled"] is True
        assert protocol["n_test_rows"] == int(data.split_rows(adata, "test").sum()) > 25
    for result in (scored["a"]["imputation"], scored["b"]["imputation"], base["methods"]["knn"]["imputation"]):
        assert result["n_scored"] == expected
    assert scored["a"]["imputation"]["rmse"] < scored["b"]["imputation"]["rmse"]
    # the cap: slow baselines fit on 40 training rows, the cheap ones on all of them
    fit = base["protocol"]["baseline_fit_rows"]
    assert base["protocol"]["max_train_rows"] == 40 and fit["knn"] == fit["missforest"] == 40
    assert fit["mean"] == fit["svd"] == int(data.split_rows(adata, "train").sum())


def test_bootstrap_intervals_hold_the_point_estimate(tmp_path, tiny_data):
    model, base = score_everything(tmp_path, real_cells(tiny_data["cells"], 300, 20), Settings(bootstrap=100, c2st_rows=0))
    for section, key in (("imputation", "rmse"), ("imputation", "mae"), ("generation", "c2st_auc"), ("generation", "mmd2")):
        low, high = model[section]["ci95"][key]
        assert low <= model[section][key] <= high and high - low < 0.5
    low, high = base["methods"]["mean"]["imputation"]["ci95"]["rmse"]
    assert low < base["methods"]["mean"]["imputation"]["rmse"] < high
    assert model["protocol"]["bootstrap_resamples"] == 100
    assert model["protocol"]["c2st_rows"] == base["protocol"]["c2st_rows"] == 0


def test_no_bootstrap_when_turned_off(tmp_path, tiny_data):
    model, _ = score_everything(tmp_path, real_cells(tiny_data["cells"], 60, 6), Settings(bootstrap=0, c2st_rows=0))
    assert "ci95" not in model["imputation"] and "ci95" not in model["generation"]


def test_read_rows_matches_a_full_read(tmp_path, tiny_data):
    adata = real_cells(tiny_data["cells"], 200, 10)
    adata.X = sp.csr_matrix(np.nan_to_num(adata.X))
    adata.obsm["tokens"] = np.arange(200 * 3, dtype=np.int8).reshape(200, 3)
    adata.write_h5ad(tmp_path / "cells.h5ad")
    rows = np.array([0, 3, 4, 99, 150, 199])
    for slab in (data.SLAB_ROWS, 64):  # one block, and rows spread over several
        data.SLAB_ROWS, saved = slab, data.SLAB_ROWS
        try:
            cut = data.read_rows(tmp_path / "cells.h5ad", rows)
        finally:
            data.SLAB_ROWS = saved
        assert list(cut.obs_names) == list(adata.obs_names[rows])
        assert (cut.X != adata.X[rows]).nnz == 0 and np.array_equal(cut.layers["heldout"], adata.layers["heldout"][rows])
        assert np.array_equal(cut.obsm["tokens"], adata.obsm["tokens"][rows])


def test_c2st_too_small_says_why():
    result = metrics.classifier_two_sample_test(np.zeros((3, 2)), np.ones((40, 2)))
    assert np.isnan(result["auc"]) and "3 real" in result["reason"]


# ---------------------------------------------------------------------------- report helpers


def test_report_helpers_for_small_and_large_data(tmp_path, tiny_data):
    from omicsgen.report import plots

    rows = plots.figure_rows(1_000_000, seed=2)
    assert len(rows) == plots.FIGURE_ROWS and np.array_equal(rows, plots.figure_rows(1_000_000, seed=2))
    assert np.array_equal(plots.figure_rows(7), np.arange(7))
    embedding, why = plots.umap_embedding(np.zeros((3, 4)), {"vae": np.ones((2, 4))})
    assert embedding is None and "5 real and generated rows" in why
    adata = real_cells(tiny_data["cells"], 200, 30)
    test = data.values(adata)[data.split_rows(adata, "test")]
    model, _ = score_everything(tmp_path, adata, samples=numeric_samples(test * 1.5, adata.var_names))
    evidence = {"vae": model["generation"]["c2st_top_features"]}
    assert plots.c2st_features(evidence).startswith("data:image/png;base64,")
    table = plots.c2st_features_table(evidence)
    assert table.count("<tr>") == len(evidence["vae"]) + 1 and evidence["vae"][0]["feature"] in table


def test_svd_fits_on_a_recorded_subsample_above_its_memory_budget(tmp_path, tiny_data, monkeypatch):
    from omicsgen.evaluate import baseline_methods

    adata = real_cells(tiny_data["cells"], 120, 10)
    adata.write_h5ad(tmp_path / "masked.h5ad")
    monkeypatch.setattr(baseline_methods, "SVD_MAX_ENTRIES", 300)  # 30 rows of 10 features
    base = baselines(tmp_path / "masked.h5ad", tmp_path / "baselines.json", n_samples=20, settings=Settings(bootstrap=0, c2st_rows=0))
    fit = base["protocol"]["baseline_fit_rows"]
    assert fit["svd"] == 30 < fit["mean"] and base["methods"]["svd"]["imputation"]["rmse"] is not None


def test_a_large_samples_file_is_read_only_where_scored(tmp_path, tiny_data, monkeypatch):
    """Issue 14: of a samples.h5ad above COMPARE_ROWS rows, evaluate reads only the rows the
    generation scores use (a million generated cells made dense took 16 GB), and the scores are
    those of reading the whole file, n_generated counting every row."""
    from omicsgen.evaluate import scores, scoring

    adata = real_cells(tiny_data["cells"], 200, 30)
    adata.write_h5ad(tmp_path / "masked.h5ad")
    truth = data.values(adata)
    rng = np.random.default_rng(0)
    many = truth[rng.integers(0, len(truth), scoring.COMPARE_ROWS + 500)] + rng.normal(0, 0.1, (scoring.COMPARE_ROWS + 500, 30))
    imputed, samples = write_model_outputs(tmp_path / "model", adata, np.nan_to_num(truth), numeric_samples(many, adata.var_names))
    read, read_rows = [], data.read_rows
    monkeypatch.setattr(data, "read_rows", lambda path, rows, **kw: read.append((path, rows)) or read_rows(path, rows, **kw))
    subsampled = evaluate(tmp_path / "masked.h5ad", imputed, samples, tmp_path / "model" / "scores.json", settings=ONE_DRAW)
    assert [len(rows) for path, rows in read if path == samples] == [scoring.COMPARE_ROWS]
    monkeypatch.setattr(scores, "_read_samples", lambda path, modality, seed: (data.read(path), None))
    whole = evaluate(tmp_path / "masked.h5ad", imputed, samples, tmp_path / "whole.json", settings=ONE_DRAW)
    flat = lambda scores: pd.json_normalize(scores["generation"], sep="/").iloc[0].to_dict()
    got, expected = flat(subsampled), flat(whole)
    assert got.keys() == expected.keys() and got["n_generated"] == scoring.COMPARE_ROWS + 500
    for key, value in expected.items():  # the same rows: equal but for the last bits of sums over other buffers
        numbers = isinstance(value, float) or (isinstance(value, list) and all(isinstance(v, float) for v in value))
        assert got[key] == (pytest.approx(value, rel=1e-12, nan_ok=True) if numbers else value), key


def _svd_impute_whole(observed, rank=10, n_iter=20, tol=1e-4):
    """svd_impute as it was before issue 14: whole-matrix copies (the reference of the next test)."""
    unobserved = np.isnan(observed)
    filled = np.where(unobserved, data.feature_means(observed), observed)
    rank = max(1, min(rank, min(observed.shape) - 1))
    previous = filled[unobserved]
    for _ in range(n_iter):
        centre = filled.mean(axis=0)
        centred = filled - centre
        top = np.linalg.eigh(centred.T @ centred)[1][:, ::-1][:, :rank]
        filled[unobserved] = ((centred @ top) @ top.T + centre)[unobserved]
        current = filled[unobserved]
        if np.sqrt(np.mean((current - previous) ** 2)) <= tol * (np.sqrt(np.mean(current**2)) + 1e-12):
            break
        previous = current
    low, high = np.nanmin(observed, axis=0), np.nanmax(observed, axis=0)
    return np.where(unobserved, np.clip(filled, low, high), observed)


def test_svd_fill_is_made_a_block_of_rows_at_a_time_with_the_same_values(monkeypatch):
    """Issue 14: svd_impute centres and reconstructs SVD_CHUNK rows at a time (its whole-matrix
    copies took the baselines to 7.9 GB at 100k cells): the fill is the whole-matrix one, and
    the memory it allocates stays under 2.5 copies of the input (it was 4.4)."""
    import tracemalloc

    from omicsgen.evaluate import baseline_methods

    rng = np.random.default_rng(3)
    observed = np.clip(rng.normal(size=(3000, 4)) @ rng.normal(size=(4, 40)) + 2, 0, None)
    observed[rng.random(observed.shape) < 0.15] = np.nan
    monkeypatch.setattr(baseline_methods, "SVD_CHUNK", 700)  # several blocks, the last one short
    tracemalloc.start()
    filled = baseline_methods.svd_impute(observed)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    np.testing.assert_allclose(filled, _svd_impute_whole(observed), rtol=1e-9, atol=1e-12)
    assert np.array_equal(filled[~np.isnan(observed)], observed[~np.isnan(observed)])
    assert peak < 2.5 * observed.nbytes


def test_gene_blocks_narrow_with_many_rows_and_give_the_same_statistics(tmp_path, tiny_data, monkeypatch):
    """Issue 14: a block of genes over every training row holds at most data.BLOCK_ENTRIES values
    (256 genes of 700,000 rows were 1.4 GB); per-gene means, medians and marginal samples do not
    depend on the blocks."""
    from omicsgen.evaluate import baseline_methods

    adata = real_cells(tiny_data["cells"], 200, 30)
    train = data.split_rows(adata, "train")
    wide = baseline_methods._train_statistics(adata, train), baseline_methods.numeric_samples(adata, 0, 50)["mean"]
    monkeypatch.setattr(data, "BLOCK_ENTRIES", 7 * int(train.sum()))
    assert [block.shape[1] for _, block in data.observed_column_blocks(adata, train)] == [7, 7, 7, 7, 2]
    narrow = baseline_methods._train_statistics(adata, train), baseline_methods.numeric_samples(adata, 0, 50)["mean"]
    np.testing.assert_array_equal(wide[0][0], narrow[0][0])
    np.testing.assert_array_equal(wide[0][1], narrow[0][1])
    np.testing.assert_array_equal(wide[1], narrow[1])
