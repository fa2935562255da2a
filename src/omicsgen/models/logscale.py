"""Which features a Gaussian model should fit on a log scale, and where that scale starts.

A Gaussian on X's own scale fits a heavy-tailed positive measurement badly: a speech table's
energies (median 26, 90th percentile 3,970, max 45,879), a QSAR table's concentrations or a
clinical table's bilirubin get samples with negative values and a symmetric spread, which a
classifier tells from real rows at once. Such a feature is modelled as t = log(x + shift)
instead, and its fills and samples are mapped back.

Only features of values >= 0, and the log is anchored at 0, not at the train minimum: a log scale
is for measurements with a true zero that span orders of magnitude. Log-expression values
(microarrays, a time course's log2 levels) are already logs: anchored at their minimum, a log
of them stretched the low end and made the VAE's fills 2-3% worse (tissue_expr, nci60). The
shift, and whether to log at all, follow the normal probability-plot correlation (Filliben 1975)
of the train values: a log must bring them much closer to a Gaussian. Skewness alone is fooled
by a spike at the minimum (an assay's detection floor of 4 beside a few 5-7): a log anchored
there put the spike far below the rest, and fills of such a feature came back 20-50x too large.

A measured feature that stays far from a Gaussian on its chosen scale (two humps, a negative
heavy tail, a spike beside a hump: a speech table's entropy coefficients from -5e6 to 16) is fit
on normal scores instead: its train quantiles mapped onto a standard normal's, and samples and
fills mapped back through the train quantiles, so they stay in the train range (the margins of
a Gaussian copula). The mapping is piecewise linear between N_KNOTS quantiles; a run of equal
values (a spike) maps to its middle quantile, and back.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from torch import nn

LOG = logging.getLogger(__name__)
# A feature is considered when its train skewness exceeds this (a lognormal of sd 0.5 has 1.75)
SKEW_MIN = 1.0
# and it has at least this many observed train values and more distinct values than generate's
# levels allow (a 0 / 1 code or a grade is not a measurement to log).
MIN_VALUES = 20
MIN_DISTINCT = 11
# Shifts tried, as multiples of the feature's train median (log(x + c)): small c stretches the low
# end, large c approaches the identity; and c = 0 (log x itself) when every value is above 0.
SHIFT_FACTORS = (1e-2, 1e-1, 1.0)
# The log is used when it cuts the distance from a Gaussian (1 - probability-plot correlation)
# to at most this share of X's own.
GAIN_NEEDED = 0.5
# A measured feature still this far from a Gaussian on its chosen scale (log or its own; Filliben's
# 5% critical value at 20 values) is fit on normal scores instead: each train value's quantile
# mapped onto a standard normal's, and back through the train quantiles (a Gaussian copula's
# margins). A speech table's entropies and energy coefficients (-5e6 to 16, spikes, two humps):
# the VAE's samples were told from real rows at AUC 1.00; on normal scores 0.63 (bench/figures.md).
NORMAL_SCORES_ABOVE = 0.05
# Quantile knots kept per such feature (the train values themselves when there are fewer).
N_KNOTS = 256


def skewness(values: np.ndarray) -> np.ndarray:
    """Each column's sample skewness, NaN entries ignored (NaN for a constant column)."""
    mean = np.nanmean(values, 0)
    centred = values - mean
    var = np.nanmean(centred**2, 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.nanmean(centred**3, 0) / var**1.5


def distinct_counts(values: np.ndarray) -> np.ndarray:
    """Distinct non-NaN values of each column (one sort, no per-column loop)."""
    ordered = np.sort(values, 0)  # NaN last
    steps = (np.diff(ordered, axis=0) > 0).sum(0)
    return np.where(np.isnan(ordered[0]), 0, steps + 1)


def normality(values: np.ndarray) -> np.ndarray:
    """1 - the normal probability-plot correlation of each column's non-NaN values (0 = exactly
    Gaussian quantiles). Columns are grouped by their number of values, one sort per group."""
    from scipy.special import ndtri  # here: train alone calls this, and impute / generate import this module

    out = np.ones(values.shape[1])
    counts = (~np.isnan(values)).sum(0)
    ordered = np.sort(values, 0)
    for n in np.unique(counts):
        if n < 3:
            continue
        cols = counts == n
        block = ordered[:n, cols]
        quantiles = ndtri((np.arange(1, n + 1) - 0.375) / (n + 0.25))[:, None]
        centred = block - block.mean(0)
        with np.errstate(invalid="ignore", divide="ignore"):
            r = (centred * quantiles).sum(0) / np.sqrt((centred**2).sum(0) * (quantiles**2).sum())
        out[cols] = np.where(np.isfinite(r), 1 - r, 1.0)
    return out


def fit_log_scale(x: np.ndarray, observed: np.ndarray) -> tuple[np.ndarray, ...]:
    """(use, offset, floor, top) per feature from the observed train entries: `use` where a
    right-skewed feature of values >= 0 has a log (over the shifts) at most GAIN_NEEDED as far
    from a Gaussian as X itself. The model then reads log(max(x - offset, floor)) (offset = minus
    the shift; floor = half the lowest train value's: a value below the train range stays finite,
    at its low end); `top` is the log of the train maximum, above which nothing is mapped back (an
    exponential extrapolates wildly)."""
    values = np.where(observed, x, np.nan).astype(np.float64)
    n_genes = values.shape[1]
    use = np.zeros(n_genes, dtype=bool)
    offset, floor, top = np.zeros(n_genes), np.zeros(n_genes), np.zeros(n_genes)
    if not len(values):
        return use, offset, floor, top
    with warnings.catch_warnings():  # columns never observed: "Mean of empty slice", "All-NaN slice"
        warnings.simplefilter("ignore", RuntimeWarning)
        candidates = ((observed.sum(0) >= MIN_VALUES) & (skewness(values) > SKEW_MIN) & (np.nanmin(values, 0) >= 0)
                      & (distinct_counts(values) >= MIN_DISTINCT))
        if not candidates.any():
            return use, offset, floor, top
        cols = np.flatnonzero(candidates)
        part = values[:, cols]
        low = np.nanmin(part, 0)
        typical = np.nanmedian(part, 0)
        typical = np.where(typical > 0, typical, np.nanmean(part, 0))  # mostly zeros
        shifts = np.stack([typical * factor for factor in SHIFT_FACTORS] + [np.where(low > 0, 0.0, typical * 1e-3)])
        distances = np.stack([normality(np.log(part + shift)) for shift in shifts])
        best = np.argmin(distances, 0)
        shift = shifts[best, np.arange(len(cols))]
        chosen = distances[best, np.arange(len(cols))] <= GAIN_NEEDED * normality(part)
        highest = np.nanmax(part, 0)
    use[cols] = chosen
    offset[cols] = np.where(chosen, -shift, 0.0)
    floor[cols] = np.where(chosen, (low + shift) / 2, 0.0)
    top[cols] = np.where(chosen, np.log(highest + shift), 0.0)
    return use, offset, floor, top


def fit_normal_scores(x: np.ndarray, observed: np.ndarray, use_log: np.ndarray, offset: np.ndarray,
                      floor: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(columns, knots_x, knots_t): the measured features still over NORMAL_SCORES_ABOVE from a
    Gaussian on their chosen scale, and per such feature N_KNOTS train quantiles on X's scale
    (Hazen plotting positions, so the ends are the train minimum and maximum) and the standard
    normal's quantiles at the same probabilities."""
    from scipy.special import ndtri

    values = np.where(observed, x, np.nan).astype(np.float64)
    scaled = values.copy()
    scaled[:, use_log] = np.log(np.maximum(values[:, use_log] - offset[use_log], floor[use_log]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        measured = (observed.sum(0) >= MIN_VALUES) & (distinct_counts(values) >= MIN_DISTINCT)
    columns = np.flatnonzero(measured & (normality(scaled) > NORMAL_SCORES_ABOVE))
    knots_x = np.zeros((len(columns), N_KNOTS))
    knots_t = np.zeros((len(columns), N_KNOTS))
    for i, j in enumerate(columns):
        column = values[:, j][observed[:, j]]
        n = len(column)
        probabilities = np.linspace(0.5 / n, 1 - 0.5 / n, N_KNOTS)
        knots_x[i] = np.quantile(column, probabilities, method="hazen")
        knots_t[i] = ndtri(probabilities)
    return columns, knots_x, knots_t


def _interpolate(points: torch.Tensor, knots_from: torch.Tensor, knots_to: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear map of `points` (rows x columns) from each column's `knots_from` (sorted,
    ties allowed) onto its `knots_to`, flat past the ends. A point on a run of tied knots (a
    spike of equal values) maps to the middle of the run's targets, as a mid-rank does."""
    by_column = points.T.contiguous().to(knots_from.dtype)
    above = torch.searchsorted(knots_from, by_column, right=True)  # knots <= point
    below = torch.searchsorted(knots_from, by_column, right=False)  # knots < point
    last = knots_from.shape[1] - 1
    lo, hi = (below - 1).clamp(0, last), below.clamp(0, last)
    x0, x1 = knots_from.gather(1, lo), knots_from.gather(1, hi)
    y0, y1 = knots_to.gather(1, lo), knots_to.gather(1, hi)
    share = torch.where(x1 > x0, (by_column - x0) / (x1 - x0).clamp_min(1e-300), torch.zeros_like(by_column))
    between = y0 + share.clamp(0, 1) * (y1 - y0)
    on_knots = knots_to.gather(1, ((below + above - 1) // 2).clamp(0, last))  # the run's middle knot
    return torch.where(above > below, on_knots, between).T.to(points.dtype)


class LogScale(nn.Module):
    """The per-feature scale a Gaussian model fits in: a log (`fit_log_scale`), or normal scores
    (`fit_normal_scores`) for features no log brings near a Gaussian. `warp` maps X's scale to the
    model's, `unwarp` maps back. Identity until `fit` chooses a feature, and for checkpoints made
    before it existed (before normal scores: none)."""

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("use", torch.zeros(n_features, dtype=torch.bool))
        for name in ("offset", "floor", "top"):
            self.register_buffer(name, torch.zeros(n_features))
        # The normal-score features and their knots: sized by `fit` (few features need them)
        self.register_buffer("ranked", torch.zeros(0, dtype=torch.long))
        self.register_buffer("knots_x", torch.zeros(0, N_KNOTS))
        self.register_buffer("knots_t", torch.zeros(0, N_KNOTS))
        self._columns = None  # indices of `use`, kept: training warps every batch

    def fit(self, x: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """Choose the features and their scales from the observed train entries; returns which
        features are on a log scale, and the normal-score ones (`ranked`) are in `self.ranked`."""
        use, offset, floor, top = fit_log_scale(x, observed)
        ranked, knots_x, knots_t = fit_normal_scores(x, observed, use, offset, floor)
        use[ranked] = False  # a rank does not depend on a log taken first
        for name, values in zip(("use", "offset", "floor", "top"), (use, offset, floor, top)):
            getattr(self, name).copy_(torch.from_numpy(values))
        device = self.use.device
        self.ranked = torch.from_numpy(ranked).long().to(device)
        self.knots_x = torch.from_numpy(knots_x).float().to(device)
        self.knots_t = torch.from_numpy(knots_t).float().to(device)
        self._columns = None
        return use

    def columns(self) -> torch.Tensor:
        if self._columns is None or self._columns.device != self.use.device:
            self._columns = torch.nonzero(self.use).flatten()
        return self._columns

    @property
    def active(self) -> bool:
        return len(self.columns()) > 0 or len(self.ranked) > 0

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        """Only the chosen columns are computed (a table may log 1 of 256): a whole-width
        `where` made the flu VAE's training 36% slower."""
        cols, last = self.columns(), x.dim() - 1
        if len(cols):
            logged = torch.log(torch.maximum(x[..., cols] - self.offset[cols], self.floor[cols]))
            x = x.index_copy(last, cols, logged.to(x.dtype))
        if len(self.ranked):
            x = x.index_copy(last, self.ranked, _interpolate(x[..., self.ranked], self.knots_x, self.knots_t))
        return x

    def unwarp(self, t: torch.Tensor) -> torch.Tensor:
        """Back to X's scale, no further than the train range's far end (`top`; normal scores:
        the train range's ends). A fill maps back its mean on the log scale, the median: the mean
        exp(t + var / 2) under the learned variance gave worse fills on all three tables tried
        with the first, minimum-anchored version of this scale (test RMSE: hepatic 2.14 against
        0.96, pbc 311 against 268)."""
        cols, last = self.columns(), t.dim() - 1
        if len(cols):
            back = torch.exp(torch.minimum(t[..., cols], self.top[cols])) + self.offset[cols]
            t = t.index_copy(last, cols, back.to(t.dtype))
        if len(self.ranked):
            t = t.index_copy(last, self.ranked, _interpolate(t[..., self.ranked], self.knots_t, self.knots_x))
        return t

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buffer in self.named_buffers():  # checkpoints from before: the identity
            state_dict.setdefault(prefix + name, buffer.clone())
        for name in ("ranked", "knots_x", "knots_t"):  # sized by the fit that made the checkpoint
            setattr(self, name, torch.empty_like(state_dict[prefix + name], device=self.use.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._columns = None


def choose_for(scales: list[LogScale], train: dict[str, torch.Tensor], names: list[str], family: str,
               log_normalised: bool) -> str:
    """Fit the first of a model's `scales` (one per ensemble member) on the train tensors, copy
    it to the others, and log the decision with its setting; returns what was chosen."""
    setting = f"setting: the {family}'s log_skewed: false"
    if log_normalised:  # log1p of counts is already the log scale a count gene needs
        LOG.info("decision: log_skewed = no feature (the input is log-normalised counts, already on a log scale; %s)", setting)
        return "no feature (log-normalised counts)"
    use = scales[0].fit(train["x"].numpy(), train["observed"].numpy())
    for other in scales[1:]:
        other.load_state_dict(scales[0].state_dict())
    chosen = np.flatnonzero(use)
    listed = "" if not len(chosen) else ": " + ", ".join(names[i] for i in chosen[:10]) + (" ..." if len(chosen) > 10 else "")
    ranked = scales[0].ranked.cpu().numpy()
    on_scores = "" if not len(ranked) else (
        f"; {len(ranked)} on normal scores: " + ", ".join(names[i] for i in ranked[:10]) + (" ..." if len(ranked) > 10 else ""))
    chosen_text = f"{len(chosen)} of {len(use)} features on a log scale{listed}{on_scores}"
    LOG.info("decision: log_skewed = %s (a log where a right-skewed feature of values >= 0 comes to half its train "
             "values' distance from a Gaussian; normal scores where a feature stays over %.2f from a Gaussian: its "
             "train quantiles mapped onto a standard normal's; %s)", chosen_text, NORMAL_SCORES_ABOVE, setting)
    return chosen_text
