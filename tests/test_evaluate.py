"""Scoring and baselines on tiny synthetic data built here, following docs/data-format.md."""

from __future__ import annotations

import json
import re
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from omicsgen.alphabet import GAP, MISSING, PAD, symbols
from omicsgen.evaluate import baseline_methods as methods
from omicsgen.errors import InputError
from omicsgen.evaluate import baselines, data, evaluate, metrics
from omicsgen.evaluate.scores import Settings

DOCS = Path(__file__).resolve().parents[1] / "docs" / "scores.md"
PERIOD = "ACGGT"  # every 3-mer context has one successor, so an order-3 chain can learn it exactly
# Scoring as configured, but the c2st as a single balanced draw (evaluate.c2st_rows = 0): these
# tests check what is scored and where, not the c2st's stability on small test splits, which
# test_classifier_two_sample_test_on_few_real_rows_averages_draws_of_the_other_side checks.
ONE_DRAW = Settings(c2st_rows=0)

# ---------------------------------------------------------------------------- synthetic data


def _splits(n: int, rng) -> pd.Categorical:
    labels = np.array(["train"] * n, dtype=object)
    order = rng.permutation(n)
    labels[order[: n // 5]], labels[order[n // 5 : 2 * n // 5]] = "val", "test"
    return pd.Categorical(labels, categories=["train", "val", "test"])


def _omicsgen_uns(modality, dataset, slot, rate, n_heldout) -> dict:
    record = {
        "params": json.dumps({"rate": rate}),
        "inputs": json.dumps({"raw/input.tsv": "sha256:" + "ab" * 32}),
        "versions": json.dumps({"omicsgen": "0.1.0", "numpy": np.__version__}),
        "seed": 0,
        "time": "2024-01-01T00:00:00+00:00",
    }
    filtered = [{"step": "min_cells", "removed_obs": 0, "removed_vars": ["geneX", "geneY"], "reason": "expressed in < 3 cells"}]
    return {
        "modality": modality,
        "dataset": dataset,
        "mask": {"key": "heldout", "slot": slot, "mechanism": "mcar", "rate": rate, "seed": 0, "n_heldout": n_heldout},
        "provenance": {"mask": record},
        "filtered": json.dumps(filtered),
    }


def make_expression(n_obs=150, n_genes=24, rank=2, rate=0.15, seed=0, dataset="toy_expression") -> ad.AnnData:
    """Low-rank non-negative data (clipping leaves real zeros) with a few natively missing values.

    The gene loadings are fixed, so different seeds draw different cells of one distribution.
    """
    rng = np.random.default_rng(seed)
    loadings = np.random.default_rng(1234).normal(size=(rank, n_genes))
    x = rng.normal(size=(n_obs, rank)) @ loadings + 1.0
    x = np.clip(x + 0.1 * rng.normal(size=x.shape), 0, None).astype(np.float32)
    x[rng.random(x.shape) < 0.01] = np.nan
    heldout = (rng.random(x.shape) < rate) & ~np.isnan(x)
    obs = pd.DataFrame({"split": _splits(n_obs, rng)}, index=[f"cell{i}" for i in range(n_obs)])
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]))
    adata.layers["heldout"] = heldout
    adata.uns["omicsgen"] = _omicsgen_uns("expression", dataset, "layers", rate, int(heldout.sum()))
    return adata


def make_timecourse(n_series=15, n_times=6, n_genes=6, rate=0.1, seed=0, dataset="toy_timecourse") -> ad.AnnData:
    """Each series: genes drifting linearly from their own level, irregular times, split by series."""
    rng = np.random.default_rng(seed)
    split_of_series = np.asarray(_splits(n_series, rng))
    rows, obs = [], []
    for s in range(n_series):
        times = np.sort(rng.choice(np.arange(20), n_times, replace=False)).astype(float)
        level, slope = rng.normal(3, 1, n_genes), rng.normal(0, 0.2, n_genes)
        rows.append(level + slope * times[:, None] + 0.05 * rng.normal(size=(n_times, n_genes)))
        obs += [{"series": f"s{s}", "time": t, "split": split_of_series[s]} for t in times]
    x = np.vstack(rows).astype(np.float32)
    heldout = rng.random(x.shape) < rate
    obs = pd.DataFrame(obs, index=[f"row{i}" for i in range(len(obs))])
    obs["split"] = pd.Categorical(obs["split"], categories=["train", "val", "test"])
    adata = ad.AnnData(X=x, obs=obs, var=pd.DataFrame(index=[f"gene{j}" for j in range(n_genes)]))
    adata.layers["heldout"] = heldout
    adata.uns["omicsgen"] = _omicsgen_uns("timecourse", dataset, "layers", rate, int(heldout.sum()))
    return adata


