"""Procedural Shapes3D: the exact Shapes3D factor grid, rendered on demand without files.

Every one of the 480,000 combinations (floor hue 10, wall hue 10, object hue 10, scale 8,
shape 4 = cube/cylinder/sphere/capsule, orientation 15) with the label values of `3dshapes.h5`,
drawn by `Shapes3DRenderer` as a floor, a room corner and a shaded object. Deterministic: the same
index always gives the same image. Any sub-grid on request.

Each of the 480 geometries (scale x shape x orientation) is ray cast on first use (about 30 ms at
64x64 on one core, 8 ms at 32x32) and kept; after that an image costs one small matrix product.
Call `precompute()` before starting DataLoader workers so that forked workers share the cache, and
`precompute(cache_dir=...)` to keep the ray-cast table on disk for the next run (24 MB at 64x64).

Example:
    >>> data = ProceduralShapes3D(image_size=32, factor_values={"floor_hue": [0.0, 0.5]})
    >>> data.factor_sizes
    [2, 10, 10, 8, 4, 15]
    >>> data.get_images([0, 1]).shape
    (2, 32, 32, 3)
"""
from __future__ import annotations

import hashlib
import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ..atomic import atomic_path
from . import shapes3d_renderer
from .checks import check_positive_int

from .factor_dataset import FactorDataset
from .grid_inference import snap_to_values
from .shapes3d import SHAPES3D_FACTOR_NAMES, SHAPES3D_FACTOR_VALUES
from .shapes3d_renderer import geometry_weights, hue_to_rgb


def select_factor_values(
    factor_values: Optional[Mapping[str, Sequence[float]]] = None,
    factor_sizes: Union[None, Sequence[int], Mapping[str, int]] = None,
) -> list[np.ndarray]:
    """Label values per Shapes3D factor for a sub-grid.

    `factor_values` picks values by name (they must be Shapes3D label values); `factor_sizes`
    (a list of six sizes or a name -> size mapping) keeps that many evenly spaced values.
    """
    names = SHAPES3D_FACTOR_NAMES
    selected = [v.copy() for v in SHAPES3D_FACTOR_VALUES]
    if factor_sizes is not None:
        if not isinstance(factor_sizes, Mapping):
            if len(factor_sizes) != len(names):
                raise ValueError(f"factor_sizes needs {len(names)} entries ({names}), got {list(factor_sizes)}")
            factor_sizes = dict(zip(names, factor_sizes))
        for name, size in factor_sizes.items():
            if name not in names:
                raise ValueError(f"unknown factor '{name}'; expected one of {names}")
            k = names.index(name)
            full = len(SHAPES3D_FACTOR_VALUES[k])
            if not 1 <= check_positive_int(f"factor_sizes['{name}']", size) <= full:
                raise ValueError(f"factor '{name}' has {full} values; size {size} is out of range")
            selected[k] = SHAPES3D_FACTOR_VALUES[k][np.round(np.linspace(0, full - 1, int(size))).astype(int)]
    for name, values in (factor_values or {}).items():
        if name not in names:
            raise ValueError(f"unknown factor '{name}'; expected one of {names}")
        k = names.index(name)
        column = np.asarray(values, dtype=np.float64).reshape(-1, 1)
        if column.size == 0:
            raise ValueError(f"factor_values['{name}'] is empty")
        snapped = snap_to_values(column, [SHAPES3D_FACTOR_VALUES[k]], [name], "factor_values")[:, 0]
        selected[k] = np.unique(snapped)
        if factor_sizes is not None and name in factor_sizes and int(factor_sizes[name]) != len(selected[k]):
            raise ValueError(f"factor '{name}' is given {int(factor_sizes[name])} values by factor_sizes but "
                             f"{len(selected[k])} by factor_values; give it in one of them")
    return selected


