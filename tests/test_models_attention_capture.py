"""Cross-attention capture: same outputs as diffusers' processors, right probabilities, maps that are the
mean over (differing) heads computed by hand, in the module and through EncDiffPipeline, restore on exit."""
import pytest
import torch
from diffusers.models.attention_processor import Attention, AttnProcessor, AttnProcessor2_0

from encdiff_pipeline.models import (
    AttentionCaptureProcessor,
    AttentionStore,
    LayerAttention,
    aggregate_attention_maps,
    capture_cross_attention,
    cross_attention_layers,
    unet_from_preset,
)


def tiny_unet_and_inputs(seed=0, tokens=5):
    torch.manual_seed(seed)
    unet = unet_from_preset("tiny").eval()
    g = torch.Generator().manual_seed(seed + 1)
    x = torch.randn(3, 3, 8, 8, generator=g)
    t = torch.tensor([10, 500, 990])
    ctx = torch.randn(3, tokens, 16, generator=g)
    return unet, x, t, ctx


@pytest.mark.parametrize("default", [AttnProcessor2_0, AttnProcessor])
def test_capture_output_equals_default_processor(default):
    unet, x, t, ctx = tiny_unet_and_inputs()
    unet.set_attn_processor(default())
    with torch.no_grad():
        expected = unet(x, t, encoder_hidden_states=ctx).sample
        with capture_cross_attention(unet) as store:
            captured = unet(x, t, encoder_hidden_states=ctx).sample
        unet.set_attn_processor(AttentionCaptureProcessor())  # not recording: the SDPA path, everywhere
        plain = unet(x, t, encoder_hidden_states=ctx).sample
    torch.testing.assert_close(captured, expected, rtol=0, atol=1e-5)
    torch.testing.assert_close(plain, expected, rtol=0, atol=1e-5)
    assert len(store.maps) == len(cross_attention_layers(unet)) == 4  # down, mid, 2 x up


def test_recorded_probabilities():
    unet, x, t, ctx = tiny_unet_and_inputs(tokens=7)
    with torch.no_grad(), capture_cross_attention(unet) as store:
        unet(x, t, encoder_hidden_states=ctx)
    sizes = [size for _, size in store.maps]
    assert sizes == [(8, 8), (4, 4), (8, 8), (8, 8)]  # down at 8x8, mid at 4x4, up at 8x8 (x2)
    for probs, (h, w) in store.maps:
        assert probs.shape == (3, 2, h * w, 7)
        torch.testing.assert_close(probs.sum(-1), torch.ones(3, 2, h * w))
    maps = aggregate_attention_maps(store, size=(16, 16))
    assert maps.shape == (3, 7, 16, 16)
    torch.testing.assert_close(maps.sum(1), torch.ones(3, 16, 16))


def test_probabilities_match_a_hand_computation():
    torch.manual_seed(0)
    attn = Attention(query_dim=8, cross_attention_dim=4, heads=2, dim_head=4)
    hidden, ctx = torch.randn(2, 6, 8), torch.randn(2, 3, 4)
    store = AttentionStore()
    attn.set_processor(AttentionCaptureProcessor(store, size_of=lambda: (2, 3)))
    out = attn(hidden, encoder_hidden_states=ctx)
    q = attn.to_q(hidden).view(2, 6, 2, 4).transpose(1, 2)
    k = attn.to_k(ctx).view(2, 3, 2, 4).transpose(1, 2)
    expected = (q @ k.transpose(-1, -2) / 2.0).softmax(-1)  # scale 1/sqrt(4)
    (probs, size), = store.maps
    assert size == (2, 3)
    torch.testing.assert_close(probs, expected)
    attn.set_processor(AttnProcessor2_0())
    torch.testing.assert_close(out, attn(hidden, encoder_hidden_states=ctx), rtol=0, atol=1e-6)


def test_only_cross_attention_is_replaced_and_everything_is_restored():
    unet, x, t, ctx = tiny_unet_and_inputs()
    before = dict(unet.attn_processors)
    cross = {f"{name}.processor" for name in cross_attention_layers(unet)}
    assert cross and all(".attn2." in name for name in cross)
    with capture_cross_attention(unet):
        inside = unet.attn_processors
        for name, processor in inside.items():
            if name in cross:
                assert isinstance(processor, AttentionCaptureProcessor)
            else:
                assert processor is before[name]
    assert all(unet.attn_processors[name] is p for name, p in before.items())
    with pytest.raises(RuntimeError, match="boom"):
        with capture_cross_attention(unet):
            raise RuntimeError("boom")
    assert all(unet.attn_processors[name] is p for name, p in before.items())
    assert not any(m._forward_pre_hooks for m in unet.modules())


