"""Score functions on plain arrays (no AnnData, no files), so each can be checked on a known case."""

from __future__ import annotations

import numpy as np
import scipy.sparse
from scipy.spatial.distance import cdist, pdist

from ..alphabet import FIRST_RESIDUE, GAP, MISSING, PAD, gc_fraction

# Two points always correlate at +-1, so a gene's r says something only from three entries on.
MIN_ENTRIES_PER_GENE_R = 3

# ---------------------------------------------------------------------------- imputation


def numeric_imputation_metrics(truth: np.ndarray, filled: np.ndarray, heldout: np.ndarray) -> dict:
    """RMSE, MAE and Pearson r over held-out entries, pooled and as medians over genes.

    Natively missing truth (NaN) cannot be scored, so only held-out entries with a value count;
    zeros are scored like any other value. Per-gene medians keep a few highly expressed genes
    from dominating the pooled numbers.
    """
    scored = heldout & np.isfinite(truth)
    truth_values, filled_values = truth[scored], filled[scored]
    per_gene = _per_gene_errors(truth, filled, scored)
    nonzero = truth_values != 0
    return {
        "rmse": _rmse(truth_values, filled_values),
        "mae": _mae(truth_values, filled_values),
        "median_abs_error": _median_abs_error(truth_values, filled_values),
        "pearson_r": _pearson(truth_values, filled_values),
        "spearman_r": _spearman(truth_values, filled_values),
        "median_gene_rmse": _nanmedian(per_gene["rmse"]),
        "median_gene_mae": _nanmedian(per_gene["mae"]),
        "median_gene_pearson_r": _nanmedian(per_gene["pearson_r"]),
        "n_scored": int(scored.sum()),
        # The same entries restricted to a non-zero truth (the "non-zero only" protocol of many papers).
        "rmse_nonzero": _rmse(truth_values[nonzero], filled_values[nonzero]),
        "mae_nonzero": _mae(truth_values[nonzero], filled_values[nonzero]),
        "pearson_r_nonzero": _pearson(truth_values[nonzero], filled_values[nonzero]),
        "spearman_r_nonzero": _spearman(truth_values[nonzero], filled_values[nonzero]),
        "n_scored_nonzero": int(nonzero.sum()),
    }


def counts_imputation_metrics(
    counts: np.ndarray, filled: np.ndarray, heldout: np.ndarray, library_size: np.ndarray, target_sum: float
) -> dict:
    """RMSE and MAE on the counts scale: `filled` (log1p(counts / library_size * target_sum)) is
    inverted to counts and compared with the raw counts of the held-out entries."""
    scored = heldout & np.isfinite(counts)
    with np.errstate(over="ignore", invalid="ignore"):
        back = np.expm1(filled) / target_sum * np.asarray(library_size, dtype=np.float64)[:, None]
    truth_values, back_values = counts[scored], back[scored]
    nonzero = truth_values != 0
    return {
        "counts_rmse": _rmse(truth_values, back_values),
        "counts_mae": _mae(truth_values, back_values),
        # The scVI / DCA denoising benchmarks score the median absolute error on counts.
        "counts_median_abs_error": _median_abs_error(truth_values, back_values),
        "counts_rmse_nonzero": _rmse(truth_values[nonzero], back_values[nonzero]),
    }


def sequence_imputation_accuracy(truth: np.ndarray, filled: np.ndarray, heldout: np.ndarray) -> dict:
    """Fraction of held-out positions filled with the true token.

    A MISSING or pad truth carries no residue to recover, so such positions never count even
    if a mask marked them.
    """
    scored = heldout & (truth != MISSING) & (truth != PAD)
    n_scored = int(scored.sum())
    accuracy = float(np.mean(filled[scored] == truth[scored])) if n_scored else float("nan")
    return {"accuracy": accuracy, "n_scored": n_scored}


def rmse_mae(truth: np.ndarray, predicted: np.ndarray) -> tuple[float, float]:
    """RMSE and MAE over the entries whose truth is known (not NaN)."""
    scored = np.isfinite(truth)
    return _rmse(truth[scored], predicted[scored]), _mae(truth[scored], predicted[scored])


def _rmse(truth, predicted) -> float:
    return float(np.sqrt(np.mean((predicted - truth) ** 2))) if truth.size else float("nan")


def _mae(truth, predicted) -> float:
    return float(np.mean(np.abs(predicted - truth))) if truth.size else float("nan")


