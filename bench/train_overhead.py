"""Lightning's overhead on small tabular data: `omicsgen.train.train` vs a bare PyTorch loop doing the same steps.

Data: the bundled Breast Cancer Wisconsin table (569 x 30, resources/breast_cancer_wisconsin.csv),
ingested, min-max scaled, split 70/10/20 and masked (20% MCAR) by omicsgen's own stages, as
config/papers/gain_breast_cancer.yaml does. Each family trains a fixed number of epochs (no early
stop: patience above max_epochs) in both set-ups:

- ours: `train()` (Lightning Trainer, one Lightning step an epoch (epoch_steps.py), callbacks,
  checkpoints for resuming, CSV log, model.ckpt);
- bare: the same model object's loss and optimizers in a plain loop over the same in-memory
  batches, a validation pass every epoch and the best weights kept in memory.

It prints training steps per second (optimizer steps of the generator / the model; GAIN also
steps its discriminator each batch) and CPU seconds of each, and their ratio: the median over
`--repeats` alternating pairs, and the best run of each against the other's best (the host's
speed drifts by 10-40% between identical runs, so one pair says little).

Before the timed pairs, each set-up fits a few epochs untimed, and those times are printed: the
first fit in a process pays one-off costs (lazy imports, torch's first backward and optimizer
step, the first checkpoint written) that, untimed pairs aside, fell on whichever set-up ran first;
in the pipeline they are part of a job's fixed cost (bench/pipeline.py), not of its steps.

Last, it counts the function calls (Python, and calls into C) of an epoch in each set-up: the
calls of a fit of 2 x `COUNT_EPOCHS` epochs less those of one of `COUNT_EPOCHS`, so set-up and
saving cancel out. The host's drift cannot move that figure, and on 4 mini-batches an epoch the
calls are most of what ours adds to the bare loop.

    OMP_NUM_THREADS=1 python bench/train_overhead.py [--epochs 200] [--families gain vae ae] [--repeats 3]
"""

from __future__ import annotations

import argparse
import copy
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
WARMUP_EPOCHS = 5
COUNT_EPOCHS = 20
HPARAMS = {"gain": {"hidden_dim": 30, "hint_rate": 0.9, "alpha": 100.0}, "vae": {"hidden_dim": 64, "latent_dim": 8},
           "ae": {"hidden_dim": 64, "latent_dim": 16, "noise": 0.2, "output": "gaussian"}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=200)
    parser.add_argument("--families", nargs="+", default=["gain", "vae", "ae"], choices=list(HPARAMS))
    parser.add_argument("--repeats", type=int, default=3, help="ours and bare alternately, this many times each")
    args = parser.parse_args()
    if len(args.families) > 1:
        # Each family in a process of its own, as the pipeline runs each train job: in one process
        # a family's ratio depended on the fits before it (the AE: 1.53x alone, 1.81x third).
        for family in args.families:
            subprocess.run([sys.executable, __file__, "--epochs", str(args.epochs), "--repeats", str(args.repeats),
                            "--families", family], check=True)
        return
    torch.set_num_threads(1)
    try:
        from omicsgen.cli import _reuse_freed_memory  # as every omicsgen command starts

        _reuse_freed_memory()
    except ImportError:  # a ref from before it
        pass
    with tempfile.TemporaryDirectory() as tmp:
        masked = prepare(Path(tmp))
        print(f"{'family':<8}{'setup':<7}{'epochs':>7}{'steps':>7}{'wall s':>9}{'CPU s':>8}{'steps/s':>9}{'steps/CPU s':>13}")
        for family in args.families:
            warm = {"ours": run_ours(masked, Path(tmp) / f"{family}-warmup", family, WARMUP_EPOCHS),
                    "bare": run_bare(masked, family, WARMUP_EPOCHS)}
            print(f"{family:<8}first fits in this process ({WARMUP_EPOCHS} epochs, untimed): "
                  f"ours {warm['ours']['cpu']:.2f} s CPU, bare {warm['bare']['cpu']:.2f} s CPU")
            ratios, best = [], {}
            for repeat in range(args.repeats):
                # Alternate which runs first: the host's speed drifts by 10-40% between runs.
                order = ("ours", "bare") if repeat % 2 == 0 else ("bare", "ours")
                results = {name: run_ours(masked, Path(tmp) / f"{family}{repeat}", family, args.epochs) if name == "ours"
                           else run_bare(masked, family, args.epochs) for name in order}
                for name in ("ours", "bare"):
                    result = results[name]
                    print(f"{family:<8}{name:<7}{result['epochs']:>7}{result['steps']:>7}{result['wall']:>9.1f}{result['cpu']:>8.1f}"
                          f"{result['steps'] / result['wall']:>9.0f}{result['steps'] / result['cpu']:>13.0f}")
                    best[name] = max(best.get(name, 0.0), result["steps"] / result["cpu"])
                ratios.append(speed(results["bare"]) / speed(results["ours"]))
            print(f"{family:<8}ratio bare/ours per CPU second: median {statistics.median(ratios):.2f}x of "
                  f"{', '.join(f'{r:.2f}' for r in ratios)}; best against best {best['bare'] / best['ours']:.2f}x")
            calls = {name: calls_per_epoch(lambda epochs: run_ours(masked, Path(tmp) / f"{family}-count{epochs}", family, epochs)
                                           if name == "ours" else run_bare(masked, family, epochs)) for name in ("ours", "bare")}
            print(f"{family:<8}calls an epoch: ours {calls['ours']:,.0f}, bare {calls['bare']:,.0f} "
                  f"({calls['ours'] / calls['bare']:.2f}x)")


