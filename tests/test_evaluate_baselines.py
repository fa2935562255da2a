"""The added imputation baselines (median, MICE, MissForest, MAGIC), median absolute error, the
non-zero-only protocol and novelty as a distance to the nearest training record."""

from __future__ import annotations

import re

import numpy as np
import pytest

from omicsgen.alphabet import GAP, MISSING, PAD
from omicsgen.evaluate import baseline_methods as methods
from omicsgen.evaluate import baselines, data, evaluate, metrics
from conftest import kernels_cached_by
from test_evaluate import ONE_DRAW, all_keys, documented_keys, make_expression, make_timecourse, noisy_truth, write_model_outputs


def _rmse(adata, name, fill) -> float:
    test = data.split_rows(adata, "test")
    return metrics.numeric_imputation_metrics(data.values(adata)[test], fill, data.heldout_mask(adata)[test])["rmse"]


def test_median_fill_uses_the_observed_train_median():
    train = np.array([[1.0, np.nan], [2.0, np.nan], [10.0, np.nan]])
    observed = np.array([[np.nan, np.nan], [5.0, 7.0]])
    filled = methods.median_impute(train, observed)
    np.testing.assert_array_equal(filled, [[2.0, 2.0], [5.0, 7.0]])  # a gene never observed: the overall median


@pytest.mark.parametrize("name", ["mice", "missforest", "magic"])
def test_model_based_baselines_beat_the_mean_on_low_rank_data(name):
    adata = make_expression(n_obs=200)
    observed = data.observed_values(adata)
    train, test = data.split_rows(adata, "train"), data.split_rows(adata, "test")
    if name == "magic":
        both = train | test
        fill = methods.magic_impute(observed[both], seed=0)[test[both]]
    else:
        fill = getattr(methods, f"{name}_impute")(observed[train], observed[test], seed=0)
    assert not np.isnan(fill).any()
    np.testing.assert_array_equal(fill[~np.isnan(observed[test])], observed[test][~np.isnan(observed[test])])
    assert _rmse(adata, name, fill) < 0.8 * _rmse(adata, "mean", methods.mean_impute(observed[train], observed[test]))


def test_magic_runs_on_single_cells_only(tmp_path):
    expression, timecourse = make_expression(), make_timecourse()
    expression.write_h5ad(tmp_path / "cells.h5ad")
    timecourse.write_h5ad(tmp_path / "series.h5ad")
    cells = baselines(tmp_path / "cells.h5ad", tmp_path / "cells.json", settings=ONE_DRAW)["methods"]
    series = baselines(tmp_path / "series.h5ad", tmp_path / "series.json", settings=ONE_DRAW)["methods"]
    assert {"mean", "median", "knn", "iterative", "mice", "missforest", "svd", "magic"} <= set(cells)
    assert "magic" not in series and {"median", "mice", "missforest"} <= set(series)
    assert all_keys(cells) <= documented_keys()


def test_median_absolute_error_on_both_scales():
    truth = np.array([[0.0, 1.0, 2.0, 3.0]])
    filled = np.array([[0.0, 1.5, 2.0, 6.0]])
    scores = metrics.numeric_imputation_metrics(truth, filled, np.ones_like(truth, dtype=bool))
    assert scores["median_abs_error"] == pytest.approx(0.25)  # errors 0, 0.5, 0, 3
    counts = metrics.counts_imputation_metrics(np.array([[0.0, 4.0]]), np.log1p(np.array([[1.0, 2.0]])),
                                               np.ones((1, 2), dtype=bool), np.array([10.0]), 10.0)  # fmt: skip
    assert counts["counts_median_abs_error"] == pytest.approx(1.5)  # counts back: 1 and 2 vs 0 and 4


def test_protocol_says_when_only_nonzero_entries_were_held_out(tmp_path):
    adata = make_expression()
    x = data.values(adata)
    adata.layers["heldout"] = adata.layers["heldout"] & (x != 0)
    adata.uns["omicsgen"]["mask"]["nonzero_only"] = True
    adata.write_h5ad(tmp_path / "masked.h5ad")
    imputed, samples = write_model_outputs(tmp_path / "m", adata, noisy_truth(adata), _samples(adata))
    protocol = evaluate(tmp_path / "masked.h5ad", imputed, samples, tmp_path / "m" / "scores.json", settings=ONE_DRAW)["protocol"]
    assert protocol["mask_nonzero_only"] is True and protocol["heldout_includes_zeros"] is False
    assert protocol["heldout_zero_fraction"] == 0


def _samples(adata):
    from test_evaluate import numeric_samples

    return numeric_samples(data.values(adata), adata.var_names)


def test_nearest_training_distance_is_normalised_hamming():
    a, c, g, t = 3, 4, 5, 6
    train = np.array([[a, c, g, t], [a, a, a, PAD]], dtype=np.int8)
    generated = np.array([
        [a, c, g, t],          # a copy: 0
        [a, c, g, a],          # one of 4 positions differs: 0.25
        [a, a, PAD, PAD],      # vs [a a a]: 2 of max(2, 3) match -> 1/3
        [MISSING, c, g, t],    # a missing position matches nothing: 0.25
        [GAP, GAP, GAP, GAP],  # nothing in common with either: 1
    ], dtype=np.int8)  # fmt: skip
    distances = metrics.nearest_hamming_distances(generated, train, chunk=2)
    np.testing.assert_allclose(distances, [0, 0.25, 1 / 3, 0.25, 1])


