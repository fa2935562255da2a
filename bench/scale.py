"""Scale benchmark: ingest, preprocess, mask, one training epoch of the NB VAE (scVI's
architecture: 128 hidden, 10 latent, 1 layer, batch 128), generating as many cells as the data
has, imputing with 20 draws, then the stages after the model as the workflow's rules call them
(config/config.yaml's defaults): evaluate, baselines, complete and the dataset's report page,
for 10k, 100k and 1M cells x 2,000 genes.

The count matrices are built by resampling the real 10x cells of resources/mouse_10x_counts.h5ad
(with replacement) and tiling its 1,000 genes twice; they stay sparse (CSR) end to end. Each
stage runs as `omicsgen <stage>` in its own process; the benchmark prints its wall time, its peak
memory (the process's max RSS, from wait4) and, for training, the cells/s of the training steps
(from the `train rows/s` line of `omicsgen train`, validation and checkpointing excluded).

    python bench/scale.py [--sizes 10000 100000 1000000] [--scratch DIR] [--threads 1] [--stages ...]

Torch threads default to 1: on cores shared with other work, OpenMP's spinning threads make a
2-thread epoch up to 30x slower than a 1-thread one (measured here: 53 vs 1,765 cells/s).
With --scratch, inputs built earlier are reused and --stages reruns only some stages;
`--stages evaluate_all_rows` scores every test row (`--max-rows none`, into scores_all_rows.json)
to compare with the default subsample's scores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
N_GENES = 2000
PREPROCESS = {"min_genes": 20, "min_cells": 0, "target_sum": 10000, "n_top_genes": None}  # all 2,000 genes kept
SPLIT = {"val": 0.1, "test": 0.2}
VAE = {"likelihood": "nb", "hidden_dim": 128, "latent_dim": 10, "n_layers": 1}
TRAINER = {"max_epochs": 1, "batch_size": 128, "accelerator": "cpu"}
N_DRAWS = 20  # the default run's multiple imputation
N_SAMPLES = 1000  # generate.n_samples: what each generation baseline draws
# the config's `evaluate:` section, as evaluate.smk and baselines.smk pass it
SCORING = ["--max-rows", "10000", "--max-train-rows", "2000", "--bootstrap", "200", "--c2st-rows", "500"]
COMPLETE_TRAINER = {"accelerator": "cpu", "devices": 1, "precision": "32-true"}  # complete.smk's subset of trainer:
CHOICES = [{"model": "vae", "family": "vae", "chosen": True, "reason": "the scale benchmark's one model"}]
DEFAULT_STAGES = ["ingest", "preprocess", "mask", "train", "generate", "impute", "evaluate", "baselines", "complete",
                  "report"]
THROUGHPUT = re.compile(r"in ([\d.]+) s of training steps: (\d+) train rows/s")


def build_counts(path: Path, n_cells: int, seed: int = 0) -> None:
    """`n_cells` real cells drawn with replacement, their 1,000 genes tiled to 2,000 (CSR int32)."""
    source = ad.read_h5ad(ROOT / "resources" / "mouse_10x_counts.h5ad")
    tiles = N_GENES // source.n_vars
    rows = np.random.default_rng(seed).integers(0, source.n_obs, n_cells)
    matrix = sp.hstack([source.X] * tiles, format="csr")[rows]
    genes = [f"{gene}_{tile}" for tile in range(tiles) for gene in source.var_names]
    obs = pd.DataFrame(index=[f"cell{i}" for i in range(n_cells)])
    ad.AnnData(matrix, obs=obs, var=pd.DataFrame(index=genes)).write_h5ad(path)


def run_stage(command: list[str], threads: int) -> dict:
    """Wall time and max RSS of one `omicsgen` process (wait4 gives that process's own peak)."""
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env)
        _, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - started
        log.seek(0)
        output = log.read()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:  # reported and the next stages still run (those needing its output fail in turn)
        print(f"# {' '.join(command)} failed (exit {code}):\n{output[-3000:]}", file=sys.stderr, flush=True)
    return {"seconds": seconds, "peak_gb": usage.ru_maxrss / 1024**2, "output": output, "exit": code}  # KiB -> GiB


def stages(folder: Path, n_cells: int) -> dict[str, list[str]]:
    omicsgen = [sys.executable, "-m", "omicsgen.cli"]
    checkpoint = str(folder / "vae" / "model.ckpt")
    data = {name: str(folder / f"{name}.h5ad") for name in ("raw", "ingested", "prepared", "masked")}
    return {**model_stages(omicsgen, folder, data, checkpoint, n_cells),
            **scoring_stages(omicsgen, folder, data, checkpoint)}