def _median_abs_error(truth, predicted) -> float:
    return float(np.median(np.abs(predicted - truth))) if truth.size else float("nan")


def _pearson(truth, predicted) -> float:
    """Pearson r, NaN where it is undefined (fewer than 2 values or a constant side)."""
    if truth.size < 2 or np.ptp(truth) == 0 or np.ptp(predicted) == 0:
        return float("nan")
    return float(np.corrcoef(truth, predicted)[0, 1])


def _spearman(truth, predicted) -> float:
    """Spearman rank correlation (ties get their average rank), NaN where undefined."""
    if truth.size < 2:
        return float("nan")
    from scipy.stats import rankdata  # here: scipy.stats takes ~0.3 s to import, and report needs none

    return _pearson(rankdata(truth), rankdata(predicted))


def _per_gene_errors(truth, filled, scored) -> dict[str, np.ndarray]:
    """Column-wise RMSE, MAE and Pearson r over the scored entries of each gene (NaN where undefined)."""
    weight = scored.astype(float)
    n = weight.sum(axis=0)
    t = np.where(scored, truth, 0.0)
    p = np.where(scored, filled, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        error = p - t
        rmse = np.sqrt((error**2).sum(axis=0) / n)
        mae = np.abs(error).sum(axis=0) / n
        t_centred = np.where(scored, t - t.sum(axis=0) / n, 0.0)
        p_centred = np.where(scored, p - p.sum(axis=0) / n, 0.0)
        covariance = (t_centred * p_centred).sum(axis=0)
        scale = np.sqrt((t_centred**2).sum(axis=0) * (p_centred**2).sum(axis=0))
        # Exact constancy, not a small variance: rounding would turn a constant fill's r = NaN into noise.
        defined = (n >= MIN_ENTRIES_PER_GENE_R) & ~_constant_columns(t, scored) & ~_constant_columns(p, scored)
        pearson = np.where(defined, covariance / scale, np.nan)
    return {"rmse": rmse, "mae": mae, "pearson_r": pearson}


def _constant_columns(matrix, scored) -> np.ndarray:
    return np.where(scored, matrix, -np.inf).max(axis=0) == np.where(scored, matrix, np.inf).min(axis=0)


def _nanmedian(values: np.ndarray) -> float:
    finite = values[np.isfinite(values)]
    return float(np.median(finite)) if finite.size else float("nan")


# ---------------------------------------------------------------------------- distributions


def median_bandwidth(points: np.ndarray) -> float:
    """Median pairwise Euclidean distance: the usual RBF bandwidth when no scale is known."""
    distances = pdist(points)
    distances = distances[distances > 0]
    return float(np.median(distances)) if distances.size else 1.0


def mmd2_unbiased(x: np.ndarray, y: np.ndarray, bandwidth: float) -> float:
    """Unbiased squared MMD with an RBF kernel exp(-d^2 / (2 bandwidth^2)).

    The unbiased form drops the kernel diagonals, so two samples of one distribution score
    about 0 (slightly negative values are possible) whatever the sample sizes.
    """
    if len(x) < 2 or len(y) < 2:
        return float("nan")
    gamma = 1.0 / (2.0 * bandwidth**2)
    k_xx = np.exp(-gamma * cdist(x, x, "sqeuclidean"))
    k_yy = np.exp(-gamma * cdist(y, y, "sqeuclidean"))
    k_xy = np.exp(-gamma * cdist(x, y, "sqeuclidean"))
    n, m = len(x), len(y)
    within_x = (k_xx.sum() - np.trace(k_xx)) / (n * (n - 1))
    within_y = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    return float(within_x + within_y - 2.0 * k_xy.mean())


def content_mask(tokens: np.ndarray) -> np.ndarray:
    """True at positions before each record's first pad (a record ends at its first 0)."""
    return np.cumsum(tokens == PAD, axis=1) == 0


def kmer_spectrum(tokens: np.ndarray, k: int, n_residues: int) -> np.ndarray:
    """Frequencies of all n_residues^k k-mers made only of residues (no pad, missing or gap)."""
    residue = tokens.astype(np.int64) - FIRST_RESIDUE
    usable = (tokens >= FIRST_RESIDUE) & content_mask(tokens)
    n_windows = tokens.shape[1] - k + 1
    if n_windows <= 0:
        return np.zeros(n_residues**k)
    code = np.zeros((tokens.shape[0], n_windows), dtype=np.int64)
    valid = np.ones_like(code, dtype=bool)
    for offset in range(k):
        code = code * n_residues + np.where(usable[:, offset : offset + n_windows], residue[:, offset : offset + n_windows], 0)
        valid &= usable[:, offset : offset + n_windows]
    counts = np.bincount(code[valid], minlength=n_residues**k).astype(float)
    return counts / counts.sum() if counts.sum() else counts


def js_divergence(p: np.ndarray, q: np.ndarray) -> float:
    """Jensen-Shannon divergence in bits (0 = identical, 1 = disjoint); NaN if either is empty."""
    if p.sum() == 0 or q.sum() == 0:
        return float("nan")
    p, q = p / p.sum(), q / q.sum()
    middle = (p + q) / 2
    return float(0.5 * _kl_bits(p, middle) + 0.5 * _kl_bits(q, middle))


def _kl_bits(p, q) -> float:
    present = p > 0
    return float(np.sum(p[present] * np.log2(p[present] / q[present])))


def gc_fractions(tokens: np.ndarray, name: str) -> np.ndarray:
    """GC fraction of each record with known bases (records without any are left out)."""
    fractions = gc_fraction(tokens, name)
    return fractions[np.isfinite(fractions)]


def uniqueness(sequences: list[str]) -> float:
    """Fraction of distinct sequences: 1 means no sample repeats another."""
    return len(set(sequences)) / len(sequences) if sequences else float("nan")


def novelty(sequences: list[str], training: list[str]) -> float:
    """Fraction of sequences that are not an exact copy of a training sequence."""
    seen = set(training)
    return float(np.mean([s not in seen for s in sequences])) if sequences else float("nan")


def kmer_js_sparse(tokens: np.ndarray, reference: np.ndarray, k: int, n_residues: int) -> float:
    """JS divergence of the k-mer spectra of two token sets, counting only k-mers that occur.

    Same value as js_divergence(kmer_spectrum(...), kmer_spectrum(...)) but never builds the
    n_residues^k table, so protein 6-mers (20^6 bins) stay cheap."""
    codes_a, counts_a = _kmer_codes(tokens, k, n_residues)
    codes_b, counts_b = _kmer_codes(reference, k, n_residues)
    if counts_a.sum() == 0 or counts_b.sum() == 0:
        return float("nan")
    union = np.union1d(codes_a, codes_b)
    p, q = np.zeros(len(union)), np.zeros(len(union))
    p[np.searchsorted(union, codes_a)] = counts_a
    q[np.searchsorted(union, codes_b)] = counts_b
    return js_divergence(p, q)


def _kmer_codes(tokens: np.ndarray, k: int, n_residues: int) -> tuple[np.ndarray, np.ndarray]:
    if tokens.shape[1] - k + 1 <= 0 or len(tokens) == 0:
        return np.zeros(0, dtype=np.int64), np.zeros(0)
    code, valid = _kmer_windows(tokens, k, n_residues)
    codes, counts = np.unique(code[valid], return_counts=True)
    return codes, counts.astype(float)


def _kmer_windows(tokens: np.ndarray, k: int, n_residues: int) -> tuple[np.ndarray, np.ndarray]:
    """Each window of k residues as one integer (base n_residues), and whether the window holds
    only residues of the record (no pad, gap or missing)."""
    residue = tokens.astype(np.int64) - FIRST_RESIDUE
    usable = (tokens >= FIRST_RESIDUE) & content_mask(tokens)
    n_windows = tokens.shape[1] - k + 1
    code = np.zeros((tokens.shape[0], n_windows), dtype=np.int64)
    valid = np.ones_like(code, dtype=bool)
    for offset in range(k):
        window = usable[:, offset : offset + n_windows]
        code = code * n_residues + np.where(window, residue[:, offset : offset + n_windows], 0)
        valid &= window
    return code, valid


def kmer_profiles(tokens: np.ndarray, k: int, n_residues: int) -> np.ndarray:
    """Per-record k-mer frequencies (records x n_residues^k; a record without k-mers is all 0)."""
    profiles = np.zeros((len(tokens), n_residues**k))
    if tokens.shape[1] - k + 1 <= 0:
        return profiles
    code, valid = _kmer_windows(tokens, k, n_residues)
    rows = np.broadcast_to(np.arange(len(tokens))[:, None], code.shape)
    flat = np.bincount(rows[valid] * n_residues**k + code[valid], minlength=profiles.size)
    profiles += flat.reshape(profiles.shape)
    totals = profiles.sum(axis=1, keepdims=True)
    return np.divide(profiles, totals, out=profiles, where=totals > 0)


def total_variation(p: np.ndarray, q: np.ndarray) -> float:
    """Half the L1 distance of two distributions (0 = same, 1 = disjoint); NaN if either is empty."""
    if p.sum() == 0 or q.sum() == 0:
        return float("nan")
    return float(0.5 * np.abs(p / p.sum() - q / q.sum()).sum())


def classifier_two_sample_auc(real: np.ndarray, other: np.ndarray, seed: int = 0, folds: int = 5) -> float:
    """Classifier two-sample test: cross-validated ROC-AUC of a random forest telling `other` from `real`.

    0.5 = indistinguishable, 1 = perfectly separable. Both sides are cut to the smaller size
    (seeded) so the classes are balanced; NaN when a side has fewer rows than folds.
    """
    return classifier_two_sample_test(real, other, seed, folds)["auc"]


def c2st_too_small(n_real: int, n_other: int, folds: int = 5) -> str | None:
    """Why the classifier two-sample test cannot run on these sizes, or None when it can."""
    if min(n_real, n_other) < folds:
        return f"the classifier two-sample test needs {folds} rows a side ({n_real} real, {n_other} generated)"
    return None


# The c2st on a small test split is repeated over fresh balanced draws of the other side's rows
# (and fresh folds) and averaged: with 22 test rows one draw uses 22 of 1,000 generated rows,
# and its AUC moved by +-0.12 between seeds. Repeats until about `rows` (the config's
# evaluate.c2st_rows, default C2ST_ROWS) rows a side were fit.
C2ST_ROWS = 500
C2ST_MAX_REPEATS = 10


def c2st_repeats(n: int, rows: int = C2ST_ROWS) -> int:
    """How many balanced draws of `n` rows a side the c2st averages to fit about `rows` rows a
    side (1 to C2ST_MAX_REPEATS): one when `rows` is 0 or at most `n`."""
    return int(np.clip(round(rows / max(n, 1)), 1, C2ST_MAX_REPEATS))


def classifier_two_sample_test(real: np.ndarray, other: np.ndarray, seed: int = 0, folds: int = 5, resamples: int = 0,
                               rows: int = C2ST_ROWS) -> dict:
    """The classifier two-sample test as a dict: `auc` (NaN when too small, `reason` says why),
    `repeats` (the balanced draws averaged, `c2st_repeats(n, rows)`) and, with `resamples`, a
    95% bootstrap interval of the AUC over rows (`ci`): the out-of-fold predictions of each draw
    are resampled within each side, so each forest is fit once."""
    reason = c2st_too_small(len(real), len(other), folds)
    if reason:
        return {"auc": float("nan"), "ci": None, "reason": reason, "repeats": 0}
    n = min(len(real), len(other))
    repeats = c2st_repeats(n, rows)
    predictions = [_c2st_predictions(real, other, n, seed, repeat, folds) for repeat in range(repeats)]
    auc = float(np.mean([_auc(p[:n], p[n:]) for p in predictions]))
    ci = None
    if resamples:
        draw = np.random.default_rng([seed, 3])
        values = [np.mean([_auc(p[:n][draw.integers(0, n, n)], p[n:][draw.integers(0, n, n)]) for p in predictions])
                  for _ in range(resamples)]
        ci = percentile_interval(np.array(values))
    return {"auc": auc, "ci": ci, "reason": None, "repeats": repeats}


def _c2st_predictions(real: np.ndarray, other: np.ndarray, n: int, seed: int, repeat: int, folds: int) -> np.ndarray:
    """Out-of-fold P(other) of n seeded rows of each side (real first), a forest per fold."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    rng = np.random.default_rng(seed if repeat == 0 else [seed, repeat])  # repeat 0 is the single draw of before
    real = real[rng.choice(len(real), n, replace=False)]
    other = other[rng.choice(len(other), n, replace=False)]
    features = np.vstack([real, other])
    if features.shape[1] > 256:  # wide, mostly-zero k-mer profiles (protein 3-mers): same forest, ~4x faster
        features = scipy.sparse.csr_matrix(features)
    labels = np.r_[np.zeros(n), np.ones(n)]
    forest = RandomForestClassifier(n_estimators=50, min_samples_leaf=3, max_features="sqrt", n_jobs=1, random_state=seed + repeat)
    splitter = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed + repeat)
    return cross_val_predict(forest, features, labels, cv=splitter, method="predict_proba")[:, 1]


def _auc(negative: np.ndarray, positive: np.ndarray) -> float:
    """ROC-AUC from the scores of the two classes (Mann-Whitney U, ties count half)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.r_[negative, positive])
    n_neg, n_pos = len(negative), len(positive)
    return float((ranks[n_neg:].sum() - n_pos * (n_pos + 1) / 2) / (n_neg * n_pos))


