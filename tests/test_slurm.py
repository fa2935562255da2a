"""The pipeline on a real SLURM cluster, through workflow/profiles/slurm and real `sbatch`.

Needs a running cluster: as root, `scripts/slurm/install.sh && scripts/slurm/start.sh` starts a single-node one on
this machine (node localhost with 2 fake GPUs, partition debug, account omicsgen, accounting through slurmdbd).
Skips, saying why, when no cluster answers. Runs the same tiny config locally and on the cluster and compares.
Data-parallel training (DDP): two ranks started by srun as two tasks on one node, against one process; and what
sbatch is asked for by 1, N and N x M devices (a dry run, no cluster needed).
"""

from __future__ import annotations

import getpass
import importlib.util
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import anndata as ad
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from test_workflow import ROOT, make_project, snakemake, tiny_config

PROFILE = ROOT / "workflow" / "profiles" / "slurm"
# this test cluster's names (scripts/slurm/start.sh); override for another cluster
ACCOUNT, PARTITION = "omicsgen", "debug"
GPU_RULES = {"train", "generate", "impute"}


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=30)


def cluster_problem() -> str | None:
    """Why the test cannot run here, or None when a SLURM cluster with an idle node answers."""
    if importlib.util.find_spec("snakemake_executor_plugin_slurm") is None:
        return "snakemake-executor-plugin-slurm is not installed"
    if shutil.which("sinfo") is None:
        return "no SLURM here (sinfo not found): as root, run scripts/slurm/install.sh && scripts/slurm/start.sh"
    try:
        states = _run("sinfo", "-h", "-p", PARTITION, "-o", "%t")
        accounting = _run("sacct", "-n", "-X", "-S", "now-1minutes", "-o", "JobID")
        user = getpass.getuser()
        association = _run("sacctmgr", "-n", "-P", "show", "assoc", f"user={user}", f"account={ACCOUNT}", "format=account")
    except (subprocess.TimeoutExpired, OSError) as err:
        return f"SLURM does not answer: {err}"
    if states.returncode != 0:
        return f"SLURM is not up (sinfo: {states.stderr.strip()}): run scripts/slurm/start.sh as root"
    if "idle" not in states.stdout.split():
        return f"no idle node in partition {PARTITION} (sinfo states: {states.stdout.split() or 'none'})"
    if accounting.returncode != 0:
        return f"sacct does not work (no accounting): {accounting.stderr.strip()}"
    if ACCOUNT not in association.stdout.split():
        return f"user {user} may not submit to account {ACCOUNT} (scripts/slurm/start.sh adds the user who ran it)"
    return None


needs_cluster = pytest.mark.skipif(bool(problem := cluster_problem()), reason=f"no SLURM cluster: {problem}")


def cluster_profile(folder: Path) -> Path:
    """The repository's resources section with this cluster's account and partitions, as a second profile.

    A later --profile replaces whole top-level keys, so everything but the names is the repository profile's.
    """
    profile = yaml.safe_load((PROFILE / "config.yaml").read_text())
    names = {"slurm_account": ACCOUNT, "slurm_partition": PARTITION}
    resources = {"default-resources": {**profile["default-resources"], **names},
                 "set-resources": {rule: {**spec, **{k: v for k, v in names.items() if k in spec}}
                                   for rule, spec in (profile["set-resources"] or {}).items()}}
    (folder / "config.yaml").write_text(yaml.safe_dump(resources))
    return folder


