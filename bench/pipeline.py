"""Whole-pipeline benchmark: the default run and each paper config, from a clean copy of the repository.

For each config it prints the wall time and CPU seconds of the whole `snakemake` run, the wall time
outside its jobs (before the first, after the last), the time per
rule (jobs, sum and max of wall seconds; sum of CPU seconds, and the CPU seconds of its cheapest job:
the fixed cost of a job of that rule with its real, small inputs), the ten slowest jobs; and once,
the fixed cost of a bare `omicsgen` process (interpreter start and argument parsing: `--help`; and
the imports of each stage's module).

    python bench/pipeline.py [--config default gain scgan scvi] [--ref HEAD] [--cores 2] [--tiny] [--keep DIR]
    python bench/pipeline.py --fixed-cost-only [--ref HEAD]

The copy is `git archive <ref>` (committed files only: what a newcomer clones) in a temp folder;
the installed venv's `omicsgen` and `snakemake` run it. Per job, wall seconds come from Snakemake's
own log (start and `Finished jobid` timestamps, 1 s resolution) and CPU seconds from the
`omicsgen <stage> finished` line each job writes to its log. `--tiny` cuts every run down (first
dataset of the sheet, 1 epoch, few samples) to smoke-test this script in a minute or two.
Runs go under `nice -n 10` (the machine is shared); figures taken under load are noisy, so read
wall time beside CPU time.
"""

from __future__ import annotations

import argparse
import io
import os
import re
import resource
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import defaultdict
from datetime import datetime, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
CONFIGS = {"default": None, "gain": "config/papers/gain_breast_cancer.yaml",
           "scgan": "config/papers/scgan_realism.yaml", "scvi": "config/papers/scvi_denoising.yaml"}
# One process per stage for the fixed cost: the module a stage imports, and a small real input.
STAGE_MODULES = {"ingest": "omicsgen.ingest", "preprocess": "omicsgen.preprocess", "mask": "omicsgen.mask",
                 "train": "omicsgen.train", "generate": "omicsgen.generate", "impute": "omicsgen.impute",
                 "evaluate": "omicsgen.evaluate", "baselines": "omicsgen.evaluate", "report": "omicsgen.report"}
# What a stage imports only when its data needs it (count data: scanpy's QC and normalisation;
# scoring: scipy.stats' ranks, sklearn's PCA, forests and imputers): the "+ on use" column adds them.
ON_USE = {"preprocess": "scanpy", "evaluate": "scipy.stats, sklearn.decomposition, sklearn.ensemble",
          "baselines": "scipy.stats, sklearn.impute, sklearn.ensemble, sklearn.linear_model"}
FINISHED = re.compile(r"omicsgen (\S+) finished in ([\d.]+) s wall, ([\d.]+) s CPU")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    parser.add_argument("--ref", default="HEAD", help="git ref to copy (default HEAD)")
    parser.add_argument("--cores", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="first dataset only, 1 epoch: a smoke test")
    parser.add_argument("--keep", type=Path, default=None, help="keep each run's folder under DIR (results, logs)")
    parser.add_argument("--no-fixed-cost", action="store_true")
    parser.add_argument("--fixed-cost-only", action="store_true", help="only the fixed-cost table (a minute), no runs")
    args = parser.parse_args()

    if not args.no_fixed_cost:
        with tempfile.TemporaryDirectory(prefix="omicsgen-bench-fixed-") as tmp:
            print_fixed_cost(clean_copy(args.ref, Path(tmp) / "repo"))
    for name in [] if args.fixed_cost_only else args.config:
        with tempfile.TemporaryDirectory(prefix=f"omicsgen-bench-{name}-") as tmp:
            folder = clean_copy(args.ref, Path(tmp) / "repo")
            configfile = prepare_config(folder, CONFIGS[name], args.tiny)
            wall, cpu, ok, launched = run_snakemake(folder, configfile, args.cores)
            print(f"\n== {name} ({'tiny, ' if args.tiny else ''}{args.ref}, {args.cores} cores): "
                  f"{wall:.0f} s wall, {cpu:.0f} s CPU (snakemake and all jobs){'' if ok else '  FAILED'}")
            jobs = read_jobs(folder)
            print_outside_jobs(jobs, launched, launched + timedelta(seconds=wall))
            print_jobs(jobs)
            if args.keep:
                target = args.keep / name
                shutil.rmtree(target, ignore_errors=True)
                target.mkdir(parents=True)
                for part in ("results", "logs", ".snakemake/log"):
                    if (folder / part).exists():
                        shutil.copytree(folder / part, target / part)
                print(f"kept {target}")


