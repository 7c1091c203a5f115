"""Pixels <-> the diffusion space of a first stage (`VQModel` / `AutoencoderKL`), with the latent scale.

Diffusion runs on `first-stage latents * latent_scale` (the paper: 1 / std of the first training
batch). A `VQModel` gives its latents before quantisation (its decoder quantises them, as in LDM);
an `AutoencoderKL` a posterior sample (with a generator) or its mode.

Example:
    >>> z = encode_to_diffusion(vae, images, latent_scale)      # images (B, C, H, W) in [-1, 1]
    >>> pixels = decode_from_diffusion(vae, z, latent_scale)    # roughly [-1, 1]
"""
from __future__ import annotations

import torch


def encode_first_stage(vae, images: torch.Tensor, generator: torch.Generator | None = None):
    """(latents, posterior) of pixels in [-1, 1]: a VQ first stage's pre-quantisation latents and
    `None`, or a KL first stage's posterior sample (mode without `generator`) and the posterior."""
    encoded = vae.encode(images)
    if hasattr(encoded, "latents"):  # VQModel
        return encoded.latents, None
    posterior = encoded.latent_dist
    return (posterior.sample(generator) if generator is not None else posterior.mode()), posterior


def encode_latents(vae, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """Pixels in [-1, 1] -> unscaled first-stage latents (see `encode_first_stage`)."""
    return encode_first_stage(vae, images, generator)[0]


def encode_to_diffusion(vae, images: torch.Tensor, latent_scale: float = 1.0,
                        generator: torch.Generator | None = None) -> torch.Tensor:
    """Pixels in [-1, 1] -> float32 diffusion-space samples: scaled latents, or the pixels without a `vae`."""
    if vae is None:
        return images.float()
    return encode_latents(vae, images.to(vae.dtype), generator).float() * latent_scale


def decode_from_diffusion(vae, latents: torch.Tensor, latent_scale: float = 1.0) -> torch.Tensor:
    """Diffusion-space samples -> float32 pixels (roughly [-1, 1]); the samples themselves without a `vae`."""
    if vae is None:
        return latents
    return vae.decode((latents / latent_scale).to(vae.dtype)).sample.float()
