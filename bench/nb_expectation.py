"""Cost of the NB / ZINB expected value of the log-normalised count (issue 14: imputation at 1M cells).

`counts.expected_log_normalised` sums p(k) log1p(k * scale) over counts 0..63 for every imputed
entry. It now sums counts 0..15 first and goes to 63 only for the entries that hold more than
1e-6 of their mass beyond 15. This prints the time per entry of both ways on one thread, and
their largest difference from a float64 computation (the few large ones are entries near the
0.1%-mass cut-over to log1p of the mean, where float32 rounding decides the side).

    OMP_NUM_THREADS=1 python bench/nb_expectation.py [--cells 2000] [--genes 2000]
    OMP_NUM_THREADS=1 python bench/nb_expectation.py --data results/mouse_10x/masked.h5ad \
        --checkpoint results/mouse_10x/vae_nb/model.ckpt     # a trained count VAE's parameters
"""

from __future__ import annotations

import argparse
import time

import torch

from omicsgen.models import counts as cm


def all_counts(params, library, total, k_max=64):
    """The former computation: every entry summed over all k_max counts."""
    mu = params["rho"] * library[:, None]
    k = torch.arange(k_max, dtype=mu.dtype)[None, :]
    out = []
    for rows in torch.split(torch.arange(len(mu)), max(1, (1 << 22) // (k_max * mu.shape[1]))):
        m = mu[rows].reshape(-1, 1)
        theta = params["theta"].expand(len(rows), -1).reshape(-1, 1)
        if "pi_logits" in params:
            log_p = cm.zinb_log_prob(k, m, theta, params["pi_logits"][rows].reshape(-1, 1))
        else:
            log_p = cm.nb_log_prob(k, m, theta)
        p = log_p.exp()
        exact, mass = (p * torch.log1p(k * (total / library[rows]).repeat_interleave(mu.shape[1])[:, None])).sum(-1), p.sum(-1)
        share = cm.expected_share({key: v[rows] if v.dim() == 2 else v for key, v in params.items()}).reshape(-1)
        out.append(torch.where(mass > 0.999, exact / mass, torch.log1p(share * total)).view(len(rows), -1))
    return torch.cat(out)


def trained_parameters(data: str, checkpoint: str, cells: int):
    """(params, library, total) a trained count VAE decodes for the first `cells` rows, as its impute does."""
    import anndata as ad
    import numpy as np

    from omicsgen.models import load_model

    adata = ad.read_h5ad(data)[:cells]
    values = adata.X.toarray() if hasattr(adata.X, "toarray") else np.asarray(adata.X)
    model = load_model(checkpoint).eval()
    with torch.no_grad():
        params = model.count_params(model._mean_input(values, np.ones_like(values, dtype=bool), None, np.arange(len(values))))
    return params, torch.as_tensor(adata.obs["library_size"].to_numpy(np.float32)), cm.target_sum(adata)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cells", type=int, default=2000)
    parser.add_argument("--genes", type=int, default=2000)
    parser.add_argument("--data", help="a dataset's masked.h5ad (with --checkpoint: a trained count VAE's parameters)")
    parser.add_argument("--checkpoint")
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.data:
        params, library, total = trained_parameters(args.data, args.checkpoint, args.cells)
        n = params["rho"].numel()
        print(f"{len(library)} cells x {params['rho'].shape[1]} genes of {args.data}, one thread")
        for label, function in (("all 64 counts", all_counts), ("16, then 64", cm.expected_log_normalised)):
            start = time.perf_counter()
            value = function(params, library, total)
            print(f"{label:13s} {(time.perf_counter() - start) / n * 1e6:6.2f} us/entry  sum {value.double().sum():.4f}")
        return
    g = torch.Generator().manual_seed(0)
    rho = torch.distributions.Dirichlet(torch.full((args.genes,), 0.3)).sample((args.cells,))
    theta = torch.rand(args.genes, generator=g) * 5 + 0.1
    library = torch.rand(args.cells, generator=g) * 8000 + 2000
    n = args.cells * args.genes
    print(f"{args.cells} cells x {args.genes} genes, one thread; us per entry, max |error| against float64")
    for name in ("nb", "zinb"):
        params = {"rho": rho, "theta": theta}
        if name == "zinb":
            params["pi_logits"] = torch.randn(args.cells, args.genes, generator=g)
        truth = cm.expected_log_normalised({k: v.double() for k, v in params.items()}, library.double(), 1e4)
        for label, function in (("all 64 counts", all_counts), ("16, then 64", cm.expected_log_normalised)):
            start = time.perf_counter()
            value = function(params, library, 1e4)
            seconds = time.perf_counter() - start
            error = (value.double() - truth).abs()
            print(f"{name:5s} {label:13s} {seconds / n * 1e6:6.2f} us/entry  max error {error.max():.1e}, "
                  f"{int((error > 1e-3).sum())} of {n} entries off by > 1e-3")


if __name__ == "__main__":
    main()
