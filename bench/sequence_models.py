"""Sequence generators on one or more FASTA files, through the CLI stages a user runs:
`omicsgen ingest / preprocess / mask / train / generate / evaluate` (and `baselines`), with the
arguments of workflow/rules/*.smk and the default config's preprocess, split, mask and trainer.

Prints one row per dataset and model: c2st_auc of the samples against the real test rows (0.5 =
indistinguishable), the real-vs-real reference (train vs test) beside it, the held-out
perplexity, and the train job's wall and CPU seconds (CPU s per epoch too: wall time is inflated by
load on a shared machine); the Markov chain baseline as a row too.

    python bench/sequence_models.py --fasta resources/ww_domain_alignment.fa:protein \\
        --models lstm wgan --workdir /tmp/seqbench

A FASTA is given as PATH[:ALPHABET] (dna, rna, protein; auto when left out). A model is a family
name from the default config's `models:` (lstm, gru_lm, wgan, vae_seq) or FAMILY:JSON_PARAMS.
Runs are single-threaded (OMP_NUM_THREADS=1), as a shared machine wants.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
CONFIG = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())


def run(args: list[str], log: Path) -> tuple[float, float]:
    """Run one `omicsgen` stage; (wall seconds, CPU seconds of the child). Fails loudly."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run(["omicsgen", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        sys.exit(f"omicsgen {args[0]} failed (exit {done.returncode}); see {log}")
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def prepare(fasta: str, alphabet: str, name: str, work: Path, seed: int) -> Path:
    """ingest -> preprocess -> mask with the default config; returns masked.h5ad."""
    work.mkdir(parents=True, exist_ok=True)
    ingested, prepared, masked = work / "ingested.h5ad", work / "prepared.h5ad", work / "masked.h5ad"
    if not masked.exists():
        run(["ingest", "--input", fasta, "--output", str(ingested), "--dataset", name, "--modality", "sequence",
             "--alphabet", alphabet], work / "ingest.log")
        run(["preprocess", "--input", str(ingested), "--output", str(prepared),
             "--params", json.dumps(CONFIG["preprocess"]["sequence"]), "--split", json.dumps(CONFIG["split"]),
             "--seed", str(seed)], work / "preprocess.log")
        mask = CONFIG["mask"]
        run(["mask", "--input", str(prepared), "--output", str(masked), "--rate", str(mask["rate"]),
             "--mechanism", mask["mechanism"], "--span-length", str(mask["span_length"]), "--seed", str(seed)],
            work / "mask.log")
    return masked


def model_spec(spec: str) -> tuple[str, str, dict, dict]:
    """(name, family, hparams, trainer) from NAME (a model of the default config) or FAMILY:JSON."""
    name, _, extra = spec.partition(":")
    entry = dict(CONFIG["models"].get(name, {"family": name}))
    for key in ("datasets", "when"):  # which data a model runs on: not hyper-parameters
        entry.pop(key, None)
    trainer = {**{k: v for k, v in CONFIG["trainer"].items()}, **entry.pop("trainer", {})}
    family = entry.pop("family")
    params = {**entry, **(json.loads(extra) if extra else {})}
    trainer.update(params.pop("trainer", {}))
    label = name if not extra else f"{name}{json.dumps(params, separators=(',', ':'))}"
    return label, family, params, trainer


def fit_and_score(masked: Path, spec: str, work: Path, seed: int, n_samples: int) -> dict:
    label, family, params, trainer = model_spec(spec)
    out = work / label.replace("/", "_").replace(" ", "")[:80]
    out.mkdir(parents=True, exist_ok=True)
    ckpt, samples, scores = out / "model.ckpt", out / "samples.h5ad", out / "scores.json"
    wall, cpu = run(["train", "--input", str(masked), "--outdir", str(out), "--family", family,
                     "--params", json.dumps(params), "--trainer", json.dumps(trainer), "--seed", str(seed)],
                    out / "train.log")
    epochs = max(1, sum(1 for _ in (out / "metrics.csv").open()) - 1)
    run(["generate", "--input", str(masked), "--checkpoint", str(ckpt), "--output", str(samples),
         "--n-samples", str(n_samples), "--seed", str(seed)], out / "generate.log")
    run(["evaluate", "--input", str(masked), "--samples", str(samples), "--checkpoint", str(ckpt),
         "--output", str(scores), "--seed", str(seed)], out / "evaluate.log")
    result = json.loads(scores.read_text())
    generation = result["generation"]
    return {"model": label, "c2st_auc": generation["c2st_auc"],
            "real_vs_real": generation["reference_train_vs_test"]["c2st_auc"],
            "perplexity": result.get("likelihood", {}).get("heldout_perplexity", float("nan")),
            "epochs": epochs, "train_s": wall, "train_cpu_s": cpu, "s_per_epoch": wall / epochs,
            "cpu_s_per_epoch": cpu / epochs}


def markov(masked: Path, work: Path, seed: int, n_samples: int) -> dict:
    out = work / "baselines.json"
    if not out.exists():
        run(["baselines", "--input", str(masked), "--output", str(out), "--n-samples", str(n_samples),
             "--seed", str(seed)], work / "baselines.log")
    methods = json.loads(out.read_text())["methods"]
    name = next(m for m in methods if "markov" in m)
    return {"model": f"baseline {name}", "c2st_auc": methods[name]["generation"]["c2st_auc"],
            "real_vs_real": float("nan"),
            "perplexity": methods[name].get("likelihood", {}).get("heldout_perplexity", float("nan"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fasta", nargs="+", required=True, help="PATH[:ALPHABET] each")
    parser.add_argument("--models", nargs="+", default=["lstm", "wgan"])
    parser.add_argument("--workdir", default="/tmp/omicsgen-seqbench")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-samples", type=int, default=CONFIG["generate"]["n_samples"])
    parser.add_argument("--no-baseline", action="store_true")
    args = parser.parse_args()
    rows = []
    print(f"{'dataset':<22} {'model':<40} {'c2st':>6} {'real':>6} {'perplex':>8} {'epochs':>6} {'s/epoch':>8} "
          f"{'train s':>8} {'cpu s':>7} {'cpu/ep':>7}", flush=True)
    for item in args.fasta:
        path, _, alphabet = item.partition(":")
        name = Path(path).name.split(".")[0]
        work = Path(args.workdir) / name
        masked = prepare(str(Path(path).resolve()), alphabet or "auto", name, work, args.seed)
        results = [] if args.no_baseline else [markov(masked, work, args.seed, args.n_samples)]
        for row in results:
            _print(name, row)
        for spec in args.models:
            row = fit_and_score(masked, spec, work, args.seed, args.n_samples)
            _print(name, row)
            results.append(row)
        rows += [{"dataset": name, **r} for r in results]
    (Path(args.workdir) / "table.json").write_text(json.dumps(rows, indent=1))


def _print(name: str, row: dict) -> None:
    nan = float("nan")
    print(f"{name:<22} {row['model'][:40]:<40} {row['c2st_auc']:6.3f} {row['real_vs_real']:6.3f} "
          f"{row['perplexity']:8.3f} {row.get('epochs', 0):6d} {row.get('s_per_epoch', nan):8.2f} "
          f"{row.get('train_s', nan):8.1f} {row.get('train_cpu_s', nan):7.1f} {row.get('cpu_s_per_epoch', nan):7.2f}",
          flush=True)


if __name__ == "__main__":
    main()
