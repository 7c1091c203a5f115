"""The GPU-fast path of train_encdiff.py: speed knobs, a device-resident batch grid, deferred loss checks.

Every knob is off by default, and off it leaves the training step exactly as it was (the same
calls, the same losses bit for bit):

- `configure_tf32(True, device)`: TF32 matmuls / convolutions on CUDA (no effect elsewhere);
- `prepare_models(encoder, unet, channels_last=True)`: channels-last weights;
- `training_forward(unet, compile_unet=True)`: a `torch.compile`d U-Net for the training step only,
  sharing the module's parameters (checkpoints, the EMA and the validation pipeline use the plain
  module, so validation's other batch sizes trigger no recompilation);
- `make_adamw(..., fused=True)`: `torch.optim.AdamW(fused=True)` (one kernel for all parameters);
- `LossMonitor(every=K)`: the per-step loss read-back and `isfinite` check once every K steps (one
  host sync) instead of every step; the logged losses are the same numbers;
- `DeviceBatches`: the whole dataset as a uint8 tensor on the device, batches gathered by index
  with the very `BatchOrder` indices of the DataLoader path (`batch_loader(..., uint8=True)` gives
  identical batches).

Example:
    >>> grid = build_uint8_grid(dataset, device="cuda", num_workers=8)        # doctest: +SKIP
    >>> batches = DeviceBatches(grid, dataset, order, first=0, count=1000)   # doctest: +SKIP
    >>> images, factors, k = next(iter(batches))                              # doctest: +SKIP
"""
from __future__ import annotations

import math
from typing import Callable, Iterator

import numpy as np
import torch

from .batches import BatchOrder, to_uint8_pixels, uint8_to_model_range


def configure_tf32(allow: bool, device: torch.device | str) -> None:
    """Allow TF32 matmuls and cuDNN convolutions when `allow` and the device is CUDA."""
    if allow and torch.device(device).type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def prepare_models(encoder: torch.nn.Module, unet: torch.nn.Module, channels_last: bool = False) -> None:
    """Channels-last memory format for both models, in place."""
    if channels_last:
        encoder.to(memory_format=torch.channels_last)
        unet.to(memory_format=torch.channels_last)


def training_forward(unet: torch.nn.Module, compile_unet: bool = False) -> Callable:
    """What the training step calls: `torch.compile(unet)` (same parameters) when asked, else `unet` itself."""
    return torch.compile(unet) if compile_unet else unet


def memory_format(tensor: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """`tensor` in channels-last layout when asked (4-D only), else unchanged (the same object)."""
    return tensor.contiguous(memory_format=torch.channels_last) if channels_last and tensor.ndim == 4 else tensor


def make_adamw(param_groups: list[dict], lr: float, weight_decay: float, fused: bool = False) -> torch.optim.AdamW:
    """AdamW over `param_groups`; `fused=True` uses torch's fused kernel (CUDA and CPU)."""
    if fused:
        return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay, fused=True)
    return torch.optim.AdamW(param_groups, lr=lr, weight_decay=weight_decay)


class LossMonitor:
    """The logged per-step loss and the non-finite-loss check, with at most one host sync per `every` steps.

    `every=1` is train_encdiff.py's original behaviour: each micro-batch's loss is checked with
    `torch.isfinite` and read back with `.item()`. With `every=K > 1` the gathered losses stay on the
    device and are read back (and checked) together every K steps or when `end_step(..., flush=True)`;
    the values written are the same (each micro-batch's mean read as float, summed in Python).

    Example:
        >>> monitor = LossMonitor(gather=lambda t: t, accumulation=1, every=1)
        >>> monitor.add(torch.tensor(0.5), step=1)
        >>> monitor.end_step({"step": 1, "loss": None}, flush=False)
        [{'step': 1, 'loss': 0.5}]
    """

    def __init__(self, gather: Callable[[torch.Tensor], torch.Tensor], accumulation: int, every: int = 1):
        if every < 1:
            raise ValueError(f"every must be >= 1, got {every}")
        self.gather, self.accumulation, self.every = gather, accumulation, every
        self.step_loss = 0.0
        self._micro: list[torch.Tensor] = []  # this step's gathered micro-batch losses (every > 1)
        self._pending: list[tuple[dict, list[torch.Tensor]]] = []

    def add(self, loss: torch.Tensor, step: int) -> None:
        """One micro-batch's loss of optimizer step `step` (1-based)."""
        if self.every == 1:
            if not torch.isfinite(loss):
                raise FloatingPointError(f"loss is {loss.item()} at step {step}; lower --learning_rate or check the data")
            self.step_loss += self.gather(loss.detach()).mean().item() / self.accumulation
        else:
            self._micro.append(self.gather(loss.detach()).mean())

    def end_step(self, record: dict, flush: bool) -> list[dict]:
        """Close the step whose log `record` has a `"loss"` key; the records whose loss is now known."""
        if self.every == 1:
            record["loss"] = self.step_loss
            self.step_loss = 0.0
            return [record]
        self._pending.append((record, self._micro))
        self._micro = []
        if not flush and len(self._pending) < self.every:
            return []
        values = torch.stack([t for _, micro in self._pending for t in micro]).tolist()  # the one host sync
        done, i = [], 0
        for rec, micro in self._pending:
            step_loss = 0.0
            for value in values[i : i + len(micro)]:
                if not math.isfinite(value):
                    raise FloatingPointError(f"loss is {value} at step {rec['step']}; lower --learning_rate or check the data")
                step_loss += value / self.accumulation
            i += len(micro)
            rec["loss"] = step_loss
            done.append(rec)
        self._pending = []
        return done


