"""(Denoising) autoencoder for expression and time-course rows, DCA-like.

Training hides a random `noise` fraction of each row's observed entries from the encoder (input
dropout) and scores the reconstruction of every observed entry, so the network learns to fill
what it cannot see. `output: gaussian` models X (per-gene variance); `nb` / `zinb` model the raw
counts as DCA does, with the cell's size factor: NB / ZINB mean = softmax over genes times the
cell's library size (obs["library_size"]), per-gene dispersion, per-entry dropout logits (zinb).

- impute: the reconstruction from the row's observed entries (Gaussian mean, or for count
  outputs the expected X value E[log1p(counts / library * target_sum)]); observed entries are kept.
- sample: an autoencoder has no prior, so samples decode *perturbed encodings of training rows*:
  after training, `calibrate` stores the codes of up to `N_CODES` train+val rows (evenly spaced)
  and the per-dimension spread of the codes; a sample picks a stored code at random, adds
  Gaussian noise of `sample_noise` times that spread, decodes it and draws the output noise
  (Gaussian with the per-gene variance, or NB / ZINB counts at a library drawn from the
  training libraries, normalised and log1p'd). Samples therefore stay near the training cells.
- ensemble: K (Gaussian): K members trained together, the fill their mean, each sample from a
  member picked at random (`vae.SeedEnsemble`).
"""

from __future__ import annotations

import anndata as ad
import numpy as np
import torch
from torch import nn

from . import counts as cm
from .base import GenerativeModel, inference, keep_observed, row_chunks, stack_rows
from .vae import LOG_VAR_RANGE, VAE, SeedEnsemble, divisor, feature_scale, gaussian_nll, mlp

N_CODES = 1024


