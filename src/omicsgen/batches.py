"""Mini-batches sliced straight from tensors held in memory.

A batch is one fancy-index per tensor: no per-item `__getitem__`, no collate and no worker
processes. Lightning 2.x accepts any iterable with `__len__` as a train or val dataloader.

Sources are dense tensors or `CsrRows` (a sparse matrix whose batches are densified one at a
time, so a million-cell count matrix never exists dense). Under DDP each rank takes a disjoint
shard of every epoch's permutation, padded so that all ranks run the same number of batches
(as torch's DistributedSampler does; Lightning adds no sampler to a custom iterable).
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.sparse as sp
import torch

# Share of a GPU's free memory that resident data may take; the rest is for the model's activations.
DEVICE_DATA_SHARE = 0.5


class CsrRows:
    """Rows of a CSR matrix as dense tensors: `source[rows]` densifies only those rows.

    `complement` flips a boolean matrix (a stored held-out mask gives the observed mask)."""

    def __init__(self, matrix, dtype: torch.dtype = torch.float32, complement: bool = False):
        self.matrix = sp.csr_matrix(matrix)
        self.dtype = dtype
        self.complement = complement
        self.pin = False

    def __len__(self) -> int:
        return self.matrix.shape[0]

    @property
    def shape(self) -> tuple[int, int]:
        return self.matrix.shape

    @property
    def dense_bytes(self) -> int:
        return self.matrix.shape[0] * self.matrix.shape[1] * torch.empty(0, dtype=self.dtype).element_size()

    def __getitem__(self, rows) -> torch.Tensor:
        if isinstance(rows, torch.Tensor):
            rows = rows.cpu().numpy()
        block = self.matrix[rows].toarray()
        if self.complement:
            block = ~block.astype(bool)
        tensor = torch.from_numpy(block).to(self.dtype)
        return tensor.pin_memory() if self.pin else tensor

    def dense(self) -> torch.Tensor:
        return self[np.arange(len(self))]


class InMemoryBatches:
    """Yields dicts of the same row subset of every source (rows = first dimension).

    With `shuffle`, epoch k uses one `torch.randperm` from a generator seeded by `seed + k`, so
    the order depends only on the seed and the epoch, never on global random state. `train`
    sets `epoch` to the trainer's before every epoch (so a resumed run continues the same
    sequence of orders); without that it counts calls to `__iter__`.
    """

    def __init__(self, tensors: dict, batch_size: int, shuffle: bool = False, seed: int = 0):
        sizes = {name: len(tensor) for name, tensor in tensors.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"tensors differ in their number of rows: {sizes}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.tensors = tensors
        self.n_rows = next(iter(sizes.values()), 0)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-self._rows_per_rank() // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self._shard(self._order(self.epoch))
        self.epoch += 1
        for start in range(0, len(order), self.batch_size):
            rows = order[start : start + self.batch_size]
            yield {name: tensor[rows.to(_device_of(tensor))] for name, tensor in self.tensors.items()}

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n_rows)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n_rows, generator=generator)

    # ---- DDP ----------------------------------------------------------------------------
    def _rows_per_rank(self) -> int:
        _, world = _rank_and_world()
        return -(-self.n_rows // world) if self.n_rows else 0

    def _shard(self, order: torch.Tensor) -> torch.Tensor:
        """This rank's rows: every world-th row of the permutation, the permutation padded by its
        own start so every rank gets the same count."""
        rank, world = _rank_and_world()
        if world == 1 or self.n_rows == 0:
            return order
        padded = self._rows_per_rank() * world
        order = torch.cat([order, order[: padded - self.n_rows]]) if padded > self.n_rows else order
        return order[rank::world]

    # ---- placement ----------------------------------------------------------------------
    def to_device(self, device: torch.device) -> str:
        """Keep the data on `device` when it fits in DEVICE_DATA_SHARE of its free memory (then no
        batch is copied again); otherwise keep it on the host in pinned memory so Lightning's
        per-batch copies are non-blocking. Returns what was done. A no-op on the CPU."""
        device = torch.device(device)
        if device.type != "cuda":
            return "host"
        free, _ = torch.cuda.mem_get_info(device)
        needed = sum(_dense_bytes(t) for t in self.tensors.values())
        if needed <= DEVICE_DATA_SHARE * free:
            self.tensors = {n: (t.dense() if isinstance(t, CsrRows) else t).to(device) for n, t in self.tensors.items()}
            return "device"
        for name, tensor in self.tensors.items():
            if isinstance(tensor, CsrRows):
                tensor.pin = True
            else:
                self.tensors[name] = tensor.pin_memory()
        return "pinned"


def _device_of(tensor) -> torch.device:
    return tensor.device if isinstance(tensor, torch.Tensor) else torch.device("cpu")


def _dense_bytes(tensor) -> int:
    return tensor.dense_bytes if isinstance(tensor, CsrRows) else tensor.nelement() * tensor.element_size()


def _rank_and_world() -> tuple[int, int]:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return 0, 1
