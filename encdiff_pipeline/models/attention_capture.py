"""Record per-token cross-attention probabilities of a diffusers U-Net.

Example:
    >>> from encdiff_pipeline.models import capture_cross_attention, aggregate_attention_maps
    >>> with capture_cross_attention(unet) as store:
    ...     unet(x, t, encoder_hidden_states=tokens)
    >>> probs, (h, w) = store.maps[0]                        # (B, heads, h*w, N)
    >>> maps = aggregate_attention_maps(store, size=(64, 64))  # (B, N, 64, 64)
"""
from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, NamedTuple

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import Attention
from torch import nn


class LayerAttention(NamedTuple):
    """One cross-attention call: `probs` `(B, heads, H*W, N)` and the query grid's `size` `(H, W)`."""

    probs: torch.Tensor
    size: tuple[int, int]


class AttentionStore:
    """Collects [`LayerAttention`] records, in call order, while `record` is True."""

    def __init__(self, record: bool = True):
        self.record = record
        self.maps: list[LayerAttention] = []

    def clear(self) -> None:
        self.maps.clear()

    def __len__(self) -> int:
        return len(self.maps)


class AttentionCaptureProcessor:
    """Attention processor that returns what diffusers' default `AttnProcessor2_0` returns and, while
    its store is recording, also keeps the attention probabilities `(B, heads, Lq, Lk)`.

    Args:
        store: where the probabilities go; `None` makes it a plain SDPA processor.
        size_of: callable returning the current query grid's `(H, W)` (set by
            [`capture_cross_attention`] from the enclosing transformer's input); `None` assumes a
            square grid.
    """

    def __init__(self, store: AttentionStore | None = None, size_of=None):
        self.store = store
        self.size_of = size_of

    def __call__(
        self,
        attn: Attention,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        temb: torch.Tensor | None = None,
        *args,
        **kwargs,
    ) -> torch.Tensor:
        residual = hidden_states
        if attn.spatial_norm is not None:
            hidden_states = attn.spatial_norm(hidden_states, temb)

        input_ndim = hidden_states.ndim
        grid_size = None
        if input_ndim == 4:
            batch_size, channel, height, width = hidden_states.shape
            grid_size = (height, width)
            hidden_states = hidden_states.view(batch_size, channel, height * width).transpose(1, 2)

        batch_size, sequence_length, _ = (
            hidden_states.shape if encoder_hidden_states is None else encoder_hidden_states.shape
        )
        if attention_mask is not None:
            attention_mask = attn.prepare_attention_mask(attention_mask, sequence_length, batch_size)
            attention_mask = attention_mask.view(batch_size, attn.heads, -1, attention_mask.shape[-1])

        if attn.group_norm is not None:
            hidden_states = attn.group_norm(hidden_states.transpose(1, 2)).transpose(1, 2)

        query = attn.to_q(hidden_states)
        if encoder_hidden_states is None:
            encoder_hidden_states = hidden_states
        elif attn.norm_cross:
            encoder_hidden_states = attn.norm_encoder_hidden_states(encoder_hidden_states)
        key = attn.to_k(encoder_hidden_states)
        value = attn.to_v(encoder_hidden_states)

        head_dim = key.shape[-1] // attn.heads
        query = query.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        key = key.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        value = value.view(batch_size, -1, attn.heads, head_dim).transpose(1, 2)
        if attn.norm_q is not None:
            query = attn.norm_q(query)
        if attn.norm_k is not None:
            key = attn.norm_k(key)

        if self.store is not None and self.store.record:
            # the same computation as SDPA, spelled out so the probabilities can be kept
            scores = torch.matmul(query, key.transpose(-1, -2)) * (head_dim**-0.5)
            if attention_mask is not None:
                scores = scores + attention_mask
            probs = scores.float().softmax(dim=-1)
            hidden_states = torch.matmul(probs.to(value.dtype), value)
            if grid_size is None:
                grid_size = self.size_of() if self.size_of is not None else None
            if grid_size is None or grid_size[0] * grid_size[1] != probs.shape[2]:
                side = math.isqrt(probs.shape[2])
                grid_size = (side, probs.shape[2] // side)
            self.store.maps.append(LayerAttention(probs.detach(), tuple(grid_size)))
        else:
            hidden_states = F.scaled_dot_product_attention(
                query, key, value, attn_mask=attention_mask, dropout_p=0.0, is_causal=False
            )

        hidden_states = hidden_states.transpose(1, 2).reshape(batch_size, -1, attn.heads * head_dim)
        hidden_states = hidden_states.to(query.dtype)
        hidden_states = attn.to_out[0](hidden_states)
        hidden_states = attn.to_out[1](hidden_states)
        if input_ndim == 4:
            hidden_states = hidden_states.transpose(-1, -2).reshape(batch_size, channel, height, width)
        if attn.residual_connection:
            hidden_states = hidden_states + residual
        return hidden_states / attn.rescale_output_factor


def cross_attention_layers(model: nn.Module) -> dict[str, Attention]:
    """The model's cross-attention layers (keys/values from `encoder_hidden_states`), by name."""
    return {name: m for name, m in model.named_modules() if isinstance(m, Attention) and m.is_cross_attention}


def _enclosing_spatial_modules(model: nn.Module, names: list[str]) -> dict[str, nn.Module]:
    """For each attention name, its nearest ancestor that takes a 4-D feature map (a Transformer2DModel)."""
    found = {}
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts) - 1, 0, -1):
            ancestor = model.get_submodule(".".join(parts[:cut]))
            if type(ancestor).__name__ == "Transformer2DModel":
                found[name] = ancestor
                break
    return found


