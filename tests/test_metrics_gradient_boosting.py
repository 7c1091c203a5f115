"""PresortedGradientBoostingClassifier against sklearn's GradientBoostingClassifier (same defaults)."""
import numpy as np
import pytest
from sklearn.ensemble import GradientBoostingClassifier

from encdiff_pipeline.data import FactorGrid
from encdiff_pipeline.metrics.dci import compute_dci
from encdiff_pipeline.metrics.gradient_boosting import PresortedGradientBoostingClassifier


def _sklearn_levels(tree, depth=3):
    """sklearn tree -> per level (feature, threshold) arrays in heap order, like ours (-1: no split).

    A node that is pure up to rounding (impurity < 1e-12) counts as a leaf: which of us splits it
    depends on the last bits of the impurity (vs float64 eps), and its children predict the same.
    """
    features = [np.full(2 ** level, -1) for level in range(depth)]
    pure = [np.zeros(2 ** level, dtype=bool) for level in range(depth)]
    thresholds = [np.zeros(2 ** level) for level in range(depth)]
    leaves = {}

    def walk(node, level, index):
        if level < depth and tree.impurity[node] < 1e-12:
            pure[level][index] = True
        if level == depth or tree.feature[node] < 0 or tree.impurity[node] < 1e-12:
            while tree.feature[node] >= 0:  # a pure node's leaves all hold the same value
                node = tree.children_left[node]
            # a leaf sends its rows to the left-most descendant of its heap slot
            leaves[index * 2 ** (depth - level)] = tree.value[node, 0, 0]
            return
        features[level][index] = tree.feature[node]
        thresholds[level][index] = tree.threshold[node]
        walk(tree.children_left[node], level + 1, 2 * index)
        walk(tree.children_right[node], level + 1, 2 * index + 1)

    walk(0, 0, 0)
    return features, thresholds, leaves, pure


def _assert_same_stages(ours, theirs, n_stages):
    for stage in range(n_stages):
        for k, estimator in enumerate(theirs.estimators_[stage]):
            features, thresholds, leaves, pure = _sklearn_levels(estimator.tree_)
            for level in range(3):
                ours_features = ours.features_[stage][level][k]
                ours_thresholds = ours.thresholds_[stage][level][k]
                # a pure node or one under a leaf: either of us may split it (rounding vs eps)
                skip = pure[level] | (np.repeat(features[level - 1] < 0, 2) if level > 0 else False)
                ours_features = np.where(skip, -1, ours_features)
                ours_thresholds = np.where(skip, 0.0, ours_thresholds)
                np.testing.assert_array_equal(ours_features, features[level])
                np.testing.assert_array_equal(ours_thresholds, thresholds[level])
            for slot, value in leaves.items():
                np.testing.assert_allclose(ours.values_[stage][k, slot], value, rtol=1e-9, atol=1e-12)


