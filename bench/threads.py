"""Torch threads per job on shared cores: one `omicsgen train` with 1 or 2 OpenMP threads, alone and beside
another busy 2-thread process.

Data: the bundled Breast Cancer Wisconsin table prepared as in bench/train_overhead.py (GAIN's paper
setting, where a 2-thread job was seen using 6 min of CPU against 30 s alone). Each run trains GAIN
for a fixed number of epochs in a fresh `omicsgen train` process and prints wall and CPU seconds
(the child's rusage), with the load average at the start.

    python bench/threads.py [--epochs 100] [--family gain] [--no-competitor]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_overhead import HPARAMS, _has_sizing, prepare  # noqa: E402

SETTINGS = {  # name -> environment of the training process
    "1 thread": {"OMP_NUM_THREADS": "1"},
    "2 threads": {"OMP_NUM_THREADS": "2"},
    "2 threads, passive wait": {"OMP_NUM_THREADS": "2", "OMP_WAIT_POLICY": "PASSIVE"},
}
# A competing 2-thread torch process (matrix products), as another worker on the same cores.
COMPETITOR = ("import torch, time\ntorch.set_num_threads(2)\na = torch.randn(512, 512)\n"
              "end = time.time() + 3600\nwhile time.time() < end:\n    a = torch.tanh(a @ a)\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--family", default="gain", choices=list(HPARAMS))
    parser.add_argument("--no-competitor", action="store_true", help="only the runs alone")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        masked = prepare(Path(tmp))
        print(f"{'setting':<26}{'beside':<22}{'load':>6}{'wall s':>9}{'CPU s':>8}")
        for beside in ([None] if args.no_competitor else [None, "a 2-thread process"]):
            competitor = None
            if beside:
                competitor = subprocess.Popen([sys.executable, "-c", COMPETITOR], env={**os.environ, "OMP_NUM_THREADS": "2"})
                time.sleep(3)
            try:
                for name, env in SETTINGS.items():
                    load = os.getloadavg()[0]
                    wall, cpu = run(masked, Path(tmp) / "out", args.family, args.epochs, env)
                    print(f"{name:<26}{beside or 'alone':<22}{load:>6.1f}{wall:>9.1f}{cpu:>8.1f}", flush=True)
            finally:
                if competitor:
                    competitor.kill()
                    competitor.wait()


def run(masked: Path, out: Path, family: str, epochs: int, env: dict) -> tuple[float, float]:
    trainer = {"max_epochs": epochs, "patience": epochs + 1, "accelerator": "cpu", "lr_schedule": "none"}
    if _has_sizing():
        trainer["size_to_data"] = False
    command = [sys.executable, "-m", "omicsgen.cli", "train", "--input", str(masked), "--outdir", str(out),
               "--family", family, "--params", json.dumps(HPARAMS[family]), "--trainer", json.dumps(trainer)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True, env={**os.environ, **env})
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


if __name__ == "__main__":
    main()
