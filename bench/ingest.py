"""Ingest benchmark: a 200,000-record, 300 Mbp FASTA and a 100,000-cell x 2,000-gene count table.

Both are built by resampling the shipped real data (resources/), written once into a scratch
folder, then read by `omicsgen ingest` in a fresh process whose wall time, CPU time (user +
system, steadier than wall time on a shared machine) and peak memory (ru_maxrss) are printed
with the size of what it produced.

    python bench/ingest.py [scratch-folder] [fasta|table]
"""

from __future__ import annotations

import gzip
import resource
import subprocess
import sys
import time
from pathlib import Path

import anndata as ad
import numpy as np
import scipy.sparse as sp

ROOT = Path(__file__).resolve().parent.parent
RNG = np.random.default_rng(0)


def build_fasta(path: Path, n_records: int = 200_000, mean_length: int = 1500) -> None:
    """Records of 500-2,500 nt cut from the concatenated real ChIP-seq peaks, 60 nt a line."""
    with gzip.open(ROOT / "resources" / "oct4_peaks.fa.gz", "rt") as handle:
        pool = "".join(line.strip() for line in handle if not line.startswith(">"))
    lengths = RNG.integers(mean_length - 1000, mean_length + 1001, n_records)
    starts = RNG.integers(0, len(pool) - lengths.max(), n_records)
    with open(path, "w") as out:
        for i, (start, length) in enumerate(zip(starts, lengths)):
            sequence = pool[start : start + length]
            out.write(f">rec{i} resampled\n")
            out.write("\n".join(sequence[j : j + 60] for j in range(0, length, 60)) + "\n")


def build_counts(path: Path, n_cells: int = 100_000) -> None:
    """Real cells resampled with replacement; genes doubled (suffix _b) to 2,000, as a cells x genes CSV."""
    cells = ad.read_h5ad(ROOT / "resources" / "mouse_10x_counts.h5ad")
    counts = sp.hstack([cells.X, cells.X]).tocsr()[RNG.integers(0, cells.n_obs, n_cells)]
    genes = list(cells.var_names) + [f"{g}_b" for g in cells.var_names]
    with open(path, "w") as out:
        out.write("cell," + ",".join(genes) + "\n")
        for start in range(0, n_cells, 5000):
            block = counts[start : start + 5000].toarray()
            out.write("".join(f"c{start + i}," + ",".join(map(str, row)) + "\n" for i, row in enumerate(block)))


def timed_ingest(source: Path, modality: str, out: Path) -> tuple[float, float, float]:
    """Wall seconds, CPU seconds and peak MB of the ingest call alone (imports excluded)."""
    script = (
        "import resource, sys, time\n"
        "from omicsgen.ingest import ingest\n"
        "def cpu():\n"
        "    usage = resource.getrusage(resource.RUSAGE_SELF)\n"
        "    return usage.ru_utime + usage.ru_stime\n"
        "t, c = time.perf_counter(), cpu()\n"
        f"ingest({str(source)!r}, {str(out)!r}, 'bench', {modality!r})\n"
        "print(time.perf_counter() - t, cpu() - c, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    if result.returncode:
        sys.exit(f"ingest of {source} failed:\n{result.stderr[-3000:]}")
    seconds, cpu_seconds, peak_mb = map(float, result.stdout.split()[-3:])
    return seconds, cpu_seconds, peak_mb


def main() -> None:
    scratch = Path(sys.argv[1] if len(sys.argv) > 1 else "bench_data")
    which = sys.argv[2:] or ["fasta", "table"]
    scratch.mkdir(exist_ok=True)
    fasta, table = scratch / "resampled_200k.fa", scratch / "resampled_100k_cells.csv"
    if "fasta" in which:
        if not fasta.exists():
            build_fasta(fasta)
        seconds, cpu, peak = timed_ingest(fasta, "sequence", scratch / "fasta.h5ad")
        tokens = ad.read_h5ad(scratch / "fasta.h5ad").obsm["tokens"]
        print(f"FASTA  {fasta.stat().st_size / 1e6:.0f} MB, {tokens.shape[0]:,} records: {seconds:.1f} s "
              f"({cpu:.1f} CPU s), peak {peak:,.0f} MB = {peak / (tokens.nbytes / 2**20):.2f} x the token matrix "
              f"({tokens.nbytes / 2**20:,.0f} MB)  [target < 60 s, < 3 x]")
    if "table" in which:
        if not table.exists():
            build_counts(table)
        seconds, cpu, peak = timed_ingest(table, "expression", scratch / "table.h5ad")
        print(f"table  {table.stat().st_size / 1e6:.0f} MB, 100,000 x 2,000: {seconds:.1f} s ({cpu:.1f} CPU s), "
              f"peak {peak:,.0f} MB  [target < 60 s]")


if __name__ == "__main__":
    main()
