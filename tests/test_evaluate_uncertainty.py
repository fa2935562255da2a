"""Multiple imputation: summarising a model's draws (impute.summarise_draws) and scoring their
calibration on held-out entries (evaluate's `calibration` section)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from omicsgen import impute as impute_module
from omicsgen.evaluate import data, evaluate, metrics
from test_evaluate import all_keys, documented_keys, make_expression, numeric_samples, with_imputed


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


def test_summary_keeps_observed_entries_and_stores_draws_only_where_unobserved(monkeypatch):
    monkeypatch.setattr(impute_module, "INFERENCE_CHUNK", 7)  # several blocks of rows
    rng = np.random.default_rng(0)
    values = rng.normal(size=(30, 5)).astype(np.float32)
    observed = rng.random(values.shape) > 0.3
    model = GaussianDraws(np.full(values.shape, 2.0), sd=0.5)
    summary = impute_module.summarise_draws(model, values, observed, 400, torch.Generator().manual_seed(0))
    assert model.calls == [7, 7, 7, 7, 2]
    assert np.all(summary["imputed_sd"][observed] == 0)
    np.testing.assert_array_equal(summary["imputed_lower"][observed], values[observed])
    np.testing.assert_array_equal(summary["imputed_upper"][observed], values[observed])
    draws = summary["draws"]
    rows, cols = np.nonzero(~observed)
    np.testing.assert_array_equal(draws["rows"], rows)
    np.testing.assert_array_equal(draws["cols"], cols)
    assert draws["values"].shape == (len(rows), 400) and draws["values"].dtype == np.float32
    hidden_sd = summary["imputed_sd"][~observed]
    assert np.all(np.abs(hidden_sd - 0.5) < 0.1)  # 400 draws of sd 0.5
    # the 90% interval of Normal(2, 0.5) is 2 +- 0.82
    assert np.all(np.abs(summary["imputed_lower"][~observed] - (2 - 0.82)) < 0.2)
    assert np.all(np.abs(summary["imputed_upper"][~observed] - (2 + 0.82)) < 0.2)


def test_summary_rejects_draws_of_the_wrong_shape():
    class Wrong(GaussianDraws):
        def impute_draws(self, values, observed, n_draws, generator, obs=None):
            return np.zeros((n_draws, len(values), values.shape[1] + 1))

    values, observed = np.zeros((4, 3), dtype=np.float32), np.zeros((4, 3), dtype=bool)
    with pytest.raises(ValueError, match="shape"):
        impute_module.summarise_draws(Wrong(values, 1.0), values, observed, 5, torch.Generator())


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
    summary = impute_module.summarise_draws(model, truth, observed, 50, torch.Generator().manual_seed(seed))
    imputed = with_imputed(adata, np.where(observed, truth, centre))
    imputed.uns[impute_module.DRAWS_KEY] = summary.pop("draws")
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
                                 tmp_path / name / "scores.json")  # fmt: skip
    matched, overconfident = results["matched"]["calibration"], results["overconfident"]["calibration"]
    assert matched["n_scored"] == results["matched"]["imputation"]["n_scored"] and matched["n_draws"] == 50
    assert abs(matched["coverage_90"] - 0.9) < 0.08 and overconfident["coverage_90"] < 0.3
    assert matched["calibration_error"] < overconfident["calibration_error"]
    assert 0 < matched["n_scored_nonzero"] < matched["n_scored"] and abs(matched["coverage_90_nonzero"] - 0.9) < 0.1
    assert all_keys(results["matched"]) <= documented_keys()


def test_evaluate_refuses_draws_that_miss_heldout_entries(tmp_path):
    adata = make_expression()
    adata.write_h5ad(tmp_path / "masked.h5ad")
    imputed = _imputed_with_draws(adata, 0.2)
    draws = imputed.uns[impute_module.DRAWS_KEY]
    imputed.uns[impute_module.DRAWS_KEY] = {key: np.asarray(value)[::2] for key, value in draws.items()}
    imputed.write_h5ad(tmp_path / "imputed.h5ad")
    with pytest.raises(ValueError, match="miss"):
        evaluate(tmp_path / "masked.h5ad", tmp_path / "imputed.h5ad", None, tmp_path / "scores.json")
    assert not (tmp_path / "scores.json").exists()
