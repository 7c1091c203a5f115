"""The training and held datasets of the training scripts (train_encdiff.py, train_baseline.py,
train_autoencoder.py), at the image size the model is built for.

Example:
    >>> train, held = load_datasets(args, image_size=16)  # doctest: +SKIP
    resizing 3dshapes.h5 from 64x64 to 16x16 (box filter)
"""
from __future__ import annotations

import os

from accelerate import PartialState

from ..data import load_factor_dataset
from ..data.resize import resize_filter
from ..data.run_data import held_dataset_spec, train_dataset_spec

PROCEDURAL = "procedural-shapes3d"


def load_dataset(source: str, options: dict, role: str = ""):
    """Open one dataset; say so when stored images are resized; any failure stops with a clear message."""
    try:
        dataset = load_factor_dataset(source, **options)
    except Exception as err:  # any failure to open the source is a setup error, reported before training
        raise SystemExit(f"error: cannot load dataset {source!r} with options {options}: {err}") from err
    stored, size = getattr(dataset, "source_image_size", None), getattr(dataset, "image_size", None)
    if stored is not None and size is not None and resize_filter(stored, size) != "none":
        name = os.path.basename(os.path.normpath(source)) if os.path.exists(source) else source
        PartialState().print(f"resizing {role}{name} from {stored[0]}x{stored[1]} to {size}x{size} "
                             f"({resize_filter(stored, size)})")
    return dataset


def load_datasets(args, image_size: int):
    """The training dataset and the held dataset for metrics, both at `image_size` unless their options set it.

    Reads `args.dataset`, `args.dataset_options`, `args.validation_dataset` and
    `args.validation_dataset_options`; the held set follows `encdiff_pipeline.data.run_data.held_dataset_spec`
    (by default a 10,000-point procedural sub-grid, or the training source).
    """
    settings = vars(args)
    train = load_dataset(*train_dataset_spec(settings, image_size))
    held = load_dataset(*held_dataset_spec(settings, image_size), role="held set ")
    return train, held
