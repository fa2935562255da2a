"""Count likelihoods (negative binomial, zero-inflated NB) and the count-data contract they share.

Expression X is `log1p(counts / library_size * target_sum)`. A count model decodes a softmax over
the modelled genes plus one "rest" bucket (the share of the library in genes outside the matrix,
e.g. those dropped by highly-variable-gene selection), so the NB mean of gene g is
`rho_g * library`, and the expected normalised expression is `rho_g * target_sum`: that maps a
count model back onto X's scale (`log1p(rho_g * target_sum)`).

The library is `obs["library_size"]` when present (total counts over all genes), otherwise the
row sum of the observed counts (then the rest bucket learns to stay near zero).
"""

from __future__ import annotations

import json

import anndata as ad
import numpy as np
import torch
from torch import nn

from ..provenance import meta

DEFAULT_TARGET_SUM = 1e4
# Quantiles of the training library sizes kept in the model, to draw libraries when sampling.
N_LIBRARY_QUANTILES = 257
LIKELIHOODS = ("gaussian", "nb", "zinb")
COUNT_LIKELIHOODS = ("nb", "zinb")
EPS = 1e-8


class CountDataMissing(ValueError):
    """A count likelihood was asked for data without raw counts."""


def target_sum(adata: ad.AnnData) -> float:
    """`target_sum` of the preprocess step (its params are JSON text), default 1e4."""
    record = meta(adata).get("provenance", {}).get("preprocess", {})
    params = record.get("params", "{}") if isinstance(record, dict) else "{}"
    try:
        params = json.loads(params) if isinstance(params, str) else dict(params)
    except (TypeError, ValueError):
        return DEFAULT_TARGET_SUM
    inner = params.get("params", params) if isinstance(params, dict) else {}
    value = inner.get("target_sum") if isinstance(inner, dict) else None
    return float(value) if value else DEFAULT_TARGET_SUM


def has_counts(adata: ad.AnnData) -> bool:
    return "counts" in adata.layers


def count_tensors(adata: ad.AnnData, rows: np.ndarray, observed: np.ndarray) -> dict[str, torch.Tensor]:
    """Raw counts (unobserved entries zeroed) and each row's library size, for the rows selected."""
    if not has_counts(adata):
        raise CountDataMissing(
            "a count likelihood (nb, zinb) needs raw counts in layers['counts']; "
            "this data has none (use likelihood: gaussian)"
        )
    counts = adata.layers["counts"]
    counts = counts.toarray() if hasattr(counts, "toarray") else np.asarray(counts)
    counts = np.where(observed, counts[rows], 0.0).astype(np.float32)
    if "library_size" in adata.obs:
        library = adata.obs["library_size"].to_numpy(dtype=np.float32)[rows]
    else:
        library = counts.sum(1)
    library = np.maximum(np.maximum(library, counts.sum(1)), 1.0).astype(np.float32)
    return {"counts": torch.from_numpy(counts), "library": torch.from_numpy(library)}


def library_quantiles(library: torch.Tensor) -> torch.Tensor:
    if len(library) == 0:
        return torch.full((N_LIBRARY_QUANTILES,), 1.0)
    return torch.quantile(library.float(), torch.linspace(0, 1, N_LIBRARY_QUANTILES))


def draw_libraries(quantiles: torch.Tensor, n: int, generator: torch.Generator) -> torch.Tensor:
    """Library sizes drawn from the stored training distribution (inverse CDF, interpolated)."""
    position = torch.rand(n, generator=generator) * (len(quantiles) - 1)
    low = position.floor().long().clamp(max=len(quantiles) - 2)
    frac = position - low
    q = quantiles.cpu()
    return (q[low] * (1 - frac) + q[low + 1] * frac).clamp_min(1.0)


