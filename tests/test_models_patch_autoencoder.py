"""PatchAutoencoder: the lossless pixel-patch first stage, alone, in a pipeline, and in training."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch

from encdiff_pipeline import ConceptEncoderModel, EncDiffPipeline, PatchAutoencoder
from encdiff_pipeline.models import unet_from_preset
from tests import HANG_GUARD_S

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_patches_are_the_pixels_rearranged_and_invert_exactly():
    first_stage = PatchAutoencoder(in_channels=3, patch_size=2)
    x = torch.arange(2 * 3 * 4 * 6, dtype=torch.float32).reshape(2, 3, 4, 6)
    latents = first_stage.encode(x).latents
    assert latents.shape == (2, 12, 2, 3) and first_stage.config.latent_channels == 12
    # channel c * 4 + i * 2 + j of patch (h, w) is pixel (c, 2h + i, 2w + j)
    assert latents[1, 2 * 4 + 1 * 2 + 0, 1, 2] == x[1, 2, 3, 4]
    assert torch.equal(first_stage.decode(latents).sample, x)
    assert torch.equal(first_stage(x).sample, x)


@pytest.mark.parametrize("kwargs, shape, message", [
    ({"patch_size": 0}, None, "patch_size must be a positive int"),
    ({"patch_size": 2, "latent_channels": 3}, None, "latent_channels must be in_channels"),
    ({"patch_size": 2}, (1, 3, 5, 4), "multiples of 2"),
    ({"patch_size": 2}, (1, 1, 4, 4), "expected images of shape"),
])
def test_bad_settings_and_shapes_are_refused(kwargs, shape, message):
    with pytest.raises(ValueError, match=message):
        PatchAutoencoder(**kwargs).encode(torch.zeros(shape))


def _patched_pipeline() -> EncDiffPipeline:
    torch.manual_seed(0)
    encoder = ConceptEncoderModel(sample_size=16, num_concepts=4, token_dim=8, width=8)
    unet = unet_from_preset("tiny", sample_size=8, in_channels=12, out_channels=12, cross_attention_dim=8)
    return EncDiffPipeline(encoder, unet, vae=PatchAutoencoder(in_channels=3, patch_size=2))


def test_pipeline_generates_full_size_images_and_round_trips_through_save(tmp_path):
    pipe = _patched_pipeline()
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    images = pipe(images=x, num_inference_steps=3, generator=torch.manual_seed(0), output_type="np").images
    assert images.shape == (2, 16, 16, 3) and np.isfinite(images).all()
    pipe.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["vae"][1] == "PatchAutoencoder"
    loaded = EncDiffPipeline.from_pretrained(tmp_path)
    assert isinstance(loaded.vae, PatchAutoencoder) and loaded.config.latent_scale == 1.0
    again = loaded(images=x, num_inference_steps=3, generator=torch.manual_seed(0), output_type="np").images
    np.testing.assert_array_equal(again, images)


def test_a_patch_preset_trains_its_unet_on_patches(tmp_path):
    preset = {"image_size": 16, "patch_size": 2, "encoder": {"num_concepts": 4, "token_dim": 8, "width": 16,
                                                             "mlp_hidden_dims": [16, 16]},
              "unet_preset": "tiny", "unet": {}, "training": {"train_batch_size": 8}}
    config = tmp_path / "preset.json"
    config.write_text(json.dumps(preset))
    out = tmp_path / "run"
    cmd = [sys.executable, os.path.join(REPO, "training", "train_encdiff.py"), "--config", str(config),
           "--dataset", "procedural-shapes3d", "--output_dir", str(out), "--max_train_steps", "2", "--seed", "0",
           "--validation_steps", "2", "--num_validation_images", "2", "--validation_inference_steps", "2",
           "--validation_metrics", "none", "--report_to", "none"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "PYTHONPATH": REPO}  # this checkout's package
    result = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, env=env, timeout=HANG_GUARD_S)
    assert result.returncode == 0, result.stderr[-2000:]
    pipe = EncDiffPipeline.from_pretrained(out)
    assert isinstance(pipe.vae, PatchAutoencoder)
    assert (pipe.unet.config.in_channels, pipe.unet.config.sample_size) == (12, 8)
    assert pipe.config.latent_scale == 1.0  # patches are pixels: no first-batch rescaling
    losses = [r["loss"] for r in map(json.loads, (out / "logs" / "train_log.jsonl").read_text().splitlines())
              if r.get("event") == "train"]
    assert len(losses) >= 1 and all(np.isfinite(losses))