def sacct(job_ids: list[str]) -> dict[str, dict[str, str]]:
    out = _run("sacct", "-n", "-X", "-P", "-j", ",".join(job_ids), "-o", "JobID,State,AllocTRES,Comment,Account,Partition")
    assert out.returncode == 0, out.stderr
    rows = [line.split("|") for line in out.stdout.splitlines() if line.strip()]
    return {r[0]: dict(zip(("state", "tres", "comment", "account", "partition"), r[1:])) for r in rows}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, tiny_data):
    config = tiny_config()
    config["trainer"].update(max_epochs=2, size_to_data=False)  # the cluster's plumbing, not the small-data regime
    config["models"] = {"vae": config["models"]["vae"]}
    rows = [("cells", "expression", str(tiny_data["cells"]))]
    local = make_project(tmp_path_factory.mktemp("local"), tiny_data, rows, config)
    # one job at a time, as on the test cluster's 2 CPUs
    result = snakemake(local, "--resources", "serial=1", "--default-resources", "serial=1")
    assert result.returncode == 0, result.stderr[-5000:]
    cluster = make_project(tmp_path_factory.mktemp("slurm"), tiny_data, rows, config)
    overrides = cluster_profile(tmp_path_factory.mktemp("profile"))
    result = snakemake(cluster, "--profile", str(PROFILE), "--profile", str(overrides),
                       "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    return local, cluster, output


@needs_cluster
def test_every_job_went_through_sbatch_and_completed(runs):
    _, cluster, output = runs
    job_ids = re.findall(r"submitted with SLURM jobid (\d+)", output)
    # the last progress line counts every job, those the checkpoint (choose_models) added included
    total = int(re.findall(r"(\d+) of (\d+) steps", output)[-1][1])
    assert len(set(job_ids)) == len(job_ids) == total - 1, output[-5000:]  # all but the target rule `all`
    jobs = sacct(job_ids)
    assert set(jobs) == set(job_ids)
    for job_id, job in jobs.items():
        rule = re.match(r"rule_(\w+?)(_wildcards_|$)", job["comment"]).group(1)
        assert job["state"] == "COMPLETED", (rule, job)
        assert (job["account"], job["partition"]) == (ACCOUNT, PARTITION), (rule, job)
        assert ("gres/gpu=1" in job["tres"]) == (rule in GPU_RULES), (rule, job)  # GPUs only where a model runs
    assert any((cluster / ".snakemake" / "slurm_logs").rglob("*.log"))


def same_numbers(here, there, path: str = "") -> None:
    """Equal JSON, except the known run-to-run noise (see below)."""
    if isinstance(here, dict):
        assert set(here) == set(there), path
        for key in here:
            # The SVD baseline and the classifier two-sample test (c2st) of omicsgen evaluate/baselines are not
            # reproducible between runs of the same command on a loaded machine, local or not; all else is exact.
            if not (path.endswith("/methods") and key == "svd"):
                same_numbers(here[key], there[key], f"{path}/{key}")
    elif isinstance(here, list) and isinstance(there, list):  # e.g. c2st_top_features: a list of records
        assert len(here) == len(there), path
        for i, (a, b) in enumerate(zip(here, there)):
            same_numbers(a, b, f"{path}/{i}")
    elif "c2st" in path and isinstance(here, float):
        assert here == pytest.approx(there, abs=0.05), path
    else:
        assert here == there, path


def dense(matrix) -> np.ndarray:
    return matrix.toarray() if hasattr(matrix, "toarray") else np.asarray(matrix)


@needs_cluster
def test_cluster_outputs_match_a_local_run(runs):
    local, cluster, _ = runs
    files = sorted(p.relative_to(local) for p in (local / "results").rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(cluster) for p in (cluster / "results").rglob("*") if p.is_file())
    assert any(name.name == "model.ckpt" for name in files)
    for name in files:
        if name.suffix == ".json":
            same_numbers(json.loads((local / name).read_text()), json.loads((cluster / name).read_text()), str(name))
        elif name.suffix == ".csv":  # training curves: CPU training with one seed is deterministic
            assert (local / name).read_text() == (cluster / name).read_text(), name
        elif name.suffix == ".h5ad":  # ingest, preprocess, mask, generate and impute are deterministic
            here, there = ad.read_h5ad(local / name), ad.read_h5ad(cluster / name)
            assert list(here.obs_names) == list(there.obs_names) and list(here.var_names) == list(there.var_names)
            np.testing.assert_array_equal(dense(here.X), dense(there.X), err_msg=str(name))
            assert set(here.layers) == set(there.layers) and set(here.obsm) == set(there.obsm), name
            for key in here.layers:
                np.testing.assert_array_equal(dense(here.layers[key]), dense(there.layers[key]), err_msg=f"{name} {key}")
            for key in here.obsm:
                np.testing.assert_array_equal(dense(here.obsm[key]), dense(there.obsm[key]), err_msg=f"{name} {key}")


# ---- data-parallel training (DDP): the train rule on several devices and nodes ---------------------------------
# Two ranks on CPU (gloo); each takes half of every batch's rows (the sharding of omicsgen.batches), so a rank's
# batch_size of 32 makes the same 64-row optimiser steps as one process with 64.
DDP_TRAINER = {"devices": 2, "strategy": "ddp", "accelerator": "cpu", "batch_size": 32}
ONE_TRAINER = {"devices": 1, "strategy": "auto", "accelerator": "cpu", "batch_size": 64}
DDP_TARGET = "results/cells/ddp/model.ckpt"


def ddp_config() -> dict:
    config = tiny_config()
    config["trainer"].update(max_epochs=2, size_to_data=False)  # 2 epochs, batches as given (models/sizing.py)
    config["models"] = {"ddp": {"family": "ae", "trainer": DDP_TRAINER}}
    return config


def trained(outdir: Path) -> tuple[int, pd.Series]:
    """(optimiser steps, val loss of every epoch) of a finished training."""
    checkpoint = torch.load(outdir / "model.ckpt", map_location="cpu", weights_only=False)
    return int(checkpoint["global_step"]), pd.read_csv(outdir / "metrics.csv")["val_loss"]


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory, tiny_data):
    """One masked.h5ad, the DDP model trained on it by 2 ranks started by srun on the cluster, by 2 ranks that
    Lightning starts in a local run of the same rule, and by 1 process (`omicsgen train`); with the seconds taken."""
    config = ddp_config()
    base = make_project(tmp_path_factory.mktemp("ddp") / "base", tiny_data,
                        [("cells", "expression", str(tiny_data["cells"]))], config)
    result = snakemake(base, "results/cells/masked.h5ad")  # the stages before train, locally
    assert result.returncode == 0, result.stderr[-5000:]
    local, cluster, one = (base.parent / name for name in ("local", "slurm", "one"))
    for folder in (local, cluster):  # the same files and Snakemake records: only train is left to run
        shutil.copytree(base, folder, symlinks=True)
    seconds = {}

    started = time.monotonic()
    (base.parent / "profile").mkdir()
    overrides = cluster_profile(base.parent / "profile")
    # one thread a rank: the two ranks fill the test node's 2 CPUs
    result = snakemake(cluster, "--profile", str(PROFILE), "--profile", str(overrides), "--set-threads", "train=1",
                       "--slurm-init-seconds-before-status-checks", "2", "--slurm-keep-successful-logs", "--verbose",
                       DDP_TARGET)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    seconds["slurm"] = time.monotonic() - started

    started = time.monotonic()
    result = snakemake(local, DDP_TARGET)
    assert result.returncode == 0, result.stderr[-5000:]
    seconds["local"] = time.monotonic() - started

    started = time.monotonic()
    command = [sys.executable, "-m", "omicsgen.cli", "train", "--input", str(base / "results/cells/masked.h5ad"),
               "--outdir", str(one), "--family", "ae", "--params", "{}", "--seed", str(config["seed"]),
               "--trainer", json.dumps({**config["trainer"], **ONE_TRAINER})]
    done = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    seconds["one"] = time.monotonic() - started
    print(f"DDP test: seconds {', '.join(f'{k} {v:.1f}' for k, v in seconds.items())}")
    return base, cluster / "results/cells/ddp", local / "results/cells/ddp", one, output


