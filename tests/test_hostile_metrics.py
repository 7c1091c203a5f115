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


# ---- second probe: small codes warn, undefined scores raise, counts are bounded, complex / NaN refused ----
FVAE = {"num_train": 100, "num_eval": 50, "num_variance_estimate": 60}


@pytest.mark.parametrize("scale", [1e-2, 1e-4])
def test_small_perfect_codes_keep_the_reference_score_but_warn(scale):
    """D12: disentanglement_lib's absolute thresholds score a small perfect code 0; the value is kept, with a warning."""
    with pytest.warns(UserWarning, match=r"FactorVAE: every dimension's std is below prune_threshold 0.05.*standardise"):
        assert metrics.factor_vae(GRID, TABLE * scale, np.random.RandomState(0), **FVAE)["eval_accuracy"] == 0.0
    with pytest.warns(UserWarning, match=r"SAP: LinearSVC\(C=0.01\) predicts a single class from every code"):
        assert metrics.sap(GRID, TABLE * scale, np.random.RandomState(0), num_train=200, num_test=100)["SAP_score"] < 0.05


def test_tiny_codes_warn_in_dci():
    with pytest.warns(UserWarning, match="DCI: the gradient-boosted trees found no split on any code"):
        scores = metrics.dci(GRID, TABLE * 1e-8, np.random.RandomState(0), num_train=200, num_test=100)
    assert scores["disentanglement"] < 1e-6


def test_ordinary_codes_do_not_warn():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert metrics.factor_vae(GRID, TABLE, np.random.RandomState(0), **FVAE)["eval_accuracy"] == 1.0
        metrics.sap(GRID, TABLE, np.random.RandomState(0), num_train=200, num_test=100)


def test_scores_of_a_grid_without_variation_are_undefined():
    """D09: FactorVAE and SAP raise as DCI and MIG do, instead of scoring 0."""
    grid = FactorGrid([1, 1])
    table = np.zeros((1, 2))
    with pytest.raises(ValueError, match="FactorVAE is undefined: every factor takes a single value"):
        metrics.factor_vae(grid, table, np.random.RandomState(0), **FVAE)
    with pytest.raises(ValueError, match="SAP is undefined: every factor takes a single value"):
        metrics.sap(grid, table, np.random.RandomState(0), num_train=20, num_test=10)


@pytest.mark.parametrize("metric, kwargs, message", [
    (metrics.mig, {"num_train": 10**9}, r"asks for 1,000,000,000 sampled points, more than the 10,000,000"),
    (metrics.mig, {"num_train": 2.5}, r"num_points \(num_train / num_test\) must be an integer >= 1, got 2.5"),
    (metrics.sap, {"num_train": 50, "num_test": 10**8}, r"asks for 100,000,000 sampled points"),
    (metrics.dci, {"num_train": 50, "num_test": 10, "batch_size": 0}, r"batch_size must be an integer >= 1"),
    (metrics.factor_vae, {**FVAE, "num_train": 10**6}, r"num_train x batch_size asks for 64,000,000 sampled points"),
    (metrics.factor_vae, {**FVAE, "num_variance_estimate": 2.5}, r"num_variance_estimate must be an integer >= 2"),
])
def test_sample_counts_are_integers_and_bounded(metric, kwargs, message):
    """D17, D18: no unbounded drawing loop, no numpy error for a float count."""
    with pytest.raises(ValueError, match=message):
        metric(GRID, TABLE, np.random.RandomState(0), **kwargs)


def test_complex_codes_are_refused():
    """D07: the imaginary part is not silently dropped."""
    with pytest.raises(ValueError, match="must hold real numbers; got complex values"):
        metrics.mig(GRID, TABLE.astype(np.complex128), np.random.RandomState(0), num_train=50)
    with pytest.raises(ValueError, match="returned complex codes"):
        metrics.mig(GRID, lambda x: np.asarray(x, dtype=np.complex128), np.random.RandomState(0), num_train=50)


@pytest.mark.parametrize("which", range(4))
def test_frechet_distance_of_non_finite_statistics_is_refused(which):
    """D25: not nan."""
    stats = [np.zeros(3), np.eye(3), np.zeros(3), np.eye(3)]
    stats[which] = stats[which] + np.nan
    with pytest.raises(ValueError, match="holds NaN or infinite values"):
        metrics.frechet_distance(*stats)
