"""Ground-truth factor datasets: procedural Shapes3D (the offline default), real files and the Hub.

Example:
    >>> from encdiff_pipeline.data import load_factor_dataset
    >>> data = load_factor_dataset("procedural-shapes3d", image_size=32)
    >>> image, factors = data[0]
    >>> tuple(image.shape), factors.tolist()
    ((3, 32, 32), [0, 0, 0, 0, 0, 0])
"""
from .cars3d import Cars3D
from .celeba import CelebA
from .dsprites import DSprites
from .factor_dataset import FactorDataset, FactorGrid
from .hub import HFFactorDataset, load_hf_factor_dataset
from .loading import load_factor_dataset
from .mpi3d import MPI3D
from .procedural_shapes3d import ProceduralShapes3D
from .shapes3d import SHAPES3D_FACTOR_NAMES, SHAPES3D_FACTOR_SIZES, SHAPES3D_FACTOR_VALUES, Shapes3D
from .shapes3d_renderer import Shapes3DRenderer

__all__ = [
    "Cars3D",
    "CelebA",
    "DSprites",
    "FactorDataset",
    "FactorGrid",
    "HFFactorDataset",
    "MPI3D",
    "ProceduralShapes3D",
    "SHAPES3D_FACTOR_NAMES",
    "SHAPES3D_FACTOR_SIZES",
    "SHAPES3D_FACTOR_VALUES",
    "Shapes3D",
    "Shapes3DRenderer",
    "load_factor_dataset",
    "load_hf_factor_dataset",
]
