"""Generation and forecast scores, built the same way for models and baselines so their keys match.

Imputation needs no more than `metrics` (numeric_imputation_metrics, sequence_imputation_accuracy).

Generation is scored against the real test split in a frame fixed by the real data alone (PCA
fit on train, kernel bandwidth from test), so every model and baseline of a dataset is measured
with the same yardstick.
"""

from __future__ import annotations

import itertools
import warnings
from dataclasses import dataclass

import anndata as ad
import numpy as np

from ..alphabet import FIRST_RESIDUE, decode
from . import data, metrics
from .baseline_methods import Forecaster, forecasters

KMER_SIZES = (1, 2, 3, 4, 5, 6)
KMER_MEAN_SIZES = (1, 2, 3, 4)  # kmer_js_mean: longer k-mers are too sparse on small sets to average in
C2ST_KMER = 3  # sequences: the classifier two-sample test sees per-record 3-mer profiles
N_PCA_COMPONENTS = 20
N_CORRELATION_GENES = 100  # gene-gene correlations over the most variable real train genes
# Generated sets and the real reference are compared at (at most) this many rows, by a seeded
# subsample: MMD is quadratic in rows, and plug-in k-mer divergences shrink as sets grow, so
# sets of one size keep models, baselines and the train-vs-test reference comparable.
COMPARE_ROWS = 1000
FORECAST_EXAMPLE_GENES = 4
FORECAST_HORIZONS = (1, 2, 3)

# Which way is better, for marking the best value in reports; metrics not listed are counts or
# context (n_scored, gc_mean, last_value_rmse) and are never ranked.
LOWER_IS_BETTER = {
    "rmse", "mae", "median_gene_rmse", "median_gene_mae", "mmd2", "kmer_js_mean",
    *(f"kmer_js_{k}" for k in KMER_SIZES), "gc_mean_abs_diff", "rmse_ratio_to_last_value",
    "rmse_nonzero", "mae_nonzero", "counts_rmse", "counts_mae", "counts_rmse_nonzero",
    "c2st_auc", "gene_mean_abs_diff", "gene_variance_abs_diff", "gene_zero_fraction_abs_diff",
    "corr_matrix_distance", "aa_composition_distance", "heldout_nll", "heldout_perplexity",
    *(f"rmse_horizon_{h}" for h in FORECAST_HORIZONS), "median_abs_error", "counts_median_abs_error",
    "calibration_error", "calibration_error_nonzero",
}  # fmt: skip
HIGHER_IS_BETTER = {
    "pearson_r", "median_gene_pearson_r", "accuracy", "uniqueness", "novelty", "spearman_r",
    "pearson_r_nonzero", "spearman_r_nonzero", "gene_mean_pearson_r", "gene_variance_pearson_r",
    "corr_matrix_pearson_r", "label_accuracy",
}  # fmt: skip


def direction(metric: str) -> str | None:
    """'lower', 'higher', or None for values that are not a score."""
    if metric in LOWER_IS_BETTER:
        return "lower"
    return "higher" if metric in HIGHER_IS_BETTER else None


# ---------------------------------------------------------------------------- generation
# The PCA that MMD and the c2st work in is fit on z-scored features when the features are in
# different units: their train sds span over MIXED_UNITS_SPREAD times their median. A PCA of raw
# values is then the largest-unit features alone (pd_speech: one entropy coefficient of ~1e10
# held 77% of the variance, five of them 99.9%), and the test judged those five. Expression
# tables span 2-5x (log-normalised counts, microarrays, qPCR); clinical and acoustic ones 40-3e10x.
MIXED_UNITS_SPREAD = 20
PCA_SCALES = ("auto", "raw", "zscore")


