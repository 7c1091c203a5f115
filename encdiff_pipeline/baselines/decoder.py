"""The baselines' deconvolutional decoder: the concept encoder's trunk, mirrored.

Example:
    >>> decoder = DeconvDecoder(num_latents=10, out_channels=3, sample_size=32, width=128)
    >>> decoder(torch.randn(2, 10)).shape   # logits of Bernoulli (or means of Gaussian) pixels
    torch.Size([2, 3, 32, 32])
"""
from __future__ import annotations

import math

import torch
from torch import nn

from ..models.concept_encoder import ResidualBlock


def default_num_downsamples(sample_size: int) -> int:
    """The number of stride-2 layers the concept encoder uses for this image size (down to 4x4)."""
    return max(1, round(math.log2(sample_size / 4)))


class DeconvDecoder(nn.Module):
    """Latents (B, L) -> pixel logits (B, C, H, W): the release trunk run backwards.

    Linear(L -> width * s * s), the two residual blocks (with the BN+ReLU between them), then
    `num_downsamples` ConvTranspose(k4, s2, p1) layers (BN+ReLU after all but the last), where
    `s = sample_size / 2**num_downsamples` is the trunk's final feature-map size.
    """

    def __init__(self, num_latents: int, out_channels: int, sample_size: int, width: int,
                 num_downsamples: int | None = None):
        super().__init__()
        num_downsamples = num_downsamples or default_num_downsamples(sample_size)
        if sample_size % 2**num_downsamples:
            raise ValueError(f"sample_size {sample_size} must be divisible by 2**{num_downsamples}")
        self.width = width
        self.start_size = sample_size // 2**num_downsamples
        self.project = nn.Linear(num_latents, width * self.start_size**2)
        layers: list[nn.Module] = [ResidualBlock(width), nn.BatchNorm2d(width), nn.ReLU(), ResidualBlock(width), nn.ReLU()]
        for i in range(num_downsamples):
            last = i == num_downsamples - 1
            layers.append(nn.ConvTranspose2d(width, out_channels if last else width, 4, stride=2, padding=1))
            if not last:
                layers += [nn.BatchNorm2d(width), nn.ReLU()]
        self.layers = nn.Sequential(*layers)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        h = self.project(latents).view(-1, self.width, self.start_size, self.start_size)
        return self.layers(h)
