"""MPI3D (toy / realistic / real) from its `.npz`, memory-mapped.

The file's `images` array is (1036800, 64, 64, 3) uint8, or the same reshaped to
[6, 6, 2, 3, 3, 40, 40, 64, 64, 3]: object colour, object shape, object size, camera height,
background colour, horizontal axis, vertical axis (last fastest). `factor_sizes` lets a smaller file
(e.g. one written by a test) stand for a smaller grid with the same layout. `image_size` resizes
each batch as it is read. Licence: CC BY 4.0.

Example:
    >>> data = MPI3D("mpi3d_real.npz")  # doctest: +SKIP
    >>> len(data)  # doctest: +SKIP
    1036800
    >>> MPI3D("mpi3d_real.npz", image_size=16).get_images([0]).shape  # doctest: +SKIP
    (1, 16, 16, 3)
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from .checks import check_factor_sizes, check_stored_images
from .factor_dataset import FactorDataset
from .npz_member import open_npz_member

MPI3D_FACTOR_NAMES = ["object_color", "object_shape", "object_size", "camera_height",
                      "background_color", "horizontal_axis", "vertical_axis"]
MPI3D_FACTOR_SIZES = [6, 6, 2, 3, 3, 40, 40]


class MPI3D(FactorDataset):
    """MPI3D images from a `.npz` (see the module docstring).

    Args:
        path: the `.npz` file (key `images`).
        factor_sizes: grid sizes, default the real [6, 6, 2, 3, 3, 40, 40].
        cache_dir: where a compressed `images` member is decompressed once (see `npz_member`).
        image_size: side of the returned images (default: as stored); see `resize.py` for the filter.
        channels: 3 (as stored) or None.
    """

    factor_names = MPI3D_FACTOR_NAMES

    def __init__(self, path: str | os.PathLike, factor_sizes: Optional[Sequence[int]] = None,
                 cache_dir: Optional[str] = None, image_size: Optional[int] = None, channels: Optional[int] = None):
        self.path = os.fspath(path)
        self.factor_sizes = [int(s) for s in (factor_sizes or MPI3D_FACTOR_SIZES)]
        if len(self.factor_sizes) != len(MPI3D_FACTOR_NAMES):
            raise ValueError(f"factor_sizes needs {len(MPI3D_FACTOR_NAMES)} entries ({MPI3D_FACTOR_NAMES})")
        check_factor_sizes(factor_sizes or MPI3D_FACTOR_SIZES, "MPI3D", MPI3D_FACTOR_NAMES)
        images = open_npz_member(self.path, "images", cache_dir=cache_dir)
        check_stored_images(images, self.path, "images")
        total = len(self)
        if images.ndim == 4:
            ok = images.shape[0] == total
        else:
            ok = images.ndim == 10 and list(images.shape[:7]) == self.factor_sizes
        if not ok or images.shape[-1] != 3:
            raise ValueError(f"{self.path}: 'images' has shape {images.shape}; expected ({total}, H, W, 3) "
                             f"or {self.factor_sizes + ['H', 'W', 3]} for factor sizes {self.factor_sizes}")
        self._images = images.reshape((total,) + tuple(images.shape[-3:]))
        self.source_image_size = tuple(images.shape[-3:-1])
        self._set_output(image_size, channels, stored_channels=3)

    def get_images(self, indices: Sequence[int]) -> np.ndarray:
        indices = self.check_indices(indices)
        return self._resized(self._images[indices].astype(np.float32) / 255.0)