class GeneShares(torch.autograd.Function):
    """`softmax(logits, -1)[..., :-1]`: the genes' shares without the rest bucket. Its own
    backward writes the logits' gradient in one pass; autograd through the slice would first
    build a zero-filled gradient of the full softmax."""

    @staticmethod
    def forward(ctx, logits):
        shares = torch.softmax(logits, dim=-1)
        ctx.save_for_backward(shares)
        return shares[..., :-1]

    @staticmethod
    def backward(ctx, grad):
        (shares,) = ctx.saved_tensors
        genes = shares[..., :-1]
        inner = (grad * genes).sum(-1, keepdim=True)  # the rest bucket's own gradient is 0
        out = torch.empty_like(shares)
        out[..., :-1] = genes * (grad - inner)
        out[..., -1:] = -shares[..., -1:] * inner
        return out


class CountHead(nn.Module):
    """Decoder output -> softmax over genes (+ rest bucket), per-gene dispersion, zero-inflation logits."""

    def __init__(self, hidden_dim: int, n_genes: int, zero_inflated: bool):
        super().__init__()
        self.n_genes = n_genes
        self.to_logits = nn.Linear(hidden_dim, n_genes + 1)
        self.log_theta = nn.Parameter(torch.zeros(n_genes))
        self.to_dropout = nn.Linear(hidden_dim, n_genes) if zero_inflated else None

    def init_from_counts(self, counts: torch.Tensor, library: torch.Tensor, observed: torch.Tensor) -> None:
        """Start at each gene's share of the library and a moment estimate of its dispersion."""
        n_obs = observed.sum(0).clamp_min(1)
        share = ((counts / library[:, None]) * observed).sum(0) / n_obs
        share = share.clamp_min(1e-6)
        rest = (1 - share.sum()).clamp_min(1e-3)
        mu = share * library[:, None]
        var_excess = ((counts - mu) ** 2 - mu) * observed
        theta = (mu**2 * observed).sum(0) / var_excess.sum(0).clamp_min(1e-6)
        with torch.no_grad():
            self.to_logits.weight.mul_(0.1)
            self.to_logits.bias.copy_(torch.cat([share, rest.reshape(1)]).log())
            self.log_theta.copy_(theta.clamp(1e-2, 1e3).log())
            if self.to_dropout is not None:
                self.to_dropout.bias.fill_(-3.0)

    def forward(self, hidden: torch.Tensor) -> dict[str, torch.Tensor]:
        logits = self.to_logits(hidden)
        if torch.is_autocast_enabled(logits.device.type):  # mixed precision: the plain ops, which autocast casts
            rho = torch.softmax(logits, dim=-1)[..., : self.n_genes]
        else:
            rho = GeneShares.apply(logits)
        out = {"rho": rho, "theta": self.log_theta.clamp(-6, 10).exp()}
        if self.to_dropout is not None:
            out["pi_logits"] = self.to_dropout(hidden)
        return out


