"""The procedural Shapes3D renderer: deterministic, every factor visible, all grid points distinct."""
import numpy as np
import pytest
import torch

from encdiff_pipeline.data import ProceduralShapes3D, load_factor_dataset
from encdiff_pipeline.data.sample_sheet import main as sample_sheet_main

MIN_CHANGE = 1e-3  # mean absolute pixel difference two grid points must at least show


@pytest.fixture(scope="module")
def data32():
    return ProceduralShapes3D(image_size=32)


def test_images_item_and_determinism(data32):
    images = data32.get_images([0, 123_456, 479_999])
    assert images.shape == (3, 32, 32, 3) and images.dtype == np.float32
    assert images.min() >= 0.0 and images.max() <= 1.0 and images.std() > 0.05
    fresh = ProceduralShapes3D(image_size=32).get_images([0, 123_456, 479_999])
    np.testing.assert_array_equal(images, fresh)
    image, factors = data32[123_456]
    assert image.dtype == torch.float32 and tuple(image.shape) == (3, 32, 32)
    assert -1.0 <= float(image.min()) and float(image.max()) <= 1.0
    np.testing.assert_allclose(image.numpy(), images[1].transpose(2, 0, 1) * 2 - 1, atol=1e-6)
    assert factors.dtype == torch.int64 and factors.tolist() == data32.index_to_factors(123_456).tolist()


def test_64_pixels_like_the_real_data():
    data = load_factor_dataset("procedural-shapes3d", factor_sizes=[1, 1, 1, 1, 4, 1],
                               factor_values={"wall_hue": [0.5], "object_hue": [0.2]})
    images = data.get_images(np.arange(4))
    assert images.shape == (4, 64, 64, 3)
    # floor at the bottom, walls at the top, object near the centre: three different colours
    floor, wall, middle = images[:, 60, 32], images[:, 3, 3], images[:, 36, 32]
    assert np.all(np.abs(floor - wall).sum(-1) > 0.1) and np.all(np.abs(middle - floor).sum(-1) > 0.1)


def test_every_factor_changes_the_image_between_neighbouring_grid_points(data32):
    rs = np.random.RandomState(1)
    base = data32.sample_factors(40, rs)
    for k, size in enumerate(data32.factor_sizes):
        for step in range(size - 1):  # every pair of neighbouring classes of factor k
            a = base.copy()
            a[:, k] = step
            b = a.copy()
            b[:, k] = step + 1
            diff = np.abs(data32.render_factors(a) - data32.render_factors(b))
            # some pixel changes visibly in every pair (even when all three hues are equal) ...
            assert diff.max(axis=(1, 2, 3)).min() > 0.03, (data32.factor_names[k], step)
            # ... and on average the change is clear
            assert np.median(diff.mean(axis=(1, 2, 3))) > MIN_CHANGE, (data32.factor_names[k], step)


def test_orientation_turns_the_view(data32):
    # a sphere looks the same from every side: only the room (wall corner, floor edge) can move
    factors = np.array([[0, 5, 2, 7, 2, o] for o in range(15)])
    images = data32.render_factors(factors)
    top_rows = images[:, :6]  # walls only: the corner must slide across
    for i in range(14):
        assert np.abs(top_rows[i] - top_rows[i + 1]).mean() > MIN_CHANGE
    # and a cube's faces turn: the object region alone changes
    cube = data32.render_factors(np.array([[0, 5, 2, 7, 0, o] for o in (0, 7, 14)]))
    centre = cube[:, 12:24, 12:20]
    assert np.abs(centre[0] - centre[1]).mean() > 0.01 and np.abs(centre[1] - centre[2]).mean() > 0.01


def test_no_two_grid_points_identical_on_a_sub_grid():
    data = load_factor_dataset("procedural-shapes3d", image_size=32,
                               factor_values={"floor_hue": [0.0, 0.1], "wall_hue": [0.0, 0.1],
                                              "object_hue": [0.0, 0.1]})
    assert data.factor_sizes == [2, 2, 2, 8, 4, 15]
    images = data.get_images(np.arange(len(data))).reshape(len(data), -1)
    # distinct rows, and no two closer than MIN_CHANGE (mean absolute difference)
    quantised = np.round(images * 255).astype(np.uint8)
    assert len({row.tobytes() for row in quantised}) == len(data)
    # even at 8x8 (4x4 block means) every pair stays apart
    small = images.reshape(len(data), 8, 4, 8, 4, 3).mean(axis=(2, 4)).reshape(len(data), -1).astype(np.float64)
    sq = (small**2).sum(1)
    dist2 = sq[:, None] + sq[None] - 2 * small @ small.T
    np.fill_diagonal(dist2, np.inf)
    assert dist2.min() > 1e-4


