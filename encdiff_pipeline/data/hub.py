"""Factor datasets stored as `datasets` tables: Hub ids, `save_to_disk` folders, parquet files.

The schema is that of `eurecom-ds/shapes3d` (and of `FactorDataset.to_hf_dataset`): an `image`
column, one `label_<factor>` ClassLabel (or integer) column per factor and optionally
`value_<factor>` float columns with the label values. Rows may come in any order and may hold a
sub-grid; the grid is inferred from the label columns. Factors named like Shapes3D's are put in
Shapes3D order (the Hub stores columns alphabetically). `image_size` resizes each batch as it is
decoded and `channels=3` repeats grey images (see `resize.py`).

Example:
    >>> data = load_hf_factor_dataset("eurecom-ds/shapes3d")  # doctest: +SKIP
    >>> data.factor_names  # doctest: +SKIP
    ['floor_hue', 'wall_hue', 'object_hue', 'scale', 'shape', 'orientation']
    >>> load_hf_factor_dataset("eurecom-ds/shapes3d", image_size=16).get_images([0]).shape  # doctest: +SKIP
    (1, 16, 16, 3)
"""
from __future__ import annotations

import os
from typing import Optional, Sequence

import numpy as np

from .checks import check_finite_labels, picture_8bit
from .factor_dataset import FactorDataset
from .grid_inference import infer_grid
from .shapes3d import SHAPES3D_FACTOR_NAMES


class HFFactorDataset(FactorDataset):
    """A factor dataset backed by a `datasets.Dataset` (see the module docstring).

    Args:
        dataset: the table.
        image_column: its image column.
        factor_columns: label columns in factor order (default: every `label_*` column).
        source: a name for error messages.
        image_size: side of the returned images (default: as stored).
        channels: 3 repeats grey images; None keeps the stored channels.
    """

    def __init__(self, dataset, image_column: str = "image", factor_columns: Optional[Sequence[str]] = None,
                 source: str = "dataset", image_size: Optional[int] = None, channels: Optional[int] = None):
        self.source = source
        if image_column not in dataset.column_names:
            raise ValueError(f"{source}: no '{image_column}' column; columns are {dataset.column_names}")
        if factor_columns is None:
            factor_columns = [c for c in dataset.column_names if c.startswith("label_")]
            names = [c[len("label_"):] for c in factor_columns]
            if sorted(names) == sorted(SHAPES3D_FACTOR_NAMES):
                factor_columns = [f"label_{n}" for n in SHAPES3D_FACTOR_NAMES]
        factor_columns = list(factor_columns)
        missing = [c for c in factor_columns if c not in dataset.column_names]
        if not factor_columns or missing:
            raise ValueError(f"{source}: expected factor label columns (e.g. 'label_<factor>'); "
                             f"missing {missing or 'all'}; columns are {dataset.column_names}")
        self.factor_names = [c[len("label_"):] if c.startswith("label_") else c for c in factor_columns]
        if len(dataset) == 0:
            raise ValueError(f"{source}: the dataset has no rows; expected one image per factor combination")
        table = dataset.data  # arrow table: label columns are read without decoding any image
        columns = [np.asarray(table.column(c).to_numpy()) for c in factor_columns]
        for column, values in zip(factor_columns, columns):
            if values.dtype.kind not in "biuf":
                raise ValueError(f"{source}: label column '{column}' holds {values.dtype} values (e.g. {values[0]!r}); "
                                 "expected numbers (factor values or class indices)")
        labels = np.stack(columns, axis=1)
        check_finite_labels(labels, source, self.factor_names)
        grid = infer_grid(labels, source, self.factor_names)
        self.factor_sizes = grid.factor_sizes
        self._index_to_row = grid.index_to_row
        self.factor_values = []
        for k, column in enumerate(factor_columns):
            value_column = "value_" + self.factor_names[k]
            if value_column in dataset.column_names:
                first_row = np.unique(grid.row_classes[:, k], return_index=True)[1]
                values = np.asarray(table.column(value_column).to_numpy(), dtype=np.float64)[first_row]
            else:
                values = grid.factor_values[k].astype(np.float64)
                feature = dataset.features[column]
                try:  # ClassLabel names that are numbers are the label values
                    values = np.array([float(feature.int2str(int(c))) for c in grid.factor_values[k]])
                except (AttributeError, ValueError):
                    pass
            self.factor_values.append(values)
        self.hf_dataset = dataset
        self._images = dataset.select_columns([image_column])
        self._image_column = image_column
        first = self._decode([0])
        self.source_image_size = first.shape[1:3]
        self._set_output(image_size, channels, stored_channels=first.shape[-1])

    def _decode(self, rows: Sequence[int]) -> np.ndarray:
        pictures = self._images[list(rows)][self._image_column]
        pictures = [picture_8bit(p, f"{self.source}: row {row} of '{self._image_column}'") for p, row in zip(pictures, rows)]
        images = [np.asarray(p.convert("RGB") if p.mode not in ("RGB", "L") else p) for p in pictures]
        sizes = sorted({image.shape for image in images})
        if len(sizes) > 1:
            raise ValueError(f"{self.source}: images of different sizes {sizes} (rows {list(rows)[:8]}); "
                             "a factor dataset needs one image size")
        images = np.stack(images).astype(np.float32) / 255.0
        return images[..., None] if images.ndim == 3 else images

    def get_images(self, indices: Sequence[int]) -> np.ndarray:
        indices = self.check_indices(indices)
        rows = indices if self._index_to_row is None else self._index_to_row[indices]
        return self._resized(self._decode(rows.tolist()))


