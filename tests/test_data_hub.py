"""`datasets` tables: export of a factor dataset, `save_to_disk` folders, Hub-schema parquet, CelebA."""
import numpy as np
import pytest

from encdiff_pipeline.data import CelebA, HFFactorDataset, load_factor_dataset


@pytest.fixture(scope="module")
def small_procedural():
    return load_factor_dataset("procedural-shapes3d", image_size=16, factor_sizes=[2, 2, 1, 2, 2, 3])


def test_export_save_to_disk_and_load_back(tmp_path, small_procedural):
    import datasets

    hf = small_procedural.to_hf_dataset(cache_dir=str(tmp_path / "cache"))
    assert len(hf) == 48
    assert isinstance(hf.features["label_scale"], datasets.ClassLabel)
    assert hf.features["label_scale"].names == ["0.75", "1.25"]
    assert hf.features["label_orientation"].num_classes == 3
    hf.save_to_disk(str(tmp_path / "exported"))
    back = load_factor_dataset(str(tmp_path / "exported"))
    assert isinstance(back, HFFactorDataset)
    assert back.factor_names == small_procedural.factor_names
    assert back.factor_sizes == small_procedural.factor_sizes
    for k in range(6):
        np.testing.assert_allclose(back.factor_values[k], small_procedural.factor_values[k], atol=1e-6)
    index = np.arange(48)[::-1]
    expected = np.round(small_procedural.get_images(index) * 255) / 255  # PNG holds uint8
    np.testing.assert_allclose(back.get_images(index), expected, atol=1e-6)
    np.testing.assert_array_equal(back.index_to_factors(index), small_procedural.index_to_factors(index))
    image, factors = back[7]
    assert tuple(image.shape) == (3, 16, 16) and factors.tolist() == small_procedural.index_to_factors(7).tolist()


def test_hub_schema_parquet_with_shuffled_rows_and_alphabetical_columns(tmp_path, small_procedural):
    """The eurecom-ds/shapes3d layout: columns sorted by name, value_* floats, rows in any order."""
    import datasets

    rng = np.random.RandomState(0)
    order = rng.permutation(len(small_procedural))
    classes = small_procedural.index_to_factors(order)
    images = np.round(small_procedural.get_images(order) * 255).astype(np.uint8)
    names = small_procedural.factor_names
    columns = {"image": [img for img in images]}
    features = {"image": datasets.Image()}
    for k in sorted(range(6), key=lambda k: names[k]):
        features[f"label_{names[k]}"] = datasets.ClassLabel(num_classes=small_procedural.factor_sizes[k])
        columns[f"label_{names[k]}"] = classes[:, k].tolist()
    for k in sorted(range(6), key=lambda k: names[k]):
        features[f"value_{names[k]}"] = datasets.Value("float32")
        columns[f"value_{names[k]}"] = small_procedural.factor_values[k][classes[:, k]].astype(np.float32).tolist()
    table = datasets.Dataset.from_dict(columns, features=datasets.Features(features))
    assert table.column_names[1] == "label_floor_hue" and table.column_names[2] == "label_object_hue"
    path = tmp_path / "data" / "train-00000-of-00001.parquet"
    path.parent.mkdir()
    table.to_parquet(str(path))
    for source in (str(path), str(tmp_path / "data")):  # a parquet file, and a folder of them
        data = load_factor_dataset(source, cache_dir=str(tmp_path / "cache"))
        assert data.factor_names == names  # put back in Shapes3D order
        assert data.factor_sizes == small_procedural.factor_sizes
        np.testing.assert_allclose(data.factor_values[3], [0.75, 1.25], atol=1e-6)
        got = data.get_images(np.arange(48))
        np.testing.assert_allclose(got, np.round(small_procedural.get_images(np.arange(48)) * 255) / 255, atol=1e-6)


def test_hub_errors(tmp_path):
    import datasets

    table = datasets.Dataset.from_dict({"image": [np.zeros((4, 4, 3), np.uint8)] * 3, "label_a": [0, 1, 1]},
                                       features=datasets.Features({"image": datasets.Image(),
                                                                   "label_a": datasets.Value("int64")}))
    table.save_to_disk(str(tmp_path / "dup"))
    with pytest.raises(ValueError, match=r"dup.*every combination"):
        load_factor_dataset(str(tmp_path / "dup"))
    table.remove_columns(["label_a"]).save_to_disk(str(tmp_path / "nolabels"))
    with pytest.raises(ValueError, match=r"nolabels.*expected factor label columns"):
        load_factor_dataset(str(tmp_path / "nolabels"))


def test_celeba_from_hf_dataset():
    import datasets

    rng = np.random.RandomState(1)
    attrs = rng.rand(5, 2) > 0.5
    table = datasets.Dataset.from_dict(
        {"image": [rng.randint(0, 256, (218, 178, 3)).astype(np.uint8) for _ in range(5)],
         "celeb_id": [10, 11, 12, 13, 14], "Smiling": attrs[:, 0].tolist(), "Male": attrs[:, 1].tolist()},
        features=datasets.Features({"image": datasets.Image(), "celeb_id": datasets.Value("int64"),
                                    "Smiling": datasets.Value("bool"), "Male": datasets.Value("bool")}))
    data = CelebA.from_hf_dataset(table)
    assert data.attribute_names == ["Smiling", "Male"] and len(data) == 5
    np.testing.assert_array_equal(data.attributes, attrs.astype(np.int64))
    assert data.get_images([4]).shape == (1, 64, 64, 3)


def test_dsprites_export_round_trip(tmp_path):
    from tests.test_data_files import write_dsprites

    path = tmp_path / "dsprites.npz"
    imgs, classes, _ = write_dsprites(path, False, np.random.RandomState(5))
    data = load_factor_dataset(str(path))
    data.to_hf_dataset(cache_dir=str(tmp_path / "cache")).save_to_disk(str(tmp_path / "hf"))
    back = load_factor_dataset(str(tmp_path / "hf"))
    assert back.factor_names == data.factor_names and back.factor_sizes == data.factor_sizes
    got = back.get_images(np.arange(len(back)))
    assert got.shape == (144, 8, 8, 1)
    np.testing.assert_array_equal(got, data.get_images(np.arange(144)))
