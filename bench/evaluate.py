"""Evaluation runtime on a 10,000-cell dataset, and the issue's figures on the shipped 10x data.

Timing: the shipped 10x cells (resources/mouse_10x_counts.h5ad) are resampled with replacement
to `--cells` cells and run through the real stages: ingest, preprocess and mask with the default
config's settings (256 highly variable genes, 10% MCAR mask), a negative-binomial VAE trained
for `--epochs` epochs, generate (1,000 samples) and impute (with `--n-draws` draws). Then
`evaluate` of that model (the target: under a minute on this machine) and `baselines` are timed
wall-clock and CPU, and each imputation baseline on its own. Scoring is single-threaded by design
(byte-identical scores on any core count). It is a benchmark, not a test:

    python bench/evaluate.py [--cells 10000] [--epochs 3] [--n-draws 20] [--repeats 2]
    python bench/evaluate.py --shipped results/mouse_10x   # the issue's figures from a pipeline run
    python bench/evaluate.py --cells 100000 --agreement    # full test split vs the default subsample

`--agreement` scores the model twice, on every test row (`max_rows` none) and on the default
seeded subsample (`evaluate.max_rows`), and prints the headline scores with their 95% bootstrap
intervals side by side (issue 14: they must agree within the interval).

`--shipped FOLDER` (a dataset folder of a finished `snakemake` run) re-scores every model in it
and the baselines with the current code into a temporary folder, writes the dataset page there
and prints: each model's and baseline's held-out RMSE (best first), the best model's classifier
two-sample AUC, and the page's winners table (which method wins each metric).
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
from threadpoolctl import threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
CELLS = ROOT / "resources" / "mouse_10x_counts.h5ad"
PREPROCESS = {"min_genes": 20, "min_cells": 10, "target_sum": 10000, "n_top_genes": 256, "hvg_flavor": "seurat_v3"}


def timed(function, *args, **kwargs):
    """(result, wall seconds, CPU seconds of this process)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return result, time.perf_counter() - wall, time.process_time() - cpu


def build_dataset(folder: Path, n_cells: int, epochs: int, n_draws: int) -> dict[str, Path]:
    """The real stages on resampled cells; returns the paths evaluate needs."""
    from omicsgen.generate import generate
    from omicsgen.impute import impute
    from omicsgen.ingest import ingest
    from omicsgen.mask import mask
    from omicsgen.preprocess import preprocess
    from omicsgen.train import train

    cells = ad.read_h5ad(CELLS)
    rows = np.random.default_rng(0).choice(cells.n_obs, n_cells, replace=True)
    resampled = cells[rows].copy()
    resampled.obs_names = [f"cell{i}" for i in range(n_cells)]
    resampled.write_h5ad(folder / "cells.h5ad")
    ingest(folder / "cells.h5ad", folder / "ingested.h5ad", "bench_10x", "expression")
    preprocess(folder / "ingested.h5ad", folder / "prepared.h5ad", PREPROCESS, {"val": 0.1, "test": 0.2}, 0)
    mask(folder / "prepared.h5ad", folder / "masked.h5ad", 0.1, "mcar", 0)
    model_dir = folder / "vae_nb"
    trainer = {"max_epochs": epochs, "batch_size": 128, "accelerator": "cpu", "devices": 1, "patience": 5}
    checkpoint = train(folder / "masked.h5ad", model_dir, "vae", {"likelihood": "nb"}, trainer, 0)
    generate(folder / "masked.h5ad", checkpoint, model_dir / "samples.h5ad", 1000, 0)
    _, wall, _ = timed(impute, folder / "masked.h5ad", checkpoint, model_dir / "imputed.h5ad", 0, n_draws=n_draws)
    print(f"impute with {n_draws} draws: {wall:.1f} s wall")
    return {"data": folder / "masked.h5ad", "imputed": model_dir / "imputed.h5ad", "samples": model_dir / "samples.h5ad",
            "checkpoint": checkpoint, "scores": model_dir / "scores.json", "baselines": folder / "baselines.json"}  # fmt: skip


