"""Recover the factor grid that a table of per-row labels spans.

Real files store one label row per image. Their rows may hold the whole grid or any sub-grid (e.g.
fewer hues), in any order. `infer_grid` finds the values each factor takes, checks the rows hold
every combination exactly once, and returns the row of each grid point (mixed radix, last factor
fastest).

Example:
    >>> import numpy as np
    >>> grid = infer_grid(np.array([[0.5, 2], [0.5, 1], [0.1, 2], [0.1, 1]]), source="toy")
    >>> grid.factor_sizes, grid.index_to_row.tolist()
    ([2, 2], [3, 2, 1, 0])
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np

from .checks import check_finite_labels


@dataclass
class InferredGrid:
    factor_sizes: list[int]
    factor_values: list[np.ndarray]  # sorted label values of each factor
    row_classes: np.ndarray  # (rows, factors) int64 class of each row
    index_to_row: Optional[np.ndarray]  # row holding grid index i; None when rows are in grid order


def snap_to_values(labels: np.ndarray, allowed: Sequence[np.ndarray], names: Sequence[str], source: str,
                   atol: float = 1e-4) -> np.ndarray:
    """Replace each label by the nearest allowed value; raise ValueError for labels off the grid."""
    labels = np.asarray(labels, dtype=np.float64)
    check_finite_labels(labels, source, names)
    out = np.empty_like(labels)
    for k, values in enumerate(allowed):
        values = np.asarray(values, dtype=np.float64)
        nearest = np.abs(labels[:, k, None] - values[None, :]).argmin(axis=1)
        off = np.abs(labels[:, k] - values[nearest]) > atol
        if np.any(off):
            row = int(np.flatnonzero(off)[0])
            raise ValueError(
                f"{source}: label {labels[row, k]!r} of factor '{names[k]}' (row {row}) is off the grid; "
                f"expected one of {np.round(values, 6).tolist()}"
            )
        out[:, k] = values[nearest]
    return out


def infer_grid(labels: np.ndarray, source: str, names: Optional[Sequence[str]] = None) -> InferredGrid:
    """Factor sizes/values of the (sub-)grid the label rows span; ValueError unless it is complete."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or labels.shape[0] == 0:
        raise ValueError(f"{source}: expected labels of shape (rows, factors), got {labels.shape}")
    names = list(names) if names is not None else [f"factor_{k}" for k in range(labels.shape[1])]
    values, classes = [], []
    for k in range(labels.shape[1]):
        uniq, inverse = np.unique(labels[:, k], return_inverse=True)
        values.append(uniq)
        classes.append(inverse.reshape(-1))
    sizes = [len(v) for v in values]
    row_classes = np.stack(classes, axis=1).astype(np.int64)
    total = int(np.prod(sizes, dtype=np.int64))
    strides = np.concatenate([np.cumprod(np.asarray(sizes[::-1], dtype=np.int64))[::-1][1:], [1]])
    index = row_classes @ strides
    if len(index) != total or np.bincount(index, minlength=total).max() != 1:
        raise ValueError(
            f"{source}: the {len(index)} label rows do not hold every combination of the factor values "
            f"exactly once (sizes {dict(zip(names, sizes))} make {total} combinations)"
        )
    if np.array_equal(index, np.arange(total)):
        index_to_row = None
    else:
        index_to_row = np.empty(total, dtype=np.int64)
        index_to_row[index] = np.arange(total)
    return InferredGrid(sizes, values, row_classes, index_to_row)
