"""Named EncDiff training presets: U-Net preset + concept-encoder settings + training defaults.

A preset fixes the image size the model is built for, whether diffusion runs on the latents of a
first stage (`latent`: a trained one, `--vae_path`) or on p x p pixel patches folded into channels
(`patch_size` > 1: a `PatchAutoencoder`, the U-Net at 1/p of the image's side), the encoder and
U-Net configs, and recommended training hyperparameters
(any of them can be overridden on the command line). A JSON file with the same keys can be passed
with `--config`.

Example:
    >>> preset = load_preset("small")
    >>> preset["image_size"], preset["unet_preset"], preset["training"]["learning_rate"]
    (16, 'small', 0.001)
"""
from __future__ import annotations

import copy
import json
import os
from typing import Any

ENCDIFF_PRESETS: dict[str, dict[str, Any]] = {
    # For tests and smoke runs: a few thousand U-Net parameters, 4 concepts, 16x16 pixels.
    "tiny": {
        "image_size": 16,
        "latent": False,
        "encoder": {"num_concepts": 4, "token_dim": 8, "width": 16, "mlp_hidden_dims": [16, 16]},
        "unet_preset": "tiny",
        "unet": {},
        "training": {"learning_rate": 1e-3, "lr_warmup_steps": 0, "beta_schedule": "cosine",
                     "train_batch_size": 8, "ema_decay": 0.999},
    },
    # The CPU default: pixel space at 16x16, N=20 scalar concepts of d=32, the encoder's learning rate
    # 3x the U-Net's, the loss weighted per pixel by the image's edges (edge_weighting 4), the U-Net
    # predicting the clean image (x0: generation from noise then follows the concepts' hues; with eps
    # the first, high-noise sampling steps lose them). Chosen with benchmarks/encdiff_variants.py and
    # benchmarks/generation_fidelity.py (the README's Results list each variant and what it did).
    "small": {
        "image_size": 16,
        "latent": False,
        "encoder": {"num_concepts": 20, "token_dim": 32, "width": 128},
        "unet_preset": "small",
        "unet": {},
        "training": {"learning_rate": 1e-3, "encoder_lr_scale": 3.0, "edge_weighting": 4.0, "lr_warmup_steps": 200,
                     "beta_schedule": "cosine", "train_batch_size": 64, "ema_decay": 0.999, "prediction_type": "sample"},
    },
    # The release: 64x64 images, diffusion on 16x16x3 latents of a VQ first stage (f=4, train it with
    # train_autoencoder.py), N=20, d=16, batch 128, lr 2.56e-4 with 10k warm-up, EMA 0.9999.
    "paper": {
        "image_size": 64,
        "latent": True,
        "encoder": {"num_concepts": 20, "token_dim": 16, "width": 128},
        "unet_preset": "paper",
        "unet": {},
        "training": {"learning_rate": 2.56e-4, "lr_warmup_steps": 10000, "beta_schedule": "linear",
                     "train_batch_size": 128, "ema_decay": 0.9999},
    },
}

_KEYS = {"image_size", "latent", "patch_size", "encoder", "unet_preset", "unet", "training"}
_TRAINING_KEYS = {"learning_rate", "lr_warmup_steps", "beta_schedule", "train_batch_size", "ema_decay", "prediction_type",
                  "timestep_sampling", "logsnr_mean", "logsnr_std", "edge_loss_weight", "edge_weighting", "skip_dropout",
                  "encoder_lr_scale", "token_dropout", "guidance_scale", "loss_weighting", "loss_weight_cap",
                  "sample_prediction_from", "token_gradient"}


def add_image_size_argument(parser, default_preset: str | None) -> None:
    """`--image_size`, the one spelling of the image side in every training CLI (stored images are
    resized to it). Its default is always an EncDiff preset's `image_size`: `default_preset`'s, or
    with None the run's own `--preset` / `--config` (train_encdiff.py, which refuses any other size)."""
    if default_preset is None:
        parser.add_argument("--image_size", type=int, default=None,
                            help="image side; must be the preset's (None: the --preset's image_size)")
    else:
        parser.add_argument("--image_size", type=int, default=ENCDIFF_PRESETS[default_preset]["image_size"],
                            help=f"image side, as EncDiff's {default_preset!r} preset has it; stored images "
                                 "are resized to it")


def load_preset(name: str | None = None, config_file: str | None = None) -> dict[str, Any]:
    """A preset by name, or read from a JSON file with the same keys (the file wins when both are given).

    Raises:
        ValueError: unknown preset name, unreadable file, or unknown / missing keys.
    """
    if config_file is not None:
        if not os.path.isfile(config_file):
            raise ValueError(f"--config {config_file!r}: no such file (expected a JSON preset with keys {sorted(_KEYS)})")
        try:
            with open(config_file, encoding="utf-8") as f:
                preset = json.load(f)
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"--config {config_file!r} is not valid JSON: {err}") from err
        if not isinstance(preset, dict):
            raise ValueError(f"--config {config_file!r} must hold a JSON object with keys {sorted(_KEYS)}")
        source = f"config file {config_file!r}"
    else:
        if name not in ENCDIFF_PRESETS:
            raise ValueError(f"unknown --preset {name!r}; expected one of {sorted(ENCDIFF_PRESETS)} or --config FILE")
        preset = copy.deepcopy(ENCDIFF_PRESETS[name])
        source = f"preset {name!r}"
    unknown = set(preset) - _KEYS
    missing = {"image_size", "encoder", "unet_preset"} - set(preset)
    if unknown or missing:
        raise ValueError(f"{source}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}; expected {sorted(_KEYS)}")
    bad_training = set(preset.get("training", {})) - _TRAINING_KEYS
    if bad_training:
        raise ValueError(f"{source}: unknown training keys {sorted(bad_training)}; expected {sorted(_TRAINING_KEYS)}")
    preset.setdefault("latent", False)
    preset.setdefault("patch_size", 1)
    patch = preset["patch_size"]
    if isinstance(patch, bool) or not isinstance(patch, int) or patch < 1 or preset["image_size"] % patch:
        raise ValueError(f"{source}: patch_size must be a positive int dividing image_size {preset['image_size']}, got {patch!r}")
    if patch > 1 and preset["latent"]:
        raise ValueError(f"{source}: patch_size > 1 (the U-Net on pixel patches) and latent (a trained first stage) exclude each other")
    preset.setdefault("unet", {})
    preset.setdefault("training", {})
    return preset