def pca_units(train: np.ndarray, pca_scale: str = "auto") -> tuple[np.ndarray | None, str]:
    """Each feature's divisor before the PCA (its train sd; None = raw values), and the space in
    words with its setting, for the page. `pca_scale`: auto (z-scored when in mixed units), raw
    or zscore."""
    if pca_scale not in PCA_SCALES:
        raise ValueError(f"evaluate.pca_scale must be one of {', '.join(PCA_SCALES)}, not {pca_scale!r}")
    with warnings.catch_warnings():  # a column never observed
        warnings.simplefilter("ignore", RuntimeWarning)
        sd = np.nan_to_num(np.nanstd(train, axis=0)) if len(train) else np.zeros(train.shape[1])
    varying = sd[sd > 0]
    spread = float(varying.max() / np.median(varying)) if varying.size else 1.0
    setting = f"evaluate.pca_scale: {pca_scale}"
    zscore = pca_scale == "zscore" or (pca_scale == "auto" and spread > MIXED_UNITS_SPREAD)
    if not zscore:
        return None, f"raw values (feature sds span {spread:.3g}x their median; {setting})"
    return np.where(sd > 0, sd, 1.0), (f"z-scored features (feature sds span {spread:.3g}x their median: "
                                       f"mixed units; {setting})")


class NumericGenerationScorer:
    """Generated rows against the real test split: MMD and a classifier two-sample test in a PCA
    space fit on the real train split (of z-scored features when they are in mixed units:
    `pca_units`, `pca_scale`), per-gene statistics and gene-gene correlations on the data
    scale. Scores that the sizes do not allow are NaN, with the reason in the section's `skipped`.

    `names` (the genes) label the c2st's evidence: the genes its forest leans on, fit on the data
    scale rather than on the PCA coordinates, so a reader sees genes, not components.
    `c2st_rows`: the rows a side the c2st's balanced draws target (`metrics.c2st_repeats`)."""

    def __init__(self, train: np.ndarray, test: np.ndarray, seed: int = 0, names=None, resamples: int = 0,
                 c2st_rows: int = metrics.C2ST_ROWS, pca_scale: str = "auto"):
        if len(train) == 0 or len(test) == 0:
            raise TooSmall(f"generation is scored against real rows: {len(train)} train and {len(test)} test rows")
        self.seed, self.resamples, self.c2st_rows = seed, resamples, c2st_rows
        self.names = list(names) if names is not None else [str(i) for i in range(train.shape[1])]
        # Natively missing values (NaN) get the train mean: a neutral position in PCA space.
        self.fill = data.feature_means(train)
        self.units, self.space = pca_units(train, pca_scale)
        from sklearn.decomposition import PCA  # here: sklearn takes ~1.5 s to import, and report needs none

        n_components = max(1, min(N_PCA_COMPONENTS, train.shape[1], len(train) - 1))
        with warnings.catch_warnings():  # a constant train set (one row) explains no variance: a warning, not an error
            warnings.simplefilter("ignore", RuntimeWarning)
            self.pca = PCA(n_components=n_components, random_state=seed).fit(self._in_units(train))
        self.train_rows = subsample(train, seed)
        self.test_rows = subsample(test, seed)
        self.train = self.project(self.train_rows)
        self.test = self.project(self.test_rows)
        self.bandwidth = metrics.median_bandwidth(self.test)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            variance = np.nan_to_num(np.nanvar(train, axis=0), nan=-1.0)
        self.correlation_genes = np.sort(np.argsort(-variance, kind="stable")[:N_CORRELATION_GENES])
        self.test_filled = self._filled(self.test_rows)

    def project(self, matrix: np.ndarray) -> np.ndarray:
        return self.pca.transform(self._in_units(matrix))

    def _in_units(self, matrix: np.ndarray) -> np.ndarray:
        filled = self._filled(matrix)
        return filled if self.units is None else filled / self.units

    def features(self, matrix: np.ndarray) -> np.ndarray:
        """What the label classifier of conditional scoring sees: the PCA coordinates."""
        return self.project(matrix)

    def score(self, generated: np.ndarray, n_generated: int | None = None) -> dict:
        """`n_generated`: how many rows were generated when `generated` is already the
        `subsample` of them that is scored (evaluate reads no more from a large samples.h5ad)."""
        if not np.isfinite(generated).all():
            raise ValueError("generated data contains NaN or infinite values; they cannot be scored")
        rows = subsample(generated, self.seed)
        scores = self._scores(rows, len(generated) if n_generated is None else n_generated)
        if len(rows) and "c2st_auc" not in scores.get("skipped", {}):
            scores["c2st_top_features"] = metrics.c2st_top_features(self.test_filled, rows, self.names, self.seed)
        scores["pca_space"] = self.space
        return scores

    def reference(self) -> dict:
        """The score real data gets: the train split scored as if it had been generated."""
        return self._scores(self.train_rows, len(self.train_rows))

    def _scores(self, rows: np.ndarray, n_generated: int) -> dict:
        points = self.project(rows) if len(rows) else np.zeros((0, self.test.shape[1]))
        c2st = metrics.classifier_two_sample_test(self.test, points, self.seed, resamples=self.resamples, rows=self.c2st_rows)
        filled = self._filled(rows)[:, self.correlation_genes]
        scores = {
            "mmd2": metrics.mmd2_unbiased(points, self.test, self.bandwidth),
            "c2st_auc": c2st["auc"],
            **metrics.gene_statistic_agreement(rows, self.test_rows),
            **metrics.correlation_agreement(filled, self.test_filled[:, self.correlation_genes]),
            "n_generated": n_generated,
        }
        interval = {"c2st_auc": c2st["ci"], "mmd2": metrics.mmd2_bootstrap_interval(points, self.test, self.bandwidth, self.seed, self.resamples)}
        return with_context(scores, interval, _numeric_skips(len(points), len(self.test), rows.shape[1], c2st["reason"]))

    def _filled(self, matrix: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(matrix), self.fill, matrix)