class ProceduralShapes3D(FactorDataset):
    """Shapes3D-like images rendered from the factors; see the module docstring.

    Args:
        image_size: side of the square images (64 like the real data; 32 for quick runs).
        factor_values: optional sub-grid, e.g. `{"floor_hue": [0.0, 0.5], "shape": [0, 2]}`.
        factor_sizes: optional sub-grid by size, e.g. `[3, 3, 3, 8, 4, 15]` (evenly spaced values).
        supersample: anti-aliasing rays per pixel along each axis.
    """

    factor_names = SHAPES3D_FACTOR_NAMES

    def __init__(
        self,
        image_size: int = 64,
        factor_values: Optional[Mapping[str, Sequence[float]]] = None,
        factor_sizes: Union[None, Sequence[int], Mapping[str, int]] = None,
        supersample: int = 4,
    ):
        self.image_size = check_positive_int("image_size", image_size, minimum=8)
        self.supersample = check_positive_int("supersample", supersample)
        self.factor_values = select_factor_values(factor_values, factor_sizes)
        self.factor_sizes = [len(v) for v in self.factor_values]
        # colours of each hue class, (classes, 3), for floor, wall and object
        self._palettes = [np.stack([hue_to_rgb(h) for h in self.factor_values[k]]) for k in range(3)]
        num_geometries = self.factor_sizes[3] * self.factor_sizes[4] * self.factor_sizes[5]
        pixels = self.image_size * self.image_size
        self._geometry = np.zeros((num_geometries, pixels, 3), dtype=np.float32)
        self._geometry_ready = np.zeros(num_geometries, dtype=bool)

    def _geometry_ids(self, factors: np.ndarray) -> np.ndarray:
        _, _, _, n_scale, n_shape, n_orient = self.factor_sizes
        return (factors[:, 3] * n_shape + factors[:, 4]) * n_orient + factors[:, 5]

    def _ensure_geometry(self, ids: np.ndarray) -> None:
        missing = np.unique(ids[~self._geometry_ready[ids]])
        _, _, _, n_scale, n_shape, n_orient = self.factor_sizes
        for g in missing:
            scale, rest = divmod(int(g), n_shape * n_orient)
            shape, orient = divmod(rest, n_orient)
            self._geometry[g] = geometry_weights(
                self.image_size,
                float(self.factor_values[3][scale]),
                int(self.factor_values[4][shape]),
                float(self.factor_values[5][orient]),
                supersample=self.supersample,
            )
            self._geometry_ready[g] = True

    def precompute(self, cache_dir: Optional[str] = None) -> "ProceduralShapes3D":
        """Ray cast every geometry now (otherwise each is cast on first use).

        With `cache_dir`, the table of all 480 Shapes3D geometries is read from (or written to)
        `<cache_dir>/procedural_shapes3d-<size>px-ss<n>-<renderer hash>.npy`; the hash of the
        renderer's source makes a changed renderer ignore old tables.
        """
        if cache_dir is None:
            self._ensure_geometry(np.arange(len(self._geometry)))
            return self
        full = self._full_geometry_table(cache_dir)
        picks = [np.searchsorted(SHAPES3D_FACTOR_VALUES[k], self.factor_values[k]) for k in (3, 4, 5)]
        table = full[picks[0]][:, picks[1]][:, :, picks[2]]
        self._geometry[:] = table.reshape(self._geometry.shape)
        self._geometry_ready[:] = True
        return self

    def _full_geometry_table(self, cache_dir: str) -> np.ndarray:
        with open(shapes3d_renderer.__file__, "rb") as f:
            version = hashlib.sha1(f.read()).hexdigest()[:12]
        path = os.path.join(cache_dir, f"procedural_shapes3d-{self.image_size}px-ss{self.supersample}-{version}.npy")
        shape = (8, 4, 15, self.image_size * self.image_size, 3)
        if os.path.exists(path):
            try:
                table = np.load(path, mmap_mode="r", allow_pickle=False)
                if table.shape == shape and table.dtype == np.float32:
                    return table
            except (OSError, ValueError):
                pass  # unreadable: ray cast again and replace it
        values = SHAPES3D_FACTOR_VALUES
        table = np.empty(shape, dtype=np.float32)
        for i, scale in enumerate(values[3]):
            for j, shape_id in enumerate(values[4]):
                for k, orientation in enumerate(values[5]):
                    table[i, j, k] = geometry_weights(self.image_size, scale, int(shape_id), orientation,
                                                      self.supersample)
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            np.save(f, table)
        return table

    def render_factors(self, factors) -> np.ndarray:
        """Images (num, H, W, 3) float32 in [0, 1] of factor classes (num, 6)."""
        factors = np.asarray(factors, dtype=np.int64).reshape(-1, self.num_factors)
        self.factors_to_index(factors)  # range check
        ids = self._geometry_ids(factors)
        self._ensure_geometry(ids)
        colours = np.stack([self._palettes[k][factors[:, k]] for k in range(3)], axis=1)  # (num, 3, 3)
        images = np.matmul(self._geometry[ids], colours)
        np.clip(images, 0.0, 1.0, out=images)
        return images.reshape(len(factors), self.image_size, self.image_size, 3)

    def get_images(self, indices: Sequence[int]) -> np.ndarray:
        return self.render_factors(self.index_to_factors(self.check_indices(indices)))

    def sample_observations_from_factors(self, factors, random_state=None) -> np.ndarray:
        return self.render_factors(factors)
