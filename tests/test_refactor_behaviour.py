"""Recorded behaviour: a short seeded `tiny` training run and a pipeline's outputs for fixed inputs.

The numbers in `fixtures/refactor_behaviour.json` were recorded before the training machinery moved
into the package (issue 12); these tests recompute them and compare with `RTOL` / `ATOL`. The same
code on the same machine gives identical numbers; another CPU (other SIMD widths, other oneDNN / BLAS
kernels, other summation orders) rounds float32 differently, by ~1e-6 after the hundreds of ops of a
few-step sampling run (measured 1.6e-6 on an AVX2 EPYC against this record). The tolerance,
1e-4 relative plus 1e-5 absolute, is 6x that rounding at a value of 0 and 40x at 0.5, and real
changes still exceed it: `test_the_tolerance_catches_real_changes` perturbs one U-Net or encoder
weight by 1e-3, or shifts the sampler's timesteps by one, and each must fail the comparison.
Re-record (only for a deliberate change of behaviour) with

    python -m tests.test_refactor_behaviour
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import pytest
import torch

from tests import HANG_GUARD_S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "refactor_behaviour.json")
HELD = json.dumps({"image_size": 16, "factor_sizes": [2, 2, 2, 2, 2, 2]})
TRAIN_ARGS = ["--preset", "tiny", "--dataset", "procedural-shapes3d", "--max_train_steps", "6", "--seed", "0",
              "--train_batch_size", "4", "--validation_dataset_options", HELD, "--validation_metrics", "none",
              "--validation_inference_steps", "1", "--num_validation_images", "2", "--report_to", "none"]
RTOL, ATOL = 1e-4, 1e-5  # float32 rounding across CPUs: see the module docstring


def training_losses() -> list[float]:
    """Per-step losses of `training/train_encdiff.py` (tiny preset, 6 steps, seed 0), from its log."""
    with tempfile.TemporaryDirectory() as tmp:
        run = os.path.join(tmp, "run")
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT}
        proc = subprocess.run([sys.executable, os.path.join("training", "train_encdiff.py"), *TRAIN_ARGS, "--output_dir", run],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=HANG_GUARD_S)
        assert proc.returncode == 0, proc.stderr[-4000:]
        with open(os.path.join(run, "logs", "train_log.jsonl"), encoding="utf-8") as f:
            return [r["loss"] for r in map(json.loads, f) if r["event"] == "train"]


def pipeline_outputs(names=("pixel", "adagn", "latent"), change=None) -> dict[str, list]:
    """Concepts and few-step reconstructions of fixed images: pixel space (cross-attention and AdaGN
    U-Nets) and latent space (a tiny VQ first stage), plus the deterministic decoder. `change(pipe)`,
    if given, edits each pipeline before it runs."""
    from diffusers import VQModel

    from encdiff_pipeline import ConceptEncoderModel, EncDiffPipeline
    from encdiff_pipeline.models import unet_from_preset

    def adagn(n, d):
        return dict(down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                    mid_block_type="UNetMidBlock2D", class_embed_type="projection",
                    projection_class_embeddings_input_dim=n * d)

    torch.manual_seed(0)
    images = torch.rand(3, 3, 8, 8, generator=torch.Generator().manual_seed(1)) * 2 - 1
    out = {}
    for name in names:
        torch.manual_seed(0)
        encoder = ConceptEncoderModel(sample_size=8, num_concepts=4, token_dim=8, width=8)
        vae = None
        if name == "latent":
            vae = VQModel(in_channels=3, out_channels=3, sample_size=8, latent_channels=3, vq_embed_dim=3,
                          down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
                          block_out_channels=[8, 8], layers_per_block=1, norm_num_groups=4, num_vq_embeddings=16,
                          mid_block_add_attention=False)
        extra = adagn(4, 8) if name == "adagn" else {}
        size = 8 if vae is None else 4
        unet = unet_from_preset("tiny", sample_size=size, cross_attention_dim=8, in_channels=3, out_channels=3, **extra)
        pipe = EncDiffPipeline(encoder=encoder, unet=unet, vae=vae, latent_scale=0.7 if vae is not None else 1.0)
        pipe.set_progress_bar_config(disable=True)
        if change is not None:
            change(pipe)
        concepts = pipe.encode(images)
        recon = pipe(images=images, num_inference_steps=3, generator=torch.Generator().manual_seed(0), output_type="np").images
        out[f"{name}_concepts"] = concepts.flatten().tolist()
        out[f"{name}_reconstruction"] = np.asarray(recon, dtype=np.float64).flatten().tolist()
        if name != "adagn":
            with torch.no_grad():
                maps = pipe.attention_maps(images, timestep=500, generator=torch.Generator().manual_seed(0))
            out[f"{name}_attention"] = maps.flatten().tolist()
    return out


def _load():
    with open(FIXTURE, encoding="utf-8") as f:
        return json.load(f)


def _differing(now: dict, recorded: dict) -> list[str]:
    """The keys whose values differ from the record by more than the tolerance."""
    return [key for key in now if not np.allclose(now[key], recorded[key], rtol=RTOL, atol=ATOL)]


def test_tiny_training_losses_are_unchanged():
    np.testing.assert_allclose(training_losses(), _load()["training_losses"], rtol=RTOL, atol=ATOL)


def test_pipeline_outputs_are_unchanged():
    recorded, now = _load()["pipeline"], pipeline_outputs()
    assert sorted(now) == sorted(recorded)
    for key, values in recorded.items():
        np.testing.assert_allclose(now[key], values, rtol=RTOL, atol=ATOL, err_msg=key)


def _nudge_unet_weight(pipe):
    with torch.no_grad():
        pipe.unet.conv_in.weight.view(-1)[0] += 1e-3


def _nudge_encoder_weight(pipe):
    with torch.no_grad():
        next(pipe.encoder.parameters()).view(-1)[0] += 1e-3


def _shift_timesteps(pipe):
    pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, steps_offset=1)


@pytest.mark.parametrize("change, changed", [
    (_nudge_unet_weight, ["pixel_reconstruction"]),  # moves pixels by up to 2.3e-3
    (_nudge_encoder_weight, ["pixel_concepts"]),  # moves a concept by 6.5e-5 (2x the tolerance)
    (_shift_timesteps, ["pixel_reconstruction"]),  # attention_maps takes its own timestep
])
def test_the_tolerance_catches_real_changes(change, changed):
    """One weight nudged by 1e-3, or the sampler's timesteps shifted by one, fails the comparison.
    (The tiny untrained model's attention maps are near-uniform, ~0.25: a 1e-3 nudge moves them by
    ~3e-6, within CPU rounding; changing how they are computed, e.g. head 0 instead of the mean over
    heads, moves them by 1e-2, and test_models_attention_capture checks that computation by hand.)"""
    assert _differing(pipeline_outputs(["pixel"], change=change), _load()["pipeline"]) == changed

if __name__ == "__main__":
    torch.set_num_threads(1)
    record = {"training_args": TRAIN_ARGS, "training_losses": training_losses(), "pipeline": pipeline_outputs()}
    with open(FIXTURE, "w", encoding="utf-8") as f:
        json.dump(record, f)
        f.write("\n")
    print(f"wrote {FIXTURE}: losses {record['training_losses']}")