def with_context(scores: dict, intervals: dict, skipped: dict) -> dict:
    """Add the bootstrap intervals (`ci95`) that could be computed and the reasons (`skipped`)
    for scores the sizes did not allow; both left out when empty."""
    intervals = {key: value for key, value in intervals.items() if value is not None}
    if intervals:
        scores["ci95"] = intervals
    if skipped:
        scores["skipped"] = skipped
    return scores


class TooSmall(ValueError):
    """A whole section cannot be scored on data this small; the message says why."""


def _numeric_skips(n_generated: int, n_real: int, n_features: int, c2st_reason: str | None) -> dict:
    """Why each generation score that is NaN on these sizes is NaN."""
    skipped = {}
    if min(n_generated, n_real) < 2:
        skipped["mmd2"] = f"MMD needs 2 rows a side ({n_real} real test, {n_generated} generated)"
    if c2st_reason:
        skipped["c2st_auc"] = c2st_reason
    if n_features < 2:
        skipped["corr_matrix_distance"] = skipped["corr_matrix_pearson_r"] = f"gene-gene correlations need 2 features ({n_features})"
    elif min(n_generated, n_real) < 3:
        skipped["corr_matrix_distance"] = skipped["corr_matrix_pearson_r"] = (
            f"gene-gene correlations need 3 rows a side ({n_real} real test, {n_generated} generated)")  # fmt: skip
    if n_features < 2:
        skipped["gene_mean_pearson_r"] = skipped["gene_variance_pearson_r"] = f"per-gene agreement r needs 2 genes ({n_features})"
    return skipped


