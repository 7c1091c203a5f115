"""Real file formats, written small by the tests, read back through `load_factor_dataset`."""
import itertools
import os
import pickle

import h5py
import numpy as np
import pytest
import scipy.io
import torch
from PIL import Image

from encdiff_pipeline.data import MPI3D, Cars3D, CelebA, DSprites, Shapes3D, load_factor_dataset
from encdiff_pipeline.data.celeba import face_crop


# -- Shapes3D .h5 ---------------------------------------------------------------------------------
SUB_VALUES = [[0.0, 0.3], [0.5], [0.1, 0.9], [0.75, 1.25], [0.0, 1.0, 2.0, 3.0], [-30.0, 0.0, 30.0]]


def write_shapes3d_h5(path, shuffle, rng, drop_last=False, labels_fn=None, side=8):
    labels = np.array(list(itertools.product(*SUB_VALUES)), dtype=np.float64)  # orientation fastest
    order = rng.permutation(len(labels)) if shuffle else np.arange(len(labels))
    labels = labels[order]
    if drop_last:
        labels = labels[:-1]
    if labels_fn is not None:
        labels = labels_fn(labels)
    images = rng.randint(0, 256, size=(len(labels), side, side, 3)).astype(np.uint8)
    with h5py.File(path, "w") as f:
        f.create_dataset("images", data=images)
        f.create_dataset("labels", data=labels)
    return images, labels


@pytest.mark.parametrize("shuffle", [False, True])
def test_shapes3d_h5_sub_grid(tmp_path, shuffle):
    rng = np.random.RandomState(0)
    path = tmp_path / "3dshapes.h5"
    images, labels = write_shapes3d_h5(path, shuffle, rng)
    data = load_factor_dataset(str(path))
    assert isinstance(data, Shapes3D)
    assert data.factor_sizes == [2, 1, 2, 2, 4, 3] and len(data) == 96
    for k, values in enumerate(SUB_VALUES):
        np.testing.assert_allclose(data.factor_values[k], values)
    index = rng.permutation(96)[:40]
    got = data.get_images(index)
    factors = data.index_to_factors(index)
    got_values = np.stack([data.factor_values[k][factors[:, k]] for k in range(6)], axis=1)
    for i in range(len(index)):  # find the row of the file holding these labels, compare its image
        row = int(np.flatnonzero(np.all(np.isclose(labels, got_values[i]), axis=1))[0])
        np.testing.assert_array_equal(got[i], images[row].astype(np.float32) / 255)
    # grid order: index 1 differs from index 0 only in orientation
    np.testing.assert_array_equal(data.index_to_factors(1), [0, 0, 0, 0, 0, 1])
    image, cls = data[int(index[0])]
    np.testing.assert_allclose(image.numpy(), got[0].transpose(2, 0, 1) * 2 - 1, atol=1e-6)
    assert cls.tolist() == factors[0].tolist()
    # the h5 handle is not pickled but reopened by a copy (DataLoader workers)
    clone = pickle.loads(pickle.dumps(data))
    np.testing.assert_array_equal(clone.get_images(index[:5]), got[:5])
    batch_images, batch_factors = next(iter(torch.utils.data.DataLoader(data, batch_size=4)))
    assert batch_images.shape == (4, 3, 8, 8) and batch_factors.dtype == torch.int64