def make_sequence(n=80, length=30, rate=0.15, seed=0, dataset="toy_dna") -> ad.AnnData:
    """Periodic DNA records of varying length (padded), a few natively missing (N) positions."""
    rng = np.random.default_rng(seed)
    table = {c: symbols("dna").index(c) for c in "ACGT"}
    tokens = np.zeros((n, length), dtype=np.int8)
    for i in range(n):
        size = rng.integers(length - 8, length + 1)
        phase = rng.integers(len(PERIOD))
        tokens[i, :size] = [table[PERIOD[(phase + j) % len(PERIOD)]] for j in range(size)]
    tokens[(rng.random(tokens.shape) < 0.02) & (tokens != PAD)] = MISSING
    heldout = (rng.random(tokens.shape) < rate) & (tokens >= GAP)
    obs = pd.DataFrame({"split": _splits(n, rng)}, index=[f"rec{i}" for i in range(n)])
    adata = ad.AnnData(X=np.zeros((n, 0), dtype=np.float32), obs=obs)
    adata.obsm["tokens"], adata.obsm["heldout"] = tokens, heldout
    adata.uns["alphabet"] = {"name": "dna", "symbols": symbols("dna")}
    adata.uns["omicsgen"] = _omicsgen_uns("sequence", dataset, "obsm", rate, int(heldout.sum()))
    return adata


def with_imputed(adata: ad.AnnData, filled: np.ndarray) -> ad.AnnData:
    """imputed.h5ad: a copy of the masked data plus the model's fill."""
    imputed = adata.copy()
    if data.modality(adata) == "sequence":
        imputed.obsm["tokens_imputed"] = filled.astype(np.int8)
    else:
        imputed.layers["imputed"] = filled.astype(np.float32)
    return imputed


def numeric_samples(x: np.ndarray, var_names) -> ad.AnnData:
    """samples.h5ad from real-like rows; a generator emits complete rows, so gaps get the gene mean."""
    x = np.where(np.isnan(x), np.nanmean(x, axis=0), x)
    return ad.AnnData(X=x.astype(np.float32), var=pd.DataFrame(index=list(var_names)))


def sequence_samples(tokens: np.ndarray) -> ad.AnnData:
    samples = ad.AnnData(X=np.zeros((len(tokens), 0), dtype=np.float32))
    samples.obsm["tokens"] = tokens.astype(np.int8)
    samples.uns["alphabet"] = {"name": "dna", "symbols": symbols("dna")}
    return samples


def write_model_outputs(folder: Path, adata: ad.AnnData, filled: np.ndarray, samples: ad.AnnData) -> tuple[Path, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    with_imputed(adata, filled).write_h5ad(folder / "imputed.h5ad")
    samples.write_h5ad(folder / "samples.h5ad")
    return folder / "imputed.h5ad", folder / "samples.h5ad"


def noisy_truth(adata: ad.AnnData, seed: int = 1, noise: float = 0.3) -> np.ndarray:
    """A plausible model fill: the truth plus noise (natively missing stays missing)."""
    truth = data.values(adata)
    return truth + noise * np.random.default_rng(seed).normal(size=truth.shape)


def with_counts(adata: ad.AnnData, target_sum: float = 100.0) -> ad.AnnData:
    """Counts whose log-normalisation is X (rounded counts, X rebuilt from them), as preprocess writes."""
    rng = np.random.default_rng(7)
    counts = np.round(np.nan_to_num(np.expm1(data.values(adata))) * 3)
    library_size = counts.sum(axis=1) + rng.integers(1, 50, adata.n_obs)
    x = np.log1p(counts / library_size[:, None] * target_sum)
    x[np.isnan(data.values(adata))] = np.nan
    adata.X = x.astype(np.float32)
    adata.layers["counts"] = counts.astype(np.float32)
    adata.obs["library_size"] = library_size
    params = {"params": {"target_sum": target_sum, "scale": False}, "split": {"test": 0.2}}
    adata.uns["omicsgen"]["provenance"]["preprocess"] = dict(adata.uns["omicsgen"]["provenance"]["mask"], params=json.dumps(params))
    return adata


def documented_keys() -> set[str]:
    return set(re.findall(r"`([a-z_0-9]+)`", DOCS.read_text()))


def all_keys(value) -> set[str]:
    if isinstance(value, dict):
        return set(value) | set().union(*(all_keys(v) for v in value.values()))
    return set()


# ---------------------------------------------------------------------------- metrics


def test_identical_fill_has_zero_error_and_perfect_correlation():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(40, 5))
    scores = metrics.numeric_imputation_metrics(truth, truth.copy(), rng.random(truth.shape) < 0.5)
    assert scores["rmse"] == 0 and scores["mae"] == 0 and scores["median_gene_rmse"] == 0
    assert scores["pearson_r"] == pytest.approx(1) and scores["median_gene_pearson_r"] == pytest.approx(1)


def test_imputation_error_counts_zeros_but_not_natively_missing_truth():
    truth = np.array([[0.0, np.nan], [2.0, 1.0]])
    filled = np.array([[1.0, 100.0], [2.0, 1.0]])
    scores = metrics.numeric_imputation_metrics(truth, filled, np.ones_like(truth, dtype=bool))
    assert scores["n_scored"] == 3
    assert scores["rmse"] == pytest.approx(np.sqrt(1 / 3))


