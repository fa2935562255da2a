"""Multiple imputation: summarising a model's draws (impute.DrawKeeper) and scoring their
calibration on held-out entries (evaluate's `calibration` section)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omicsgen import impute as impute_module
from omicsgen.evaluate import data, evaluate, metrics
from test_evaluate import ONE_DRAW, all_keys, documented_keys, make_expression, numeric_samples, with_imputed


def summarise_draws(model, values, observed, n_draws, seed, keep_rows=None, keep_fraction=1.0, block=7):
    """impute's per-block summaries over in-memory arrays: (layers for all rows, kept draws)."""
    keep_rows = np.ones(len(values), dtype=bool) if keep_rows is None else keep_rows
    keeper = impute_module.DrawKeeper(model, n_draws, seed, keep_rows, keep_fraction)
    blocks = [keeper.summarise(rows, values[rows], observed[rows], None)
              for rows in (slice(start, min(start + block, len(values))) for start in range(0, len(values), block))]
    layers = {key: np.concatenate([part[key] for part in blocks]) for key in blocks[0]}
    return layers, keeper.kept()


class GaussianDraws:
    """A stand-in for a probabilistic model (unit tests of the summary only): each unobserved
    entry is drawn from Normal(centre, sd); observed entries are returned unchanged."""

    family = "fake"

    def __init__(self, centre: np.ndarray, sd: float):
        self.centre, self.sd, self.calls = centre, sd, []

    def impute_draws(self, values, observed, n_draws, generator, obs=None):
        self.calls.append(len(values))
        noise = torch.randn((n_draws, *values.shape), generator=generator, dtype=torch.float64).numpy()
        rows = slice(sum(self.calls[:-1]), sum(self.calls))
        return np.where(observed, values, self.centre[rows] + self.sd * noise)


def test_summary_keeps_observed_entries_and_draws_at_test_and_natively_missing_entries():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(30, 5)).astype(np.float32)
    observed = rng.random(values.shape) > 0.3
    values[2, 1], observed[2, 1] = np.nan, False  # natively missing, in a row whose draws are not kept
    model = GaussianDraws(np.full(values.shape, 2.0), sd=0.5)
    keep_rows = np.arange(30) >= 10  # draws are kept for these rows only (impute: the test split)
    summary, draws = summarise_draws(model, values, observed, 400, seed=0, keep_rows=keep_rows)
    assert model.calls == [7, 7, 7, 7, 2]
    assert np.all(summary["imputed_sd"][observed] == 0)
    np.testing.assert_array_equal(summary["imputed_lower"][observed], values[observed])
    np.testing.assert_array_equal(summary["imputed_upper"][observed], values[observed])
    rows, cols = np.nonzero(~observed & keep_rows[:, None])
    np.testing.assert_array_equal(draws["rows"], rows)
    np.testing.assert_array_equal(draws["cols"], cols)
    assert draws["values"].shape == (len(rows), 400) and draws["values"].dtype == np.float32
    assert not draws["sampled"]
    drawn = ~observed & (keep_rows[:, None] | np.isnan(values))
    assert drawn[2, 1] and (~observed & ~drawn).sum() > 5
    hidden_sd = summary["imputed_sd"][drawn]
    assert np.all(np.abs(hidden_sd - 0.5) < 0.1)  # 400 draws of sd 0.5
    # the 90% interval of Normal(2, 0.5) is 2 +- 0.82
    assert np.all(np.abs(summary["imputed_lower"][drawn] - (2 - 0.82)) < 0.2)
    assert np.all(np.abs(summary["imputed_upper"][drawn] - (2 + 0.82)) < 0.2)
    # held-out entries of the other rows are values the user has: no draws, no spread
    for key in ("imputed_sd", "imputed_lower", "imputed_upper"):
        assert np.isnan(summary[key][~observed & ~drawn]).all(), key
    # the draws kept are the ones summarised: their sd is the layer's
    np.testing.assert_allclose(draws["values"].std(axis=1), summary["imputed_sd"][rows, cols], rtol=1e-4)


def test_draws_beyond_the_cap_are_a_seeded_random_subset():
    rng = np.random.default_rng(2)
    values = rng.normal(size=(200, 10)).astype(np.float32)
    observed = rng.random(values.shape) > 0.5
    model = GaussianDraws(np.zeros(values.shape), sd=1.0)
    _, all_draws = summarise_draws(model, values, observed, 5, seed=0)
    kept = [summarise_draws(GaussianDraws(np.zeros(values.shape), 1.0), values, observed, 5, seed=0, keep_fraction=0.25)[1]
            for _ in range(2)]
    assert kept[0]["sampled"] and not all_draws["sampled"]
    assert 0.15 * len(all_draws["rows"]) < len(kept[0]["rows"]) < 0.35 * len(all_draws["rows"])
    np.testing.assert_array_equal(kept[0]["rows"], kept[1]["rows"])  # same seed, same subset
    kept_entries = set(zip(kept[0]["rows"], kept[0]["cols"]))
    assert kept_entries <= set(zip(all_draws["rows"], all_draws["cols"]))


