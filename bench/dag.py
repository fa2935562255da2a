"""How long Snakemake takes to build the DAG of a large config: 200 datasets x 6 models.

    python bench/dag.py
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent


def main(n_datasets: int = 200) -> None:
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        (folder / "config").mkdir()
        config = yaml.safe_load((ROOT / "config" / "config.yaml").read_text())
        config["models"] = {f"vae{i}": {"family": "vae", "latent_dim": 5 + i} for i in range(3)}
        config["models"].update({f"gru{i}": {"family": "gru", "hidden_dim": 16 * (i + 1)} for i in range(3)})
        (folder / "config" / "config.yaml").write_text(yaml.safe_dump(config))
        source = ROOT / "resources" / "flu_timecourse.tsv.gz"
        rows = "".join(f"d{i}\ttimecourse\t{source}\n" for i in range(n_datasets))
        (folder / "config" / "datasets.tsv").write_text("dataset\tmodality\tpath\n" + rows)
        env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "workflow" / "Snakefile"),
                        "--directory", str(folder), "-n", "-q"], check=True, capture_output=True, env=env)
        wall = time.perf_counter() - start
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = children.ru_utime + children.ru_stime  # what the machine's load does not inflate
        print(f"snakemake -n, {n_datasets} datasets x 6 models: {wall:.1f} s wall, {cpu:.1f} s CPU  [target < 20 s]")


if __name__ == "__main__":
    main()
