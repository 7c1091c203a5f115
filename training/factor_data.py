"""The training and held datasets of the training scripts (train_encdiff.py, train_baseline.py)."""
from __future__ import annotations

from encdiff_pipeline.data import load_factor_dataset

PROCEDURAL = "procedural-shapes3d"
HELD_GRID = [5, 5, 5, 4, 4, 5]  # 10,000 points of the Shapes3D grid, evenly spaced values


def load_datasets(args, image_size: int):
    """The training dataset and the held dataset for metrics; unknown sources stop with a clear message.

    Reads `args.dataset`, `args.dataset_options`, `args.validation_dataset` and
    `args.validation_dataset_options`. Procedural data get `image_size` unless the options set it; the
    held set defaults to the 10,000-point procedural sub-grid `HELD_GRID`.
    """
    def load(source: str, options: dict):
        if source == PROCEDURAL:
            options = {"image_size": image_size, **options}
        try:
            return load_factor_dataset(source, **options)
        except Exception as err:  # any failure to open the source is a setup error, reported before training
            raise SystemExit(f"error: cannot load dataset {source!r} with options {options}: {err}") from err

    train = load(args.dataset, args.dataset_options)
    if args.validation_dataset is not None:
        held = load(args.validation_dataset, args.validation_dataset_options or {})
    elif args.dataset == PROCEDURAL and args.validation_dataset_options is None:
        held = load(PROCEDURAL, {**args.dataset_options, "factor_sizes": HELD_GRID})
    else:
        held = load(args.dataset, args.validation_dataset_options or args.dataset_options)
    return train, held