def c2st_top_features(real: np.ndarray, other: np.ndarray, names, seed: int = 0, top: int = 10) -> list[dict]:
    """The features a forest leans on most to tell `other` from `real` (the c2st's forest, fit
    once on all rows of both sides, cut to the same size): impurity importance, and each side's
    mean of the feature, so a reader sees where generated data differ from real data."""
    from sklearn.ensemble import RandomForestClassifier

    n = min(len(real), len(other))
    if n < 2 or real.shape[1] == 0:
        return []
    rng = np.random.default_rng(seed)
    real = real[rng.choice(len(real), n, replace=False)]
    other = other[rng.choice(len(other), n, replace=False)]
    features = np.vstack([real, other])
    forest = RandomForestClassifier(n_estimators=50, min_samples_leaf=3, max_features="sqrt", n_jobs=1, random_state=seed)
    forest.fit(scipy.sparse.csr_matrix(features) if features.shape[1] > 256 else features, np.r_[np.zeros(n), np.ones(n)])
    importance = forest.feature_importances_
    order = [i for i in np.argsort(-importance, kind="stable")[:top] if importance[i] > 0]
    return [
        {"feature": str(names[i]), "importance": float(importance[i]), "real_mean": float(real[:, i].mean()),
         "generated_mean": float(other[:, i].mean())}
        for i in order
    ]  # fmt: skip


