"""A parameter-free first stage: p x p pixel patches folded into channels (pixel-unshuffle).

`PatchAutoencoder` lets the U-Net run at 1/p of the image's side on `C * p * p` channels, while the
concept encoder still sees every pixel. Encoding and decoding only rearrange values, so the
diffusion loss (a mean over elements) is the pixel-space loss: the same objective at a cheaper U-Net
step (16 px images, U-Net at 8x8), or finer images at the same U-Net cost (32 px images, U-Net at
16x16). It plugs in where a trained `VQModel` would: `EncDiffPipeline(..., vae=PatchAutoencoder())`.

Example:
    >>> import torch
    >>> from encdiff_pipeline.models import PatchAutoencoder
    >>> first_stage = PatchAutoencoder(in_channels=3, patch_size=2)
    >>> latents = first_stage.encode(torch.zeros(1, 3, 16, 16)).latents   # (1, 12, 8, 8)
    >>> first_stage.decode(latents).sample.shape
    torch.Size([1, 3, 16, 16])
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.autoencoders.vae import DecoderOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput


@dataclass
class PatchEncoderOutput(BaseOutput):
    """Output of [`PatchAutoencoder.encode`]: `latents` of shape `(B, C * p * p, H / p, W / p)`."""

    latents: torch.Tensor


class PatchAutoencoder(ModelMixin, ConfigMixin):
    """Pixels `(B, C, H, W)` <-> patches `(B, C * p * p, H / p, W / p)`, losslessly.

    Args:
        in_channels: image channels C.
        patch_size: side p of the square patches; H and W must be multiples of it.
        latent_channels: C * p * p (derived; stored so that pipelines can check the U-Net against it).
    """

    @register_to_config
    def __init__(self, in_channels: int = 3, patch_size: int = 2, latent_channels: int | None = None):
        super().__init__()
        for name, value in (("in_channels", in_channels), ("patch_size", patch_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}.")
        expected = in_channels * patch_size**2
        if latent_channels is None:
            self.register_to_config(latent_channels=expected)
        elif latent_channels != expected:
            raise ValueError(f"latent_channels must be in_channels * patch_size**2 = {expected}, got {latent_channels!r}.")
        # no weights: an empty buffer gives the model a device and dtype to follow, and a weights file
        # to save and load like any other component
        self.register_buffer("anchor", torch.zeros(0))

    def _check(self, x: torch.Tensor, channels: int, what: str, multiple: int = 1) -> None:
        if x.ndim != 4 or x.shape[1] != channels or x.shape[-2] % multiple or x.shape[-1] % multiple:
            raise ValueError(f"PatchAutoencoder expected {what} of shape (B, {channels}, H, W)"
                             + (f" with H and W multiples of {multiple}" if multiple > 1 else "")
                             + f", got {tuple(x.shape)}.")

    def encode(self, x: torch.Tensor, return_dict: bool = True) -> PatchEncoderOutput | tuple[torch.Tensor]:
        """Images `(B, C, H, W)` -> latents `(B, C * p * p, H / p, W / p)`."""
        self._check(x, self.config.in_channels, "images", multiple=self.config.patch_size)
        latents = F.pixel_unshuffle(x, self.config.patch_size)
        return PatchEncoderOutput(latents=latents) if return_dict else (latents,)

    def decode(self, z: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Latents `(B, C * p * p, h, w)` -> images `(B, C, h * p, w * p)`."""
        self._check(z, self.config.latent_channels, "latents")
        sample = F.pixel_shuffle(z, self.config.patch_size)
        return DecoderOutput(sample=sample) if return_dict else (sample,)

    def forward(self, x: torch.Tensor, return_dict: bool = True) -> DecoderOutput | tuple[torch.Tensor]:
        """Encode then decode: returns `x` itself, rearranged twice."""
        return self.decode(self.encode(x).latents, return_dict=return_dict)
