"""`load_factor_dataset`: one entry point for every ground-truth-factor dataset.

Example:
    >>> from encdiff_pipeline.data import load_factor_dataset
    >>> data = load_factor_dataset("procedural-shapes3d", image_size=32)
    >>> len(data), data.factor_sizes
    (480000, [10, 10, 10, 8, 4, 15])
    >>> load_factor_dataset("3dshapes.h5", image_size=16).get_images([0]).shape  # doctest: +SKIP
    (1, 16, 16, 3)
"""
from __future__ import annotations

import os

PROCEDURAL_SHAPES3D = "procedural-shapes3d"


def load_factor_dataset(source: str | os.PathLike, **options):
    """Open a factor dataset.

    Every source takes `image_size`, the side of the images it returns. Stored images are resized
    per batch as they are read: the mean of each block when the stored side is a multiple of
    `image_size` (64 -> 16 averages 4x4 blocks), PIL LANCZOS otherwise (see `resize.py`). Loaders of
    stored images also take `channels=3`, which repeats grey images (dSprites) into three channels.

    `source` is one of:
      - `"procedural-shapes3d"`: rendered on demand; options `image_size`, `factor_values`,
        `factor_sizes`, `supersample` (see `ProceduralShapes3D`);
      - a `3dshapes.h5` (or any sub-grid of it in the same layout) -> `Shapes3D`;
      - a dSprites `.npz` (`imgs`, `latents_classes`, ...) -> `DSprites` (options `cache_dir`, `channels`);
      - an MPI3D `.npz` (`images`) -> `MPI3D` (options `factor_sizes`, `cache_dir`);
      - a folder of Cars3D `.mat` files -> `Cars3D` (option `image_size`);
      - a CelebA folder (`list_attr_celeba.txt` + images) or a Hub id containing "celeba" -> `CelebA`
        (40 binary attributes, no grid);
      - a `datasets` `save_to_disk` folder, parquet file(s), or a Hub dataset id with `image` and
        `label_*` columns -> `HFFactorDataset` (options `split`, `image_column`, `factor_columns`).
    """
    source = os.fspath(source)
    if source == PROCEDURAL_SHAPES3D:
        from .procedural_shapes3d import ProceduralShapes3D

        return ProceduralShapes3D(**options)
    if os.path.isfile(source):
        lower = source.lower()
        if lower.endswith((".h5", ".hdf5")):
            from .shapes3d import Shapes3D

            return Shapes3D(source, **options)
        if lower.endswith(".npz"):
            from .npz_member import npz_keys

            keys = npz_keys(source)
            if "imgs" in keys and "latents_classes" in keys:
                from .dsprites import DSprites

                return DSprites(source, **options)
            if "images" in keys:
                from .mpi3d import MPI3D

                return MPI3D(source, **options)
            raise ValueError(f"{source}: expected a dSprites npz ('imgs', 'latents_classes', 'latents_values') "
                             f"or an MPI3D npz ('images'); the file holds {keys}")
        if lower.endswith(".parquet"):
            from .hub import load_hf_factor_dataset

            return load_hf_factor_dataset(source, **options)
        raise ValueError(f"{source}: unknown file type; expected .h5, .npz or .parquet")
    if os.path.isdir(source):
        names = os.listdir(source)
        if any(n.endswith(".mat") for n in names):
            from .cars3d import Cars3D

            return Cars3D(source, **options)
        if "list_attr_celeba.txt" in names:
            from .celeba import CelebA

            return CelebA(source, **options)
        if not names:
            raise ValueError(f"{source}: the folder is empty; expected a Cars3D folder (.mat files), a CelebA folder "
                             "(list_attr_celeba.txt and the images) or a `datasets` folder (save_to_disk or parquet)")
        from .hub import load_hf_factor_dataset

        return load_hf_factor_dataset(source, **options)
    if source.count("/") == 1 and not source.startswith((".", "/")):
        if "celeba" in source.lower():
            import datasets

            from .celeba import CelebA

            split = options.pop("split", "train")
            image_size = options.pop("image_size", 64)
            return CelebA.from_hf_dataset(datasets.load_dataset(source, split=split, **options),
                                          image_size=image_size)
        from .hub import load_hf_factor_dataset

        return load_hf_factor_dataset(source, **options)
    raise ValueError(f"{source!r}: not found; expected '{PROCEDURAL_SHAPES3D}', an existing file or folder "
                     f"(3dshapes.h5, dSprites/MPI3D .npz, Cars3D .mat folder, CelebA folder, datasets folder) "
                     f"or a Hub dataset id 'owner/name'")