def test_summary_rejects_draws_of_the_wrong_shape():
    class Wrong(GaussianDraws):
        def impute_draws(self, values, observed, n_draws, generator, obs=None):
            return np.zeros((n_draws, len(values), values.shape[1] + 1))

    values, observed = np.zeros((4, 3), dtype=np.float32), np.zeros((4, 3), dtype=bool)
    with pytest.raises(ValueError, match="shape"):
        summarise_draws(Wrong(values, 1.0), values, observed, 5, seed=0)


def test_calibrated_draws_cover_their_nominal_level_and_overconfident_ones_do_not():
    rng = np.random.default_rng(1)
    truth = rng.normal(size=4000)
    calibrated = metrics.interval_calibration(truth, rng.normal(size=(4000, 200)))
    narrow = metrics.interval_calibration(truth, 0.3 * rng.normal(size=(4000, 200)))
    assert calibrated["coverage_50"] == pytest.approx(0.5, abs=0.04)
    assert calibrated["coverage_90"] == pytest.approx(0.9, abs=0.03)
    assert calibrated["calibration_error"] < 0.03 and narrow["calibration_error"] > 0.2
    assert narrow["coverage_90"] < 0.5 and narrow["interval_width_90"] < calibrated["interval_width_90"] / 2
    assert calibrated["interval_width_90"] == pytest.approx(2 * 1.645, rel=0.1)
    assert calibrated["curve"]["nominal"] == list(metrics.CALIBRATION_LEVELS)


def _imputed_with_draws(adata, sd: float, seed: int = 0):
    """imputed.h5ad whose draws scatter around the truth with the given sd (as a model would store them)."""
    truth = data.values(adata)
    observed = ~data.heldout_mask(adata) & np.isfinite(truth)
    centre = np.where(np.isfinite(truth), truth, 0.0) + np.random.default_rng(seed).normal(scale=0.2, size=truth.shape)
    model = GaussianDraws(centre, sd)
    summary, draws = summarise_draws(model, truth, observed, 50, seed, keep_rows=data.split_rows(adata, "test"))
    imputed = with_imputed(adata, np.where(observed, truth, centre))
    imputed.uns[impute_module.DRAWS_KEY] = draws
    imputed.layers.update(summary)
    return imputed


def test_evaluate_scores_calibration_on_heldout_test_entries(tmp_path):
    adata = make_expression()
    adata.write_h5ad(tmp_path / "masked.h5ad")
    samples = numeric_samples(data.values(make_expression(seed=3)), adata.var_names)
    samples.write_h5ad(tmp_path / "samples.h5ad")
    results = {}
    for name, sd in (("matched", 0.2), ("overconfident", 0.02)):
        (tmp_path / name).mkdir()
        _imputed_with_draws(adata, sd).write_h5ad(tmp_path / name / "imputed.h5ad")
        results[name] = evaluate(tmp_path / "masked.h5ad", tmp_path / name / "imputed.h5ad", tmp_path / "samples.h5ad",
                                 tmp_path / name / "scores.json", settings=ONE_DRAW)  # fmt: skip
    matched, overconfident = results["matched"]["calibration"], results["overconfident"]["calibration"]
    assert matched["n_scored"] == results["matched"]["imputation"]["n_scored"] and matched["n_draws"] == 50
    assert abs(matched["coverage_90"] - 0.9) < 0.08 and overconfident["coverage_90"] < 0.3
    assert matched["calibration_error"] < overconfident["calibration_error"]
    assert 0 < matched["n_scored_nonzero"] < matched["n_scored"] and abs(matched["coverage_90_nonzero"] - 0.9) < 0.1
    assert all_keys(results["matched"]) <= documented_keys()


def test_evaluate_refuses_draws_that_miss_heldout_entries_unless_marked_sampled(tmp_path):
    adata = make_expression()
    adata.write_h5ad(tmp_path / "masked.h5ad")
    imputed = _imputed_with_draws(adata, 0.2)
    draws = imputed.uns[impute_module.DRAWS_KEY]
    halved = {key: np.asarray(value)[::2] for key, value in draws.items() if key != "sampled"}
    imputed.uns[impute_module.DRAWS_KEY] = {**halved, "sampled": False}
    imputed.write_h5ad(tmp_path / "imputed.h5ad")
    with pytest.raises(ValueError, match="miss"):
        evaluate(tmp_path / "masked.h5ad", tmp_path / "imputed.h5ad", None, tmp_path / "scores.json", settings=ONE_DRAW)
    assert not (tmp_path / "scores.json").exists()
    # impute marks a capped subset "sampled": the entries present are scored
    imputed.uns[impute_module.DRAWS_KEY] = {**halved, "sampled": True}
    imputed.write_h5ad(tmp_path / "imputed.h5ad")
    scores = evaluate(tmp_path / "masked.h5ad", tmp_path / "imputed.h5ad", None, tmp_path / "scores.json", settings=ONE_DRAW)
    rows, cols = halved["rows"], halved["cols"]
    heldout_there = data.heldout_mask(adata)[rows, cols] & np.isfinite(data.values(adata)[rows, cols])
    assert scores["calibration"]["n_scored"] == heldout_there.sum() < scores["imputation"]["n_scored"]