@needs_cluster
def test_ddp_ranks_come_from_srun_as_two_tasks_on_one_node(ddp_runs):
    base, cluster, _, _, output = ddp_runs
    sbatch = re.findall(r"sbatch call: (.*)", output)
    assert len(sbatch) == 1, output[-5000:]  # train alone went to the cluster
    assert "--nodes=1" in sbatch[0] and "--ntasks-per-node=2" in sbatch[0] and "gpu" not in sbatch[0], sbatch
    job_id = re.search(r"submitted with SLURM jobid (\d+)", output).group(1)
    steps = _run("sacct", "-n", "-P", "-j", job_id, "-o", "JobID,State,NNodes,NTasks")
    assert steps.returncode == 0, steps.stderr
    rows = [line.split("|") for line in steps.stdout.splitlines() if line.strip()]
    assert all(state == "COMPLETED" for _, state, _, _ in rows), rows
    # the job itself, its batch step (Snakemake), and one srun step of 2 tasks: the ranks
    assert [(nodes, tasks) for job, _, nodes, tasks in rows if re.fullmatch(rf"{job_id}\.\d+", job)] == [("1", "2")], rows
    log = (base.parent / "slurm" / "logs/cells/ddp/train.log").read_text()
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in log, log[-3000:]  # rank 1 of 2 joined


