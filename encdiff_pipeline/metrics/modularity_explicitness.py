"""Modularity and explicitness (Ridgeway & Mozer 2018), disentanglement_lib's protocol.

Modularity: from the mutual information (20 histogram bins) of every code with every factor, each
code's deviation from an ideal single-factor template, 1 - sum_{j != max} MI^2 / (MI_max^2 (K-1)),
averaged over codes (a code with no information scores 0). Explicitness: per factor a default
`LogisticRegression` on the standardised codes, macro ROC-AUC of its one-vs-rest probabilities
(labels binarised with `MultiLabelBinarizer`), averaged over factors.

Example:
    >>> import numpy as np
    >>> from encdiff_pipeline.data import FactorGrid
    >>> from encdiff_pipeline.metrics import modularity_explicitness
    >>> grid = FactorGrid([3, 4])
    >>> table = grid.index_to_factors(np.arange(len(grid))).astype(float)
    >>> scores = modularity_explicitness(grid, table, np.random.RandomState(0), num_train=600, num_test=300)
    >>> round(scores["modularity_score"], 3)
    1.0
"""
from __future__ import annotations

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.preprocessing import MultiLabelBinarizer

from .mutual_information import discrete_mutual_info, histogram_discretize
from .sampling import Representation, sample_codes_and_factors


def modularity(mutual_info: np.ndarray) -> float:
    """Modularity score from a mutual-information matrix (codes, factors).

    With a single factor every informative code is modular by definition (score 1; the reference
    divides 0 by 0 there).
    """
    squared = np.square(np.asarray(mutual_info, dtype=np.float64))
    max_squared = squared.max(axis=1)
    num_factors = squared.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        delta = (squared.sum(axis=1) - max_squared) / (max_squared * (num_factors - 1.0))
    if num_factors == 1:
        delta = np.zeros_like(max_squared)
    score = 1.0 - delta
    score[max_squared == 0.0] = 0.0
    return float(np.mean(score))


def _standardise(train: np.ndarray, test: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    std = np.where(std > 0, std, 1.0)  # a constant code stays constant (0) instead of 0/0
    return (train - mean) / std, (test - mean) / std


def _macro_auc(y: np.ndarray, probabilities: np.ndarray) -> float:
    labels = MultiLabelBinarizer().fit_transform(y[:, None])
    if labels.shape[1] < 2:
        raise ValueError("explicitness needs every factor to take at least two values in each sample")
    return float(roc_auc_score(labels, probabilities))


def explicitness_per_factor(codes_train, y_train, codes_test, y_test) -> tuple[float, float]:
    """Train and test ROC-AUC of a logistic regression predicting one factor from all codes."""
    if np.unique(y_train).size < 2:
        raise ValueError("explicitness needs every factor to take at least two values in the training sample")
    classifier = LogisticRegression().fit(codes_train, y_train)
    return (
        _macro_auc(y_train, classifier.predict_proba(codes_train)),
        _macro_auc(y_test, classifier.predict_proba(codes_test)),
    )


def compute_modularity_explicitness(
    dataset,
    representation_function: Representation,
    random_state: np.random.RandomState,
    num_train: int = 10000,
    num_test: int = 5000,
    batch_size: int = 16,
    num_bins: int = 20,
) -> dict:
    """Modularity and explicitness of a representation on a factor dataset.

    Args:
        dataset: a `FactorDataset`.
        representation_function: callable observations -> codes (num, N), or a table (len(dataset), N).
        random_state: `np.random.RandomState`, consumed like disentanglement_lib.
        num_train, num_test, batch_size, num_bins: the published protocol (10,000, 5,000, 16, 20).

    Returns:
        `modularity_score`, `explicitness_score_train`, `explicitness_score_test`.
    """
    codes, factors = sample_codes_and_factors(dataset, representation_function, num_train, random_state, batch_size)
    codes_test, factors_test = sample_codes_and_factors(dataset, representation_function, num_test, random_state, batch_size)
    mutual_info = discrete_mutual_info(histogram_discretize(codes, num_bins), factors)
    train_norm, test_norm = _standardise(codes, codes_test)
    explicitness = np.array([
        explicitness_per_factor(train_norm, factors[:, j], test_norm, factors_test[:, j])
        for j in range(factors.shape[1])
    ])
    return {
        "modularity_score": modularity(mutual_info),
        "explicitness_score_train": float(np.mean(explicitness[:, 0])),
        "explicitness_score_test": float(np.mean(explicitness[:, 1])),
    }