def test_binary_twenty_stages_identical_to_sklearn():
    rng = np.random.RandomState(0)
    x = rng.randn(300, 4)
    y = (x[:, 0] + 0.5 * x[:, 1] + 0.3 * rng.randn(300) > 0).astype(int)
    x_test = rng.randn(100, 4)
    theirs = GradientBoostingClassifier(n_estimators=20, random_state=0).fit(x, y)
    ours = PresortedGradientBoostingClassifier(n_estimators=20).fit(x, y)
    _assert_same_stages(ours, theirs, 20)
    np.testing.assert_allclose(ours.feature_importances_, theirs.feature_importances_, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(ours.decision_function(x_test), theirs.decision_function(x_test), atol=1e-9)
    np.testing.assert_array_equal(ours.predict(x_test), theirs.predict(x_test))


@pytest.mark.parametrize("kind", ["five_classes", "duplicates_and_constant"])
def test_first_stages_identical_to_sklearn(kind):
    rng = np.random.RandomState(1)
    if kind == "five_classes":
        x = rng.randn(500, 5)
        y = np.digitize(x[:, 0] + 0.5 * x[:, 2] + 0.3 * rng.randn(500), [-1, 0, 0.5, 1])
    else:  # repeated values (rounded codes), a constant column, three classes
        x = np.round(rng.randn(500, 4), 1)
        x[:, 3] = 2.0
        y = np.digitize(x[:, 1] + 0.5 * x[:, 0] + 0.3 * rng.randn(500), [-0.5, 0.5])
    stages = 3
    theirs = GradientBoostingClassifier(n_estimators=stages, random_state=0).fit(x, y)
    ours = PresortedGradientBoostingClassifier(n_estimators=stages).fit(x, y)
    _assert_same_stages(ours, theirs, stages)
    np.testing.assert_allclose(ours.feature_importances_, theirs.feature_importances_, rtol=1e-9, atol=1e-15)
    np.testing.assert_allclose(ours.decision_function(x), theirs.decision_function(x), atol=1e-9)
    if kind == "duplicates_and_constant":
        assert ours.feature_importances_[3] == 0.0


def test_default_hundred_stages_agree_up_to_ties():
    """Over 100 stages exact ties (tiny nodes) are broken differently: the model still agrees closely."""
    rng = np.random.RandomState(2)
    x = rng.randn(400, 4)
    y = np.digitize(x[:, 0] + 0.5 * x[:, 2] + 0.3 * rng.randn(400), [-1, 0, 0.5, 1])
    x_test = rng.randn(300, 4)
    y_test = np.digitize(x_test[:, 0] + 0.5 * x_test[:, 2], [-1, 0, 0.5, 1])
    theirs = GradientBoostingClassifier(random_state=0).fit(x, y)
    ours = PresortedGradientBoostingClassifier().fit(x, y)
    np.testing.assert_allclose(ours.feature_importances_, theirs.feature_importances_, atol=0.02)
    assert abs(ours.score(x_test, y_test) - theirs.score(x_test, y_test)) <= 0.03
    assert ours.score(x, y) == theirs.score(x, y) == 1.0


def test_bad_inputs():
    with pytest.raises(ValueError, match="two classes"):
        PresortedGradientBoostingClassifier().fit(np.zeros((5, 2)), np.ones(5))
    with pytest.raises(ValueError, match="NaN"):
        PresortedGradientBoostingClassifier().fit(np.array([[0.0], [np.nan]]), np.array([0, 1]))
    with pytest.raises(RuntimeError, match="fit"):
        PresortedGradientBoostingClassifier().predict(np.zeros((1, 1)))


def test_dci_backends_agree_on_a_grid():
    grid = FactorGrid([3, 4])
    table = grid.index_to_factors(np.arange(len(grid))).astype(float)
    table = np.concatenate([table + 0.05 * np.random.RandomState(0).randn(*table.shape),
                            np.random.RandomState(1).randn(len(grid), 1)], axis=1)
    ours = compute_dci(grid, table, np.random.RandomState(0), num_train=600, num_test=300, backend="numpy")
    theirs = compute_dci(grid, table, np.random.RandomState(0), num_train=600, num_test=300, backend="sklearn")
    # 12 distinct codes: many exactly tied splits, resolved at random by both (sklearn's own spread
    # over seeds here is 0.75-0.80 in completeness), so the tolerance is that spread.
    for key, value in theirs.items():
        assert ours[key] == pytest.approx(value, abs=0.05), key
    assert ours["disentanglement"] > 0.9
    with pytest.raises(ValueError, match="backend"):
        compute_dci(grid, table, np.random.RandomState(0), num_train=60, num_test=30, backend="xgboost")


def test_identical_columns_resolve_ties_like_sklearn():
    """Every split ties between identical columns: sklearn's feature draws (replayed) decide them."""
    rng = np.random.RandomState(0)
    column = rng.randn(300)
    x = np.stack([column, np.full(300, 1.5), column, column, column], axis=1)
    y = np.digitize(column + 0.5 * rng.randn(300), [-1, 0, 1])
    for seed in (0, 7):
        theirs = GradientBoostingClassifier(n_estimators=10, random_state=seed).fit(x, y)
        ours = PresortedGradientBoostingClassifier(n_estimators=10, random_state=seed).fit(x, y)
        for stage in range(10):
            for k, estimator in enumerate(theirs.estimators_[stage]):
                features = _sklearn_levels(estimator.tree_)[0]
                for level in range(3):
                    split = features[level] >= 0
                    np.testing.assert_array_equal(ours.features_[stage][level][k][split], features[level][split])
        # (a few thresholds differ: two positions of one column tie up to sklearn's summation order)
        np.testing.assert_allclose(ours.feature_importances_, theirs.feature_importances_, atol=1e-3)
        assert ours.feature_importances_[1] == 0.0
        assert len(set(np.round(ours.feature_importances_[[0, 2, 3, 4]], 6))) == 4  # spread, not all on one


@pytest.mark.parametrize("boundary", range(6))
def test_splits_between_adjacent_float32_values_like_sklearn(boundary):
    """Codes one float32 ulp apart (above 2, where an ulp exceeds sklearn's 1e-7 split tolerance):
    the midpoint threshold must be compared in float64, as sklearn does. Rounded to float32 it equals
    the upper value and sends those rows to the wrong child (this crashed DCI in a training run)."""
    rng = np.random.RandomState(0)
    values = [np.float32(3.5)]
    for _ in range(7):
        values.append(np.nextafter(values[-1], np.float32(4)))
    values = np.array(values, dtype=np.float32)
    x = np.stack([values[rng.randint(8, size=300)], rng.randn(300).astype(np.float32)], axis=1)
    y = (x[:, 0] > values[boundary]).astype(int) + (x[:, 0] > values[boundary + 1]).astype(int)
    ours = PresortedGradientBoostingClassifier(n_estimators=5, random_state=0).fit(x, y)
    reference = GradientBoostingClassifier(n_estimators=5, random_state=0).fit(x, y)
    np.testing.assert_allclose(ours.feature_importances_, reference.feature_importances_, rtol=1e-9, atol=1e-12)
    np.testing.assert_array_equal(ours.predict(x), reference.predict(x))
