"""A PNG sheet that shows what each factor does: one row per factor, varying only that factor.

Example:
    python -m encdiff_pipeline.data.sample_sheet --dataset procedural-shapes3d --out sheet.png
    encdiff-sample-sheet --dataset 3dshapes.h5 --out sheet.png --columns 10
"""
from __future__ import annotations

import argparse
from typing import Optional, Sequence

import numpy as np

MIN_CELL = 64  # images are enlarged (nearest neighbour) to at least this many pixels
MAX_CELL = 2048  # and to at most this many: a sheet of 15 x 6 such cells is already ~1 GB of pixels


def sample_sheet(dataset, base_factors: Optional[Sequence[int]] = None, columns: int = 15,
                 scale: Optional[int] = None) -> np.ndarray:
    """Sheet image (H, W, 3) uint8, labelled: row k shows `base_factors` with factor k swept over up to
    `columns` evenly spaced classes, from its first class (left) to its last.

    `scale` enlarges every image by that factor (nearest neighbour); by default enough for `MIN_CELL` px.

    Example:
        >>> sheet = sample_sheet(load_factor_dataset("procedural-shapes3d", image_size=16))  # doctest: +SKIP
    """
    from ..visualization import image_grid

    sizes = list(dataset.factor_sizes)
    if base_factors is None:  # a varied default (for Shapes3D: three different hues, a sphere)
        base_factors = [(size // 2 + 3 * k) % size for k, size in enumerate(sizes)]
    base = np.asarray(base_factors, dtype=np.int64)
    dataset.factors_to_index(base)  # validates
    rows = []
    for k, size in enumerate(sizes):
        classes = np.unique(np.round(np.linspace(0, size - 1, min(columns, size))).astype(np.int64))
        factors = np.repeat(base[None], len(classes), axis=0)
        factors[:, k] = classes
        rows.append(dataset.get_images(dataset.factors_to_index(factors)))
    num_cols = max(len(row) for row in rows)
    col_labels = ["first class"] + [""] * (num_cols - 2) + ["last class"] if num_cols > 1 else ["class"]
    cell = MIN_CELL if scale is None else scale * min(rows[0].shape[1:3])
    if cell > MAX_CELL:
        raise ValueError(f"--scale / scale {scale} enlarges the {min(rows[0].shape[1:3])}-px images to {cell} px; expected "
                         f"at most {MAX_CELL} px per image (scale <= {MAX_CELL // min(rows[0].shape[1:3])})")
    grid = image_grid(rows, row_labels=[f"{name} ({size})" for name, size in zip(dataset.factor_names, sizes)],
                      col_labels=col_labels, min_cell_size=cell)
    return np.asarray(grid)


def save_sample_sheet(dataset, path: str, **kwargs) -> str:
    """Write `sample_sheet(dataset, **kwargs)` to a PNG (atomically) and return the path."""
    from PIL import Image

    from ..atomic import atomic_path

    sheet = sample_sheet(dataset, **kwargs)
    with atomic_path(path) as tmp:
        Image.fromarray(sheet).save(tmp, format="PNG")
    return path


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`encdiff-sample-sheet`: user errors end in one line `encdiff-sample-sheet: error: ...` (exit 1)."""
    from ..cli import run_cli

    return run_cli(_main, argv, prog="encdiff-sample-sheet")


def _main(argv: Optional[Sequence[str]] = None) -> None:
    from ..cli import check_output_file, check_output_spares_input
    from .loading import load_factor_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="procedural-shapes3d",
                        help="'procedural-shapes3d', a dataset file/folder or a Hub id")
    parser.add_argument("--out", default="sample_sheet.png", help="PNG to write")
    parser.add_argument("--image_size", type=int, default=None, help="procedural-shapes3d only: 64 or 32")
    parser.add_argument("--columns", type=int, default=15, help="images per row (at most)")
    parser.add_argument("--scale", type=int, default=None, help="pixel magnification (default: 64 px per image)")
    parser.add_argument("--base_index", type=int, default=None,
                        help="grid index whose factors are held fixed (default: a varied fixed choice)")
    args = parser.parse_args(argv)
    for name in ("columns", "scale", "image_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {value}")
    check_output_spares_input("--out", args.out, "--dataset", args.dataset)
    check_output_file(args.out, "--out")
    options = {"image_size": args.image_size} if args.image_size else {}
    dataset = load_factor_dataset(args.dataset, **options)
    base = None if args.base_index is None else dataset.index_to_factors(args.base_index)
    path = save_sample_sheet(dataset, args.out, base_factors=base, columns=args.columns, scale=args.scale)
    print(f"wrote {path}: {dataset.num_factors} rows ({', '.join(dataset.factor_names)})")


if __name__ == "__main__":
    raise SystemExit(main())
