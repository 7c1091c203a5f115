"""VAE baselines for the disentanglement comparison: β-VAE, β-TCVAE and FactorVAE.

All three share the concept encoder's trunk (Gaussian posterior head, 2L outputs) and a mirrored
deconvolutional decoder; their representation is the posterior mean.

Example:
    >>> from encdiff_pipeline.baselines import BASELINES, load_baseline
    >>> model = BASELINES["beta_tcvae"](sample_size=32)
    >>> model.save_pretrained("out/beta_tcvae")
    >>> model = load_baseline("out/beta_tcvae")
"""
from __future__ import annotations

import json
import os

from .beta_tcvae import BetaTCVAEModel
from .beta_vae import BetaVAEModel
from .factor_vae_model import FactorVAEDiscriminator, FactorVAEModel, permute_dims
from .losses import gaussian_kl, gaussian_log_density, reconstruction_loss, total_correlation
from .vae import VAELossOutput, VAEModel, VAEOutput

BASELINES = {"beta_vae": BetaVAEModel, "beta_tcvae": BetaTCVAEModel, "factor_vae": FactorVAEModel}


def load_baseline(path: str | os.PathLike) -> VAEModel:
    """Load any saved baseline from its folder, picking the class from `config.json`."""
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise FileNotFoundError(f"{config_file} not found: expected a folder written by save_pretrained")
    with open(config_file, encoding="utf-8") as f:
        class_name = json.load(f).get("_class_name")
    classes = {cls.__name__: cls for cls in BASELINES.values()}
    if class_name not in classes:
        raise ValueError(f"{config_file}: _class_name {class_name!r} is not one of {sorted(classes)}")
    from ..hub import load_model_folder

    return load_model_folder(classes[class_name], path)  # safetensors only: a pickle .bin is never read


__all__ = [
    "BASELINES", "load_baseline", "VAEModel", "VAEOutput", "VAELossOutput", "BetaVAEModel", "BetaTCVAEModel",
    "FactorVAEModel", "FactorVAEDiscriminator", "permute_dims", "reconstruction_loss", "gaussian_kl",
    "gaussian_log_density", "total_correlation",
]