@contextmanager
def capture_cross_attention(model: nn.Module, record: bool = True) -> Iterator[AttentionStore]:
    """Install [`AttentionCaptureProcessor`] on every cross-attention layer of `model` for the
    duration of the block; the previous processors come back on exit, also after an exception.

    Yields an [`AttentionStore`]: `store.maps[i]` is `LayerAttention(probs (B, heads, H_l*W_l, N),
    size (H_l, W_l))` for the i-th cross-attention call.

    Example:
        >>> with capture_cross_attention(unet) as store:
        ...     unet(x, t, encoder_hidden_states=tokens)
        >>> len(store.maps)  # one per cross-attention layer call
    """
    layers = cross_attention_layers(model)
    if not layers:
        raise ValueError(f"{type(model).__name__} has no cross-attention layers to capture.")
    store = AttentionStore(record=record)
    previous = {name: layer.processor for name, layer in layers.items()}
    grid_sizes: dict[int, tuple[int, int]] = {}
    hooks = []

    def remember_size(module, args, kwargs):
        hidden = args[0] if args else kwargs.get("hidden_states")
        if hidden is not None and hidden.ndim == 4:
            grid_sizes[id(module)] = tuple(hidden.shape[-2:])

    ancestors = _enclosing_spatial_modules(model, list(layers))
    for ancestor in {id(a): a for a in ancestors.values()}.values():
        hooks.append(ancestor.register_forward_pre_hook(remember_size, with_kwargs=True))
    try:
        for name, layer in layers.items():
            key = id(ancestors[name]) if name in ancestors else None
            layer.set_processor(AttentionCaptureProcessor(store, size_of=lambda key=key: grid_sizes.get(key)))
        yield store
    finally:
        for hook in hooks:
            hook.remove()
        for name, layer in layers.items():
            layer.set_processor(previous[name])


def aggregate_attention_maps(
    store: AttentionStore | list[LayerAttention], size: tuple[int, int] | int
) -> torch.Tensor:
    """Average recorded maps into per-token heatmaps `(B, N, H, W)`.

    Each record is averaged over heads, reshaped to its grid, bilinearly upsampled to `size`, then
    the records are averaged.
    """
    maps = store.maps if isinstance(store, AttentionStore) else list(store)
    if not maps:
        raise ValueError("No attention maps were recorded; run the model inside capture_cross_attention().")
    size = (size, size) if isinstance(size, int) else tuple(size)
    total = None
    for probs, (h, w) in maps:
        b, _, hw, n = probs.shape
        if h * w != hw:
            raise ValueError(f"Recorded grid {h}x{w} does not match {hw} query positions.")
        grid = probs.float().mean(dim=1).transpose(1, 2).reshape(b, n, h, w)
        grid = F.interpolate(grid, size=size, mode="bilinear", align_corners=False)
        total = grid if total is None else total + grid
    return total / len(maps)