def test_shapes3d_h5_errors(tmp_path):
    rng = np.random.RandomState(1)
    missing = tmp_path / "missing.h5"
    with h5py.File(missing, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 8, 8, 3), np.uint8))
    with pytest.raises(ValueError, match=r"missing\.h5.*missing dataset 'labels'"):
        load_factor_dataset(str(missing))
    wrong = tmp_path / "wrong.h5"
    with h5py.File(wrong, "w") as f:
        f.create_dataset("images", data=np.zeros((2, 8, 8, 3), np.uint8))
        f.create_dataset("labels", data=np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"wrong\.h5.*'labels' has shape \(2, 5\); expected \(2, 6\)"):
        load_factor_dataset(str(wrong))
    off = tmp_path / "off.h5"
    write_shapes3d_h5(off, False, rng, labels_fn=lambda l: np.where(l == 0.3, 0.35, l))
    with pytest.raises(ValueError, match=r"off\.h5.*0\.35.*floor_hue.*off the grid"):
        load_factor_dataset(str(off))
    incomplete = tmp_path / "incomplete.h5"
    write_shapes3d_h5(incomplete, True, rng, drop_last=True)
    with pytest.raises(ValueError, match=r"incomplete\.h5.*every combination"):
        load_factor_dataset(str(incomplete))
    good = tmp_path / "good.h5"
    write_shapes3d_h5(good, False, rng)
    truncated = tmp_path / "truncated.h5"
    truncated.write_bytes(good.read_bytes()[: os.path.getsize(good) // 2])
    with pytest.raises(OSError, match=r"truncated\.h5"):
        load_factor_dataset(str(truncated))


# -- dSprites .npz -------------------------------------------------------------------------------
DSPRITES_SIZES = [1, 3, 2, 4, 3, 2]


def write_dsprites(path, compressed, rng, side=8):
    classes = np.array(list(itertools.product(*[range(s) for s in DSPRITES_SIZES])), dtype=np.int64)
    values = np.stack([
        np.ones(len(classes)),
        classes[:, 1] + 1.0,
        np.linspace(0.5, 1.0, 2)[classes[:, 2]],
        np.linspace(0.0, 2 * np.pi, 4)[classes[:, 3]],
        np.linspace(0.0, 1.0, 3)[classes[:, 4]],
        np.linspace(0.0, 1.0, 2)[classes[:, 5]],
    ], axis=1)
    imgs = rng.randint(0, 2, size=(len(classes), side, side)).astype(np.uint8)
    metadata = np.array({"description": "pickled, must never be loaded"}, dtype=object)
    save = np.savez_compressed if compressed else np.savez
    save(path, imgs=imgs, latents_classes=classes, latents_values=values, metadata=metadata)
    return imgs, classes, values


@pytest.mark.parametrize("compressed", [False, True])
def test_dsprites_npz(tmp_path, compressed):
    rng = np.random.RandomState(2)
    path = tmp_path / "dsprites_ndarray_co1sh3sc6or40x32y32_64x64.npz"
    imgs, classes, values = write_dsprites(path, compressed, rng)
    data = load_factor_dataset(str(path), cache_dir=str(tmp_path / "cache"))
    assert isinstance(data, DSprites)
    assert isinstance(data._images, np.memmap)  # lazy, even for the compressed member (via the cache)
    assert data.factor_names == ["shape", "scale", "orientation", "position_x", "position_y"]
    assert data.factor_sizes == [3, 2, 4, 3, 2] and len(data) == 144
    np.testing.assert_allclose(data.factor_values[2], np.linspace(0.0, 2 * np.pi, 4))
    images = data.get_images(np.arange(144))
    assert images.shape == (144, 8, 8, 1)
    np.testing.assert_array_equal(images[..., 0], imgs.astype(np.float32))  # file rows are in grid order
    np.testing.assert_array_equal(data.index_to_factors(np.arange(144)), classes[:, 1:])
    # disentanglement_lib's colour draw: randint(1, size=num) leaves the stream unchanged
    rs, ref = np.random.RandomState(0), np.random.RandomState(0)
    factors = data.sample_factors(10, rs)
    obs = data.sample_observations_from_factors(factors, rs)
    expected = np.stack([ref.randint(s, size=10) for s in [3, 2, 4, 3, 2]], axis=1)
    ref.randint(1, size=10)
    np.testing.assert_array_equal(factors, expected)
    np.testing.assert_array_equal(obs, images[data.factors_to_index(factors)])
    assert rs.randint(1000) == ref.randint(1000)


def test_dsprites_errors(tmp_path):
    rng = np.random.RandomState(3)
    good = tmp_path / "good.npz"
    write_dsprites(good, False, rng)
    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(good.read_bytes()[:-200])
    with pytest.raises(OSError, match=r"truncated\.npz"):
        load_factor_dataset(str(truncated))
    bad = tmp_path / "bad.npz"
    np.savez(bad, imgs=np.zeros((4, 8, 8), np.uint8), latents_classes=np.zeros((4, 5), np.int64),
             latents_values=np.zeros((4, 6)))
    with pytest.raises(ValueError, match=r"bad\.npz.*'latents_classes' has shape \(4, 5\); expected \(4, 6\)"):
        load_factor_dataset(str(bad))
    nokey = tmp_path / "nokey.npz"
    np.savez(nokey, imgs=np.zeros((4, 8, 8), np.uint8), latents_classes=np.zeros((4, 6), np.int64))
    with pytest.raises(ValueError, match=r"nokey\.npz.*missing array 'latents_values'"):
        DSprites(str(nokey))


# -- MPI3D .npz ----------------------------------------------------------------------------------
MPI3D_SMALL = [2, 1, 2, 1, 1, 3, 2]


@pytest.mark.parametrize("reshaped", [False, True])
def test_mpi3d_npz(tmp_path, reshaped):
    rng = np.random.RandomState(4)
    flat = rng.randint(0, 256, size=(24, 8, 8, 3)).astype(np.uint8)
    stored = flat.reshape(MPI3D_SMALL + [8, 8, 3]) if reshaped else flat
    path = tmp_path / "mpi3d_toy.npz"
    np.savez(path, images=stored)
    data = load_factor_dataset(str(path), factor_sizes=MPI3D_SMALL)
    assert isinstance(data, MPI3D) and len(data) == 24 and isinstance(data._images, np.memmap)
    np.testing.assert_array_equal(data.get_images(np.arange(24)), flat.astype(np.float32) / 255)
    factors = data.index_to_factors(np.arange(24))
    for i in (0, 5, 17, 23):  # element of the reshaped array at the factor classes
        np.testing.assert_array_equal(flat.reshape(MPI3D_SMALL + [8, 8, 3])[tuple(factors[i])], flat[i])
    with pytest.raises(ValueError, match=r"mpi3d_toy\.npz.*'images' has shape.*expected \(1036800"):
        load_factor_dataset(str(path))  # default = the real sizes


# -- Cars3D .mat folder --------------------------------------------------------------------------
def block_mean(images, factor):
    """(N, H, W, C) -> (N, H / factor, W / factor, C): the mean of each factor x factor block, by loops."""
    num, height, width, channels = images.shape
    out = np.zeros((num, height // factor, width // factor, channels), np.float64)
    for y in range(height // factor):
        for x in range(width // factor):
            out[:, y, x] = images[:, y * factor:(y + 1) * factor, x * factor:(x + 1) * factor].mean(axis=(1, 2))
    return out


def test_cars3d_mat_folder(tmp_path):
    rng = np.random.RandomState(5)
    folder = tmp_path / "cars"
    folder.mkdir()
    ims = []
    for k in range(3):
        im = rng.randint(0, 256, size=(16, 16, 3, 2, 3)).astype(np.uint8)  # 2 elevations, 3 azimuths
        scipy.io.savemat(folder / f"car_{k:03d}_mesh.mat", {"im": im})
        ims.append(im)
    data = load_factor_dataset(str(folder), image_size=8)
    assert isinstance(data, Cars3D)
    assert data.factor_names == ["elevation", "azimuth", "object"] and data.factor_sizes == [2, 3, 3]
    images = data.get_images(np.arange(18))
    for index, (e, a, k) in enumerate(data.index_to_factors(np.arange(18))):
        # LANCZOS to disentanglement_lib's 64x64, then the mean of each 8x8 block
        view = Image.fromarray(ims[k][:, :, :, e, a]).resize((64, 64), Image.LANCZOS)
        expected = block_mean(np.asarray(view, np.float64)[None] / 255, 8)[0]
        np.testing.assert_allclose(images[index], expected, atol=1e-6)
    assert load_factor_dataset(str(folder)).get_images([0]).shape == (1, 64, 64, 3)
    scipy.io.savemat(folder / "car_999_mesh.mat", {"images": np.zeros((2, 2))})
    with pytest.raises(ValueError, match=r"car_999_mesh\.mat.*missing variable 'im'"):
        load_factor_dataset(str(folder), image_size=8).get_images([3])
    (folder / "car_999_mesh.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    with pytest.raises(OSError, match=r"car_999_mesh\.mat"):
        load_factor_dataset(str(folder), image_size=8).get_images([3])


# -- CelebA folder -------------------------------------------------------------------------------
ATTRIBUTES = ["Smiling", "Male", "Eyeglasses"]


def write_celeba(folder, rng, rows=None):
    (folder / "img_align_celeba").mkdir(parents=True)
    signs = rng.choice([-1, 1], size=(4, len(ATTRIBUTES)))
    lines = [str(4), " ".join(ATTRIBUTES)]
    for i in range(4):
        name = f"{i + 1:06d}.png"
        picture = Image.fromarray(rng.randint(0, 256, size=(218, 178, 3)).astype(np.uint8))
        picture.save(folder / "img_align_celeba" / name)
        lines.append(name + " " + " ".join(f"{s:2d}" for s in signs[i]))
    (folder / "list_attr_celeba.txt").write_text("\n".join(lines[: rows]) + "\n")
    return signs


def test_celeba_folder(tmp_path):
    rng = np.random.RandomState(6)
    signs = write_celeba(tmp_path / "celeba", rng)
    data = load_factor_dataset(str(tmp_path / "celeba"))
    assert isinstance(data, CelebA) and len(data) == 4 and data.attribute_names == ATTRIBUTES
    np.testing.assert_array_equal(data.attributes, (signs > 0).astype(np.int64))
    images = data.get_images([2, 0])
    assert images.shape == (2, 64, 64, 3)
    source = Image.open(tmp_path / "celeba" / "img_align_celeba" / "000003.png")
    expected = np.asarray(source.crop((15, 40, 163, 188)).resize((64, 64), Image.LANCZOS), np.float32) / 255
    np.testing.assert_array_equal(images[0], expected)
    np.testing.assert_array_equal(images[0], np.asarray(face_crop(source), np.float32) / 255)
    image, attributes = data[2]
    assert tuple(image.shape) == (3, 64, 64) and attributes.tolist() == (signs[2] > 0).astype(int).tolist()


def test_celeba_truncated_attribute_file(tmp_path):
    write_celeba(tmp_path / "celeba", np.random.RandomState(7), rows=4)
    with pytest.raises(ValueError, match=r"list_attr_celeba\.txt.*announces 4 images but 2 rows"):
        load_factor_dataset(str(tmp_path / "celeba"))


def test_unknown_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, x=np.zeros(3))
    with pytest.raises(ValueError, match=r"other\.npz.*expected a dSprites npz"):
        load_factor_dataset(str(path))
