"""benchmarks/encdiff_variants.py: every variant is a valid preset whose models build and run."""
import json
import os

import pytest
import torch

from encdiff_pipeline.models import ConceptEncoderModel, PatchAutoencoder, unet_from_preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
from benchmarks import encdiff_variants as variants  # noqa: E402


def test_merge_overrides_nested_keys_without_touching_the_base():
    base = {"a": 1, "unet": {"x": 1, "y": 2}, "training": {"lr": 1}}
    merged = variants.merge(base, {"unet": {"y": 3}, "training": {"batch": 8}})
    assert merged == {"a": 1, "unet": {"x": 1, "y": 3}, "training": {"lr": 1, "batch": 8}}
    assert base == {"a": 1, "unet": {"x": 1, "y": 2}, "training": {"lr": 1}}


def test_default_variant_is_the_small_preset():
    assert variants.merge(variants.load_preset("small"), variants.VARIANTS["default"][1]) == variants.load_preset("small")


@pytest.mark.parametrize("name", list(variants.VARIANTS))
def test_variant_is_a_valid_preset_that_builds(name, tmp_path):
    preset = variants.merge(variants.load_preset("small"), variants.VARIANTS[name][1])
    path = tmp_path / "preset.json"
    path.write_text(json.dumps(preset))
    preset = variants.load_preset(config_file=str(path))  # what train_encdiff.py --config reads
    size, enc, patch = preset["image_size"], preset["encoder"], preset["patch_size"]
    torch.manual_seed(0)
    encoder = ConceptEncoderModel(sample_size=size, **enc).eval()
    first_stage = PatchAutoencoder(in_channels=3, patch_size=patch)  # patch 1: the pixels themselves
    unet = unet_from_preset(preset["unet_preset"], **{"sample_size": size // patch, "in_channels": 3 * patch**2,
                                                      "out_channels": 3 * patch**2, **preset["unet"],
                                                      "cross_attention_dim": enc["token_dim"]}).eval()
    x = torch.rand(2, 3, size, size) * 2 - 1
    with torch.no_grad():
        tokens = encoder(x).tokens
        latents = first_stage.encode(x).latents
        out = unet(latents, torch.tensor([10, 500]), encoder_hidden_states=tokens).sample
    assert tokens.shape == (2, enc["num_concepts"], enc["token_dim"]) and out.shape == latents.shape
    assert first_stage.decode(out).sample.shape == x.shape
    assert torch.isfinite(out).all()
