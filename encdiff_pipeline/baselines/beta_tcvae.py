"""β-TCVAE (Chen et al., NeurIPS 2018): penalise only the total correlation part of the KL.

KL(q(z|x) || p(z)) averaged over data splits into index-code MI + total correlation + dimension-wise
KL; β-TCVAE weights the TC by β, estimated on each minibatch (`losses.total_correlation`). As in
disentanglement_lib: regulariser = KL + (β - 1) TC.

Example:
    >>> model = BetaTCVAEModel(sample_size=32, beta=6.0)
    >>> model.compute_loss(images).total_correlation
"""
from __future__ import annotations

from diffusers.configuration_utils import register_to_config

from .losses import total_correlation
from .vae import VAEModel, VAEOutput


class BetaTCVAEModel(VAEModel):
    """loss = reconstruction + KL + (β - 1) TC.

    Args:
        beta: TC weight. disentanglement_lib's study sweeps 1, 2, 4, 6, 8, 10; default 6.
        other args: see `VAEModel`.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, sample_size: int = 64, num_latents: int = 10, width: int = 128,
                 likelihood: str = "bernoulli", beta: float = 6.0):
        super().__init__()
        self._build(in_channels, sample_size, num_latents, width, likelihood)

    def regulariser(self, output: VAEOutput):
        kl = self._kl(output)
        tc = total_correlation(output.latent_sample, output.latent_mean, output.latent_logvar)
        return kl + (self.config.beta - 1.0) * tc, kl, tc
