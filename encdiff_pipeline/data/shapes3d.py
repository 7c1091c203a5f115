"""Shapes3D from `3dshapes.h5` (DeepMind), read lazily with h5py.

The file holds `images` (N, 64, 64, 3) uint8 and `labels` (N, 6) float64. The full file is the
480,000-point grid floor_hue 10 x wall_hue 10 x object_hue 10 x scale 8 x shape 4 x orientation 15,
orientation fastest. A file holding any sub-grid (rows in any order) works too: the grid is inferred
from `labels`, whose values must be Shapes3D label values.

Example:
    >>> data = Shapes3D("3dshapes.h5", image_size=16)  # doctest: +SKIP
    >>> image, factors = data[0]  # doctest: +SKIP
    >>> tuple(image.shape)  # doctest: +SKIP
    (3, 16, 16)
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from .checks import check_stored_images
from .factor_dataset import FactorDataset
from .grid_inference import infer_grid, snap_to_values

SHAPES3D_FACTOR_NAMES = ["floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"]
SHAPES3D_FACTOR_VALUES = [
    np.round(np.arange(10) / 10.0, 1),
    np.round(np.arange(10) / 10.0, 1),
    np.round(np.arange(10) / 10.0, 1),
    np.linspace(0.75, 1.25, 8),
    np.arange(4, dtype=np.float64),  # cube, cylinder, sphere, capsule
    np.linspace(-30.0, 30.0, 15),
]
SHAPES3D_FACTOR_SIZES = [len(v) for v in SHAPES3D_FACTOR_VALUES]


class Shapes3D(FactorDataset):
    """The real Shapes3D images from an HDF5 file, read on demand (nothing but labels in RAM).

    Args:
        path: `3dshapes.h5`, or any HDF5 file with `images` (N, H, W, 3) uint8 and `labels` (N, 6).
        image_size: side of the returned images (default: as stored); see `resize.py` for the filter.
        channels: 3 (as stored) or None.
    """

    factor_names = SHAPES3D_FACTOR_NAMES

    def __init__(self, path: str | os.PathLike, image_size: Optional[int] = None, channels: Optional[int] = None):
        import h5py

        self.path = os.fspath(path)
        try:
            with h5py.File(self.path, "r") as f:
                for key in ("images", "labels"):
                    if key not in f:
                        raise ValueError(f"{self.path}: missing dataset '{key}'; expected 'images' "
                                         f"(N, 64, 64, 3) uint8 and 'labels' (N, 6) float")
                images, labels = f["images"], f["labels"]
                if images.ndim != 4 or images.shape[-1] != 3:
                    raise ValueError(f"{self.path}: 'images' has shape {images.shape}; expected (N, H, W, 3)")
                check_stored_images(images, self.path, "images")
                if labels.shape != (images.shape[0], 6):
                    raise ValueError(f"{self.path}: 'labels' has shape {labels.shape}; expected "
                                     f"({images.shape[0]}, 6) to match 'images'")
                label_rows = labels[()]
                self.image_shape = tuple(images.shape[1:])
        except OSError as error:
            raise OSError(f"{self.path}: cannot read as an HDF5 Shapes3D file ({error})") from error
        self.source_image_size = self.image_shape[:2]
        self._set_output(image_size, channels, stored_channels=3)
        snapped = snap_to_values(label_rows, SHAPES3D_FACTOR_VALUES, SHAPES3D_FACTOR_NAMES, self.path)
        grid = infer_grid(snapped, self.path, SHAPES3D_FACTOR_NAMES)
        self.factor_sizes = grid.factor_sizes
        self.factor_values = grid.factor_values
        self._index_to_row = grid.index_to_row
        self._file = None
        self._pid = None

    def _images(self):
        # one handle per process: h5py handles must not cross a fork (DataLoader workers)
        if self._file is None or self._pid != os.getpid():
            import h5py

            self._file = h5py.File(self.path, "r")
            self._pid = os.getpid()
        return self._file["images"]

    def get_images(self, indices: Sequence[int]) -> np.ndarray:
        indices = self.check_indices(indices)
        rows = indices if self._index_to_row is None else self._index_to_row[indices]
        # one read per row: h5py's fancy indexing (a point selection) is much slower
        images = self._images()
        out = np.empty((len(rows),) + self.image_shape, dtype=np.float32)
        try:
            for i, row in enumerate(rows):
                out[i] = images[int(row)]
        except OSError as error:
            raise OSError(f"{self.path}: cannot read images (truncated or corrupt file?): {error}") from error
        out /= 255.0
        return self._resized(out)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        return state
