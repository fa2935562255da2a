"""Categorical VAE over one-hot positions of fixed-length or aligned sequences (DeepSequence-like;
the `vae` family on sequence data).

Every position of a record is a categorical variable over the alphabet's tokens except MISSING
(pad, gap and the residues); the encoder sees the one-hot matrix with unobserved positions
all-zero, the decoder gives independent logits per position given the latent code, so all
dependencies between positions go through the latent space. Loss per record: the categorical NLL
of its observed positions + beta * KL, beta ramped up over the first `kl_warmup_epochs` epochs in
training (validation always uses the full beta).

Sampling draws z from the aggregate posterior by default (`latent_prior: aggregate`): a training
row's posterior N(mean, var), the row picked at random among `AGGREGATE_ROWS` train and val rows
encoded after training (`calibrate`). The standard normal prior (`latent_prior: standard`) has
regions no record maps to, and records decoded from there are what a classifier spots first.
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..alphabet import GAP, MISSING, PAD
from .base import GenerativeModel, inference, keep_observed, row_chunks
from .lstm import RecurrentLanguageModel, scored_targets

NO_END = -30.0  # added to a pad's log-odds where no train record ends: e^-30 per position

AGGREGATE_ROWS = 2048  # train/val posteriors kept for sampling (drawn with replacement when fewer rows)
LATENT_PRIORS = ("aggregate", "standard")


def _mlp(n_in: int, hidden_dim: int, n_layers: int, dropout: float) -> nn.Sequential:
    layers, width = [], n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(), nn.Dropout(dropout)]
        width = hidden_dim
    return nn.Sequential(*layers)


class SequenceVAE(GenerativeModel):
    family = "vae"
    modalities = ("sequence",)
    shape_hparams = ("vocab_size", "max_length")
    sized_to_data = True
    has_latent = True
    can_draw_imputations = True
    defaults = {
        "hidden_dim": 256,
        "latent_dim": 16,
        "n_layers": 2,
        "dropout": 0.1,
        "beta": 1.0,
        "kl_warmup_epochs": 5,
        "learning_rate": 1e-3,
        "temperature": 1.0,
        "latent_prior": "aggregate",
    }

    def __init__(self, vocab_size, max_length, hidden_dim, latent_dim, n_layers, dropout, beta, kl_warmup_epochs,
                 learning_rate, temperature, latent_prior="standard"):
        super().__init__()
        if latent_prior not in LATENT_PRIORS:
            raise ValueError(f"vae: latent_prior must be one of {', '.join(LATENT_PRIORS)}, not {latent_prior!r}")
        self.save_hyperparameters()
        self.register_buffer("posterior_mean", torch.zeros(AGGREGATE_ROWS, latent_dim))
        self.register_buffer("posterior_log_var", torch.zeros(AGGREGATE_ROWS, latent_dim))
        width = max_length * vocab_size
        self.encoder = _mlp(width, hidden_dim, n_layers, dropout)
        self.to_latent_mean = nn.Linear(hidden_dim, latent_dim)
        self.to_latent_log_var = nn.Linear(hidden_dim, latent_dim)
        self.decoder = nn.Sequential(_mlp(latent_dim, hidden_dim, n_layers, dropout), nn.Linear(hidden_dim, width))
        # MISSING is never a value, only the absence of one.
        never = torch.zeros(vocab_size)
        never[MISSING] = -torch.inf
        self.register_buffer("never_missing", never)
        # NO_END for a pad where no train record has ended (`init_from_data`): an alignment's
        # records all run to its last column, and a pad drawn inside one would cut the record
        # (132 of 1,000 16S samples at 1,925 columns). Finite, so a val record that ends there still scores.
        self.register_buffer("no_end", torch.zeros(max_length, vocab_size))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["hyper_parameters"]["modality"] = "sequence"

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # Checkpoints from before the aggregate prior (latent_prior then defaults to standard).
        state = checkpoint["state_dict"]
        for key in ("posterior_mean", "posterior_log_var"):
            state.setdefault(key, torch.zeros(AGGREGATE_ROWS, self.hparams.latent_dim))
        state.setdefault("no_end", torch.zeros(self.hparams.max_length, self.hparams.vocab_size))

    @inference
    def calibrate(self, tensors: dict[str, torch.Tensor]) -> None:
        """Keep the posteriors of `AGGREGATE_ROWS` train/val rows (seeded pick) for sampling."""
        tokens = tensors["tokens"]
        rows = torch.randint(len(tokens), (AGGREGATE_ROWS,), generator=torch.Generator().manual_seed(0))
        if len(tokens) >= AGGREGATE_ROWS:
            rows = torch.randperm(len(tokens), generator=torch.Generator().manual_seed(0))[:AGGREGATE_ROWS]
        mean, log_var = self.encode(tokens[rows].to(self.device))
        self.posterior_mean.copy_(mean)
        self.posterior_log_var.copy_(log_var)

    data_sizes = staticmethod(RecurrentLanguageModel.data_sizes)
    tensors = staticmethod(RecurrentLanguageModel.tensors)  # unobserved positions -> MISSING

    def init_from_data(self, adata: ad.AnnData) -> None:
        """Output bias = log of the per-position token frequencies in the train rows, so the
        untrained decoder is the position-frequency model and training learns what is beyond it."""
        tokens = self.tensors(adata, "train")["tokens"]
        counts = F.one_hot(tokens, self.hparams.vocab_size).float().sum(0) + 0.5
        counts[:, MISSING] = 0
        ended = (tokens == PAD).any(0)
        with torch.no_grad():
            self.decoder[-1].bias.copy_((counts / counts.sum(1, keepdim=True)).clamp_min(1e-8).log().flatten())
            self.no_end[:, PAD] = torch.where(ended, 0.0, NO_END)

    # ---- network ------------------------------------------------------------------------
    def one_hot(self, tokens: torch.Tensor) -> torch.Tensor:
        """n x (L * V); MISSING (unobserved) positions are all zeros."""
        encoded = F.one_hot(tokens, self.hparams.vocab_size).float()
        encoded[..., MISSING] = 0
        return encoded.flatten(1)

    def encode(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        hidden = self.encoder(self.one_hot(tokens))
        return self.to_latent_mean(hidden), self.to_latent_log_var(hidden).clamp(-10, 10)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """Log-probabilities n x L x V (MISSING: -inf)."""
        logits = self.decoder(z).view(len(z), self.hparams.max_length, self.hparams.vocab_size)
        return (logits + self.never_missing + self.no_end).log_softmax(-1)

    def loss(self, batch):
        tokens = batch["tokens"]
        mean, log_var = self.encode(tokens)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        log_p = self.decode(z).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)
        nll = -(log_p.masked_fill(tokens == MISSING, 0.0)).sum(1)
        kl = 0.5 * (mean**2 + log_var.exp() - 1 - log_var).sum(1)
        return (nll + self.kl_weight() * kl).mean()

    def kl_weight(self) -> float:
        warmup = self.hparams.kl_warmup_epochs
        if not self.training or warmup <= 0 or self._trainer is None:
            return self.hparams.beta
        return self.hparams.beta * min(1.0, (self.current_epoch + 1) / warmup)

    # ---- use ----------------------------------------------------------------------------
    def _hidden_tokens(self, tokens: np.ndarray, observed: np.ndarray | None) -> torch.Tensor:
        observed = tokens != MISSING if observed is None else observed & (tokens != MISSING)
        return torch.from_numpy(np.where(observed, tokens, MISSING).astype(np.int64)).to(self.device)

    @inference
    def log_likelihood(self, tokens: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
        """log p(tokens[i, j] | z), z the posterior mean given the row's observed positions
        (held-out ones hidden), n x L float32; NaN at MISSING tokens and after a record's first pad."""
        parts = []
        for rows in row_chunks(len(tokens)):
            mean, _ = self.encode(self._hidden_tokens(tokens[rows], None if observed is None else observed[rows]))
            truth = torch.from_numpy(tokens[rows].astype(np.int64)).to(self.device)
            log_p = self.decode(mean).gather(-1, truth.unsqueeze(-1)).squeeze(-1)
            parts.append(log_p.masked_fill(~scored_targets(truth), float("nan")).cpu())
        return torch.cat(parts).numpy() if parts else np.zeros(tokens.shape, dtype=np.float32)

    @inference
    def impute(self, values: np.ndarray, observed: np.ndarray, obs=None) -> np.ndarray:
        """Unobserved positions <- the most probable content token (gap or residue) under the
        decoder at the posterior mean; MISSING tokens count as unobserved."""
        unobserved = ~observed | (values == MISSING)
        parts = []
        for rows in row_chunks(len(values)):
            mean, _ = self.encode(self._hidden_tokens(values[rows], ~unobserved[rows]))
            parts.append((self.decode(mean)[..., GAP:].argmax(-1) + GAP).cpu().numpy())
        predicted = np.concatenate(parts).astype(values.dtype) if parts else values
        return keep_observed(values, ~unobserved, predicted)

    @inference
    def impute_draws(self, values, observed, n_draws: int, generator: torch.Generator, obs=None) -> np.ndarray:
        """Draws from the posterior predictive: z from q(z | observed), then each unobserved
        position's content token from the decoder at z."""
        unobserved = ~observed | (values == MISSING)
        draws = []
        for _ in range(n_draws):
            parts = []
            for rows in row_chunks(len(values)):
                mean, log_var = self.encode(self._hidden_tokens(values[rows], ~unobserved[rows]))
                noise = torch.randn(mean.shape, generator=generator).to(self.device)
                log_p = self.decode(mean + noise * (0.5 * log_var).exp())[..., GAP:]
                parts.append(self._draw(log_p, generator) + GAP)
            predicted = np.concatenate(parts).astype(values.dtype) if parts else values
            draws.append(keep_observed(values, ~unobserved, predicted))
        return np.stack(draws) if draws else np.zeros((0, *values.shape), dtype=values.dtype)

    @inference
    def sample(self, n: int, generator: torch.Generator, labels=None, temperature: float | None = None) -> np.ndarray:
        """n x L int8 records: z from the latent prior (`latent_prior`), then every position from the decoder (logits divided by
        `temperature`); MISSING is never drawn and a record is all pad after its first pad."""
        if labels is not None:
            raise ValueError("the sequence vae is not conditional: it takes no labels")
        temperature = self.hparams.temperature if temperature is None else temperature
        parts = []
        for rows in row_chunks(n):
            z = self._latent_draws(rows.stop - rows.start, generator)
            parts.append(self._draw(self.decode(z) / temperature, generator))
        tokens = np.concatenate(parts) if parts else np.zeros((0, self.hparams.max_length), dtype=np.int64)
        ended = np.cumsum(tokens == PAD, axis=1) > 0
        return np.where(ended, PAD, tokens).astype(np.int8)

    def _latent_draws(self, n: int, generator: torch.Generator) -> torch.Tensor:
        noise = torch.randn(n, self.hparams.latent_dim, generator=generator).to(self.device)
        if self.hparams.latent_prior == "standard":
            return noise
        pick = torch.randint(AGGREGATE_ROWS, (n,), generator=generator).to(self.device)
        return self.posterior_mean[pick] + noise * (0.5 * self.posterior_log_var[pick]).exp()

    def _draw(self, log_p: torch.Tensor, generator: torch.Generator) -> np.ndarray:
        """One category per position of n x L x K log-weights (drawn on CPU for the generator)."""
        probs = log_p.float().softmax(-1).cpu()
        drawn = torch.multinomial(probs.flatten(0, 1), 1, generator=generator)
        return drawn.view(probs.shape[:2]).numpy()

    @inference
    def embed(self, values: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
        parts = [self.encode(self._hidden_tokens(values[rows], None if observed is None else observed[rows]))[0].cpu()
                 for rows in row_chunks(len(values))]
        return torch.cat(parts).numpy() if parts else np.zeros((0, self.hparams.latent_dim), dtype=np.float32)
