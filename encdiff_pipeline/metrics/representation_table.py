"""Encode every image of a factor dataset once, in batches, into a representation table.

Row `i` of the table is the code of grid point `i`; every metric then samples from the table by
index (`dataset.factors_to_index`), which is how EncDiff is evaluated and why a full protocol costs
one pass of the encoder over the dataset instead of one per sampled point.

Example:
    >>> import numpy as np
    >>> from encdiff_pipeline.data import FactorDataset
    >>> class Tiny(FactorDataset):
    ...     factor_names, factor_sizes = ["a", "b"], [2, 3]
    ...     def get_images(self, indices):
    ...         return np.asarray(indices, dtype=np.float32).reshape(-1, 1, 1, 1) * np.ones((1, 2, 2, 3), np.float32)
    >>> table = compute_representation_table(Tiny(), lambda x: x.mean(axis=(1, 2)), batch_size=4, progress=False)
    >>> table.shape
    (6, 3)
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import numpy as np
from tqdm.auto import tqdm


def compute_representation_table(
    dataset,
    encode: Callable[[np.ndarray], Any],
    batch_size: int = 256,
    progress: bool = True,
    description: str = "encoding",
) -> np.ndarray:
    """Codes (len(dataset), N) float64 of every grid point, `encode` called on image batches.

    Args:
        dataset: a `FactorDataset`; `dataset.get_images(indices)` gives images (B, H, W, C) in [0, 1].
        encode: images (B, H, W, C) float32 in [0, 1] -> codes (B, N) (numpy or anything `np.asarray` takes).
        batch_size: images per call.
        progress: show a tqdm progress bar.

    Raises:
        ValueError: codes of the wrong shape, or NaN / infinite codes (with the first bad grid index).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    num = len(dataset)
    table: Optional[np.ndarray] = None
    bar = tqdm(total=num, desc=description, unit="img", disable=not progress)
    for start in range(0, num, batch_size):
        indices = np.arange(start, min(start + batch_size, num))
        codes = np.asarray(encode(dataset.get_images(indices)), dtype=np.float64)
        if codes.ndim == 1:
            codes = codes[:, None]
        if codes.ndim != 2 or codes.shape[0] != len(indices):
            raise ValueError(f"the encoder must return codes (batch={len(indices)}, N), got shape {codes.shape}")
        if not np.isfinite(codes).all():
            bad = indices[~np.isfinite(codes).all(axis=1)][0]
            raise ValueError(f"the encoder returned NaN or infinite codes (first at grid index {bad})")
        if table is None:
            table = np.empty((num, codes.shape[1]), dtype=np.float64)
        elif codes.shape[1] != table.shape[1]:
            raise ValueError(f"the encoder returned {codes.shape[1]} dims, earlier batches {table.shape[1]}")
        table[indices] = codes
        bar.update(len(indices))
    bar.close()
    if table is None:
        raise ValueError("the dataset is empty")
    return table
