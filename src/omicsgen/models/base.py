"""The interface every model family implements, and the data-contract helpers they share.

A model never sees a held-out value: `observed_mask` folds the mask from `masked.h5ad` and the
natively missing entries (NaN, MISSING token) into one boolean matrix, and each family's
`tensors` replaces every unobserved entry before it reaches a tensor.

Models are plain `torch.nn.Module`s, so a job that only loads one (generate, impute, evaluate)
never imports Lightning (~3.5 s: torch._dynamo, scipy.signal). Their Lightning hooks
(training_step, configure_optimizers, manual_backward, ...) are ordinary methods that run only in
`train`, which trains `train.trainable(cls)`: the class with `lightning.LightningModule` mixed
in after it. `hparams` and `device` here are what Lightning's would be (the hyper-parameters
in `self._hparams`, as Lightning keeps them), so they mean the same under either.
`registry.load_model` rebuilds a model from a Lightning checkpoint as Lightning would.
"""

from __future__ import annotations

import functools
import inspect
from typing import ClassVar

import anndata as ad
import numpy as np
import scipy.sparse as sp
import torch

from ..alphabet import MISSING
from ..batches import CsrRows
from ..preprocess.split import split_rows  # noqa: F401  (re-exported: models import it from here)
from ..provenance import meta

# Rows per forward pass at inference: bounds memory on the largest inputs without slowing small ones.
INFERENCE_CHUNK = 4096
# Train rows `init_from_data` sees when X is sparse (a dense copy of them): enough for starting values.
INIT_ROWS = 10_000


def modality(adata: ad.AnnData) -> str:
    return str(meta(adata)["modality"])


def heldout_mask(adata: ad.AnnData) -> np.ndarray:
    """The held-out entries from `uns['omicsgen']['mask']`; all False when the file has no mask."""
    mask_info = meta(adata).get("mask")
    if not mask_info:
        return np.zeros(data_matrix(adata).shape, dtype=bool)
    return dense(heldout_layer(adata), dtype=bool)


def heldout_layer(adata: ad.AnnData):
    """The stored held-out mask as it is: a boolean ndarray, or CSR when X is sparse."""
    mask_info = meta(adata)["mask"]
    return getattr(adata, str(mask_info["slot"]))[str(mask_info["key"])]


def data_matrix(adata: ad.AnnData) -> np.ndarray:
    """What a model fits: the tokens for sequences, X otherwise (dense; see `is_sparse`)."""
    if modality(adata) == "sequence":
        return np.asarray(adata.obsm["tokens"])
    return dense(adata.X, dtype=np.float32)


def dense(matrix, dtype=None) -> np.ndarray:
    return np.asarray(matrix.toarray() if sp.issparse(matrix) else matrix, dtype=dtype)


def is_sparse(adata: ad.AnnData) -> bool:
    """X is CSR (large count data): tensors should slice rows of it rather than densify it."""
    return modality(adata) != "sequence" and sp.issparse(adata.X)


def observed_mask(adata: ad.AnnData) -> np.ndarray:
    """True where a model may look: not held out and not natively missing."""
    values = data_matrix(adata)
    missing = values == MISSING if modality(adata) == "sequence" else np.isnan(values)
    return ~missing & ~heldout_mask(adata)


def data_rows(adata: ad.AnnData, rows: slice) -> tuple[np.ndarray, np.ndarray]:
    """`data_matrix` and `observed_mask` for a block of rows only (dense), however large the file."""
    if modality(adata) == "sequence":
        values = np.asarray(adata.obsm["tokens"][rows])
        missing = values == MISSING
    else:
        values = dense(adata.X[rows], dtype=np.float32)
        missing = np.isnan(values)
    held = dense(heldout_layer(adata)[rows], dtype=bool) if meta(adata).get("mask") else False
    return values, ~missing & ~held