class SequenceGenerationScorer:
    """k-mer spectrum divergence, GC content, uniqueness and novelty of generated records.
    `c2st_rows`: the rows a side the c2st's balanced draws target (`metrics.c2st_repeats`)."""

    def __init__(self, train: np.ndarray, test: np.ndarray, alphabet: tuple[str, list[str]], seed: int = 0, resamples: int = 0,
                 c2st_rows: int = metrics.C2ST_ROWS):
        if len(train) == 0 or len(test) == 0:
            raise TooSmall(f"generation is scored against real records: {len(train)} train and {len(test)} test records")
        self.name, self.symbols = alphabet
        self.seed, self.resamples, self.c2st_rows = seed, resamples, c2st_rows
        self.n_residues = len(self.symbols) - 3
        self.has_gc = self.name in ("dna", "rna")
        self.train, self.test = train, test
        self.train_strings = decode(train, self.symbols)
        self.test_profiles = metrics.kmer_profiles(subsample(test, seed), C2ST_KMER, self.n_residues)
        self.test_composition = metrics.kmer_spectrum(test, 1, self.n_residues)

    def kmer_names(self) -> list[str]:
        """The C2ST_KMER-mers in the column order of `metrics.kmer_profiles` (base n_residues codes)."""
        residues = self.symbols[FIRST_RESIDUE : FIRST_RESIDUE + self.n_residues]
        return ["".join(letters) for letters in itertools.product(residues, repeat=C2ST_KMER)]

    def score(self, generated: np.ndarray) -> dict:
        generated = subsample(generated, self.seed)
        strings = decode(generated, self.symbols)
        scores = {
            **self._distances(generated),
            "uniqueness": metrics.uniqueness(strings),
            "novelty": metrics.novelty(strings, self.train_strings),
            **self._nearest_train(generated),
            "n_generated": len(generated),
        }
        if len(generated) and "c2st_auc" not in scores.get("skipped", {}):
            profiles = metrics.kmer_profiles(generated, C2ST_KMER, self.n_residues)
            scores["c2st_top_features"] = metrics.c2st_top_features(self.test_profiles, profiles, self.kmer_names(), self.seed)
        return scores

    def reference(self) -> dict:
        """Real data's score: train vs test distances; uniqueness and novelty of the test records."""
        test_strings = decode(self.test, self.symbols)
        reference = subsample(self.train, self.seed)
        return {
            **self._distances(reference),
            "uniqueness": metrics.uniqueness(test_strings),
            "novelty": metrics.novelty(test_strings, self.train_strings),
            **self._nearest_train(subsample(self.test, self.seed)),
            "n_generated": len(reference),
        }

    def features(self, tokens: np.ndarray) -> np.ndarray:
        """What the label classifier of conditional scoring sees: per-record 3-mer profiles."""
        return metrics.kmer_profiles(tokens, C2ST_KMER, self.n_residues)

    def _nearest_train(self, tokens: np.ndarray) -> dict:
        """Novelty as a distance: normalised Hamming distance of each record to its nearest
        training record (0 = a copy)."""
        distances = metrics.nearest_hamming_distances(tokens, self.train)
        return {
            "nearest_train_distance_mean": _mean(distances),
            "nearest_train_distance_median": float(np.median(distances)) if distances.size else float("nan"),
        }

    def _distances(self, tokens: np.ndarray) -> dict:
        divergences = {f"kmer_js_{k}": metrics.kmer_js_sparse(tokens, self.test, k, self.n_residues) for k in KMER_SIZES}
        with warnings.catch_warnings():  # all-NaN divergences (records shorter than k) stay NaN
            warnings.simplefilter("ignore", RuntimeWarning)
            js_mean = float(np.nanmean([divergences[f"kmer_js_{k}"] for k in KMER_MEAN_SIZES]))
        scores = {**divergences, "kmer_js_mean": js_mean}
        profiles = metrics.kmer_profiles(tokens, C2ST_KMER, self.n_residues)
        c2st = metrics.classifier_two_sample_test(self.test_profiles, profiles, self.seed, resamples=self.resamples, rows=self.c2st_rows)
        scores["c2st_auc"] = c2st["auc"]
        if self.has_gc:
            gc_mean = _mean(metrics.gc_fractions(tokens, self.name))
            scores["gc_mean"] = gc_mean
            scores["gc_mean_abs_diff"] = abs(gc_mean - _mean(metrics.gc_fractions(self.test, self.name)))
        else:
            composition = metrics.kmer_spectrum(tokens, 1, self.n_residues)
            scores["aa_composition_distance"] = metrics.total_variation(composition, self.test_composition)
        skipped = {"c2st_auc": c2st["reason"]} if c2st["reason"] else {}
        return with_context(scores, {"c2st_auc": c2st["ci"]}, skipped)