def _load_parquet(source: str, files, split: str, **load_options):
    """`datasets.load_dataset("parquet", ...)` with a corrupt file named in the error, not only in a log line."""
    import datasets

    try:
        return datasets.load_dataset("parquet", data_files=files, split=split, **load_options)
    except TypeError:
        raise  # a bad loader option: its own message names it
    except Exception as error:  # noqa: BLE001 - pyarrow / datasets errors of an unreadable file
        cause = error.__cause__ or error
        detail = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise OSError(f"{source}: cannot read the parquet data (corrupt or not parquet?): {detail}") from error


def _open_table(source: str, split: str, **load_options):
    import datasets

    if os.path.isdir(source) and (os.path.isfile(os.path.join(source, "dataset_info.json"))
                                  or os.path.isfile(os.path.join(source, "dataset_dict.json"))):
        try:
            table = datasets.load_from_disk(source)
        except IndexError:  # datasets fails so on a folder saved without rows (no arrow files)
            raise ValueError(f"{source}: the dataset has no rows (its `save_to_disk` folder holds no data files); "
                             "expected one image per factor combination") from None
    elif os.path.isfile(source) and source.endswith(".parquet"):
        table = _load_parquet(source, source, split, **load_options)
    elif os.path.isdir(source):
        files = sorted(os.path.join(r, f) for r, _, fs in os.walk(source) for f in fs if f.endswith(".parquet"))
        if not files:
            raise ValueError(f"{source}: expected a `save_to_disk` folder or parquet files")
        table = _load_parquet(source, files, split, **load_options)
    else:
        table = datasets.load_dataset(source, split=split, **load_options)
    if isinstance(table, datasets.DatasetDict):
        if split not in table:
            raise ValueError(f"{source}: no split '{split}'; splits are {list(table)}")
        table = table[split]
    return table


def load_hf_factor_dataset(source: str, split: str = "train", image_column: str = "image",
                           factor_columns: Optional[Sequence[str]] = None, image_size: Optional[int] = None,
                           channels: Optional[int] = None, **load_options) -> HFFactorDataset:
    """A factor dataset from a Hub id, a `save_to_disk` folder, or parquet file(s).

    Example:
        >>> data = load_hf_factor_dataset("shapes3d_subset", image_size=16)  # doctest: +SKIP
    """
    table = _open_table(source, split, **load_options)
    return HFFactorDataset(table, image_column=image_column, factor_columns=factor_columns, source=source,
                           image_size=image_size, channels=channels)
