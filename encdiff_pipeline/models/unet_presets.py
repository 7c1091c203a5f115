"""Named `UNet2DConditionModel` configurations for EncDiff's denoiser.

Concept tokens enter only through cross-attention (`encoder_hidden_states`, so `cross_attention_dim`
must equal the encoder's `token_dim`); the timestep enters through scale-shift norm (AdaGN). No class
or added embeddings.

Example:
    >>> from encdiff_pipeline.models import unet_from_preset
    >>> unet = unet_from_preset("paper")                      # latent 16x16x3
    >>> unet = unet_from_preset("small", cross_attention_dim=32)
"""
from __future__ import annotations

import inspect
from typing import Any

from diffusers import UNet2DConditionModel

_COMMON: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "cross_attention_dim": 16,
    "resnet_time_scale_shift": "scale_shift",
    "transformer_layers_per_block": 1,
}

UNET_PRESETS: dict[str, dict[str, Any]] = {
    # The release's LDM U-Net on 16x16x3 VQ latents: base 64, mult [1, 2, 4, 4], 2 res blocks per
    # level, transformer depth 1 at 16, 8, 4 and the middle, 8 heads, context dim 16.
    # diffusers quirk: UNet2DConditionModel's `attention_head_dim` is the number of heads.
    "paper": {
        **_COMMON,
        "sample_size": 16,
        "block_out_channels": (64, 128, 256, 256),
        "layers_per_block": 2,
        "down_block_types": ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
        "attention_head_dim": 8,
    },
    # CPU training in pixel space at 16x16 (levels 16, 8, 4), ~1.7M params: attention at 8x8, 4x4 and
    # the middle. Chosen by what the encoder learns per minute of CPU training against other layouts
    # (fewer attention levels, a fourth level, 32x32 pixels, attention at 16x16); the README's Results
    # give the figures.
    "small": {
        **_COMMON,
        "sample_size": 16,
        "block_out_channels": (32, 64, 64),
        "layers_per_block": 1,
        "down_block_types": ("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
        "attention_head_dim": 4,
    },
    # For tests: two levels, few channels, still with cross-attention.
    "tiny": {
        **_COMMON,
        "sample_size": 8,
        "block_out_channels": (8, 16),
        "layers_per_block": 1,
        "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
        "mid_block_type": "UNetMidBlock2DCrossAttn",
        "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
        "attention_head_dim": 2,
        "norm_num_groups": 4,
    },
}


def unet_from_preset(name: str, **overrides: Any) -> UNet2DConditionModel:
    """Build a freshly initialised `UNet2DConditionModel` from a named preset.

    Args:
        name: one of `UNET_PRESETS` ("paper", "small", "tiny").
        **overrides: any `UNet2DConditionModel` argument, e.g. `sample_size`, `in_channels`,
            `cross_attention_dim` (must equal the encoder's `token_dim`).

    Example:
        >>> unet = unet_from_preset("tiny", cross_attention_dim=8)
        >>> eps = unet(x, t, encoder_hidden_states=tokens).sample
    """
    if name not in UNET_PRESETS:
        raise ValueError(f"Unknown U-Net preset {name!r}; expected one of {sorted(UNET_PRESETS)}.")
    accepted = set(inspect.signature(UNet2DConditionModel.__init__).parameters) - {"self"}
    unknown = sorted(set(overrides) - accepted)
    if unknown:
        raise ValueError(f"Unknown UNet2DConditionModel argument(s) {unknown} for preset {name!r}.")
    return UNet2DConditionModel(**{**UNET_PRESETS[name], **overrides})
