"""Variational autoencoder for expression matrices (log-normalised X) with missing entries.

`likelihood: gaussian` models X directly; `nb` / `zinb` (scVI-like) model the raw counts in
`layers["counts"]` with a softmax-over-genes decoder times the library size and a per-gene
dispersion, and map back onto X's scale for `impute` and `sample` (see `counts.py`).
`beta` weighs the KL term (beta-VAE).
"""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import torch
from torch import nn

from . import counts as cm
from .base import (
    GenerativeModel,
    data_matrix,
    inference,
    is_sparse,
    keep_observed,
    observed_mask,
    row_chunks,
    sparse_tensors,
    split_rows,
    stack_rows,
)

# Bounds on the per-gene log-variance: keeps the NLL finite for genes that are constant in training.
LOG_VAR_RANGE = (-7.0, 5.0)


def mlp(n_in: int, hidden_dim: int, n_layers: int) -> nn.Sequential:
    layers, width = [], n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU()]
        width = hidden_dim
    return nn.Sequential(*layers)


class VAE(GenerativeModel):
    """VAE; the encoder sees X with unobserved entries zeroed plus the observed mask,
    so it can tell a true zero from a hidden value. Loss = masked Gaussian NLL with a learned
    per-gene variance + beta * KL, with beta ramped up over the first `kl_warmup_epochs` epochs
    (training only: the validation loss always uses the full beta, so early stopping compares
    like with like).

    With `likelihood` nb or zinb the Gaussian NLL becomes the count NLL of the observed raw
    counts (NB mean `rho_g * library`, `rho` a softmax over the genes plus a rest bucket),
    `impute` fills `E[log1p(counts / library * target_sum)]` and `sample` draws counts at a
    library size drawn from the training libraries, then normalises and log1p's them."""

    family = "vae"
    modalities = ("expression", "timecourse")
    shape_hparams = ("n_genes",)
    defaults = {
        "hidden_dim": 128,
        "latent_dim": 10,
        "n_layers": 1,
        "beta": 1.0,
        "kl_warmup_epochs": 5,
        "learning_rate": 1e-3,
        "likelihood": "gaussian",
    }
    has_latent = True

    def __init__(
        self, n_genes, hidden_dim, latent_dim, n_layers, beta, kl_warmup_epochs, learning_rate,
        likelihood="gaussian", target_sum=cm.DEFAULT_TARGET_SUM,
    ):
        super().__init__()
        if likelihood not in cm.LIKELIHOODS:
            raise ValueError(f"vae: likelihood must be one of {', '.join(cm.LIKELIHOODS)}, not {likelihood!r}")
        self.save_hyperparameters()
        self.encoder = mlp(2 * n_genes, hidden_dim, n_layers)
        self.to_latent_mean = nn.Linear(hidden_dim, latent_dim)
        self.to_latent_log_var = nn.Linear(hidden_dim, latent_dim)
        self.decoder = mlp(latent_dim, hidden_dim, n_layers)
        if likelihood == "gaussian":
            self.to_gene_mean = nn.Linear(hidden_dim, n_genes)
            self.gene_log_var = nn.Parameter(torch.zeros(n_genes))
        else:
            self.count_head = cm.CountHead(hidden_dim, n_genes, zero_inflated=likelihood == "zinb")
            self.register_buffer("library_quantiles", torch.ones(cm.N_LIBRARY_QUANTILES))

    @property
    def counts_model(self) -> bool:
        return self.hparams.likelihood in cm.COUNT_LIKELIHOODS

    @staticmethod
    def data_sizes(adata: ad.AnnData) -> dict:
        return {"n_genes": int(adata.n_vars), "target_sum": cm.target_sum(adata)}

    @staticmethod
    def observed_tensors(adata: ad.AnnData, split) -> dict[str, torch.Tensor]:
        """X with unobserved entries zeroed, and the observed mask (the input of every matrix model)."""
        rows = split_rows(adata, split)
        observed = observed_mask(adata)[rows]
        x = np.where(observed, data_matrix(adata)[rows], 0.0).astype(np.float32)
        return {"x": torch.from_numpy(x), "observed": torch.from_numpy(observed)}

    @staticmethod
    def tensors(adata: ad.AnnData, split) -> dict[str, torch.Tensor]:
        """The observed tensors, plus the raw counts (same entries hidden) and library sizes when
        the data has counts. A sparse X gives `CsrRows` that batches densify a batch at a time."""
        if is_sparse(adata):
            return sparse_tensors(adata, split, with_counts=cm.has_counts(adata))
        out = VAE.observed_tensors(adata, split)
        if cm.has_counts(adata):
            rows = split_rows(adata, split)
            out.update(cm.count_tensors(adata, rows, observed_mask(adata)[rows]))
        return out

    def init_from_data(self, adata: ad.AnnData) -> None:
        """Start the decoder at the per-gene mean and variance: training then only learns structure."""
        train = self.tensors(adata, "train")
        if self.counts_model:
            if "counts" not in train:
                raise cm.CountDataMissing(f"vae likelihood {self.hparams.likelihood!r} needs raw counts in "
                                          "layers['counts']; this data has none (use likelihood: gaussian)")
            self.count_head.init_from_counts(train["counts"], train["library"], train["observed"])
            self.library_quantiles.copy_(cm.library_quantiles(train["library"]))
            return
        counts = train["observed"].sum(0).clamp_min(1)
        mean = train["x"].sum(0) / counts
        var = ((train["x"] - mean) ** 2 * train["observed"]).sum(0) / counts
        with torch.no_grad():
            self.to_gene_mean.bias.copy_(mean)
            self.gene_log_var.copy_(var.clamp_min(1e-3).log().clamp(*LOG_VAR_RANGE))

    # ---- networks -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor, observed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(torch.cat([x * observed, observed.float()], dim=1))
        return self.to_latent_mean(hidden), self.to_latent_log_var(hidden).clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """X's scale: the Gaussian mean, or log1p of the expected normalised expression."""
        if self.counts_model:
            share = cm.expected_share(self.count_head(self.decoder(z)))
            return torch.log1p(share * self.hparams.target_sum)
        return self.to_gene_mean(self.decoder(z))

    def count_params(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.count_head(self.decoder(z))

    def log_var(self) -> torch.Tensor:
        return self.gene_log_var.clamp(*LOG_VAR_RANGE)

    def loss(self, batch):
        x, observed = batch["x"], batch["observed"]
        mean, log_var = self.encode(x, observed)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        if self.counts_model:
            nll = -cm.count_log_prob(batch["counts"], batch["library"], self.count_params(z)) * observed
        else:
            nll = gaussian_nll(x, self.decode(z), self.log_var()) * observed
        kl = -0.5 * (1 + log_var - mean**2 - log_var.exp())
        return (nll.sum(1) + self.kl_weight() * kl.sum(1)).mean()

    def kl_weight(self) -> float:
        warmup = self.hparams.kl_warmup_epochs
        if not self.training or warmup <= 0:
            return self.hparams.beta
        return self.hparams.beta * min(1.0, (self.current_epoch + 1) / (warmup + 1))

    # ---- use ----------------------------------------------------------------------------
    @inference
    def sample(self, n: int, generator: torch.Generator) -> np.ndarray:
        """Decoder means at z ~ N(0, I) plus Gaussian noise with the learned per-gene variance.
        Count likelihoods: counts drawn from the NB / ZINB at a library drawn from the training
        libraries, normalised to target_sum and log1p'd (X's scale)."""
        device = self.device
        z = torch.randn(n, self.hparams.latent_dim, generator=generator).to(device)
        if self.counts_model:
            library = cm.draw_libraries(self.library_quantiles, n, generator)
            counts = cm.draw_counts(self.count_params(z), library.to(device), generator)
            return cm.normalise(counts, library, self.hparams.target_sum).numpy().astype(np.float32)
        noise = torch.randn(n, self.hparams.n_genes, generator=generator).to(device)
        x = self.decode(z) + noise * (0.5 * self.log_var()).exp()
        return x.cpu().numpy().astype(np.float32)

    @inference
    def impute(self, values: np.ndarray, observed: np.ndarray, obs=None) -> np.ndarray:
        """Unobserved entries <- decoder mean at the latent mean of the row's observed entries.
        Count likelihoods: E[log1p(counts / library * target_sum)] under the decoded NB / ZINB at
        the row's library (obs["library_size"], else the median training library): X's expected
        value, which for sparse counts is far below log1p of the expected normalised expression."""
        if self.counts_model:
            library = cm.row_libraries(obs, len(values), self.library_quantiles).to(self.device)
            means = [
                cm.impute_rows(self.count_params, self._latent_mean(values[rows], observed[rows]), library[rows],
                               self.hparams.target_sum)
                for rows in row_chunks(len(values))
            ]
            return keep_observed(values, observed, stack_rows(means, self.hparams.n_genes))
        means = [self.decode(self._latent_mean(values[rows], observed[rows])) for rows in row_chunks(len(values))]
        return keep_observed(values, observed, stack_rows(means, self.hparams.n_genes))

    @inference
    def embed(self, values: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
        """Latent means; `observed` defaults to the non-NaN entries."""
        observed = ~np.isnan(values) if observed is None else observed
        latents = [self._latent_mean(values[rows], observed[rows]) for rows in row_chunks(len(values))]
        return stack_rows(latents, self.hparams.latent_dim)

    @inference
    def count_log_likelihood(self, values: np.ndarray, observed: np.ndarray, counts: np.ndarray,
                             library: np.ndarray) -> np.ndarray:
        """log p(count) of every entry given the latent mean of the row's observed entries
        (count likelihoods only): score held-out entries with it."""
        if not self.counts_model:
            raise ValueError("count_log_likelihood needs likelihood nb or zinb")
        parts = []
        for rows in row_chunks(len(values)):
            params = self.count_params(self._latent_mean(values[rows], observed[rows]))
            lib = torch.from_numpy(np.asarray(library[rows], dtype=np.float32)).to(self.device)
            parts.append(cm.count_log_prob(torch.from_numpy(np.asarray(counts[rows], dtype=np.float32)), lib, params))
        return stack_rows(parts, self.hparams.n_genes)

    def _latent_mean(self, values: np.ndarray, observed: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.where(observed, values, 0.0).astype(np.float32)).to(self.device)
        return self.encode(x, torch.from_numpy(observed).to(self.device))[0]


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    return 0.5 * (log_var + (x - mean) ** 2 / log_var.exp() + math.log(2 * math.pi))

