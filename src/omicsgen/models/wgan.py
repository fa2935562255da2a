"""WGAN-GP for expression rows (scGAN-like: MLP generator and critic, gradient penalty, n_critic).

Data are standardised per gene inside the model (train rows' observed entries). Missing and
held-out entries never reach the critic: it sees `(x * m, m)` for a real row, and a generated
row is masked with the mask of a real row from the same batch before the critic sees it, so
the generator is fit to the observed entries only (the AmbientGAN / MisGAN construction).

Manual optimisation: every batch updates the critic (Wasserstein loss + `gp_weight` times the
gradient penalty on random interpolates); every `n_critic`-th batch also updates the generator.
Adam with betas (0.5, 0.9) as in Gulrajani et al. 2017.

Losses logged: `train_loss` and `val_loss` are the critic's Wasserstein estimate
E[critic(real)] - E[critic(fake)] on the rows of the split (lower = the generator is harder to
tell apart). It depends on the critic as much as on the generator, so it is no stopping signal:
the family runs all `max_epochs` (no early stopping; `patience` is ignored) and keeps the last
epoch's weights.

- sample: generator outputs at z ~ N(0, I), back on X's scale, clipped below at each gene's
  smallest training value (so log-normalised data get exact zeros, as the data have).
- impute: not supported (a GAN has no encoder; `impute` raises `Unsupported`, reported by
  `omicsgen impute` as a one-line error). Use vae, ae or gain to impute.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import torch
from torch import nn

from .base import GenerativeModel, Unsupported, inference
from .vae import VAE


def _mlp(n_in: int, hidden_dim: int, n_layers: int, n_out: int, activation) -> nn.Sequential:
    layers, width = [], n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden_dim), activation()]
        width = hidden_dim
    return nn.Sequential(*layers, nn.Linear(width, n_out))


class WGAN(GenerativeModel):
    family = "wgan"
    modalities = ("expression",)
    shape_hparams = ("n_genes",)
    defaults = {
        "latent_dim": 32,
        "hidden_dim": 256,
        "n_layers": 2,
        "n_critic": 5,
        "gp_weight": 10.0,
        "learning_rate": 1e-4,
    }
    select_on_loss = False
    can_impute = False
    cannot_impute = "a GAN has no encoder to condition on a row's observed entries; use vae, ae or gain to impute"

    def __init__(self, n_genes, latent_dim, hidden_dim, n_layers, n_critic, gp_weight, learning_rate, target_sum=None):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.gradient_clip = None
        self.generator_net = _mlp(latent_dim, hidden_dim, n_layers, n_genes, nn.ReLU)
        self.critic_net = _mlp(2 * n_genes, hidden_dim, n_layers, 1, lambda: nn.LeakyReLU(0.2))
        self.register_buffer("gene_mean", torch.zeros(n_genes))
        self.register_buffer("gene_std", torch.ones(n_genes))
        self.register_buffer("gene_min", torch.full((n_genes,), -torch.inf))

    data_sizes = staticmethod(VAE.data_sizes)

    tensors = staticmethod(VAE.observed_tensors)

    def init_from_data(self, adata: ad.AnnData) -> None:
        train = self.tensors(adata, "train")
        x, m = train["x"], train["observed"]
        n = m.sum(0).clamp_min(1)
        mean = (x * m).sum(0) / n
        std = (((x - mean) ** 2 * m).sum(0) / n).sqrt().clamp_min(1e-3)
        low = torch.where(m, x, torch.inf).amin(0)
        with torch.no_grad():
            self.gene_mean.copy_(mean)
            self.gene_std.copy_(std)
            self.gene_min.copy_(torch.where(m.any(0), low, -torch.inf))

    # ---- networks -----------------------------------------------------------------------
    def critic(self, standardised: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
        return self.critic_net(torch.cat([standardised * m, m], dim=1)).squeeze(1)

    def fake(self, n: int) -> torch.Tensor:
        return self.generator_net(torch.randn(n, self.hparams.latent_dim, device=self.device))

    def _real(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        m = batch["observed"].float()
        return (batch["x"] - self.gene_mean) / self.gene_std * m, m

    def training_step(self, batch, batch_idx):
        opt_g, opt_c = self.optimizers()
        real, m = self._real(batch)
        n = len(real)
        fake = self.fake(n).detach()
        wasserstein = self.critic(real, m).mean() - self.critic(fake, m).mean()
        eps = torch.rand(n, 1, device=real.device)
        mixed = (eps * real + (1 - eps) * fake * m).requires_grad_(True)
        grad = torch.autograd.grad(self.critic(mixed, m).sum(), mixed, create_graph=True)[0]
        penalty = ((grad.norm(dim=1) - 1) ** 2).mean()
        self.manual_step(opt_c, -wasserstein + self.hparams.gp_weight * penalty)
        if batch_idx % self.hparams.n_critic == 0:
            self.manual_step(opt_g, -self.critic(self.fake(n), m).mean())
        self.log("train_loss", wasserstein.detach(), on_step=False, on_epoch=True, batch_size=n)

    def validation_step(self, batch, batch_idx):
        real, m = self._real(batch)
        wasserstein = self.critic(real, m).mean() - self.critic(self.fake(len(real)), m).mean()
        self.log("val_loss", wasserstein, on_step=False, on_epoch=True, batch_size=len(real))

    def configure_optimizers(self):
        lr, betas = self.hparams.learning_rate, (0.5, 0.9)
        return (torch.optim.Adam(self.generator_net.parameters(), lr=lr, betas=betas),
                torch.optim.Adam(self.critic_net.parameters(), lr=lr, betas=betas))

    # ---- use ----------------------------------------------------------------------------
    @inference
    def sample(self, n: int, generator: torch.Generator) -> np.ndarray:
        z = torch.randn(n, self.hparams.latent_dim, generator=generator).to(self.device)
        x = self.generator_net(z) * self.gene_std + self.gene_mean
        return torch.maximum(x, self.gene_min).cpu().numpy().astype(np.float32)

    def impute(self, values: np.ndarray, observed: np.ndarray, obs=None) -> np.ndarray:
        raise Unsupported(self.cannot_impute)
