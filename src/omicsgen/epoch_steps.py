"""One Lightning training step per epoch: the module steps through the epoch's in-memory mini-batches.

On a small table an epoch is a few mini-batches of under a millisecond each, and Lightning's
per-batch loop (closure, optimizer and precision wrappers, hooks, progress) plus its evaluation
loop cost as much again: the AE trained 2.0x slower than a bare loop on 569 rows
(bench/train_overhead.py, bench/figures.md). So the Trainer is given one batch an epoch, the
`InMemoryBatches` themselves, and the module runs them, then the validation rows, at the end of
the epoch. Lightning still runs everything around the steps: devices, DDP (every backward goes
through `manual_backward`), precision, checkpoints and resuming, early stopping, logging and
callbacks; the learning-rate schedule is stepped here, as manual optimisation asks.

The arithmetic is the per-batch loop's: the same batches in the same order, the same optimiser
steps and clipping, validation after each epoch's steps, so the same losses to the last digit.

On one device in full precision, with no callback hooked between backward and step, Lightning's
per-step wrappers (`manual_backward`, `LightningOptimizer.step`, three hook calls into every
callback) would only call `backward` and `step`: there the module calls them itself
(`plain_steps`), and counts the step as Lightning's loop does, so `global_step` holds. Under DDP
(whose backward syncs gradients) and mixed precision (which scales the loss), every step goes
through Lightning.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from lightning.pytorch import Callback, LightningModule
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy

from .batches import InMemoryBatches
from .models.base import GenerativeModel

# What Lightning runs between a step's backward and its optimizer step; a callback or family that
# hooks any of them needs Lightning's wrappers.
STEP_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


class WholeEpoch:
    """The train dataloader the Trainer sees: one item an epoch, the epoch's mini-batches."""

    def __init__(self, batches: InMemoryBatches):
        self.batches = batches

    def __len__(self) -> int:
        return 1 if len(self.batches) else 0

    def __iter__(self) -> Iterator[InMemoryBatches]:
        if len(self.batches):
            yield self.batches


class EpochSteps:
    """Mixed in before a family by `train.trainable`: `training_step` takes a whole epoch.

    A family that optimises by hand (GANs, GAIN, the LSTM: `automatic_optimization = False`)
    steps in its own `training_step`, called once per mini-batch; for the others, whose step
    returns the loss, this class zeroes, back-propagates, clips and steps as Lightning would."""

    steps_by_hand = False  # the family's own choice, recorded by `take_over_steps`
    plain_steps = False  # backward and step without Lightning's wrappers (`on_train_start`)
    val_batches: InMemoryBatches | None = None
    batches_per_epoch = 1

    def take_over_steps(self, val_batches: InMemoryBatches | None) -> None:
        """Before fitting (not in `__init__`, whose signature Lightning reads to reload a
        checkpoint): the Trainer optimises nothing itself, and the epoch's end validates on
        `val_batches`."""
        self.steps_by_hand = not self.automatic_optimization
        self.automatic_optimization = False
        self.val_batches = val_batches

    def on_train_start(self) -> None:
        super().on_train_start()
        self.plain_steps = lightning_adds_nothing_to_a_step(self)

    def manual_step(self, optimizer, loss) -> None:
        if not self.plain_steps:
            return super().manual_step(optimizer, loss)
        optimizer.zero_grad()
        loss.backward()
        self.clip_gradients_at_limit(optimizer)
        optimizer._on_before_step()  # Lightning's loop counts the step (global_step) ...
        optimizer.optimizer.step()
        optimizer._on_after_step()  # ... as `LightningOptimizer.step` would

    def training_step(self, epoch: InMemoryBatches, _index: int) -> None:
        optimizer = None if self.steps_by_hand else self.optimizers()
        self.batches_per_epoch = len(epoch)
        for index, batch in enumerate(epoch):
            loss = super().training_step(batch, index)
            if optimizer is not None:
                self.manual_step(optimizer, loss)

    def on_train_epoch_end(self) -> None:
        if self.val_batches is not None:
            self.validate(self.val_batches)
        super().on_train_epoch_end()  # the family logs its train loss
        self.step_lr_schedule()

    def validate(self, batches: InMemoryBatches) -> None:
        """Lightning's evaluation loop, for in-memory batches: eval mode, no gradients, the
        precision's autocast, each batch's `validation_step` and the epoch-end hook."""
        self.eval()
        with torch.no_grad(), self.trainer.precision_plugin.val_step_context():
            for index, batch in enumerate(batches):
                self.validation_step(batch, index)
            self.on_validation_epoch_end()
        self.train()

    def step_lr_schedule(self) -> None:
        """Manual optimisation leaves the schedule to the module: plateau reads the epoch's
        monitored loss (logged above, so already in `callback_metrics`)."""
        scheduler = self.lr_schedulers()
        if scheduler is None:
            return
        if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
            monitor = (getattr(self, "lr_schedule", None) or {}).get("monitor", "val_loss")
            value = self.trainer.callback_metrics.get(monitor)
            if value is not None:
                scheduler.step(float(value))
        else:
            scheduler.step()


def lightning_adds_nothing_to_a_step(module: LightningModule) -> bool:
    """Whether Lightning's per-step wrappers would only call `backward` and `step`: one device,
    full precision (its plugin exactly, not a subclass), and no callback or family hooking a step
    beyond `GenerativeModel`'s clipping, which the plain step calls itself."""
    trainer = module.trainer
    if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.precision_plugin) is not Precision:
        return False
    own = {"on_before_optimizer_step": GenerativeModel.on_before_optimizer_step}
    for hook in (*STEP_HOOKS, "backward"):
        if getattr(type(module), hook) is not own.get(hook, getattr(LightningModule, hook, None)):
            return False
    return not any(getattr(type(callback), hook) is not getattr(Callback, hook)
                   for callback in trainer.callbacks for hook in STEP_HOOKS)