@needs_cluster
def test_ddp_makes_the_steps_and_the_loss_of_one_process(ddp_runs):
    base, cluster, local, one, _ = ddp_runs
    for outdir in (cluster, local, one):  # rank 0 alone wrote, and only the outputs
        assert sorted(p.name for p in outdir.iterdir()) == ["metrics.csv", "model.ckpt"], outdir
    n_train = int((ad.read_h5ad(base / "results/cells/masked.h5ad", backed="r").obs["split"] == "train").sum())
    epochs = ddp_config()["trainer"]["max_epochs"]
    (steps_one, loss_one), (steps_slurm, loss_slurm), (steps_local, loss_local) = map(trained, (one, cluster, local))
    print(f"DDP test: {n_train} train rows; steps 1 process {steps_one}, 2 ranks srun {steps_slurm}, 2 ranks local "
          f"{steps_local}; val loss {list(loss_one)} / {list(loss_slurm)} / {list(loss_local)}")
    assert steps_one == epochs * -(-n_train // ONE_TRAINER["batch_size"])
    assert steps_slurm == steps_local == steps_one  # every rank's step covers 2 x 32 of the rows: no row twice
    assert len(loss_one) == len(loss_slurm) == len(loss_local) == epochs
    # the same rows a step and averaged gradients: the curves differ by the ranks' own noise draws only
    np.testing.assert_allclose(loss_slurm, loss_one, rtol=0.02)
    np.testing.assert_allclose(loss_slurm, loss_local, rtol=1e-3)  # srun or Lightning: the same ranks


@pytest.mark.parametrize(("devices", "ranks"), [(1, 1), (2, 2), ("4", 4), ("0,1", 2), ("auto", 1), (-1, 1)])
def test_devices_per_node_counts_ranks_as_lightning_does(devices, ranks):
    from omicsgen.slurm import devices_per_node

    assert devices_per_node(devices) == ranks  # "auto" and -1 cannot be sized before the job: one task


def dry_run_resources(folder: Path) -> dict[str, dict]:
    """model -> the train job's resources, as a dry run through the SLURM profile prints them."""
    result = snakemake(folder, "--profile", str(PROFILE), "--dry-run", "--printshellcmds",
                       *[f"results/cells/{model}/model.ckpt" for model in GEOMETRIES])
    assert result.returncode == 0, (result.stdout + result.stderr)[-5000:]
    jobs = {}
    for block in result.stdout.split("rule train:")[1:]:
        model = re.search(r"model=(\w+)", block).group(1)
        pairs = re.search(r"resources: (.*)", block).group(1).split(", ")
        jobs[model] = {k: int(v) if v.isdigit() else v for k, v in (pair.split("=", 1) for pair in pairs)}
        threads = re.search(r"threads: (\d+)", block)  # not printed for 1
        jobs[model]["threads"] = int(threads.group(1)) if threads else 1
        jobs[model]["shell"] = re.search(r"Shell command: (.*)", block).group(1)
    return jobs


# model -> (trainer settings, what sbatch must be asked, what it must not)
GEOMETRIES = {
    "one_gpu": ({"devices": 1}, ["--gpus=1"], ["--nodes", "--ntasks-per-node", "--gpus-per-node"]),
    "one_cpu": ({"devices": 1, "accelerator": "cpu"}, ["--ntasks=1"], ["--nodes", "--gpus"]),
    "ddp_cpu": ({"devices": 2, "strategy": "ddp", "accelerator": "cpu"}, ["--nodes=1", "--ntasks-per-node=2"],
                ["--gpus"]),
    "ddp_gpu": ({"devices": 4, "strategy": "ddp", "accelerator": "gpu"},
                ["--nodes=1", "--ntasks-per-node=4", "--gpus-per-node=4"], ["--gpus="]),
    "ddp_nodes": ({"devices": 4, "num_nodes": 2, "strategy": "ddp"},
                  ["--nodes=2", "--ntasks-per-node=4", "--gpus-per-node=4"], ["--gpus="]),
    "one_per_node": ({"devices": 1, "num_nodes": 3, "strategy": "ddp"}, ["--nodes=3", "--ntasks=3", "--gpus-per-node=1"],
                     ["--gpus=", "--ntasks-per-node"]),
}


class Resources(dict):
    """A job's resources as the SLURM plugin reads them (`.get` and attributes)."""

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


def test_sbatch_asks_what_lightning_expects(tmp_path, tiny_data):
    """1 device: --gpus=1 (the plugin starts it under srun -n1); N devices: --ntasks-per-node=N --gpus-per-node=N
    on --nodes=M, and the job's shell starts the ranks with srun: the plugin's own sbatch line, from a dry run."""
    pytest.importorskip("snakemake_executor_plugin_slurm")
    from snakemake_executor_plugin_slurm.submit_string import get_submit_command
    from snakemake_executor_plugin_slurm.utils import set_gres_string
    from snakemake_executor_plugin_slurm.validation import validate_slurm_extra

    config = tiny_config()
    config["models"] = {model: {"family": "ae", "trainer": trainer} for model, (trainer, _, _) in GEOMETRIES.items()}
    folder = make_project(tmp_path, tiny_data, [("cells", "expression", str(tiny_data["cells"]))], config)
    jobs = dry_run_resources(folder)
    assert set(jobs) == set(GEOMETRIES)
    for model, (trainer, wanted, unwanted) in GEOMETRIES.items():
        resources = Resources(jobs[model])
        shell = resources.pop("shell")
        job = SimpleNamespace(resources=resources, threads=resources.pop("threads"), name="train")
        validate_slurm_extra(job)
        params = {"run_uuid": "x", "slurm_logfile": "x.log", "comment_str": "rule_train", "account": "-A a",
                  "partition": f"-p {resources['slurm_partition']}", "workdir": str(folder)}
        sbatch = get_submit_command(job, params) + set_gres_string(job)
        flags = sbatch.split()
        for flag in wanted:
            assert flag in flags, (model, sbatch)
        for flag in unwanted:
            assert not any(f.startswith(flag) for f in flags), (model, flag, sbatch)
        # several ranks: the plugin runs the shell as it is (mpi), and the shell starts them with srun
        ranks = model not in ("one_gpu", "one_cpu")
        assert ("mpi" in resources) == ranks, (model, resources)
        launch = re.search(r"(\$\{SLURM_JOB_ID:\+srun [^}]*\} +)?omicsgen train ", shell).group(1)
        if ranks:  # inside a SLURM job only (a local run leaves the ranks to Lightning)
            assert launch.strip() == ("${SLURM_JOB_ID:+srun " f"--nodes={trainer.get('num_nodes', 1)} --ntasks-per-node="
                                      f"{trainer['devices']} --cpus-per-task={job.threads} --kill-on-bad-exit=1}}"), shell
        else:
            assert launch is None and "srun" not in shell, (model, shell)
