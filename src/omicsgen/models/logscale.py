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


class LogScale(nn.Module):
    """The per-feature log scale a Gaussian model fits in (`fit_log_scale`): `warp` maps X's
    scale to the model's, `unwarp` maps back. Identity until `fit` chooses a feature, and for
    checkpoints made before it existed."""

    def __init__(self, n_features: int):
        super().__init__()
        self.register_buffer("use", torch.zeros(n_features, dtype=torch.bool))
        for name in ("offset", "floor", "top"):
            self.register_buffer(name, torch.zeros(n_features))
        self._columns = None  # indices of `use`, kept: training warps every batch

    def fit(self, x: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """Choose the features and their scales from the observed train entries; returns `use`."""
        for name, values in zip(("use", "offset", "floor", "top"), fit_log_scale(x, observed)):
            getattr(self, name).copy_(torch.from_numpy(values))
        self._columns = None
        return self.use.cpu().numpy()

    def columns(self) -> torch.Tensor:
        if self._columns is None or self._columns.device != self.use.device:
            self._columns = torch.nonzero(self.use).flatten()
        return self._columns

    @property
    def active(self) -> bool:
        return len(self.columns()) > 0

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        """Only the logged columns are computed (a table may log 1 of 256): a whole-width
        `where` made the flu VAE's training 36% slower."""
        cols = self.columns()
        if not len(cols):
            return x
        logged = torch.log(torch.maximum(x[..., cols] - self.offset[cols], self.floor[cols]))
        return x.index_copy(x.dim() - 1, cols, logged.to(x.dtype))

    def unwarp(self, t: torch.Tensor) -> torch.Tensor:
        """Back to X's scale, no further than the train range's far end (`top`). A fill maps back
        its mean on the log scale, the median: the mean exp(t + var / 2) under the learned
        variance gave worse fills on all three tables tried with the first, minimum-anchored
        version of this scale (test RMSE: hepatic 2.14 against 0.96, pbc 311 against 268)."""
        cols = self.columns()
        if not len(cols):
            return t
        back = torch.exp(torch.minimum(t[..., cols], self.top[cols])) + self.offset[cols]
        return t.index_copy(t.dim() - 1, cols, back.to(t.dtype))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name, buffer in self.named_buffers():  # checkpoints from before: the identity
            state_dict.setdefault(prefix + name, buffer.clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._columns = None


# What preprocess made of each input scale (io.expression's `values`) that is a log scale already.
LOGGED_BY_PREPROCESS = {"counts": "log-normalised counts", "intensities": "log2 intensities"}


def choose_for(scales: list[LogScale], train: dict[str, torch.Tensor], names: list[str], family: str,
               logged_input: str | None) -> str:
    """Fit the first of a model's `scales` (one per ensemble member) on the train tensors, copy
    it to the others, and log the decision with its setting; returns what was chosen."""
    setting = f"setting: the {family}'s log_skewed: false"
    if logged_input:  # preprocess's log1p of counts (log2 of intensities) is already the log scale a gene needs
        LOG.info("decision: log_skewed = no feature (the input is %s, already on a log scale; %s)", logged_input, setting)
        return f"no feature ({logged_input})"
    use = scales[0].fit(train["x"].numpy(), train["observed"].numpy())
    for other in scales[1:]:
        other.load_state_dict(scales[0].state_dict())
    chosen = np.flatnonzero(use)
    listed = "" if not len(chosen) else ": " + ", ".join(names[i] for i in chosen[:10]) + (" ..." if len(chosen) > 10 else "")
    LOG.info("decision: log_skewed = %d of %d features fit on a log scale (values >= 0, right-skewed, and the log "
             "halves their train values' distance from a Gaussian%s; %s)", len(chosen), len(use), listed, setting)
    return f"{len(chosen)} of {len(use)} features on a log scale{listed}"
