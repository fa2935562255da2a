"""Recurrent forecasters for time courses (families `gru` and `lstm` on time-course data): predict
each time point of a series from the ones before it."""

from __future__ import annotations

from typing import ClassVar

import anndata as ad
import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.nn import functional as F

from .base import GenerativeModel, inference, keep_observed, observed_mask, split_rows


class RecurrentForecaster(GenerativeModel):
    """One recurrent step (GRU or LSTM cell, fixed by the subclass) per time point. Input: the expression vector (unobserved -> 0), its observed
    mask, the time since the previous point and the time to the next one (points are irregular,
    so how far ahead to predict must be an input). Output: a rate of change per gene; the
    prediction is the current state (observed values, else the previous prediction) plus
    rate x time step, so an untrained model carries the last value forward and a trend is
    linear in elapsed time. Loss: MSE over the observed entries of the predicted points.

    Buffers hold what sampling and imputation need without the data: the per-gene train mean
    (the prediction for a series' first point), the train series' first points and time grids
    (starts for sampling) and the per-gene residual sd (noise for sampling, set by `calibrate`).
    """

    cell_type: ClassVar[str]
    modalities = ("timecourse",)
    rows_independent = False  # a row is imputed from the earlier points of its series
    shape_hparams = ("n_genes",)
    defaults = {"hidden_dim": 64, "learning_rate": 1e-3}

    def __init__(self, n_genes, n_start_series, max_steps, time_scale, hidden_dim, learning_rate):
        super().__init__()
        self.save_hyperparameters()
        self.cell = {"gru": nn.GRUCell, "lstm": nn.LSTMCell}[self.cell_type](2 * n_genes + 2, hidden_dim)
        self.rate = nn.Linear(hidden_dim, n_genes)
        nn.init.zeros_(self.rate.weight)
        nn.init.zeros_(self.rate.bias)
        # Per-gene pull toward the train mean per unit time, softplus(.) >= 0; starts near 0.
        self.reversion = nn.Parameter(torch.full((n_genes,), -4.0))
        self.register_buffer("gene_mean", torch.zeros(n_genes))
        self.register_buffer("residual_sd", torch.zeros(n_genes))
        self.register_buffer("start_points", torch.zeros(n_start_series, n_genes))
        self.register_buffer("start_times", torch.zeros(n_start_series, max_steps))
        self.register_buffer("start_lengths", torch.ones(n_start_series, dtype=torch.int64))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["hyper_parameters"]["modality"] = "timecourse"

    @staticmethod
    def data_sizes(adata: ad.AnnData) -> dict:
        train_obs = adata.obs[split_rows(adata, "train")]
        times = [train_obs["time"].to_numpy(float)[rows] for rows in series_rows(train_obs)]
        gaps = np.concatenate([np.diff(t) for t in times]) if times else np.zeros(0)
        gaps = gaps[gaps > 0]
        return {
            "n_genes": int(adata.n_vars),
            "n_start_series": len(times),
            "max_steps": max((len(t) for t in times), default=1),
            # Time steps are fed in units of the typical gap, whatever unit the data uses.
            "time_scale": float(np.median(gaps)) if gaps.size else 1.0,
        }

    @staticmethod
    def tensors(adata: ad.AnnData, split) -> dict[str, torch.Tensor]:
        rows = split_rows(adata, split)
        observed = observed_mask(adata)[rows]
        values = np.asarray(adata.X, dtype=np.float32)[rows]
        return pad_series(values, observed, adata.obs[rows])[0]

    def init_from_data(self, adata: ad.AnnData) -> None:
        train = self.tensors(adata, "train")
        x, observed = train["x"], train["observed"]
        gene_mean = (x * observed).sum((0, 1)) / observed.sum((0, 1)).clamp_min(1)
        first = torch.where(observed[:, 0], x[:, 0], gene_mean)
        with torch.no_grad():
            self.gene_mean.copy_(gene_mean)
            self.start_points.copy_(first)
            self.start_times.copy_(train["time"])
            self.start_lengths.copy_(train["lengths"])

    # ---- network ------------------------------------------------------------------------
    def step(self, hidden, state, observed, level, time_since, time_to):
        """One GRU step from the current state (observed values, else predictions) to the
        prediction of the next point; returns (hidden, prediction)."""
        scale = self.hparams.time_scale
        since, to = time_since[:, None] / scale, time_to[:, None] / scale
        hidden = self.cell(torch.cat([state * observed, observed.float(), since, to], 1), hidden)
        output = hidden[0] if isinstance(hidden, tuple) else hidden  # LSTM cells carry (h, c)
        # Exact decay toward the series' own level (Ornstein-Uhlenbeck drift): stable for any gap.
        pull = 1 - torch.exp(-F.softplus(self.reversion) * to)
        return hidden, state + pull * (level - state) + self.rate(output) * to

    def initial_hidden(self, n_series: int):
        zeros = torch.zeros(n_series, self.hparams.hidden_dim, device=self.device)
        return (zeros, zeros.clone()) if self.cell_type == "lstm" else zeros

    def series_level(self, total, count):
        """Mean of a series' values seen so far per gene; the train mean before any."""
        return torch.where(count > 0, total / count.clamp_min(1), self.gene_mean)

    def one_step_predictions(self, x, observed, time) -> torch.Tensor:
        """Prediction of every point from the points before it (the first: the gene means)."""
        n_series, n_steps, _ = x.shape
        hidden = self.initial_hidden(n_series)
        prediction = self.gene_mean.expand(n_series, -1)
        predictions, total, count = [prediction], torch.zeros_like(x[:, 0]), torch.zeros_like(x[:, 0])
        for t in range(n_steps - 1):
            total, count = total + x[:, t] * observed[:, t], count + observed[:, t]
            time_since = time[:, t] - time[:, t - 1] if t else torch.zeros_like(time[:, 0])
            state = torch.where(observed[:, t], x[:, t], prediction)
            level = self.series_level(total, count)
            hidden, prediction = self.step(hidden, state, observed[:, t], level, time_since, time[:, t + 1] - time[:, t])
            predictions.append(prediction)
        return torch.stack(predictions, 1)

    def loss(self, batch):
        predicted = self.one_step_predictions(batch["x"], batch["observed"], batch["time"])
        observed = batch["observed"][:, 1:]
        squared_error = (predicted[:, 1:] - batch["x"][:, 1:]) ** 2
        return (squared_error * observed).sum() / observed.sum().clamp_min(1)

    @torch.no_grad()
    def calibrate(self, tensors: dict[str, torch.Tensor]) -> None:
        """Residual sd per gene over the given series; genes never observed get the average sd."""
        tensors = {name: t.to(self.device) for name, t in tensors.items()}
        predicted = self.one_step_predictions(tensors["x"], tensors["observed"], tensors["time"])
        observed = tensors["observed"][:, 1:].float()
        squared_error = ((predicted[:, 1:] - tensors["x"][:, 1:]) ** 2 * observed).sum((0, 1))
        counts = observed.sum((0, 1))
        pooled = squared_error.sum() / counts.sum().clamp_min(1)
        self.residual_sd.copy_(torch.where(counts > 0, squared_error / counts.clamp_min(1), pooled).sqrt())

    # ---- use ----------------------------------------------------------------------------
    @inference
    def forecast(self, history: np.ndarray, times=None, next_time: float | None = None) -> np.ndarray:
        """The next point of one series from its points so far (T x genes, NaN = unobserved).

        `times` default to a regular grid with the training data's typical gap, and
        `next_time` to the last time plus that gap.
        """
        scale = self.hparams.time_scale
        times = np.arange(len(history)) * scale if times is None else np.asarray(times, dtype=np.float64)
        next_time = times[-1] + scale if next_time is None else next_time
        x = np.vstack([history, np.full((1, history.shape[1]), np.nan)]).astype(np.float32)
        time = torch.tensor(np.append(times, next_time), dtype=torch.float32, device=self.device)[None]
        observed = torch.from_numpy(~np.isnan(x)).to(self.device)[None]
        values = torch.from_numpy(np.nan_to_num(x)).to(self.device)[None]
        return self.one_step_predictions(values, observed, time)[0, -1].cpu().numpy()

    @inference
    def impute(self, values: np.ndarray, observed: np.ndarray, obs: pd.DataFrame = None) -> np.ndarray:
        """Unobserved entries <- the one-step-ahead prediction from the series' earlier points
        (for a series' first point: the train mean). `obs` must hold `series` and `time`."""
        if obs is None:
            raise ValueError(f"the {self.family} family imputes along each series: pass obs with 'series' and 'time'")
        series, rows = pad_series(values, observed, obs)
        series = {name: t.to(self.device) for name, t in series.items()}
        predicted_padded = self.one_step_predictions(series["x"], series["observed"], series["time"]).cpu().numpy()
        predicted = np.empty_like(values, dtype=np.float32)
        predicted[rows[rows >= 0]] = predicted_padded[rows >= 0]
        return keep_observed(values, observed, predicted)

    @inference
    def sample(self, n: int, generator: torch.Generator) -> tuple[np.ndarray, pd.DataFrame]:
        """n synthetic series, each rolled out from a train series' first point and time grid,
        with residual noise on every point (the first too) fed back into the rollout.

        Returns (X: float32, rows = series then time, obs: DataFrame with `series` =
        "sample_1".."sample_n" and `time`), ready to become an AnnData.
        """
        picks = torch.randint(len(self.start_points), (n,), generator=generator)
        times, lengths = self.start_times[picks], self.start_lengths[picks]
        noise = torch.randn(n, times.shape[1], self.hparams.n_genes, generator=generator).to(self.device)
        noise = noise * self.residual_sd
        point = self.start_points[picks] + noise[:, 0]
        points, hidden = [point], self.initial_hidden(n)
        all_observed, total = torch.ones_like(point, dtype=torch.bool), torch.zeros_like(point)
        for t in range(times.shape[1] - 1):
            total = total + point
            time_since = times[:, t] - times[:, t - 1] if t else torch.zeros_like(times[:, 0])
            level = total / (t + 1)
            hidden, prediction = self.step(hidden, point, all_observed, level, time_since, times[:, t + 1] - times[:, t])
            point = prediction + noise[:, t + 1]
            points.append(point)
        return _flatten_series(torch.stack(points, 1).cpu().numpy(), times.cpu().numpy(), lengths.cpu().numpy())