def test_per_gene_correlation_is_undefined_for_a_constant_fill():
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(30, 4))
    constant = np.broadcast_to(truth.mean(axis=0), truth.shape).copy()
    scores = metrics.numeric_imputation_metrics(truth, constant, np.ones_like(truth, dtype=bool))
    assert np.isnan(scores["median_gene_pearson_r"]) and np.isfinite(scores["median_gene_rmse"])


def test_sequence_accuracy_never_counts_missing_or_pad_positions():
    truth = np.array([[3, 4, MISSING, 5, PAD]])
    filled = np.array([[3, 4, 6, 5, 6]])
    scores = metrics.sequence_imputation_accuracy(truth, filled, np.ones_like(truth, dtype=bool))
    assert scores == {"accuracy": 1.0, "n_scored": 3}


def test_mmd_of_same_distribution_is_far_below_shifted():
    rng = np.random.default_rng(0)
    real, same, shifted = rng.normal(size=(200, 3)), rng.normal(size=(200, 3)), rng.normal(1.0, 1.0, size=(200, 3))
    bandwidth = metrics.median_bandwidth(real)
    same_score, shifted_score = metrics.mmd2_unbiased(same, real, bandwidth), metrics.mmd2_unbiased(shifted, real, bandwidth)
    assert abs(same_score) < 0.02 and shifted_score > 0.1
    assert shifted_score > 10 * abs(same_score)


def test_js_divergence_is_zero_for_identical_and_one_for_disjoint_spectra():
    p = np.array([0.2, 0.3, 0.5, 0.0])
    assert metrics.js_divergence(p, p.copy()) == pytest.approx(0)
    assert metrics.js_divergence(np.array([1.0, 0, 0]), np.array([0, 0, 1.0])) == pytest.approx(1)


def test_kmer_spectrum_ignores_pad_missing_and_gap():
    # A C - G N T T <pad> A : the only residue-only 2-mer windows before the end are AC and TT.
    tokens = np.array([[3, 4, GAP, 5, MISSING, 6, 6, PAD, 3]])
    spectrum = metrics.kmer_spectrum(tokens, 2, n_residues=4)
    expected = np.zeros(16)
    expected[0 * 4 + 1] = expected[3 * 4 + 3] = 0.5
    np.testing.assert_allclose(spectrum, expected)


def test_gc_uniqueness_and_novelty():
    tokens = np.array([[3, 4, 5, 6], [4, 4, MISSING, PAD], [MISSING, PAD, PAD, PAD]])  # ACGT, CCN, N
    np.testing.assert_allclose(metrics.gc_fractions(tokens, "dna"), [0.5, 1.0])
    assert metrics.uniqueness(["AC", "AC", "GT", "TT"]) == 0.75
    assert metrics.novelty(["AC", "GT"], ["AC", "CC"]) == 0.5


def test_spearman_and_nonzero_protocol_are_scored_side_by_side():
    truth = np.array([[0.0, 1.0], [0.0, 2.0], [3.0, 0.0], [4.0, 5.0]])
    filled = np.array([[1.0, 1.0], [1.0, 8.0], [27.0, 1.0], [64.0, 125.0]])  # cube of the truth off zero: monotone
    scores = metrics.numeric_imputation_metrics(truth, filled, np.ones_like(truth, dtype=bool))
    nonzero = truth != 0
    assert scores["n_scored"] == 8 and scores["n_scored_nonzero"] == int(nonzero.sum()) == 5
    assert scores["spearman_r_nonzero"] == pytest.approx(1) and scores["pearson_r_nonzero"] < 0.99
    assert scores["rmse_nonzero"] == pytest.approx(np.sqrt(np.mean((truth[nonzero] - filled[nonzero]) ** 2)))
    assert scores["mae_nonzero"] == pytest.approx(np.mean(np.abs(truth[nonzero] - filled[nonzero])))
    assert scores["spearman_r"] < 1  # zeros filled with 1 tie with the true ones


def test_counts_scale_inverts_log_normalisation(tmp_path):
    adata = with_counts(make_expression())
    adata.write_h5ad(tmp_path / "masked.h5ad")
    real = numeric_samples(data.values(make_expression(seed=5)), adata.var_names)
    imputed, samples = write_model_outputs(tmp_path / "vae", adata, data.values(adata), real)
    perfect = evaluate(tmp_path / "masked.h5ad", imputed, samples, tmp_path / "vae" / "scores.json", settings=ONE_DRAW)
    imputed, samples = write_model_outputs(tmp_path / "noisy", adata, noisy_truth(adata, noise=0.3), real)
    noisy = evaluate(tmp_path / "masked.h5ad", imputed, samples, tmp_path / "noisy" / "scores.json", settings=ONE_DRAW)
    assert perfect["protocol"]["counts_scale"] is True and perfect["protocol"]["counts_target_sum"] == 100
    assert perfect["imputation"]["counts_rmse"] == pytest.approx(0, abs=1e-3) and noisy["imputation"]["counts_rmse"] > 0.5
    assert noisy["imputation"]["counts_rmse_nonzero"] >= noisy["imputation"]["counts_rmse"]
    assert perfect["protocol"]["nonzero_only_keys"] == "*_nonzero"
    result = baselines(tmp_path / "masked.h5ad", tmp_path / "baselines.json", settings=ONE_DRAW)
    assert all("counts_rmse" in m["imputation"] for m in result["methods"].values() if "imputation" in m)
    assert all_keys(perfect) <= documented_keys() and all_keys(result) <= documented_keys()


