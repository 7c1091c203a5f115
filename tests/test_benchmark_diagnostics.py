"""The diagnostics of benchmarks/: the token-gain map and the supervised probe, on tiny models."""
import json
import os

import numpy as np
import pytest
import torch

from encdiff_pipeline import ConceptEncoderModel, EncDiffPipeline
from encdiff_pipeline.models import unet_from_preset

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


from benchmarks import supervised_probe, token_gain  # noqa: E402


@pytest.fixture(scope="module")
def tiny_pipeline():
    torch.manual_seed(0)
    encoder = ConceptEncoderModel(sample_size=16, num_concepts=3, token_dim=8, width=16, mlp_hidden_dims=[16, 16])
    unet = unet_from_preset("tiny", sample_size=16, cross_attention_dim=8)
    return EncDiffPipeline(encoder=encoder, unet=unet)


def test_token_gain_is_the_loss_rise_of_a_swapped_concept(tiny_pipeline):
    pipe = tiny_pipeline
    g = torch.Generator().manual_seed(1)
    images = torch.rand(6, 3, 16, 16, generator=g) * 2 - 1
    neighbours = [torch.rand(6, 3, 16, 16, generator=g) * 2 - 1]
    result = token_gain.token_gain(pipe, images, neighbours, [100, 700], seed=4, batch_size=4)
    assert np.array(result["concept_gain"]).shape == (3, 2) and np.array(result["factor_gain"]).shape == (1, 2)
    # by hand at t=700 for concept 1: the U-Net's eps-L1 with image i-1's concept 1, minus with the true concepts
    with torch.no_grad():
        concepts = pipe.encode(images)
        noise = torch.randn(images.shape, generator=torch.Generator().manual_seed(4))
        t = torch.full((6,), 700)
        noisy = pipe.scheduler.add_noise(images, noise, t)
        swapped = concepts.clone()
        swapped[:, 1] = concepts[torch.roll(torch.arange(6), 1), 1]
        loss = lambda c: (pipe.unet(noisy, t, encoder_hidden_states=pipe.encoder.concepts_to_tokens(c)).sample - noise).abs().mean()  # noqa: E731
        expected = 1000 * (loss(swapped) - loss(concepts)).item()
        neighbour = 1000 * ((pipe.unet(noisy, t, encoder_hidden_states=pipe.encoder(neighbours[0]).tokens).sample - noise).abs().mean()
                            - loss(concepts)).item()
    assert abs(result["concept_gain"][1][1] - expected) < 1e-3
    assert abs(result["factor_gain"][0][1] - neighbour) < 1e-3
    assert abs(result["base_loss"][1] - loss(concepts).item()) < 1e-6
    a = pipe.scheduler.alphas_cumprod.double()[700]
    assert abs(result["logsnr"][1] - float(torch.log(a / (1 - a)))) < 1e-9


def test_token_gain_cli_writes_json_and_heatmap(tiny_pipeline, tmp_path, capsys):
    tiny_pipeline.save_pretrained(tmp_path / "pipe")
    result = token_gain.main([str(tmp_path / "pipe"), "--num_images", "8", "--num_levels", "3"])
    assert result["timesteps"] == [20, 485, 950]
    saved = json.loads((tmp_path / "pipe" / "token_gain.json").read_text())
    assert saved["factor_names"][3:5] == ["scale", "shape"] and np.array(saved["factor_gain"]).shape == (6, 3)
    assert (tmp_path / "pipe" / "token_gain.png").stat().st_size > 1000
    assert "concept gain x1000" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        token_gain.main([str(tmp_path), "--num_images", "8"])  # not a pipeline folder


def test_supervised_probe_learns_the_dominant_factors_in_seconds():
    """A few seconds of supervised training already read the floor hue (44% of the pixel variance) far above chance."""
    result = supervised_probe.probe(16, steps=40, batch_size=32, num_test=300, width=16)
    assert result["steps"] == 40 and set(result["accuracy"]) == {"floor_hue", "wall_hue", "object_hue", "scale", "shape", "orientation"}
    assert result["accuracy"]["floor_hue"] > 0.3  # chance: 0.1
