"""DCI scoring functions on importance matrices with known answers (docs/design.md §3)."""
import numpy as np
import pytest

from encdiff_pipeline.data import FactorGrid
from encdiff_pipeline.metrics.dci import compute_dci, completeness, disentanglement

LN2_LN10 = np.log(2) / np.log(10)


def test_diagonal():
    r = np.diag(5.0 * np.ones(5))
    np.testing.assert_allclose(disentanglement(r), 1.0)
    np.testing.assert_allclose(completeness(r), 1.0)


def test_stacked_vertically_redundant_codes():
    r = np.vstack([np.diag(5.0 * np.ones(5))] * 2)  # 10 codes, 5 factors
    np.testing.assert_allclose(disentanglement(r), 1.0)
    np.testing.assert_allclose(completeness(r), 1.0 - LN2_LN10)


def test_stacked_horizontally_one_code_two_factors():
    r = np.hstack([np.diag(5.0 * np.ones(5))] * 2)  # 5 codes, 10 factors
    np.testing.assert_allclose(disentanglement(r), 1.0 - LN2_LN10)
    np.testing.assert_allclose(completeness(r), 1.0)


def test_ten_factors_stacked_vertically_uses_base_num_codes():
    r = np.vstack([np.eye(10)] * 2)  # 20 codes: completeness entropy in base 20
    np.testing.assert_allclose(completeness(r), 1.0 - np.log(2) / np.log(20))


def test_empty_codes_and_zero_matrix():
    r = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]])
    np.testing.assert_allclose(disentanglement(r), 1.0)
    np.testing.assert_allclose(completeness(r), 1.0)
    zero = np.zeros((10, 10))
    np.testing.assert_allclose(disentanglement(zero), 0.0, atol=1e-12)
    np.testing.assert_allclose(completeness(zero), 0.0, atol=1e-7)


def test_one_factor_and_one_code_are_defined():
    assert disentanglement(np.array([[0.3], [0.7]])) == 1.0
    assert completeness(np.array([[0.3, 0.7]])) == 1.0
    assert np.isfinite(completeness(np.array([[0.3], [0.7]])))


def test_bad_matrix_raises():
    with pytest.raises(ValueError, match="non-negative"):
        disentanglement(np.array([[np.nan, 1.0], [0.0, 1.0]]))


def test_compute_dci_small_protocol_is_reproducible():
    grid = FactorGrid([3, 4])
    table = grid.index_to_factors(np.arange(len(grid))).astype(float)
    a = compute_dci(grid, table, np.random.RandomState(0), num_train=300, num_test=100)
    b = compute_dci(grid, table, np.random.RandomState(0), num_train=300, num_test=100)
    assert a == b
    assert a["disentanglement"] > 0.95 and a["completeness"] > 0.95
    assert a["informativeness_test"] == 1.0