# ---- the run -------------------------------------------------------------------------------
def clean_copy(ref: str, folder: Path) -> Path:
    """The committed tree of `ref` (no results, no caches, no uncommitted edits)."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", "--format=tar", ref], check=True, capture_output=True)
    folder.mkdir(parents=True)
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(folder, filter="data")
    return folder


def prepare_config(folder: Path, configfile: str | None, tiny: bool) -> Path:
    """The config to run (the default one when `configfile` is None), cut down under --tiny."""
    path = folder / (configfile or "config/config.yaml")
    if not tiny:
        return path
    config = yaml.safe_load(path.read_text())
    sheet = folder / config["datasets"]
    lines = sheet.read_text().splitlines()
    header = next(i for i, line in enumerate(lines) if not line.startswith("#"))
    sheet.write_text("\n".join(lines[: header + 2]) + "\n")  # the first dataset only
    config.setdefault("trainer", {})["max_epochs"] = 1
    config["trainer"]["size_to_data"] = False  # small data would otherwise get more epochs (models/sizing.py)
    for spec in (config.get("models") or {}).values():
        if isinstance(spec, dict) and isinstance(spec.get("trainer"), dict):
            spec["trainer"]["max_epochs"] = 1
    config.setdefault("generate", {})["n_samples"] = 50
    config.setdefault("impute", {})["n_draws"] = 2
    tiny_path = path.with_name(path.stem + ".tiny.yaml")
    tiny_path.write_text(yaml.safe_dump(config, sort_keys=False))
    return tiny_path


def copy_env(folder: Path) -> dict:
    """The venv's commands, importing the copy's package (PYTHONPATH comes before the venv's
    editable install of the working tree)."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ['PATH']}", "PYTHONPATH": str(folder / "src")}


def print_outside_jobs(jobs: list[dict], launched: datetime, exited: datetime) -> None:
    """Wall seconds before the first job starts (Snakemake's start: imports, its plugins, the DAG)
    and after the last one ends; Snakemake's log stamps are whole seconds."""
    if not jobs:
        return
    first = min(job["start"] for job in jobs)
    last = max(job["start"] + timedelta(seconds=job["wall"]) for job in jobs)
    print(f"outside jobs: {(first - launched).total_seconds():.0f} s before the first job, "
          f"{(exited - last).total_seconds():.0f} s after the last")