def test_classifier_two_sample_test_separates_shifted_data_only():
    rng = np.random.default_rng(0)
    real, same, shifted = rng.normal(size=(300, 4)), rng.normal(size=(300, 4)), rng.normal(1.5, 1.0, size=(300, 4))
    assert abs(metrics.classifier_two_sample_auc(real, same, seed=0) - 0.5) < 0.1
    assert metrics.classifier_two_sample_auc(real, shifted, seed=0) > 0.85


def test_classifier_two_sample_test_on_few_real_rows_averages_draws_of_the_other_side(monkeypatch):
    """22 real rows against 1,000 from the same distribution: one balanced draw uses 22 of the
    1,000, and its AUC moves with the seed; the average over draws moves less."""
    rng = np.random.default_rng(1)
    real, generated = rng.normal(size=(22, 5)), rng.normal(size=(1000, 5))
    assert metrics.classifier_two_sample_test(real, generated)["repeats"] == 10
    assert metrics.classifier_two_sample_test(rng.normal(size=(600, 5)), generated)["repeats"] == 1
    assert metrics.classifier_two_sample_test(real, generated, rows=0)["repeats"] == 1  # evaluate.c2st_rows = 0
    averaged = [metrics.classifier_two_sample_auc(real, generated, seed=seed) for seed in range(8)]
    monkeypatch.setattr(metrics, "C2ST_MAX_REPEATS", 1)
    single = [metrics.classifier_two_sample_auc(real, generated, seed=seed) for seed in range(8)]
    assert np.std(averaged) < 0.7 * np.std(single)
    assert abs(np.mean(averaged) - 0.5) < 0.1


def test_gene_statistics_and_correlations_agree_for_identical_data_only():
    rng = np.random.default_rng(0)
    base = rng.normal(size=(400, 1))
    real = np.clip(np.hstack([base, base + 0.3 * rng.normal(size=(400, 1)), rng.normal(size=(400, 3))]), 0, None)
    same = metrics.gene_statistic_agreement(real, real.copy()) | metrics.correlation_agreement(real, real.copy())
    assert same["gene_mean_abs_diff"] == 0 and same["gene_zero_fraction_abs_diff"] == 0
    assert same["gene_mean_pearson_r"] == pytest.approx(1) and same["corr_matrix_distance"] == pytest.approx(0)
    independent = np.column_stack([rng.permutation(column) for column in real.T])  # same marginals, no correlation
    other = metrics.gene_statistic_agreement(independent, real) | metrics.correlation_agreement(independent, real)
    assert other["gene_variance_abs_diff"] == pytest.approx(0, abs=1e-12)
    assert other["corr_matrix_distance"] > 0.2 and other["corr_matrix_pearson_r"] < same["corr_matrix_pearson_r"]


def test_sparse_kmer_divergence_matches_the_dense_spectrum_and_composition_distance():
    a, b = data.tokens(make_sequence(seed=1)), data.tokens(make_sequence(seed=2, n=40))
    b[:, ::7] = 3  # perturb the spectrum
    for k in (1, 2, 3):
        dense = metrics.js_divergence(metrics.kmer_spectrum(a, k, 4), metrics.kmer_spectrum(b, k, 4))
        assert metrics.kmer_js_sparse(a, b, k, 4) == pytest.approx(dense)
    assert metrics.kmer_js_sparse(a, a, 6, 4) == pytest.approx(0)
    profiles = metrics.kmer_profiles(a, 3, 4)
    assert profiles.shape == (len(a), 64) and np.allclose(profiles.sum(axis=1), 1)
    assert metrics.total_variation(np.array([1.0, 0, 0]), np.array([0, 0.5, 0.5])) == pytest.approx(1)
    assert metrics.total_variation(np.array([0.5, 0.5]), np.array([1.0, 1.0])) == pytest.approx(0)


