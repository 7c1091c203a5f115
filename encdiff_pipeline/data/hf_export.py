"""Export a factor dataset as a `datasets.Dataset`: an `image` column and one ClassLabel per factor.

The schema is that of `eurecom-ds/shapes3d` on the Hub: `image`, `label_<factor>` (ClassLabel) and,
when the factor has label values, `value_<factor>` (float32). Save it with `save_to_disk` or
publish it with `push_to_hub`; `load_factor_dataset` reads either back.

Example:
    >>> from encdiff_pipeline.data import load_factor_dataset
    >>> data = load_factor_dataset("procedural-shapes3d", factor_sizes=[2, 1, 1, 1, 2, 1])
    >>> hf = data.to_hf_dataset()
    >>> hf.features["label_shape"].num_classes, len(hf)
    (2, 4)
"""
from __future__ import annotations

import uuid
from typing import Optional, Sequence

import numpy as np


def _image_to_pil(image: np.ndarray):
    from PIL import Image

    array = np.clip(np.rint(np.asarray(image) * 255.0), 0, 255).astype(np.uint8)
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array)


def _label_names(values: Optional[np.ndarray], size: int) -> list[str]:
    if values is None:
        return [str(i) for i in range(size)]
    names = [f"{float(v):.6g}" for v in values]
    return names if len(set(names)) == size else [str(i) for i in range(size)]


def factor_dataset_features(dataset):
    """The `datasets.Features` of `to_hf_dataset(dataset)`."""
    import datasets

    features = {"image": datasets.Image()}
    values = dataset.factor_values or [None] * dataset.num_factors
    for name, size, vals in zip(dataset.factor_names, dataset.factor_sizes, values):
        features[f"label_{name}"] = datasets.ClassLabel(names=_label_names(vals, size))
    for name, vals in zip(dataset.factor_names, values):
        if vals is not None:
            features[f"value_{name}"] = datasets.Value("float32")
    return datasets.Features(features)


def to_hf_dataset(dataset, indices: Optional[Sequence[int]] = None, batch_size: int = 256,
                  cache_dir: Optional[str] = None):
    """`datasets.Dataset` holding the images and factor classes of `indices` (default: all)."""
    import datasets

    indices = np.arange(len(dataset)) if indices is None else dataset.check_indices(indices)
    features = factor_dataset_features(dataset)
    values = dataset.factor_values or [None] * dataset.num_factors

    def rows():
        for start in range(0, len(indices), batch_size):
            batch = indices[start:start + batch_size]
            images = dataset.get_images(batch)
            classes = dataset.index_to_factors(batch)
            for image, cls in zip(images, classes):
                row = {"image": _image_to_pil(image)}
                for k, name in enumerate(dataset.factor_names):
                    row[f"label_{name}"] = int(cls[k])
                    if values[k] is not None:
                        row[f"value_{name}"] = float(values[k][cls[k]])
                yield row

    # a fresh fingerprint: the generator closes over the dataset, which datasets cannot hash
    return datasets.Dataset.from_generator(rows, features=features, cache_dir=cache_dir,
                                           fingerprint=uuid.uuid4().hex)