class Autoencoder(SeedEnsemble, GenerativeModel):
    family = "ae"
    modalities = ("expression", "timecourse")
    shape_hparams = ("n_genes",)
    sized_to_data = True
    # Small data trains for up to this many steps (sizing; 300 steps without improvement stop it
    # first on most tables). 1,500 stopped the AE on breast_cancer still learning: 4,000 took it
    # 9.78 -> 9.01 and the VAE's tissue_expr 0.309 -> 0.301; five of eight tables stopped earlier
    # and did not change (bench/figures.md, "Issue 15: steps").
    small_data_steps = 4000
    defaults = {
        "hidden_dim": 128,
        "latent_dim": 32,
        "n_layers": 1,
        "noise": 0.2,
        "output": "gaussian",
        "sample_noise": 0.5,
        "learning_rate": 1e-3,
        # Gaussian output: add a linear regression of each feature on the other visible
        # features (z-scores, the own feature's weight held at 0) to the decoder's output: the
        # chained-equations imputer's strength on small tables, learned jointly with the
        # network. models/sizing.py turns it on for small tables.
        "linear_skip": False,
        # Members trained together, each from its own start with its own input dropout; the
        # fill is their mean (`SeedEnsemble`; Gaussian only). models/sizing.py sets 5 on small data.
        "ensemble": 1,
    }
    has_latent = True

    def __init__(self, n_genes, hidden_dim, latent_dim, n_layers, noise, output, sample_noise, learning_rate,
                 target_sum=cm.DEFAULT_TARGET_SUM, linear_skip=False, ensemble=1):
        super().__init__()
        if output not in cm.LIKELIHOODS:
            raise ValueError(f"ae: output must be one of {', '.join(cm.LIKELIHOODS)}, not {output!r}")
        if not 0 <= noise < 1:
            raise ValueError(f"ae: noise is an input dropout rate in [0, 1), not {noise}")
        if ensemble != 1 and output != "gaussian":
            raise ValueError(f"ae: ensemble needs output gaussian, not {output!r}")
        self.save_hyperparameters()
        self.encoder = nn.Sequential(mlp(2 * n_genes, hidden_dim, n_layers), nn.Linear(hidden_dim, latent_dim))
        self.decoder = mlp(latent_dim, hidden_dim, n_layers)
        if output == "gaussian":
            self.to_gene_mean = nn.Linear(hidden_dim, n_genes)
            self.gene_log_var = nn.Parameter(torch.zeros(n_genes))
            # z-scores in and out, as the VAE: features of any scale or sign train alike
            # (0 / 1, no change, for checkpoints made before)
            self.register_buffer("x_center", torch.zeros(n_genes))
            self.register_buffer("x_scale", torch.ones(n_genes))
            if linear_skip:
                # fit in closed form before training (`fit_skip`), then held: the network learns the rest
                self.register_buffer("skip", torch.zeros(n_genes, n_genes))
                self.register_buffer("off_diagonal", 1.0 - torch.eye(n_genes))
                self.register_buffer("code_skips", torch.zeros(N_CODES, n_genes))  # the stored rows' skip terms
        else:
            self.count_head = cm.CountHead(hidden_dim, n_genes, zero_inflated=output == "zinb")
        self.register_buffer("library_quantiles", torch.ones(cm.N_LIBRARY_QUANTILES))
        self.register_buffer("codes", torch.zeros(N_CODES, latent_dim))
        self.register_buffer("n_codes", torch.zeros((), dtype=torch.long))
        self.register_buffer("code_scale", torch.ones(latent_dim))
        self.add_members(Autoencoder, ensemble)  # after member 0's own layers: their names stay as they were

    @property
    def counts_model(self) -> bool:
        return self.hparams.output in cm.COUNT_LIKELIHOODS

    data_sizes = staticmethod(VAE.data_sizes)
    tensors = staticmethod(VAE.tensors)

    def init_from_data(self, adata: ad.AnnData) -> None:
        train = self.tensors(adata, "train")
        for member in self.members:
            member._member_init(train)
        if self.hparams.get("linear_skip") and not self.counts_model:
            skip = fit_skip(self._z(train), self._z(self.tensors(adata, "val")))
            for member in self.members:
                member.skip.copy_(skip)

    def _member_init(self, train: dict[str, torch.Tensor]) -> None:
        if self.counts_model:
            if "counts" not in train:
                raise cm.CountDataMissing(f"ae output {self.hparams.output!r} needs raw counts in "
                                          "layers['counts']; this data has none (use output: gaussian)")
            self.count_head.init_from_counts(train["counts"], train["library"], train["observed"])
            self.library_quantiles.copy_(cm.library_quantiles(train["library"]))
        else:
            n = train["observed"].sum(0).clamp_min(1)
            mean = train["x"].sum(0) / n
            var = ((train["x"] - mean) ** 2 * train["observed"]).sum(0) / n
            with torch.no_grad():
                self.x_center.copy_(mean)
                self.x_scale.copy_(feature_scale(var))
                self.to_gene_mean.bias.zero_()
                self.gene_log_var.copy_(var.clamp_min(1e-3).log().clamp(*LOG_VAR_RANGE))
        self._member_calibrate(train)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        if not self.counts_model:  # checkpoints from before the z-score buffers: the identity
            for name in ("x_center", "x_scale", *(("code_skips",) if self.hparams.get("linear_skip") else ())):
                state_dict.setdefault(prefix + name, getattr(self, name).clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- networks -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor, observed: torch.Tensor) -> torch.Tensor:
        if not self.counts_model:
            x = (x - self.x_center) / divisor(self.x_scale)
        return self.encoder(torch.cat([x * observed, observed.float()], dim=1))

    def head(self, z: torch.Tensor):
        hidden = self.decoder(z)
        return self.count_head(hidden) if self.counts_model else self.x_center + self.x_scale * self.to_gene_mean(hidden)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """X's scale: the Gaussian mean, or log1p of the expected normalised expression."""
        out = self.head(z)
        if self.counts_model:
            return torch.log1p(cm.expected_share(out) * self.hparams.target_sum)
        return out

    def log_var(self) -> torch.Tensor:
        return self.gene_log_var.clamp(*LOG_VAR_RANGE)

    def loss(self, batch):
        """The members' mean loss: each hides its own entries (the same batch), and the mean
        keeps the loss on one member's scale for early stopping."""
        return torch.stack([member._member_loss(batch) for member in self.members]).mean()

    def _member_loss(self, batch):
        x, observed = batch["x"], batch["observed"]
        seen = observed
        if self.hparams.noise > 0:
            seen = observed & (torch.rand(observed.shape, device=observed.device) >= self.hparams.noise)
        out = self.head(self.encode(x, seen))
        if self.counts_model:
            full = bool(observed.all())
            return -cm.observed_log_prob_rows(batch["counts"], batch["library"], out, None if full else observed).mean()
        # every other observed entry feeds the skip, as at imputation: its diagonal is 0, so an
        # entry hidden from the encoder never reaches its own prediction
        out = out + self.skip_term(x, observed)
        return (gaussian_nll(x, out, self.log_var()) * observed).sum(1).mean()

    def _z(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """z-scores of the observed entries, 0 (the mean) where not observed."""
        return torch.where(tensors["observed"], (tensors["x"] - self.x_center) / divisor(self.x_scale), 0.0)

    def skip_term(self, x: torch.Tensor, seen: torch.Tensor) -> torch.Tensor | float:
        """The `linear_skip` part of the Gaussian mean: each feature regressed on the other
        visible features' z-scores (unseen ones count as the mean), on X's scale."""
        if self.counts_model or not self.hparams.get("linear_skip"):
            return 0.0
        z = (x - self.x_center) / divisor(self.x_scale) * seen
        return self.x_scale * (z @ (self.skip * self.off_diagonal).t())

    def calibrate(self, tensors: dict[str, torch.Tensor]) -> None:
        for member in self.members:
            member._member_calibrate(tensors)

    def _member_calibrate(self, tensors: dict[str, torch.Tensor]) -> None:
        """Store codes of up to N_CODES rows (evenly spaced) and their per-dimension spread."""
        n_rows = len(tensors["x"])
        if n_rows == 0:
            return
        pick = torch.linspace(0, n_rows - 1, min(n_rows, N_CODES)).round().long()
        was_training = self.training
        self.eval()
        x, observed = tensors["x"][pick].to(self.device), tensors["observed"][pick].to(self.device)
        with torch.no_grad():
            codes = self.encode(x, observed)
            if self.hparams.get("linear_skip") and not self.counts_model:
                self.code_skips.zero_()
                self.code_skips[: len(pick)] = self.skip_term(torch.where(observed, x, 0.0), observed)
        self.train(was_training)
        self.codes.zero_()
        self.codes[: len(pick)] = codes
        self.n_codes.fill_(len(pick))
        self.code_scale.copy_(codes.std(0) if len(pick) > 1 else torch.ones_like(codes[0]))

    # ---- use ----------------------------------------------------------------------------
    @inference
    def sample(self, n: int, generator: torch.Generator) -> np.ndarray:
        """`_member_sample`; with `ensemble`, each sample from a member picked at random."""
        if not self.others:
            return self._member_sample(n, generator)
        out = np.empty((n, self.hparams.n_genes), dtype=np.float32)
        for member, rows in self.rows_by_member(n, generator):
            if len(rows):
                out[rows] = member._member_sample(len(rows), generator)
        return out

    def _member_sample(self, n: int, generator: torch.Generator) -> np.ndarray:
        """Decoded perturbed training codes plus output noise (see the module docstring)."""
        device = self.device
        which = torch.randint(0, max(int(self.n_codes), 1), (n,), generator=generator)
        eps = torch.randn(n, self.hparams.latent_dim, generator=generator)
        z = (self.codes.cpu()[which] + self.hparams.sample_noise * self.code_scale.cpu() * eps).to(device)
        if self.counts_model:
            library = cm.draw_libraries(self.library_quantiles, n, generator)
            drawn = cm.draw_counts(self.head(z), library.to(device), generator)
            return cm.normalise(drawn, library, self.hparams.target_sum).numpy().astype(np.float32)
        noise = torch.randn(n, self.hparams.n_genes, generator=generator).to(device)
        mean = self.decode(z)
        if self.hparams.get("linear_skip"):  # the network learned what the skip of its row leaves
            mean = mean + self.code_skips[which.to(device)]
        return (mean + noise * (0.5 * self.log_var()).exp()).cpu().numpy().astype(np.float32)

    @inference
    def impute(self, values: np.ndarray, observed: np.ndarray, obs=None) -> np.ndarray:
        """`_member_impute`; with `ensemble`, the members' mean."""
        return self.mean_of_members(values, observed, lambda member: member._member_impute(values, observed, obs))

    def _member_impute(self, values: np.ndarray, observed: np.ndarray, obs=None) -> np.ndarray:
        """The reconstruction from the row's observed entries; with a count output, the expected
        X value E[log1p(counts / library * target_sum)] at the row's library (obs["library_size"],
        else the median training library)."""
        if self.counts_model:
            library = cm.row_libraries(obs, len(values), self.library_quantiles).to(self.device)
            parts = [
                cm.expected_log_normalised(self.head(self._code(values[rows], observed[rows])), library[rows],
                                           self.hparams.target_sum, where=torch.from_numpy(~observed[rows]))
                for rows in row_chunks(len(values))
            ]
            return keep_observed(values, observed, stack_rows(parts, self.hparams.n_genes))
        parts = [self.decode(self._code(values[rows], observed[rows])) + self._skip(values[rows], observed[rows])
                 for rows in row_chunks(len(values))]
        return keep_observed(values, observed, stack_rows(parts, self.hparams.n_genes))

    def _skip(self, values: np.ndarray, observed: np.ndarray) -> torch.Tensor | float:
        x = torch.from_numpy(np.where(observed, values, 0.0).astype(np.float32)).to(self.device)
        return self.skip_term(x, torch.from_numpy(observed).to(self.device))

    @inference
    def embed(self, values: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
        """Codes of the rows; with `ensemble`, member 0's (members' codes are not aligned)."""
        observed = ~np.isnan(values) if observed is None else observed
        parts = [self._code(values[rows], observed[rows]) for rows in row_chunks(len(values))]
        return stack_rows(parts, self.hparams.latent_dim)

    def _code(self, values: np.ndarray, observed: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.where(observed, values, 0.0).astype(np.float32)).to(self.device)
        return self.encode(x, torch.from_numpy(observed).to(self.device))


RIDGE_GRID = (1e-3, 1e-2, 1e-1, 1.0, 10.0)
KEEP_GRID = (0.7, 0.9, 1.0)
UNCHOSEN = (0.9, 1e-1)  # keep and penalty when no val entry can choose


def fit_skip(train_z: torch.Tensor, val_z: torch.Tensor) -> torch.Tensor:
    """Each feature's ridge regression on every other feature (z-scores, the mean where not
    observed), fit as if each other feature were seen with chance `keep` (dropout as a
    penalty), all features in one inverse: with P = (keep^2 G + keep (1 - keep) diag(G) + lam I)^-1,
    feature i's weights on j are -P[j, i] / (keep share_i P[i, i]), share_i the rows where i is
    observed. keep and lam (a multiple of G's mean diagonal) are the pair that predicts the val
    rows' observed entries best (UNCHOSEN without val entries). Returns W, W[i, j] the weight of
    feature j in feature i's prediction."""
    z = train_z.double()
    gram = z.t() @ z / max(len(z), 1)
    share = (z != 0).double().mean(0).clamp_min(1e-3)
    scale = float(gram.diagonal().mean().clamp_min(1e-8))
    eye = torch.eye(len(gram), dtype=gram.dtype)
    v = val_z.double()
    seen = v != 0
    best, best_error = None, None
    pairs = [(keep, lam) for keep in KEEP_GRID for lam in RIDGE_GRID] if seen.any() else [UNCHOSEN]
    for keep, lam in pairs:
        noisy = keep**2 * gram + keep * (1 - keep) * torch.diag(gram.diagonal())
        precision = torch.linalg.inv(noisy + lam * scale * eye)
        weights = (-precision / (keep * share * precision.diagonal())[None, :]).t().contiguous()
        weights.fill_diagonal_(0.0)
        error = float((((v @ weights.t()) - v) ** 2)[seen].mean()) if seen.any() else 0.0
        if best_error is None or error < best_error:
            best, best_error = weights, error
    return best.float()