def calls_per_epoch(fit) -> float:
    return (python_calls(lambda: fit(2 * COUNT_EPOCHS)) - python_calls(lambda: fit(COUNT_EPOCHS))) / COUNT_EPOCHS


def python_calls(fit) -> int:
    """Function calls, Python and C, made while `fit()` runs (its set-up and saving included)."""
    count = 0

    def counter(_frame, event, _arg):
        nonlocal count
        if event in ("call", "c_call"):
            count += 1

    sys.setprofile(counter)
    try:
        fit()
    finally:
        sys.setprofile(None)
    return count


def speed(result: dict) -> float:
    return result["steps"] / result["cpu"]


def prepare(folder: Path) -> Path:
    from omicsgen.ingest import ingest
    from omicsgen.mask import mask
    from omicsgen.papers import table_to_h5ad
    from omicsgen.preprocess import preprocess

    table = folder / "table.h5ad"
    table_to_h5ad(ROOT / "resources" / "breast_cancer_wisconsin.csv", table, "diagnosis")
    ingest(table, folder / "ingested.h5ad", "breast", "expression", None, "auto", "auto", "diagnosis", "normalised")
    preprocess(folder / "ingested.h5ad", folder / "prepared.h5ad",
               {"min_genes": 0, "min_cells": 0, "n_top_genes": None, "scale": "minmax"}, {"val": 0.1, "test": 0.2}, 0)
    mask(folder / "prepared.h5ad", folder / "masked.h5ad", 0.2, "mcar", 0, 10, False)
    return folder / "masked.h5ad"


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_ours(masked: Path, out: Path, family: str, epochs: int) -> dict:
    from omicsgen.train import train

    trainer = {"max_epochs": epochs, "patience": epochs + 1, "batch_size": 128, "accelerator": "cpu",
               "lr_schedule": "none", "gradient_clip_val": None if family == "gain" else 1.0}
    if _has_sizing():
        trainer["size_to_data"] = False  # the same batches and epochs as the bare loop
    wall, cpu = time.perf_counter(), _cpu()
    train(masked, out, family, HPARAMS[family], trainer, seed=0)
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    steps = epochs * _batches_per_epoch(masked)
    return {"epochs": epochs, "steps": steps, "wall": wall, "cpu": cpu}


def run_bare(masked: Path, family: str, epochs: int) -> dict:
    """The same model and batches in a plain loop: train steps, one val pass an epoch, best
    weights kept in memory (what early stopping on val loss needs), nothing written."""
    import anndata as ad

    from omicsgen.batches import InMemoryBatches
    from omicsgen.models.base import dense_train_view
    from omicsgen.train import family_class, trainable

    torch.manual_seed(0)
    wall, cpu = time.perf_counter(), _cpu()
    adata = ad.read_h5ad(masked)
    cls = trainable(family_class(family, adata, masked))  # the class train fits (current_epoch & co.)
    model = cls.from_data(dense_train_view(adata), **HPARAMS[family])
    train_batches = InMemoryBatches(cls.tensors(adata, "train"), 128, shuffle=True, seed=0)
    val_batches = InMemoryBatches(cls.tensors(adata, "val"), 128)
    manual = family == "gain"
    if manual:
        opt_g, opt_d = (torch.optim.Adam(net.parameters(), lr=model.hparams.learning_rate)
                        for net in (model.generator_net, model.discriminator_net))
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=model.hparams.learning_rate, fused=True)
    best, best_loss = None, float("inf")
    for _ in range(epochs):
        model.train()
        for batch in train_batches:
            if manual:
                for index, opt in ((0, opt_d), (1, opt_g)):
                    loss = model.losses(batch)[index]
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            else:
                loss = model.loss(batch)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
                optimizer.step()
        model.eval()
        with torch.no_grad():
            val = [_val_loss(model, batch, i, manual) for i, batch in enumerate(val_batches)]
        val_loss = float(sum(val) / len(val))
        if val_loss < best_loss:
            best_loss, best = val_loss, copy.deepcopy(model.state_dict())
    wall, cpu = time.perf_counter() - wall, _cpu() - cpu
    return {"epochs": epochs, "steps": epochs * len(train_batches), "wall": wall, "cpu": cpu}


def _val_loss(model, batch, batch_idx, manual: bool) -> torch.Tensor:
    if not manual:
        return model.loss(batch)
    from omicsgen.models.gain import NOISE_SCALE

    scaled, observed = model.scale(batch["x"]), batch["observed"]
    hide = observed & model.validation_hide(observed.shape, batch_idx, observed.device)
    fake = model.generate(scaled, observed & ~hide, torch.full_like(scaled, NOISE_SCALE / 2))
    return ((fake - scaled) ** 2 * hide).sum() / hide.sum().clamp_min(1)


def _has_sizing() -> bool:
    try:
        import omicsgen.models.sizing  # noqa: F401
    except ImportError:
        return False
    return True


def _batches_per_epoch(masked: Path) -> int:
    import anndata as ad

    adata = ad.read_h5ad(masked)
    n_train = int((adata.obs["split"].astype(str) == "train").sum())
    return -(-n_train // 128)


if __name__ == "__main__":
    main()
