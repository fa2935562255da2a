"""The `iterative` baseline: sklearn's default IterativeImputer (Bayesian ridge on every other
feature) where a round is affordable, fewer neighbours only on large tables."""

from __future__ import annotations

import numpy as np
from sklearn.linear_model import Ridge

from omicsgen.evaluate.baseline_methods import NEAREST_FLOOR, iterative_impute, nearest_features


def test_every_other_feature_on_a_small_table_fewer_on_a_large_one():
    assert nearest_features(333, 128) == 127  # a protein panel: all, as sklearn's default
    assert nearest_features(40, 3) == 2
    wide = nearest_features(2_000, 2_000)
    assert NEAREST_FLOOR <= wide < 100  # bounded cost, never below the floor
    assert nearest_features(2_000, 256) < nearest_features(200, 256) <= 255
    assert nearest_features(10**6, 2_000) == NEAREST_FLOOR


def _low_rank_table(seed: int, rows: int = 240, features: int = 60, rate: float = 0.1):
    """Features spread over many scales, each a mix of 8 factors plus noise; `rate` MCAR NAs."""
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(rows, 8)) @ rng.normal(size=(8, features)) + 0.3 * rng.normal(size=(rows, features))
    truth = truth * np.exp(rng.normal(0, 1.5, features)) + rng.normal(0, 10, features)
    given = np.where(rng.random(truth.shape) < rate, np.nan, truth)
    return truth, given


def test_all_features_beat_ten_nearest_ones():
    """8 factors spread over 60 features: 10 neighbours (the former default, ridge alpha 1, 3
    rounds) see too little of them; every other feature with Bayesian ridge recovers far more."""
    for seed in (0, 1):
        truth, given = _low_rank_table(seed)
        missing = np.isnan(given)
        sd = np.nanstd(given, axis=0)

        def error(filled):
            return np.sqrt(np.mean((((filled - truth) / sd)[missing]) ** 2))

        now = error(iterative_impute(given, given, seed=seed))
        before = error(iterative_impute(given, given, max_iter=3, n_nearest_features=10, seed=seed, estimator=Ridge(alpha=1.0)))
        assert now < 0.8 * before, (seed, now, before)
        filled = iterative_impute(given, given, seed=seed)
        assert np.array_equal(filled[~missing], given[~missing]) and np.isfinite(filled).all()
