"""FactorVAE (Kim & Mnih, ICML 2018): the ELBO plus γ times a discriminator's estimate of the TC.

A discriminator D learns to tell posterior samples z ~ q(z) (class 0) from samples of the product of
marginals, made by permuting each latent dimension independently across the batch (class 1). Its
logit difference estimates log q(z) / prod_j q(z_j), whose mean is the total correlation. D has its
own optimiser (disentanglement_lib: Adam lr 1e-4, betas (0.5, 0.9)); as in disentanglement_lib, D
and the VAE see the same batch. D is a submodule, so it saves and loads with the model; train the
VAE on `vae_parameters()` and D on `discriminator.parameters()` with `discriminator_loss`.

Example:
    >>> model = FactorVAEModel(sample_size=32, gamma=10.0)
    >>> out = model.compute_loss(images)
    >>> out.loss.backward(); vae_optimizer.step()
    >>> discriminator_optimizer.zero_grad()           # also clears what the VAE loss left on D
    >>> model.discriminator_loss(out.latent_sample.detach()).backward(); discriminator_optimizer.step()
"""
from __future__ import annotations

from typing import Iterator, Optional

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import register_to_config
from torch import nn

from .vae import VAEModel, VAEOutput


def permute_dims(latents: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """Shuffle every column of (B, L) latents independently across the batch.

    Each dimension keeps its values (so its marginal), while the dependence between dimensions is
    broken: a sample of prod_j q(z_j).
    """
    if latents.ndim != 2:
        raise ValueError(f"latents must be (batch, latents), got shape {tuple(latents.shape)}")
    noise = torch.rand(latents.shape, generator=generator, device=latents.device)
    return torch.gather(latents, 0, noise.argsort(dim=0))


class FactorVAEDiscriminator(nn.Module):
    """disentanglement_lib's `fc_discriminator`: 6 x (Linear(1000) + LeakyReLU(0.2)), then 2 logits."""

    def __init__(self, num_latents: int, hidden_dim: int = 1000, num_layers: int = 6):
        super().__init__()
        layers: list[nn.Module] = []
        dim = num_latents
        for _ in range(num_layers):
            layers += [nn.Linear(dim, hidden_dim), nn.LeakyReLU(0.2)]
            dim = hidden_dim
        layers.append(nn.Linear(dim, 2))
        self.layers = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.layers(latents)


class FactorVAEModel(VAEModel):
    """loss = reconstruction + KL + γ mean(D(z)[:, 0] - D(z)[:, 1]).

    Args:
        gamma: TC weight. disentanglement_lib's study sweeps 10, 20, 30, 40, 50, 100; default 10.
        discriminator_hidden_dim, discriminator_layers: D's size (disentanglement_lib: 1000, 6).
        other args: see `VAEModel`.
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, sample_size: int = 64, num_latents: int = 10, width: int = 128,
                 likelihood: str = "bernoulli", gamma: float = 10.0, discriminator_hidden_dim: int = 1000,
                 discriminator_layers: int = 6):
        super().__init__()
        self._build(in_channels, sample_size, num_latents, width, likelihood)
        self.discriminator = FactorVAEDiscriminator(num_latents, discriminator_hidden_dim, discriminator_layers)

    def vae_parameters(self) -> Iterator[nn.Parameter]:
        """Every parameter except the discriminator's (what the VAE optimiser updates)."""
        return (p for name, p in self.named_parameters() if not name.startswith("discriminator."))

    def regulariser(self, output: VAEOutput):
        kl = self._kl(output)
        logits = self.discriminator(output.latent_sample)
        tc = (logits[:, 0] - logits[:, 1]).mean()
        return kl + self.config.gamma * tc, kl, tc

    def discriminator_loss(self, latents: torch.Tensor, generator: Optional[torch.Generator] = None) -> torch.Tensor:
        """Cross-entropy of D on latents (class 0) and their per-dimension permutation (class 1).

        Pass detached latents: only D should learn from this loss.
        """
        logits_joint = self.discriminator(latents)
        logits_permuted = self.discriminator(permute_dims(latents, generator))
        zeros = torch.zeros(len(latents), dtype=torch.long, device=latents.device)
        return 0.5 * (F.cross_entropy(logits_joint, zeros) + F.cross_entropy(logits_permuted, zeros + 1))
