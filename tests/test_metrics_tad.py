"""TAD on synthetic attributes with known answers."""
import numpy as np
import pytest

from encdiff_pipeline.metrics import compute_tad
from encdiff_pipeline.metrics.tad import entropy_reduction_ratio, thresholded_auroc


def _design():
    """1,000 points, attributes a0, a1 in a balanced 2x2 design (a1 independent of a0 exactly)."""
    a0 = np.repeat([0, 1], 500)
    a1 = np.tile(np.repeat([0, 1], 250), 2)
    return np.stack([a0, a1], axis=1)


@pytest.mark.parametrize("variant", ["thresholded", "exact"])
def test_perfect_detectors(variant):
    attrs = _design()
    codes = np.stack([attrs[:, 0], attrs[:, 1], np.zeros(1000)], axis=1).astype(float)
    result = compute_tad(codes, attrs, attribute_names=["a0", "a1"], variant=variant)
    assert result["tad"] == pytest.approx(1.0)  # (1 - 0.5) for each attribute
    assert result["num_captured"] == 2 and result["captured"] == ["a0", "a1"]
    assert result["best_dim"] == {"a0": 0, "a1": 1}


@pytest.mark.parametrize("variant", ["thresholded", "exact"])
def test_negative_sign_counts(variant):
    attrs = _design()
    noise = 0.05 * np.random.RandomState(0).randn(1000)
    codes = np.stack([-(attrs[:, 0] + noise), attrs[:, 1]], axis=1)
    assert compute_tad(codes, attrs, variant=variant)["best_auroc"]["attr_0"] > 0.99


def test_redundant_attribute_is_not_captured():
    attrs = _design()
    attrs = np.concatenate([attrs, attrs[:, :1]], axis=1)  # a2 = a0: each fully explains the other
    codes = np.stack([attrs[:, 0], attrs[:, 1]], axis=1).astype(float)
    ratio = entropy_reduction_ratio(attrs)
    np.testing.assert_allclose(ratio, [1.0, 0.0, 1.0], atol=1e-12)
    result = compute_tad(codes, attrs)
    assert result["captured"] == ["attr_1"] and result["tad"] == pytest.approx(0.5)


def test_small_range_dims_count_half_in_the_thresholded_variant():
    attrs = _design()
    codes = np.stack([0.1 * attrs[:, 0], attrs[:, 1]], axis=1).astype(float)  # range 0.1 <= 0.2
    assert compute_tad(codes, attrs)["best_auroc"]["attr_0"] == 0.5
    assert compute_tad(codes, attrs, variant="exact")["best_auroc"]["attr_0"] == pytest.approx(1.0)


def test_weak_detector_below_threshold_is_not_captured():
    rng = np.random.RandomState(0)
    attrs = _design()
    codes = np.stack([attrs[:, 0] + 3.0 * rng.randn(1000), attrs[:, 1]], axis=1)
    result = compute_tad(codes, attrs, variant="exact")
    assert result["best_auroc"]["attr_0"] < 0.75
    assert result["captured"] == ["attr_1"]


def test_thresholded_auroc_close_to_exact_on_continuous_codes():
    from sklearn.metrics import roc_auc_score

    rng = np.random.RandomState(0)
    y = rng.randint(2, size=2000)
    z = y + rng.randn(2000)
    assert thresholded_auroc(z, y) == pytest.approx(roc_auc_score(y, z), abs=0.01)


def test_bad_inputs_raise():
    attrs = _design()
    codes = np.stack([attrs[:, 0], attrs[:, 1]], axis=1).astype(float)
    with pytest.raises(ValueError, match="binary"):
        compute_tad(codes, attrs * 3)
    codes[3, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        compute_tad(codes, attrs)
    assert compute_tad(np.stack([attrs[:, 0], attrs[:, 1]], 1).astype(float), 2 * attrs - 1)["tad"] == pytest.approx(1.0)
