"""Variational autoencoder for expression matrices (log-normalised X) with missing entries.

`likelihood: gaussian` models X directly; `nb` / `zinb` (scVI-like) model the raw counts in
`layers["counts"]` with a softmax-over-genes decoder times the library size and a per-gene
dispersion, and map back onto X's scale for `impute` and `sample` (see `counts.py`).
`beta` weighs the KL term (beta-VAE). `condition_on: label` makes it a conditional VAE (CVAE):
the one-hot of obs["label"] joins the encoder's and the decoder's input.
`ensemble: K` (Gaussian) trains K members in one module and fills with their mean (`SeedEnsemble`).
"""

from __future__ import annotations

import math

import anndata as ad
import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from . import counts as cm
from . import logscale
from ..provenance import meta
from .base import (
    draw_label_codes,
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
# The VAE applies them in each gene's own units (`log_var_bounds`), the AE on X's scale.
LOG_VAR_RANGE = (-7.0, 5.0)
# Pseudo-rows that shrink a series' mean residual towards 0 (`series_offsets`).
SERIES_SHRINK = 1.0
# Adam's step size when refining latents at imputation (`refine_steps`).
REFINE_LR = 0.05
# The generator seed of the entries validation hides under masked denoising.
VAL_DENOISE_SEED = 12345
# The obs column a conditional model may be conditioned on.
LABEL_COLUMN = "label"


def mlp(n_in: int, hidden_dim: int, n_layers: int, dropout: float = 0.0) -> nn.Sequential:
    """Linear -> LayerNorm -> ReLU (-> Dropout when `dropout` > 0: no layer at 0, so the weights'
    names are those of checkpoints made before dropout existed)."""
    layers, width = [], n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU()]
        layers += [nn.Dropout(dropout)] if dropout > 0 else []
        width = hidden_dim
    return nn.Sequential(*layers)


def hide_at_random(observed: torch.Tensor, rate: float, generator: torch.Generator | None) -> torch.Tensor:
    """`observed` with a random `rate` of its True entries set False (masked denoising: the
    encoder does not see them, the likelihood still scores them, so every step practises filling
    entries the model cannot see, the task `impute` does)."""
    draw = torch.rand(observed.shape, generator=generator).to(observed.device)
    return observed & (draw >= rate)


# ---- labels (conditional models) ---------------------------------------------------------------
def label_names(adata: ad.AnnData) -> list[str]:
    """Sorted distinct values of obs["label"] (none when the data has no labels)."""
    if LABEL_COLUMN not in adata.obs:
        return []
    labels = adata.obs[LABEL_COLUMN]
    return sorted(map(str, labels[labels.notna()].unique()))


def label_codes(labels, names) -> np.ndarray:
    """Index into `names` of each label; -1 for a missing or unknown label."""
    index = {name: i for i, name in enumerate(names)}
    return np.array([index.get(str(v), -1) if v == v and v is not None else -1 for v in labels], dtype=np.int64)


def label_tensors(adata: ad.AnnData, split) -> dict[str, torch.Tensor]:
    """{"labels": codes into `label_names(adata)` of the split's rows}; {} without labels."""
    names = label_names(adata)
    if not names:
        return {}
    codes = label_codes(adata.obs[LABEL_COLUMN][split_rows(adata, split)], names)
    return {"labels": torch.from_numpy(codes)}


def one_hot(codes: torch.Tensor | None, n_labels: int, n_rows: int, device) -> torch.Tensor:
    """One-hot rows (-1, an unlabelled row, gives all zeros); n x 0 when unconditional."""
    if not n_labels:
        return torch.zeros(n_rows, 0, device=device)
    if codes is None:
        return torch.zeros(n_rows, n_labels, device=device)
    codes = codes.to(device)
    return F.one_hot(codes.clamp_min(0), n_labels).float() * (codes >= 0).float()[:, None]


# Ex-post latent density (`fit_latent_density`): rows it is fit on (a seeded subset beyond),
# posterior draws per row, and the most mixture components.
LATENT_FIT_ROWS = 2000
LATENT_FIT_DRAWS = 5
MAX_LATENT_COMPONENTS = 10
LATENT_SAMPLING = ("fitted", "prior")