def sparse_tensors(adata: ad.AnnData, split, with_counts: bool) -> dict:
    """`tensors` for a CSR X (no NaN there): rows of X and of the raw counts with the held-out
    entries removed, and the observed mask, each a `CsrRows` densified a batch at a time;
    the library sizes as in `counts.count_tensors`."""
    rows = np.flatnonzero(split_rows(adata, split))
    held = heldout_layer(adata) if meta(adata).get("mask") else sp.csr_matrix(adata.shape, dtype=bool)
    held = sp.csr_matrix(held)[rows]
    out = {"x": CsrRows(_without(sp.csr_matrix(adata.X)[rows], held)), "observed": CsrRows(held, torch.bool, complement=True)}
    if with_counts:
        counts = _without(sp.csr_matrix(adata.layers["counts"])[rows], held)
        observed_total = np.asarray(counts.sum(axis=1), dtype=np.float32).ravel()
        if "library_size" in adata.obs:
            library = adata.obs["library_size"].to_numpy(dtype=np.float32)[rows]
        else:
            library = observed_total
        library = np.maximum(np.maximum(library, observed_total), 1.0).astype(np.float32)
        out.update(counts=CsrRows(counts), library=torch.from_numpy(library))
    return out


def _without(matrix: sp.csr_matrix, held: sp.csr_matrix) -> sp.csr_matrix:
    """`matrix` with the held entries dropped (as zeros a model never sees), float32 CSR."""
    kept = sp.csr_matrix(matrix - matrix.multiply(held), dtype=np.float32)
    kept.eliminate_zeros()
    return kept


def dense_train_view(adata: ad.AnnData) -> ad.AnnData:
    """The train rows with X and layers dense (at most INIT_ROWS of them, evenly spaced): what
    `from_data` reads (sizes, labels, and in `init_from_data` whole-split tensors); `adata`
    itself when X is dense."""
    if not is_sparse(adata):
        return adata
    train = np.flatnonzero(split_rows(adata, "train"))
    if len(train) > INIT_ROWS:
        train = train[np.linspace(0, len(train) - 1, INIT_ROWS).round().astype(int)]
    view = adata[train].copy()
    view.X = dense(view.X, np.float32)
    for key in list(view.layers):
        view.layers[key] = dense(view.layers[key])
    return view