def test_not_recording_and_errors():
    unet, x, t, ctx = tiny_unet_and_inputs()
    with torch.no_grad(), capture_cross_attention(unet, record=False) as store:
        unet(x, t, encoder_hidden_states=ctx)
    assert len(store) == 0
    with pytest.raises(ValueError, match="No attention maps"):
        aggregate_attention_maps(store, 8)
    with pytest.raises(ValueError, match="no cross-attention"):
        with capture_cross_attention(torch.nn.Linear(2, 2)):
            pass


def test_aggregate_keeps_row_major_layout_and_averages_layers():
    # 2x3 grid, 2 tokens: token 1 owns position (row 0, col 2) = flat index 2, token 0 the rest
    probs = torch.zeros(1, 2, 6, 2)
    probs[..., 0] = 1.0
    probs[:, :, 2] = torch.tensor([0.0, 1.0])
    uniform = torch.full((1, 4, 6, 2), 0.5)
    maps = aggregate_attention_maps([LayerAttention(probs, (2, 3)), LayerAttention(uniform, (2, 3))], (2, 3))
    expected_token1 = torch.tensor([[0.25, 0.25, 0.75], [0.25, 0.25, 0.25]])
    torch.testing.assert_close(maps[0, 1], expected_token1)
    torch.testing.assert_close(maps[0, 0], 1 - expected_token1)
    with pytest.raises(ValueError, match="does not match"):
        aggregate_attention_maps([LayerAttention(probs, (3, 3))], 4)


def _head_probs(q: torch.Tensor, k: torch.Tensor, heads: int) -> torch.Tensor:
    """softmax(Q_h K_h^T / sqrt(d)) of each head h: (B, heads, Lq, Lk), from the projections (B, L, heads * d)."""
    b, lq, inner = q.shape
    d = inner // heads
    q = q.reshape(b, lq, heads, d).permute(0, 2, 1, 3)
    k = k.reshape(b, k.shape[1], heads, d).permute(0, 2, 1, 3)
    return (q @ k.transpose(-1, -2) / d**0.5).softmax(-1)


def test_aggregated_maps_are_the_mean_over_differing_heads():
    torch.manual_seed(0)
    attn = Attention(query_dim=8, cross_attention_dim=4, heads=3, dim_head=4)
    with torch.no_grad():
        attn.to_k.weight.mul_(4.0)  # peaked attention, different in each head
    hidden, ctx = torch.randn(2, 6, 8), torch.randn(2, 5, 4)
    with torch.no_grad():
        probs = _head_probs(attn.to_q(hidden), attn.to_k(ctx), heads=3)  # (2, 3, 6, 5)
    assert (probs[:, 0] - probs.mean(1)).abs().max() > 0.2  # head 0 alone is far from the mean
    expected = probs.mean(1).transpose(1, 2).reshape(2, 5, 2, 3)  # (B, N, H, W), row-major 2x3 grid
    store = AttentionStore()
    attn.set_processor(AttentionCaptureProcessor(store, size_of=lambda: (2, 3)))
    with torch.no_grad():
        attn(hidden, encoder_hidden_states=ctx)
    torch.testing.assert_close(aggregate_attention_maps(store, (2, 3)), expected)


def test_pipeline_attention_maps_by_hand():
    """EncDiffPipeline.attention_maps = per call of each cross-attention layer (recorded: its Q and K
    projections), softmax(QK^T/sqrt(d)) per head, mean over the 2 heads, upsampled to the image size;
    mean over the 4 layers and the 2 timesteps."""
    from tests.test_pipeline_encdiff import make_tiny_pipeline, seeded, tiny_images

    pipe = make_tiny_pipeline()
    layers = cross_attention_layers(pipe.unet)
    calls = []  # (layer, q, k) in call order
    handles = []
    for layer in layers.values():
        with torch.no_grad():
            layer.to_k.weight.mul_(10.0)  # peaked attention, different in each head
        outputs = {}
        handles.append(layer.to_q.register_forward_hook(lambda m, a, out, o=outputs: o.__setitem__("q", out)))
        handles.append(layer.to_k.register_forward_hook(
            lambda m, a, out, o=outputs, layer=layer: calls.append((layer, o["q"], out))))
    maps = pipe.attention_maps(tiny_images(2), timestep=[200, 700], generator=seeded())
    for handle in handles:
        handle.remove()
    assert len(calls) == 2 * len(layers) == 8
    expected, head_gap = 0, 0.0
    for layer, q, k in calls:
        probs = _head_probs(q, k, layer.heads)  # (2, 2, h*w, N)
        head_gap = max(head_gap, (probs[:, 0] - probs.mean(1)).abs().max().item())
        side = int(probs.shape[2] ** 0.5)
        grid = probs.mean(1).transpose(1, 2).reshape(2, -1, side, side)
        expected = expected + torch.nn.functional.interpolate(grid, size=(8, 8), mode="bilinear", align_corners=False)
    expected = expected / len(calls)
    assert head_gap > 0.1  # taking head 0 for the mean would show
    assert maps.shape == (2, 4, 8, 8)
    torch.testing.assert_close(maps, expected)
