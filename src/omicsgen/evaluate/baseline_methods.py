"""Baseline methods: the simple models a deep generative model has to beat.

Each one is given only what `evaluate.data.observed_values` / `hidden_tokens` expose (held-out
entries blanked) and is fit on training rows only, so a baseline can never score well by
reading the values it is scored on.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable

import anndata as ad
import numpy as np

from ..alphabet import GAP, MISSING, PAD
from ..jit import cache_jit_kernels
from ..progress import timed
from . import data
from .data import feature_means
from .metrics import content_mask

Forecaster = Callable[[np.ndarray, np.ndarray], np.ndarray]
log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------- numeric data


def mean_impute(train_observed: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Fill every unobserved entry with its gene's mean over the observed training entries."""
    means = feature_means(train_observed)
    return np.where(np.isnan(observed), means, observed)


def median_impute(train_observed: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Fill every unobserved entry with its gene's median over the observed training entries
    (the overall median for a gene never observed)."""
    with warnings.catch_warnings():  # an all-NaN gene is handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        medians = np.nanmedian(train_observed, axis=0)
        overall = np.nanmedian(train_observed) if np.isfinite(train_observed).any() else 0.0
    medians = np.where(np.isfinite(medians), medians, overall)
    return np.where(np.isnan(observed), medians, observed)


def knn_impute(train_observed: np.ndarray, observed: np.ndarray, n_neighbors: int = 5) -> np.ndarray:
    """Fill unobserved entries from the nearest training rows (nan-Euclidean on the shared genes)."""
    from sklearn.impute import KNNImputer  # sklearn here, not at the top: ~1.5 s to import, and many jobs need none

    imputer = KNNImputer(n_neighbors=min(n_neighbors, len(train_observed)), keep_empty_features=True)
    filled = imputer.fit(train_observed).transform(observed)
    # A gene never observed in training gets 0 from KNNImputer; the overall mean is a fairer guess.
    never_seen = ~np.isfinite(train_observed).any(axis=0)
    filled[:, never_seen] = np.where(np.isnan(observed[:, never_seen]), feature_means(train_observed)[never_seen], observed[:, never_seen])
    return filled


# One round of IterativeImputer with Bayesian ridge took about 3.5e-8 s x features x neighbours x
# (rows + 600) on one core (45-2,000 rows, 128-500 features; the 600 is the evidence iterations'
# cost a fit, whatever its rows). Within this budget, about a second a round, every other feature
# is a neighbour (sklearn's default): 333 x 128 proteins. Beyond it, as many as it allows, at
# least 10: 189 x 500 microarrays 82, 2,000 x 256 cells 45.
ITERATIVE_BUDGET = 3e7
NEAREST_FLOOR = 10


def nearest_features(n_rows: int, n_features: int, budget: float = ITERATIVE_BUDGET) -> int:
    """Features each feature is regressed on: all the others when a round stays within `budget`
    (`ITERATIVE_BUDGET`), else as many as it allows, never fewer than `NEAREST_FLOOR`."""
    others = max(1, n_features - 1)
    allowed = budget / (max(1, n_features) * (max(0, n_rows) + 600))
    return int(min(others, max(min(NEAREST_FLOOR, others), allowed)))


def iterative_impute(
    train_observed: np.ndarray,
    observed: np.ndarray,
    max_iter: int = 10,
    n_nearest_features: int | None = None,
    seed: int = 0,
    estimator=None,
    max_train_rows: int | None = None,
) -> np.ndarray:
    """sklearn's IterativeImputer (round-robin regression of each gene on `n_nearest_features`
    others, up to `max_iter` rounds with sklearn's stopping tolerance, mean start) fit on training
    rows (a seeded subsample of at most `max_train_rows`, for slow estimators). The defaults are
    sklearn's: Bayesian ridge on every other feature, 10 rounds; on large tables the neighbours
    are cut to what `nearest_features` allows. `mice_impute` and `missforest_impute` keep 10
    neighbours. Each gene on its 10 most correlated genes (the former default, with ridge alpha 1
    and 3 rounds) lost most of a 128-protein panel: relative squared error 0.036 against 0.019 at
    limit-of-detection NAs (docs/small-data.md)."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401  (makes IterativeImputer importable)
    from sklearn.impute import IterativeImputer
    from sklearn.linear_model import BayesianRidge

    never_seen = ~np.isfinite(train_observed).any(axis=0)
    fit_rows = train_observed
    if max_train_rows is not None and len(train_observed) > max_train_rows:
        rng = np.random.default_rng(seed)
        fit_rows = train_observed[np.sort(rng.choice(len(train_observed), max_train_rows, replace=False))]
    if n_nearest_features is None:
        n_nearest_features = nearest_features(len(fit_rows), train_observed.shape[1])
    imputer = IterativeImputer(
        estimator=BayesianRidge() if estimator is None else estimator,
        max_iter=max_iter,
        n_nearest_features=min(n_nearest_features, max(1, train_observed.shape[1] - 1)),
        initial_strategy="mean",
        keep_empty_features=True,
        random_state=seed,
    )
    with warnings.catch_warnings():  # "early stopping criterion not reached" is expected at a small max_iter
        warnings.simplefilter("ignore")
        filled = imputer.fit(fit_rows).transform(observed)
    filled[:, never_seen] = np.where(np.isnan(observed[:, never_seen]), feature_means(train_observed)[never_seen], observed[:, never_seen])
    return np.where(np.isnan(observed), filled, observed)


def mice_impute(train_observed: np.ndarray, observed: np.ndarray, seed: int = 0) -> np.ndarray:
    """MICE-style chained equations, the comparison of the GAIN paper: IterativeImputer with
    sklearn's default linear estimator (Bayesian ridge), each gene on its 10 most correlated
    genes, 10 rounds, one (posterior-mean) imputation."""
    from sklearn.linear_model import BayesianRidge

    return iterative_impute(train_observed, observed, max_iter=10, n_nearest_features=10, seed=seed, estimator=BayesianRidge())


def missforest_impute(train_observed: np.ndarray, observed: np.ndarray, seed: int = 0) -> np.ndarray:
    """MissForest-style imputation: IterativeImputer with a random forest per gene (20 trees, at
    least 5 rows a leaf, seeded) on its 10 most correlated genes, 3 rounds. `numeric_fills` gives
    it a capped subsample of the training rows (the config's evaluate.max_train_rows)."""
    from sklearn.ensemble import RandomForestRegressor

    forest = RandomForestRegressor(n_estimators=20, min_samples_leaf=5, max_features=0.5, n_jobs=1, random_state=seed)
    return iterative_impute(train_observed, observed, max_iter=3, n_nearest_features=10, seed=seed, estimator=forest)


MAGIC_MISSING = "the magic-impute package is not installed (pip install magic-impute)"


def magic_impute(observed: np.ndarray, seed: int = 0, knn: int = 5, t: int = 3) -> np.ndarray:
    """MAGIC (van Dijk et al. 2018, PyPI magic-impute): diffuse each cell's values over a kNN
    graph of cells. Fit on all rows given (train and test, held-out entries hidden and started at
    the gene mean, like `svd_impute`): a cell's own observed values place it in the graph.
    Exact solver, `knn` neighbours, `t` diffusion steps, 100 principal components, one thread."""
    import graphtools.graphs
    import magic  # optional: checked by `magic_available`

    cache_jit_kernels(graphtools.graphs)  # MAGIC's graph kernels: compiled once, not in every job

    start = np.where(np.isnan(observed), feature_means(observed), observed)
    # MAGIC's graph asks 3 * knn + 1 neighbours of each cell: fewer on few cells (`magic_too_small`).
    knn = max(1, min(knn, (len(start) - 1) // 3))
    n_pca = min(100, min(start.shape) - 1)
    operator = magic.MAGIC(knn=knn, t=t, n_pca=n_pca if n_pca >= 2 else None, solver="exact",
                           random_state=seed, n_jobs=1, verbose=0)  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        smoothed = np.asarray(operator.fit_transform(start), dtype=np.float64)
    return np.where(np.isnan(observed), smoothed, observed)


def magic_too_small(n_rows: int) -> str | None:
    """Why MAGIC cannot run on `n_rows` cells (its graph needs 3 * knn + 1 of them), or None."""
    return f"MAGIC's cell graph needs at least 4 cells ({n_rows})" if n_rows < 4 else None


def magic_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("magic") is not None


SVD_CHUNK = 8192  # rows svd_impute centres and projects at once


def svd_impute(observed: np.ndarray, rank: int = 10, n_iter: int = 20, tol: float = 1e-4) -> np.ndarray:
    """Iterative hard-thresholded SVD ("hard impute"): start from gene means, then repeatedly
    replace the unobserved entries by the rank-`rank` SVD reconstruction of the current matrix.

    Fit transductively on all rows given (train and test, held-out entries hidden): a row's
    own observed entries place it in the low-rank space, as in matrix completion. Fills are
    clipped to each gene's observed range.

    Memory: one rows x genes float64 copy besides `observed` (the centred matrix and its
    reconstruction are made SVD_CHUNK rows at a time; at 60,000 cells of 2,000 genes the whole
    ones were 1 GB each, five of them at once, and took the baselines to 7.9 GB at 100k cells)."""
    unobserved = np.isnan(observed)
    means = feature_means(observed)
    filled = np.where(unobserved, means, observed)
    rank = max(1, min(rank, min(observed.shape) - 1))
    previous = filled[unobserved]
    chunks = [slice(start, start + SVD_CHUNK) for start in range(0, len(filled), SVD_CHUNK)]
    for _ in range(n_iter):
        centre = filled.mean(axis=0)
        top = _top_right_vectors(filled, centre, rank, chunks)
        for rows in chunks:  # a row's reconstruction needs only its own row: rows are replaced in place
            block, hidden = filled[rows], unobserved[rows]
            block[hidden] = (((block - centre) @ top) @ top.T + centre)[hidden]
        current = filled[unobserved]
        change = np.sqrt(np.mean((current - previous) ** 2)) if current.size else 0.0
        if change <= tol * (np.sqrt(np.mean(current**2)) + 1e-12):
            break
        previous = current
    # A low-rank reconstruction can overshoot; keep each gene within its observed range (the
    # observed entries are inside it already, so clipping in place leaves them as they are).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanmin(observed, axis=0), np.nanmax(observed, axis=0)
    return np.clip(filled, np.where(np.isfinite(low), low, -np.inf), np.where(np.isfinite(high), high, np.inf), out=filled)


THIN_SVD_GENES = 1000


def _top_right_vectors(filled: np.ndarray, centre: np.ndarray, rank: int, chunks: list[slice]) -> np.ndarray:
    """The top `rank` right singular vectors of the centred matrix (genes x rank). From the genes x
    genes Gram matrix when rows outnumber genes (a chunk of rows at a time: no rows x genes copy);
    from a thin SVD when genes outnumber rows (a 17-sample microarray of 22,645 probes: the Gram
    matrix would be 4 GB and its eigendecomposition hours, 20 times over). Up to THIN_SVD_GENES genes
    both are quick, and the Gram path stays, so the fills of earlier runs stand to the last digit."""
    if len(filled) < filled.shape[1] > THIN_SVD_GENES:
        return np.linalg.svd(filled - centre, full_matrices=False)[2][:rank].T
    gram = np.zeros((filled.shape[1], filled.shape[1]))
    for rows in chunks:
        centred = filled[rows] - centre
        gram += centred.T @ centred
    _, vectors = np.linalg.eigh(gram)
    return vectors[:, ::-1][:, :rank]


def interpolate_series(observed: np.ndarray, series: np.ndarray, times: np.ndarray, fallback: np.ndarray, how: str) -> np.ndarray:
    """Fill unobserved entries of time courses within each series, gene by gene.

    how = "linear": linear interpolation in time between the nearest observed points before and
    after (the nearest observed value beyond the first / last one); how = "last_value": the last
    observed value before (last value carried forward), or the first one after for entries before
    a gene's first observation. A gene a series never observed gets `fallback` (train mean).
    """
    filled = observed.copy()
    for name in np.unique(series):
        rows = np.flatnonzero(series == name)
        rows = rows[np.argsort(times[rows], kind="stable")]
        block, t = observed[rows], times[rows].astype(np.float64)
        for gene in range(block.shape[1]):
            column = block[:, gene]
            seen = np.isfinite(column)
            missing = ~seen
            if not missing.any():
                continue
            if not seen.any():
                column = np.full(len(column), fallback[gene])
            elif how == "linear":
                column = np.where(seen, column, np.interp(t, t[seen], column[seen]))
            else:
                index = np.where(seen, np.arange(len(column)), -1)
                last = np.maximum.accumulate(index)
                first = np.flatnonzero(seen)[0]
                column = np.where(seen, column, column[np.where(last >= 0, last, first)])
            filled[rows, gene] = column
    return filled


def sample_marginals(train_observed: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Draw each gene independently from its observed training values: keeps every marginal, loses all correlation."""
    fallback = feature_means(train_observed)
    samples = np.empty((n, train_observed.shape[1]))
    for gene, column in enumerate(train_observed.T):
        pool = column[np.isfinite(column)]
        samples[:, gene] = rng.choice(pool, size=n) if pool.size else fallback[gene]
    return samples


def last_value_forecaster(fallback: np.ndarray) -> Forecaster:
    """Forecast each gene as its last observed value; `fallback` where a series never observed it."""

    def forecast(history: np.ndarray, times: np.ndarray) -> np.ndarray:
        last, _ = _last_two_observed(history)
        return np.where(last >= 0, _take(history, last), fallback)

    return forecast


def linear_forecaster(fallback: np.ndarray) -> Forecaster:
    """Extrapolate the line through each gene's last two observed points to the target time.

    `times` holds the history's times followed by the time to forecast. With one observed point
    this is the last value; with none, `fallback`.
    """

    def forecast(history: np.ndarray, times: np.ndarray) -> np.ndarray:
        last, previous = _last_two_observed(history)
        last_value = np.where(last >= 0, _take(history, last), fallback)
        usable = (previous >= 0) & (times[np.maximum(last, 0)] > times[np.maximum(previous, 0)])
        with np.errstate(invalid="ignore", divide="ignore"):
            slope = (last_value - _take(history, previous)) / (times[last] - times[previous])
        return np.where(usable, last_value + slope * (times[-1] - times[last]), last_value)

    return forecast


def _last_two_observed(history: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per gene, the row index of the last and second-to-last observed value (-1 if none)."""
    index = np.where(np.isfinite(history), np.arange(len(history))[:, None], -1)
    last = index.max(axis=0, initial=-1)
    previous = np.where(index == last, -1, index).max(axis=0, initial=-1)
    return last, previous


def _take(history: np.ndarray, rows: np.ndarray) -> np.ndarray:
    return history[np.maximum(rows, 0), np.arange(history.shape[1])]


# ---------------------------------------------------------------------------- sequences


def most_frequent_impute(train_hidden: np.ndarray, hidden: np.ndarray, heldout: np.ndarray) -> np.ndarray:
    """Fill held-out positions with the residue (or gap) seen most often at that position in training."""
    n_symbols = int(max(train_hidden.max(initial=0), hidden.max(initial=0))) + 1
    counted = (train_hidden >= GAP) & content_mask(train_hidden)
    counts = np.zeros((train_hidden.shape[1], n_symbols), dtype=np.int64)
    rows, positions = np.nonzero(counted)
    np.add.at(counts, (positions, train_hidden[rows, positions]), 1)
    overall = int(np.argmax(counts.sum(axis=0))) if counts.any() else GAP + 1
    choice = np.where(counts.any(axis=1), counts.argmax(axis=1), overall)
    # Records may be longer than any training record; those positions get the overall choice.
    choice = np.concatenate([choice, np.full(max(0, hidden.shape[1] - len(choice)), overall)])
    filled = hidden.copy()
    rows, positions = np.nonzero(heldout)
    filled[rows, positions] = choice[positions]
    return filled


class MarkovChain:
    """Order-k Markov chain over content tokens (gap and residues) with start and end of record.

    States are token id - GAP; `end` closes a record, `start` pads the context before it. Counts
    are kept for every order 0..k so a context never seen in training (or broken by a MISSING
    token) backs off to the longest usable shorter one.
    """

    def __init__(self, order: int, n_symbols: int):
        self.order = order
        self.n_content = n_symbols - GAP
        self.end = self.start = self.n_content  # one code: `end` as an output, `start` as context
        self.base = self.n_content + 1
        self.counts = [np.zeros((self.base**j, self.base)) for j in range(order + 1)]
        self.max_length = 0

    def fit(self, hidden: np.ndarray) -> MarkovChain:
        """Count transitions in training tokens; positions that are MISSING are skipped."""
        self.max_length = hidden.shape[1]
        states = self._states(hidden)
        for i in range(hidden.shape[1] + 1):
            target = states[:, self.order + i]
            for j, counts in enumerate(self.counts):
                context = states[:, self.order + i - j : self.order + i]
                usable = (target >= 0) & (context >= 0).all(axis=1)
                np.add.at(counts, (self._code(context[usable]), target[usable]), 1)
        return self

    def impute(self, hidden: np.ndarray, heldout: np.ndarray) -> np.ndarray:
        """Fill held-out positions left to right with the most likely content token given the fills so far."""
        states = self._states(hidden)
        for i in np.flatnonzero(heldout.any(axis=0)):
            rows = np.flatnonzero(heldout[:, i])
            probabilities = self._next(states[rows, i : self.order + i])[:, : self.n_content]
            states[rows, self.order + i] = probabilities.argmax(axis=1)
        filled = hidden.copy()
        filled[heldout] = (states[:, self.order : self.order + hidden.shape[1]] + GAP)[heldout]
        return filled

    def sample(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Generate n records of at most the training length; a record ends at `end` (then pads)."""
        states = np.full((n, self.order + self.max_length), self.start, dtype=np.int64)
        alive = np.ones(n, dtype=bool)
        tokens = np.full((n, self.max_length), PAD, dtype=np.int8)
        for i in range(self.max_length):
            probabilities = self._next(states[alive, i : self.order + i])
            drawn = _draw(probabilities, rng)
            rows = np.flatnonzero(alive)
            states[rows, self.order + i] = drawn
            tokens[rows, i] = np.where(drawn == self.end, PAD, drawn + GAP)
            alive[rows[drawn == self.end]] = False
        return tokens

    def log_likelihood(self, tokens: np.ndarray, observed: np.ndarray | None = None, smoothing: float = 1e-3) -> np.ndarray:
        """log p(token at j | observed tokens left of j), n x L, NaN except at content tokens.

        Unobserved positions (and MISSING) are hidden from the context, which backs off to the
        longest usable order; probabilities are mixed with `smoothing` of a uniform distribution
        so a transition never seen in training is unlikely, not impossible."""
        observed = tokens != MISSING if observed is None else observed & (tokens != MISSING)
        states = self._states(np.where(observed, tokens, MISSING))
        target = np.where(content_mask(tokens) & (tokens >= GAP), tokens.astype(np.int64) - GAP, -1)
        result = np.full(tokens.shape, np.nan)
        for i in range(tokens.shape[1]):
            rows = np.flatnonzero(target[:, i] >= 0)
            if rows.size:
                probabilities = (1 - smoothing) * self._next(states[rows, i : self.order + i]) + smoothing / self.base
                result[rows, i] = np.log(probabilities[np.arange(len(rows)), target[rows, i]])
        return result

    def _states(self, tokens: np.ndarray) -> np.ndarray:
        """Tokens -> state codes, preceded by `order` start codes and closed by `end` at the first pad.

        MISSING becomes -1 (unusable); positions after the end are -1 too.
        """
        n = len(tokens)
        inside = content_mask(tokens)
        states = np.where(inside & (tokens != MISSING), tokens.astype(np.int64) - GAP, -1)
        closing = np.full((n, 1), -1)
        states = np.hstack([states, closing])
        states[np.arange(n), inside.sum(axis=1)] = self.end
        return np.hstack([np.full((n, self.order), self.start), states])

    def _code(self, context: np.ndarray) -> np.ndarray:
        code = np.zeros(len(context), dtype=np.int64)
        for column in context.T:
            code = code * self.base + column
        return code

    def _next(self, context: np.ndarray) -> np.ndarray:
        """Next-state probabilities for each context row, from the longest usable order."""
        counts = np.broadcast_to(self.counts[0][0], (len(context), self.base)).copy()
        for j in range(1, self.order + 1):
            suffix = context[:, self.order - j :]
            usable = (suffix >= 0).all(axis=1)
            candidate = np.zeros_like(counts)
            candidate[usable] = self.counts[j][self._code(suffix[usable])]
            seen = candidate.sum(axis=1) > 0
            counts[seen] = candidate[seen]
        total = counts.sum(axis=1, keepdims=True)
        return np.divide(counts, total, out=np.full_like(counts, 1.0 / self.base), where=total > 0)


def _draw(probabilities: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw per row."""
    cumulative = probabilities.cumsum(axis=1)
    uniform = rng.random(len(probabilities))[:, None] * cumulative[:, -1:]
    return np.minimum((cumulative <= uniform).sum(axis=1), probabilities.shape[1] - 1)


# ---------------------------------------------------------------------------- applied to a dataset
# Each returns {method name: result for the test rows}; scores.baselines turns them into scores.


# Baselines that fit on a capped subsample of training rows (their cost grows faster than the
# rows, or they keep every row: kNN); mean, median and SVD use every training row.
CAPPED = ("knn", "iterative", "mice", "missforest", "magic")
NEEDS_TWO_FEATURES = ("iterative", "mice", "missforest")  # each feature regressed on the others
# Beyond this many features those three are not run: IterativeImputer ranks neighbours from the
# features x features correlation matrix (20,000 probes: 3.2 GB of float64; MICE on GDS507's 22,645
# held 6.2 GB after 22 s of CPU, when it was stopped) and fits one model a feature a round.
REGRESSION_MAX_FEATURES = 5000


def numeric_fills(adata: ad.AnnData, seed: int = 0, max_train_rows: int | None = None) -> dict[str, np.ndarray]:
    """Test rows with every unobserved entry filled, per imputation baseline that could run."""
    return fit_numeric_fills(adata, seed, max_train_rows)[0]


# Above this many training entries (rows x features) SVD fits on a seeded subsample of rows: its
# dense rows x genes matrix and 20 rounds over it would not fit in memory or time (1e8 float64
# entries = 0.8 GB a copy; svd_impute holds two besides the input: 50,000 cells of 2,000 genes). `protocol.baseline_fit_rows` records it.
SVD_MAX_ENTRIES = 100_000_000


def fit_numeric_fills(adata: ad.AnnData, seed: int = 0, max_train_rows: int | None = None,
                      fill_rows: np.ndarray | None = None) -> tuple[dict, dict, dict]:
    """Test rows with every unobserved entry filled, per imputation baseline, as three maps:
    name -> filled test rows, name -> why it was skipped, name -> training rows it was fit on.
    `fill_rows` (a boolean row mask) fills those rows instead of the test split's: they may be
    training rows too (`complete` fills the rows a method was fit on, as its refit will).

    The slow baselines (CAPPED) fit on a seeded subsample of at most `max_train_rows` training
    rows (`data.train_rows`: the same rows for the same split and seed); sizes a method cannot
    handle are skipped with a reason, and neighbours / components shrink to what the rows allow.
    Mean and median read every training row a block of genes at a time, so a million cells are
    never one dense matrix; only the test rows and the capped rows are densified whole."""
    is_train = data.split_rows(adata, "train")
    is_test = data.split_rows(adata, "test") if fill_rows is None else np.asarray(fill_rows, dtype=bool)
    n_train, n_features = int(is_train.sum()), adata.n_vars
    test = data.observed_rows(adata, is_test)
    capped_rows = data.train_rows(adata.obs["split"].to_numpy(), seed, max_train_rows)
    capped = data.observed_rows(adata, capped_rows)
    means, medians = _train_statistics(adata, is_train)
    methods = {
        "mean": (n_train, lambda: np.where(np.isnan(test), means, test)),
        "median": (n_train, lambda: np.where(np.isnan(test), medians, test)),
        "knn": (len(capped), lambda: knn_impute(capped, test)),
        "iterative": (len(capped), lambda: iterative_impute(capped, test, seed=seed)),
        "mice": (len(capped), lambda: mice_impute(capped, test, seed=seed)),
        "missforest": (len(capped), lambda: missforest_impute(capped, test, seed=seed)),
    }
    # SVD and MAGIC see training and test rows together (held-out entries hidden) and return the
    # test rows; rows stay in file order, so results do not depend on how the rows were gathered.
    svd_cap = max(1, SVD_MAX_ENTRIES // max(1, n_features))
    svd_train = data.train_rows(adata.obs["split"].to_numpy(), seed, svd_cap if n_train > svd_cap else None)
    methods["svd"] = (len(svd_train), lambda: _transductive(adata, svd_train, is_test, svd_impute))
    if magic_applies(adata) and magic_available():
        methods["magic"] = (len(capped), lambda: _transductive(adata, capped_rows, is_test, lambda x: magic_impute(x, seed=seed)))
    if data.modality(adata) == "timecourse":
        series = adata.obs["series"].astype(str).to_numpy()[is_test]
        times = adata.obs["time"].to_numpy(dtype=np.float64)[is_test]
        methods["linear"] = (0, lambda: interpolate_series(test, series, times, means, "linear"))
        methods["last_value"] = (0, lambda: interpolate_series(test, series, times, means, "last_value"))
    fills, skipped, fit_rows = {}, {}, {}
    for name, (n_fit, fill) in methods.items():
        reason = _too_small(name, n_fit, len(test), n_features, len(capped) + len(test))
        if reason is not None:
            log.info("baseline %s not scored: %s", name, reason)
        else:
            fit = f", fit on {n_fit} training rows" if n_fit else ""
            reason, filled = _attempt(name, fill, f"baseline {name}: {len(test)} rows filled{fit}")
        if reason is not None:
            skipped[name] = reason
            continue
        fills[name], fit_rows[name] = filled, n_fit
    return fills, skipped, fit_rows


def _transductive(adata: ad.AnnData, train_rows: np.ndarray, is_test: np.ndarray, method) -> np.ndarray:
    """`method` on the given training rows and the test rows together, in file order; the test rows' fill."""
    rows = np.zeros(adata.n_obs, dtype=bool)
    rows[train_rows] = True
    rows |= is_test
    return method(data.observed_rows(adata, rows))[is_test[rows]]


def _train_statistics(adata: ad.AnnData, is_train: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-gene mean and median of the observed training entries, a block of genes at a time
    (`feature_means` and `median_impute` on the whole matrix give the same values). A gene never
    observed gets the overall mean / median; the overall median is that of the per-gene medians
    beyond 5e7 entries, where the exact one would need every value at once."""
    sums, counts, medians = np.zeros(adata.n_vars), np.zeros(adata.n_vars), np.full(adata.n_vars, np.nan)
    exact = is_train.sum() * adata.n_vars <= 50_000_000
    values = []
    with warnings.catch_warnings():  # an all-NaN gene is handled below
        warnings.simplefilter("ignore", RuntimeWarning)
        for columns, block in data.observed_column_blocks(adata, is_train):
            finite = np.isfinite(block)
            sums[columns], counts[columns] = np.nansum(block, axis=0), finite.sum(axis=0)
            medians[columns] = np.nanmedian(block, axis=0) if len(block) else np.nan
            if exact:
                values.append(block[finite])
        overall_mean = sums.sum() / counts.sum() if counts.sum() else 0.0
        pool = np.concatenate(values) if exact and values else medians[np.isfinite(medians)]
        overall_median = float(np.median(pool)) if pool.size else 0.0
    means = np.where(counts > 0, sums / np.maximum(counts, 1), overall_mean)
    return means, np.where(np.isfinite(medians), medians, overall_median)


def _too_small(name: str, n_fit: int, n_test: int, n_features: int, n_graph: int) -> str | None:
    """Why baseline `name` cannot run on these sizes, or None."""
    if n_test == 0:
        return "the test split has no rows to fill"
    if n_fit == 0 and name not in ("linear", "last_value"):
        return "there are no training rows to fit on"
    if name in NEEDS_TWO_FEATURES and n_features < 2:
        return f"it regresses each feature on the others, and the data have {n_features} feature"
    if name in NEEDS_TWO_FEATURES and n_features > REGRESSION_MAX_FEATURES:
        return (f"it regresses each of the {n_features:,} features on its most correlated ones: the {n_features:,}² "
                f"correlation matrix alone is {n_features ** 2 * 8 / 1e9:.1f} GB (run at most "
                f"{REGRESSION_MAX_FEATURES:,} features)")
    if name == "magic":
        return magic_too_small(n_graph)
    return None


def _attempt(name: str, fill, done: str) -> tuple[str | None, np.ndarray | None]:
    """Run one baseline, logging `done` and its seconds when it succeeds; a numerical failure of
    the library on odd data skips it with the error as its reason (logged), so one baseline never
    costs the dataset its page."""
    try:
        with timed(log, done):
            return None, fill()
    except (ValueError, np.linalg.LinAlgError, IndexError) as err:
        log.warning("baseline %s skipped: %s: %s", name, type(err).__name__, err)
        return f"it failed on these data: {type(err).__name__}: {err}", None


def magic_applies(adata: ad.AnnData) -> bool:
    """MAGIC assumes single cells: a graph of similar cells to diffuse over (expression data)."""
    return data.modality(adata) == "expression"


def numeric_samples(adata: ad.AnnData, seed: int, n: int) -> dict[str, np.ndarray]:
    """n generated rows per generation baseline: each gene drawn independently from its observed
    training values (`sample_marginals`, read a block of genes at a time)."""
    rng = np.random.default_rng(seed)
    samples = np.empty((n, adata.n_vars))
    for columns, block in data.observed_column_blocks(adata, data.split_rows(adata, "train")):
        samples[:, columns] = sample_marginals(block, n, rng) if len(block) else feature_means(block)
    return {"mean": samples}


def forecasters(adata: ad.AnnData) -> dict[str, Forecaster]:
    """Forecast baselines; a gene a series never observed falls back to its training mean."""
    observed = data.observed_values(adata)
    fallback = data.feature_means(observed[data.split_rows(adata, "train")])
    return {"last_value": last_value_forecaster(fallback), "linear": linear_forecaster(fallback)}


def sequence_fills(adata: ad.AnnData) -> dict[str, np.ndarray]:
    """Test records with held-out positions filled, per imputation baseline."""
    hidden, heldout = data.hidden_tokens(adata), data.heldout_mask(adata)
    train, test = data.split_rows(adata, "train"), data.split_rows(adata, "test")
    return {
        "most_frequent": most_frequent_impute(hidden[train], hidden[test], heldout[test]),
        "markov": _markov_chain(adata).impute(hidden[test], heldout[test]),
    }


def sequence_samples(adata: ad.AnnData, seed: int, n: int) -> dict[str, np.ndarray]:
    """n generated records per generation baseline."""
    return {"markov": _markov_chain(adata).sample(n, np.random.default_rng(seed))}


def sequence_likelihoods(adata: ad.AnnData) -> dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]]:
    """Baselines that give each token a probability: (tokens, observed) -> n x L log-probabilities."""
    return {"markov": _markov_chain(adata).log_likelihood}


def _markov_chain(adata: ad.AnnData) -> MarkovChain:
    """Order 3 for nucleotides (codon-scale context), 1 for protein (20^k contexts grow too fast)."""
    name, symbols = data.alphabet(adata)
    order = 1 if name == "protein" else 3
    train = data.hidden_tokens(adata)[data.split_rows(adata, "train")]
    return MarkovChain(order, len(symbols)).fit(train)
