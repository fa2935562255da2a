"""Train one model family on masked.h5ad: `model.ckpt` (best weights) and `metrics.csv` per epoch."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import anndata as ad
import lightning
import pandas as pd
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from .batches import InMemoryBatches
from .errors import InputError
from .models.base import GenerativeModel, modality
from .models.registry import FAMILIES
from .provenance import atomic_path, meta, stamp, write_text

# Every trainer setting `train` understands, with its default; learning_rate None keeps the
# family's own default.
TRAINER_DEFAULTS = {
    "max_epochs": 100,
    "batch_size": 128,
    "learning_rate": None,
    "accelerator": "auto",
    "devices": 1,
    "strategy": "auto",
    "patience": 10,
    "gradient_clip_val": 1.0,
    "precision": "32-true",
}


def train(data_path, out_dir, family: str, hparams: dict, trainer: dict, seed: int) -> Path:
    """Fit `family` on the train split, stop early on the val loss, write the best model.

    Writes `out_dir/model.ckpt` and `out_dir/metrics.csv` (epoch, train_loss, val_loss), each
    atomically. Lightning's own files live in a temporary folder inside `out_dir` that is
    removed at the end. Returns the checkpoint path.
    """
    data_path, out_dir = Path(data_path), Path(out_dir)
    adata = ad.read_h5ad(data_path)
    cls = family_class(family, adata, data_path)
    settings = trainer_settings(trainer, data_path)
    model_hparams = model_settings(cls, hparams, settings, data_path)
    train_tensors, val_tensors = cls.tensors(adata, "train"), cls.tensors(adata, "val")
    if _n_rows(train_tensors) == 0:
        raise InputError(data_path, "no rows in the train split", hint="check obs['split']")

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on GPUs
    lightning.seed_everything(seed, workers=True)
    torch.use_deterministic_algorithms(True)
    try:
        model = cls.from_data(adata, **model_hparams)
    except ValueError as err:  # hyper-parameters the data cannot support (e.g. nb without counts)
        raise InputError(data_path, str(err), hint=f"{family} hyper-parameters") from None

    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = Path(tempfile.mkdtemp(prefix=".train-", dir=out_dir))
    checkpoint_path = out_dir / "model.ckpt"
    try:
        best = _fit(model, train_tensors, val_tensors, settings, seed, work_dir)
        record = _provenance(data_path, family, {**cls.defaults, **model_hparams}, settings, seed)
        # Post-hoc statistics (e.g. residual noise) use every row training was allowed to see.
        calibration = cls.tensors(adata, ["train", "val"])
        _write_checkpoint(model, best, calibration, record, checkpoint_path)
        _write_metrics(work_dir / "metrics.csv", out_dir / "metrics.csv")
    finally:
        shutil.rmtree(work_dir, ignore_errors=True)
    return checkpoint_path


# ---- validation of the request -------------------------------------------------------------
def family_class(family: str, adata: ad.AnnData, data_path: Path) -> type[GenerativeModel]:
    """The model class for `family`, if it accepts the data's modality."""
    data_modality = modality(adata)
    if family not in FAMILIES:
        raise InputError(data_path, f"unknown model family {family!r}", hint=f"known: {', '.join(sorted(FAMILIES))}")
    accepted = FAMILIES[family].modalities
    if data_modality not in accepted:
        fits = [name for name, c in sorted(FAMILIES.items()) if data_modality in c.modalities]
        raise InputError(
            data_path,
            f"model family {family!r} takes {' or '.join(accepted)} data, not {data_modality}",
            hint=f"families for {data_modality}: {', '.join(fits)}",
        )
    return FAMILIES[family].model_class(data_modality)  # a family may have one class per modality


def trainer_settings(trainer: dict, data_path: Path) -> dict:
    _reject_unknown(trainer, TRAINER_DEFAULTS, "trainer setting", data_path)
    return {**TRAINER_DEFAULTS, **trainer}