def conditional_scores(adata, truth, requested, generated, make_scorer, scorer) -> dict:
    """Conditional samples (each row asked for a label): the generation scores per label, each
    against the real train / test rows of that label, and how often a classifier trained on the
    real train rows assigns a generated row to the label it was asked for; on the real test rows
    the same classifier gives the reference accuracy. `make_scorer(train, test)` builds each
    label's scorer with the whole set's settings (seed, c2st_rows)."""
    labels = adata.obs["label"].astype(str).to_numpy()
    train, test = data.split_rows(adata, "train"), data.split_rows(adata, "test")
    classifier = metrics.label_classifier(scorer.features(truth[train]), labels[train], scorer.seed)
    per_label = {}
    for label in sorted(set(requested)):
        real_train, real_test = truth[train & (labels == label)], truth[test & (labels == label)]
        asked = generated[requested == label]
        if len(real_train) < 2 or len(real_test) < 2:
            per_label[label] = {"n_generated": len(asked), "n_real_test": len(real_test)}
            continue
        label_scorer = make_scorer(real_train, real_test)
        per_label[label] = {
            **label_scorer.score(asked),
            "label_accuracy": metrics.label_accuracy(classifier, scorer.features(asked), requested[requested == label]),
            "n_real_test": len(real_test),
            "reference_train_vs_test": label_scorer.reference(),
        }
    return {
        "label_accuracy": metrics.label_accuracy(classifier, scorer.features(generated), requested),
        "reference_label_accuracy": metrics.label_accuracy(classifier, scorer.features(truth[test]), labels[test]),
        "per_label": per_label,
    }


def subsample(rows: np.ndarray, seed: int) -> np.ndarray:
    """At most COMPARE_ROWS rows, the same ones for the same seed and size."""
    if len(rows) <= COMPARE_ROWS:
        return rows
    rng = np.random.default_rng(seed)
    return rows[np.sort(rng.choice(len(rows), COMPARE_ROWS, replace=False))]


def _mean(values: np.ndarray) -> float:
    return float(values.mean()) if values.size else float("nan")


# ---------------------------------------------------------------------------- forecasting


@dataclass
class SeriesCase:
    """One step of a test series: forecast time point k from points 0..k-1."""

    name: str
    times: np.ndarray  # history times, then the target time
    history: np.ndarray  # rows before the target; held-out entries are NaN like native missing ones
    truth: np.ndarray  # rows up to and including the target, true values (target last)


