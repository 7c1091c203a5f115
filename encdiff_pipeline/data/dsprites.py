"""dSprites from `dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz`, read lazily, never unpickled.

The file holds `imgs` (737280, 64, 64) uint8 in {0, 1}, `latents_classes` and `latents_values`
(737280, 6) for colour (1 value), shape 3, scale 6, orientation 40, posX 32, posY 32, and a pickled
`metadata` that is never read. Factor sizes are inferred from `latents_classes` (any sub-grid, rows in
any order). As in disentanglement_lib the constant colour factor is not a factor of the dataset:
the five others are. Images are (H, W, 1), or (H, W, 3) with `channels=3` (the grey value repeated)
for models built for colour images; `image_size` resizes each batch as it is read.

Sampling parity with disentanglement_lib: its `sample_observations_from_factors` completes the
colour column with `random_state.randint(1, size=num)`; we make the same call. NumPy's legacy
`randint` with a single possible value consumes no random numbers, so the stream is unchanged
either way, and metric scores match the reference.

Example:
    >>> data = DSprites("dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz")  # doctest: +SKIP
    >>> data.factor_sizes  # doctest: +SKIP
    [3, 6, 40, 32, 32]
    >>> DSprites("dsprites.npz", image_size=16, channels=3).get_images([0]).shape  # doctest: +SKIP
    (1, 16, 16, 3)
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from .checks import check_stored_images
from .factor_dataset import FactorDataset
from .grid_inference import infer_grid
from .npz_member import open_npz_member, read_npz_array

DSPRITES_ALL_FACTOR_NAMES = ["color", "shape", "scale", "orientation", "position_x", "position_y"]


class DSprites(FactorDataset):
    """dSprites from its `.npz` (see the module docstring).

    Args:
        path: the `.npz` file.
        cache_dir: where a compressed `imgs` member is decompressed once (see `npz_member`).
        image_size: side of the returned images (default: as stored); see `resize.py` for the filter.
        channels: 1 (as stored), 3 (grey repeated) or None.
    """

    factor_names = DSPRITES_ALL_FACTOR_NAMES[1:]

    def __init__(self, path: str | os.PathLike, cache_dir: Optional[str] = None, image_size: Optional[int] = None,
                 channels: Optional[int] = None):
        self.path = os.fspath(path)
        classes = read_npz_array(self.path, "latents_classes")
        values = read_npz_array(self.path, "latents_values")
        self._images = open_npz_member(self.path, "imgs", cache_dir=cache_dir)
        rows = self._images.shape[0] if self._images.ndim else 0
        if self._images.ndim != 3:
            raise ValueError(f"{self.path}: 'imgs' has shape {self._images.shape}; expected (N, 64, 64)")
        self.source_image_size = tuple(self._images.shape[1:3])
        self._set_output(image_size, channels, stored_channels=1)
        for key, array in (("latents_classes", classes), ("latents_values", values)):
            if array.shape != (rows, 6):
                raise ValueError(f"{self.path}: '{key}' has shape {array.shape}; expected ({rows}, 6): "
                                 f"color, shape, scale, orientation, posX, posY")
        if np.unique(classes[:, 0]).size != 1:
            raise ValueError(f"{self.path}: the colour latent (column 0 of 'latents_classes') must be constant")
        grid = infer_grid(classes[:, 1:], self.path, self.factor_names)
        self.factor_sizes = grid.factor_sizes
        self._index_to_row = grid.index_to_row
        # label value of each class, read from the first row holding it
        self.factor_values = []
        for k in range(self.num_factors):
            first_row = np.unique(grid.row_classes[:, k], return_index=True)[1]
            self.factor_values.append(values[first_row, k + 1].astype(np.float64))
        check_stored_images(self._images, self.path, "imgs", max_value=1)

    def get_images(self, indices: Sequence[int]) -> np.ndarray:
        indices = self.check_indices(indices)
        rows = indices if self._index_to_row is None else self._index_to_row[indices]
        return self._resized(self._images[rows].astype(np.float32)[..., None])

    def sample_observations_from_factors(self, factors, random_state: np.random.RandomState) -> np.ndarray:
        factors = np.asarray(factors, dtype=np.int64)
        random_state.randint(1, size=len(factors))  # the constant colour factor, as disentanglement_lib
        return self.get_images(self.factors_to_index(factors))
