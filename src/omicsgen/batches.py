"""Mini-batches sliced straight from tensors held in memory.

The data sets are small enough to live in memory as a few tensors, so a batch is one fancy-index
per tensor: no per-item `__getitem__`, no collate and no worker processes. Lightning 2.x accepts
any iterable with `__len__` as a train or val dataloader.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch


class InMemoryBatches:
    """Yields dicts of the same row subset of every tensor (rows = first dimension).

    With `shuffle`, epoch k uses one `torch.randperm` from a generator seeded by `seed + k`, so
    the order depends only on the seed and the epoch, never on global random state.
    The epoch is counted by calls to `__iter__` (Lightning iterates once per epoch).
    """

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, shuffle: bool = False, seed: int = 0):
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
        return -(-self.n_rows // self.batch_size)

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        order = self._order(self.epoch)
        self.epoch += 1
        for start in range(0, self.n_rows, self.batch_size):
            rows = order[start : start + self.batch_size]
            yield {name: tensor[rows] for name, tensor in self.tensors.items()}

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(self.n_rows)
        generator = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n_rows, generator=generator)