def mmd2_bootstrap_interval(x: np.ndarray, y: np.ndarray, bandwidth: float, seed: int = 0, resamples: int = 200):
    """95% bootstrap interval of `mmd2_unbiased` over rows (each side resampled with replacement),
    computed from the kernel matrices once: a resample is a vector of row multiplicities w. Pairs
    of copies of one row are left out of the within-sample means (w'Kw - sum w_i^2 over
    n^2 - sum w_i^2 pairs), as the unbiased statistic leaves out a row paired with itself;
    counting them would shift every resample up by the kernel's 1 on duplicates."""
    if len(x) < 2 or len(y) < 2 or not resamples:
        return None
    gamma = 1.0 / (2.0 * bandwidth**2)
    k_xx, k_yy = np.exp(-gamma * cdist(x, x, "sqeuclidean")), np.exp(-gamma * cdist(y, y, "sqeuclidean"))
    k_xy = np.exp(-gamma * cdist(x, y, "sqeuclidean"))
    rng = np.random.default_rng([seed, 4])
    n, m = len(x), len(y)
    w_x = np.stack([np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(resamples)], axis=1).astype(float)
    w_y = np.stack([np.bincount(rng.integers(0, m, m), minlength=m) for _ in range(resamples)], axis=1).astype(float)
    with np.errstate(invalid="ignore", divide="ignore"):  # a resample of one repeated row has no pair: NaN, dropped
        within_x = ((w_x * (k_xx @ w_x)).sum(axis=0) - (w_x**2).sum(axis=0)) / (n * n - (w_x**2).sum(axis=0))
        within_y = ((w_y * (k_yy @ w_y)).sum(axis=0) - (w_y**2).sum(axis=0)) / (m * m - (w_y**2).sum(axis=0))
    cross = (w_x * (k_xy @ w_y)).sum(axis=0) / (n * m)
    return percentile_interval(within_x + within_y - 2.0 * cross)