class _Chunks(torch.utils.data.Dataset):
    """Item `j`: uint8 images (B, C, H, W) of dataset items `j * chunk ...` (sequential)."""

    def __init__(self, dataset, chunk: int):
        self.dataset, self.chunk = dataset, chunk

    def __len__(self) -> int:
        return math.ceil(len(self.dataset) / self.chunk)

    def __getitem__(self, j: int) -> torch.Tensor:
        indices = np.arange(j * self.chunk, min(len(self.dataset), (j + 1) * self.chunk))
        return to_uint8_pixels(self.dataset.get_images(indices))


def dataset_chunks(dataset, chunk: int = 1024, num_workers: int = 0) -> torch.utils.data.DataLoader:
    """The whole dataset in order as uint8 (B, C, H, W) chunks, rendered / read by `num_workers` processes."""
    return torch.utils.data.DataLoader(_Chunks(dataset, chunk), batch_size=None, shuffle=False, num_workers=num_workers)


def grid_bytes(dataset) -> int:
    """Bytes of the whole dataset as uint8 (N, C, H, W)."""
    return len(dataset) * int(np.prod(dataset[0][0].shape))


def fits_on_device(nbytes: int, device: torch.device | str, fraction: float = 0.5) -> bool:
    """Whether `nbytes` fit in `fraction` of the free memory of a CUDA device (always True off CUDA)."""
    device = torch.device(device)
    if device.type != "cuda":
        return True
    free, _ = torch.cuda.mem_get_info(device)
    return nbytes <= fraction * free


def build_uint8_grid(dataset, device: torch.device | str, chunk: int = 1024, num_workers: int = 0) -> torch.Tensor:
    """The whole dataset as one uint8 tensor (N, C, H, W) on `device`, filled chunk by chunk (the host
    holds one chunk at a time)."""
    shape = tuple(dataset[0][0].shape)
    grid = torch.empty((len(dataset), *shape), dtype=torch.uint8, device=device)
    start = 0
    for images in dataset_chunks(dataset, chunk, num_workers):
        grid[start : start + len(images)].copy_(images)
        start += len(images)
    return grid


class DeviceBatches:
    """Micro-batches `first .. first + count - 1` gathered from a device-resident uint8 grid.

    Yields `(images (B, C, H, W) float32 in [-1, 1] on the grid's device, factor classes (B, K) on the
    CPU, k)`, like `batch_loader(dataset, order, first, count, uint8=True)` and with the same values.
    """

    def __init__(self, grid: torch.Tensor, dataset, order: BatchOrder, first: int, count: int):
        if grid.dtype != torch.uint8 or grid.shape[0] != len(dataset):
            raise ValueError(f"grid must be uint8 with one row per dataset item ({len(dataset)}), "
                             f"got {grid.dtype} {tuple(grid.shape)}")
        self.grid, self.dataset, self.order, self.first, self.count = grid, dataset, order, first, count

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, int]]:
        for k in range(self.first, self.first + self.count):
            indices = self.order.indices(k)
            index = torch.from_numpy(indices).to(self.grid.device, non_blocking=True)
            images = uint8_to_model_range(self.grid.index_select(0, index))
            yield images, torch.from_numpy(self.dataset.index_to_factors(indices)), k