def test_no_two_random_grid_points_identical(data32):
    index = np.random.RandomState(0).choice(len(data32), 400, replace=False)
    images = data32.get_images(index).reshape(400, -1)
    assert len({row.tobytes() for row in np.round(images * 255).astype(np.uint8)}) == 400


def test_sub_grid_renders_the_same_images_as_the_full_grid(data32):
    sub = load_factor_dataset("procedural-shapes3d", image_size=32, factor_sizes={"scale": 2, "orientation": 3},
                              factor_values={"shape": [1, 3]})
    assert sub.factor_sizes == [10, 10, 10, 2, 2, 3]
    np.testing.assert_allclose(sub.factor_values[3], [0.75, 1.25])
    np.testing.assert_allclose(sub.factor_values[5], [-30, 0, 30])
    sub_factors = sub.sample_factors(50, np.random.RandomState(3))
    full_factors = sub_factors.copy()
    full_factors[:, 3] = [0, 7][0] + sub_factors[:, 3] * 7
    full_factors[:, 4] = np.array([1, 3])[sub_factors[:, 4]]
    full_factors[:, 5] = sub_factors[:, 5] * 7
    np.testing.assert_array_equal(sub.render_factors(sub_factors), data32.render_factors(full_factors))


def test_sample_sheet_command(tmp_path):
    out = tmp_path / "sheet.png"
    sample_sheet_main(["--dataset", "procedural-shapes3d", "--out", str(out), "--image_size", "32"])
    from PIL import Image

    sheet = np.asarray(Image.open(out))
    top = sheet.shape[0] - (6 * 64 + 5 * 2)  # six factor rows enlarged to 64 px, 2 px apart, under the labels
    assert 0 < top < 40 and sheet.shape[2] == 3
    left = sheet.shape[1] - (15 * 64 + 14 * 2)  # 15 columns after the factor names
    assert left > 0 and (sheet[top:, :left] < 100).any()  # dark label text
    assert not list(tmp_path.glob("*.tmp"))
    # the first cell: the base factors with floor_hue class 0, each pixel repeated 2x2 (nearest neighbour)
    data = ProceduralShapes3D(image_size=32)
    base = [(size // 2 + 3 * k) % size for k, size in enumerate(data.factor_sizes)]
    first = data.get_images(data.factors_to_index([[0] + base[1:]]))[0]
    expected = np.repeat(np.repeat((first * 255).round().astype(np.uint8), 2, axis=0), 2, axis=1)
    np.testing.assert_array_equal(sheet[top:top + 64, left:left + 64], expected)


def test_geometry_table_disk_cache(tmp_path):
    sub = {"factor_sizes": {"floor_hue": 2, "scale": 3, "orientation": 4}}
    plain = ProceduralShapes3D(image_size=16, **sub)
    expected = plain.get_images(np.arange(len(plain)))
    ProceduralShapes3D(image_size=16).precompute(cache_dir=str(tmp_path))  # writes the full table
    files = list(tmp_path.glob("procedural_shapes3d-16px-ss4-*.npy"))
    assert len(files) == 1 and not list(tmp_path.glob("*.tmp"))
    cached = ProceduralShapes3D(image_size=16, **sub).precompute(cache_dir=str(tmp_path))
    np.testing.assert_array_equal(cached.get_images(np.arange(len(cached))), expected)
    files[0].write_bytes(b"not an npy file")  # a damaged table is cast again and replaced
    again = ProceduralShapes3D(image_size=16, **sub).precompute(cache_dir=str(tmp_path))
    np.testing.assert_array_equal(again.get_images(np.arange(len(again))), expected)
    assert np.load(files[0]).shape == (8, 4, 15, 256, 3)


def test_renderer_from_label_values_matches_dataset(data32):
    from encdiff_pipeline.data import Shapes3DRenderer

    factors = data32.sample_factors(6, np.random.RandomState(4))
    values = [data32.factor_values[k][factors[:, k]] for k in range(6)]
    images = Shapes3DRenderer(image_size=32).render(*values)
    np.testing.assert_allclose(images, data32.render_factors(factors), atol=1e-6)