def run_snakemake(folder: Path, configfile: Path, cores: int) -> tuple[float, float, bool, datetime]:
    """Wall and CPU seconds of one `snakemake` run, whether it succeeded, and when it was launched."""
    env = copy_env(folder)
    command = ["nice", "-n", "10", str(BIN / "snakemake"), "--cores", str(cores), "--configfile", str(configfile)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start, launched = time.perf_counter(), datetime.now()
    result = subprocess.run(command, cwd=folder, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if result.returncode != 0:
        print(result.stderr[-4000:], file=sys.stderr)
    return wall, cpu, result.returncode == 0, launched


# ---- reading the jobs back -----------------------------------------------------------------
def read_jobs(folder: Path) -> list[dict]:
    """One dict per finished job: rule, wildcards, wall seconds (Snakemake's log), CPU seconds
    (the job's own log, when it has the `finished` line)."""
    logs = sorted((folder / ".snakemake" / "log").glob("*.snakemake.log"))
    if not logs:
        return []
    jobs, started, now, current = [], {}, None, None
    for line in logs[-1].read_text().splitlines():
        stamp = re.fullmatch(r"\[(\w{3} \w{3} +\d+ [\d:]+ \d{4})\]", line.strip())
        if stamp:
            now = datetime.strptime(stamp[1], "%a %b %d %H:%M:%S %Y")
            continue
        rule = re.fullmatch(r"(?:local)?(?:rule|checkpoint) (\w+):", line.strip())
        if rule:
            current = {"rule": rule[1], "start": now, "wildcards": "", "log": None}
            continue
        field = re.fullmatch(r"(jobid|wildcards|log): (.*)", line.strip())
        if field and current is not None:
            if field[1] == "jobid":
                started[field[2]] = current
            else:
                current[field[1]] = field[2]
            continue
        done = re.match(r"Finished jobid: (\d+)", line.strip())
        if done and done[1] in started:
            job = started.pop(done[1])
            job["wall"] = (now - job["start"]).total_seconds()
            job["cpu"] = _job_cpu(folder, job["log"])
            jobs.append(job)
    return jobs


def _job_cpu(folder: Path, log: str | None) -> float | None:
    if not log or not (folder / log).is_file():
        return None
    found = FINISHED.findall((folder / log).read_text(errors="replace"))
    return float(found[-1][2]) if found else None


def print_jobs(jobs: list[dict]) -> None:
    if not jobs:
        print("no finished jobs in Snakemake's log")
        return
    per_rule = defaultdict(list)
    for job in jobs:
        per_rule[job["rule"]].append(job)
    # min CPU s: the cheapest job of the rule, i.e. its fixed cost (start, imports, reading) plus the least work
    print(f"{'rule':<20}{'jobs':>6}{'sum s':>9}{'max s':>8}{'CPU s':>9}{'min CPU s':>11}")
    for rule, group in sorted(per_rule.items(), key=lambda item: -sum(j["wall"] for j in item[1])):
        cpu = [j["cpu"] for j in group if j["cpu"] is not None]
        print(f"{rule:<20}{len(group):>6}{sum(j['wall'] for j in group):>9.0f}{max(j['wall'] for j in group):>8.0f}"
              f"{(f'{sum(cpu):.0f}' if cpu else '-'):>9}{(f'{min(cpu):.1f}' if cpu else '-'):>11}")
    print("ten slowest jobs:")
    for job in sorted(jobs, key=lambda j: -j["wall"])[:10]:
        cpu = "-" if job["cpu"] is None else f"{job['cpu']:.1f}"
        print(f"  {job['wall']:>5.0f} s wall {cpu:>6} s CPU  {job['rule']} {job['wildcards']}")


# ---- fixed cost ----------------------------------------------------------------------------
def print_fixed_cost(folder: Path) -> None:
    """Process start + argument parsing (`omicsgen <stage> --help`) and process start + the
    stage's imports, each in a fresh process (median of 3), with the copy's package; and with
    the libraries the stage imports only on use (ON_USE). Each import ends as a job does
    (`cli.run`: `os._exit`, no teardown of the modules)."""
    print("fixed cost of one job (fresh process, median of 3; wall s / CPU s):")
    print(f"{'stage':<12}{'--help':>16}{'imports':>16}{'+ on use':>16}")
    for stage, module in STAGE_MODULES.items():
        help_cost = _median_cost([str(BIN / "omicsgen"), stage, "--help"], folder)
        import_cost = _median_cost([sys.executable, "-c", f"import {module}, os; os._exit(0)"], folder)
        line = f"{stage:<12}{help_cost[0]:>8.2f}/{help_cost[1]:<7.2f}{import_cost[0]:>8.2f}/{import_cost[1]:<7.2f}"
        if stage in ON_USE:
            used = _median_cost([sys.executable, "-c", f"import {module}, {ON_USE[stage]}, os; os._exit(0)"], folder)
            line += f"{used[0]:>8.2f}/{used[1]:<7.2f}"
        print(line)


def _median_cost(command: list[str], folder: Path, repeats: int = 3) -> tuple[float, float]:
    walls, cpus = [], []
    env = {**copy_env(folder), "OMP_NUM_THREADS": "1"}
    for _ in range(repeats):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        start = time.perf_counter()
        subprocess.run(["nice", "-n", "10", *command], check=True, capture_output=True, env=env)
        walls.append(time.perf_counter() - start)
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpus.append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return sorted(walls)[repeats // 2], sorted(cpus)[repeats // 2]


if __name__ == "__main__":
    main()
