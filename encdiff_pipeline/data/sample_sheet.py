"""A PNG sheet that shows what each factor does: one row per factor, varying only that factor.

Example:
    python -m encdiff_pipeline.data.sample_sheet --dataset procedural-shapes3d --out sheet.png
    encdiff-sample-sheet --dataset 3dshapes.h5 --out sheet.png --columns 10
"""
from __future__ import annotations

import argparse
import os
import tempfile
from typing import Optional, Sequence

import numpy as np

_LABEL_WIDTH = 110


def sample_sheet(dataset, base_factors: Optional[Sequence[int]] = None, columns: int = 15,
                 scale: int = 2) -> np.ndarray:
    """Sheet image (rows*H*scale, label + columns*W*scale, 3) uint8.

    Row k shows `base_factors` with factor k swept over up to `columns` evenly spaced classes.
    """
    from PIL import Image, ImageDraw

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
        images = dataset.get_images(dataset.factors_to_index(factors))
        if images.shape[-1] == 1:
            images = np.repeat(images, 3, axis=-1)
        height, width = images.shape[1:3]
        row = np.full((height, columns * width, 3), 0.5, dtype=np.float32)
        for j, image in enumerate(images):
            row[:, j * width:(j + 1) * width] = image
        rows.append(row)
    sheet = (np.clip(np.concatenate(rows, axis=0), 0, 1) * 255).round().astype(np.uint8)
    picture = Image.fromarray(sheet).resize((sheet.shape[1] * scale, sheet.shape[0] * scale), Image.NEAREST)
    canvas = Image.new("RGB", (picture.width + _LABEL_WIDTH, picture.height), "white")
    canvas.paste(picture, (_LABEL_WIDTH, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = picture.height // len(sizes)
    for k, name in enumerate(dataset.factor_names):
        draw.text((6, k * row_height + row_height // 2 - 10), f"{name}\n({sizes[k]})", fill="black")
    return np.asarray(canvas)


def save_sample_sheet(dataset, path: str, **kwargs) -> str:
    """Write `sample_sheet(dataset, **kwargs)` to a PNG (atomically) and return the path."""
    from PIL import Image

    sheet = sample_sheet(dataset, **kwargs)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=folder, suffix=".png.tmp")
    os.close(fd)
    try:
        Image.fromarray(sheet).save(tmp, format="PNG")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    return path


def main(argv: Optional[Sequence[str]] = None) -> None:
    from .loading import load_factor_dataset

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="procedural-shapes3d",
                        help="'procedural-shapes3d', a dataset file/folder or a Hub id")
    parser.add_argument("--out", default="sample_sheet.png", help="PNG to write")
    parser.add_argument("--image-size", type=int, default=None, help="procedural-shapes3d only: 64 or 32")
    parser.add_argument("--columns", type=int, default=15, help="images per row (at most)")
    parser.add_argument("--scale", type=int, default=2, help="pixel magnification")
    parser.add_argument("--base-index", type=int, default=None,
                        help="grid index whose factors are held fixed (default: a varied fixed choice)")
    args = parser.parse_args(argv)
    options = {"image_size": args.image_size} if args.image_size else {}
    dataset = load_factor_dataset(args.dataset, **options)
    base = None if args.base_index is None else dataset.index_to_factors(args.base_index)
    path = save_sample_sheet(dataset, args.out, base_factors=base, columns=args.columns, scale=args.scale)
    print(f"wrote {path}: {dataset.num_factors} rows ({', '.join(dataset.factor_names)})")


if __name__ == "__main__":
    main()
