"""Generation and forecast scores, built the same way for models and baselines so their keys match.

Imputation needs no more than `metrics` (numeric_imputation_metrics, sequence_imputation_accuracy).

Generation is scored against the real test split in a frame fixed by the real data alone (PCA
fit on train, kernel bandwidth from test), so every model and baseline of a dataset is measured
with the same yardstick.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import anndata as ad
import numpy as np
from sklearn.decomposition import PCA

from ..alphabet import decode
from . import data, metrics
from .baseline_methods import Forecaster, forecasters

KMER_SIZES = (1, 2, 3, 4)
N_PCA_COMPONENTS = 20
# Generated sets and the real reference are compared at (at most) this many rows, by a seeded
# subsample: MMD is quadratic in rows, and plug-in k-mer divergences shrink as sets grow, so
# sets of one size keep models, baselines and the train-vs-test reference comparable.
COMPARE_ROWS = 1000
FORECAST_EXAMPLE_GENES = 4

# Which way is better, for marking the best value in reports; metrics not listed are counts or
# context (n_scored, gc_mean, last_value_rmse) and are never ranked.
LOWER_IS_BETTER = {
    "rmse", "mae", "median_gene_rmse", "median_gene_mae", "mmd2", "kmer_js_mean",
    *(f"kmer_js_{k}" for k in KMER_SIZES), "gc_mean_abs_diff", "rmse_ratio_to_last_value",
}  # fmt: skip
HIGHER_IS_BETTER = {"pearson_r", "median_gene_pearson_r", "accuracy", "uniqueness", "novelty"}


def direction(metric: str) -> str | None:
    """'lower', 'higher', or None for values that are not a score."""
    if metric in LOWER_IS_BETTER:
        return "lower"
    return "higher" if metric in HIGHER_IS_BETTER else None


# ---------------------------------------------------------------------------- generation


class NumericGenerationScorer:
    """MMD between generated rows and the real test split, in a PCA space fit on the real train split."""

    def __init__(self, train: np.ndarray, test: np.ndarray, seed: int = 0):
        self.seed = seed
        # Natively missing values (NaN) get the train mean: a neutral position in PCA space.
        self.fill = data.feature_means(train)
        n_components = max(1, min(N_PCA_COMPONENTS, train.shape[1], len(train) - 1))
        self.pca = PCA(n_components=n_components, random_state=seed).fit(self._filled(train))
        self.train = subsample(self.project(train), seed)
        self.test = subsample(self.project(test), seed)
        self.bandwidth = metrics.median_bandwidth(self.test)

    def project(self, matrix: np.ndarray) -> np.ndarray:
        return self.pca.transform(self._filled(matrix))

    def score(self, generated: np.ndarray) -> dict:
        if not np.isfinite(generated).all():
            raise ValueError("generated data contains NaN or infinite values; they cannot be scored")
        points = subsample(self.pca.transform(generated), self.seed)
        return {"mmd2": metrics.mmd2_unbiased(points, self.test, self.bandwidth), "n_generated": len(generated)}

    def reference(self) -> dict:
        """The score real data gets: the train split scored as if it had been generated."""
        return {"mmd2": metrics.mmd2_unbiased(self.train, self.test, self.bandwidth), "n_generated": len(self.train)}

    def _filled(self, matrix: np.ndarray) -> np.ndarray:
        return np.where(np.isnan(matrix), self.fill, matrix)



class SequenceGenerationScorer:
    """k-mer spectrum divergence, GC content, uniqueness and novelty of generated records."""

    def __init__(self, train: np.ndarray, test: np.ndarray, alphabet: tuple[str, list[str]], seed: int = 0):
        self.name, self.symbols = alphabet
        self.seed = seed
        self.n_residues = len(self.symbols) - 3
        self.has_gc = self.name in ("dna", "rna")
        self.train, self.test = train, test
        self.train_strings = decode(train, self.symbols)
        self.test_spectra = self._spectra(test)

    def score(self, generated: np.ndarray) -> dict:
        generated = subsample(generated, self.seed)
        strings = decode(generated, self.symbols)
        return {
            **self._distances(generated),
            "uniqueness": metrics.uniqueness(strings),
            "novelty": metrics.novelty(strings, self.train_strings),
            "n_generated": len(generated),
        }

    def reference(self) -> dict:
        """Real data's score: train vs test distances; uniqueness and novelty of the test records."""
        test_strings = decode(self.test, self.symbols)
        reference = subsample(self.train, self.seed)
        return {
            **self._distances(reference),
            "uniqueness": metrics.uniqueness(test_strings),
            "novelty": metrics.novelty(test_strings, self.train_strings),
            "n_generated": len(reference),
        }

    def _spectra(self, tokens: np.ndarray) -> dict[int, np.ndarray]:
        return {k: metrics.kmer_spectrum(tokens, k, self.n_residues) for k in KMER_SIZES}

    def _distances(self, tokens: np.ndarray) -> dict:
        spectra = self._spectra(tokens)
        divergences = {f"kmer_js_{k}": metrics.js_divergence(spectra[k], self.test_spectra[k]) for k in KMER_SIZES}
        scores = {**divergences, "kmer_js_mean": float(np.mean(list(divergences.values())))}
        if self.has_gc:
            gc_mean = _mean(metrics.gc_fractions(tokens, self.name))
            scores["gc_mean"] = gc_mean
            scores["gc_mean_abs_diff"] = abs(gc_mean - _mean(metrics.gc_fractions(self.test, self.name)))
        return scores


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
    last point, keeps the estimate stable when there are few test series."""

    def __init__(self, adata: ad.AnnData, split: str = "test"):
        self.genes = list(adata.var_names)
        observed, truth = data.observed_values(adata), data.values(adata)
        self.last_value = forecasters(adata)["last_value"]
        self.cases = self._cases(adata, data.split_rows(adata, split), observed, truth)

    def score(self, forecast_fn: Forecaster) -> dict:
        predicted = np.array([self._forecast(forecast_fn, case) for case in self.cases])
        carried = np.array([self.last_value(case.history, case.times) for case in self.cases])
        targets = np.array([case.truth[-1] for case in self.cases])
        rmse, mae = metrics.rmse_mae(targets, predicted)
        last_value_rmse, _ = metrics.rmse_mae(targets, carried)
        return {
            "rmse": rmse,
            "mae": mae,
            "last_value_rmse": last_value_rmse,
            "rmse_ratio_to_last_value": rmse / last_value_rmse if last_value_rmse > 0 else float("nan"),
            "n_series": len({case.name for case in self.cases}),
            "n_steps": len(self.cases),
            "n_scored": int(np.isfinite(targets).sum()),
            "example": self._example(predicted, carried),
        }

    def _forecast(self, forecast_fn: Forecaster, case: SeriesCase) -> np.ndarray:
        forecast = np.asarray(forecast_fn(case.history.copy(), case.times.copy()), dtype=np.float64)
        if forecast.shape != (len(self.genes),):
            raise ValueError(f"forecast for series {case.name!r} has shape {forecast.shape}, expected ({len(self.genes)},)")
        return forecast

    @staticmethod
    def _cases(adata, rows, observed, truth) -> list[SeriesCase]:
        obs = adata.obs.assign(_row=np.arange(adata.n_obs))[rows]
        cases = []
        for name, group in obs.groupby(obs["series"].astype(str), sort=True):
            group = group.sort_values("time", kind="stable")
            if len(group) < 2:
                continue  # nothing to forecast from
            index = group["_row"].to_numpy()
            times = group["time"].to_numpy(dtype=np.float64)
            for k in range(1, len(index)):
                cases.append(SeriesCase(str(name), times[: k + 1], observed[index[:k]], truth[index[: k + 1]]))
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
