"""How concept tokens enter the U-Net: as cross-attention context (EncDiff) and, for a U-Net built for
the AdaGN ablation (`class_embed_type="projection"`), flattened as `class_labels` into the timestep
embedding that drives every ResNet's scale-shift norm.

Example:
    >>> noise_pred = unet(noisy, t, **unet_conditioning(unet.config, tokens)).sample
"""
from __future__ import annotations

import torch


def unet_conditioning(unet_config, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """The U-Net's conditioning keyword arguments for `tokens` (B, N, d), given its config."""
    kwargs = {"encoder_hidden_states": tokens}
    if unet_config.class_embed_type == "projection":
        kwargs["class_labels"] = tokens.flatten(1)
    return kwargs