def test_protein_generation_scores_amino_acid_composition(tmp_path):
    rng = np.random.default_rng(0)
    adata = make_sequence()
    tokens = np.where(adata.obsm["tokens"] >= 3, rng.integers(3, 23, adata.obsm["tokens"].shape), adata.obsm["tokens"]).astype(np.int8)
    adata.obsm["tokens"] = tokens
    adata.uns["alphabet"] = {"name": "protein", "symbols": symbols("protein")}
    adata.write_h5ad(tmp_path / "masked.h5ad")
    distances = {}
    for name, generated in (("copy", tokens[data.split_rows(adata, "test")]), ("all_a", np.where(tokens >= 3, 3, tokens))):
        samples = sequence_samples(generated)
        samples.uns["alphabet"] = adata.uns["alphabet"]
        imputed, samples_path = write_model_outputs(tmp_path / name, adata, tokens, samples)
        scores = evaluate(tmp_path / "masked.h5ad", imputed, samples_path, tmp_path / name / "scores.json", settings=ONE_DRAW)
        distances[name] = scores["generation"]["aa_composition_distance"]
        assert "gc_mean" not in scores["generation"] and all_keys(scores) <= documented_keys()
    assert distances["copy"] == pytest.approx(0) and distances["all_a"] > 0.9
    assert scores["generation"]["kmer_js_6"] is not None


# ---------------------------------------------------------------------------- baselines


def test_knn_beats_mean_on_low_rank_data():
    adata = make_expression(n_obs=300, rank=2)
    fills = methods.numeric_fills(adata)
    test = data.split_rows(adata, "test")
    truth, heldout = data.values(adata)[test], data.heldout_mask(adata)[test]
    rmse = {name: metrics.numeric_imputation_metrics(truth, filled, heldout)["rmse"] for name, filled in fills.items()}
    assert rmse["knn"] < 0.7 * rmse["mean"]


def test_iterative_and_svd_beat_mean_on_low_rank_data():
    adata = make_expression(n_obs=300, rank=2)
    fills = methods.numeric_fills(adata)
    test = data.split_rows(adata, "test")
    truth, heldout = data.values(adata)[test], data.heldout_mask(adata)[test]
    rmse = {name: metrics.numeric_imputation_metrics(truth, filled, heldout)["rmse"] for name, filled in fills.items()}
    assert rmse["iterative"] < 0.7 * rmse["mean"] and rmse["svd"] < 0.7 * rmse["mean"]
    observed = ~heldout & ~np.isnan(truth)
    for filled in fills.values():
        np.testing.assert_array_equal(filled[observed], truth[observed])


def test_series_interpolation_and_last_value_carried_forward():
    observed = np.array([[np.nan, 1.0], [2.0, np.nan], [np.nan, np.nan], [6.0, 4.0], [np.nan, np.nan], [np.nan, np.nan]])
    series = np.array(["a", "a", "a", "a", "b", "b"])
    times = np.array([0.0, 1.0, 2.0, 4.0, 0.0, 1.0])
    fallback = np.array([-1.0, -2.0])
    linear = methods.interpolate_series(observed, series, times, fallback, "linear")
    carried = methods.interpolate_series(observed, series, times, fallback, "last_value")
    np.testing.assert_allclose(linear[:4], [[2.0, 1.0], [2.0, 1.75], [3.333333, 2.5], [6.0, 4.0]], rtol=1e-5)
    np.testing.assert_allclose(carried[:4], [[2.0, 1.0], [2.0, 1.0], [2.0, 1.0], [6.0, 4.0]])
    np.testing.assert_allclose(linear[4:], [fallback, fallback])
    np.testing.assert_allclose(carried[4:], [fallback, fallback])


def test_timecourse_interpolation_beats_the_mean():
    adata = make_timecourse(rate=0.2)
    fills = methods.numeric_fills(adata)
    test = data.split_rows(adata, "test")
    truth, heldout = data.values(adata)[test], data.heldout_mask(adata)[test]
    rmse = {name: metrics.numeric_imputation_metrics(truth, filled, heldout)["rmse"] for name, filled in fills.items()}
    assert {"linear", "last_value", "iterative", "svd"} <= set(rmse)
    assert rmse["linear"] < 0.5 * rmse["mean"] and rmse["last_value"] < 0.7 * rmse["mean"]


def _poisoned(adata: ad.AnnData) -> ad.AnnData:
    """Held-out truth replaced by absurd values: a baseline that reads it would change."""
    poisoned = adata.copy()
    if data.modality(adata) == "sequence":
        tokens = poisoned.obsm["tokens"].copy()
        tokens[data.heldout_mask(adata)] = GAP
        poisoned.obsm["tokens"] = tokens
    else:
        poisoned.X[data.heldout_mask(adata)] = 1e6
    return poisoned


@pytest.mark.parametrize("make", [make_expression, make_timecourse])
def test_numeric_baselines_never_read_heldout_values(make):
    clean, poisoned = make(), _poisoned(make())
    for name, filled in methods.numeric_fills(clean).items():
        np.testing.assert_array_equal(filled, methods.numeric_fills(poisoned)[name])
    for name, samples in methods.numeric_samples(clean, seed=0, n=50).items():
        np.testing.assert_array_equal(samples, methods.numeric_samples(poisoned, seed=0, n=50)[name])
    history, times = data.observed_values(clean)[:3], np.array([0.0, 1.0, 2.0, 3.0])
    poisoned_history = data.observed_values(poisoned)[:3]
    for name, forecast in methods.forecasters(clean).items():
        poisoned_forecast = methods.forecasters(poisoned)[name]
        np.testing.assert_array_equal(forecast(history, times), poisoned_forecast(poisoned_history, times))


