"""ConceptEncoderModel: shapes, sizes, the batched token MLP, save/load round-trips, bad inputs."""
import json

import pytest
import torch
from torch import nn

from encdiff_pipeline.models import ConceptEncoderModel, ConceptEncoderOutput
from encdiff_pipeline.models.concept_encoder import BatchedTokenMLP

TINY_VIT = {"model_type": "vit", "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2,
            "intermediate_size": 64, "patch_size": 8}
TINY_RESNET = {"model_type": "resnet", "embedding_size": 8, "hidden_sizes": [8, 16], "depths": [1, 1]}


def images(batch=2, channels=3, size=64, seed=0):
    return torch.rand(batch, channels, size, size, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def num_params(model):
    return sum(p.numel() for p in model.parameters())


def test_paper_encoder_shapes_and_size():
    torch.manual_seed(0)
    encoder = ConceptEncoderModel()
    cfg = encoder.config
    assert (cfg.in_channels, cfg.sample_size, cfg.num_concepts, cfg.token_dim, cfg.token_type) == (3, 64, 20, 16, "scalar")
    assert abs(num_params(encoder) - 1.37e6) / 1.37e6 < 0.03
    # release trunk: four stride-2 convs (64 -> 4), flatten 128 * 4 * 4 = 2048 -> 20 scalars
    strided = [m for m in encoder.trunk.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == 4
    assert encoder.concept_head.in_features == 2048 and encoder.concept_head.out_features == 20
    out = encoder(images())
    assert isinstance(out, ConceptEncoderOutput)
    assert out.concepts.shape == (2, 20) and out.tokens.shape == (2, 20, 16)
    concepts, tokens = encoder(images(), return_dict=False)
    assert torch.allclose(concepts, out.concepts) and torch.allclose(tokens, out.tokens)


def test_release_trunk_relu_pattern():
    # ReLU after convs 1, 2 and 4, none after the 3rd (the release's quirk)
    trunk = ConceptEncoderModel().trunk
    layers = list(trunk)
    conv_positions = [i for i, m in enumerate(layers) if isinstance(m, nn.Conv2d)]
    followed_by_relu = [isinstance(layers[i + 2], nn.ReLU) for i in conv_positions]
    assert followed_by_relu == [True, True, False, True]


@pytest.mark.parametrize("size,downsamples,flat", [(32, 3, 2048), (64, 4, 2048), (48, 4, 128 * 9)])
def test_sample_size_adapts_trunk(size, downsamples, flat):
    encoder = ConceptEncoderModel(sample_size=size, num_concepts=10, token_dim=32).eval()
    strided = [m for m in encoder.trunk.modules() if isinstance(m, nn.Conv2d) and m.stride == (2, 2)]
    assert len(strided) == downsamples and encoder.concept_head.in_features == flat
    out = encoder(images(size=size))
    assert out.concepts.shape == (2, 10) and out.tokens.shape == (2, 10, 32)


def test_single_channel_and_width():
    encoder = ConceptEncoderModel(in_channels=1, sample_size=32, width=16, num_concepts=4, token_dim=8)
    assert encoder(images(channels=1, size=32)).tokens.shape == (2, 4, 8)


def test_vector_tokens():
    encoder = ConceptEncoderModel(token_type="vector", num_concepts=5, token_dim=8, sample_size=32).eval()
    out = encoder(images(size=32))
    assert out.concepts.shape == (2, 5, 8)
    assert torch.equal(out.concepts, out.tokens)
    assert encoder.token_mlp is None
    with pytest.raises(ValueError, match=r"\(B, 5, 8\)"):
        encoder.concepts_to_tokens(torch.zeros(2, 5))


def test_batched_mlp_equals_loop_of_linears():
    torch.manual_seed(0)
    n, d = 6, 16
    mlp = BatchedTokenMLP(n, d)
    loops = []
    for i in range(n):
        layers = [nn.Linear(1, 64), nn.ELU(), nn.Linear(64, 128), nn.ELU(), nn.Linear(128, d)]
        with torch.no_grad():
            for k, linear in enumerate(layers[::2]):
                linear.weight.copy_(getattr(mlp, f"weight_{k}")[i].T)
                linear.bias.copy_(getattr(mlp, f"bias_{k}")[i])
        loops.append(nn.Sequential(*layers))
    concepts = torch.randn(5, n)
    expected = torch.stack([loops[i](concepts[:, i : i + 1]) for i in range(n)], dim=1)
    got = mlp(concepts)
    assert got.shape == (5, n, d)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)
    # non-shared: different concepts get different functions
    assert not torch.allclose(got[:, 0], got[:, 1])


def test_encode_edit_decode_path():
    encoder = ConceptEncoderModel(sample_size=32, num_concepts=6, token_dim=8).eval()
    x = images(size=32)
    concepts = encoder.encode_concepts(x)
    torch.testing.assert_close(encoder.concepts_to_tokens(concepts), encoder(x).tokens)
    edited = concepts.clone()
    edited[:, 2] += 1.0
    changed = (encoder.concepts_to_tokens(edited) - encoder.concepts_to_tokens(concepts)).abs().amax(dim=(0, 2))
    assert changed[2] > 0 and torch.all(changed[[0, 1, 3, 4, 5]] == 0)  # only token 2 moves


def test_gradients_reach_every_parameter():
    encoder = ConceptEncoderModel(sample_size=32, num_concepts=4, token_dim=8)
    encoder(images(size=32)).tokens.square().mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in encoder.parameters())


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"token_type": "vector", "sample_size": 32, "num_concepts": 5, "token_dim": 8},
        {"backbone_config": TINY_VIT, "num_concepts": 5, "token_dim": 8},
        {"backbone_config": TINY_RESNET, "sample_size": 32, "num_concepts": 5, "token_dim": 8},
    ],
    ids=["paper", "vector", "vit", "resnet"],
)
def test_save_load_round_trip(tmp_path, kwargs):
    torch.manual_seed(0)
    encoder = ConceptEncoderModel(**kwargs)
    encoder.train()
    encoder(images(batch=4, size=encoder.config.sample_size))  # move BatchNorm running stats off init
    encoder.eval()
    encoder.save_pretrained(tmp_path)
    loaded = ConceptEncoderModel.from_pretrained(tmp_path).eval()
    public = lambda m: {k: v for k, v in json.loads(m.to_json_string()).items() if not k.startswith("_")}
    assert public(loaded) == public(encoder)
    x = images(seed=1, size=encoder.config.sample_size)
    a, b = encoder(x), loaded(x)
    assert torch.equal(a.concepts, b.concepts) and torch.equal(a.tokens, b.tokens)


