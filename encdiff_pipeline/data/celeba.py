"""CelebA for TAD: 64x64 faces with 40 binary attributes (no factor grid).

CelebA has no grid of factors, so it is not a `FactorDataset`. Its interface:
`attribute_names` (40), `attributes` (N, 40) int64 in {0, 1}, `len`, `get_images(indices)` ->
(num, 64, 64, 3) float32 in [0, 1], `get_attributes(indices)`, and `__getitem__` ->
(image tensor (3, 64, 64) in [-1, 1], attributes int64 tensor). TAD samples indices itself
(e.g. `np.random.RandomState(30).choice(len(data), 1000, replace=False)`) and reads both.

Sources: the official folder (`list_attr_celeba.txt` plus the aligned JPEGs, directly inside or in
`img_align_celeba/`), or a `datasets.Dataset` with an image column and 40 boolean/0-1/±1 attribute
columns (the Hub's `flwrlabs/celeba`). Faces are cropped to the central 148x148 square of the
178x218 aligned image, 40 px from the top (other sizes: centred square), then resized with LANCZOS.
Licence: non-commercial research only.

Example:
    >>> data = CelebA("data/celeba")  # doctest: +SKIP
    >>> images = data.get_images([0, 1]); attributes = data.get_attributes([0, 1])  # doctest: +SKIP
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np
import torch

from ..image_range import to_model_input
from .checks import picture_8bit
from .factor_dataset import integer_array

ATTRIBUTE_FILE = "list_attr_celeba.txt"


def face_crop(picture, image_size: int = 64):
    """Crop the face square out of an aligned CelebA picture and resize it (PIL in, PIL out)."""
    from PIL import Image

    width, height = picture.size
    if (width, height) == (178, 218):
        box = (15, 40, 163, 188)
    else:
        side = min(width, height)
        left, top = (width - side) // 2, (height - side) // 2
        box = (left, top, left + side, top + side)
    return picture.convert("RGB").crop(box).resize((image_size, image_size), Image.LANCZOS)


def read_attribute_file(path: str) -> tuple[list[str], list[str], np.ndarray]:
    """Parse `list_attr_celeba.txt` -> (file names, attribute names, (N, 40) int64 in {0, 1})."""
    try:
        with open(path, encoding="utf-8") as f:
            lines = [line.split() for line in f if line.strip()]
    except OSError as error:
        raise OSError(f"{path}: cannot read the CelebA attribute file: {error}") from error
    if len(lines) < 2 or len(lines[0]) != 1 or not lines[0][0].isdigit():
        raise ValueError(f"{path}: expected a count on line 1 and attribute names on line 2")
    count, names = int(lines[0][0]), lines[1]
    rows = lines[2:]
    if len(rows) != count:
        raise ValueError(f"{path}: line 1 announces {count} images but {len(rows)} rows follow (truncated?)")
    files, values = [], np.empty((count, len(names)), dtype=np.int64)
    for i, row in enumerate(rows):
        if len(row) != len(names) + 1 or any(v not in ("1", "-1") for v in row[1:]):
            raise ValueError(f"{path}: line {i + 3} should be a file name and {len(names)} values of 1/-1")
        files.append(row[0])
        values[i] = [v == "1" for v in row[1:]]
    return files, names, values


class CelebA(torch.utils.data.Dataset):
    """CelebA faces and their 40 attributes (see the module docstring).

    Args:
        root: a folder with `list_attr_celeba.txt` and the images (or `img_align_celeba/`).
        image_size: output side, 64 by default.
    """

    def __init__(self, root: Optional[str | os.PathLike] = None, image_size: int = 64):
        from .checks import check_positive_int

        self.image_size = check_positive_int("image_size", image_size)
        self._hf = None
        if root is None:
            return
        self.root = os.fspath(root)
        attribute_file = os.path.join(self.root, ATTRIBUTE_FILE)
        if not os.path.isfile(attribute_file):
            raise ValueError(f"{self.root}: missing {ATTRIBUTE_FILE}; expected the CelebA folder layout")
        files, self.attribute_names, self.attributes = read_attribute_file(attribute_file)
        image_dir = os.path.join(self.root, "img_align_celeba")
        image_dir = image_dir if os.path.isdir(image_dir) else self.root
        self.image_paths = [os.path.join(image_dir, f) for f in files]

    @classmethod
    def from_hf_dataset(cls, dataset, image_column: str = "image", image_size: int = 64) -> "CelebA":
        """CelebA from a `datasets.Dataset` with an image column and binary attribute columns."""
        data = cls(None, image_size=image_size)
        columns = [c for c in dataset.column_names if c != image_column]
        table = dataset.select_columns(columns).with_format("numpy")[:]
        names = [c for c in columns if np.isin(np.unique(np.asarray(table[c])), [-1, 0, 1]).all()
                 and np.asarray(table[c]).ndim == 1]
        if not names:
            raise ValueError(f"expected binary attribute columns next to '{image_column}', got {columns}")
        data.attribute_names = names
        data.attributes = np.stack([np.asarray(table[c]).astype(np.int64) > 0 for c in names], 1).astype(np.int64)
        data._hf = dataset.select_columns([image_column])
        data._image_column = image_column
        data.root = None
        return data

    def __len__(self) -> int:
        return len(self.attributes)

    def get_attributes(self, indices: Sequence[int]) -> np.ndarray:
        return self.attributes[np.asarray(indices, dtype=np.int64)]

    def get_images(self, indices: Sequence[int]) -> np.ndarray:
        from PIL import Image

        indices = integer_array(indices, "CelebA index").reshape(-1)
        if indices.size and (indices.min() < 0 or indices.max() >= len(self)):
            raise IndexError(f"CelebA index out of range [0, {len(self)})")
        out = np.empty((len(indices), self.image_size, self.image_size, 3), dtype=np.float32)
        for i, index in enumerate(indices):
            if self._hf is not None:
                picture = self._hf[int(index)][self._image_column]
            else:
                path = self.image_paths[index]
                try:
                    with Image.open(path) as opened:
                        picture = opened.copy()
                except OSError as error:
                    raise OSError(f"{path}: cannot read the CelebA image: {error}") from error
            where = self.image_paths[index] if self._hf is None else f"row {int(index)} of the CelebA dataset"
            out[i] = np.asarray(face_crop(picture_8bit(picture, where), self.image_size), dtype=np.float32) / 255.0
        return out

    def __getitem__(self, index: int):
        image = to_model_input(self.get_images([index]))[0]
        return image, torch.from_numpy(self.attributes[index])
