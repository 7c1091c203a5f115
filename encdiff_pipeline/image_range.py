"""The image conventions, one helper each way: datasets give `(B, H, W, C)` images in [0, 1], the
models take `(B, C, H, W)` tensors in [-1, 1].

Example:
    >>> x = to_model_input(dataset.get_images([0, 1]))      # (2, C, H, W) in [-1, 1]
    >>> to_unit_images(x).shape                              # (2, H, W, C) in [0, 1]
    >>> to_unit_range(x)                                     # (2, C, H, W) in [0, 1], still a tensor
"""
from __future__ import annotations

import numpy as np
import torch


def to_model_input(images: np.ndarray, device: torch.device | str | None = None) -> torch.Tensor:
    """Dataset images `(B, H, W, C)` in [0, 1] (numpy) -> a `(B, C, H, W)` tensor in [-1, 1] (on
    `device` when given; the dtype is kept)."""
    tensor = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2)
    if device is not None:
        tensor = tensor.to(device)
    return tensor * 2.0 - 1.0


def to_unit_range(images: torch.Tensor | np.ndarray) -> torch.Tensor | np.ndarray:
    """Values in [-1, 1] -> [0, 1], in the same layout, type, device and dtype (not clipped): the
    arithmetic of the reverse conversion, for tensors that stay on the device (loss targets, metrics)."""
    return (images + 1.0) / 2.0


def to_unit_images(images: torch.Tensor) -> np.ndarray:
    """Model images `(B, C, H, W)` in [-1, 1] (any device and dtype) -> float32 numpy `(B, H, W, C)` in [0, 1]
    (clipped)."""
    return to_unit_range(images.permute(0, 2, 3, 1).float().cpu().numpy()).clip(0, 1)
