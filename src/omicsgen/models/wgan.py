"""WGAN-GP (Gulrajani et al. 2017) for expression rows (scGAN-like) and for sequences over one-hot
positions with a softmax generator (Killoran et al. 2017); conditional on obs["label"] when
`condition_on: label` (the label's one-hot joins the generator's noise and the critic's input).

Missing and held-out entries never reach the critic: it sees a real row with its unobserved
entries (positions) zeroed plus the mask, and a generated row masked with the mask of a real row
from the same batch, so the generator is fit to the observed entries only (the AmbientGAN /
MisGAN construction).

Expression: data are standardised per gene inside the model (train rows' observed entries).
With library-size aware output (scGAN's LSN layer; `library_size: auto` turns it on when X is
log-normalised counts, i.e. the data keep raw counts in `layers["counts"]`; `true` demands them)
a generated row is made the way preprocessing made a real one, `log1p(counts / library *
target_sum)`: the generator gives non-negative shares (ReLU, normalised to sum 1) over the genes
plus one "rest" bucket (the library's share in genes outside the matrix, as in the count models),
the library is the training libraries' quantile at Phi(last latent coordinate) (so it follows the
data's depth distribution and the generator knows the depth it generates at), and the counts are
Poisson draws around shares times library (straight-through gradient). Why counts and not
scGAN's continuous output: shallow 10x cells (mouse_10x: median 45 UMIs in the 256 genes kept)
take values on a coarse lattice (no nonzero entry below log1p(target_sum / library), 1.9 there);
a continuous output fills the gaps, and a random forest tells such cells from real ones (the
scgan_realism check, 20 epochs: ROC-AUC 0.997, 100 epochs 0.90; with counts 0.71 and 0.60,
300 epochs 0.55, real vs real 0.52). The previous LSN also let the generator pick the row total
as a sigmoid quantile, which saturated at the lowest totals (median half the real one).
Samples are returned on the data scale as made, so their zeros are exact.

Sequences: the generator gives a softmax over the tokens (MISSING excluded) at every position
(linear layer, then 1-d convolutions); the critic is a 1-d CNN over one-hot + mask channels.
The generator's output is a hard one-hot record drawn from that softmax (Gumbel-max, gradients
straight through to the softmax), in training as in sampling, and a record is all pad after its
first pad: the critic sees rows of the same kind as real ones (see `SequenceWGAN.generate`).

Manual optimisation: every batch updates the critic (Wasserstein loss + `gp_weight` times the
gradient penalty on random interpolates: sequences on half of them, `gp_rows`); every
`n_critic`-th batch also updates the generator.
Adam with betas (0.5, 0.9) as in Gulrajani et al. (sequences: (0, 0.9), rates decaying linearly to
0; see `SequenceWGAN.defaults`).

Losses logged: `train_loss` and `val_loss` are the critic's Wasserstein estimate
E[critic(real)] - E[critic(fake)]. It depends on the critic as much as on the generator, so it is
no stopping signal: the family runs all `max_epochs` and keeps the last epoch's weights.

impute: not supported (a GAN has no encoder; `impute` raises `Unsupported`).
"""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from ..alphabet import MISSING, PAD
from . import counts as cm
from .base import GenerativeModel, Unsupported, draw_label_codes, inference, row_chunks, split_rows
from .lstm import RecurrentLanguageModel
from .vae import VAE, divisor, feature_scale

LABEL_COLUMN = "label"
LIBRARY_SIZE_MODES = ("auto", True, False)


def _mlp(n_in: int, hidden_dim: int, n_layers: int, n_out: int, activation) -> nn.Sequential:
    layers, width = [], n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden_dim), activation()]
        width = hidden_dim
    return nn.Sequential(*layers, nn.Linear(width, n_out))


# ---- labels ------------------------------------------------------------------------------------
def label_names(adata: ad.AnnData) -> list[str]:
    """Sorted distinct values of obs["label"] (none when the data has no labels)."""
    if LABEL_COLUMN not in adata.obs:
        return []
    labels = adata.obs[LABEL_COLUMN]
    return sorted(map(str, labels[labels.notna()].unique()))


def label_tensors(adata: ad.AnnData, rows: np.ndarray) -> dict[str, torch.Tensor]:
    """{"labels": index into `label_names` per row, -1 where unlabelled}; {} without labels."""
    names = label_names(adata)
    if not names:
        return {}
    labels = adata.obs[LABEL_COLUMN][rows]
    index = {name: i for i, name in enumerate(names)}
    codes = [index[str(value)] if value == value and value is not None else -1 for value in labels]
    return {"labels": torch.tensor(codes, dtype=torch.int64)}


