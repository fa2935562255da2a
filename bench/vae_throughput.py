"""VAE training throughput: the NB / ZINB `vae` family at scVI's default architecture
(1 hidden layer of 128, 10 latent dimensions, batch 128) on 20,000 cells x 2,000 genes.

The data are real cells resampled with replacement from resources/mouse_10x_counts.h5ad
(10,000 cells x 1,000 genes), the genes tiled twice to 2,000; X = log1p(counts / library * 1e4).
Every entry is observed. One measurement = one epoch over all cells (157 batches), timed as
cells / second, for

- lightning: `lightning.Trainer.fit` of our module for one epoch (what `omicsgen train` runs,
  without validation or checkpoint writing),
- module:    our module's `loss` + Adam in a plain Python loop (no Lightning),
- bare:      a minimal scVI-like NB VAE written directly in PyTorch over the same tensors,

and, with `--scvi PYTHON` (a Python with scvi-tools installed, e.g. a scratch venv; scvi-tools is
never a dependency of omicsgen), scvi-tools' `SCVI.train` for one epoch on the same cells
(`scvi`, run in that interpreter as a subprocess, setup excluded), at 1 and 2 intra-op threads. The runs alternate (method by method, thread count by thread
count, `--repeats` rounds) so that load on the machine spreads over all of them; medians are
printed, of cells per wall-clock second and of cells per CPU second of the process (steadier
when other jobs share the cores: with more runnable jobs than cores, wall time mostly measures
the others). It is a benchmark, not a test:

    python bench/vae_throughput.py [--repeats 3] [--cells 20000] [--likelihood nb zinb] [--scvi /tmp/scvi-venv/bin/python]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import anndata as ad
import lightning
import numpy as np
import pandas as pd
import torch
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))  # the scvi-tools interpreter may not have omicsgen installed

from omicsgen.batches import InMemoryBatches
from omicsgen.models.counts import nb_log_prob, zinb_log_prob
from omicsgen.models.vae import VAE
from omicsgen.train import trainable

HIDDEN, LATENT, LAYERS, BATCH = 128, 10, 1, 128


def build_data(n_cells: int, seed: int = 0) -> ad.AnnData:
    real = ad.read_h5ad(ROOT / "resources" / "mouse_10x_counts.h5ad")
    counts = real.X.toarray() if hasattr(real.X, "toarray") else np.asarray(real.X)
    rows = np.random.default_rng(seed).integers(0, len(counts), size=n_cells)
    counts = np.tile(counts[rows], (1, 2)).astype(np.float32)
    library = np.maximum(counts.sum(1), 1.0)
    x = np.log1p(counts / library[:, None] * 1e4).astype(np.float32)
    names = [f"cell{i}" for i in range(n_cells)]
    adata = ad.AnnData(x, obs=pd.DataFrame({"library_size": library, "split": "train"}, index=names))
    adata.var_names = [f"gene{j}" for j in range(counts.shape[1])]
    adata.layers["counts"] = counts
    adata.uns["omicsgen"] = {"modality": "expression", "dataset": "bench"}
    return adata


class BareNBVAE(nn.Module):
    """What one would write by hand: scVI's module (encoder on log1p counts, softmax decoder
    times the library, per-gene dispersion), with the same layer sizes as ours."""

    def __init__(self, n_genes: int, zero_inflated: bool):
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(n_genes, HIDDEN), nn.LayerNorm(HIDDEN), nn.ReLU())
        self.mean, self.log_var = nn.Linear(HIDDEN, LATENT), nn.Linear(HIDDEN, LATENT)
        self.decoder = nn.Sequential(nn.Linear(LATENT, HIDDEN), nn.LayerNorm(HIDDEN), nn.ReLU())
        self.scale = nn.Linear(HIDDEN, n_genes)
        self.dropout = nn.Linear(HIDDEN, n_genes) if zero_inflated else None
        self.log_theta = nn.Parameter(torch.zeros(n_genes))

    def loss(self, counts: torch.Tensor, library: torch.Tensor) -> torch.Tensor:
        hidden = self.encoder(torch.log1p(counts))
        mean, log_var = self.mean(hidden), self.log_var(hidden)
        z = mean + torch.randn_like(mean) * (0.5 * log_var).exp()
        out = self.decoder(z)
        mu = torch.softmax(self.scale(out), -1) * library[:, None]
        theta = self.log_theta.exp()
        if self.dropout is not None:
            log_p = zinb_log_prob(counts, mu, theta, self.dropout(out))
        else:
            log_p = nb_log_prob(counts, mu, theta)
        kl = -0.5 * (1 + log_var - mean**2 - log_var.exp())
        return (-log_p.sum(1) + kl.sum(1)).mean()


class Timer:
    """Wall-clock and CPU seconds (this process) of a block: on a loaded machine the CPU time
    is the steadier figure, as time slices taken by other processes do not count in it."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu

    def rates(self, n_cells: int) -> tuple[float, float]:
        """(cells per wall second, cells per CPU second)."""
        return n_cells / self.wall, n_cells / self.cpu


def run_bare(tensors, likelihood: str) -> tuple[float, float]:
    model = BareNBVAE(tensors["counts"].shape[1], likelihood == "zinb")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    with Timer() as timer:
        for batch in InMemoryBatches(tensors, BATCH, shuffle=True, seed=0):
            optimizer.zero_grad()
            model.loss(batch["counts"], batch["library"]).backward()
            optimizer.step()
    return timer.rates(len(tensors["counts"]))