def model_stages(omicsgen: list[str], folder: Path, data: dict, checkpoint: str, n_cells: int) -> dict[str, list[str]]:
    return {
        "ingest": omicsgen + ["ingest", "--input", data["raw"], "--output", data["ingested"], "--dataset", "scale",
                              "--modality", "expression"],
        "preprocess": omicsgen + ["preprocess", "--input", data["ingested"], "--output", data["prepared"],
                                  "--params", json.dumps(PREPROCESS), "--split", json.dumps(SPLIT), "--seed", "0"],
        "mask": omicsgen + ["mask", "--input", data["prepared"], "--output", data["masked"], "--rate", "0.1",
                            "--mechanism", "mcar", "--seed", "0"],
        "train": omicsgen + ["train", "--input", data["masked"], "--outdir", str(folder / "vae"), "--family", "vae",
                             "--params", json.dumps(VAE), "--trainer", json.dumps(TRAINER), "--seed", "0"],
        "generate": omicsgen + ["generate", "--input", data["masked"], "--checkpoint", checkpoint, "--seed", "0",
                                "--output", str(folder / "vae" / "samples.h5ad"), "--n-samples", str(n_cells)],
        "impute": omicsgen + ["impute", "--input", data["masked"], "--checkpoint", checkpoint, "--seed", "0",
                              "--output", str(folder / "vae" / "imputed.h5ad"), "--n-draws", str(N_DRAWS)],
    }


def scoring_stages(omicsgen: list[str], folder: Path, data: dict, checkpoint: str) -> dict[str, list[str]]:
    """evaluate, baselines, complete and report with the arguments of their rules."""
    vae = folder / "vae"
    evaluate = omicsgen + ["evaluate", "--input", data["masked"], "--imputed", str(vae / "imputed.h5ad"),
                           "--samples", str(vae / "samples.h5ad"), "--checkpoint", checkpoint, "--seed", "0"]
    return {
        "evaluate": evaluate + ["--output", str(vae / "scores.json")] + SCORING,
        "evaluate_all_rows": evaluate + ["--output", str(vae / "scores_all_rows.json")] + SCORING[2:]
        + ["--max-rows", "none"],
        "baselines": omicsgen + ["baselines", "--input", data["masked"], "--output",
                                 str(folder / "baselines" / "scores.json"), "--n-samples", str(N_SAMPLES),
                                 "--seed", "0"] + SCORING,
        "complete": omicsgen + ["complete", "--input", data["ingested"], "--masked", data["masked"], "--imputed",
                                str(vae / "imputed.h5ad"), "--trainer", json.dumps(COMPLETE_TRAINER), "--n-draws",
                                str(N_DRAWS), "--seed", "0", "--max-train-rows", "2000", "--output",
                                str(folder / "completed.h5ad")],
        "report": omicsgen + ["report", "--dataset", "scale", "--input", data["masked"], "--scores",
                              str(vae / "scores.json"), "--baselines", str(folder / "baselines" / "scores.json"),
                              "--choices", json.dumps(CHOICES), "--output", str(folder / "report.html")],
    }


def bench_size(n_cells: int, scratch: Path, threads: int, only: list[str]) -> list[dict]:
    folder = scratch / f"cells_{n_cells}"
    folder.mkdir(parents=True, exist_ok=True)
    if not (folder / "raw.h5ad").exists():
        build_counts(folder / "raw.h5ad", n_cells)
    results = []
    for stage, command in stages(folder, n_cells).items():
        if stage not in only:
            continue
        result = run_stage(command, threads)
        row = {"cells": n_cells, "stage": stage, "seconds": round(result["seconds"], 1),
               "peak_gib": round(result["peak_gb"], 2), "train_cells_per_s": "",
               "status": "ok" if result["exit"] == 0 else f"exit {result['exit']}"}
        if stage == "train":
            match = THROUGHPUT.search(result["output"])
            row["train_cells_per_s"] = int(match.group(2)) if match else "?"
        results.append(row)
        print("\t".join(str(row[k]) for k in row), flush=True)
    masked = ad.read_h5ad(folder / "masked.h5ad", backed="r")
    print(f"# {n_cells} cells: masked.h5ad {masked.n_obs} x {masked.n_vars}, "
          f"{(folder / 'masked.h5ad').stat().st_size / 1024**2:.0f} MB on disk", flush=True)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--scratch", type=Path, default=None, help="keeps the built inputs between runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--stages", nargs="+", default=DEFAULT_STAGES)
    args = parser.parse_args()
    scratch = args.scratch or Path(tempfile.mkdtemp(prefix="omicsgen-scale-"))
    print(f"# scratch {scratch}; {args.threads} torch threads; stage wall time, peak RSS, training cells/s")
    print("cells\tstage\tseconds\tpeak_gib\ttrain_cells_per_s\tstatus", flush=True)
    for n_cells in args.sizes:
        bench_size(n_cells, scratch, args.threads, args.stages)


if __name__ == "__main__":
    main()
