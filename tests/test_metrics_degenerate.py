"""Degenerate inputs give defined results or clear errors, never a silent NaN."""
import math

import numpy as np
import pytest

from encdiff_pipeline import metrics
from encdiff_pipeline.data import FactorDataset, FactorGrid
from encdiff_pipeline.metrics.modularity_explicitness import modularity
from encdiff_pipeline.metrics.mutual_information import discrete_entropy, discrete_mutual_info, histogram_discretize
from encdiff_pipeline.metrics.sampling import sample_codes_and_factors

SMALL = {
    "factor_vae": dict(num_train=200, num_eval=100, num_variance_estimate=500),
    "dci": dict(num_train=200, num_test=100),
    "mig": dict(num_train=500),
    "sap": dict(num_train=300, num_test=100),
    "modularity": dict(num_train=300, num_test=100),
}


def _all_finite(result):
    return all(math.isfinite(v) for v in result.values() if isinstance(v, (int, float)))


def test_constant_representation_scores_zero():
    grid = FactorGrid([3, 4])
    table = np.ones((len(grid), 3))
    results = {name: fn(grid, table, np.random.RandomState(0), **SMALL[name]) for name, fn in metrics.METRICS.items()}
    assert all(_all_finite(r) for r in results.values())
    assert results["factor_vae"] == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0, "num_kept_dims": 0}
    assert results["mig"]["discrete_mig"] == 0.0
    assert results["sap"]["SAP_score"] == 0.0
    assert results["modularity"]["modularity_score"] == 0.0
    assert results["modularity"]["explicitness_score_test"] == pytest.approx(0.5)
    assert results["dci"]["disentanglement"] == pytest.approx(0.0, abs=1e-9)


def test_one_factor_is_defined():
    grid = FactorGrid([6])
    table = np.stack([np.arange(6.0), np.zeros(6)], axis=1)
    results = {name: fn(grid, table, np.random.RandomState(0), **SMALL[name]) for name, fn in metrics.METRICS.items()}
    assert all(_all_finite(r) for r in results.values())
    assert results["factor_vae"]["eval_accuracy"] == 1.0  # a single factor: every vote is right
    assert results["dci"]["disentanglement"] == 1.0
    assert results["modularity"]["modularity_score"] == 0.5  # informative code 1, constant code 0
    assert results["mig"]["discrete_mig"] == pytest.approx(1.0)


def test_modularity_single_factor_matrix():
    assert modularity(np.array([[0.5], [0.0]])) == 0.5  # informative code 1, empty code 0


def test_nan_in_table_raises():
    grid = FactorGrid([3, 4])
    table = np.random.RandomState(0).randn(len(grid), 2)
    table[5, 1] = np.nan
    for name, fn in metrics.METRICS.items():
        with pytest.raises(ValueError, match="NaN"):
            fn(grid, table, np.random.RandomState(0), **SMALL[name])


def test_nan_from_callable_raises():
    grid = FactorGrid([3, 4])
    with pytest.raises(ValueError, match="NaN"):
        metrics.mig(grid, lambda idx: np.full((len(idx), 2), np.nan), np.random.RandomState(0), num_train=100)


def test_wrong_table_shape_raises():
    with pytest.raises(ValueError, match=r"\(len\(dataset\), N\)"):
        metrics.mig(FactorGrid([3, 4]), np.zeros((11, 2)), np.random.RandomState(0))


def test_one_dim_gap_metrics_raise():
    grid = FactorGrid([3, 4])
    table = np.arange(len(grid), dtype=float)[:, None]
    with pytest.raises(ValueError, match="at least 2 dims"):
        metrics.mig(grid, table, np.random.RandomState(0), num_train=200)
    with pytest.raises(ValueError, match="at least 2 dims"):
        metrics.sap(grid, table, np.random.RandomState(0), num_train=200, num_test=100)


def test_mutual_information_matches_sklearn():
    from sklearn.metrics import mutual_info_score

    rng = np.random.RandomState(0)
    codes = histogram_discretize(rng.randn(500, 3), 20)
    factors = rng.randint(5, size=(500, 2))
    m = discrete_mutual_info(codes, factors)
    for i in range(3):
        for j in range(2):
            assert m[i, j] == pytest.approx(mutual_info_score(factors[:, j], codes[:, i]), abs=1e-12)
    h = discrete_entropy(factors)
    assert h[0] == pytest.approx(mutual_info_score(factors[:, 0], factors[:, 0]), abs=1e-12)


def test_histogram_discretize_matches_numpy_histogram():
    x = np.random.RandomState(1).randn(300, 2)
    d = histogram_discretize(x, 20)
    for j in range(2):
        np.testing.assert_array_equal(d[:, j], np.digitize(x[:, j], np.histogram(x[:, j], 20)[1][:-1]))


class _RandomColour(FactorDataset):
    """Observations draw from the random state (as dSprites' constant colour does in the reference)."""

    factor_names, factor_sizes = ["a", "b"], [3, 4]

    def sample_observations_from_factors(self, factors, random_state):
        random_state.randint(7, size=len(factors))
        return self.factors_to_index(factors)


def test_callable_keeps_the_reference_draw_order():
    data = _RandomColour()
    rs = np.random.RandomState(0)
    codes, factors = sample_codes_and_factors(data, lambda idx: np.asarray(idx, float)[:, None], 40, rs, batch_size=16)
    expected_rs = np.random.RandomState(0)
    expected = []
    for num in (16, 16, 8):
        f = data.sample_factors(num, expected_rs)
        expected_rs.randint(7, size=num)
        expected.append(f)
    np.testing.assert_array_equal(factors, np.concatenate(expected))
    np.testing.assert_array_equal(codes[:, 0], data.factors_to_index(factors))
    assert rs.randint(1000) == expected_rs.randint(1000)
