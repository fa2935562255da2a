"""The run's warm worker: a command forked from it writes what a fresh process writes, jobs it
cannot serve run fresh, and a cancelled command or a dead Snakemake leaves no process behind."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import pytest
import torch

from omicsgen import worker
from omicsgen.ingest import ingest
from omicsgen.mask import mask
from omicsgen.preprocess import preprocess

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="fork and /proc")
IN_WORKER = "in the run's worker"
TRAINER = {"max_epochs": 3, "batch_size": 64, "patience": 20, "accelerator": "cpu", "size_to_data": False}


@pytest.fixture(scope="module")
def masked(tmp_path_factory, tiny_data):
    folder = tmp_path_factory.mktemp("worker")
    ingest(tiny_data["cells"], folder / "i.h5ad", "cells", "expression")
    preprocess(folder / "i.h5ad", folder / "p.h5ad", {"n_top_genes": 100, "min_cells": 3, "min_genes": 20},
               {"val": 0.1, "test": 0.2}, 0)
    mask(folder / "p.h5ad", folder / "masked.h5ad", rate=0.1, mechanism="mcar", seed=0)
    return folder / "masked.h5ad"


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A worker as `worker.start` launches it; yields the jobs' environment and the process."""
    path = str(tmp_path_factory.mktemp("sock") / "w.sock")
    process = worker.launch(path)
    deadline = time.time() + 120
    while not os.path.exists(path):  # it binds once its imports are done
        assert process.poll() is None and time.time() < deadline, "the worker did not start"
        time.sleep(0.2)
    yield {**os.environ, worker.ENV: path, "OMP_NUM_THREADS": "1"}, process
    process.terminate()
    process.wait(timeout=30)


def omicsgen(*args, env, cwd=None, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "omicsgen.cli", *args], env=env, cwd=cwd, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kwargs)


def train(masked, outdir, env, epochs=3):
    trainer = json.dumps({**TRAINER, "max_epochs": epochs})
    return omicsgen("train", "--input", str(masked), "--outdir", str(outdir), "--family", "vae",
                    "--params", json.dumps({"hidden_dim": 32, "latent_dim": 4}), "--trainer", trainer,
                    "--seed", "0", env=env)


def test_a_job_forked_from_the_worker_trains_the_same_weights_as_a_fresh_process(tmp_path, masked, served):
    env, _ = served
    fresh_env = {k: v for k, v in env.items() if k != worker.ENV}
    logs = {}
    for name, job_env in (("forked", env), ("fresh", fresh_env)):
        _, logs[name] = train(masked, tmp_path / name, job_env).communicate(timeout=600)
    assert IN_WORKER in logs["forked"] and IN_WORKER not in logs["fresh"]
    weights = [torch.load(tmp_path / name / "model.ckpt", weights_only=False)["state_dict"]
               for name in ("forked", "fresh")]
    assert weights[0].keys() == weights[1].keys()
    assert all(torch.equal(weights[0][k], weights[1][k]) for k in weights[0])


def test_errors_and_exit_codes_are_the_fresh_process_ones(tmp_path, served):
    env, _ = served
    bad = tmp_path / "counts.csv"
    bad.write_text("cell,g1,g2\nc1,1,2\nc2,3,x\n")
    out = tmp_path / "i.h5ad"
    job = omicsgen("ingest", "--input", "counts.csv", "--output", "i.h5ad", "--dataset", "d",
                   "--modality", "expression", env=env, cwd=tmp_path)  # relative paths: the command's directory
    _, err = job.communicate(timeout=120)
    assert job.returncode == 2 and "counts.csv: line 3, column 'g2'" in err and "Traceback" not in err
    assert not out.exists()
    job = omicsgen("ingest", "--no-such-option", env=env)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 2 and "usage: omicsgen" in err  # argparse's exit


def test_a_job_with_other_thread_settings_runs_fresh(tmp_path, masked, served):
    env, _ = served
    _, err = train(masked, tmp_path / "m", {**env, "OMP_NUM_THREADS": "2"}, epochs=1).communicate(timeout=600)
    assert "omicsgen train finished" in err and IN_WORKER not in err


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            stat = (entry / "stat").read_text()
        except (OSError, ValueError):
            continue
        if entry.name.isdigit() and int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def a_long_job(masked, outdir, served) -> tuple[subprocess.Popen, list[int]]:
    """A training job in the worker, once its child is forked; and the worker's children."""
    env, process = served
    job = train(masked, outdir, env, epochs=100000)
    deadline = time.time() + 60
    while not children(process.pid):
        assert time.time() < deadline, "no child was forked"
        time.sleep(0.1)
    return job, children(process.pid)


def test_a_cancelled_job_stops_its_forked_child(tmp_path, masked, served):
    _, process = served
    job, _ = a_long_job(masked, tmp_path / "m", served)
    time.sleep(1.0)
    job.kill()  # as Snakemake cancels a job
    job.wait()
    deadline = time.time() + 30
    while children(process.pid):
        assert time.time() < deadline, "the forked child outlived its command"
        time.sleep(0.2)


def test_the_worker_stops_with_the_process_that_started_it(tmp_path):
    path = tmp_path / "w.sock"
    starter = subprocess.run([sys.executable, "-c", f"from omicsgen.worker import launch; print(launch({str(path)!r}).pid)"],
                             capture_output=True, text=True, check=True)
    pid = int(starter.stdout)
    deadline = time.time() + 120
    while Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]:
        assert time.time() < deadline, "the worker outlived the process that started it"
        time.sleep(0.5)


def test_commands_that_arrive_together_each_get_a_child_before_the_next_import(tmp_path):
    """The first jobs of a run arrive together while the worker imports: one pass forks a child
    for every waiting command (here each refuses a foreign identity and answers at once), instead
    of one command an import."""
    script = f"""
import json, os, socket
from omicsgen import worker
listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
listener.bind({str(tmp_path / "w.sock")!r}); listener.listen(8); listener.setblocking(False)
clients = []
for _ in range(3):
    client = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    client.connect({str(tmp_path / "w.sock")!r})
    request = json.dumps({{"identity": "another installation"}}).encode()
    socket.send_fds(client, [worker._HEADER.pack(len(request)) + request], [0, 1, 2])
    clients.append(client)
worker._fork_each_waiting(listener)
for client in clients:
    client.settimeout(30)
    print(client.recv(1).decode())
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["R", "R", "R"]


def test_no_worker_at_the_path_means_a_fresh_process(tmp_path, tiny_data):
    env = {**os.environ, worker.ENV: str(tmp_path / "nothing.sock")}
    job = omicsgen("ingest", "--input", str(tiny_data["peaks"]), "--output", str(tmp_path / "i.h5ad"),
                   "--dataset", "peaks", "--modality", "sequence", env=env)
    _, err = job.communicate(timeout=120)
    assert job.returncode == 0, err
    assert ad.read_h5ad(tmp_path / "i.h5ad").n_obs == 120


def test_a_child_killed_mid_job_fails_the_job_and_it_is_not_rerun(tmp_path, masked, served):
    job, forked = a_long_job(masked, tmp_path / "m", served)
    for pid in forked:
        os.kill(pid, 9)  # as the kernel's out-of-memory killer would
    _, err = job.communicate(timeout=60)
    assert job.returncode == 1 and "ended without an exit code" in err
    assert not (tmp_path / "m" / "model.ckpt").exists()