class ForecastTask:
    """Forecast every time point of each test series from the points before it (one step ahead)
    and compare with carrying the last value forward. Scoring every step, not only each series'
    last point, keeps the estimate stable when there are few test series.

    Longer horizons (FORECAST_HORIZONS): the target is forecast from a history ending h points
    before it, so h = 2 skips the point just before the target."""

    def __init__(self, adata: ad.AnnData, split: str = "test"):
        self.genes = list(adata.var_names)
        observed, truth = data.observed_values(adata), data.values(adata)
        self.last_value = forecasters(adata)["last_value"]
        rows = data.split_rows(adata, split)
        self.horizon_cases = {h: self._cases(adata, rows, observed, truth, h) for h in FORECAST_HORIZONS}
        self.cases = self.horizon_cases[1]

    def score(self, forecast_fn: Forecaster) -> dict:
        predicted, carried, targets = self._run(forecast_fn, self.cases)
        rmse, mae = metrics.rmse_mae(targets, predicted)
        last_value_rmse, _ = metrics.rmse_mae(targets, carried)
        scores = {
            "rmse": rmse,
            "mae": mae,
            "last_value_rmse": last_value_rmse,
            "rmse_ratio_to_last_value": rmse / last_value_rmse if last_value_rmse > 0 else float("nan"),
            "n_series": len({case.name for case in self.cases}),
            "n_steps": len(self.cases),
            "n_scored": int(np.isfinite(targets).sum()),
        }
        for h in FORECAST_HORIZONS:
            if h == 1:
                h_rmse, h_last, n_steps = rmse, last_value_rmse, len(self.cases)
            else:
                h_predicted, h_carried, h_targets = self._run(forecast_fn, self.horizon_cases[h])
                h_rmse, _ = metrics.rmse_mae(h_targets, h_predicted)
                h_last, _ = metrics.rmse_mae(h_targets, h_carried)
                n_steps = len(self.horizon_cases[h])
            scores[f"rmse_horizon_{h}"] = h_rmse
            scores[f"last_value_rmse_horizon_{h}"] = h_last
            scores[f"n_steps_horizon_{h}"] = n_steps
        scores["example"] = self._example(predicted, carried)
        return scores

    def _run(self, forecast_fn: Forecaster, cases: list[SeriesCase]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        width = len(self.genes)
        predicted = np.array([self._forecast(forecast_fn, case) for case in cases]).reshape(-1, width)
        carried = np.array([self.last_value(case.history, case.times) for case in cases]).reshape(-1, width)
        targets = np.array([case.truth[-1] for case in cases]).reshape(-1, width)
        return predicted, carried, targets

    def _forecast(self, forecast_fn: Forecaster, case: SeriesCase) -> np.ndarray:
        forecast = np.asarray(forecast_fn(case.history.copy(), case.times.copy()), dtype=np.float64)
        if forecast.shape != (len(self.genes),):
            raise ValueError(f"forecast for series {case.name!r} has shape {forecast.shape}, expected ({len(self.genes)},)")
        return forecast

    @staticmethod
    def _cases(adata, rows, observed, truth, horizon: int = 1) -> list[SeriesCase]:
        """Target point k of each series from its points 0..k-horizon (k >= horizon)."""
        obs = adata.obs.assign(_row=np.arange(adata.n_obs))[rows]
        cases = []
        for name, group in obs.groupby(obs["series"].astype(str), sort=True):
            group = group.sort_values("time", kind="stable")
            index = group["_row"].to_numpy()
            times = group["time"].to_numpy(dtype=np.float64)
            for k in range(horizon, len(index)):
                end = k - horizon + 1  # history rows 0..end-1
                case_times = np.append(times[:end], times[k])
                case_truth = truth[np.append(index[:end], index[k])]
                cases.append(SeriesCase(str(name), case_times, observed[index[:end]], case_truth))
        return cases

    def _example(self, predicted: np.ndarray, carried: np.ndarray) -> dict:
        """The last point of the longest test series (first by name on ties) and its most variable genes."""
        if not self.cases:
            return {}
        which = max(range(len(self.cases)), key=lambda i: (len(self.cases[i].times), -i))
        case = self.cases[which]
        with warnings.catch_warnings():  # a gene with no value in this series just ranks last
            warnings.simplefilter("ignore", RuntimeWarning)
            variance = np.nan_to_num(np.nanvar(case.truth, axis=0), nan=-1.0)
        genes = np.argsort(-variance, kind="stable")[:FORECAST_EXAMPLE_GENES]
        return {
            "series": case.name,
            "genes": [self.genes[g] for g in genes],
            "times": case.times,
            "truth": case.truth[:, genes],
            "forecast": predicted[which, genes],
            "last_value": carried[which, genes],
        }
