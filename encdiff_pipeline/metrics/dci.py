"""DCI: disentanglement, completeness, informativeness (Eastwood & Williams 2018), disentanglement_lib's protocol.

One default sklearn `GradientBoostingClassifier` per factor on `num_train` codes; the importance
matrix R (codes x factors) is |feature_importances_|; informativeness is the mean accuracy on the
train / test points. Disentanglement = sum_i rho_i (1 - H_K(R_i.)), completeness likewise per
factor with base = number of codes, 1e-11 added inside the entropies, an all-zero R weighting
uniformly. The factors are fit in parallel threads (`n_jobs`); each fit is seeded from
`random_state` after sampling, so a report is reproducible (disentanglement_lib leaves the trees
unseeded, which moves its scores by ~0.001 between runs).

The classifier is, by default (`backend="numpy"`), `gradient_boosting.PresortedGradientBoostingClassifier`:
the same model as sklearn's default one (same splits, leaves, importances and, for exactly tied
features, the same seeded tie-breaking), several times faster; ties that only sklearn's summation
order decides can go the other way, which moves DCI by ~0.001 (within the 0.01 of the fixtures).
`backend="sklearn"` fits sklearn's `GradientBoostingClassifier` itself, as disentanglement_lib.

Example:
    >>> import numpy as np
    >>> disentanglement(np.eye(5)), completeness(np.eye(5))  # doctest: +SKIP
    (1.0, 1.0)
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
from joblib import Parallel, delayed
from sklearn.ensemble import GradientBoostingClassifier

from .gradient_boosting import PresortedGradientBoostingClassifier
from .sampling import Representation, sample_codes_and_factors, warn_small_codes

# "numpy": our vectorised re-implementation of sklearn's default classifier (gradient_boosting.py);
# "sklearn": sklearn.ensemble.GradientBoostingClassifier, what disentanglement_lib runs.
BACKENDS = ("numpy", "sklearn")
DEFAULT_BACKEND = "numpy"


def _entropy(p: np.ndarray, base: int, axis: int) -> np.ndarray:
    """Entropy of the (unnormalised) distributions `p` along `axis`, in the given base."""
    p = p / p.sum(axis=axis, keepdims=True)
    return -np.sum(p * np.log(p), axis=axis) / np.log(base)


def disentanglement_per_code(importance_matrix: np.ndarray) -> np.ndarray:
    """1 - H_K(R_i.) for every code i; R is (codes, factors)."""
    r = np.asarray(importance_matrix, dtype=np.float64)
    return 1.0 - _entropy(r + 1e-11, base=r.shape[1], axis=1)


def completeness_per_factor(importance_matrix: np.ndarray) -> np.ndarray:
    """1 - H_N(R_.j) for every factor j; R is (codes, factors)."""
    r = np.asarray(importance_matrix, dtype=np.float64)
    return 1.0 - _entropy(r + 1e-11, base=r.shape[0], axis=0)


def _weights(importance_matrix: np.ndarray, axis: int) -> np.ndarray:
    r = np.asarray(importance_matrix, dtype=np.float64)
    if r.sum() == 0.0:
        r = np.ones_like(r)
    return r.sum(axis=axis) / r.sum()


def _check_matrix(importance_matrix) -> np.ndarray:
    r = np.asarray(importance_matrix, dtype=np.float64)
    if r.ndim != 2 or min(r.shape) < 1:
        raise ValueError(f"the importance matrix must be 2-D (codes, factors), got shape {r.shape}")
    if not np.isfinite(r).all() or (r < 0).any():
        raise ValueError("the importance matrix must be finite and non-negative")
    return r


def disentanglement(importance_matrix: np.ndarray) -> float:
    """Disentanglement of an importance matrix (codes, factors). One factor: every code is 1 by definition."""
    r = _check_matrix(importance_matrix)
    if r.shape[1] == 1:
        return 1.0 if r.sum() > 0 else 0.0
    return float(np.sum(disentanglement_per_code(r) * _weights(r, axis=1)))


def completeness(importance_matrix: np.ndarray) -> float:
    """Completeness of an importance matrix (codes, factors). One code: every factor is 1 by definition."""
    r = _check_matrix(importance_matrix)
    if r.shape[0] == 1:
        return 1.0 if r.sum() > 0 else 0.0
    return float(np.sum(completeness_per_factor(r) * _weights(r, axis=0)))


def _fit_factor(x_train, y_train, x_test, y_test, seed: int, backend: str):
    if np.unique(y_train).size < 2:
        raise ValueError("DCI needs every factor to take at least two values in the training sample")
    if backend == "sklearn":
        model = GradientBoostingClassifier(random_state=seed)
    else:
        model = PresortedGradientBoostingClassifier(random_state=seed)
    model.fit(x_train, y_train)
    return (
        np.abs(model.feature_importances_),
        float(np.mean(model.predict(x_train) == y_train)),
        float(np.mean(model.predict(x_test) == y_test)),
    )


def importance_per_factor(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    random_state: np.random.RandomState, n_jobs: Optional[int] = None, backend: Optional[str] = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Importance matrix (codes, factors), and each factor's train and test accuracy. Rows are points."""
    backend = DEFAULT_BACKEND if backend is None else backend
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    num_factors = y_train.shape[1]
    seeds = random_state.randint(np.iinfo(np.int32).max, size=num_factors)
    if n_jobs is None:
        n_jobs = min(num_factors, os.cpu_count() or 1)
    results = Parallel(n_jobs=n_jobs, prefer="threads")(
        delayed(_fit_factor)(x_train, y_train[:, j], x_test, y_test[:, j], int(seeds[j]), backend)
        for j in range(num_factors)
    )
    importance = np.stack([r[0] for r in results], axis=1)
    return importance, np.array([r[1] for r in results]), np.array([r[2] for r in results])