class GRUForecaster(RecurrentForecaster):
    family = "gru"
    cell_type = "gru"


class LSTMForecaster(RecurrentForecaster):
    family = "lstm"
    cell_type = "lstm"


def pad_series(values: np.ndarray, observed: np.ndarray, obs: pd.DataFrame) -> tuple[dict, np.ndarray]:
    """Rows -> one padded block per series, ordered by time.

    Returns tensors `x` (series x steps x genes, unobserved and padding -> 0), `observed`
    (False on padding), `time` (padding repeats the last time, so its steps are 0 long) and
    `lengths`; plus the row of `values` behind each (series, step), -1 on padding.
    """
    groups = series_rows(obs)
    n_steps = max((len(group) for group in groups), default=0)
    rows = np.full((len(groups), n_steps), -1, dtype=np.int64)
    for i, group in enumerate(groups):
        rows[i, : len(group)] = group
    lengths = np.array([len(group) for group in groups], dtype=np.int64)
    # Padding points at the series' last row, then is masked out / given a zero time step.
    last_row = np.array([group[-1] for group in groups], dtype=np.int64)
    source = np.where(rows >= 0, rows, last_row[:, None]) if groups else rows
    mask = observed[source] & (rows >= 0)[..., None]
    tensors = {
        "x": torch.from_numpy(np.where(mask, values[source], 0.0).astype(np.float32)),
        "observed": torch.from_numpy(mask),
        "time": torch.from_numpy(obs["time"].to_numpy(np.float32)[source]),
        "lengths": torch.from_numpy(lengths),
    }
    return tensors, rows


def series_rows(obs: pd.DataFrame) -> list[np.ndarray]:
    """Row positions of each series (in order of first appearance), sorted by time."""
    table = pd.DataFrame({"series": obs["series"].astype(str).to_numpy(), "time": obs["time"].to_numpy(float)})
    groups = table.groupby("series", sort=False)
    return [group.sort_values("time", kind="stable").index.to_numpy() for _, group in groups]


def _flatten_series(points: np.ndarray, times: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, pd.DataFrame]:
    keep = np.arange(points.shape[1])[None, :] < lengths[:, None]
    series = np.repeat([f"sample_{i + 1}" for i in range(len(points))], keep.sum(1))
    obs = pd.DataFrame({"series": series, "time": times[keep].astype(float)})
    return points[keep].astype(np.float32), obs
