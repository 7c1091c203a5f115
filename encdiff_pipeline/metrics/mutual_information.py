"""Histogram discretisation and discrete mutual information, shared by MIG and modularity.

Same values as disentanglement_lib (`_histogram_discretize`, and `mutual_info_score` per pair in
nats), computed from contingency tables with `np.bincount` instead of one sklearn call per pair.

Example:
    >>> import numpy as np
    >>> x = np.array([[0.0], [0.1], [0.9], [1.0]])
    >>> histogram_discretize(x, num_bins=2).ravel().tolist()
    [1, 1, 2, 2]
    >>> round(float(discrete_mutual_info(np.array([[0], [0], [1], [1]]), np.array([[0], [0], [1], [1]]))[0, 0]), 4)
    0.6931
"""
from __future__ import annotations

import numpy as np


def histogram_discretize(codes: np.ndarray, num_bins: int = 20) -> np.ndarray:
    """Discretise every column of `codes` (num, N) into `num_bins` equal-width bins, labels 1..num_bins."""
    codes = np.asarray(codes, dtype=np.float64)
    out = np.empty(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        edges = np.histogram_bin_edges(codes[:, j], bins=num_bins)
        out[:, j] = np.digitize(codes[:, j], edges[:-1])
    return out


def _dense_labels(labels: np.ndarray) -> tuple[np.ndarray, int]:
    uniques, inverse = np.unique(labels, return_inverse=True)
    return inverse.ravel(), len(uniques)


def _mutual_info(a: np.ndarray, num_a: int, b: np.ndarray, num_b: int) -> float:
    n = a.shape[0]
    if num_a == 1 or num_b == 1:
        return 0.0
    joint = np.bincount(a * num_b + b, minlength=num_a * num_b).reshape(num_a, num_b)
    count_a = joint.sum(axis=1)
    count_b = joint.sum(axis=0)
    ia, ib = np.nonzero(joint)
    n_ab = joint[ia, ib].astype(np.float64)
    outer = count_a[ia].astype(np.float64) * count_b[ib]
    terms = (n_ab / n) * (np.log(n_ab) + np.log(n) - np.log(outer))
    terms[np.abs(terms) < np.finfo(np.float64).eps] = 0.0
    return max(float(terms.sum()), 0.0)


def discrete_mutual_info(codes: np.ndarray, factors: np.ndarray) -> np.ndarray:
    """Mutual information (nats) of every discrete code column with every factor column, (N, K)."""
    codes = np.asarray(codes)
    factors = np.asarray(factors)
    if codes.shape[0] != factors.shape[0]:
        raise ValueError(f"codes and factors must have the same rows, got {codes.shape} and {factors.shape}")
    dense_codes = [_dense_labels(codes[:, i]) for i in range(codes.shape[1])]
    dense_factors = [_dense_labels(factors[:, j]) for j in range(factors.shape[1])]
    m = np.zeros((codes.shape[1], factors.shape[1]))
    for i, (a, num_a) in enumerate(dense_codes):
        for j, (b, num_b) in enumerate(dense_factors):
            m[i, j] = _mutual_info(a, num_a, b, num_b)
    return m


def discrete_entropy(factors: np.ndarray) -> np.ndarray:
    """Entropy (nats) of every discrete column of `factors` (num, K)."""
    factors = np.asarray(factors)
    h = np.zeros(factors.shape[1])
    for j in range(factors.shape[1]):
        labels, num = _dense_labels(factors[:, j])
        h[j] = _mutual_info(labels, num, labels, num)
    return h