def model_settings(cls: type[GenerativeModel], hparams: dict, settings: dict, data_path: Path) -> dict:
    """The family's hyper-parameters; the trainer's learning_rate applies unless the model sets one."""
    _reject_unknown(hparams, cls.defaults, f"{cls.family} hyper-parameter", data_path)
    if settings["learning_rate"] is not None and "learning_rate" not in hparams:
        hparams = {**hparams, "learning_rate": settings["learning_rate"]}
    return hparams


def _reject_unknown(given: dict, valid: dict, kind: str, data_path: Path) -> None:
    unknown = sorted(set(given) - set(valid))
    if unknown:
        names = ", ".join(map(repr, unknown))
        raise InputError(data_path, f"unknown {kind} {names}", hint=f"valid: {', '.join(valid)}")


# ---- fitting -------------------------------------------------------------------------------
def _fit(model, train_tensors, val_tensors, settings: dict, seed: int, work_dir: Path) -> Path:
    """Run Lightning; returns the path of the best checkpoint it saved in `work_dir`."""
    batch_size = settings["batch_size"]
    has_val = _n_rows(val_tensors) > 0
    # Without validation rows, early stopping and the best checkpoint fall back to the train loss.
    monitor = "val_loss" if has_val else "train_loss"
    if not model.automatic_optimization:
        model.gradient_clip = settings["gradient_clip_val"]
    if model.select_on_loss:
        best = ModelCheckpoint(dirpath=work_dir, filename="best", monitor=monitor, mode="min", save_weights_only=True)
        callbacks = [EarlyStopping(monitor=monitor, mode="min", patience=settings["patience"]), best]
    else:  # the last epoch's weights, all epochs run
        best = ModelCheckpoint(dirpath=work_dir, filename="best", monitor=None, save_weights_only=True)
        callbacks = [best]
    trainer = lightning.Trainer(
        accelerator=settings["accelerator"],
        devices=settings["devices"],
        strategy=settings["strategy"],
        precision=settings["precision"],
        max_epochs=settings["max_epochs"],
        # Manual-optimisation families (GANs) clip inside their own training_step.
        gradient_clip_val=settings["gradient_clip_val"] if model.automatic_optimization else None,
        deterministic=True,
        logger=CSVLogger(work_dir, name="", version=""),
        callbacks=callbacks,
        default_root_dir=work_dir,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    trainer.fit(
        model,
        train_dataloaders=InMemoryBatches(train_tensors, batch_size, shuffle=True, seed=seed),
        val_dataloaders=InMemoryBatches(val_tensors, batch_size) if has_val else None,
    )
    return Path(best.best_model_path)


def _write_checkpoint(model, best: Path, calibration_tensors, record: dict, path: Path) -> None:
    """The best checkpoint, with post-hoc statistics fitted on its weights and the provenance."""
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    model = model.cpu()
    model.load_state_dict(checkpoint["state_dict"])
    model.calibrate(calibration_tensors)
    checkpoint["state_dict"] = model.state_dict()
    checkpoint["omicsgen"] = record
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def _write_metrics(lightning_csv: Path, path: Path) -> None:
    """Lightning logs train and val losses on separate rows; merge them into one row per epoch."""
    log = pd.read_csv(lightning_csv)
    columns = [c for c in ("train_loss", "val_loss") if c in log]
    tidy = log.groupby("epoch", as_index=False)[columns].first().reindex(columns=["epoch", "train_loss", "val_loss"])
    write_text(tidy.to_csv(index=False), path)


def _provenance(data_path: Path, family: str, hparams: dict, settings: dict, seed: int) -> dict:
    """The `train` provenance record, kept in the checkpoint for generate and impute to copy."""
    holder = ad.AnnData()
    stamp(holder, "train", {"family": family, "hparams": hparams, "trainer": settings}, inputs=[data_path], seed=seed)
    return meta(holder)["provenance"]["train"]


def _n_rows(tensors: dict[str, torch.Tensor]) -> int:
    return len(next(iter(tensors.values())))
