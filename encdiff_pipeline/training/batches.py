"""Deterministic, resumable training batches rendered a whole batch at a time.

Micro-batch `k` of a run is a pure function of `(seed, k, process_index)`: the items are read off a
per-epoch permutation (`np.random.default_rng([seed, epoch])`), the global batch of all processes is
contiguous in it and each process takes its own slice. Resuming at optimizer step `s` therefore just
starts at micro-batch `s * gradient_accumulation_steps` and sees exactly the data an uninterrupted
run would have seen. Images come from `dataset.get_images(indices)` (one call per batch: much faster
than per-item `__getitem__` for the procedural renderer), in a `DataLoader` so workers can render
ahead. With `uint8=True` the images are first rounded to 8 bits (`to_uint8`), exactly as the
device-resident grid (`fast_path.DeviceBatches`) stores them, so both paths give identical batches.

Example:
    >>> order = BatchOrder(num_items=1000, batch_size=8, seed=0)
    >>> order.indices(0).shape
    (8,)
"""
from __future__ import annotations

import numpy as np
import torch

from ..image_range import to_model_input


class BatchOrder:
    """Dataset indices of micro-batch `k` for one process."""

    def __init__(self, num_items: int, batch_size: int, seed: int, num_processes: int = 1, process_index: int = 0):
        global_batch = batch_size * num_processes
        if num_items < global_batch:
            raise ValueError(
                f"the dataset has {num_items} items, fewer than one global batch "
                f"({batch_size} per process x {num_processes} processes)"
            )
        self.num_items, self.batch_size, self.seed = num_items, batch_size, seed
        self.num_processes, self.process_index = num_processes, process_index
        self.batches_per_epoch = num_items // global_batch  # the incomplete tail of an epoch is dropped
        self._epoch, self._permutation = None, None

    def epoch_of(self, k: int) -> int:
        return k // self.batches_per_epoch

    def indices(self, k: int) -> np.ndarray:
        epoch, position = divmod(int(k), self.batches_per_epoch)
        if epoch != self._epoch:
            self._permutation = np.random.default_rng([self.seed, epoch]).permutation(self.num_items)
            self._epoch = epoch
        start = (position * self.num_processes + self.process_index) * self.batch_size
        return self._permutation[start : start + self.batch_size]


def to_uint8(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] (any layout) -> uint8 0..255 (rounded): how a device-resident grid stores them."""
    return np.round(np.asarray(images, dtype=np.float32) * 255.0).astype(np.uint8)


def to_uint8_pixels(images: np.ndarray) -> torch.Tensor:
    """Dataset images `(B, H, W, C)` in [0, 1] -> a contiguous uint8 tensor `(B, C, H, W)` (`to_uint8`)."""
    return torch.from_numpy(np.ascontiguousarray(to_uint8(images).transpose(0, 3, 1, 2)))


def uint8_to_model_range(images: torch.Tensor) -> torch.Tensor:
    """uint8 images (B, C, H, W) on any device -> float32 in [-1, 1]; the same arithmetic on CPU and CUDA."""
    return images.float().div_(255.0).mul_(2.0).sub_(1.0)


class RenderedBatches(torch.utils.data.Dataset):
    """Item `j` = micro-batch `first + j`: `(images (B, C, H, W) in [-1, 1], factor classes (B, K), k)`."""

    def __init__(self, dataset, order: BatchOrder, first: int, count: int, uint8: bool = False):
        self.dataset, self.order, self.first, self.count, self.uint8 = dataset, order, first, count, uint8

    def __len__(self) -> int:
        return self.count

    def __getitem__(self, j: int):
        k = self.first + j
        indices = self.order.indices(k)
        images = np.asarray(self.dataset.get_images(indices), dtype=np.float32)  # (B, H, W, C) in [0, 1]
        if self.uint8:
            return uint8_to_model_range(to_uint8_pixels(images)), torch.from_numpy(self.dataset.index_to_factors(indices)), k
        return to_model_input(images).contiguous(), torch.from_numpy(self.dataset.index_to_factors(indices)), k


def batch_loader(dataset, order: BatchOrder, first: int, count: int, num_workers: int = 0,
                 uint8: bool = False) -> torch.utils.data.DataLoader:
    """A `DataLoader` over micro-batches `first .. first + count - 1` (already batched: `batch_size=None`)."""
    return torch.utils.data.DataLoader(
        RenderedBatches(dataset, order, first, count, uint8=uint8), batch_size=None, shuffle=False, num_workers=num_workers,
        persistent_workers=False,
    )


def step_generator(seed: int, k: int, process_index: int) -> torch.Generator:
    """The torch RNG of micro-batch `k` (noise and timesteps): a pure function of (seed, k, process)."""
    state = np.random.SeedSequence([seed, k, process_index]).generate_state(1, dtype=np.uint64)[0]
    return torch.Generator().manual_seed(int(state) & 0x7FFF_FFFF_FFFF_FFFF)
