"""Checks of what a dataset file holds, shared by the loaders: each raises a ValueError that names
the file, the array and what was expected, so that wrongly stored data never reaches training as
black or out-of-range images.

Example:
    >>> import numpy as np
    >>> check_stored_images(np.zeros((4, 8, 8, 3), np.uint8), "toy.h5", "images")
    >>> check_finite_labels(np.array([[0.5, 1.0]]), "toy.h5")
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

_SAMPLE_ROWS = 64  # rows read to check the value range of a (possibly huge, memory-mapped) array


def check_stored_images(images, source: str, key: str, max_value: int = 255) -> None:
    """Images stored as uint8 with values in [0, max_value] (dSprites: {0, 1}; the others 0..255).

    The dtype is checked from the array's metadata; the range (when `max_value < 255`) on up to
    64 rows spread over the array, so an h5py dataset or a memory map is never read whole.
    """
    dtype = np.dtype(images.dtype)
    expected = "uint8 in {0, 1}" if max_value == 1 else f"uint8 in 0..{max_value}"
    if dtype != np.uint8:
        hint = " (float images in [0, 1]? store them as uint8: np.round(images * 255))" if dtype.kind == "f" else ""
        raise ValueError(f"{source}: '{key}' is stored as {dtype}; expected {expected}{hint}")
    rows = images.shape[0] if len(images.shape) else 0
    if max_value < 255 and rows:
        sample = np.unique(np.linspace(0, rows - 1, min(rows, _SAMPLE_ROWS)).astype(np.int64))
        peak = int(np.max(images[sample]))
        if peak > max_value:
            raise ValueError(
                f"{source}: '{key}' holds values up to {peak}; expected {expected}"
                + (" (stored as 0/255? divide by 255)" if max_value == 1 else "")
            )


def check_finite_labels(labels, source: str, names: Optional[Sequence[str]] = None) -> None:
    """Label rows without NaN or infinite values (NaN would otherwise be snapped onto a grid value)."""
    labels = np.asarray(labels, dtype=np.float64)
    bad = ~np.isfinite(labels)
    if bad.any():
        row, column = (int(i[0]) for i in np.nonzero(bad))
        name = names[column] if names is not None and column < len(names) else f"column {column}"
        raise ValueError(
            f"{source}: {int(bad.sum())} labels are NaN or infinite (first: row {row}, factor '{name}'); "
            "expected finite factor values"
        )


def check_factor_sizes(sizes: Sequence, source: str, names: Optional[Sequence[str]] = None) -> list[int]:
    """Factor sizes as a list of positive ints; a ValueError names the first bad entry."""
    out = []
    for k, size in enumerate(sizes):
        name = names[k] if names is not None and k < len(names) else f"factor {k}"
        integral = isinstance(size, (int, np.integer)) or (isinstance(size, (float, np.floating)) and float(size).is_integer())
        if isinstance(size, (bool, np.bool_)) or not integral or size < 1:
            raise ValueError(f"{source}: factor_sizes entry {size!r} ({name}) is not a positive integer; "
                             f"got {list(sizes)}")
        out.append(int(size))
    return out


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    """An int option >= minimum (bools and fractional floats refused)."""
    integral = isinstance(value, (int, np.integer)) or (isinstance(value, (float, np.floating)) and float(value).is_integer())
    if isinstance(value, (bool, np.bool_)) or not integral or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def picture_8bit(picture, source: str):
    """A PIL picture in a mode whose `convert("RGB")` keeps its values: 16-bit greyscale ('I;16*', or
    'I' within 0..65535) is scaled to 8 bits (PIL would clip it to white). Anything that is not a
    picture, or a float / out-of-range integer one, is a ValueError naming `source`."""
    from PIL import Image

    if not isinstance(picture, Image.Image):
        raise ValueError(f"{source}: expected an image, got a {type(picture).__name__} ({str(picture)[:40]!r})")
    if picture.mode.startswith("I;16") or picture.mode == "I":
        values = np.asarray(picture).astype(np.int64)
        if values.size and (values.min() < 0 or values.max() > 65535):
            raise ValueError(f"{source}: a {picture.mode} image with values in [{values.min()}, {values.max()}]; "
                             "expected 8-bit or 16-bit pixels")
        return Image.fromarray(np.round(values / 257.0).astype(np.uint8), mode="L")
    if picture.mode == "F":
        raise ValueError(f"{source}: a floating-point ('F') image; expected 8-bit or 16-bit pixels")
    return picture