def time_evaluation(paths: dict[str, Path], repeats: int) -> None:
    from omicsgen.evaluate import baselines, evaluate

    adata = ad.read_h5ad(paths["data"])
    splits = adata.obs["split"].astype(str).value_counts().to_dict()
    print(f"dataset: {adata.n_obs} cells x {adata.n_vars} genes; split {splits}")
    runs = {"evaluate": [], "baselines": []}
    for _ in range(repeats):
        scores, wall, cpu = timed(evaluate, paths["data"], paths["imputed"], paths["samples"], paths["scores"],
                                  checkpoint=paths["checkpoint"])  # fmt: skip
        runs["evaluate"].append((wall, cpu))
        _, wall, cpu = timed(baselines, paths["data"], paths["baselines"])
        runs["baselines"].append((wall, cpu))
    for name, values in runs.items():
        walls, cpus = [w for w, _ in values], [c for _, c in values]
        print(f"{name:10s} wall median {statistics.median(walls):6.1f} s (runs {', '.join(f'{w:.1f}' for w in walls)}),"
              f" CPU median {statistics.median(cpus):6.1f} s")  # fmt: skip
    calibration = scores.get("calibration", {})
    print(f"model: rmse {scores['imputation']['rmse']:.4f}, c2st_auc {scores['generation']['c2st_auc']:.3f},"
          f" coverage_50 {calibration.get('coverage_50', float('nan')):.3f}, coverage_90 {calibration.get('coverage_90', float('nan')):.3f}")
    time_each_baseline(adata)


def time_each_baseline(adata: ad.AnnData) -> None:
    """Each imputation baseline alone, one thread, as `baselines` runs it."""
    from omicsgen.evaluate import baseline_methods as methods
    from omicsgen.evaluate import data

    observed = data.observed_values(adata)
    train, test = data.split_rows(adata, "train"), data.split_rows(adata, "test")
    both = train | test
    # the slow baselines fit on the capped, seeded training subsample `baselines` uses
    capped = observed[data.train_rows(adata.obs["split"].to_numpy(), 0, data.MAX_TRAIN_ROWS)]
    cells = np.vstack([capped, observed[test]])
    fills = {
        "mean": lambda: methods.mean_impute(observed[train], observed[test]),
        "median": lambda: methods.median_impute(observed[train], observed[test]),
        "knn": lambda: methods.knn_impute(capped, observed[test]),
        "iterative": lambda: methods.iterative_impute(capped, observed[test]),
        "mice": lambda: methods.mice_impute(capped, observed[test]),
        "missforest": lambda: methods.missforest_impute(capped, observed[test]),
        "svd": lambda: methods.svd_impute(observed[both]),
        "magic": lambda: methods.magic_impute(cells),
    }
    with threadpool_limits(limits=1):
        for name, fill in fills.items():
            _, wall, cpu = timed(fill)
            print(f"  baseline {name:10s} {wall:6.1f} s wall, {cpu:6.1f} s CPU")


def subsample_agreement(paths: dict[str, Path]) -> None:
    """Headline scores on every test row and on the default subsample, with their intervals."""
    from omicsgen.evaluate import evaluate
    from omicsgen.evaluate.scores import Settings

    for label, settings in (("all test rows", Settings(max_rows=None)), ("default subsample", Settings())):
        scores, wall, cpu = timed(evaluate, paths["data"], paths["imputed"], paths["samples"], paths["scores"],
                                  checkpoint=paths["checkpoint"], settings=settings)  # fmt: skip
        line = [f"{label:18s} rows {scores['protocol']['n_scored_rows']:7d}"]
        for section, key in (("imputation", "rmse"), ("generation", "mmd2"), ("generation", "c2st_auc")):
            low, high = scores[section].get("ci95", {}).get(key, (float("nan"), float("nan")))
            line.append(f"{key} {scores[section][key]:.4f} [{low:.4f}, {high:.4f}]")
        print(", ".join(line) + f"; {wall:.1f} s wall, {cpu:.1f} s CPU")


