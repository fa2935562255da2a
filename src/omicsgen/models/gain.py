"""GAIN (Yoon, Jordon & van der Schaar 2018): adversarial imputation for expression and time-course rows.

Data are min-max scaled per gene to [0, 1] (train rows' observed entries) inside the model. The
generator sees a row with its unobserved entries replaced by small uniform noise plus the mask,
and fills the row; the discriminator sees the filled row plus a *hint* (the mask for a random
`hint_rate` share of the entries, 0.5 elsewhere) and guesses, entry by entry, which were observed.
The generator loss is the adversarial term on the unobserved entries plus `alpha` times the
reconstruction MSE of the observed ones. Manual optimisation: one discriminator step, then one
generator step, per batch.

Losses logged: `train_loss` is the generator's reconstruction MSE on observed entries (scaled);
`val_loss` is the imputation MSE (scaled) on a fixed random 20% of the val rows' observed
entries (the same entries every epoch), hidden from the generator: what early stopping should watch.

GAIN is an imputer, not a generative model: it has no distribution to draw whole rows from
(filling fully masked rows would only return the generator's response to noise), so `sample`
raises `Unsupported` and `omicsgen generate` reports it as a one-line error.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import torch
from torch import nn

from .base import (
    GenerativeModel,
    Unsupported,
    inference,
    keep_observed,
    row_chunks,
    stack_rows,
)
from .vae import VAE

VAL_HIDE = 0.2
VAL_HIDE_SEED = 20180
NOISE_SCALE = 0.01


def _net(n_genes: int, hidden_dim: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(2 * n_genes, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, hidden_dim), nn.ReLU(),
        nn.Linear(hidden_dim, n_genes), nn.Sigmoid(),
    )


class GAIN(GenerativeModel):
    family = "gain"
    modalities = ("expression", "timecourse")
    shape_hparams = ("n_genes",)
    defaults = {"hidden_dim": 128, "hint_rate": 0.9, "alpha": 100.0, "learning_rate": 1e-3}
    can_sample = False
    cannot_sample = "GAIN only imputes: it learns no distribution of whole rows; use vae, ae or wgan to generate"

    def __init__(self, n_genes, hidden_dim, hint_rate, alpha, learning_rate, target_sum=None):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.gradient_clip = None
        self.generator_net = _net(n_genes, hidden_dim)
        self.discriminator_net = _net(n_genes, hidden_dim)
        self.register_buffer("data_min", torch.zeros(n_genes))
        self.register_buffer("data_range", torch.ones(n_genes))

    data_sizes = staticmethod(VAE.data_sizes)

    tensors = staticmethod(VAE.observed_tensors)

    def init_from_data(self, adata: ad.AnnData) -> None:
        train = self.tensors(adata, "train")
        x, observed = train["x"], train["observed"]
        big = torch.tensor(torch.finfo(torch.float32).max)
        low = torch.where(observed, x, big).amin(0)
        high = torch.where(observed, x, -big).amax(0)
        seen = observed.any(0)
        low, high = torch.where(seen, low, 0.0), torch.where(seen, high, 1.0)
        with torch.no_grad():
            self.data_min.copy_(low)
            self.data_range.copy_((high - low).clamp_min(1e-6))

    # ---- networks -----------------------------------------------------------------------
    def scale(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.data_min) / self.data_range

    def generate(self, scaled: torch.Tensor, observed: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        m = observed.float()
        filled_in = m * scaled + (1 - m) * noise
        return self.generator_net(torch.cat([filled_in, m], dim=1))

    def losses(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        scaled, m = self.scale(batch["x"]), batch["observed"].float()
        noise = torch.rand_like(scaled) * NOISE_SCALE
        fake = self.generate(scaled, batch["observed"], noise)
        combined = m * scaled + (1 - m) * fake
        b = (torch.rand_like(m) < self.hparams.hint_rate).float()
        hint = b * m + 0.5 * (1 - b)
        d_prob = self.discriminator_net(torch.cat([combined.detach(), hint], dim=1))
        d_loss = -(m * torch.log(d_prob + 1e-8) + (1 - m) * torch.log(1 - d_prob + 1e-8)).mean()
        g_prob = self.discriminator_net(torch.cat([combined, hint], dim=1))
        adversarial = -((1 - m) * torch.log(g_prob + 1e-8)).mean()
        mse = ((m * (scaled - fake)) ** 2).sum() / m.sum().clamp_min(1)
        return d_loss, adversarial + self.hparams.alpha * mse, mse

    def training_step(self, batch, batch_idx):
        opt_g, opt_d = self.optimizers()
        d_loss, _, _ = self.losses(batch)
        self.manual_step(opt_d, d_loss)
        _, g_loss, mse = self.losses(batch)
        self.manual_step(opt_g, g_loss)
        self.add_to_epoch_loss("train_loss", mse, len(batch["x"]))

    def validation_step(self, batch, batch_idx):
        scaled, observed = self.scale(batch["x"]), batch["observed"]
        hide = observed & self.validation_hide(observed.shape, batch_idx, observed.device)
        fake = self.generate(scaled, observed & ~hide, torch.full_like(scaled, NOISE_SCALE / 2))
        mse = ((fake - scaled) ** 2 * hide).sum() / hide.sum().clamp_min(1)
        self.add_to_epoch_loss("val_loss", mse, len(batch["x"]))
        return mse

    @staticmethod
    def validation_hide(shape, batch_idx: int, device) -> torch.Tensor:
        """The val entries hidden from the generator: the same ones every epoch (val batches are
        not shuffled), so epochs are compared on one set of entries, not on fresh draws whose
        luck the best checkpoint would pick; its own generator leaves the training noise alone."""
        generator = torch.Generator(device=device).manual_seed(VAL_HIDE_SEED + batch_idx)
        return torch.rand(shape, generator=generator, device=device) < VAL_HIDE

    def configure_optimizers(self):
        return self.adam(self.generator_net.parameters()), self.adam(self.discriminator_net.parameters())

    # ---- use ----------------------------------------------------------------------------
    @inference
    def impute(self, values: np.ndarray, observed: np.ndarray, obs=None) -> np.ndarray:
        """The generator's fill (unobserved entries start at the noise's midpoint, so it is
        deterministic), mapped back from [0, 1] to X's scale."""
        parts = []
        for rows in row_chunks(len(values)):
            seen = torch.from_numpy(observed[rows]).to(self.device)
            x = torch.from_numpy(np.where(observed[rows], values[rows], 0.0).astype(np.float32)).to(self.device)
            scaled = self.scale(x)
            fake = self.generate(scaled, seen, torch.full_like(scaled, NOISE_SCALE / 2))
            parts.append(fake * self.data_range + self.data_min)
        return keep_observed(values, observed, stack_rows(parts, self.hparams.n_genes))

    def sample(self, n: int, generator: torch.Generator):
        raise Unsupported(self.cannot_sample)
