"""The deterministic decoder of the "EncDec w/o Diff" ablation (`train_encdiff.py --decoder_type
deterministic`): the U-Net maps an all-zero input at timestep 0, conditioned on the tokens, to the
image (or the scaled latent) in one pass. Such a pipeline's DDIM generation is meaningless; decode
with this instead.

Example:
    >>> pipe = EncDiffPipeline.from_pretrained("runs/encdec")  # doctest: +SKIP
    >>> images = deterministic_decode(pipe.unet, pipe.encoder(pixels).tokens, vae=pipe.vae,
    ...                               latent_scale=pipe.config.latent_scale)  # doctest: +SKIP
"""
from __future__ import annotations

import torch

from .conditioning import unet_conditioning
from .latents import decode_from_diffusion


def deterministic_decode(unet, tokens: torch.Tensor, config=None, vae=None, latent_scale: float = 1.0) -> torch.Tensor:
    """Tokens (B, N, d) -> the U-Net's output for zeros at t=0: the image in [-1, 1] (pixel space), or
    the scaled latent, decoded by `vae` when given. `config`: the U-Net's config when `unet` is a
    wrapper (DDP, torch.compile) without one."""
    config = config or unet.config
    size = config.sample_size
    zeros = torch.zeros(tokens.shape[0], config.in_channels, size, size, device=tokens.device, dtype=tokens.dtype)
    timesteps = torch.zeros(tokens.shape[0], dtype=torch.long, device=tokens.device)
    out = unet(zeros, timesteps, **unet_conditioning(config, tokens)).sample
    return decode_from_diffusion(vae, out, latent_scale)
