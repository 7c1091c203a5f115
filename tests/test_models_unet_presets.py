"""U-Net presets: sizes, heads, conditioning only through cross-attention, overrides."""
import pytest
import torch
from diffusers import UNet2DConditionModel

from encdiff_pipeline.models import UNET_PRESETS, capture_cross_attention, cross_attention_layers, unet_from_preset


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def test_paper_preset_matches_release():
    unet = unet_from_preset("paper")
    assert isinstance(unet, UNet2DConditionModel)
    assert abs(num_params(unet) - 37.5e6) / 37.5e6 < 0.10
    cfg = unet.config
    assert cfg.sample_size == 16 and cfg.in_channels == 3 and cfg.out_channels == 3
    assert tuple(cfg.block_out_channels) == (64, 128, 256, 256) and cfg.layers_per_block == 2
    assert cfg.cross_attention_dim == 16 and cfg.resnet_time_scale_shift == "scale_shift"
    assert cfg.class_embed_type is None and cfg.addition_embed_type is None and cfg.encoder_hid_dim is None
    layers = cross_attention_layers(unet)
    # transformer depth 1 at 16, 8, 4 (2 down + 3 up each) and the middle
    assert len(layers) == 3 * 5 + 1
    assert all(layer.heads == 8 for layer in layers.values())


def tiny_inputs(unet, batch=2, tokens=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    s, c = unet.config.sample_size, unet.config.in_channels
    x = torch.randn(batch, c, s, s, generator=g)
    t = torch.randint(0, 1000, (batch,), generator=g)
    ctx = torch.randn(batch, tokens, unet.config.cross_attention_dim, generator=g)
    return x, t, ctx


def test_tiny_preset_forward_and_token_conditioning():
    torch.manual_seed(0)
    unet = unet_from_preset("tiny").eval()
    assert num_params(unet) < 100_000
    x, t, ctx = tiny_inputs(unet)
    with torch.no_grad():
        out = unet(x, t, encoder_hidden_states=ctx).sample
        other = unet(x, t, encoder_hidden_states=torch.randn_like(ctx)).sample
        later = unet(x, t + 1, encoder_hidden_states=ctx).sample
    assert out.shape == x.shape and torch.isfinite(out).all()
    assert (out - other).abs().max() > 1e-4  # tokens matter
    assert (out - later).abs().max() > 1e-6  # so does the timestep


def test_small_preset_attends_only_at_low_resolution():
    torch.manual_seed(0)
    unet = unet_from_preset("small", cross_attention_dim=32).eval()
    assert 1e6 <= num_params(unet) <= 3e6
    x, t, ctx = tiny_inputs(unet, tokens=10)
    with torch.no_grad(), capture_cross_attention(unet) as store:
        out = unet(x, t, encoder_hidden_states=ctx).sample
    assert out.shape == (2, 3, 16, 16)
    assert store.maps and max(h for _, (h, _) in store.maps) <= 8  # none at 16x16


def test_overrides_and_bad_names():
    unet = unet_from_preset("tiny", sample_size=16, in_channels=1, out_channels=1, cross_attention_dim=8)
    assert (unet.config.sample_size, unet.config.in_channels, unet.config.cross_attention_dim) == (16, 1, 8)
    assert UNET_PRESETS["tiny"]["cross_attention_dim"] == 16  # the preset itself is untouched
    with pytest.raises(ValueError, match="paper"):
        unet_from_preset("huge")
    with pytest.raises(ValueError, match="cross_attn_dim"):
        unet_from_preset("tiny", cross_attn_dim=8)
