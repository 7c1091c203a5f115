"""SAP score (Kumar et al. 2018, Separated Attribute Predictability), disentanglement_lib's protocol.

Score matrix (codes x factors): with discrete factors (the published protocol,
`continuous_factors=False`) the test accuracy of a `LinearSVC(C=0.01, class_weight="balanced")`
predicting the factor from one code; with continuous factors the squared correlation. SAP = mean
over factors of the gap between the two best codes. The per-pair fits run in parallel threads.

Example:
    >>> import numpy as np
    >>> from encdiff_pipeline.data import FactorGrid
    >>> from encdiff_pipeline.metrics import sap
    >>> grid = FactorGrid([2, 2])
    >>> table = grid.index_to_factors(np.arange(len(grid))).astype(float)
    >>> round(sap(grid, table, np.random.RandomState(0), num_train=400, num_test=200)["SAP_score"], 3)  # 1 - chance
    0.465
"""
from __future__ import annotations

import os
from typing import Optional

import numpy as np
from joblib import Parallel, delayed
from sklearn.svm import LinearSVC

from .sampling import Representation, check_some_factor_varies, sample_codes_and_factors, warn_small_codes


def _svc_accuracy(code_train, y_train, code_test, y_test) -> tuple[float, bool]:
    """Test accuracy of the one-code SVM, and whether it predicted a single class for every varying code
    (its C=0.01 regularisation flattens small codes)."""
    if np.unique(y_train).size < 2:
        return 0.0, False  # nothing to separate: a constant factor is predicted by no code better than another
    classifier = LinearSVC(C=0.01, class_weight="balanced", random_state=0)  # seeded: reproducible reports
    classifier.fit(code_train[:, None], y_train)
    predictions = classifier.predict(code_test[:, None])
    return float(np.mean(predictions == y_test)), bool(np.unique(predictions).size < 2 and np.ptp(code_train) > 0)


def _squared_correlation(code: np.ndarray, y: np.ndarray) -> float:
    cov = np.cov(code, y, ddof=1)
    if cov[0, 0] > 1e-12 and cov[1, 1] > 0:
        return float(cov[0, 1] ** 2 / (cov[0, 0] * cov[1, 1]))
    return 0.0


def compute_score_matrix(
    codes: np.ndarray, factors: np.ndarray, codes_test: np.ndarray, factors_test: np.ndarray,
    continuous_factors: bool = False, n_jobs: Optional[int] = None,
) -> np.ndarray:
    """SAP score matrix (codes, factors); rows of the inputs are points."""
    num_codes, num_factors = codes.shape[1], factors.shape[1]
    if continuous_factors:
        return np.array([[_squared_correlation(codes[:, i], factors[:, j]) for j in range(num_factors)]
                         for i in range(num_codes)])
    pairs = [(i, j) for i in range(num_codes) for j in range(num_factors)]
    results = Parallel(n_jobs=n_jobs or min(len(pairs), os.cpu_count() or 1), prefer="threads")(
        delayed(_svc_accuracy)(codes[:, i], factors[:, j], codes_test[:, i], factors_test[:, j]) for i, j in pairs
    )
    flat = [flat for _, flat in results]
    if flat and all(flat):
        warn_small_codes("SAP", codes, "LinearSVC(C=0.01) predicts a single class from every code (its regularisation "
                         "flattens small codes), so every score is chance and SAP is near 0")
    return np.asarray([score for score, _ in results], dtype=np.float64).reshape(num_codes, num_factors)


def sap_from_score_matrix(score_matrix: np.ndarray) -> float:
    """Mean over factors of the gap between the two best codes."""
    score_matrix = np.asarray(score_matrix, dtype=np.float64)
    if score_matrix.shape[0] < 2:
        raise ValueError("SAP needs a representation with at least 2 dims (it is a gap between the top two)")
    top = np.sort(score_matrix, axis=0)
    return float(np.mean(top[-1] - top[-2]))


def compute_sap(
    dataset,
    representation_function: Representation,
    random_state: np.random.RandomState,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    continuous_factors: bool = False,
    n_jobs: Optional[int] = None,
) -> dict:
    """SAP score of a representation on a factor dataset.

    Args:
        dataset: a `FactorDataset`.
        representation_function: callable observations -> codes (num, N), or a table (len(dataset), N).
        random_state: `np.random.RandomState`, consumed like disentanglement_lib.
        num_train, num_test, batch_size, continuous_factors: the published protocol (10,000, 5,000, 16, False).
        n_jobs: threads fitting the per-pair classifiers (default: one per core).

    Returns:
        `SAP_score`.
    """
    codes, factors = sample_codes_and_factors(dataset, representation_function, num_train, random_state, batch_size)
    codes_test, factors_test = sample_codes_and_factors(dataset, representation_function, num_test, random_state, batch_size)
    check_some_factor_varies("SAP", factors)
    matrix = compute_score_matrix(codes, factors, codes_test, factors_test, continuous_factors, n_jobs)
    return {"SAP_score": sap_from_score_matrix(matrix)}