def shipped_figures(dataset_dir: Path, out: Path) -> None:
    """Re-score a finished run's models and baselines with the current code; print the figures."""
    from omicsgen.evaluate import baselines, evaluate
    from omicsgen.report import dataset_report

    model_dirs = {}
    for model_dir in sorted(p for p in dataset_dir.iterdir() if (p / "model.ckpt").exists()):
        target = out / model_dir.name
        target.mkdir(parents=True, exist_ok=True)
        imputed, samples = model_dir / "imputed.h5ad", model_dir / "samples.h5ad"
        _, wall, _ = timed(evaluate, dataset_dir / "masked.h5ad", imputed if imputed.exists() else None,
                           samples if samples.exists() else None, target / "scores.json",
                           checkpoint=model_dir / "model.ckpt", model=model_dir.name)  # fmt: skip
        for name in ("metrics.csv", "imputed.h5ad", "samples.h5ad"):
            if (model_dir / name).exists():
                (target / name).symlink_to((model_dir / name).resolve())
        model_dirs[model_dir.name] = target
        print(f"evaluate {model_dir.name}: {wall:.1f} s")
    _, wall, _ = timed(baselines, dataset_dir / "masked.h5ad", out / "baselines" / "scores.json")
    print(f"baselines: {wall:.1f} s")
    scores = {name: json.loads((d / "scores.json").read_text()) for name, d in model_dirs.items()}
    methods = json.loads((out / "baselines" / "scores.json").read_text())["methods"]
    rmse = {name: s["imputation"]["rmse"] for name, s in scores.items() if "imputation" in s}
    rmse |= {f"baseline: {name}": m["imputation"]["rmse"] for name, m in methods.items() if "imputation" in m}
    print("held-out imputation RMSE (test split), best first:")
    for name, value in sorted(rmse.items(), key=lambda item: item[1]):
        print(f"  {name:22s} {value:.4f}")
    best = min((name for name in scores if name in rmse), key=rmse.get)
    beaten = all(rmse[best] < value for name, value in rmse.items() if name.startswith("baseline: "))
    print(f"best model {best}: beats every baseline: {beaten}; c2st_auc {scores[best]['generation']['c2st_auc']:.3f}"
          f" (real train vs test {scores[best]['generation']['reference_train_vs_test']['c2st_auc']:.3f})")  # fmt: skip
    page = out / "report.html"
    dataset_report(dataset_dir.name, dataset_dir / "masked.h5ad", model_dirs, out / "baselines" / "scores.json", page)
    winners = re.search(r"<h2>Winners</h2>(.*?)</table>", page.read_text(), re.DOTALL).group(1)
    print("winners:", re.sub(r"<[^>]+>", "", re.search(r"Ranked metrics won[^<]*:(.*?)</p>", winners).group(1)).strip())
    for section, metric, best_label, value in re.findall(
        r"<tr><td>(\w+)</td><td>(\w+)[^<]*</td><td>([^<]*)</td><td>([^<]*)</td>", winners
    ):
        print(f"  {section:11s} {metric:28s} {best_label:24s} {value}")
    print(f"page: {page}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--n-draws", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--shipped", type=Path, default=None, help="a dataset folder of a finished run (figures only)")
    parser.add_argument("--out", type=Path, default=None, help="keep outputs here (default: a temporary folder)")
    parser.add_argument("--agreement", action="store_true", help="full test split against the default subsample")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        out = args.out or Path(scratch)
        out.mkdir(parents=True, exist_ok=True)
        if args.shipped is not None:
            shipped_figures(args.shipped, out)
        elif args.agreement:
            subsample_agreement(build_dataset(out, args.cells, args.epochs, args.n_draws))
        else:
            time_evaluation(build_dataset(out, args.cells, args.epochs, args.n_draws), args.repeats)


if __name__ == "__main__":
    main()
