"""Grid arithmetic and disentanglement_lib sampling order of the factor datasets."""
import json
import os

import numpy as np
import pytest

from encdiff_pipeline.data import SHAPES3D_FACTOR_SIZES, SHAPES3D_FACTOR_VALUES, FactorGrid, load_factor_dataset

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "disentanglement_lib")


def test_index_factor_round_trip_over_whole_shapes3d_grid():
    data = load_factor_dataset("procedural-shapes3d")
    assert data.factor_sizes == [10, 10, 10, 8, 4, 15] and len(data) == 480_000
    index = np.arange(480_000)
    factors = data.index_to_factors(index)
    # independent: numpy's row-major (C order) unravel = mixed radix, last factor fastest
    expected = np.stack(np.unravel_index(index, SHAPES3D_FACTOR_SIZES), axis=1)
    np.testing.assert_array_equal(factors, expected)
    np.testing.assert_array_equal(data.factors_to_index(factors), index)
    assert factors[1].tolist() == [0, 0, 0, 0, 0, 1]  # orientation fastest
    assert factors[15].tolist() == [0, 0, 0, 0, 1, 0]


def test_label_values_are_those_of_3dshapes():
    data = load_factor_dataset("procedural-shapes3d")
    np.testing.assert_allclose(data.factor_values[0], [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9])
    np.testing.assert_allclose(data.factor_values[3], np.linspace(0.75, 1.25, 8))
    np.testing.assert_allclose(data.factor_values[4], [0, 1, 2, 3])
    np.testing.assert_allclose(data.factor_values[5], np.linspace(-30, 30, 15))
    assert [len(v) for v in SHAPES3D_FACTOR_VALUES] == SHAPES3D_FACTOR_SIZES


def test_sampling_follows_disentanglement_lib_order_on_fixture_grid():
    sizes = [4, 5, 3, 6]
    fixture = os.path.join(FIXTURES, "grid_4_5_3_6.json")
    if os.path.isfile(fixture):  # ../shared is optional: a clone alone runs this test too
        with open(fixture) as f:
            assert json.load(f)["factor_sizes"] == sizes
    grid = FactorGrid(sizes)
    sampled = grid.sample_factors(5, np.random.RandomState(0))
    # the fixture README's rule: for each factor in order, random_state.randint(size, size=num)
    rs = np.random.RandomState(0)
    expected = np.zeros((5, len(sizes)), dtype=np.int64)
    for k, size in enumerate(sizes):
        expected[:, k] = rs.randint(size, size=5)
    np.testing.assert_array_equal(sampled, expected)
    # and the literal numbers, so a change of order in numpy or here is caught
    assert sampled.tolist() == [[0, 3, 0, 2], [3, 3, 2, 1], [1, 1, 0, 0], [0, 3, 0, 1], [3, 2, 0, 5]]
    # the observation of a grid point is its index (fixture convention)
    np.testing.assert_array_equal(grid.sample_observations_from_factors(sampled), sampled @ [90, 18, 6, 1])


def test_procedural_sampling_matches_reference_order_and_images():
    data = load_factor_dataset("procedural-shapes3d", image_size=16)
    rs = np.random.RandomState(0)
    factors = data.sample_factors(64, rs)
    ref = np.random.RandomState(0)
    expected = np.stack([ref.randint(s, size=64) for s in [10, 10, 10, 8, 4, 15]], axis=1)
    np.testing.assert_array_equal(factors, expected)
    state_before = rs.get_state()[1].copy()
    images = data.sample_observations_from_factors(factors, rs)
    np.testing.assert_array_equal(rs.get_state()[1], state_before)  # rendering draws nothing
    np.testing.assert_array_equal(images, data.get_images(data.factors_to_index(factors)))


def test_out_of_range_errors():
    data = load_factor_dataset("procedural-shapes3d", image_size=16)
    with pytest.raises(IndexError):
        data.index_to_factors(480_000)
    with pytest.raises(ValueError, match="out of range"):
        data.factors_to_index([[10, 0, 0, 0, 0, 0]])
    with pytest.raises(ValueError, match="off the grid"):
        load_factor_dataset("procedural-shapes3d", factor_values={"floor_hue": [0.35]})
    with pytest.raises(ValueError, match="unknown factor"):
        load_factor_dataset("procedural-shapes3d", factor_values={"hue": [0.3]})
    with pytest.raises(ValueError, match="not found"):
        load_factor_dataset("no_such_file.h5")
