"""Skip Dropout: channel dropout on a U-Net's skip connections while it trains.

The skip connections hand the decoder half of the U-Net what the encoder half saw in x_t; dropping
whole channels of them (p ~ 0.2, DyGA's Skip Dropout) makes the decoder lean on the cross-attention
tokens instead. Only the skip copies are dropped (the tensors the down blocks hand to the up blocks),
never the main path, and only in training mode. The masks come from a generator set per step, so a
resumed run drops the same channels as an uninterrupted one.

Example:
    >>> skip = SkipDropout(unet, p=0.2)
    >>> skip.generator = torch.Generator().manual_seed(step)   # before each training forward
    >>> skip.remove()                                            # detach the hooks
"""
from __future__ import annotations

import torch


class SkipDropout:
    """Forward hooks on `unet.down_blocks` that drop channels of the residual outputs they return."""

    def __init__(self, unet, p: float):
        if not 0.0 <= p < 1.0:
            raise ValueError(f"skip dropout probability must be in [0, 1), got {p}")
        self.p, self.generator = p, None
        self._handles = [block.register_forward_hook(self._hook) for block in unet.down_blocks] if p > 0 else []

    def _drop(self, tensor: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(tensor.shape[0], tensor.shape[1], 1, 1, generator=self.generator) >= self.p
        return tensor * (keep.to(tensor.device, tensor.dtype) / (1.0 - self.p))

    def _hook(self, module, inputs, output):
        if not module.training:
            return output
        hidden_states, residuals = output
        return hidden_states, tuple(self._drop(r) for r in residuals)

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