class ConditionalWGAN(GenerativeModel):
    """What both data layouts share: the adversarial training loop, labels and sampling API.

    Subclasses give `real(batch) -> (real, mask)`, `generate(z, condition, generator=None)`
    (generator output in the critic's layout; `generator` seeds any sampling inside it), `critic(x, mask, condition)` and `to_data(generated)`.
    """

    select_on_loss = False
    sized_to_data = True  # steps only: a GAN needs thousands of generator steps
    can_impute = False
    cannot_impute = "a GAN has no encoder to condition on a row's observed entries; use vae, ae or gain to impute"

    def setup_conditioning(self, condition_on, label_names) -> int:
        """Checks `condition_on`; returns the number of labels the networks take (0: unconditional)."""
        if condition_on is None:
            return 0
        if condition_on != LABEL_COLUMN:
            raise ValueError(f"{self.family}: condition_on may only be {LABEL_COLUMN!r} (or null), not {condition_on!r}")
        if not label_names:
            raise ValueError(f"{self.family}: condition_on {LABEL_COLUMN!r} needs obs[{LABEL_COLUMN!r}] in the data")
        return len(label_names)

    @property
    def n_labels(self) -> int:
        return len(self.hparams.label_names) if self.hparams.condition_on else 0

    def init_label_frequencies(self, adata: ad.AnnData) -> None:
        labels = self.tensors(adata, "train").get("labels")
        if self.n_labels and labels is not None:
            counts = torch.bincount(labels[labels >= 0], minlength=self.n_labels).float()
            with torch.no_grad():
                self.label_frequencies.copy_(counts / counts.sum().clamp_min(1))

    def condition(self, labels: torch.Tensor | None, n: int) -> torch.Tensor:
        """One-hot labels (n x n_labels; unlabelled rows all zero); n x 0 when unconditional."""
        if not self.n_labels:
            return torch.zeros(n, 0, device=self.device)
        return F.one_hot(labels.clamp_min(0), self.n_labels).float() * (labels >= 0).float()[:, None]

    def latent(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randn(n, self.hparams.latent_dim, generator=generator).to(self.device)

    # ---- training -----------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        opt_g, opt_c = self.optimizers()
        real, m = self.real(batch)
        n = len(real)
        cond = self.condition(batch.get("labels"), n)
        fake = self.generate(self.latent(n), cond).detach() * m
        wasserstein = self.critic(real, m, cond).mean() - self.critic(fake, m, cond).mean()
        eps = torch.rand(n, *[1] * (real.dim() - 1), device=real.device)
        k = max(1, round(n * self.hparams.get("gp_rows", 1.0)))  # the penalty's rows: the first k interpolates
        mixed = (eps * real + (1 - eps) * fake)[:k].requires_grad_(True)
        grad = torch.autograd.grad(self.critic(mixed, m[:k], cond[:k]).sum(), mixed, create_graph=True)[0]
        penalty = ((grad.flatten(1).norm(dim=1) - 1) ** 2).mean()
        self.manual_step(opt_c, -wasserstein + self.hparams.gp_weight * penalty)
        if batch_idx % self.hparams.n_critic == 0:
            self.manual_step(opt_g, -self.critic(self.generate(self.latent(n), cond) * m, m, cond).mean())
        self.add_to_epoch_loss("train_loss", wasserstein, n)

    def validation_step(self, batch, batch_idx):
        real, m = self.real(batch)
        cond = self.condition(batch.get("labels"), len(real))
        fake = self.generate(self.latent(len(real)), cond) * m
        wasserstein = self.critic(real, m, cond).mean() - self.critic(fake, m, cond).mean()
        self.add_to_epoch_loss("val_loss", wasserstein, len(real))

    def configure_optimizers(self):
        lr, betas = self.hparams.learning_rate, (0.5, 0.9)
        return (torch.optim.Adam(self.generator_net.parameters(), lr=lr, betas=betas),
                torch.optim.Adam(self.critic_net.parameters(), lr=lr, betas=betas))

    # ---- use ----------------------------------------------------------------------------
    @inference
    def sample(self, n: int, generator: torch.Generator, labels: np.ndarray | None = None) -> np.ndarray:
        """n generated rows. A conditional model takes `labels` (n indices into
        `hparams.label_names`) or, without them, draws labels at the training frequencies."""
        if n == 0:
            return self.sample(1, generator)[:0]
        codes = draw_label_codes(self, n, generator, labels)
        parts = []
        for rows in row_chunks(n):
            z = self.latent(rows.stop - rows.start, generator)
            cond = self.condition(None if codes is None else codes[rows].to(self.device), len(z))
            parts.append(self.sample_rows(z, cond, generator))
        return np.concatenate(parts)

    def sample_rows(self, z, cond, generator: torch.Generator) -> np.ndarray:
        return self.to_data(self.generate(z, cond, generator))

    def impute(self, values: np.ndarray, observed: np.ndarray, obs=None) -> np.ndarray:
        raise Unsupported(self.cannot_impute)


class WGAN(ConditionalWGAN):
    """scGAN-like WGAN-GP for expression rows: MLP generator and critic."""

    family = "wgan"
    modalities = ("expression",)
    shape_hparams = ("n_genes",)
    defaults = {
        "latent_dim": 32,
        "hidden_dim": 256,
        "n_layers": 2,
        "n_critic": 5,
        "gp_weight": 10.0,
        # 1e-3, not Gulrajani's (and scGAN's) 1e-4: scgan_realism, 300 epochs, RF ROC-AUC
        # generated vs real 0.55 at 1e-3, 0.66 at 1e-4 (LSN counts output).
        "learning_rate": 1e-3,
        "library_size": "auto",
        "condition_on": None,
    }

    def __init__(self, n_genes, latent_dim, hidden_dim, n_layers, n_critic, gp_weight, learning_rate, target_sum=None,
                 library_size=False, log_normalised=False, condition_on=None, label_names=()):
        super().__init__()
        if library_size not in LIBRARY_SIZE_MODES:
            raise ValueError(f"wgan: library_size must be auto, true or false, not {library_size!r}")
        if library_size is True and not log_normalised:
            raise ValueError("wgan: library_size true needs log-normalised counts (raw counts in layers['counts'])")
        label_names = list(label_names) if condition_on else []
        n_labels = self.setup_conditioning(condition_on, label_names)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.gradient_clip = None
        self.lsn = library_size is True or (library_size == "auto" and log_normalised)
        # With LSN, one more output: the share of the library outside the matrix ("rest").
        self.generator_net = _mlp(latent_dim + n_labels, hidden_dim, n_layers, n_genes + int(self.lsn), nn.ReLU)
        if self.lsn:  # shares start positive everywhere, so no gene starts dead under the ReLU
            nn.init.constant_(self.generator_net[-1].bias, 1.0)
        self.critic_net = _mlp(2 * n_genes + n_labels, hidden_dim, n_layers, 1, lambda: nn.LeakyReLU(0.2))
        self.register_buffer("gene_mean", torch.zeros(n_genes))
        self.register_buffer("gene_std", torch.ones(n_genes))
        self.register_buffer("gene_min", torch.full((n_genes,), -torch.inf))
        self.register_buffer("library_quantiles", torch.ones(cm.N_LIBRARY_QUANTILES))
        self.register_buffer("label_frequencies", torch.full((max(n_labels, 1),), 1.0 / max(n_labels, 1)))

    @staticmethod
    def data_sizes(adata: ad.AnnData) -> dict:
        return {**VAE.data_sizes(adata), "log_normalised": cm.has_counts(adata), "label_names": label_names(adata)}

    @staticmethod
    def tensors(adata: ad.AnnData, split) -> dict[str, torch.Tensor]:
        return {**VAE.observed_tensors(adata, split), **label_tensors(adata, split_rows(adata, split))}

    def init_from_data(self, adata: ad.AnnData) -> None:
        train = self.tensors(adata, "train")
        x, m = train["x"], train["observed"]
        n = m.sum(0).clamp_min(1)
        mean = (x * m).sum(0) / n
        std = feature_scale(((x - mean) ** 2 * m).sum(0) / n)
        low = torch.where(m, x, torch.inf).amin(0)
        with torch.no_grad():
            self.gene_mean.copy_(mean)
            self.gene_std.copy_(std)
            self.gene_min.copy_(torch.where(m.any(0), low, -torch.inf))
            if self.lsn:
                self._init_libraries(adata, x, m)
        self.init_label_frequencies(adata)

    def _init_libraries(self, adata: ad.AnnData, x: torch.Tensor, m: torch.Tensor) -> None:
        """Training library quantiles; the rest bucket's bias so that its starting share is the
        mean share of the library outside the matrix (two thirds on mouse_10x): starting at
        1/(n_genes + 1) instead, the generator spends its first epochs moving counts out."""
        rows = split_rows(adata, "train")
        self.library_quantiles.copy_(cm.library_quantiles(cm.count_tensors(adata, rows, m.numpy())["library"]))
        # Share of the library in the matrix, from X (observed entries scaled up to the full row).
        inside = (torch.expm1(x) * m).sum(1) / m.sum(1).clamp_min(1) * m.shape[1] / self.hparams.target_sum
        rest = (1 - inside.mean()).clamp(0.01, 0.99)
        self.generator_net[-1].bias[-1] = self.hparams.n_genes * rest / (1 - rest)

    # ---- networks -----------------------------------------------------------------------
    def real(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        m = batch["observed"].float()
        return (batch["x"] - self.gene_mean) / divisor(self.gene_std) * m, m

    def critic(self, standardised, m, cond) -> torch.Tensor:
        return self.critic_net(torch.cat([standardised * m, m, cond], dim=1)).squeeze(1)

    def generate(self, z, cond, generator: torch.Generator | None = None) -> torch.Tensor:
        """Generator output, standardised like the critic's real input."""
        if not self.lsn:
            return self.generator_net(torch.cat([z, cond], dim=1))
        return (self.normalised_counts(z, cond, generator) - self.gene_mean) / divisor(self.gene_std)

    def sample_rows(self, z, cond, generator: torch.Generator) -> np.ndarray:
        if not self.lsn:
            return super().sample_rows(z, cond, generator)
        # On the data scale as made, not through the standardisation and back: exact zeros stay exact.
        return self.normalised_counts(z, cond, generator).cpu().numpy().astype(np.float32)

    def normalised_counts(self, z, cond, generator: torch.Generator | None) -> torch.Tensor:
        """LSN: rows made like real ones, log1p(counts / library * target_sum)."""
        out = self.generator_net(torch.cat([z, cond], dim=1))
        shares = F.relu(out)
        shares = shares[:, :-1] / shares.sum(1, keepdim=True).clamp_min(1e-8)  # the rest bucket dropped
        library = self.library_at(torch.special.ndtr(z[:, -1]))[:, None]
        counts = self._poisson(shares * library, generator)
        return torch.log1p(counts * self.hparams.target_sum / library)

    @staticmethod
    def _poisson(mean: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Poisson counts; the gradient passes straight through to the mean."""
        draws = torch.poisson(mean.detach().cpu(), generator=generator).to(mean.device)
        return mean + (draws - mean).detach() if torch.is_grad_enabled() else draws

    def library_at(self, quantile: torch.Tensor) -> torch.Tensor:
        """The training rows' library size at a quantile in [0, 1] (interpolated)."""
        q = self.library_quantiles
        position = quantile * (len(q) - 1)
        low = position.floor().long().clamp(max=len(q) - 2)
        frac = position - low
        return (q[low] * (1 - frac) + q[low + 1] * frac).clamp_min(1.0)

    def to_data(self, generated: torch.Tensor) -> np.ndarray:
        x = generated * self.gene_std + self.gene_mean
        return torch.maximum(x, self.gene_min).cpu().numpy().astype(np.float32)


class SequenceWGAN(ConditionalWGAN):
    """WGAN-GP over one-hot sequences (Killoran et al. 2017): softmax generator, 1-d CNN critic."""

    family = "wgan"
    modalities = ("sequence",)
    shape_hparams = ("vocab_size", "max_length")
    defaults = {
        "latent_dim": 32,
        "hidden_dim": 64,  # channels of the convolutions
        "n_layers": 2,
        "kernel_size": 5,
        # 2, not 5: at the default budget the generator needs the steps (ww_domain, 30 epochs:
        # per-position token-frequency L1 to the test rows 0.50 with 2, 0.69 with 5).
        "n_critic": 2,
        "gp_weight": 10.0,
        "learning_rate": 1e-3,
        "gumbel_temperature": 1.0,  # of the soft relaxation the straight-through gradient follows (see relaxation)
        # Rows per adversarial step: each trainer batch is split into steps of this size. A GAN
        # needs thousands of generator steps; the trainer's 30 epochs of 128-row batches give
        # ww_domain 330, 32 give 1,320 (c2st 0.966 -> 0.962, residue composition TV 0.19 -> 0.17:
        # still far from converged; the sequence VAE reaches 0.012).
        "minibatch_size": 32,
        # Issue 16 (ww_domain, 30 epochs, seed 0: c2st 0.962 -> 0.844, ~85 s CPU both). The classifier
        # read per-position residue frequencies that were off (L1 to the test rows 0.29; train vs
        # test 0.066; residue composition TV 0.17: S for T at the conserved TT, too many R and P);
        # the gap pattern was nearly right. 4x the generator steps had not fixed it (above), nor did 60
        # epochs (0.869 -> 0.862): the generator did not settle. Measured (bench/figures.md):
        # - relaxation softmax: the straight-through gradient follows softmax(logits), not
        #   softmax(logits + Gumbel noise), which is near one-hot whenever a draw's perturbed
        #   logits lie far apart and then passes almost no gradient (0.962 -> 0.918);
        # - Adam betas (0, 0.9) (Gulrajani et al.'s CIFAR-10 setting), not (0.5, 0.9): 0.869;
        # - lr_decay linear: both learning rates fall linearly to 0 over the epochs (as in their
        #   code), so the kept last weights are not a point of the generator's oscillation: 0.844
        #   (per-position L1 0.11, composition TV 0.026; gumbel relaxation with both: 0.864).
        "relaxation": "softmax",  # or "gumbel": the relaxation the straight-through gradient follows
        "betas": [0.0, 0.9],
        "lr_decay": "linear",  # or "none"
        # The share of each minibatch's rows the gradient penalty is computed on (an unbiased
        # estimate of it): its double backward was half the job's CPU. ww_domain, 30 epochs, c2st
        # seeds 0 / 1 / 2: all rows 0.844 / 0.815 / 0.848, half 0.842 / 0.828 / 0.837, 10-17% less CPU
        # (bench/figures.md); a penalty every other step instead (weighted x2) lost 0.03-0.04.
        "gp_rows": 0.5,
        "condition_on": None,
    }

    def __init__(self, vocab_size, max_length, latent_dim, hidden_dim, n_layers, kernel_size, n_critic, gp_weight,
                 learning_rate, gumbel_temperature=1.0, minibatch_size=None, condition_on=None, label_names=(),
                 relaxation="softmax", betas=(0.0, 0.9), lr_decay="linear", gp_rows=1.0):
        super().__init__()
        if kernel_size % 2 == 0:
            raise ValueError(f"wgan: kernel_size must be odd (so a convolution keeps the length), not {kernel_size}")
        if relaxation not in ("softmax", "gumbel"):
            raise ValueError(f"wgan: relaxation must be softmax or gumbel, not {relaxation!r}")
        if lr_decay not in ("linear", "none"):
            raise ValueError(f"wgan: lr_decay must be linear or none, not {lr_decay!r}")
        if not 0 < gp_rows <= 1:
            raise ValueError(f"wgan: gp_rows is the share of rows the gradient penalty sees, in (0, 1], not {gp_rows!r}")
        label_names = list(label_names) if condition_on else []
        n_labels = self.setup_conditioning(condition_on, label_names)
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.gradient_clip = None
        padding = kernel_size // 2
        self.generator_net = nn.ModuleDict({
            "project": nn.Linear(latent_dim + n_labels, hidden_dim * max_length),
            "convolve": _conv_stack(hidden_dim, hidden_dim, n_layers, kernel_size, padding, nn.ReLU),
            "tokens": nn.Conv1d(hidden_dim, vocab_size, 1),
        })
        self.critic_net = nn.ModuleDict({
            "convolve": _conv_stack(vocab_size + 1 + n_labels, hidden_dim, n_layers, kernel_size, padding,
                                    lambda: nn.LeakyReLU(0.2)),
            "score": _mlp(hidden_dim * max_length + n_labels, hidden_dim, 1, 1, lambda: nn.LeakyReLU(0.2)),
        })
        never = torch.zeros(vocab_size)
        never[MISSING] = -torch.inf  # MISSING is never a value
        self.register_buffer("never_missing", never)
        self._step = 0  # adversarial steps so far: every n_critic-th also updates the generator
        self.register_buffer("label_frequencies", torch.full((max(n_labels, 1),), 1.0 / max(n_labels, 1)))

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["hyper_parameters"]["modality"] = "sequence"

    @staticmethod
    def steps_per_batch(hparams: dict, adata: ad.AnnData, batch_size: int) -> int:
        return math.ceil(batch_size / (hparams.get("minibatch_size") or batch_size))

    @staticmethod
    def data_sizes(adata: ad.AnnData) -> dict:
        return {**RecurrentLanguageModel.data_sizes(adata), "label_names": label_names(adata)}

    @staticmethod
    def tensors(adata: ad.AnnData, split) -> dict[str, torch.Tensor]:
        return {**RecurrentLanguageModel.tensors(adata, split), **label_tensors(adata, split_rows(adata, split))}

    def init_from_data(self, adata: ad.AnnData) -> None:
        self.init_label_frequencies(adata)

    def configure_optimizers(self):
        lr, betas = self.hparams.learning_rate, tuple(self.hparams.betas)
        return (torch.optim.Adam(self.generator_net.parameters(), lr=lr, betas=betas),
                torch.optim.Adam(self.critic_net.parameters(), lr=lr, betas=betas))

    def training_step(self, batch, batch_idx):
        """The adversarial step on each `minibatch_size` rows of the batch in turn; with `lr_decay:
        linear` both learning rates first fall with the share of the epochs done."""
        if self.hparams.lr_decay == "linear" and self._trainer is not None:
            trainer = self.trainer
            done = (trainer.current_epoch + batch_idx / max(1, self.batches_per_epoch)) / max(1, trainer.max_epochs)
            for optimizer in self.optimizers():
                for group in optimizer.param_groups:
                    group["lr"] = self.hparams.learning_rate * max(0.0, 1.0 - done)
        size = self.hparams.minibatch_size or len(batch["tokens"])
        for start in range(0, len(batch["tokens"]), size):
            super().training_step({key: value[start : start + size] for key, value in batch.items()}, self._step)
            self._step += 1

    # ---- networks (layout: n x vocab x length) -------------------------------------------
    def real(self, batch) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = batch["tokens"]
        one_hot = F.one_hot(tokens, self.hparams.vocab_size).float().transpose(1, 2)
        m = (tokens != MISSING).float()[:, None, :]
        return one_hot * m, m

    def critic(self, one_hot, m, cond) -> torch.Tensor:
        # The label is a constant input channel too, so every position can be judged against it.
        label_channels = cond[:, :, None].expand(-1, -1, one_hot.shape[2])
        features = self.critic_net["convolve"](torch.cat([one_hot * m, m, label_channels], dim=1)).flatten(1)
        return self.critic_net["score"](torch.cat([features, cond], dim=1)).squeeze(1)

    def generate(self, z, cond, generator: torch.Generator | None = None) -> torch.Tensor:
        """One-hot records, n x vocab x length: a token drawn at every position from the
        generator's softmax (Gumbel-max, seeded by `generator`), all pad after the first pad.

        Hard one-hot, not the softmax itself: real rows are one-hot, and a critic shown soft
        rows tells them apart by their softness alone while the generator's argmax records
        drift away (ww_domain, 30 epochs: c2st 1.00 with soft output and argmax samples).
        Gradients pass straight through the draw to the softmax (Jang et al. 2017)."""
        hidden = self.generator_net["project"](torch.cat([z, cond], dim=1))
        hidden = self.generator_net["convolve"](F.relu(hidden.view(len(z), self.hparams.hidden_dim, -1)))
        logits = self.generator_net["tokens"](hidden) + self.never_missing[:, None]
        uniform = torch.rand(logits.shape, generator=generator).to(logits.device).clamp(1e-10, 1.0)
        noisy = logits - torch.log(-torch.log(uniform))
        relaxed = noisy if self.hparams.relaxation == "gumbel" else logits
        soft = (relaxed / self.hparams.gumbel_temperature).softmax(1)
        tokens = noisy.argmax(1)
        ended = (tokens == PAD).long().cumsum(1) > 0  # a record ends at its first pad, as real ones do
        tokens = tokens.masked_fill(ended, PAD)
        hard = F.one_hot(tokens, self.hparams.vocab_size).float().transpose(1, 2)
        return hard + soft - soft.detach()

    def to_data(self, generated: torch.Tensor) -> np.ndarray:
        return generated.argmax(1).cpu().numpy().astype(np.int8)


def _conv_stack(n_in: int, channels: int, n_layers: int, kernel_size: int, padding: int, activation) -> nn.Sequential:
    layers, width = [], n_in
    for _ in range(n_layers):
        layers += [nn.Conv1d(width, channels, kernel_size, padding=padding), activation()]
        width = channels
    return nn.Sequential(*layers)
