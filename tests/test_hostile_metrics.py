"""Hostile and careless metric arguments: a clear ValueError, never NaN or a hang."""
import numpy as np
import pytest

from encdiff_pipeline import metrics
from encdiff_pipeline.data import FactorGrid

GRID = FactorGrid([4, 5, 3])
TABLE = GRID.index_to_factors(np.arange(len(GRID))).astype(float) + 0.01 * np.random.RandomState(0).randn(len(GRID), 3)


@pytest.mark.parametrize("kwargs, name", [
    ({"num_train": 0}, "num_train"), ({"num_eval": 0}, "num_eval"), ({"num_train": -5}, "num_train"),
    ({"num_train": 10.5}, "num_train"),
])
def test_factor_vae_counts_must_be_positive(kwargs, name):
    arguments = {"num_train": 50, "num_eval": 20, "num_variance_estimate": 50, **kwargs}
    with pytest.raises(ValueError, match=f"{name} must be an integer >= 1"):
        metrics.factor_vae(GRID, TABLE, np.random.RandomState(0), **arguments)


@pytest.mark.parametrize("metric, kwargs", [
    (metrics.sap, {"num_train": 50, "num_test": 20}),
    (metrics.factor_vae, {"num_train": 50, "num_eval": 20, "num_variance_estimate": 50}),
])
def test_extreme_codes_are_refused_not_hung(metric, kwargs):
    table = TABLE.copy()
    table[0, 0], table[1, 0] = 1e308, -1e308
    with pytest.raises(ValueError, match="magnitude.*rescale the codes"):
        metric(GRID, table, np.random.RandomState(0), **kwargs)


@pytest.mark.parametrize("table, kwargs, message", [
    (np.array([["a"] * 3] * len(GRID)), {}, "must hold numbers"),
    (TABLE, {"random_state": 0}, "random_state must be a np.random.RandomState"),
    (TABLE, {"num_bins": 0}, "num_bins must be an integer >= 1"),
])
def test_mig_argument_errors_are_named(table, kwargs, message):
    arguments = {"random_state": np.random.RandomState(0), "num_train": 50, **kwargs}
    with pytest.raises(ValueError, match=message):
        metrics.mig(GRID, table, **arguments)


def test_factor_vae_random_state_must_be_a_random_state():
    with pytest.raises(ValueError, match="random_state must be a np.random.RandomState"):
        metrics.factor_vae(GRID, TABLE, 0, num_train=5, num_eval=5, num_variance_estimate=10)
