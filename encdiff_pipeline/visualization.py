"""Render EncDiff outputs to PIL: image grids (swap grids, traversals) and attention heatmaps.

Example:
    >>> from encdiff_pipeline.visualization import image_grid, attention_grid
    >>> image_grid(pipe.swap(images).images).save("swap.png")          # rows = swapped concepts
    >>> image_grid(rows, row_labels=["input", "concept 0"], min_cell_size=64).save("labelled.png")
    >>> attention_grid(images, pipe.attention_maps(images)).save("attention.png")
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import math

import matplotlib
import numpy as np
import PIL.Image
import PIL.ImageDraw
import torch

from .image_range import to_unit_images

GridInput = Union[Sequence[PIL.Image.Image], Sequence[Sequence[PIL.Image.Image]], np.ndarray, torch.Tensor]


def to_pil_images(images) -> list[PIL.Image.Image]:
    """A PIL image, a list of them, a `(B, H, W, C)` array in [0, 1] or uint8, or a `(B, C, H, W)`
    tensor in [0, 1] (the pipeline's "np" / "pt" outputs) -> list of RGB PIL images."""
    if isinstance(images, PIL.Image.Image):
        return [images.convert("RGB")]
    if isinstance(images, torch.Tensor):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise ValueError(f"Expected a (B, C, H, W) tensor, got shape {tuple(images.shape)}.")
        images = images.detach().float().cpu().permute(0, 2, 3, 1).numpy()
    if isinstance(images, np.ndarray):
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise ValueError(f"Expected a (B, H, W, C) array with 1 or 3 channels, got shape {images.shape}.")
        if images.dtype != np.uint8:
            if not np.isfinite(images).all():
                raise ValueError("images contain NaN or infinite values.")
            images = (np.clip(images, 0.0, 1.0) * 255).round().astype(np.uint8)
        return [PIL.Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).convert("RGB") for image in images]
    if isinstance(images, Sequence) and all(isinstance(image, PIL.Image.Image) for image in images):
        return [image.convert("RGB") for image in images]
    raise ValueError(f"Cannot read images from {type(images).__name__}; expected PIL, numpy or torch images.")


