"""Load a trained first stage (`train_autoencoder.py`'s output folder) for `--vae_path`.

Example:
    >>> vae = load_vae("runs/vq")  # doctest: +SKIP
"""
from __future__ import annotations

import json
import os

from diffusers import AutoencoderKL, VQModel


def load_vae(path: str | None):
    """The frozen, eval-mode `VQModel` / `AutoencoderKL` saved in `path` (None for None).

    Raises:
        SystemExit: no `config.json`, a model of another class, or no loadable safetensors weights.
    """
    if path is None:
        return None
    config_file = os.path.join(path, "config.json")
    if not os.path.isfile(config_file):
        raise SystemExit(f"error: --vae_path {path}: no config.json (expected a folder written by train_autoencoder.py)")
    with open(config_file, encoding="utf-8") as f:
        class_name = json.load(f).get("_class_name")
    classes = {"VQModel": VQModel, "AutoencoderKL": AutoencoderKL}
    if class_name not in classes:
        raise SystemExit(f"error: --vae_path {path}: a {class_name!r}, expected one of {sorted(classes)}")
    from ..hub import load_model_folder

    try:  # safetensors only: a pickle .bin in the folder is never read
        vae = load_model_folder(classes[class_name], path)
    except (OSError, ValueError, RuntimeError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SystemExit(f"error: --vae_path {path}: cannot load its {class_name} weights ({detail}); expected a "
                         "folder written by train_autoencoder.py (config.json + diffusion_pytorch_model.safetensors)")
    vae.requires_grad_(False)
    return vae.eval()