def nb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor) -> torch.Tensor:
    log_theta_mu = torch.log(theta + mu + EPS)
    return (
        theta * (torch.log(theta + EPS) - log_theta_mu)
        + x * (torch.log(mu + EPS) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )


def zinb_log_prob(x: torch.Tensor, mu: torch.Tensor, theta: torch.Tensor, pi_logits: torch.Tensor) -> torch.Tensor:
    """scVI's parametrisation: pi = sigmoid(pi_logits) is the probability of an extra zero."""
    softplus_pi = nn.functional.softplus(-pi_logits)
    log_theta_mu = torch.log(theta + mu + EPS)
    pi_theta_log = -pi_logits + theta * (torch.log(theta + EPS) - log_theta_mu)
    case_zero = nn.functional.softplus(pi_theta_log) - softplus_pi
    case_non_zero = (
        -softplus_pi
        + pi_theta_log
        + x * (torch.log(mu + EPS) - log_theta_mu)
        + torch.lgamma(x + theta)
        - torch.lgamma(theta)
        - torch.lgamma(x + 1)
    )
    return torch.where(x < EPS, case_zero, case_non_zero)


def count_log_prob(x: torch.Tensor, library: torch.Tensor, params: dict[str, torch.Tensor]) -> torch.Tensor:
    mu = params["rho"] * library[:, None]
    if "pi_logits" in params:
        return zinb_log_prob(x, mu, params["theta"], params["pi_logits"])
    return nb_log_prob(x, mu, params["theta"])


def observed_log_prob_rows(
    x: torch.Tensor, library: torch.Tensor, params: dict[str, torch.Tensor], observed: torch.Tensor | None = None
) -> torch.Tensor:
    """Per row, the sum of `count_log_prob` over the observed entries (all when `observed` is
    None), computed cheaper for the training loss: every entry is first scored as a zero count
    (log NB(0), or the ZINB zero case), then the nonzero counts, few in single-cell data, get
    their correction (x log mu, the three lgammas) at their flat indices only."""
    n_rows, n_genes = x.shape
    mu = params["rho"] * library[:, None]
    theta = params["theta"]
    log_theta_mu = torch.log(theta + mu + EPS)
    nb_zero = theta * (torch.log(theta + EPS) - log_theta_mu)  # log NB(0)
    if "pi_logits" in params:
        pi_logits = params["pi_logits"]
        pi_theta_log = -pi_logits + nb_zero
        softplus_pi_theta = nn.functional.softplus(pi_theta_log)
        as_zero = softplus_pi_theta - nn.functional.softplus(-pi_logits)
    else:
        as_zero = nb_zero
    if observed is not None:
        as_zero = as_zero * observed
        x = x * observed
    flat = (x.flatten() > 0).nonzero().squeeze(1)  # the positive counts (a bool nonzero is the fastest)
    genes = flat % n_genes
    xs = x.flatten()[flat]
    theta_s = theta[genes]
    correction = (
        xs * (torch.log(mu.flatten()[flat] + EPS) - log_theta_mu.flatten()[flat])
        + torch.lgamma(xs + theta_s)
        - torch.lgamma(theta)[genes]
        - torch.lgamma(xs + 1)
    )
    if "pi_logits" in params:  # the non-zero case of the ZINB replaces its zero case
        correction = correction + (pi_theta_log.flatten()[flat] - softplus_pi_theta.flatten()[flat])
    rows = torch.div(flat, n_genes, rounding_mode="floor")
    per_row = torch.zeros(n_rows, dtype=correction.dtype, device=x.device).index_put((rows,), correction, accumulate=True)
    return as_zero.sum(1) + per_row


def expected_share(params: dict[str, torch.Tensor]) -> torch.Tensor:
    """E[counts / library] per entry: rho, times (1 - pi) under zero inflation."""
    if "pi_logits" in params:
        return params["rho"] * torch.sigmoid(-params["pi_logits"])
    return params["rho"]


SHORT_SUM = 16  # counts summed first by `expected_log_normalised` (bench/nb_expectation.py)


def expected_log_normalised(
    params: dict[str, torch.Tensor], library: torch.Tensor, total: float, k_max: int = 64, where: torch.Tensor | None = None
) -> torch.Tensor:
    """E[log1p(counts / library * total)] under the NB / ZINB: X's expected value, what an
    imputation scored on X's scale should predict. For sparse counts it is far below
    log1p(E[counts] / library * total) (most draws are 0). Exact sum over counts 0..k_max-1;
    entries whose distribution puts more than 0.1% of its mass beyond k_max (highly expressed
    genes, where log1p is nearly linear over the spread) use log1p of the mean instead.
    With `where` (rows x genes, boolean) only those entries are computed; the rest are 0.
    Entries go a block at a time, so the (entries, k_max) table stays around 16 MB."""
    mu = params["rho"] * library[:, None]
    where = torch.ones_like(mu, dtype=torch.bool) if where is None else where.to(mu.device)
    entries = {
        "mu": mu[where],
        "theta": params["theta"].expand_as(mu)[where],
        "scale": (total / library)[:, None].expand_as(mu)[where],
        "share": expected_share(params)[where],
    }
    if "pi_logits" in params:
        entries["pi_logits"] = params["pi_logits"][where]
    step = max(1, (1 << 22) // k_max)
    n = len(entries["mu"])
    parts = [_expected_at({key: t[start : start + step] for key, t in entries.items()}, total, k_max) for start in range(0, n, step)]
    out = torch.zeros_like(mu)
    if parts:
        out[where] = torch.cat(parts)
    return out


def _expected_at(entries: dict[str, torch.Tensor], total: float, k_max: int) -> torch.Tensor:
    """`expected_log_normalised` for flat vectors of entries. Counts 0..SHORT_SUM-1 first: most
    entries of sparse data hold all but 1e-6 of their mass there; the others sum to k_max."""
    exact, mass = _sums(entries, min(k_max, SHORT_SUM))
    longer = (mass < 1 - 1e-6).nonzero().squeeze(1)
    if k_max > SHORT_SUM and len(longer):
        exact[longer], mass[longer] = _sums({key: t[longer] for key, t in entries.items()}, k_max)
    return torch.where(mass > 0.999, exact / mass.clamp_min(EPS), torch.log1p(entries["share"] * total))


def _sums(entries: dict[str, torch.Tensor], k_max: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(sum of p(k) log1p(k * scale), sum of p(k)) over counts 0..k_max-1."""
    k = torch.arange(k_max, dtype=entries["mu"].dtype, device=entries["mu"].device)[None, :]
    mu, theta = entries["mu"][:, None], entries["theta"][:, None]
    if "pi_logits" in entries:
        log_p = zinb_log_prob(k, mu, theta, entries["pi_logits"][:, None])
    else:
        log_p = nb_log_prob(k, mu, theta)
    p = log_p.exp()
    return (p * torch.log1p(k * entries["scale"][:, None])).sum(-1), p.sum(-1)


def row_libraries(obs, n_rows: int, quantiles: torch.Tensor) -> torch.Tensor:
    """obs["library_size"] when the rows have it, otherwise the median training library."""
    if obs is not None and "library_size" in obs:
        library = torch.as_tensor(np.asarray(obs["library_size"], dtype=np.float32))
        return library.clamp_min(1.0)
    return torch.full((n_rows,), float(quantiles[len(quantiles) // 2]))


def draw_counts(
    params: dict[str, torch.Tensor], library: torch.Tensor, generator: torch.Generator,
    at: tuple[np.ndarray, np.ndarray] | None = None,
) -> torch.Tensor:
    """NB as a Gamma-Poisson mixture (plus zero inflation), drawn with `generator` on CPU:
    rows x genes counts, or with `at` = (rows, cols) indices only those entries (1-D, float32).
    Imputation draws need the unobserved entries only, a tenth of the matrix or less."""
    rho, theta, pi_logits = params["rho"], params["theta"].expand_as(params["rho"]), params.get("pi_logits")
    if at is None:
        mu = rho * library[:, None]
    else:
        rows, cols = (torch.from_numpy(np.asarray(index, dtype=np.int64)) for index in at)
        mu, theta = rho[rows, cols] * library[rows], theta[rows, cols]
        pi_logits = None if pi_logits is None else pi_logits[rows, cols]
    pi = None if pi_logits is None else torch.sigmoid(pi_logits)
    mu, theta = mu.cpu().double(), theta.cpu().double()
    rate = standard_gamma(theta, generator) * mu / theta
    counts = torch.poisson(rate, generator=generator)
    if pi is not None:
        counts = torch.where(torch.rand(mu.shape, generator=generator, dtype=torch.float64) < pi.cpu().double(), 0.0, counts)
    return counts.float()


def standard_gamma(shape: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Gamma(shape, 1) draws, reproducible from `generator`: torch's Gamma sampler takes no
    generator, so numpy's (C, over 10x faster than a vectorised torch rejection loop) is seeded
    from the torch stream."""
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    drawn = np.random.default_rng(seed).standard_gamma(shape.double().numpy())
    return torch.from_numpy(np.asarray(drawn, dtype=np.float64))


def normalise(counts: torch.Tensor, library: torch.Tensor, total: float) -> torch.Tensor:
    """Counts -> X's scale: log1p(counts / library * target_sum)."""
    return torch.log1p(counts / library[:, None] * total)
