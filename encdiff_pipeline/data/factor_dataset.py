"""The interface every ground-truth-factor dataset shares, and `FactorGrid`, the simplest one.

A factor dataset is a full (or sub-) grid of discrete factors of variation. Grid point `i` is the
mixed-radix number whose digits are the factor classes, last factor fastest (the layout of
`3dshapes.h5`, dSprites and MPI3D). Sampling draws from a `np.random.RandomState` in the same order
as disentanglement_lib (`randint(size, size=num)` per factor, in factor order), so scores computed
on our datasets are comparable with published ones.

Example:
    >>> grid = FactorGrid([4, 5, 3, 6])
    >>> grid.factors_to_index([[1, 2, 0, 5]])
    array([131])
    >>> grid.index_to_factors(131)
    array([1, 2, 0, 5])
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
import torch

from ..image_range import to_model_input
from .resize import check_output_options, resize_images


class FactorDataset(torch.utils.data.Dataset):
    """Base class: a dataset whose items are indexed by a grid of discrete factors.

    Subclasses set `factor_names`, `factor_sizes` (and optionally `factor_values`, the label value
    of each class) and implement `get_images(indices)`; everything else derives from those.
    Loaders of stored images also set `source_image_size` and pass each batch through
    `_resized`, which gives it the `image_size` and `channels` asked for (see `resize.py`).

    `__getitem__(i)` returns `(image, factors)`: image a float tensor (C, H, W) in [-1, 1],
    factors an int64 tensor of the factor classes of grid point `i`.
    """

    factor_names: list[str]
    factor_sizes: list[int]
    factor_values: Optional[list[np.ndarray]] = None
    image_size: Optional[int] = None  # side of the images `get_images` returns; None: as stored
    channels: Optional[int] = None  # channels `get_images` returns; None: as stored
    source_image_size: Optional[tuple[int, int]] = None  # (height, width) as stored; None: rendered

    def _set_output(self, image_size: Optional[int], channels: Optional[int], stored_channels: int) -> None:
        """Check and keep the output `image_size` and `channels` of a loader of stored images."""
        check_output_options(image_size, channels)
        if channels is not None and channels != stored_channels and stored_channels != 1:
            raise ValueError(f"channels={channels}: the images have {stored_channels} channels; "
                             f"channels=3 expands grey (1-channel) images")
        self.image_size = None if image_size is None else int(image_size)
        self.channels = channels

    def _resized(self, images: np.ndarray) -> np.ndarray:
        """A batch as stored (num, H, W, C) in [0, 1] -> the output size and channels."""
        return resize_images(images, self.image_size, self.channels)

    # -- grid arithmetic --------------------------------------------------------------------------
    @property
    def num_factors(self) -> int:
        return len(self.factor_sizes)

    @property
    def _strides(self) -> np.ndarray:
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        return np.concatenate([np.cumprod(sizes[::-1])[::-1][1:], [1]]).astype(np.int64)

    def __len__(self) -> int:
        return int(np.prod(np.asarray(self.factor_sizes, dtype=np.int64)))

    def factors_to_index(self, factors) -> np.ndarray:
        """Factor classes (..., num_factors) -> grid indices (...)."""
        factors = integer_array(factors, "factor classes")
        if factors.shape[-1] != self.num_factors:
            raise ValueError(
                f"expected factor vectors of length {self.num_factors} ({self.factor_names}), "
                f"got shape {factors.shape}"
            )
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        if np.any(factors < 0) or np.any(factors >= sizes):
            raise ValueError(f"factor classes out of range; sizes are {list(self.factor_sizes)}")
        return factors @ self._strides

    def index_to_factors(self, index) -> np.ndarray:
        """Grid indices (...) -> factor classes (..., num_factors)."""
        index = integer_array(index, "grid index")
        if np.any(index < 0) or np.any(index >= len(self)):
            raise IndexError(f"grid index out of range [0, {len(self)})")
        sizes = np.asarray(self.factor_sizes, dtype=np.int64)
        return (index[..., None] // self._strides) % sizes

    def check_indices(self, indices) -> np.ndarray:
        """Grid indices as a flat int64 array, range-checked; fractions and non-numbers are refused
        (an index 0.5 is not silently read as 0)."""
        indices = integer_array(indices, "grid index").reshape(-1)
        self.index_to_factors(indices)
        return indices

    # -- disentanglement_lib sampling -------------------------------------------------------------
    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray:
        """Sample `num` factor vectors, per factor `randint(size, size=num)` in factor order."""
        return np.stack(
            [random_state.randint(size, size=num) for size in self.factor_sizes], axis=1
        ).astype(np.int64)

    def sample_observations_from_factors(self, factors, random_state: np.random.RandomState):
        """Observations for the given factor classes: images (num, H, W, C) float32 in [0, 1]."""
        return self.get_images(self.factors_to_index(factors))

    def sample_observations(self, num: int, random_state: np.random.RandomState):
        return self.sample_observations_from_factors(self.sample_factors(num, random_state), random_state)

    # -- images -----------------------------------------------------------------------------------
    def get_images(self, indices: Sequence[int]) -> np.ndarray:
        """Images of the given grid indices, (num, H, W, C) float32 in [0, 1]."""
        raise NotImplementedError

    def to_hf_dataset(self, indices: Optional[Sequence[int]] = None, batch_size: int = 256,
                      cache_dir: Optional[str] = None):
        """A `datasets.Dataset` with an `image` column and one `label_<factor>` ClassLabel per factor.

        Example:
            >>> hf = data.to_hf_dataset(indices=range(100))  # doctest: +SKIP
            >>> hf.save_to_disk("shapes3d_subset")  # doctest: +SKIP
        """
        from .hf_export import to_hf_dataset

        return to_hf_dataset(self, indices=indices, batch_size=batch_size, cache_dir=cache_dir)

    def __getitem__(self, index: int):
        tensor = to_model_input(self.get_images(np.asarray([index])))[0]
        return tensor, torch.from_numpy(self.index_to_factors(index))


def integer_array(values, what: str) -> np.ndarray:
    """`values` as an int64 array; a ValueError naming `what` for fractional, non-finite or non-numeric values."""
    array = np.asarray(values)
    if array.dtype.kind in "iub" or array.size == 0:
        return array.astype(np.int64)
    if array.dtype.kind == "f" and np.isfinite(array).all() and (array == np.round(array)).all():
        return array.astype(np.int64)
    flat = array.reshape(-1)
    bad = flat[~(np.isfinite(flat) & (flat == np.round(flat)))][0] if array.dtype.kind == "f" else flat[0]
    raise ValueError(f"{what} must be integers, got {bad.item()!r} (dtype {array.dtype})")


class FactorGrid(FactorDataset):
    """A factor dataset whose observation of grid point `i` is the index `i` itself.

    Used by the metrics with a precomputed representation table (row `i` = representation of
    grid point `i`), exactly like disentanglement_lib evaluated on a lookup.

    Example:
        >>> grid = FactorGrid([4, 5, 3, 6])
        >>> len(grid)
        360
    """

    def __init__(self, factor_sizes: Sequence[int], factor_names: Optional[Sequence[str]] = None):
        sizes = [int(s) for s in factor_sizes]
        if not sizes or any(s < 1 for s in sizes):
            raise ValueError(f"factor_sizes must be positive integers, got {list(factor_sizes)}")
        self.factor_sizes = sizes
        self.factor_names = list(factor_names) if factor_names else [f"factor_{i}" for i in range(len(sizes))]
        if len(self.factor_names) != len(sizes):
            raise ValueError("factor_names and factor_sizes must have the same length")

    def sample_observations_from_factors(self, factors, random_state=None) -> np.ndarray:
        return self.factors_to_index(factors)

    def get_images(self, indices):
        raise TypeError("a FactorGrid has no images: its observations are grid indices")

    def __getitem__(self, index: int):
        return index, torch.from_numpy(self.index_to_factors(index))