def run_module(adata, tensors, likelihood: str) -> tuple[float, float]:
    model = _ours(adata, likelihood)
    optimizer = model.configure_optimizers()
    with Timer() as timer:
        for batch in InMemoryBatches(tensors, BATCH, shuffle=True, seed=0):
            optimizer.zero_grad()
            model.loss(batch).backward()
            optimizer.step()
    return timer.rates(len(tensors["counts"]))


def run_lightning(adata, tensors, likelihood: str) -> tuple[float, float]:
    from omicsgen.epoch_steps import WholeEpoch

    model = _ours(adata, likelihood)
    model.take_over_steps(None)  # as `train` does: one Lightning step an epoch, clipped by the module
    model.gradient_clip = 1.0
    trainer = lightning.Trainer(
        accelerator="cpu", devices=1, max_epochs=1, logger=False, enable_checkpointing=False,
        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
    )
    with Timer() as timer:
        trainer.fit(model, train_dataloaders=WholeEpoch(InMemoryBatches(tensors, BATCH, shuffle=True, seed=0)))
    return timer.rates(len(tensors["counts"]))


def run_scvi(python: str, data_path: Path, likelihood: str, threads: int) -> tuple[float, float]:
    """One epoch of scvi-tools in its own interpreter; cells per wall and per CPU second of `train`."""
    out = subprocess.run([python, __file__, "--scvi-worker", str(data_path), likelihood, str(threads)],
                         capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["cells_per_second"]), float(result["cells_per_cpu_second"])


def scvi_worker(data_path: str, likelihood: str, threads: int) -> None:
    import logging

    warnings.filterwarnings("ignore")
    logging.disable(logging.WARNING)
    torch.set_num_threads(threads)
    import scvi

    adata = ad.read_h5ad(data_path)
    scvi.settings.seed = 0
    scvi.model.SCVI.setup_anndata(adata, layer="counts")
    model = scvi.model.SCVI(adata, n_hidden=HIDDEN, n_latent=LATENT, n_layers=LAYERS, gene_likelihood=likelihood)
    with Timer() as timer:
        model.train(max_epochs=1, batch_size=BATCH, train_size=1.0, accelerator="cpu", devices=1,
                    enable_progress_bar=False, early_stopping=False)
    wall, cpu = timer.rates(adata.n_obs)
    print(json.dumps({"cells_per_second": wall, "cells_per_cpu_second": cpu}))


def _ours(adata, likelihood: str) -> VAE:
    torch.manual_seed(0)
    return trainable(VAE).from_data(adata, hidden_dim=HIDDEN, latent_dim=LATENT, n_layers=LAYERS,
                                    likelihood=likelihood, kl_warmup_epochs=0)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--scvi-worker":
        scvi_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cells", type=int, default=20_000)
    parser.add_argument("--likelihood", nargs="+", default=["nb", "zinb"], choices=["nb", "zinb"])
    parser.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--scvi", metavar="PYTHON", help="a Python interpreter with scvi-tools, to compare with")
    args = parser.parse_args()
    warnings.filterwarnings("ignore")
    import logging

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)

    t0 = time.perf_counter()
    adata = build_data(args.cells)
    tensors = VAE.tensors(adata, "train")
    print(f"data: {adata.n_obs} cells x {adata.n_vars} genes, built in {time.perf_counter() - t0:.1f} s; "
          f"zero fraction {(adata.layers['counts'] == 0).mean():.3f}", flush=True)
    methods = {
        "lightning": lambda lk: run_lightning(adata, tensors, lk),
        "module": lambda lk: run_module(adata, tensors, lk),
        "bare": lambda lk: run_bare(tensors, lk),
    }
    scratch = tempfile.TemporaryDirectory(prefix="vae_throughput-")
    if args.scvi:
        data_path = Path(scratch.name) / "cells.h5ad"
        adata.write_h5ad(data_path)
        threads_of_run = {}

        def scvi_run(likelihood):
            return run_scvi(args.scvi, data_path, likelihood, threads_of_run["n"])

        methods["scvi"] = scvi_run
    results: dict[tuple, list[tuple[float, float]]] = {}
    for _ in range(args.repeats):
        for likelihood in args.likelihood:
            for threads in args.threads:
                torch.set_num_threads(threads)
                if args.scvi:
                    threads_of_run["n"] = threads
                for name, run in methods.items():
                    wall, cpu = run(likelihood)
                    results.setdefault((likelihood, threads, name), []).append((wall, cpu))
                    print(f"  {likelihood} {threads} thread(s) {name}: {wall:.0f} cells/s, {cpu:.0f} cells/CPU-s",
                          flush=True)
    scratch.cleanup()
    for column, label in ((0, "cells / second (wall clock)"), (1, "cells / CPU second (this process)")):
        print(f"\n{label}, median of {args.repeats}, one epoch of {args.cells} cells, batch {BATCH}:")
        print(f"{'likelihood':<10} {'threads':>7}" + "".join(f"{name:>10}" for name in methods)
              + f"{'lightning/bare':>15}" + (f"{'lightning/scvi':>15}" if args.scvi else ""))
        for likelihood in args.likelihood:
            for threads in args.threads:
                med = {name: statistics.median(r[column] for r in results[(likelihood, threads, name)]) for name in methods}
                print(f"{likelihood:<10} {threads:>7}" + "".join(f"{med[name]:>10.0f}" for name in methods)
                      + f"{med['lightning'] / med['bare']:>15.2f}"
                      + (f"{med['lightning'] / med['scvi']:>15.2f}" if args.scvi else ""))
    print("\nall runs (wall, CPU):", {f"{k[0]}/{k[1]}t/{k[2]}": [(round(w), round(c)) for w, c in vals]
                                     for k, vals in results.items()})
    print(f"load average at the end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