def test_sequence_baselines_never_read_heldout_tokens():
    clean, poisoned = make_sequence(), _poisoned(make_sequence())
    for name, filled in methods.sequence_fills(clean).items():
        np.testing.assert_array_equal(filled, methods.sequence_fills(poisoned)[name])
    np.testing.assert_array_equal(methods.sequence_samples(clean, 0, 50)["markov"], methods.sequence_samples(poisoned, 0, 50)["markov"])


def test_markov_chain_learns_a_periodic_sequence_and_generates_it():
    adata = make_sequence(n=120)
    test = data.split_rows(adata, "test")
    truth, heldout = data.tokens(adata)[test], data.heldout_mask(adata)[test]
    filled = methods.sequence_fills(adata)["markov"]
    assert metrics.sequence_imputation_accuracy(truth, filled, heldout)["accuracy"] > 0.9
    generated = methods.sequence_samples(adata, seed=0, n=50)["markov"]
    spectrum = metrics.kmer_spectrum(generated, 3, 4)
    assert metrics.js_divergence(spectrum, metrics.kmer_spectrum(truth, 3, 4)) < 0.05


def test_markov_likelihood_of_periodic_heldout_tokens_is_near_certain(tmp_path):
    adata = make_sequence(n=120)
    adata.write_h5ad(tmp_path / "masked.h5ad")
    result = baselines(tmp_path / "masked.h5ad", tmp_path / "baselines.json", settings=ONE_DRAW)
    likelihood = result["methods"]["markov"]["likelihood"]
    assert likelihood["n_scored"] > 50 and 1 <= likelihood["heldout_perplexity"] < 1.5
    test = data.split_rows(adata, "test")
    tokens, heldout = data.tokens(adata)[test], data.heldout_mask(adata)[test]
    log_probs = methods.sequence_likelihoods(adata)["markov"](tokens, ~heldout)
    assert np.isnan(log_probs[tokens == PAD]).all() and (log_probs[heldout] <= 0).all()
    imputed, samples = write_model_outputs(tmp_path / "lm", adata, data.tokens(adata), sequence_samples(data.tokens(adata)))
    uniform = evaluate(tmp_path / "masked.h5ad", imputed, samples, tmp_path / "lm.json", likelihood_fn=lambda t, o: np.full(t.shape, np.log(0.25)), settings=ONE_DRAW)
    assert uniform["likelihood"]["heldout_perplexity"] == pytest.approx(4)
    assert uniform["likelihood"]["n_scored"] == likelihood["n_scored"] and all_keys(uniform) <= documented_keys()


def test_forecasters_carry_forward_and_extrapolate_a_line():
    history = np.array([[1.0, np.nan, 5.0], [2.0, np.nan, np.nan], [np.nan, 7.0, np.nan]])
    times = np.array([0.0, 1.0, 2.0, 4.0])  # the last time is the one to forecast
    fallback = np.array([-1.0, -2.0, -3.0])
    np.testing.assert_allclose(methods.last_value_forecaster(fallback)(history, times), [2.0, 7.0, 5.0])
    np.testing.assert_allclose(methods.linear_forecaster(fallback)(history, times), [5.0, 7.0, 5.0])
    np.testing.assert_allclose(methods.last_value_forecaster(fallback)(np.full((2, 3), np.nan), times[:3]), fallback)


# ---------------------------------------------------------------------------- entry points


TOP_LEVEL = {"dataset", "model", "modality", "imputation", "generation", "protocol"}


def test_evaluate_expression_scores_a_perfect_fill_and_real_like_samples(tmp_path):
    adata = make_expression()
    adata.write_h5ad(tmp_path / "masked.h5ad")
    real_like = data.values(make_expression(seed=5))  # same distribution, other cells
    imputed, samples = write_model_outputs(tmp_path / "vae", adata, data.values(adata), numeric_samples(real_like, adata.var_names))
    scores = evaluate(tmp_path / "masked.h5ad", imputed, samples, tmp_path / "vae" / "scores.json", settings=ONE_DRAW)
    _, shifted = write_model_outputs(tmp_path / "bad", adata, data.values(adata), numeric_samples(real_like + 1.0, adata.var_names))
    shifted_mmd2 = evaluate(tmp_path / "masked.h5ad", imputed, shifted, tmp_path / "bad" / "scores.json", settings=ONE_DRAW)["generation"]["mmd2"]
    assert set(scores) == TOP_LEVEL
    assert json.loads((tmp_path / "vae" / "scores.json").read_text()) == scores
    assert scores["model"] == "vae" and scores["dataset"] == "toy_expression"
    assert scores["imputation"]["rmse"] == 0 and scores["imputation"]["n_scored"] == scores["protocol"]["n_heldout_in_split"]
    assert scores["protocol"]["heldout_includes_zeros"] is True and scores["protocol"]["heldout_zero_fraction"] > 0
    reference = scores["generation"]["reference_train_vs_test"]["mmd2"]
    assert abs(scores["generation"]["mmd2"]) < 0.05 and abs(reference) < 0.05
    assert shifted_mmd2 > 0.1 and shifted_mmd2 > 3 * max(abs(scores["generation"]["mmd2"]), abs(reference))
    assert all_keys(scores) <= documented_keys()


