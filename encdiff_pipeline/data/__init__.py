"""Ground-truth factor datasets."""
from .factor_dataset import FactorDataset, FactorGrid

__all__ = ["FactorDataset", "FactorGrid"]
