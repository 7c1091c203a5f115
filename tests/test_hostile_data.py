"""Hostile and careless dataset files: refused with a message that says what was expected."""
import itertools
import os

import h5py
import numpy as np
import pytest

from encdiff_pipeline.data import load_factor_dataset
from encdiff_pipeline.data.procedural_shapes3d import ProceduralShapes3D
from tests.test_data_files import MPI3D_SMALL, SUB_VALUES

CLASSES = np.array(list(itertools.product(*[range(s) for s in [1, 3, 2, 2, 2, 2]])), dtype=np.int64)  # 48 rows


def write_h5(path, images=None, labels=None):
    labels = np.array(list(itertools.product(*SUB_VALUES)), dtype=np.float64) if labels is None else labels
    images = np.zeros((len(labels), 8, 8, 3), np.uint8) if images is None else images
    with h5py.File(path, "w") as f:
        f["images"], f["labels"] = images, labels
    return path


def write_dsprites(path, imgs, compressed=False):
    save = np.savez_compressed if compressed else np.savez
    save(path, imgs=imgs, latents_classes=CLASSES, latents_values=CLASSES.astype(float))
    return path


def test_h5_float_images_are_refused(tmp_path):
    path = write_h5(tmp_path / "float.h5", images=np.random.rand(96, 8, 8, 3).astype("f4"))
    with pytest.raises(ValueError, match=r"float\.h5: 'images' is stored as float32; expected uint8 in 0\.\.255"):
        load_factor_dataset(str(path))


def test_h5_nan_labels_are_refused(tmp_path):
    labels = np.array(list(itertools.product(*SUB_VALUES)), dtype=np.float64)
    labels[5, 0] = np.nan
    path = write_h5(tmp_path / "nan.h5", labels=labels)
    with pytest.raises(ValueError, match=r"nan\.h5: 1 labels are NaN or infinite \(first: row 5, factor 'floor_hue'\)"):
        load_factor_dataset(str(path))


def test_dsprites_0_255_images_are_refused(tmp_path):
    imgs = (np.random.RandomState(0).randint(0, 2, (48, 8, 8)) * 255).astype(np.uint8)
    path = write_dsprites(tmp_path / "ds255.npz", imgs)
    with pytest.raises(ValueError, match=r"ds255\.npz: 'imgs' holds values up to 255; expected uint8 in \{0, 1\}"):
        load_factor_dataset(str(path))


def test_mpi3d_float_images_are_refused(tmp_path):
    path = tmp_path / "mpif.npz"
    np.savez(path, images=np.random.rand(24, 8, 8, 3))
    with pytest.raises(ValueError, match=r"mpif\.npz: 'images' is stored as float64; expected uint8"):
        load_factor_dataset(str(path), factor_sizes=MPI3D_SMALL)