def test_evaluate_sequence_scores_accuracy_and_spectra(tmp_path):
    adata = make_sequence()
    adata.write_h5ad(tmp_path / "masked.h5ad")
    generated = data.tokens(make_sequence(seed=3))
    imputed, samples = write_model_outputs(tmp_path / "lm", adata, data.tokens(adata), sequence_samples(generated))
    scores = evaluate(tmp_path / "masked.h5ad", imputed, samples, tmp_path / "lm" / "scores.json", settings=ONE_DRAW)
    assert set(scores) == TOP_LEVEL and scores["modality"] == "sequence"
    assert scores["imputation"]["accuracy"] == 1.0
    assert scores["generation"]["kmer_js_mean"] < 0.05 and 0 <= scores["generation"]["novelty"] <= 1
    assert "gc_mean_abs_diff" in scores["generation"]["reference_train_vs_test"]
    assert all_keys(scores) <= documented_keys()


def test_evaluate_timecourse_forecasts_with_the_given_forecaster(tmp_path):
    adata = make_timecourse()
    adata.write_h5ad(tmp_path / "masked.h5ad")
    imputed, samples = write_model_outputs(tmp_path / "ode", adata, noisy_truth(adata), numeric_samples(noisy_truth(adata), adata.var_names))
    calls = []
    last_value = methods.forecasters(adata)["last_value"]

    def carry_last_observed(history, times):
        calls.append(len(times) - len(history))
        return last_value(history, times)

    scores = evaluate(tmp_path / "masked.h5ad", imputed, samples, tmp_path / "ode" / "scores.json", forecast_fn=carry_last_observed, settings=ONE_DRAW)
    assert set(scores) == TOP_LEVEL | {"forecast"}
    forecast = scores["forecast"]
    n_forecasts = sum(forecast[f"n_steps_horizon_{h}"] for h in (1, 2, 3))
    assert set(calls) == {1} and forecast["n_steps"] == forecast["n_steps_horizon_1"] > forecast["n_series"]
    assert len(calls) == n_forecasts and forecast["n_steps_horizon_3"] == forecast["n_steps"] - 2 * forecast["n_series"]
    for h in (1, 2, 3):  # the forecaster carries the last value, so it equals the carry-forward reference
        assert forecast[f"rmse_horizon_{h}"] == pytest.approx(forecast[f"last_value_rmse_horizon_{h}"])
    assert forecast["rmse_horizon_1"] == forecast["rmse"] and forecast["rmse_horizon_3"] > forecast["rmse_horizon_1"]
    assert forecast["rmse"] == pytest.approx(forecast["last_value_rmse"]) and forecast["rmse_ratio_to_last_value"] == pytest.approx(1)
    assert len(forecast["example"]["forecast"]) == len(forecast["example"]["genes"])
    assert all_keys(scores) <= documented_keys()


def test_evaluate_refuses_imputed_rows_that_do_not_match(tmp_path):
    adata = make_expression()
    adata.write_h5ad(tmp_path / "masked.h5ad")
    shuffled = adata[::-1].copy()
    imputed, samples = write_model_outputs(tmp_path / "vae", shuffled, data.values(shuffled), numeric_samples(data.values(adata), adata.var_names))
    with pytest.raises(ValueError, match="differ"):
        evaluate(tmp_path / "masked.h5ad", imputed, samples, tmp_path / "scores.json", settings=ONE_DRAW)
    assert not (tmp_path / "scores.json").exists()


def _data_and_model_outputs(folder: Path, adata: ad.AnnData) -> tuple[Path, Path]:
    """masked.h5ad in `folder`, and a model's imputed and samples files (near the truth)."""
    adata.write_h5ad(folder / "masked.h5ad")
    fill, samples = (
        (data.tokens(adata), sequence_samples(data.tokens(adata)))
        if data.modality(adata) == "sequence"
        else (noisy_truth(adata), numeric_samples(noisy_truth(adata), adata.var_names))
    )
    return write_model_outputs(folder / "model", adata, fill, samples)


