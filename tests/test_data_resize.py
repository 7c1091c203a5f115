"""Every loader of stored images returns `image_size` images: box filter for integer factors, LANCZOS otherwise."""
import numpy as np
import pytest
from PIL import Image

from encdiff_pipeline.data import load_factor_dataset
from encdiff_pipeline.data.resize import resize_filter, resize_images
from tests.test_data_files import MPI3D_SMALL, block_mean, write_dsprites, write_shapes3d_h5


def test_box_filter_is_the_block_mean():
    rng = np.random.RandomState(0)
    images = rng.rand(3, 64, 64, 3).astype(np.float32)
    small = resize_images(images, 16)
    assert small.shape == (3, 16, 16, 3) and small.dtype == np.float32
    np.testing.assert_allclose(small, block_mean(images, 4), atol=1e-6)
    np.testing.assert_allclose(small[1, 2, 3], images[1, 8:12, 12:16].mean(axis=(0, 1)), atol=1e-6)
    assert resize_filter((64, 64), 16) == "box filter" and resize_filter((64, 64), 64) == "none"
    np.testing.assert_array_equal(resize_images(images, 64), images)


def test_lanczos_when_the_factor_is_not_an_integer():
    rng = np.random.RandomState(1)
    images = rng.rand(2, 64, 64, 3).astype(np.float32)
    assert resize_filter((64, 64), 48) == "LANCZOS"
    resized = resize_images(images, 48)
    assert resized.shape == (2, 48, 48, 3)
    expected = np.asarray(Image.fromarray(images[1, :, :, 2]).resize((48, 48), Image.LANCZOS))
    np.testing.assert_allclose(resized[1, :, :, 2], np.clip(expected, 0, 1), atol=1e-6)
    assert resized.min() >= 0.0 and resized.max() <= 1.0  # LANCZOS overshoot clipped


def test_grey_to_three_channels_and_errors():
    grey = np.random.RandomState(2).rand(2, 8, 8, 1).astype(np.float32)
    colour = resize_images(grey, 4, channels=3)
    assert colour.shape == (2, 4, 4, 3)
    for c in range(3):
        np.testing.assert_allclose(colour[..., c], block_mean(grey, 2)[..., 0], atol=1e-6)
    with pytest.raises(ValueError, match="cannot turn 3-channel images into 1"):
        resize_images(colour, channels=1)
    with pytest.raises(ValueError, match="channels must be 1 or 3"):
        resize_images(grey, channels=2)
    with pytest.raises(ValueError, match="image_size must be a positive integer"):
        resize_images(grey, 0)


@pytest.mark.parametrize("shuffle", [False, True])
def test_shapes3d_h5_64_to_16(tmp_path, shuffle):
    path = tmp_path / "3dshapes.h5"
    images, labels = write_shapes3d_h5(path, shuffle, np.random.RandomState(3), side=64)
    full = load_factor_dataset(str(path))
    small = load_factor_dataset(str(path), image_size=16)
    assert full.source_image_size == small.source_image_size == (64, 64)
    index = np.random.RandomState(4).permutation(len(small))[:30]
    got = small.get_images(index)
    assert got.shape == (30, 16, 16, 3)
    stored = full.get_images(index)  # the file's 64x64 images of the same grid points
    np.testing.assert_allclose(got, block_mean(stored.astype(np.float64), 4), atol=1e-6)
    # and straight from the file: the row holding grid point 0's labels
    factors = small.index_to_factors(0)
    values = [small.factor_values[k][factors[k]] for k in range(6)]
    row = int(np.flatnonzero(np.all(np.isclose(labels, values), axis=1))[0])
    expected = block_mean(images[row:row + 1].astype(np.float64) / 255, 4)[0]
    np.testing.assert_allclose(small.get_images([0])[0], expected, atol=1e-6)
    image, _ = small[0]
    assert tuple(image.shape) == (3, 16, 16)
    with pytest.raises(ValueError, match="channels=1: the images have 3 channels"):
        load_factor_dataset(str(path), channels=1)


def test_dsprites_npz_64_to_16_in_three_channels(tmp_path):
    path = tmp_path / "dsprites.npz"
    imgs, _, _ = write_dsprites(path, False, np.random.RandomState(5), side=64)
    data = load_factor_dataset(str(path), image_size=16, channels=3)
    got = data.get_images(np.arange(len(data)))
    assert got.shape == (144, 16, 16, 3)
    expected = block_mean(imgs[..., None].astype(np.float64), 4)  # file rows are in grid order
    for c in range(3):
        np.testing.assert_allclose(got[..., c], expected[..., 0], atol=1e-6)
    assert load_factor_dataset(str(path), image_size=32).get_images([0]).shape == (1, 32, 32, 1)


def test_mpi3d_npz_64_to_16(tmp_path):
    flat = np.random.RandomState(6).randint(0, 256, size=(24, 64, 64, 3)).astype(np.uint8)
    path = tmp_path / "mpi3d_toy.npz"
    np.savez(path, images=flat.reshape(MPI3D_SMALL + [64, 64, 3]))
    data = load_factor_dataset(str(path), factor_sizes=MPI3D_SMALL, image_size=16)
    assert data.source_image_size == (64, 64)
    np.testing.assert_allclose(data.get_images(np.arange(24)), block_mean(flat / 255.0, 4), atol=1e-6)


def test_datasets_folder_grey_images_resized_to_three_channels(tmp_path):
    import datasets

    rng = np.random.RandomState(7)
    pictures = rng.randint(0, 256, size=(6, 32, 32)).astype(np.uint8)
    table = datasets.Dataset.from_dict({
        "image": [Image.fromarray(p) for p in pictures],
        "label_a": [0, 0, 0, 1, 1, 1],
        "label_b": [0, 1, 2, 0, 1, 2],
    }, features=datasets.Features({"image": datasets.Image(), "label_a": datasets.Value("int64"),
                                   "label_b": datasets.Value("int64")}))
    table.save_to_disk(str(tmp_path / "grey"))
    data = load_factor_dataset(str(tmp_path / "grey"), image_size=8, channels=3)
    assert data.factor_sizes == [2, 3] and data.source_image_size == (32, 32)
    got = data.get_images(np.arange(6))
    assert got.shape == (6, 8, 8, 3)
    np.testing.assert_allclose(got[..., 1], block_mean(pictures[..., None] / 255.0, 4)[..., 0], atol=1e-6)
