"""β-VAE (Higgins et al., ICLR 2017): the ELBO with its KL term weighted by β > 1.

Example:
    >>> model = BetaVAEModel(sample_size=32, beta=4.0)
    >>> model.compute_loss(images).loss.backward()
"""
from __future__ import annotations

from diffusers.configuration_utils import register_to_config

from .vae import VAEModel, VAEOutput


class BetaVAEModel(VAEModel):
    """loss = reconstruction + β KL(q(z|x) || N(0, I)).

    Args:
        beta: KL weight. disentanglement_lib's study sweeps 1, 2, 4, 6, 8, 16; default 4.
        in_channels, sample_size, num_latents (10, the study's), width (the concept encoder's
        trunk width, 128), likelihood ("bernoulli" or "gaussian"): see `VAEModel`.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, sample_size: int = 64, num_latents: int = 10, width: int = 128,
                 likelihood: str = "bernoulli", beta: float = 4.0):
        super().__init__()
        if beta < 0:
            raise ValueError(f"beta must be >= 0, got {beta}")
        self._build(in_channels, sample_size, num_latents, width, likelihood)

    def regulariser(self, output: VAEOutput):
        kl = self._kl(output)
        return self.config.beta * kl, kl, None