def test_mpi3d_negative_factor_sizes_are_refused(tmp_path):
    path = tmp_path / "mpi.npz"
    np.savez(path, images=np.zeros((16, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"factor_sizes entry -2 \(object_color\) is not a positive integer"):
        load_factor_dataset(str(path), factor_sizes=[-2, -2, 1, 1, 1, 2, 2])


def test_npz_cache_is_keyed_by_content(tmp_path):
    first = np.random.RandomState(1).randint(0, 2, (48, 8, 8)).astype(np.uint8)
    datasets = []
    for folder, imgs in (("A", first), ("B", 1 - first)):
        os.makedirs(tmp_path / folder)
        path = write_dsprites(tmp_path / folder / "dsprites.npz", imgs, compressed=True)
        os.utime(path, (1e9, 1e9))
        datasets.append(load_factor_dataset(str(path), cache_dir=str(tmp_path / "cache")))
    assert os.path.getsize(tmp_path / "A" / "dsprites.npz") == os.path.getsize(tmp_path / "B" / "dsprites.npz")
    np.testing.assert_array_equal(datasets[0].get_images(range(48))[..., 0], first)
    np.testing.assert_array_equal(datasets[1].get_images(range(48))[..., 0], 1 - first)


@pytest.mark.parametrize("kwargs, message", [
    ({"supersample": 0}, "supersample must be an integer >= 1"),
    ({"supersample": -2}, "supersample must be an integer >= 1"),
    ({"image_size": 8.7}, "image_size must be an integer >= 8"),
    ({"factor_sizes": [2.9, 1, 1, 1, 1, 1]}, r"factor_sizes\['floor_hue'\] must be an integer"),
    ({"factor_values": {"floor_hue": [float("nan")]}}, "NaN or infinite"),
])
def test_procedural_absurd_options_are_refused(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProceduralShapes3D(**{"image_size": 8, **kwargs})


# ---- issue 15: the rest of the record's dataset cases ----
def test_cars3d_float_images_are_refused(tmp_path):
    import scipy.io

    (tmp_path / "cars").mkdir()
    scipy.io.savemat(str(tmp_path / "cars" / "a.mat"), {"im": np.random.rand(16, 16, 3, 2, 3)})
    with pytest.raises(ValueError, match=r"a.mat: 'im' is stored as float64; expected uint8"):
        load_factor_dataset(str(tmp_path / "cars"), image_size=8).get_images([0])


def test_empty_folder_names_the_folder_kinds(tmp_path):
    with pytest.raises(ValueError, match="the folder is empty; expected a Cars3D folder .*CelebA.*datasets"):
        load_factor_dataset(str(tmp_path))


def test_celeba_image_size_zero_is_refused(tmp_path):
    import PIL.Image

    (tmp_path / "list_attr_celeba.txt").write_text("1\nSmiling Male\n000001.jpg 1 -1\n")
    PIL.Image.new("RGB", (20, 20)).save(tmp_path / "000001.jpg")
    with pytest.raises(ValueError, match="image_size must be an integer >= 1, got 0"):
        load_factor_dataset(str(tmp_path), image_size=0)


def test_npz_header_claiming_more_rows_than_stored_is_refused(tmp_path):
    import io
    import zipfile

    buffer = io.BytesIO()
    np.save(buffer, np.full((16, 2, 2, 3), 7, np.uint8))
    with zipfile.ZipFile(tmp_path / "lie.npz", "w") as archive:
        archive.writestr("images.npy", buffer.getvalue().replace(b"(16, 2, 2, 3)", b"(17, 2, 2, 3)"))
    with pytest.raises(OSError, match=r"lie.npz: array 'images' claims shape \(17, 2, 2, 3\) .* holds 192 bytes"):
        load_factor_dataset(str(tmp_path / "lie.npz"), factor_sizes=[17, 1, 1, 1, 1, 1, 1]).get_images([16])


def test_npz_member_with_a_bad_crc_is_named(tmp_path):
    path = str(tmp_path / "dsprites.npz")
    write_dsprites(path, np.random.RandomState(0).randint(0, 2, (48, 8, 8)).astype(np.uint8))
    data = bytearray(open(path, "rb").read())
    at = data.find(b"(48, 8, 8)")
    data[at:at + 10] = b"(49, 8, 8)"  # the stored bytes no longer match the member's CRC
    open(path, "wb").write(bytes(data))
    with pytest.raises(OSError, match=r"dsprites.npz: member 'imgs' is corrupt \(Bad CRC-32"):
        load_factor_dataset(path).get_images([0])


def test_corrupt_parquet_is_named(tmp_path):
    path = tmp_path / "bad.parquet"
    path.write_bytes(b"PAR1" + os.urandom(100) + b"PAR1")
    with pytest.raises(OSError, match=r"bad.parquet: cannot read the parquet data"):
        load_factor_dataset(str(path))


def test_datasets_folder_with_images_of_mixed_sizes_is_named(tmp_path):
    datasets = pytest.importorskip("datasets")
    import PIL.Image

    table = datasets.Dataset.from_dict({"image": [PIL.Image.new("RGB", (8, 8)), PIL.Image.new("RGB", (16, 16))],
                                        "label_a": [0.0, 1.0]})
    table.save_to_disk(str(tmp_path / "mixed"))
    with pytest.raises(ValueError, match=r"images of different sizes \[\(8, 8, 3\), \(16, 16, 3\)\]"):
        load_factor_dataset(str(tmp_path / "mixed")).get_images([0, 1])


@pytest.mark.parametrize("kwargs, message", [
    ({"image_size": "abc"}, "image_size must be an integer >= 8, got 'abc'"),
    ({"factor_sizes": [2, 1, 1, 1, 1, 1], "factor_values": {"floor_hue": [0.1, 0.2, 0.3]}},
     "factor 'floor_hue' is given 2 values by factor_sizes but 3 by factor_values"),
])
def test_procedural_conflicting_or_non_numeric_options(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_factor_dataset("procedural-shapes3d", **{"image_size": 8, **kwargs})


# ---- second probe: 16-bit pictures, fractional indices, datasets folders with bad columns ----
def _celeba_folder(folder, picture):
    folder.mkdir(exist_ok=True)
    (folder / "list_attr_celeba.txt").write_text("1\nSmiling Male\na.png 1 -1\n")
    picture.save(folder / "a.png")
    return str(folder)


def test_celeba_16_bit_png_keeps_its_grey_level(tmp_path):
    """C32b: a 16-bit PNG is scaled to 8 bits, not clipped to white."""
    import PIL.Image

    folder = _celeba_folder(tmp_path / "c", PIL.Image.fromarray(np.full((16, 16), 30000, np.uint16)))
    images = load_factor_dataset(folder, image_size=8).get_images([0])
    assert np.allclose(images, 30000 / 65535, atol=1 / 255)


def test_float_picture_is_refused():
    import PIL.Image

    from encdiff_pipeline.data.checks import picture_8bit

    with pytest.raises(ValueError, match=r"x.tif: a floating-point \('F'\) image; expected 8-bit or 16-bit"):
        picture_8bit(PIL.Image.new("F", (4, 4)), "x.tif")
    with pytest.raises(ValueError, match="row 3: expected an image, got a int"):
        picture_8bit(7, "row 3")


@pytest.mark.parametrize("indices, message", [([0.5], "grid index must be integers, got 0.5"),
                                              (["a"], "grid index must be integers, got 'a'"),
                                              ([float("nan")], "grid index must be integers, got nan")])
def test_fractional_indices_are_refused_not_truncated(indices, message):
    """C48: get_images([0.5]) is not image 0."""
    data = ProceduralShapes3D(image_size=8, factor_sizes=[2, 2, 2, 2, 2, 2])
    with pytest.raises(ValueError, match=message):
        data.get_images(indices)
    assert data.get_images([1.0]).shape == (1, 8, 8, 3)  # an integral float is an index


def _datasets_folder(tmp_path, columns):
    datasets = pytest.importorskip("datasets")
    folder = str(tmp_path / "ds")
    datasets.Dataset.from_dict(columns).save_to_disk(folder)
    return folder


def test_datasets_folder_label_and_image_problems_are_named(tmp_path):
    """C36-C39: string labels, no rows, ints for images, NaN labels."""
    import PIL.Image

    images = [PIL.Image.new("RGB", (8, 8))] * 4
    cases = [
        ({"image": images, "label_a": ["x", "x", "y", "y"], "label_b": ["p", "q", "p", "q"]},
         r"label column 'label_a' holds .* values \(e.g. 'x'\); expected numbers"),
        ({"image": [1, 2, 3, 4], "label_a": [0.0, 0.0, 1.0, 1.0], "label_b": [0.0, 1.0, 0.0, 1.0]},
         r"row 0 of 'image': expected an image, got a int"),
        ({"image": images, "label_a": [0.0, 0.0, 1.0, np.nan], "label_b": [0.0, 1.0, 0.0, 1.0]},
         r"1 labels are NaN or infinite \(first: row 3, factor 'a'\)"),
    ]
    for k, (columns, message) in enumerate(cases):
        folder = _datasets_folder(tmp_path / str(k), columns)
        with pytest.raises(ValueError, match=message):
            load_factor_dataset(folder)


def test_datasets_folder_without_rows_is_named(tmp_path):
    datasets = pytest.importorskip("datasets")
    features = datasets.Features({"image": datasets.Image(), "label_a": datasets.Value("float64")})
    folder = str(tmp_path / "empty")
    datasets.Dataset.from_dict({"image": [], "label_a": []}, features=features).save_to_disk(folder)
    with pytest.raises(ValueError, match="the dataset has no rows"):
        load_factor_dataset(folder)
