"""`VAEModel`: what the three VAE baselines share — the concept encoder's trunk as a Gaussian
encoder, the mirrored deconvolutional decoder, and the ELBO's reconstruction and KL terms.

Each baseline (`BetaVAEModel`, `BetaTCVAEModel`, `FactorVAEModel`) subclasses it and only says
how its objective regularises the posterior (`regulariser`). The representation the metrics score
is the posterior mean, as in disentanglement_lib.

Images go in as the concept encoder takes them, (B, C, H, W) in [-1, 1]; the decoder returns
logits and the likelihood is on pixels in [0, 1]: Bernoulli (disentanglement_lib's default) or a
fixed-variance Gaussian (`likelihood="gaussian"`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
from diffusers.models.modeling_utils import ModelMixin
from diffusers.configuration_utils import ConfigMixin
from diffusers.utils import BaseOutput
from torch import nn

from ..image_range import to_unit_range
from ..models.concept_encoder import release_trunk
from .decoder import DeconvDecoder, default_num_downsamples
from .losses import gaussian_kl, reconstruction_loss

LIKELIHOODS = ("bernoulli", "gaussian")


@dataclass
class VAEOutput(BaseOutput):
    """Output of a VAE baseline's forward pass.

    Args:
        latent_mean, latent_logvar: (B, L) posterior parameters; `latent_mean` is the representation.
        latent_sample: (B, L) reparameterised posterior sample (the mean when not sampling).
        logits: (B, C, H, W) decoder output; `sigmoid(logits)` is the reconstruction in [0, 1].
    """

    latent_mean: torch.Tensor
    latent_logvar: torch.Tensor
    latent_sample: torch.Tensor
    logits: torch.Tensor


@dataclass
class VAELossOutput(BaseOutput):
    """The objective of one batch: `loss = reconstruction + regulariser` (regulariser includes the KL).

    Args:
        loss: scalar to minimise.
        reconstruction: negative log-likelihood of the pixels (summed per image, batch mean).
        kl: KL(q(z|x) || N(0, I)) (summed over latents, batch mean).
        regulariser: the method's full regulariser (beta * kl, kl + (beta - 1) * tc, kl + gamma * tc).
        total_correlation: the method's TC estimate when it has one (else None).
        latent_sample: (B, L) the posterior sample used (FactorVAE's discriminator needs it).
    """

    loss: torch.Tensor
    reconstruction: torch.Tensor
    kl: torch.Tensor
    regulariser: torch.Tensor
    total_correlation: Optional[torch.Tensor]
    latent_sample: torch.Tensor


class VAEModel(ModelMixin, ConfigMixin):
    """Base of the VAE baselines. Subclasses register their config and implement `regulariser`.

    Example:
        >>> model = BetaVAEModel(sample_size=32, num_latents=10)
        >>> out = model.compute_loss(images)       # images (B, 3, 32, 32) in [-1, 1]
        >>> out.loss.backward()
        >>> model.encode(images).shape     # posterior means
        torch.Size([B, 10])
    """

    def _build(self, in_channels: int, sample_size: int, num_latents: int, width: int, likelihood: str) -> None:
        if likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {LIKELIHOODS}, got {likelihood!r}")
        for name, value in (("in_channels", in_channels), ("sample_size", sample_size),
                            ("num_latents", num_latents), ("width", width)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        num_downsamples = default_num_downsamples(sample_size)
        if sample_size % 2**num_downsamples:
            raise ValueError(f"sample_size {sample_size} must be divisible by 2**{num_downsamples} (e.g. 32 or 64)")
        self.trunk = release_trunk(in_channels, width, num_downsamples)  # shared with ConceptEncoderModel
        feature_size = sample_size // 2**num_downsamples
        self.posterior_head = nn.Linear(width * feature_size**2, 2 * num_latents)  # -> mean, logvar
        self.decoder = DeconvDecoder(num_latents, in_channels, sample_size, width, num_downsamples)

    # -- inputs -----------------------------------------------------------------------------------
    def check_inputs(self, images: torch.Tensor) -> None:
        """Raise `ValueError` unless `images` is a finite float (B, C, H, W) tensor in [-1, 1]."""
        c, s = self.config.in_channels, self.config.sample_size
        if not isinstance(images, torch.Tensor) or images.ndim != 4 or tuple(images.shape[1:]) != (c, s, s):
            shape = tuple(images.shape) if isinstance(images, torch.Tensor) else type(images).__name__
            raise ValueError(f"images must be a tensor of shape (B, {c}, {s}, {s}) in [-1, 1], got {shape}")
        if not images.is_floating_point() or not torch.isfinite(images).all():
            raise ValueError("images must be finite floats in [-1, 1]")
        if images.min() < -1.0 - 1e-4 or images.max() > 1.0 + 1e-4:
            raise ValueError(f"images must lie in [-1, 1], got range [{images.min():.3f}, {images.max():.3f}]")

    # -- model ------------------------------------------------------------------------------------
    def encode_posterior(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images (B, C, H, W) in [-1, 1] -> posterior mean and log-variance, each (B, L)."""
        self.check_inputs(images)
        features = self.trunk(images.to(device=self.device, dtype=self.dtype)).flatten(1)
        mean, logvar = self.posterior_head(features).chunk(2, dim=1)
        return mean, logvar

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, L) -> pixel logits (B, C, H, W)."""
        if latents.ndim != 2 or latents.shape[1] != self.config.num_latents:
            raise ValueError(f"latents must have shape (B, {self.config.num_latents}), got {tuple(latents.shape)}")
        return self.decoder(latents.to(self.dtype))

    def forward(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
                sample_posterior: bool = True, return_dict: bool = True) -> VAEOutput | tuple:
        """Encode, sample z = mean + exp(logvar / 2) * eps (or take the mean), decode."""
        mean, logvar = self.encode_posterior(images)
        z = mean
        if sample_posterior:
            eps = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            z = mean + torch.exp(0.5 * logvar) * eps
        logits = self.decode(z)
        if not return_dict:
            return (mean, logvar, z, logits)
        return VAEOutput(latent_mean=mean, latent_logvar=logvar, latent_sample=z, logits=logits)

    @torch.no_grad()
    def encode(self, images: torch.Tensor) -> torch.Tensor:
        """The representation the metrics score: posterior means (B, L) of images (B, C, H, W) in [-1, 1].

        Like `EncDiffPipeline.encode`, so `encdiff_pipeline.evaluate(model, dataset)` scores a baseline.
        """
        return self.encode_posterior(images)[0]

    def encode_concepts(self, images: torch.Tensor) -> torch.Tensor:
        """`encode` under `ConceptEncoderModel`'s name."""
        return self.encode(images)

    # -- objective --------------------------------------------------------------------------------
    def regulariser(self, output: VAEOutput) -> tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor]]:
        """-> (regulariser, kl, total_correlation or None). Implemented by each baseline."""
        raise NotImplementedError

    def compute_loss(self, images: torch.Tensor, generator: Optional[torch.Generator] = None,
                     return_dict: bool = True) -> VAELossOutput | tuple:
        """The method's loss on a batch of images (B, C, H, W) in [-1, 1]."""
        output = self(images, generator=generator)
        target = to_unit_range(images.to(output.logits.dtype))
        reconstruction = reconstruction_loss(output.logits, target, self.config.likelihood)
        regulariser, kl, tc = self.regulariser(output)
        loss = reconstruction + regulariser
        if not return_dict:
            return (loss, reconstruction, kl, regulariser, tc, output.latent_sample)
        return VAELossOutput(loss=loss, reconstruction=reconstruction, kl=kl, regulariser=regulariser,
                             total_correlation=tc, latent_sample=output.latent_sample)

    def _kl(self, output: VAEOutput) -> torch.Tensor:
        return gaussian_kl(output.latent_mean, output.latent_logvar)

    # -- qualitative ------------------------------------------------------------------------------
    @torch.no_grad()
    def swap(self, images: torch.Tensor, latent_indices: Optional[Sequence[int]] = None,
             source: int = 0) -> torch.Tensor:
        """The swap grid: row i = every image decoded with latent i set to image `source`'s value.

        Returns (1 + len(latent_indices), B, C, H, W) in [0, 1]; row 0 is the plain reconstruction.
        """
        mean = self.encode(images)
        indices = range(self.config.num_latents) if latent_indices is None else latent_indices
        rows = [mean]
        for i in indices:
            edited = mean.clone()
            edited[:, i] = mean[source, i]
            rows.append(edited)
        latents = torch.cat(rows)
        return torch.sigmoid(self.decode(latents)).view(len(rows), *images.shape)

    @torch.no_grad()
    def traverse(self, image: torch.Tensor, latent_index: int, values: Sequence[float]) -> torch.Tensor:
        """Decode `image` (1, C, H, W) with latent `latent_index` set to each value -> (len(values), C, H, W)."""
        mean = self.encode(image)[:1].repeat(len(values), 1)
        mean[:, latent_index] = torch.as_tensor(values, dtype=mean.dtype, device=mean.device)
        return torch.sigmoid(self.decode(mean))
