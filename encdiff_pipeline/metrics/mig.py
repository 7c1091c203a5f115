"""Mutual Information Gap (Chen et al. 2018, beta-TCVAE), disentanglement_lib's protocol.

`num_train` codes, each dim discretised into `num_bins` equal-width histogram bins; mutual
information (nats) of every dim with every factor; per factor (top1 - top2) / H(factor); mean over
factors.

Example:
    >>> import numpy as np
    >>> from encdiff_pipeline.data import FactorGrid
    >>> from encdiff_pipeline.metrics import mig
    >>> grid = FactorGrid([4, 5])
    >>> table = grid.index_to_factors(np.arange(len(grid))).astype(float)
    >>> round(mig(grid, table, np.random.RandomState(0), num_train=2000)["discrete_mig"], 3)
    1.0
"""
from __future__ import annotations

import numpy as np

from .mutual_information import discrete_entropy, discrete_mutual_info, histogram_discretize
from .sampling import Representation, check_count, sample_codes_and_factors


def mig_from_mutual_info(mutual_info: np.ndarray, entropy: np.ndarray) -> float:
    """Mean over factors of (largest - second largest MI) / H(factor); MI is (codes, factors).

    Factors with zero entropy in the sample (a single value) carry no information and are left
    out of the mean; if every factor is constant a ValueError is raised.
    """
    mutual_info = np.asarray(mutual_info, dtype=np.float64)
    if mutual_info.shape[0] < 2:
        raise ValueError("MIG needs a representation with at least 2 dims (it is a gap between the top two)")
    informative = np.asarray(entropy) > 0
    if not informative.any():
        raise ValueError("MIG is undefined: every factor takes a single value in the sample")
    top = np.sort(mutual_info, axis=0)[::-1]
    gaps = (top[0] - top[1])[informative] / np.asarray(entropy)[informative]
    return float(np.mean(gaps))


def compute_mig(
    dataset,
    representation_function: Representation,
    random_state: np.random.RandomState,
    num_train: int = 10000,
    batch_size: int = 16,
    num_bins: int = 20,
) -> dict:
    """MIG of a representation on a factor dataset.

    Args:
        dataset: a `FactorDataset`.
        representation_function: callable observations -> codes (num, N), or a table (len(dataset), N).
        random_state: `np.random.RandomState`, consumed like disentanglement_lib.
        num_train, batch_size, num_bins: the published protocol (10,000, 16, 20).

    Returns:
        `discrete_mig`.
    """
    check_count("num_bins", num_bins)
    codes, factors = sample_codes_and_factors(dataset, representation_function, num_train, random_state, batch_size)
    mutual_info = discrete_mutual_info(histogram_discretize(codes, num_bins), factors)
    return {"discrete_mig": mig_from_mutual_info(mutual_info, discrete_entropy(factors))}