def ratio_bootstrap_interval(numerators: np.ndarray, denominators: np.ndarray, transform=None, seed: int = 0, resamples: int = 200):
    """95% bootstrap interval over rows of transform(sum(numerators) / sum(denominators)), e.g.
    RMSE from per-row squared errors and counts of scored entries; None without scored entries."""
    numerators, denominators = np.asarray(numerators, float), np.asarray(denominators, float)
    if not resamples or denominators.sum() == 0 or len(numerators) < 2:
        return None
    rng = np.random.default_rng([seed, 5])
    picks = rng.integers(0, len(numerators), (resamples, len(numerators)))
    with np.errstate(invalid="ignore", divide="ignore"):
        values = numerators[picks].sum(axis=1) / denominators[picks].sum(axis=1)
    values = values[np.isfinite(values)]
    return percentile_interval(transform(values) if transform else values)


def percentile_interval(values: np.ndarray, level: float = 0.95):
    """[low, high] percentile interval, or None when there is nothing finite."""
    values = np.asarray(values, float)
    values = values[np.isfinite(values)]
    if not values.size:
        return None
    low, high = np.quantile(values, [(1 - level) / 2, (1 + level) / 2])
    return [float(low), float(high)]


def gene_statistics(matrix: np.ndarray) -> dict[str, np.ndarray]:
    """Per-gene mean, variance and fraction of zeros over the finite entries (NaN left out)."""
    finite = np.isfinite(matrix)
    n = finite.sum(axis=0)
    values = np.where(finite, matrix, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = values.sum(axis=0) / n
        variance = (np.where(finite, matrix - mean, 0.0) ** 2).sum(axis=0) / n
        zero_fraction = ((values == 0) & finite).sum(axis=0) / n
    return {"mean": mean, "variance": variance, "zero_fraction": zero_fraction}


def gene_statistic_agreement(generated: np.ndarray, real: np.ndarray) -> dict:
    """How well per-gene mean, variance and zero fraction of generated rows match the real ones."""
    ours, theirs = gene_statistics(generated), gene_statistics(real)
    scores = {}
    for name in ("mean", "variance", "zero_fraction"):
        a, b = ours[name], theirs[name]
        both = np.isfinite(a) & np.isfinite(b)
        if name != "zero_fraction":
            scores[f"gene_{name}_pearson_r"] = _pearson(a[both], b[both])
        scores[f"gene_{name}_abs_diff"] = float(np.mean(np.abs(a[both] - b[both]))) if both.any() else float("nan")
    return scores


def correlation_agreement(generated: np.ndarray, real: np.ndarray) -> dict:
    """Gene-gene Pearson correlation matrices compared: Frobenius distance of their difference
    divided by the number of genes (so ~ root mean squared difference per entry), and Pearson r
    of their upper triangles. Rows must be finite; a constant gene correlates 0 with all."""
    if generated.shape[1] < 2 or len(generated) < 3 or len(real) < 3:
        return {"corr_matrix_distance": float("nan"), "corr_matrix_pearson_r": float("nan")}
    a, b = _correlation_matrix(generated), _correlation_matrix(real)
    upper = np.triu_indices(a.shape[0], k=1)
    return {
        "corr_matrix_distance": float(np.linalg.norm(a - b) / a.shape[0]),
        "corr_matrix_pearson_r": _pearson(a[upper], b[upper]),
    }


def _correlation_matrix(matrix: np.ndarray) -> np.ndarray:
    centred = matrix - matrix.mean(axis=0)
    scale = np.sqrt((centred**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        normalised = np.where(scale > 0, centred / scale, 0.0)
    correlation = normalised.T @ normalised
    np.fill_diagonal(correlation, 1.0)
    return correlation


def heldout_log_likelihood(log_probs: np.ndarray, heldout: np.ndarray) -> dict:
    """Mean negative log-likelihood (nats per residue) and perplexity over held-out positions
    that have a finite log-probability (NaN = not scored by the model)."""
    values = np.asarray(log_probs, dtype=np.float64)[heldout]
    values = values[~np.isnan(values)]
    nll = float(-values.mean()) if values.size else float("nan")
    return {"heldout_nll": nll, "heldout_perplexity": float(np.exp(nll)) if np.isfinite(nll) else float("nan"), "n_scored": int(values.size)}


# ---------------------------------------------------------------------------- multiple imputation

CALIBRATION_LEVELS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def interval_calibration(truth: np.ndarray, draws: np.ndarray, levels=CALIBRATION_LEVELS) -> dict:
    """Coverage of central intervals from imputation draws: for each nominal level p, the interval
    between the (1-p)/2 and (1+p)/2 quantiles of an entry's draws, and the fraction of entries
    whose true value falls inside it (closed interval). A calibrated model covers p of them.

    `truth` has one value per scored entry, `draws` is entries x draws."""
    scores: dict = {"n_scored": int(truth.size), "n_draws": int(draws.shape[1]) if draws.ndim == 2 else 0}
    observed_coverage, widths = [], []
    for level in levels:
        if truth.size == 0:
            observed_coverage.append(float("nan"))
            widths.append(float("nan"))
            continue
        lower, upper = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2], axis=1)
        observed_coverage.append(float(np.mean((truth >= lower) & (truth <= upper))))
        widths.append(float(np.mean(upper - lower)))
    by_level = dict(zip(levels, zip(observed_coverage, widths)))
    for level in (0.5, 0.9):
        scores[f"coverage_{round(level * 100)}"], scores[f"interval_width_{round(level * 100)}"] = by_level[level]
    errors = [abs(o - p) for o, p in zip(observed_coverage, levels)]
    scores["calibration_error"] = float(np.mean(errors)) if truth.size else float("nan")
    scores["curve"] = {"nominal": list(levels), "observed": observed_coverage, "mean_width": widths}
    return scores


# ---------------------------------------------------------------------------- sequences: novelty


def nearest_hamming_distances(tokens: np.ndarray, reference: np.ndarray, chunk: int = 256) -> np.ndarray:
    """For each record, the normalised Hamming distance to its nearest record in `reference`.

    Records are compared position by position as stored (aligned, or start-anchored and padded):
    d(a, b) = 1 - (positions where both hold the same residue or gap) / max(len a, len b), where
    a record ends at its first pad and a MISSING token matches nothing. 0 = an exact copy,
    1 = nothing in common. One-hot matrix products count the matches, chunk by chunk."""
    if len(tokens) == 0 or len(reference) == 0:
        return np.full(len(tokens), np.nan)
    width = max(tokens.shape[1], reference.shape[1])
    tokens, reference = _pad_to(tokens, width), _pad_to(reference, width)
    n_symbols = int(max(tokens.max(initial=0), reference.max(initial=0))) + 1
    ref_onehot = _content_onehot(reference, n_symbols)
    ref_length = content_mask(reference).sum(axis=1)
    nearest = np.empty(len(tokens))
    for start in range(0, len(tokens), chunk):
        block = tokens[start : start + chunk]
        matches = _content_onehot(block, n_symbols) @ ref_onehot.T
        length = np.maximum(content_mask(block).sum(axis=1)[:, None], ref_length[None, :])
        with np.errstate(invalid="ignore", divide="ignore"):
            distance = np.where(length > 0, 1.0 - matches / np.maximum(length, 1), 0.0)
        nearest[start : start + chunk] = distance.min(axis=1)
    return nearest


def _pad_to(tokens: np.ndarray, width: int) -> np.ndarray:
    if tokens.shape[1] == width:
        return tokens
    return np.hstack([tokens, np.full((len(tokens), width - tokens.shape[1]), PAD, dtype=tokens.dtype)])


def _content_onehot(tokens: np.ndarray, n_symbols: int) -> np.ndarray:
    """records x (positions * symbols) float32 indicator of residue / gap tokens inside each record."""
    usable = (tokens >= GAP) & content_mask(tokens)
    onehot = np.zeros((len(tokens), tokens.shape[1] * n_symbols), dtype=np.float32)
    rows, positions = np.nonzero(usable)
    onehot[rows, positions * n_symbols + tokens[rows, positions].astype(np.int64)] = 1.0
    return onehot


# ---------------------------------------------------------------------------- conditional generation


def label_classifier(features: np.ndarray, labels: np.ndarray, seed: int = 0):
    """A random forest (100 trees, min 2 rows a leaf, seeded) that tells labels apart from real
    rows, or None with fewer than two labels."""
    from sklearn.ensemble import RandomForestClassifier

    labels = np.asarray(labels).astype(str)
    if len(np.unique(labels)) < 2:
        return None
    forest = RandomForestClassifier(n_estimators=100, min_samples_leaf=2, n_jobs=1, random_state=seed)
    return forest.fit(features, labels)


def label_accuracy(classifier, features: np.ndarray, requested: np.ndarray) -> float:
    """Fraction of rows the classifier assigns to the label they were requested with (generated
    rows) or carry (real rows: the reference)."""
    if classifier is None or len(features) == 0:
        return float("nan")
    return float(np.mean(classifier.predict(features) == np.asarray(requested).astype(str)))