def test_pretrained_transformers_backbone(tmp_path):
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    vit = ViTModel(ViTConfig(**{k: v for k, v in TINY_VIT.items() if k != "model_type"}, image_size=32))
    vit.save_pretrained(tmp_path / "vit")
    encoder = ConceptEncoderModel.with_pretrained_backbone(str(tmp_path / "vit"), num_concepts=5, token_dim=8)
    for name, tensor in vit.state_dict().items():
        assert torch.equal(encoder.trunk.model.state_dict()[name], tensor)
    encoder.eval()
    x = images()  # 64x64 on a 32px ViT: position embeddings are interpolated
    encoder.save_pretrained(tmp_path / "encoder")
    loaded = ConceptEncoderModel.from_pretrained(tmp_path / "encoder").eval()
    assert torch.equal(encoder(x).tokens, loaded(x).tokens)


def test_bad_inputs():
    encoder = ConceptEncoderModel()
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        encoder(images(channels=1))
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        encoder(images(size=32))
    with pytest.raises(ValueError, match=r"\(B, 3, 64, 64\)"):
        encoder(torch.zeros(3, 64, 64))
    with pytest.raises(ValueError, match="float"):
        encoder(torch.zeros(1, 3, 64, 64, dtype=torch.uint8))
    bad = images()
    bad[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encoder(bad)
    with pytest.raises(ValueError, match="expected N=20"):
        encoder.concepts_to_tokens(torch.zeros(2, 19))
    with pytest.raises(ValueError, match="expected N=20"):
        encoder.concepts_to_tokens(torch.zeros(20))
    with pytest.raises(ValueError, match="NaN"):
        encoder.concepts_to_tokens(torch.full((2, 20), float("nan")))
    with pytest.raises(ValueError, match="token_type"):
        ConceptEncoderModel(token_type="matrix")
    with pytest.raises(ValueError, match="model_type"):
        ConceptEncoderModel(backbone_config={"hidden_size": 32})
    with pytest.raises(ValueError, match="num_concepts"):
        ConceptEncoderModel(num_concepts=0)