@pytest.mark.parametrize("make", [make_expression, make_timecourse, make_sequence])
def test_baselines_use_the_model_metric_keys(tmp_path, make):
    imputed, samples_path = _data_and_model_outputs(tmp_path, make())
    uniform = lambda tokens, observed: np.full(tokens.shape, np.log(0.25))
    model = evaluate(
        tmp_path / "masked.h5ad", imputed, samples_path, tmp_path / "model.json", forecast_fn=lambda h, t: h[-1], likelihood_fn=uniform,
        settings=ONE_DRAW,
    )
    result = baselines(tmp_path / "masked.h5ad", tmp_path / "baselines" / "scores.json", settings=ONE_DRAW)
    assert set(result) == {"dataset", "modality", "methods", "protocol"}
    generation_keys = set(model["generation"]) - {"reference_train_vs_test"}
    for scores in result["methods"].values():
        assert set(scores) <= {"imputation", "generation", "forecast", "likelihood"}
        for section, keys in scores.items():
            assert set(keys) == (generation_keys if section == "generation" else set(model[section]))
    assert all_keys(result) <= documented_keys()


@pytest.mark.parametrize("make", [make_expression, make_sequence])
def test_evaluate_copies_the_reference_baselines_wrote_once(tmp_path, make):
    """The real-data reference is the same for every model of a dataset: `baselines` writes it
    once and each evaluate copies it, with the scores it would have computed itself. One made
    with other scoring settings is refused, naming the file and what differs, and nothing is
    written."""
    imputed, samples_path = _data_and_model_outputs(tmp_path, make())
    masked, reference = tmp_path / "masked.h5ad", tmp_path / "baselines" / "reference.json"
    baselines(masked, tmp_path / "baselines" / "scores.json", settings=ONE_DRAW, reference_path=reference)
    computed = evaluate(masked, imputed, samples_path, tmp_path / "computed.json", settings=ONE_DRAW)
    copied = evaluate(masked, imputed, samples_path, tmp_path / "copied.json", settings=ONE_DRAW, reference_path=reference)
    assert (tmp_path / "copied.json").read_text() == (tmp_path / "computed.json").read_text()
    made = json.loads(reference.read_text())
    assert copied["generation"]["reference_train_vs_test"] == made["reference_train_vs_test"]
    made["reference_train_vs_test"]["c2st_auc"] = 0.123  # read from the file, not computed again
    reference.write_text(json.dumps(made))
    again = evaluate(masked, imputed, samples_path, tmp_path / "again.json", settings=ONE_DRAW, reference_path=reference)
    assert again["generation"]["reference_train_vs_test"]["c2st_auc"] == 0.123
    with pytest.raises(InputError, match=r"reference\.json.*differs: c2st_rows"):
        evaluate(masked, imputed, samples_path, tmp_path / "other.json", settings=Settings(c2st_rows=200), reference_path=reference)
    reference.write_text('{"dataset": ')  # cut short
    with pytest.raises(InputError, match=r"reference\.json: cannot read the reference"):
        evaluate(masked, imputed, samples_path, tmp_path / "other.json", settings=ONE_DRAW, reference_path=reference)
    assert not (tmp_path / "other.json").exists()


def test_baselines_that_fail_leave_no_reference_behind(tmp_path, monkeypatch):
    from omicsgen.evaluate import scores

    make_expression().write_h5ad(tmp_path / "masked.h5ad")
    monkeypatch.setattr(scores, "_numeric_baselines", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        baselines(tmp_path / "masked.h5ad", tmp_path / "scores.json", settings=ONE_DRAW, reference_path=tmp_path / "reference.json")
    assert not (tmp_path / "reference.json").exists() and not (tmp_path / "scores.json").exists()


def test_the_c2st_of_a_table_in_mixed_units_sees_every_feature():
    """A PCA of raw values is the largest-unit features alone: generated rows off by three sds in
    one ratio went unseen beside 25 features in units 1e3-1e6 times larger. On z-scored features
    (auto: the sds span over 20x their median) the test sees it; an expression-like table keeps
    its raw PCA, and `pca_scale` overrides either way."""
    from omicsgen.evaluate.scoring import NumericGenerationScorer, pca_units

    rng = np.random.default_rng(0)
    real = rng.normal(size=(600, 30))
    generated = real[:300] + rng.normal(size=(300, 30)) * 0.05
    generated[:, 29] += 3
    units = np.r_[10 ** rng.uniform(3, 6, 25), np.ones(5)]
    assert pca_units(real)[0] is None and pca_units(real, "zscore")[0] is not None
    divisors, space = pca_units(real * units)
    assert divisors is not None and space.startswith("z-scored features") and "evaluate.pca_scale: auto" in space
    train, test = slice(300, 450), slice(450, 600)
    as_is = NumericGenerationScorer(real[train] * units, real[test] * units, pca_scale="raw").score(generated * units)
    scaled = NumericGenerationScorer(real[train] * units, real[test] * units).score(generated * units)
    plain = NumericGenerationScorer(real[train], real[test]).score(generated)
    assert as_is["c2st_auc"] < 0.65 and scaled["c2st_auc"] > 0.8
    assert plain["c2st_auc"] > 0.8 and plain["pca_space"].startswith("raw values")
    with pytest.raises(ValueError, match="pca_scale"):
        pca_units(real, "minmax")