# ---- ensembles over seeds ----------------------------------------------------------------------
class SeedEnsemble:
    """`ensemble: K`: K members of one family in one module, trained together, each with its own
    initialisation and its own random masking; the fill is the members' mean.

    Why: on the small tables a network's fill depends on its random start and masks; a single
    member's error varies by several percent from seed to seed, and the mean of 5 members was
    2-9% below the average member on the small-data benchmark (docs/small-data.md).

    The model itself is member 0 (its weights keep their names, so checkpoints made before, with
    no `ensemble`, load and behave as they did); `others` holds members 1..K-1, plain modules of
    the same class with `ensemble: 1`, built from the same hyper-parameters. The family's
    `_member_*` methods are one member's work; its public methods combine them with these
    helpers. Latent spaces are not aligned across members: `embed` is member 0's."""

    def add_members(self, member_class: type, ensemble: int) -> None:
        if int(ensemble) != ensemble or ensemble < 1:
            raise ValueError(f"{self.family}: ensemble is a number of members (1 or more), not {ensemble}")
        self.others = nn.ModuleList(member_class(**{**self.hparams, "ensemble": 1}) for _ in range(int(ensemble) - 1))

    @property
    def members(self) -> list:
        return [self, *self.others]

    def member_parameters(self) -> list[list[nn.Parameter]]:
        """Each member's own parameters (member 0's: the model's, without the others')."""
        own = [p for name, p in self.named_parameters() if not name.startswith("others.")]
        return [own] + [list(member.parameters()) for member in self.others]

    def configure_gradient_clipping(self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None) -> None:
        """Lightning's hook: with `ensemble`, each member's gradient is clipped on its own, as it
        would be trained alone. One norm over all members couples them and, with the loss their
        mean (a K-th of each gradient), clips far less than a single network: on breast_cancer
        the joint AE then trained like an unclipped one (val NLL -2.0 against -2.9 to -5.4 for
        members trained apart). Clipping a K-th of the gradient at a K-th of the threshold is
        clipping the member's own gradient, and Adam is blind to the constant K."""
        if not self.others or not gradient_clip_val:
            return super().configure_gradient_clipping(optimizer, gradient_clip_val, gradient_clip_algorithm)
        limit = gradient_clip_val / len(self.members)
        for parameters in self.member_parameters():
            if gradient_clip_algorithm == "value":
                nn.utils.clip_grad_value_(parameters, limit)
            else:
                nn.utils.clip_grad_norm_(parameters, limit)

    def mean_of_members(self, values: np.ndarray, observed: np.ndarray, fill) -> np.ndarray:
        """The members' mean of `fill(member)` at the unobserved entries (observed ones kept bit
        for bit: a float32 mean of equal values need not be the value)."""
        if not self.others:
            return fill(self)
        mean = np.mean([fill(member) for member in self.members], axis=0, dtype=np.float64)
        return keep_observed(values, observed, mean)

    def rows_by_member(self, n: int, generator: torch.Generator) -> list[tuple]:
        """(member, rows) for `n` samples, each from a member picked at random: the samples
        then spread over what every member learned."""
        which = torch.randint(0, len(self.members), (n,), generator=generator).numpy()
        return [(member, np.flatnonzero(which == i)) for i, member in enumerate(self.members)]

    def draws_in_turn(self, n_draws: int, draw) -> np.ndarray:
        """`n_draws` draws (n_draws, entries), draw d from member d mod K (`draw(member, count)`
        gives a member's share): their spread includes the members' disagreement, which is
        uncertainty a single network does not see."""
        k = len(self.members)
        parts = [draw(member, len(range(i, n_draws, k))) for i, member in enumerate(self.members)]
        out = np.empty((n_draws, parts[0].shape[1]), dtype=np.float32)
        for i, part in enumerate(parts):
            out[i::k] = part
        return out


