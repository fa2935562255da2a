"""Score functions on plain arrays (no AnnData, no files), so each can be checked on a known case."""

from __future__ import annotations

import numpy as np
from scipy.spatial.distance import cdist, pdist

from ..alphabet import FIRST_RESIDUE, MISSING, PAD, gc_fraction

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
    return {
        "rmse": _rmse(truth_values, filled_values),
        "mae": _mae(truth_values, filled_values),
        "pearson_r": _pearson(truth_values, filled_values),
        "median_gene_rmse": _nanmedian(per_gene["rmse"]),
        "median_gene_mae": _nanmedian(per_gene["mae"]),
        "median_gene_pearson_r": _nanmedian(per_gene["pearson_r"]),
        "n_scored": int(scored.sum()),
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


def _pearson(truth, predicted) -> float:
    """Pearson r, NaN where it is undefined (fewer than 2 values or a constant side)."""
    if truth.size < 2 or np.ptp(truth) == 0 or np.ptp(predicted) == 0:
        return float("nan")
    return float(np.corrcoef(truth, predicted)[0, 1])


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