def compute_importance_gbt(
    x_train: np.ndarray, y_train: np.ndarray, x_test: np.ndarray, y_test: np.ndarray,
    random_state: np.random.RandomState, n_jobs: Optional[int] = None, backend: Optional[str] = None,
) -> tuple[np.ndarray, float, float]:
    """Importance matrix (codes, factors), mean train accuracy, mean test accuracy. Rows are points."""
    importance, train_acc, test_acc = importance_per_factor(x_train, y_train, x_test, y_test, random_state, n_jobs, backend)
    return importance, float(np.mean(train_acc)), float(np.mean(test_acc))


def compute_dci(
    dataset,
    representation_function: Representation,
    random_state: np.random.RandomState,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    n_jobs: Optional[int] = None,
    backend: Optional[str] = None,
) -> dict:
    """DCI scores of a representation on a factor dataset.

    Args:
        dataset: a `FactorDataset`.
        representation_function: callable observations -> codes (num, N), or a table (len(dataset), N).
        random_state: `np.random.RandomState`, consumed like disentanglement_lib.
        num_train, num_test, batch_size: the published protocol (10,000, 5,000, 16).
        n_jobs: threads fitting the per-factor classifiers (default: one per core, at most one per factor).
        backend: "numpy" (default, `DEFAULT_BACKEND`: gradient_boosting.py, same model, several times
            faster) or "sklearn" (`GradientBoostingClassifier`, as disentanglement_lib).

    Returns:
        `informativeness_train`, `informativeness_test`, `disentanglement`, `completeness`.
    """
    x_train, y_train = sample_codes_and_factors(dataset, representation_function, num_train, random_state, batch_size)
    x_test, y_test = sample_codes_and_factors(dataset, representation_function, num_test, random_state, batch_size)
    importance, train_acc, test_acc = compute_importance_gbt(
        x_train, y_train, x_test, y_test, random_state, n_jobs, backend)
    if not importance.any() and np.ptp(x_train, axis=0).max() > 0:
        warn_small_codes("DCI", x_train, "the gradient-boosted trees found no split on any code, so disentanglement and "
                         "completeness are 0")
    return {
        "informativeness_train": train_acc,
        "informativeness_test": test_acc,
        "disentanglement": disentanglement(importance),
        "completeness": completeness(importance),
    }