class VAE(SeedEnsemble, GenerativeModel):
    """VAE; the encoder sees X with unobserved entries zeroed plus the observed mask,
    so it can tell a true zero from a hidden value. Loss = masked Gaussian NLL with a learned
    per-gene variance + beta * KL, with beta ramped up over the first `kl_warmup_epochs` epochs
    (training only: the validation loss always uses the full beta, so early stopping compares
    like with like).

    With `likelihood` nb or zinb the Gaussian NLL becomes the count NLL of the observed raw
    counts (NB mean `rho_g * library`, `rho` a softmax over the genes plus a rest bucket),
    `impute` fills `E[log1p(counts / library * target_sum)]` and `sample` draws counts at a
    library size drawn from the training libraries, then normalises and log1p's them.

    `condition_on: label` (CVAE): the training label names are kept in `hparams.label_names`,
    a row's label one-hot is appended to the encoder's input and to z; `sample` takes `labels`
    (indices into label_names; without them, drawn at the training frequencies), `impute`,
    `impute_draws` and `embed` read the rows' labels from `obs` (an unknown or missing label
    gives an all-zero one-hot)."""

    family = "vae"
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
        "latent_dim": 10,
        "n_layers": 1,
        "beta": 1.0,
        "kl_warmup_epochs": 5,
        "learning_rate": 1e-3,
        "likelihood": "gaussian",
        "condition_on": None,
        # Small-data regime (models/sizing.py sets them from the number of training rows when
        # the config does not): dropout in both networks, and the fraction of observed entries
        # hidden from the encoder at each step (masked denoising; 0 = plain VAE).
        "dropout": 0.0,
        "denoise_rate": 0.0,
        # Gradient steps that refine each row's latent mean at imputation (Gaussian likelihood):
        # the encoder's guess, then the MAP of z under the decoder and the prior given the row's
        # observed entries. Closes the amortisation gap an encoder fit on few rows leaves.
        "refine_steps": 0,
        # Time courses: add each series' mean residual of a gene to its rows' fills (rows of a
        # series are then imputed together: `rows_independent` is False). models/sizing.py
        # turns it on for time-course data.
        "series_offsets": False,
        # Where `sample` draws z: "fitted" = a Gaussian mixture fit to the train rows' posterior
        # draws when generate calls `fit_latent_density` (ex-post density estimation, Ghosh et
        # al. 2020: on few rows the aggregate posterior leaves holes in N(0, I) that decode to
        # rows unlike any real one); "prior" = N(0, I).
        "latent_sampling": "fitted",
        # Members trained together, each from its own start with its own random masks; the
        # fill is their mean (`SeedEnsemble`; Gaussian only). models/sizing.py sets 5 on small data.
        "ensemble": 1,
        # Gaussian, on input that is not log-normalised counts: fit each right-skewed positive
        # feature (concentrations, areas, energies) on a log scale (models/logscale.py); fills and
        # samples come back on X's scale. false: every feature on its own scale.
        "log_skewed": True,
    }
    has_latent = True
    can_draw_imputations = True

    def __init__(
        self, n_genes, hidden_dim, latent_dim, n_layers, beta, kl_warmup_epochs, learning_rate,
        likelihood="gaussian", target_sum=cm.DEFAULT_TARGET_SUM, condition_on=None, label_names=(),
        dropout=0.0, denoise_rate=0.0, refine_steps=0, series_offsets=False, latent_sampling="fitted",
        ensemble=1, log_skewed=True,
    ):
        super().__init__()
        if likelihood not in cm.LIKELIHOODS:
            raise ValueError(f"vae: likelihood must be one of {', '.join(cm.LIKELIHOODS)}, not {likelihood!r}")
        if n_layers < 1:
            raise ValueError(f"vae: n_layers must be at least 1, not {n_layers}")
        if latent_sampling not in LATENT_SAMPLING:
            raise ValueError(f"vae: latent_sampling must be one of {', '.join(LATENT_SAMPLING)}, not {latent_sampling!r}")
        if not (0 <= dropout < 1 and 0 <= denoise_rate < 1):
            raise ValueError(f"vae: dropout and denoise_rate must be in [0, 1), not {dropout}, {denoise_rate}")
        if ensemble != 1 and likelihood != "gaussian":
            raise ValueError(f"vae: ensemble needs likelihood gaussian, not {likelihood!r}")
        label_names = list(label_names) if condition_on else []
        self.rows_independent = not series_offsets  # a series' rows are filled together
        n_labels = _check_conditioning(condition_on, label_names)
        self.save_hyperparameters()
        self.latent_mixture = None  # (weights, means, Cholesky factors) once fit_latent_density ran
        self.sample_log_var = None  # per-gene noise of `sample`, once fit_latent_density ran (Gaussian)
        # The first layer reads [x, observed mask, label one-hot]; `encode` splits its weight.
        self.encoder = mlp(2 * n_genes + n_labels, hidden_dim, n_layers, dropout)
        self.to_latent_mean = nn.Linear(hidden_dim, latent_dim)
        self.to_latent_log_var = nn.Linear(hidden_dim, latent_dim)
        self.decoder = mlp(latent_dim + n_labels, hidden_dim, n_layers, dropout)
        if likelihood == "gaussian":
            self.to_gene_mean = nn.Linear(hidden_dim, n_genes)
            self.gene_log_var = nn.Parameter(torch.zeros(n_genes))
            # Each feature's training mean and sd: the networks see and predict z-scores, so
            # centred, negative or wildly scaled features (a clinical table's areas beside its
            # ratios) train alike. 0 / 1 (no change) for checkpoints made before they existed.
            self.register_buffer("x_center", torch.zeros(n_genes))
            self.register_buffer("x_scale", torch.ones(n_genes))
            self.log_scale = logscale.LogScale(n_genes)  # the skewed features' (`log_skewed`)
        else:
            self.count_head = cm.CountHead(hidden_dim, n_genes, zero_inflated=likelihood == "zinb")
            self.register_buffer("library_quantiles", torch.ones(cm.N_LIBRARY_QUANTILES))
        if n_labels:
            self.register_buffer("label_frequencies", torch.full((n_labels,), 1.0 / n_labels))
        self.add_members(VAE, ensemble)  # after member 0's own layers: their names stay as they were

    @classmethod
    def from_data(cls, adata: ad.AnnData, **hparams) -> VAE:
        """As the base, plus the training label names when the model is conditional."""
        unknown = sorted(set(hparams) - set(cls.defaults))
        if unknown:
            raise ValueError(f"{cls.family}: unknown hyper-parameters {unknown}; valid: {sorted(cls.defaults)}")
        hparams = {**cls.defaults, **hparams}
        names = label_names(adata) if hparams["condition_on"] else []
        model = cls(**cls.data_sizes(adata), **hparams, label_names=names)
        model.init_from_data(adata)
        return model

    @property
    def counts_model(self) -> bool:
        return self.hparams.likelihood in cm.COUNT_LIKELIHOODS

    @property
    def n_labels(self) -> int:
        return len(self.hparams.get("label_names") or ()) if self.hparams.get("condition_on") else 0

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
        the data has counts, and the label codes when it has labels. A sparse X gives `CsrRows`
        that batches densify a batch at a time."""
        if is_sparse(adata):
            return {**sparse_tensors(adata, split, with_counts=cm.has_counts(adata)), **label_tensors(adata, split)}
        out = VAE.observed_tensors(adata, split)
        if cm.has_counts(adata):
            rows = split_rows(adata, split)
            out.update(cm.count_tensors(adata, rows, observed_mask(adata)[rows]))
        out.update(label_tensors(adata, split))
        return out

    def init_from_data(self, adata: ad.AnnData) -> None:
        """Start the decoder at the per-gene mean and variance: training then only learns structure.
        Gaussian with `log_skewed`: first choose the features fit on a log scale."""
        train = self.tensors(adata, "train")
        if not self.counts_model and self.hparams.get("log_skewed", False):
            self.data_choices["log_skewed"] = logscale.choose_for(
                [member.log_scale for member in self.members], train, list(adata.var_names), self.family,
                logged_input=logscale.LOGGED_BY_PREPROCESS.get(meta(adata).get("input_scale")))
        for member in self.members:
            member._member_init(train)

    def warp(self, x: torch.Tensor) -> torch.Tensor:
        """X's scale -> the scale the Gaussian model fits (`LogScale.warp`)."""
        return x if self.counts_model else self.log_scale.warp(x)

    def unwarp(self, t: torch.Tensor) -> torch.Tensor:
        """The model's scale -> X's (`LogScale.unwarp`)."""
        return t if self.counts_model else self.log_scale.unwarp(t)

    def _unwarp_np(self, t: np.ndarray) -> np.ndarray:
        if self.counts_model or not self.log_scale.active:
            return t
        return self.unwarp(torch.as_tensor(t, device=self.device)).cpu().numpy()

    def _member_init(self, train: dict[str, torch.Tensor]) -> None:
        if self.n_labels:
            codes = train["labels"]
            counts = torch.bincount(codes[codes >= 0], minlength=self.n_labels).float()
            self.label_frequencies.copy_(counts / counts.sum().clamp_min(1))
        if self.counts_model:
            if "counts" not in train:
                raise cm.CountDataMissing(f"vae likelihood {self.hparams.likelihood!r} needs raw counts in "
                                          "layers['counts']; this data has none (use likelihood: gaussian)")
            self.count_head.init_from_counts(train["counts"], train["library"], train["observed"])
            self.library_quantiles.copy_(cm.library_quantiles(train["library"]))
            return
        counts = train["observed"].sum(0).clamp_min(1)
        x = self.warp(train["x"]) * train["observed"]
        mean = x.sum(0) / counts
        var = ((x - mean) ** 2 * train["observed"]).sum(0) / counts
        with torch.no_grad():
            self.x_center.copy_(mean)
            self.x_scale.copy_(feature_scale(var))
            self.to_gene_mean.bias.zero_()
            self.gene_log_var.copy_(torch.clamp(var.clamp_min(1e-300).log(), *self.log_var_bounds()))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Gaussian checkpoints from before the z-score buffers: keep 0 / 1, the identity.
        if self.hparams.likelihood == "gaussian":
            for name in ("x_center", "x_scale"):
                state_dict.setdefault(prefix + name, getattr(self, name).clone())
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    # ---- networks -----------------------------------------------------------------------
    def encode(self, x: torch.Tensor, observed: torch.Tensor | None, labels: torch.Tensor | None = None):
        """Latent mean and log-variance of rows `x` (unobserved entries already zero; `observed`
        None when every entry is observed).

        The first layer is Linear([x, observed, one-hot]) computed by parts of its weight
        (`SplitInputLinear`), so a fully observed batch costs what an encoder of x alone does."""
        first = self.encoder[0]
        mask = None if observed is None else observed.to(x.dtype)
        if not self.counts_model:  # z-scores, 0 (the mean) where unobserved
            x = (x - self.x_center) / divisor(self.x_scale)
            x = x if mask is None else x * mask
        cond = one_hot(labels, self.n_labels, len(x), x.device) if self.n_labels else None
        if torch.is_autocast_enabled(x.device.type):  # mixed precision: the plain layer, which autocast casts
            parts = [x, torch.ones_like(x) if mask is None else mask] + ([cond] if cond is not None else [])
            hidden = first(torch.cat(parts, dim=1))
        else:
            hidden = SplitInputLinear.apply(x, mask, cond, first.weight, first.bias)
        hidden = self.encoder[1:](hidden)
        return self.to_latent_mean(hidden), self.to_latent_log_var(hidden).clamp(-10, 10)

    def decoder_input(self, z: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """z, with the label one-hot appended for a conditional model."""
        if not self.n_labels:
            return z
        return torch.cat([z, one_hot(labels, self.n_labels, len(z), z.device)], dim=1)

    def decode(self, zc: torch.Tensor) -> torch.Tensor:
        """X's scale at decoder input `zc`: the Gaussian mean, or log1p of the expected normalised expression."""
        if self.counts_model:
            share = cm.expected_share(self.count_head(self.decoder(zc)))
            return torch.log1p(share * self.hparams.target_sum)
        return self.x_center + self.x_scale * self.to_gene_mean(self.decoder(zc))

    def count_params(self, zc: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.count_head(self.decoder(zc))

    def log_var(self) -> torch.Tensor:
        return torch.clamp(self.gene_log_var, *self.log_var_bounds())

    def log_var_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """LOG_VAR_RANGE in each feature's own units (sd 0.03 to 12 times its train sd). On X's
        scale, a feature in units a million times larger than the rest (a speech table's energy
        coefficients of ~1e10 beside its ratios) could not widen its variance to its errors and
        outweighed every other feature in the loss (pd_speech's train loss ~2.5e15; now ~680)."""
        shift = 2 * torch.log(divisor(self.x_scale))
        return LOG_VAR_RANGE[0] + shift, LOG_VAR_RANGE[1] + shift

    def loss(self, batch):
        """The members' mean loss: each hides its own entries and draws its own z (the same
        batch), and the mean keeps the loss on one member's scale for early stopping."""
        kl_weight = self.kl_weight()  # the epoch is the trainer's: members are plain modules
        if not self.counts_model and self.log_scale.active:  # onto the model's scale once: every member has the same one
            batch = {**batch, "x": self.warp(batch["x"]) * batch["observed"]}  # unobserved entries stay 0
        return torch.stack([member._member_loss(batch, kl_weight) for member in self.members]).mean()

    def _member_loss(self, batch, kl_weight: float):
        x, observed, labels = batch["x"], batch["observed"], batch.get("labels")  # x on the model's scale
        seen = self._denoising_input(observed)
        if bool(observed.all()):
            observed = None  # skips the mask's work in the encoder and the likelihood
        x_in = x if seen is None else x * seen
        mean, log_var = self.encode(x_in, observed if seen is None else seen, labels)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        zc = self.decoder_input(z, labels)
        if self.counts_model:
            nll = -cm.observed_log_prob_rows(batch["counts"], batch["library"], self.count_params(zc), observed)
        else:
            nll = gaussian_nll(x, self.decode(zc), self.log_var())
            nll = (nll if observed is None else nll * observed).sum(1)
        kl = -0.5 * (1 + log_var - mean**2 - log_var.exp())
        return (nll + kl_weight * kl.sum(1)).mean()

    def _denoising_input(self, observed: torch.Tensor) -> torch.Tensor | None:
        """What the encoder may see under masked denoising (None when `denoise_rate` is 0):
        fresh random entries hidden at each training step; in validation always the same ones
        (a fixed generator), so epochs are compared on one imputation task."""
        rate = self.hparams.get("denoise_rate", 0.0)
        if not rate:
            return None
        generator = None if self.training else torch.Generator().manual_seed(VAL_DENOISE_SEED)
        return hide_at_random(observed, rate, generator)

    def kl_weight(self) -> float:
        warmup = self.hparams.kl_warmup_epochs
        if not self.training or warmup <= 0:
            return self.hparams.beta
        return self.hparams.beta * min(1.0, (self.current_epoch + 1) / (warmup + 1))

    # ---- use ----------------------------------------------------------------------------
    @inference
    def sample(self, n: int, generator: torch.Generator, labels: np.ndarray | None = None) -> np.ndarray:
        """`_member_sample`; with `ensemble`, each sample from a member picked at random."""
        if not self.others:
            return self._member_sample(n, generator, labels)
        out = np.empty((n, self.hparams.n_genes), dtype=np.float32)
        for member, rows in self.rows_by_member(n, generator):
            if len(rows):
                out[rows] = member._member_sample(len(rows), generator, None if labels is None else np.asarray(labels)[rows])
        return out

    def _member_sample(self, n: int, generator: torch.Generator, labels: np.ndarray | None = None) -> np.ndarray:
        """Decoder means at z (from the fitted latent mixture when `fit_latent_density` ran,
        else N(0, I)) plus Gaussian noise: each gene's learned variance, or, once
        `fit_latent_density` ran, its residual variance where that lies outside the learned one's
        bounds (`residual_log_var`).
        Count likelihoods: counts drawn from the NB / ZINB at a library drawn from the training
        libraries, normalised to target_sum and log1p'd (X's scale). A conditional model decodes
        at `labels` (n indices into `hparams.label_names`; default: drawn at the training
        frequencies); an unconditional one rejects them."""
        device = self.device
        codes = draw_label_codes(self, n, generator, labels)
        z = self._draw_latent(n, generator).to(device)
        zc = self.decoder_input(z, codes)
        if self.counts_model:
            library = cm.draw_libraries(self.library_quantiles, n, generator)
            counts = cm.draw_counts(self.count_params(zc), library.to(device), generator)
            return cm.normalise(counts, library, self.hparams.target_sum).numpy().astype(np.float32)
        noise = torch.randn(n, self.hparams.n_genes, generator=generator).to(device)
        log_var = self.log_var() if self.sample_log_var is None else self.sample_log_var.to(device)
        x = self.unwarp(self.decode(zc) + noise * (0.5 * log_var).exp())
        return x.cpu().numpy().astype(np.float32)

    @inference
    def fit_latent_density(self, values: np.ndarray, observed: np.ndarray, obs=None, seed: int = 0) -> str:
        """`_member_latent_density` of each member (each samples from its own latent space)."""
        said = [member._member_latent_density(values, observed, obs, seed) for member in self.members]
        return said[0] + (f" (member 0 of {len(said)}; each member fit its own)" if self.others else "")

    def _member_latent_density(self, values: np.ndarray, observed: np.ndarray, obs=None, seed: int = 0) -> str:
        """Fit `sample`'s latent density to rows of the training data: a full-covariance Gaussian
        mixture (1 to MAX_LATENT_COMPONENTS components, the lowest BIC) on LATENT_FIT_DRAWS draws
        of each row's posterior q(z|x), so the spread of each posterior is kept. Seeded by
        `seed`. Gaussian likelihood: also `sample`'s noise, each gene's mean squared residual of
        its observed entries around the rows decoded at those draws (`residual_log_var`). Returns
        what was fit, for the log; "prior" sampling fits no mixture."""
        self.latent_mixture = self.sample_log_var = None
        if len(values) < 2:
            return "z ~ N(0, I): too few rows to fit"
        codes = self._row_labels(obs, len(values))
        rng = np.random.default_rng([seed, 11])
        draws, squares, counts = [], 0.0, 0.0
        for rows in row_chunks(len(values)):
            x, seen = self._input(values[rows], observed[rows])
            label_rows = None if codes is None else codes[rows]
            mean, log_var = self.encode(x, seen, label_rows)
            mean, sd = mean.cpu().numpy(), (0.5 * log_var).exp().cpu().numpy()
            for _ in range(LATENT_FIT_DRAWS):
                draws.append(mean + sd * rng.standard_normal(mean.shape))
                if not self.counts_model:
                    decoded = self.decode(self.decoder_input(torch.as_tensor(draws[-1], dtype=torch.float32, device=self.device), label_rows))
                    # float64: a feature of sd 1e-19 (a speech table's wavelet means) has squares
                    # below float32's range, and its samples then took an sd of 1e-15
                    squares = squares + (((x - decoded).double() ** 2) * seen).sum(0)
                    counts = counts + seen.sum(0)
        said = ""
        if not self.counts_model:
            self.sample_log_var, said = self.residual_log_var(squares, counts)
        if self.hparams.get("latent_sampling", "fitted") == "prior":
            return "z ~ N(0, I) (latent_sampling: prior)" + said
        from sklearn.mixture import GaussianMixture  # here: only generate needs it

        points = np.concatenate(draws).astype(np.float64)
        largest = max(1, min(MAX_LATENT_COMPONENTS, len(values) // 10))
        fits = [GaussianMixture(k, covariance_type="full", reg_covar=1e-3, random_state=seed).fit(points)
                for k in range(1, largest + 1)]
        best = min(fits, key=lambda fit: fit.bic(points))
        self.latent_mixture = tuple(torch.as_tensor(a, dtype=torch.float32) for a in
                                    (best.weights_, best.means_, np.linalg.cholesky(best.covariances_)))
        return (f"z from a {best.n_components}-component Gaussian mixture fit to the posteriors of {len(values)} "
                f"train rows (lowest BIC of 1-{largest}; setting: latent_sampling: prior)" + said)

    def residual_log_var(self, squares: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, str]:
        """Each gene's log noise variance for `sample`, and what it chose, for the log. The learned
        variance is bounded (`log_var_bounds`: sd 0.03 to 12 times the gene's train sd), which
        keeps the NLL finite but gives a gene that the decoder fits closer or looser than that
        (a constant one, an exact function of others) too much or too little noise.
        A gene whose mean squared residual around the decoded train rows is outside the bounds
        gets that residual variance instead, widened by the median ratio of learned to residual
        variance of the other genes: the learned one, trained on entries hidden from the encoder,
        is the wider, honest one (rows decoded with every entry seen gave hepatic's assays 0.80x
        their spread), and it stays wherever it can hold the residual."""
        learned = self.log_var().detach()
        residual = (squares / counts.clamp_min(1)).clamp_min(1e-300).log().float()
        low, high = self.log_var_bounds()
        outside = ((residual < low) | (residual > high)) & (counts > 0)
        inside = ~outside & (counts > 0)
        widen = float((learned - residual)[inside].median().clamp_min(0)) if inside.any() else 0.0
        chosen = torch.where(outside, residual + widen, learned)
        if not outside.any():
            return chosen, "; sample noise: each gene's learned variance (every residual variance within its bounds)"
        return chosen, (f"; sample noise: the learned variance, or for the {int(outside.sum())} of {len(learned)} "
                        f"genes whose residual variance is outside its bounds, that variance x {np.exp(widen):.2f}")

    def _draw_latent(self, n: int, generator: torch.Generator) -> torch.Tensor:
        if self.latent_mixture is None:
            return torch.randn(n, self.hparams.latent_dim, generator=generator)
        weights, means, cholesky = self.latent_mixture
        component = torch.multinomial(weights, n, replacement=True, generator=generator) if n else torch.zeros(0, dtype=torch.int64)
        noise = torch.randn(n, self.hparams.latent_dim, 1, generator=generator)
        return means[component] + (cholesky[component] @ noise).squeeze(-1)

    @inference
    def impute(self, values: np.ndarray, observed: np.ndarray, obs=None) -> np.ndarray:
        """`_member_impute`; with `ensemble`, the members' mean."""
        return self.mean_of_members(values, observed, lambda member: member._member_impute(values, observed, obs))

    def _member_impute(self, values: np.ndarray, observed: np.ndarray, obs=None) -> np.ndarray:
        """Unobserved entries <- decoder mean at the latent mean of the row's observed entries.
        Count likelihoods: E[log1p(counts / library * target_sum)] under the decoded NB / ZINB at
        the row's library (obs["library_size"], else the median training library): X's expected
        value, which for sparse counts is far below log1p of the expected normalised expression."""
        codes = self._row_labels(obs, len(values))
        if self.counts_model:
            library = cm.row_libraries(obs, len(values), self.library_quantiles).to(self.device)
            means = [
                cm.expected_log_normalised(self.count_params(self._mean_input(values[rows], observed[rows], codes, rows)),
                                           library[rows], self.hparams.target_sum, where=torch.from_numpy(~observed[rows]))
                for rows in row_chunks(len(values))
            ]
            return keep_observed(values, observed, stack_rows(means, self.hparams.n_genes))
        means = [self.decode(self._refined_input(values[rows], observed[rows], codes, rows)) for rows in row_chunks(len(values))]
        means = stack_rows(means, self.hparams.n_genes)  # on the model's scale (`warp`)
        means = means + self._series_offsets(values, observed, means, obs)
        return keep_observed(values, observed, self._unwarp_np(means))

    def _series_offsets(self, values: np.ndarray, observed: np.ndarray, means: np.ndarray, obs) -> np.ndarray | float:
        """Time courses (`series_offsets`, Gaussian): each row's fill moves by its series' mean
        residual (observed value - decoded mean) of that gene over the series' other rows,
        shrunk by one pseudo-row. A person's own level of a gene, read off their other time
        points, which a decoder fit on other people cannot know. 0 without a series column.
        `means` and the offsets are on the model's scale (`warp`), `values` on X's."""
        if not self.hparams.get("series_offsets") or self.counts_model or obs is None or "series" not in obs:
            return 0.0
        residual = np.where(observed, self._warp_np(values, observed) - means, 0.0)
        offsets = np.zeros(values.shape, dtype=np.float32)
        series = obs["series"].astype(str).to_numpy()
        for name in np.unique(series):
            rows = series == name
            total, seen = residual[rows].sum(0), observed[rows].sum(0)
            # leave the row itself out (its observed entries are kept as they are anyway)
            offsets[rows] = (total - residual[rows]) / (seen - observed[rows] + SERIES_SHRINK)
        return offsets

    @inference
    def impute_draws(self, values: np.ndarray, observed: np.ndarray, n_draws: int, generator: torch.Generator,
                     obs=None) -> np.ndarray:
        """`n_draws` imputations (n_draws, rows, genes): `draws_at` every unobserved entry, and
        `values` at the observed ones in every draw."""
        out = np.repeat(np.asarray(values, dtype=np.float32)[None], n_draws, axis=0)
        out[:, ~observed] = self.draws_at(values, observed, n_draws, generator, obs=obs)
        return out

    @inference
    def draws_at(self, values: np.ndarray, observed: np.ndarray, n_draws: int, generator: torch.Generator,
                 obs=None, where: np.ndarray | None = None) -> np.ndarray:
        """`_member_draws_at`; with `ensemble`, the draws come from the members in turn."""
        def draw(member, count):
            return member._member_draws_at(values, observed, count, generator, obs, where)
        return draw(self, n_draws) if not self.others else self.draws_in_turn(n_draws, draw)

    def _member_draws_at(self, values: np.ndarray, observed: np.ndarray, n_draws: int, generator: torch.Generator,
                         obs=None, where: np.ndarray | None = None) -> np.ndarray:
        """`n_draws` imputations of the entries `where` (default: every unobserved one), as
        (n_draws, entries) in row-major order: per draw and row, z from the encoder's posterior
        given the row's observed entries, then a draw of the likelihood at z (Gaussian with the
        per-gene variance, or NB / ZINB counts at the row's library, normalised and log1p'd onto
        X's scale). Only the rows with an entry in `where` are encoded and decoded."""
        where = ~observed if where is None else where
        if (where & observed).any():
            raise ValueError("draws_at: `where` includes observed entries")
        codes = self._row_labels(obs, len(values))
        library = cm.row_libraries(obs, len(values), self.library_quantiles) if self.counts_model else None
        offsets = self._draw_offsets(values, observed, codes, obs)
        drawn_rows = np.flatnonzero(where.any(1))
        out = np.empty((n_draws, int(where.sum())), dtype=np.float32)
        start = 0
        for chunk in row_chunks(len(drawn_rows)):
            rows = drawn_rows[chunk]
            at = np.nonzero(where[rows])
            label_rows = None if codes is None else codes[rows]
            x, seen = self._input(values[rows], observed[rows])
            mean, log_var = self.encode(x, seen, label_rows)
            mean = self._refine(x, seen, mean, label_rows)  # draws around the refined mean
            shift = offsets[rows] if isinstance(offsets, np.ndarray) else offsets
            lib = None if library is None else library[rows]
            stop = start + len(at[0])
            for draw in range(n_draws):
                eps = torch.randn(mean.shape, generator=generator).to(self.device)
                zc = self.decoder_input(mean + eps * (0.5 * log_var).exp(), label_rows)
                out[draw, start:stop] = self._draw_x_at(zc, lib, at, generator, shift)
            start = stop
        return out

    def _draw_offsets(self, values: np.ndarray, observed: np.ndarray, codes, obs) -> np.ndarray | float:
        """`_series_offsets` of the decoded means (time courses with `series_offsets`), else 0."""
        if not self.hparams.get("series_offsets") or self.counts_model or obs is None or "series" not in obs:
            return 0.0
        means = stack_rows([self.decode(self._refined_input(values[rows], observed[rows], codes, rows))
                            for rows in row_chunks(len(values))], self.hparams.n_genes)
        return self._series_offsets(values, observed, means, obs)

    def _draw_x_at(self, zc: torch.Tensor, library: torch.Tensor | None, at: tuple, generator,
                   shift: np.ndarray | float = 0.0) -> np.ndarray:
        """One draw of the likelihood at decoder input `zc`, on X's scale, at the entries `at`
        ((rows, cols) of the decoded block; counts are drawn there only). Gaussian: `shift`
        (series offsets of the block, on the model's scale) moves the draws before `unwarp`."""
        if self.counts_model:
            counts = cm.draw_counts(self.count_params(zc), library.to(self.device), generator, at=at)
            return torch.log1p(counts / library[at[0]] * self.hparams.target_sum).numpy()
        noise = torch.randn(len(zc), self.hparams.n_genes, generator=generator).to(self.device)
        drawn = self.decode(zc) + noise * (0.5 * self.log_var()).exp() + torch.as_tensor(shift, device=self.device)
        return self.unwarp(drawn).cpu().numpy()[at]

    @inference
    def embed(self, values: np.ndarray, observed: np.ndarray | None = None, obs=None) -> np.ndarray:
        """Latent means; `observed` defaults to the non-NaN entries; a conditional model reads
        the rows' labels from `obs`. With `ensemble`, member 0's (the members' latent spaces
        are not aligned, so their mean would mean nothing)."""
        observed = ~np.isnan(values) if observed is None else observed
        codes = self._row_labels(obs, len(values))
        latents = [self._latent_mean(values[rows], observed[rows], codes, rows) for rows in row_chunks(len(values))]
        return stack_rows(latents, self.hparams.latent_dim)

    @inference
    def count_log_likelihood(self, values: np.ndarray, observed: np.ndarray, counts: np.ndarray,
                             library: np.ndarray, obs=None) -> np.ndarray:
        """log p(count) of every entry given the latent mean of the row's observed entries
        (count likelihoods only): score held-out entries with it."""
        if not self.counts_model:
            raise ValueError("count_log_likelihood needs likelihood nb or zinb")
        codes = self._row_labels(obs, len(values))
        parts = []
        for rows in row_chunks(len(values)):
            zc = self._mean_input(values[rows], observed[rows], codes, rows)
            lib = torch.from_numpy(np.asarray(library[rows], dtype=np.float32)).to(self.device)
            parts.append(cm.count_log_prob(torch.from_numpy(np.asarray(counts[rows], dtype=np.float32)), lib,
                                           self.count_params(zc)))
        return stack_rows(parts, self.hparams.n_genes)

    def _row_labels(self, obs, n_rows: int) -> torch.Tensor | None:
        """Codes of obs["label"] for a conditional model (-1 where missing or unknown), else None."""
        if not self.n_labels:
            return None
        if obs is None or LABEL_COLUMN not in obs:
            return torch.full((n_rows,), -1, dtype=torch.int64)
        return torch.from_numpy(label_codes(obs[LABEL_COLUMN], self.hparams.label_names))

    def _input(self, values: np.ndarray, observed: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Rows on the model's scale (`warp`), 0 where unobserved, and their observed mask."""
        x = torch.from_numpy(np.where(observed, values, 0.0).astype(np.float32)).to(self.device)
        seen = torch.from_numpy(observed).to(self.device)
        if self.counts_model or not self.log_scale.active:
            return x, seen
        return self.warp(x) * seen, seen

    def _warp_np(self, values: np.ndarray, observed: np.ndarray) -> np.ndarray:
        """`values` on the model's scale, 0 where unobserved (what `_series_offsets` reads)."""
        return np.concatenate([self._input(values[rows], observed[rows])[0].cpu().numpy()
                               for rows in row_chunks(len(values))]) if len(values) else values

    def _latent_mean(self, values, observed, codes: torch.Tensor | None, rows: slice) -> torch.Tensor:
        """The latent mean of the rows' observed entries."""
        return self.encode(*self._input(values, observed), None if codes is None else codes[rows])[0]

    def _refined_input(self, values, observed, codes: torch.Tensor | None, rows: slice) -> torch.Tensor:
        """`_mean_input` with the latent refined by `refine_steps` Adam steps on the row's
        observed entries: minimise the Gaussian NLL of the decoded row plus beta * |z|^2 / 2
        (the MAP of z), starting at the encoder's mean. Only the latents move."""
        label_rows = None if codes is None else codes[rows]
        if not self.hparams.get("refine_steps", 0) or self.counts_model:
            return self._mean_input(values, observed, codes, rows)
        x, seen = self._input(values, observed)
        return self.decoder_input(self._refine(x, seen, self.encode(x, seen, label_rows)[0], label_rows), label_rows)

    def _refine(self, x: torch.Tensor, seen: torch.Tensor, start: torch.Tensor, label_rows) -> torch.Tensor:
        """The latents after `refine_steps` Adam steps from `start` (see `_refined_input`)."""
        steps = int(self.hparams.get("refine_steps", 0) or 0)
        if not steps or self.counts_model:
            return start
        with torch.inference_mode(False), torch.enable_grad():
            x, mask, z = x.clone(), seen.clone().to(x.dtype), start.clone().requires_grad_(True)
            optimizer = torch.optim.Adam([z], lr=REFINE_LR)
            for _ in range(steps):
                nll = gaussian_nll(x, self.decode(self.decoder_input(z, label_rows)), self.log_var()) * mask
                loss = nll.sum() + 0.5 * self.hparams.beta * (z**2).sum()
                (grad,) = torch.autograd.grad(loss, z)
                z.grad = grad
                optimizer.step()
        return z.detach().clone()

    def _mean_input(self, values, observed, codes: torch.Tensor | None, rows: slice) -> torch.Tensor:
        """Decoder input at the latent mean (z, plus the one-hot of a conditional model)."""
        return self.decoder_input(self._latent_mean(values, observed, codes, rows), None if codes is None else codes[rows])


class SplitInputLinear(torch.autograd.Function):
    """`F.linear(cat([x, mask, cond], 1), weight, bias)` without building the concatenated input.

    The weight's columns are [x part | mask part | one-hot part]. A fully observed batch
    (`mask` None, i.e. all ones) needs only the mask part's row sums, and its weight gradient is
    the output gradient's column sum repeated: half the work of the plain layer at the width of
    the data. The gradient is written once into one weight-sized tensor (autograd through weight
    slices would zero-fill and add a full-size gradient per slice). `x`, `mask` and `cond` are
    data: they get no gradient."""

    @staticmethod
    def forward(ctx, x, mask, cond, weight, bias):
        n = x.shape[1]
        hidden = torch.addmm(bias, x, weight[:, :n].t())
        if mask is None:
            hidden += weight[:, n : 2 * n].sum(1)
        else:
            hidden.addmm_(mask, weight[:, n : 2 * n].t())
        if cond is not None:
            hidden.addmm_(cond, weight[:, 2 * n :].t())
        ctx.save_for_backward(x, mask, cond)
        return hidden

    @staticmethod
    def backward(ctx, grad):
        x, mask, cond = ctx.saved_tensors
        grad_t = grad.t()
        parts = [grad_t @ x]
        parts.append(grad_t.sum(1, keepdim=True).expand(-1, x.shape[1]) if mask is None else grad_t @ mask)
        if cond is not None:
            parts.append(grad_t @ cond)
        return None, None, None, torch.cat(parts, dim=1), grad.sum(0)


def _check_conditioning(condition_on, names: list[str]) -> int:
    """The number of labels the networks take (0: unconditional); rejects what cannot work."""
    if condition_on is None:
        return 0
    if condition_on != LABEL_COLUMN:
        raise ValueError(f"vae: condition_on may only be {LABEL_COLUMN!r} (or null), not {condition_on!r}")
    if not names:
        raise ValueError(f"vae: condition_on {LABEL_COLUMN!r} needs labels in obs[{LABEL_COLUMN!r}] "
                         "(the sheet's label column)")
    return len(names)


def feature_scale(var: torch.Tensor) -> torch.Tensor:
    """Each feature's sd, what its z-scores are scaled back by; 0 for a constant feature (sd
    under 1e-12: a speech table's wavelet means are 1e-18 noise around 0), whose decoded value is
    then its constant. No floor beside it: a floor of 1e-3 left features of sd 1e-5 unscaled, so
    the network could not resolve them and their samples spread 100x too wide."""
    sd = var.sqrt()
    return torch.where(sd > 1e-12, sd, torch.zeros_like(sd))


def divisor(scale: torch.Tensor) -> torch.Tensor:
    """`scale` for dividing by: 1 where a feature is constant (its z-score is then 0)."""
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def gaussian_nll(x: torch.Tensor, mean: torch.Tensor, log_var: torch.Tensor) -> torch.Tensor:
    return 0.5 * (log_var + (x - mean) ** 2 / log_var.exp() + math.log(2 * math.pi))
