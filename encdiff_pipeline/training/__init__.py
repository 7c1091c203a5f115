"""Training machinery shared by the scripts in `training/` and the benchmarks: the diffusion objective
(what the U-Net predicts, which noise levels it trains on, auxiliary losses) and U-Net training
regularisers.

Example:
    >>> from encdiff_pipeline.training import DiffusionObjective
"""
from .diffusion_objective import PREDICTION_TYPES, TIMESTEP_SAMPLINGS, DiffusionObjective, finite_differences
from .skip_dropout import SkipDropout

__all__ = ["PREDICTION_TYPES", "TIMESTEP_SAMPLINGS", "DiffusionObjective", "SkipDropout", "finite_differences"]
