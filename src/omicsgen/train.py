"""Train one model family on masked.h5ad: `model.ckpt` (best weights) and `metrics.csv` per epoch.

Resuming: Lightning's files (every epoch's full state in `last.ckpt`, the best weights, the CSV
log) live in `out_dir/.train-<key>/`, where the key hashes the input file and every setting.
Snakemake deletes a failed job's declared outputs but not this folder, so rerunning an
interrupted job continues from its last finished epoch (same final weights as an uninterrupted
run: the shuffle order follows the trainer's epoch and the RNG states are in the checkpoint);
a changed config or input gets a new key and starts afresh. The folder is removed on success.

DDP: every rank runs this function (Lightning relaunches the command); each trains on its shard
of the rows (`InMemoryBatches`) and only rank 0 writes the outputs.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import inspect
import json
import logging
import os
import random
import shutil
import signal
import time
import warnings
from pathlib import Path

import anndata as ad
import lightning
import numpy as np
import pandas as pd
import torch
from lightning.fabric.utilities.rank_zero import _get_rank
from lightning.pytorch.callbacks import Callback, Checkpoint, EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from .batches import InMemoryBatches
from .epoch_steps import EpochSteps, WholeEpoch
from .errors import InputError
from .models.base import LR_SCHEDULES, GenerativeModel, dense_train_view, modality, split_rows, with_lr_schedule
from .models.registry import FAMILIES
from .models.sizing import sized_for_data, sized_settings
from .provenance import atomic_path, checksum, meta, package_versions, stamp, write_text

LOG = logging.getLogger(__name__)

# Kill the training process right after this epoch's checkpoint (tests of resuming only).
FAIL_AFTER_EPOCH_ENV = "OMICSGEN_TEST_KILL_AFTER_EPOCH"

# Every trainer setting `train` understands, with its default; learning_rate None keeps the
# family's own default. lr_schedule "plateau" (halve the rate after patience // 2 epochs
# without a better validation loss) fits early stopping: the run length is decided by the
# validation loss, so a schedule tied to max_epochs (cosine) would barely decay in a run that
# stops early; plateau slows down exactly when the loss stalls, before early stopping gives up.
TRAINER_DEFAULTS = {
    "max_epochs": 100,
    "batch_size": 128,
    "learning_rate": None,
    "accelerator": "auto",
    "devices": 1,
    "num_nodes": 1,  # DDP across nodes: devices ranks on each (SLURM: docs/cluster.md)
    "strategy": "auto",
    "patience": 10,
    "gradient_clip_val": 1.0,
    "precision": "32-true",
    "lr_schedule": "plateau",
}


def train(data_path, out_dir, family: str, hparams: dict, trainer: dict, seed: int) -> Path:
    """Fit `family` on the train split, stop early on the val loss, write the best model.

    Writes `out_dir/model.ckpt` and `out_dir/metrics.csv` (epoch, train_loss, val_loss), each
    atomically. Lightning's own files live in `out_dir/.train-<key>/` (see the module's notes
    on resuming), removed at the end. Returns the checkpoint path.
    """
    data_path, out_dir = Path(data_path), Path(out_dir)
    adata = ad.read_h5ad(data_path)
    cls = family_class(family, adata, data_path)
    given = hparams, trainer
    hparams, trainer = sized_for_data(cls, adata, hparams, trainer)  # small data: models/sizing.py
    sized = sized_settings(*given, hparams, trainer)
    settings = trainer_settings(trainer, data_path)
    model_hparams = model_settings(cls, hparams, settings, data_path)
    if not split_rows(adata, "train").any():
        raise InputError(data_path, "no rows in the train split", hint="check obs['split']")

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on GPUs
    lightning.seed_everything(seed, workers=True)
    torch.use_deterministic_algorithms(True)
    # Deterministic mode also fills every new tensor with NaN, a check for reads of uninitialised
    # memory that no kernel we use makes; it cost the LSTM 15% of a step (bench/figures.md).
    torch.utils.deterministic.fill_uninitialized_memory = False
    try:
        model = trainable(cls).from_data(dense_train_view(adata), **model_hparams)  # starting values from train rows
    except ValueError as err:  # hyper-parameters the data cannot support (e.g. nb without counts)
        raise InputError(data_path, str(err), hint=f"{family} hyper-parameters") from None
    train_tensors, val_tensors = cls.tensors(adata, "train"), cls.tensors(adata, "val")
    calibrates = type(model).calibrate is not GenerativeModel.calibrate
    if not calibrates:
        adata = None  # the tensors hold what training needs: free the file's matrices (large data)

    out_dir.mkdir(parents=True, exist_ok=True)
    work_dir = _resume_dir(out_dir, data_path, family, {**cls.defaults, **model_hparams}, settings, seed)
    checkpoint_path = out_dir / "model.ckpt"
    trainer, best = _fit(model, train_tensors, val_tensors, settings, seed, work_dir)
    if trainer.global_rank != 0:  # DDP: rank 0 writes the outputs
        return checkpoint_path
    record = _provenance(data_path, family, {**cls.defaults, **model_hparams}, settings, seed, {**sized, **model.data_choices})
    # Post-hoc statistics (e.g. residual noise) use every row training was allowed to see.
    calibration = cls.tensors(adata, ["train", "val"]) if calibrates else None
    _write_checkpoint(model, best, calibration, record, checkpoint_path)
    _write_metrics(work_dir / "metrics.csv", out_dir / "metrics.csv")
    shutil.rmtree(work_dir, ignore_errors=True)
    return checkpoint_path


@functools.cache
def trainable(cls: type[GenerativeModel]) -> type[GenerativeModel]:
    """`cls` with `lightning.LightningModule` mixed in after it, what the trainer fits: the
    family's own hooks come first, Lightning adds the machinery they call (`trainer`,
    `optimizers()`, `manual_backward`, checkpoints), and `EpochSteps` before them runs an
    epoch's mini-batches in one Lightning step (epoch_steps.py). Model classes stay plain torch
    modules so that loading one needs no Lightning (models/base.py)."""
    return type(cls.__name__, (EpochSteps, cls, lightning.LightningModule), {"save_hyperparameters": _save_hyperparameters})


def _save_hyperparameters(self, frame=None) -> None:
    GenerativeModel.save_hyperparameters(self, frame or inspect.currentframe().f_back)
    # What Lightning's own save_hyperparameters() records beside them: the checkpoint's
    # `hparams_name`, and the hyper-parameters its logger writes.
    self._hparams_name, self._hparams_initial, self._log_hyperparams = "kwargs", copy.deepcopy(self.hparams), True


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
    settings = {**TRAINER_DEFAULTS, **trainer}
    if settings["lr_schedule"] not in LR_SCHEDULES:
        raise InputError(data_path, f"unknown lr_schedule {settings['lr_schedule']!r}", hint=f"use one of {', '.join(LR_SCHEDULES)}")
    return settings


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


# ---- resuming -----------------------------------------------------------------------------
def _resume_dir(out_dir: Path, data_path: Path, family: str, hparams: dict, settings: dict, seed: int) -> Path:
    """`out_dir/.train-<key>`: the same folder for the same input and settings (so a rerun
    resumes), another one otherwise; folders of other keys are stale and removed."""
    request = {"input": checksum(data_path), "family": family, "hparams": hparams, "trainer": settings,
               "seed": seed, "versions": package_versions()}
    key = hashlib.sha256(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()[:16]
    work_dir = out_dir / f".train-{key}"
    if _get_rank() in (None, 0):  # DDP ranks > 0 start after rank 0 has set up
        for stale in out_dir.glob(".train-*"):
            if stale != work_dir:
                shutil.rmtree(stale, ignore_errors=True)
    work_dir.mkdir(parents=True, exist_ok=True)
    return work_dir


def _resumable(last: Path) -> tuple[Path | None, int]:
    """The last-epoch checkpoint when one was written completely (a kill can cut one short), and
    the epoch to start from. The interrupted run's CSV log is kept as `metrics.upto<epoch>.csv` (Lightning's CSV logger
    starts a new file), and merged back by `_write_metrics`."""
    if not last.exists():
        return None, 0
    first_rank = _get_rank() in (None, 0)  # DDP ranks > 0 start after rank 0 has done this
    try:
        epoch = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"])
    except Exception:  # noqa: BLE001 - any unreadable file means: start afresh
        if first_rank:
            last.unlink()
        return None, 0
    log = last.parent / "metrics.csv"
    if first_rank and log.exists():
        log.rename(last.parent / f"metrics.upto{epoch}.csv")
    return last, epoch + 1


class RandomState(Callback):
    """Global RNG states (torch, numpy, random) in every full checkpoint, restored at the start
    of the resumed epoch, so a resumed run draws the same noise as an uninterrupted one."""

    def __init__(self):
        self.pending: dict | None = None

    def state_dict(self) -> dict:
        name, keys, position, has_gauss, cached = np.random.get_state()
        state = {"torch": torch.get_rng_state(), "numpy": [name, keys.tolist(), position, has_gauss, cached],
                 "python": random.getstate()}
        if torch.cuda.is_available():
            state["cuda"] = torch.cuda.get_rng_state_all()
        return state

    def load_state_dict(self, state_dict: dict) -> None:
        self.pending = state_dict

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if self.pending is None:
            return
        state, self.pending = self.pending, None
        torch.set_rng_state(state["torch"])
        name, keys, position, has_gauss, cached = state["numpy"]
        np.random.set_state((name, np.asarray(keys, dtype=np.uint32), position, has_gauss, cached))
        random.setstate(tuple(state["python"][:1]) + (tuple(state["python"][1]),) + tuple(state["python"][2:]))
        if "cuda" in state and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda"])


class KillAfterEpoch(Callback):
    """SIGKILL at the start of epoch k + 1, once epoch k's checkpoint is on disk: a hard
    interruption at a known point, for the tests of resuming (env OMICSGEN_TEST_KILL_AFTER_EPOCH=k)."""

    def __init__(self, epoch: int):
        self.epoch = epoch

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        if trainer.current_epoch == self.epoch + 1:
            os.kill(os.getpid(), signal.SIGKILL)


class FollowTrainerEpoch(Callback):
    """The shuffle order of epoch k is the same whether the run started at epoch 0 or resumed."""

    def __init__(self, batches: InMemoryBatches):
        self.batches = batches

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.batches.epoch = trainer.current_epoch


class DeviceResidentData(Callback):
    """Moves the in-memory batches to the training device once, before the first epoch (or pins
    them when they do not fit there): no per-batch host-to-device copy of a dense matrix."""

    def __init__(self, *batches: InMemoryBatches):
        self.batches = [b for b in batches if b is not None]

    def on_fit_start(self, trainer, pl_module) -> None:
        for batches in self.batches:
            batches.to_device(trainer.strategy.root_device)


class Throughput(Callback):
    """Seconds spent in training batches, for the log line `train rows/s` that bench/scale.py
    reads. Validation and checkpoints are excluded: Lightning runs this hook before the
    module's own epoch end, which validates (epoch_steps.py), and before the checkpoints'."""

    def __init__(self):
        self.seconds, self.started = 0.0, None

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self.started = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.started is not None:
            self.seconds += time.perf_counter() - self.started
            self.started = None

    def report(self, epochs: int, rows_per_epoch: int) -> None:
        LOG.info("trained %d epochs of %d rows in %.1f s of training steps: %.0f train rows/s", epochs,
                 rows_per_epoch, self.seconds, epochs * rows_per_epoch / max(self.seconds, 1e-9))


# Seconds between two full checkpoints (`last.ckpt`): what an interrupted job can lose. Writing
# one every epoch cost a third of GAIN's training time on 569 rows (4 steps an epoch).
CHECKPOINT_SECONDS = 60.0


class ThrottledCheckpoint(ModelCheckpoint):
    """Lightning's checkpoint of the full state, written at the end of an epoch only when
    `every_seconds` have passed since the previous one (0: every epoch), and after the last epoch."""

    def __init__(self, every_seconds: float, **kwargs):
        super().__init__(save_on_train_epoch_end=True, **kwargs)  # never from on_validation_end
        self.every_seconds = every_seconds
        self.saved_at = time.monotonic()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        final = trainer.should_stop or trainer.current_epoch + 1 >= (trainer.max_epochs or 0)
        due = final or time.monotonic() - self.saved_at >= self.every_seconds
        if trainer.world_size > 1:  # DDP: saving holds a barrier; ranks whose clocks disagree would wait forever
            due = trainer.strategy.broadcast(due, src=0)  # so rank 0's clock decides for all
        if due:
            super().on_train_epoch_end(trainer, pl_module)
            self.saved_at = time.monotonic()


class BestWeights(Checkpoint):
    """The weights of the epoch with the lowest `monitor`, copied in memory (not written to a
    file on every improvement); kept in the full checkpoint so a resumed run knows them too.
    With `monitor` None the last epoch's weights are the result. A `Checkpoint` so that
    Lightning runs its epoch-end hook after the module's own (where some families log
    train_loss) and before `ThrottledCheckpoint` saves the state."""

    def __init__(self, monitor: str | None):
        self.monitor = monitor
        self.score, self.epoch, self.weights = float("inf"), -1, None

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # Runs after the epoch's validation (Lightning 2 validates inside the epoch loop).
        value = trainer.callback_metrics.get(self.monitor) if self.monitor else None
        if value is None or not bool(torch.isfinite(value)) or float(value) >= self.score:
            return
        self.score, self.epoch = float(value), trainer.current_epoch
        self.weights = {k: v.detach().to("cpu", copy=True) for k, v in pl_module.state_dict().items()}

    def state_dict(self) -> dict:
        return {"score": self.score, "epoch": self.epoch, "weights": self.weights}

    def load_state_dict(self, state_dict: dict) -> None:
        self.score, self.epoch, self.weights = state_dict["score"], state_dict["epoch"], state_dict["weights"]

    def restore(self, model) -> None:
        if self.weights is not None:
            model.load_state_dict(self.weights)


class EpochProgress(Callback):
    """One log line per epoch: losses, seconds per epoch and the expected end at max_epochs
    (early stopping may end sooner), so a long job is never silent. An epoch's line is written
    when the next one starts (or training ends): its losses are final by then and its seconds
    include validation and checkpointing."""

    def __init__(self, max_epochs: int):
        self.max_epochs = max_epochs
        self.started = self.epoch_started = None
        self.epoch = -1

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._report(trainer)
        self.epoch, self.epoch_started = trainer.current_epoch, time.perf_counter()
        if self.started is None:
            self.started = (self.epoch_started, self.epoch)

    def on_train_end(self, trainer, pl_module) -> None:
        self._report(trainer)

    def _report(self, trainer) -> None:
        if self.epoch_started is None or not trainer.is_global_zero:  # DDP: one line, from rank 0
            return
        now, (start, first) = time.perf_counter(), self.started
        per_epoch = (now - start) / (self.epoch - first + 1)
        left = per_epoch * (self.max_epochs - self.epoch - 1)
        finish = time.strftime("%H:%M:%S", time.localtime(time.time() + left))
        losses = ", ".join(f"{name} {float(value):.5g}" for name, value in sorted(trainer.callback_metrics.items())
                           if name in ("train_loss", "val_loss"))
        LOG.info("epoch %d/%d: %s; %.2f s this epoch, %.2f s/epoch; at most %.0f s left (%s)", self.epoch + 1,
                 self.max_epochs, losses or "no loss logged", now - self.epoch_started, per_epoch, left, finish)
        self.epoch_started = None

# ---- fitting -------------------------------------------------------------------------------
def _fit(model, train_tensors, val_tensors, settings: dict, seed: int, work_dir: Path):
    """Run Lightning, resuming from `work_dir/last.ckpt` when there is one; returns the trainer
    and the path of the best weights' checkpoint (written once, at the end)."""
    batch_size = settings["batch_size"]
    has_val = _n_rows(val_tensors) > 0
    # Without validation rows, early stopping and the best weights fall back to the train loss.
    monitor = "val_loss" if has_val else "train_loss"
    train_batches = InMemoryBatches(train_tensors, batch_size, shuffle=True, seed=seed)
    val_batches = InMemoryBatches(val_tensors, batch_size) if has_val else None
    model.take_over_steps(val_batches)  # an epoch a Lightning step, validated at its end (epoch_steps.py)
    model.gradient_clip = settings["gradient_clip_val"]
    _schedule_learning_rate(model, {"name": settings["lr_schedule"], "monitor": monitor,
                                    "patience": max(1, settings["patience"] // 2), "max_epochs": settings["max_epochs"]},
                            mixed_precision="mixed" in str(settings["precision"]))
    # The full state for resuming, at most every CHECKPOINT_SECONDS (every epoch under the resume
    # tests); the best weights stay in memory (and in that state) until the end.
    killing = os.environ.get(FAIL_AFTER_EPOCH_ENV)
    last = ThrottledCheckpoint(0.0 if killing else CHECKPOINT_SECONDS, dirpath=work_dir, filename="last", monitor=None,
                               save_top_k=1, enable_version_counter=False)
    best = BestWeights(monitor if model.select_on_loss else None)  # GANs: the last epoch's weights
    callbacks = [EarlyStopping(monitor=monitor, mode="min", patience=settings["patience"])] if model.select_on_loss else []
    throughput = Throughput()
    callbacks += [best, last, RandomState(), FollowTrainerEpoch(train_batches), DeviceResidentData(train_batches, val_batches),
                  throughput, EpochProgress(settings["max_epochs"])]
    if killing:
        callbacks.append(KillAfterEpoch(int(killing)))
    trainer = lightning.Trainer(
        accelerator=settings["accelerator"],
        devices=settings["devices"],
        num_nodes=settings["num_nodes"],
        strategy=settings["strategy"],
        precision=settings["precision"],
        max_epochs=settings["max_epochs"],
        deterministic=True,
        # Rows after the last checkpoint's epoch are dropped on resume (`_upto`), so the log need
        # only be on disk by then: flushed every 50 steps and at the end, not after every step.
        logger=CSVLogger(work_dir, name="", version="", flush_logs_every_n_steps=50),
        callbacks=callbacks,
        default_root_dir=work_dir,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )
    resume_from, first_epoch = _resumable(work_dir / "last.ckpt")
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*`validation_step` but have no `val_dataloader`")
        trainer.fit(model, train_dataloaders=WholeEpoch(train_batches), ckpt_path=resume_from)
    throughput.report(trainer.current_epoch - first_epoch, train_batches.n_rows)
    model.val_batches = None
    for batches in (train_batches, val_batches):  # the trainer outlives this call: release the data
        if batches is not None:
            batches.tensors = {}
    best_path = work_dir / "best.ckpt"
    best.restore(model)
    trainer.save_checkpoint(best_path, weights_only=True)  # every DDP rank calls it; rank 0 writes
    return trainer, best_path


def _schedule_learning_rate(model: GenerativeModel, schedule: dict, mixed_precision: bool) -> None:
    """Wrap the family's `configure_optimizers` so that its optimizer gets `schedule`; families
    that step by hand (several optimizers, `automatic_optimization = False`) keep a constant
    rate, or add the schedule themselves (lstm.py). Under mixed precision Lightning clips gradients after unscaling them, which
    a fused optimizer does inside its step: such an optimizer is rebuilt unfused."""
    model.lr_schedule = schedule  # families that step by hand and take a schedule read it (lstm.py)
    configure = model.configure_optimizers

    def configure_optimizers():
        optimizers = configure()
        if model.steps_by_hand or not isinstance(optimizers, torch.optim.Optimizer):
            return optimizers
        if mixed_precision and optimizers.defaults.get("fused"):
            defaults = {k: v for k, v in optimizers.defaults.items() if k != "fused"}
            optimizers = type(optimizers)([{**g, "fused": None} for g in optimizers.param_groups], **defaults)
        return with_lr_schedule(optimizers, schedule)

    model.configure_optimizers = configure_optimizers


def _write_checkpoint(model, best: Path, calibration_tensors, record: dict, path: Path) -> None:
    """The best checkpoint, with post-hoc statistics fitted on its weights and the provenance."""
    checkpoint = torch.load(best, map_location="cpu", weights_only=True)
    model = model.cpu()
    model.load_state_dict(checkpoint["state_dict"])
    if calibration_tensors is not None:
        model.calibrate(calibration_tensors)
    checkpoint["state_dict"] = model.state_dict()
    checkpoint["omicsgen"] = record
    with atomic_path(path) as tmp:
        torch.save(checkpoint, tmp)


def _write_metrics(lightning_csv: Path, path: Path) -> None:
    """Lightning logs train and val losses on separate rows; merge them into one row per epoch,
    with the epochs of interrupted runs (up to the checkpoint each resume started from) first."""
    parts = [_upto(earlier) for earlier in sorted(lightning_csv.parent.glob("metrics.upto*.csv"), key=_upto_epoch)]
    log = pd.concat([*parts, pd.read_csv(lightning_csv)], ignore_index=True)
    columns = [c for c in ("train_loss", "val_loss") if c in log]
    tidy = log.groupby("epoch", as_index=False)[columns].first().reindex(columns=["epoch", "train_loss", "val_loss"])
    write_text(tidy.to_csv(index=False), path)


def _upto_epoch(part: Path) -> int:
    return int(part.stem.removeprefix("metrics.upto"))


def _upto(part: Path) -> pd.DataFrame:
    log = pd.read_csv(part)
    return log[log["epoch"] <= _upto_epoch(part)]


def _provenance(data_path: Path, family: str, hparams: dict, settings: dict, seed: int, sized: dict) -> dict:
    """The `train` provenance record, kept in the checkpoint for generate and impute to copy;
    `sized_for_data` names the settings the small-data regime chose (the report shows them)."""
    holder = ad.AnnData()
    params = {"family": family, "hparams": hparams, "trainer": settings, "sized_for_data": sized}
    stamp(holder, "train", params, inputs=[data_path], seed=seed)
    return meta(holder)["provenance"]["train"]


def _n_rows(tensors: dict[str, torch.Tensor]) -> int:
    return len(next(iter(tensors.values())))