def keep_observed(values: np.ndarray, observed: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Predictions only where unobserved; observed entries are the input's own values, bit for bit."""
    return np.where(observed, values, predicted.astype(values.dtype, copy=False))


def row_chunks(n_rows: int) -> list[slice]:
    return [slice(start, min(start + INFERENCE_CHUNK, n_rows)) for start in range(0, n_rows, INFERENCE_CHUNK)]


def stack_rows(parts: list[torch.Tensor], width: int) -> np.ndarray:
    """Chunked outputs -> one float32 array (an empty input gives 0 x width)."""
    if not parts:
        return np.zeros((0, width), dtype=np.float32)
    return torch.cat(parts).cpu().numpy().astype(np.float32, copy=False)


def inference(method):
    """Run a numpy-facing method in eval mode without autograd, restoring the previous mode after."""

    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        was_training = self.training
        self.eval()
        try:
            with torch.inference_mode():
                return method(self, *args, **kwargs)
        finally:
            self.train(was_training)

    return wrapper


class Unsupported(NotImplementedError):
    """A family cannot do this by design (e.g. GAIN cannot sample, a GAN cannot impute);
    generate / impute turn it into a one-line InputError."""


class AttributeDict(dict):
    """Lightning's `hparams` type: a dict whose keys read and write as attributes."""

    def __getattr__(self, key):
        try:
            return self[key]
        except KeyError:
            raise AttributeError(key) from None

    def __setattr__(self, key, value):
        self[key] = value


class GenerativeModel(torch.nn.Module):
    """Base of all families.

    Subclasses set `family`, `modalities` and `defaults` (every tunable hyper-parameter with its
    default; `train` rejects any other name), take the data sizes plus those hyper-parameters in
    `__init__` and call `self.save_hyperparameters()` there, so a checkpoint rebuilds the module
    without the data. They implement `data_sizes`, `tensors`, `loss`, `sample` and `impute`.
    """

    family: ClassVar[str]
    modalities: ClassVar[tuple[str, ...]]
    defaults: ClassVar[dict]
    has_latent: ClassVar[bool] = False
    # True: `impute` / `embed` treat each row on its own, so large data is imputed in row blocks.
    rows_independent: ClassVar[bool] = True
    # What the family can do; `sample` / `impute` of a family that cannot raise `Unsupported`,
    # with `cannot_sample` / `cannot_impute` saying why.
    # False: no early stopping and the last epoch's weights are kept (GANs, whose losses do
    # not measure sample quality).
    select_on_loss: ClassVar[bool] = True
    can_sample: ClassVar[bool] = True
    can_impute: ClassVar[bool] = True
    cannot_sample: ClassVar[str] = ""
    cannot_impute: ClassVar[str] = ""
    # Probabilistic families draw several imputations (multiple imputation, calibration).
    can_draw_imputations: ClassVar[bool] = False
    # Conditional families set `self.hparams.condition_on` (an obs column, usually "label") and
    # keep the training label names in `self.hparams.label_names`; `sample` then takes `labels`.
    # Hyper-parameters read from the data that any data given to the trained model must match.
    shape_hparams: ClassVar[tuple[str, ...]] = ()
    # True: under `trainer: {size_to_data: true}` small data gets a batch, epochs and patience
    # that give it enough optimiser steps (models/sizing.py).
    sized_to_data: ClassVar[bool] = False

    # ---- construction -------------------------------------------------------------------
    def save_hyperparameters(self, frame=None) -> None:
        """Lightning's `save_hyperparameters()` for these classes: the arguments of the calling
        `__init__` (or `frame`), as they are at the call, become `self.hparams` (what the
        checkpoint stores)."""
        frame = frame or inspect.currentframe().f_back
        code = frame.f_code
        names = code.co_varnames[1 : code.co_argcount + code.co_kwonlyargcount]  # [0] is self
        self._hparams = AttributeDict({name: frame.f_locals[name] for name in names})

    @property
    def hparams(self) -> AttributeDict:
        return self._hparams

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @classmethod
    def from_data(cls, adata: ad.AnnData, **hparams) -> GenerativeModel:
        unknown = sorted(set(hparams) - set(cls.defaults))
        if unknown:
            raise ValueError(f"{cls.family}: unknown hyper-parameters {unknown}; valid: {sorted(cls.defaults)}")
        model = cls(**cls.data_sizes(adata), **{**cls.defaults, **hparams})
        model.init_from_data(adata)
        return model

    @staticmethod
    def steps_per_batch(hparams: dict, adata: ad.AnnData, batch_size: int) -> int:
        """Optimiser steps one training batch of `batch_size` rows takes (sizing counts steps)."""
        return 1

    @staticmethod
    def data_sizes(adata: ad.AnnData) -> dict:
        """Constructor arguments read from the data (sizes, scales); plain Python numbers only."""
        raise NotImplementedError

    @property
    def data_choices(self) -> dict:
        """What `init_from_data` chose from the data, by the setting that changes it (train
        records it beside the small-data settings; the page shows both)."""
        return self.__dict__.setdefault("_data_choices", {})

    def init_from_data(self, adata: ad.AnnData) -> None:
        """Set data-derived starting values (biases, buffers) from the train rows."""

    @staticmethod
    def tensors(adata: ad.AnnData, split: str | list[str]) -> dict[str, torch.Tensor]:
        """The rows of `split` as tensors, with every unobserved entry hidden."""
        raise NotImplementedError

    def calibrate(self, tensors: dict[str, torch.Tensor]) -> None:
        """Fit statistics that need the final weights; `train` calls it on the best weights."""

    def data_mismatch(self, adata: ad.AnnData) -> str | None:
        """Why this trained model cannot read `adata`, or None when it can."""
        data_modality = modality(adata)
        if data_modality not in self.modalities:
            return f"a {self.family} model takes {' or '.join(self.modalities)} data, not {data_modality}"
        sizes = self.data_sizes(adata)
        wrong = [
            f"{key} {sizes[key]} (model: {self.hparams[key]})"
            for key in self.shape_hparams
            if sizes[key] != self.hparams[key]
        ]
        return f"data and model differ: {', '.join(wrong)}" if wrong else None

    # ---- training -----------------------------------------------------------------------
    def loss(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        raise NotImplementedError

    def training_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.add_to_epoch_loss("train_loss", loss, _batch_rows(batch))
        return loss

    def validation_step(self, batch, batch_idx):
        loss = self.loss(batch)
        self.add_to_epoch_loss("val_loss", loss, _batch_rows(batch))
        return loss

    def on_train_epoch_end(self) -> None:
        self.log_epoch_loss("train_loss")

    def on_validation_epoch_end(self) -> None:
        self.log_epoch_loss("val_loss")

    # A loss is summed over the epoch's batches and logged once, at the epoch's end, as the same
    # row-weighted mean that Lightning's per-batch `self.log(on_epoch=True)` gives: that call
    # cost some 15% of an AE step on 569 rows (bench/train_overhead.py).
    def add_to_epoch_loss(self, name: str, loss: torch.Tensor, rows: int) -> None:
        sums = self.__dict__.setdefault("_epoch_losses", {})
        total, n = sums.get(name, (0.0, 0))
        sums[name] = (total + loss.detach() * rows, n + rows)

    def log_epoch_loss(self, name: str) -> None:
        """The epoch's mean loss where `self.log(on_epoch=True)` would put it: the trainer's
        `callback_metrics` (early stopping, the best weights, the plateau schedule and the progress
        line read it there) and a row of the logger's (metrics.csv). Not through `self.log`: each
        call walked the whole state of Lightning's metric object (`_ResultMetric.to`, some 1,700
        Python calls), a third of the Python calls of an AE epoch on 569 rows (bench/figures.md)."""
        total, rows = self.__dict__.get("_epoch_losses", {}).pop(name, (0.0, 0))
        if not rows:
            return
        trainer = getattr(self, "_trainer", None)
        if trainer is not None and trainer.world_size > 1:
            # Under DDP every rank gets the row-weighted mean over all ranks' shards, so early
            # stopping, the best weights and the schedule decide alike on every rank.
            summed = trainer.strategy.reduce(torch.stack([torch.as_tensor(total, dtype=torch.float32, device=self.device),
                                                          torch.tensor(float(rows), device=self.device)]), reduce_op="sum")
            total, rows = summed[0], summed[1]
        self.record_epoch_metric(name, (total / rows).detach())

    def record_epoch_metric(self, name: str, value: torch.Tensor) -> None:
        trainer = getattr(self, "_trainer", None)
        if trainer is None:  # a hook called outside a fit
            return
        trainer.callback_metrics[name] = value
        for logger in trainer.loggers:  # each writes on rank 0 only
            logger.log_metrics({name: float(value), "epoch": trainer.current_epoch}, step=trainer.current_epoch)
            logger.save()  # on disk each epoch, as Lightning's epoch-end logging leaves it (resume keeps its rows)

    def configure_optimizers(self):
        """Adam. `train` adds the trainer's `lr_schedule` to whatever single optimizer a family
        returns here (`with_lr_schedule`); families that optimise manually (GANs, GAIN) return
        several and keep a constant rate."""
        return self.adam(self.parameters())

    def adam(self, parameters) -> torch.optim.Adam:
        """Adam, with its fused kernel where it may run: the default update in one pass per
        parameter (a fifth of a CPU step at scVI's size, a tenth of an AE step on 569 rows). CPU
        and CUDA have it; Lightning refuses it with gradient clipping under mixed precision (it
        unscales inside its step), so full precision only."""
        precision = str(self.trainer.precision) if getattr(self, "_trainer", None) is not None else "32-true"
        fused = self.device.type in ("cpu", "cuda") and precision in ("32-true", "32", "64-true", "64")
        return torch.optim.Adam(parameters, lr=self.hparams.learning_rate, fused=fused or None)

    def manual_step(self, optimizer, loss) -> None:
        """One optimiser step through Lightning (`train` takes every step by hand: epoch_steps.py,
        which takes it without Lightning's wrappers where they would add nothing)."""
        optimizer.zero_grad()
        self.manual_backward(loss)
        optimizer.step()  # clips in `on_before_optimizer_step`

    def on_before_optimizer_step(self, optimizer) -> None:
        # Lightning's hook, called after mixed precision unscales the gradients: clipping them any
        # earlier (after `manual_backward`) would clip the scaled ones, 2**16 times too hard.
        self.clip_gradients_at_limit(optimizer)

    def clip_gradients_at_limit(self, optimizer) -> None:
        """Clip at the trainer's `gradient_clip_val`, kept in `self.gradient_clip`, through the
        family's own `configure_gradient_clipping` (an ensemble clips each member apart: vae.py)."""
        if getattr(self, "gradient_clip", None):
            self.configure_gradient_clipping(optimizer, gradient_clip_val=self.gradient_clip, gradient_clip_algorithm="norm")

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        # The registry reads this to pick the class when loading; __init__ never takes it.
        checkpoint["hyper_parameters"]["family"] = self.family

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        """Adapt an older checkpoint's contents before its weights load (`load_model`, resuming)."""

    # ---- use ----------------------------------------------------------------------------
    def sample(self, n: int, generator: torch.Generator, labels: np.ndarray | None = None):
        """`n` samples; a conditional family takes `labels` (n indices into
        `hparams.label_names`), others reject them."""
        raise NotImplementedError

    def impute(self, values: np.ndarray, observed: np.ndarray, obs=None) -> np.ndarray:
        """`values` with unobserved entries filled; observed entries are returned unchanged.

        `obs` (the rows' obs table) is needed only by families whose rows are not independent.
        """
        raise NotImplementedError

    def impute_draws(
        self, values: np.ndarray, observed: np.ndarray, n_draws: int, generator: torch.Generator, obs=None
    ) -> np.ndarray:
        """`n_draws` imputations drawn from the model's posterior predictive, shape
        (n_draws, n_rows, n_cols); observed entries equal `values` in every draw."""
        raise Unsupported(f"the {self.family} family gives one imputation, not draws")

    def embed(self, values: np.ndarray, observed: np.ndarray | None = None) -> np.ndarray:
        raise NotImplementedError(f"the {self.family} family has no latent space")


LR_SCHEDULES = ("none", "plateau", "cosine")


def with_lr_schedule(optimizer: torch.optim.Optimizer, schedule: dict | None):
    """Lightning's optimizer config for `schedule` = {"name", "monitor", "patience", "max_epochs"}:
    plateau halves the rate after `patience` epochs without a better `monitor`; cosine anneals
    it to 1% over `max_epochs`; none (or no schedule) keeps it constant. The module steps the
    scheduler once an epoch (`EpochSteps.step_lr_schedule`), reading `monitor` from the schedule."""
    name = (schedule or {}).get("name", "none")
    if name == "none":
        return optimizer
    if name == "plateau":
        scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, mode="min", factor=0.5,
                                                               patience=int(schedule["patience"]))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
    if name == "cosine":
        base_lr = optimizer.param_groups[0]["lr"]
        scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=int(schedule["max_epochs"]),
                                                               eta_min=0.01 * base_lr)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}
    raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, not {name!r}")


def draw_label_codes(model: GenerativeModel, n: int, generator: torch.Generator, labels) -> torch.Tensor | None:
    """The label indices a conditional model samples at: `labels` checked, or drawn at the training
    frequencies (`model.label_frequencies`) when None; None for an unconditional model, which
    rejects labels."""
    if not model.n_labels:
        if labels is not None:
            raise ValueError(f"this {model.family} model is not conditional (condition_on is null): it takes no labels")
        return None
    if labels is None:
        return torch.multinomial(model.label_frequencies.cpu(), n, replacement=True, generator=generator)
    codes = torch.as_tensor(np.asarray(labels), dtype=torch.int64)
    if codes.shape != (n,) or (codes < 0).any() or (codes >= model.n_labels).any():
        raise ValueError(f"labels must be {n} indices into label_names {list(model.hparams.label_names)}")
    return codes


def _batch_rows(batch: dict[str, torch.Tensor]) -> int:
    return len(next(iter(batch.values())))
