"""Which datasets a training run trains and validates on, derived from its saved settings.

The training scripts (`training/*.py`) and `encdiff-evaluate` share these rules, so that an
evaluation of a run folder scores the same held set, at the same image size, as the run's
validation did. `settings` is the run's `training_args.json` (or the scripts' parsed arguments as a
dict): keys `dataset`, `dataset_options`, `validation_dataset`, `validation_dataset_options`, and the
image size as `preset_spec["image_size"]` (train_encdiff.py) or `image_size` (the other scripts).

Example:
    >>> settings = {"dataset": "3dshapes.h5", "dataset_options": {}, "preset_spec": {"image_size": 16}}
    >>> held_dataset_spec(settings, run_image_size(settings))
    ('3dshapes.h5', {'image_size': 16})
"""
from __future__ import annotations

import json
import os
from typing import Optional

from .loading import PROCEDURAL_SHAPES3D

HELD_GRID = [5, 5, 5, 4, 4, 5]  # 10,000 points of the Shapes3D grid, evenly spaced values
RUN_SETTINGS_FILE = "training_args.json"


def run_image_size(settings: dict) -> Optional[int]:
    """The side of the images a run trained on: its preset's, else its `image_size` setting."""
    preset = settings.get("preset_spec") or {}
    size = preset.get("image_size", settings.get("image_size"))
    return None if size is None else int(size)


def with_image_size(options: Optional[dict], image_size: Optional[int]) -> dict:
    """Loader options with `image_size` added, unless they already set it."""
    options = dict(options or {})
    if image_size is not None:
        options.setdefault("image_size", image_size)
    return options


def train_dataset_spec(settings: dict, image_size: Optional[int]) -> tuple[str, dict]:
    """(source, loader options) of the training set."""
    return settings["dataset"], with_image_size(settings.get("dataset_options"), image_size)


def held_dataset_spec(settings: dict, image_size: Optional[int]) -> tuple[str, dict]:
    """(source, loader options) of the held set the metrics score.

    `validation_dataset` when given; for procedural training data without validation options the
    10,000-point sub-grid `HELD_GRID`; otherwise the training source with the validation options
    (or the training options).
    """
    dataset, options = settings["dataset"], settings.get("dataset_options") or {}
    held_source, held_options = settings.get("validation_dataset"), settings.get("validation_dataset_options")
    if held_source is not None:
        source, options = held_source, held_options or {}
    elif dataset == PROCEDURAL_SHAPES3D and held_options is None:
        source, options = PROCEDURAL_SHAPES3D, {**options, "factor_sizes": HELD_GRID}
    else:
        source, options = dataset, held_options or options
    return source, with_image_size(options, image_size)


def read_run_settings(folder: str | os.PathLike) -> Optional[dict]:
    """The `training_args.json` of a run folder, or None where there is none."""
    path = os.path.join(os.fspath(folder), RUN_SETTINGS_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)
