"""Anti-aliased resizing and channel expansion of image batches, applied per batch by the loaders.

When the stored side is a multiple of the requested one (64 -> 32, 16, 8), each output pixel is
the mean of its block of input pixels (a box / area filter, a numpy reshape-mean: exact and fast).
Otherwise every channel is resized with PIL's LANCZOS filter and clipped back to [0, 1].

Example:
    >>> import numpy as np
    >>> images = np.random.rand(2, 64, 64, 1).astype(np.float32)
    >>> resize_images(images, 16, channels=3).shape
    (2, 16, 16, 3)
    >>> resize_filter((64, 64), 16), resize_filter((64, 64), 48)
    ('box filter', 'LANCZOS')
"""
from __future__ import annotations

from typing import Optional

import numpy as np


def resize_filter(source_size: tuple[int, int], image_size: int) -> str:
    """The filter `resize_images` uses from `source_size` (height, width) to `image_size`: 'box filter',
    'LANCZOS', or 'none' when the sizes already match."""
    height, width = source_size
    if (height, width) == (image_size, image_size):
        return "none"
    if height % image_size == 0 and width % image_size == 0:
        return "box filter"
    return "LANCZOS"


def check_output_options(image_size: Optional[int], channels: Optional[int]) -> None:
    """Raise a clear `ValueError` for an `image_size` or `channels` the loaders cannot produce."""
    if image_size is not None and (int(image_size) != image_size or image_size < 1):
        raise ValueError(f"image_size must be a positive integer (the output side), got {image_size!r}")
    if channels not in (None, 1, 3):
        raise ValueError(f"channels must be 1 or 3 (or None to keep the stored channels), got {channels!r}")


def resize_images(images: np.ndarray, image_size: Optional[int] = None,
                  channels: Optional[int] = None) -> np.ndarray:
    """Resize a batch (N, H, W, C) float32 in [0, 1] to (N, image_size, image_size, channels).

    `image_size=None` keeps the size; `channels=3` repeats a grey channel (dSprites), `None` keeps C.

    Example:
        >>> big = np.arange(16, dtype=np.float32).reshape(1, 4, 4, 1) / 16
        >>> resize_images(big, 2)[0, :, :, 0] * 16  # the mean of each 2x2 block
        array([[ 2.5,  4.5],
               [10.5, 12.5]], dtype=float32)
    """
    check_output_options(image_size, channels)
    if images.ndim != 4:
        raise ValueError(f"expected images of shape (N, H, W, C), got {images.shape}")
    num, height, width, stored_channels = images.shape
    if image_size is not None:
        how = resize_filter((height, width), int(image_size))
        if how == "box filter":
            fy, fx = height // image_size, width // image_size
            images = images.reshape(num, image_size, fy, image_size, fx, stored_channels).mean(axis=(2, 4))
        elif how == "LANCZOS":
            images = _lanczos(images, int(image_size))
    if channels is not None and channels != stored_channels:
        if stored_channels != 1:
            raise ValueError(f"cannot turn {stored_channels}-channel images into {channels} channels; "
                             f"channels=3 expands grey (1-channel) images")
        images = np.repeat(images, channels, axis=-1)
    return np.ascontiguousarray(images, dtype=np.float32)


def _lanczos(images: np.ndarray, image_size: int) -> np.ndarray:
    from PIL import Image

    out = np.empty((images.shape[0], image_size, image_size, images.shape[-1]), dtype=np.float32)
    for i, image in enumerate(images):
        for c in range(images.shape[-1]):
            plane = Image.fromarray(np.ascontiguousarray(image[:, :, c], dtype=np.float32))  # mode "F"
            out[i, :, :, c] = np.asarray(plane.resize((image_size, image_size), Image.LANCZOS))
    return np.clip(out, 0.0, 1.0, out=out)