def image_grid(images: GridInput, cols: int | None = None, padding: int = 2, background: int = 255,
               row_labels: Sequence[str] | None = None, col_labels: Sequence[str] | None = None,
               min_cell_size: int | None = None) -> PIL.Image.Image:
    """Paste images into one grid image, optionally enlarged and with labelled rows and columns.

    Args:
        images: rows of images (a list of lists of PIL, a `(R, C, H, W, 3)` array or `(R, C, 3, H, W)`
            tensor, as `EncDiffPipeline.swap` returns) or a flat list / batch, laid out `cols` per row
            (default: one row).
        padding: pixels between cells.
        background: grey level of the padding.
        row_labels: text left of each row (PIL's default font).
        col_labels: text above each column.
        min_cell_size: enlarge the images by a whole factor with nearest neighbour until their
            smaller side is at least this many pixels (16 px images at 64: 4x).

    Example:
        >>> grid = image_grid(np.zeros((2, 3, 16, 16, 3)), row_labels=["input", "swap"],
        ...                   col_labels=["a", "b", "c"], min_cell_size=64)
        >>> grid.size[0] > 3 * 64 and grid.size[1] > 2 * 64
        True
    """
    if isinstance(images, (np.ndarray, torch.Tensor)) and images.ndim == 5:
        rows = [to_pil_images(row) for row in images]
    elif isinstance(images, Sequence) and images and not isinstance(images[0], PIL.Image.Image):
        rows = [to_pil_images(row) for row in images]
    else:
        flat = to_pil_images(images)
        cols = cols or len(flat)
        rows = [flat[i : i + cols] for i in range(0, len(flat), cols)]
    if not rows or not rows[0]:
        raise ValueError("image_grid needs at least one image.")
    width, height = rows[0][0].size
    if any(image.size != (width, height) for row in rows for image in row):
        raise ValueError("All images of a grid must have the same size.")
    num_cols = max(len(row) for row in rows)
    if row_labels is not None and len(row_labels) != len(rows):
        raise ValueError(f"row_labels has {len(row_labels)} entries for {len(rows)} rows.")
    if col_labels is not None and len(col_labels) != num_cols:
        raise ValueError(f"col_labels has {len(col_labels)} entries for {num_cols} columns.")
    if min_cell_size and min(width, height) < min_cell_size:
        factor = math.ceil(min_cell_size / min(width, height))
        width, height = width * factor, height * factor
        rows = [[image.resize((width, height), PIL.Image.NEAREST) for image in row] for row in rows]
    measure = PIL.ImageDraw.Draw(PIL.Image.new("RGB", (1, 1)))
    text_size = lambda text: measure.textbbox((0, 0), text)[2:]  # noqa: E731  (width, height) in the default font
    left = max(text_size(t)[0] for t in row_labels) + 2 * padding + 4 if row_labels else 0
    top = max(text_size(t)[1] for t in col_labels) + 2 * padding + 4 if col_labels else 0
    grid = PIL.Image.new(
        "RGB",
        (left + num_cols * width + (num_cols - 1) * padding, top + len(rows) * height + (len(rows) - 1) * padding),
        (background,) * 3,
    )
    for r, row in enumerate(rows):
        for c, image in enumerate(row):
            grid.paste(image, (left + c * (width + padding), top + r * (height + padding)))
    draw = PIL.ImageDraw.Draw(grid)
    ink = (0, 0, 0) if background > 127 else (255, 255, 255)
    for r, text in enumerate(row_labels or []):
        draw.text((padding + 2, top + r * (height + padding) + (height - text_size(text)[1]) // 2), text, fill=ink)
    for c, text in enumerate(col_labels or []):
        draw.text((left + c * (width + padding) + (width - text_size(text)[0]) // 2, padding + 2), text, fill=ink)
    return grid


def swap_grid_labels(num_concepts: int, num_images: int, name: str = "concept") -> tuple[list[str], list[str]]:
    """Row and column labels of a swap grid: an input row, then row k+1 = `name` k taken from image 0.

    Example:
        >>> swap_grid_labels(2, 3)
        (['input', 'concept 0 from image 0', 'concept 1 from image 0'], ['image 0', 'image 1', 'image 2'])
    """
    return (["input"] + [f"{name} {k} from image 0" for k in range(num_concepts)],
            [f"image {i}" for i in range(num_images)])


def heatmap_overlay(
    image: PIL.Image.Image, heatmap: np.ndarray | torch.Tensor, colormap: str = "jet", alpha: float = 0.5
) -> PIL.Image.Image:
    """Blend a `(h, w)` heatmap (min-max normalised, coloured with a matplotlib colormap and
    resized bilinearly to the image) over an image."""
    heatmap = heatmap.detach().float().cpu().numpy() if isinstance(heatmap, torch.Tensor) else np.asarray(heatmap, dtype=np.float32)
    if heatmap.ndim != 2:
        raise ValueError(f"heatmap must be 2-D (h, w), got shape {heatmap.shape}.")
    if not np.isfinite(heatmap).all():
        raise ValueError("heatmap contains NaN or infinite values.")
    low, high = float(heatmap.min()), float(heatmap.max())
    normalised = (heatmap - low) / (high - low) if high > low else np.zeros_like(heatmap)
    colours = (matplotlib.colormaps[colormap](normalised)[..., :3] * 255).astype(np.uint8)
    coloured = PIL.Image.fromarray(colours).resize(image.size, PIL.Image.BILINEAR)
    return PIL.Image.blend(image.convert("RGB"), coloured, alpha)


def attention_grid(
    images, maps: torch.Tensor | np.ndarray, colormap: str = "jet", alpha: float = 0.5, padding: int = 2
) -> PIL.Image.Image:
    """One row per image: the image, then its per-token attention maps overlaid (`maps` `(B, N, H, W)`
    from `EncDiffPipeline.attention_maps`). Images as for `to_pil_images`; torch images in [-1, 1]
    (the pipeline's input convention) are mapped to [0, 1] first."""
    if isinstance(images, torch.Tensor):
        images = to_unit_images(images)
    pil_images = to_pil_images(images)
    if maps.ndim != 4 or maps.shape[0] != len(pil_images):
        raise ValueError(f"maps must be (B, N, H, W) with B={len(pil_images)} images, got shape {tuple(maps.shape)}.")
    rows = [[image] + [heatmap_overlay(image, token_map, colormap, alpha) for token_map in image_maps]
            for image, image_maps in zip(pil_images, maps)]
    return image_grid(rows, padding=padding)