def test_magic_kernels_are_cached_on_disk_for_the_next_baselines_job(tmp_path):
    """graphtools (MAGIC's graph) compiles its numba kernels without cache=True: every baselines
    job compiled them again (3 of its 14 CPU s on a 569-row table). After one MAGIC fit they are in
    numba's cache directory."""
    script = (
        "import numpy as np\n"
        "from omicsgen.evaluate.baseline_methods import magic_impute\n"
        "values = np.random.default_rng(0).gamma(2.0, size=(60, 8))\n"
        "values[::7, 3] = np.nan\n"
        "magic_impute(values)\n"
    )
    cached = kernels_cached_by(script, tmp_path / "numba")
    assert any(name.startswith("_numba_") for name in cached), cached


def test_baselines_log_each_method_and_its_time(tmp_path, caplog, monkeypatch):
    """A baselines job on a large table runs for minutes: its log names each step as it ends,
    and a baseline that fails is not logged as filled."""
    def fails(*args, **kwargs):
        raise ValueError("singular matrix")

    monkeypatch.setattr(methods, "missforest_impute", fails)
    make_timecourse().write_h5ad(tmp_path / "series.h5ad")
    with caplog.at_level("INFO", logger="omicsgen.evaluate"):
        result = baselines(tmp_path / "series.h5ad", tmp_path / "scores.json", settings=ONE_DRAW,
                           reference_path=tmp_path / "reference.json")
    lines = [r.getMessage() for r in caplog.records]
    fitted = [name for name, scored in result["methods"].items() if "imputation" in scored]
    assert {"iterative", "mice", "linear"} <= set(fitted) and "missforest" not in fitted
    assert "singular matrix" in result["methods"]["missforest"]["not_scored"]["imputation"]
    assert not any(line.startswith("baseline missforest:") for line in lines), lines
    for name in fitted:
        assert any(re.fullmatch(rf"baseline {name}: \d+ rows filled(, fit on \d+ training rows)? in \d+\.\d s", line)
                   for line in lines), (name, lines)
    assert any(re.fullmatch(r"the real-data reference .* in \d+\.\d s", line) for line in lines), lines
    assert any(line.startswith("baseline linear: forecasts scored in ") for line in lines), lines


def test_svd_on_a_wide_table_takes_the_thin_side(monkeypatch):
    """A microarray of 17 samples and 400 probes (GEOquery's GDS507, unshipped): the rank-10
    projection from the rows' thin SVD is the one the genes x genes Gram matrix gives, without
    that matrix (22,645 probes: 4 GB and hours of eigendecomposition)."""
    from pathlib import Path

    from omicsgen.io import read_dataset

    adata = read_dataset(Path(__file__).parent / "unseen" / "renal_gds507.soft.gz", "expression")
    values = np.log2(np.asarray(adata.X, dtype=np.float64) + 1)
    centre = values.mean(axis=0)
    chunks = [slice(0, len(values))]
    monkeypatch.setattr(methods, "THIN_SVD_GENES", 100)  # 400 probes here; real microarrays hold 20,000
    _, vectors = np.linalg.eigh((values - centre).T @ (values - centre))
    gram = vectors[:, ::-1][:, :10]
    with monkeypatch.context() as patch:  # the genes x genes path is not taken
        patch.setattr(np.linalg, "eigh", lambda matrix: pytest.fail(f"eigh of {matrix.shape}"))
        thin = methods._top_right_vectors(values, centre, 10, chunks)
    assert thin.shape == (400, 10)
    np.testing.assert_allclose(thin @ thin.T, gram @ gram.T, atol=1e-8)
    observed = values.copy()
    observed[np.random.default_rng(0).random(values.shape) < 0.1] = np.nan
    filled = methods.svd_impute(observed)
    assert np.isfinite(filled).all() and np.array_equal(filled[~np.isnan(observed)], values[~np.isnan(observed)])


def test_regression_baselines_skip_tables_too_wide_for_them(monkeypatch):
    """Past REGRESSION_MAX_FEATURES features (a 20,000-probe microarray) iterative, MICE and
    MissForest are skipped with the size of the correlation matrix as the reason; the others fill."""
    adata = make_expression(n_obs=60, n_genes=24)
    monkeypatch.setattr(methods, "REGRESSION_MAX_FEATURES", 20)
    fills, skipped, _ = methods.fit_numeric_fills(adata, seed=0)
    assert set(skipped) == {"iterative", "mice", "missforest"}
    assert "each of the 24 features" in skipped["mice"] and "correlation matrix alone is 0.0 GB" in skipped["mice"]
    assert {"mean", "median", "knn", "svd"} <= set(fills)
