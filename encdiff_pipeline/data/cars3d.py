"""Cars3D from the folder of 183 `.mat` files of the 2015 visual-analogy data.

Each file holds `im`, (128, 128, 3, elevations, azimuths) uint8 with 4 elevations and 24 azimuths
(if a file has the two last axes the other way round, the shorter one is taken as elevation).
Objects are the files in sorted name order (disentanglement_lib takes the directory listing order,
which is unspecified). Factors as disentanglement_lib: elevation 4, azimuth 24, object 183
(elevation slowest, object fastest). Images are resized to 64x64 with PIL LANCZOS, as in
disentanglement_lib; another `image_size` resizes those 64x64 images per batch (64 -> 16: the mean
of every 4x4 block, see `resize.py`). A file is read when one of its images is first asked for, then
kept (64x64 uint8: 1.2 MB per car, 216 MB for all).

Example:
    >>> data = Cars3D("data/cars")  # doctest: +SKIP
    >>> data.factor_sizes  # doctest: +SKIP
    [4, 24, 183]
    >>> Cars3D("data/cars", image_size=16).get_images([0]).shape  # doctest: +SKIP
    (1, 16, 16, 3)
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from .factor_dataset import FactorDataset

CARS3D_FACTOR_NAMES = ["elevation", "azimuth", "object"]
CARS3D_SIDE = 64  # side of the stored views (disentanglement_lib's Cars3D images)


def _load_views(path: str, image_size: int) -> np.ndarray:
    """All views of one car: (elevations, azimuths, size, size, 3) uint8."""
    import scipy.io
    from PIL import Image

    try:
        mat = scipy.io.loadmat(path)
    except Exception as error:  # scipy raises ValueError/TypeError/OSError on damaged files
        raise OSError(f"{path}: cannot read as a MATLAB .mat file (truncated or corrupt?): {error}") from error
    if "im" not in mat:
        keys = [k for k in mat if not k.startswith("__")]
        raise ValueError(f"{path}: missing variable 'im'; expected (128, 128, 3, 4, 24) uint8, found {keys}")
    im = np.asarray(mat["im"])
    if im.ndim != 5 or im.shape[2] != 3:
        raise ValueError(f"{path}: 'im' has shape {im.shape}; expected (H, W, 3, elevations, azimuths)")
    if im.dtype != np.uint8:  # floats in [0, 1] would be clipped to black without a word
        raise ValueError(f"{path}: 'im' is stored as {im.dtype}; expected uint8 in 0..255 (float images in [0, 1]? "
                         "store them as uint8: np.round(im * 255))")
    if im.shape[3] > im.shape[4]:
        im = im.swapaxes(3, 4)
    if im.dtype != np.uint8:
        im = np.clip(im, 0, 255).astype(np.uint8)
    n_elev, n_azim = im.shape[3], im.shape[4]
    views = np.empty((n_elev, n_azim, image_size, image_size, 3), dtype=np.uint8)
    for e in range(n_elev):
        for a in range(n_azim):
            picture = Image.fromarray(np.ascontiguousarray(im[:, :, :, e, a]))
            views[e, a] = np.asarray(picture.resize((image_size, image_size), Image.LANCZOS))
    return views


class Cars3D(FactorDataset):
    """Cars3D images from a folder of `.mat` files (see the module docstring).

    Args:
        folder: directory holding the `*.mat` files.
        image_size: side of the returned images (default: 64, like disentanglement_lib).
        channels: 3 (as stored) or None.
    """

    factor_names = CARS3D_FACTOR_NAMES

    def __init__(self, folder: str | os.PathLike, image_size: Optional[int] = None, channels: Optional[int] = None):
        self.folder = os.fspath(folder)
        if not os.path.isdir(self.folder):
            raise ValueError(f"{self.folder}: expected a folder of Cars3D .mat files")
        self.files = sorted(os.path.join(self.folder, f) for f in os.listdir(self.folder) if f.endswith(".mat"))
        if not self.files:
            raise ValueError(f"{self.folder}: no .mat files found; expected the 183 Cars3D files")
        self.source_image_size = (CARS3D_SIDE, CARS3D_SIDE)
        self._set_output(image_size, channels, stored_channels=3)
        first = _load_views(self.files[0], CARS3D_SIDE)
        self._views = {0: first}
        self.factor_sizes = [first.shape[0], first.shape[1], len(self.files)]

    def _car(self, k: int) -> np.ndarray:
        if k not in self._views:
            views = _load_views(self.files[k], CARS3D_SIDE)
            if list(views.shape[:2]) != self.factor_sizes[:2]:
                raise ValueError(f"{self.files[k]}: has {views.shape[:2]} (elevations, azimuths); "
                                 f"expected {tuple(self.factor_sizes[:2])} like {self.files[0]}")
            self._views[k] = views
        return self._views[k]

    def get_images(self, indices: Sequence[int]) -> np.ndarray:
        factors = self.index_to_factors(self.check_indices(indices))
        out = np.empty((len(factors), CARS3D_SIDE, CARS3D_SIDE, 3), dtype=np.float32)
        for i, (e, a, k) in enumerate(factors):
            out[i] = self._car(int(k))[e, a]
        out /= 255.0
        return self._resized(out)
