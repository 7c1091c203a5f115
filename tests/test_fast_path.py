"""The GPU-fast path on CPU: device-resident batches equal DataLoader batches element-wise, deferred
loss checks log the same losses, the encoder's unchecked forward, and the latent cache."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

from encdiff_pipeline.training.batches import BatchOrder, batch_loader  # noqa: E402
from encdiff_pipeline.training.fast_path import (DeviceBatches, LossMonitor, build_uint8_grid, make_adamw,  # noqa: E402
                                                 training_forward)

from encdiff_pipeline.data import ProceduralShapes3D  # noqa: E402
from encdiff_pipeline.models import ConceptEncoderModel  # noqa: E402

SIZES = [2, 2, 2, 2, 2, 3]  # 96 items


class EightBit(ProceduralShapes3D):
    """Procedural images stored at 8 bits, like real Shapes3D (float32 multiples of 1/255)."""

    def get_images(self, indices):
        return (np.round(super().get_images(indices) * 255.0).astype(np.float32) / np.float32(255.0))


@pytest.mark.parametrize("data_cls, uint8", [(ProceduralShapes3D, True), (EightBit, False)])
def test_device_batches_equal_dataloader_batches(data_cls, uint8):
    """Same seed, same steps (across an epoch boundary, from a resumed position): identical batches.
    Procedural floats: against the DataLoader's 8-bit rounding; 8-bit data: against the plain DataLoader."""
    data = data_cls(image_size=16, factor_sizes=SIZES)
    order = BatchOrder(len(data), batch_size=16, seed=5)  # 6 batches per epoch
    grid = build_uint8_grid(data, "cpu", chunk=40)
    assert grid.dtype == torch.uint8 and grid.shape == (96, 3, 16, 16)
    device = list(DeviceBatches(grid, data, BatchOrder(len(data), 16, seed=5), first=4, count=5))
    loader = list(batch_loader(data, order, first=4, count=5, uint8=uint8))
    assert [k for *_, k in device] == [4, 5, 6, 7, 8]
    for (a, fa, ka), (b, fb, kb) in zip(device, loader):
        assert ka == int(kb) and a.dtype == b.dtype == torch.float32
        assert torch.equal(a, b) and torch.equal(fa, fb)
    assert not torch.equal(device[0][0], device[1][0])


def test_loss_monitor_defers_reads_and_logs_the_same_losses():
    losses = [torch.tensor(v) for v in (0.5, 0.25, 0.125, 1.0, 0.75, 0.3)]  # 3 steps x 2 micro-batches
    logged = {}
    for every in (1, 2, 10):
        monitor, out = LossMonitor(gather=lambda t: t, accumulation=2, every=every), []
        for step in (1, 2, 3):
            for loss in losses[2 * step - 2 : 2 * step]:
                monitor.add(loss, step)
            out += monitor.end_step({"step": step, "loss": None}, flush=step == 3)
        logged[every] = [(r["step"], r["loss"]) for r in out]
    assert logged[1] == logged[2] == logged[10] and len(logged[1]) == 3
    monitor = LossMonitor(gather=lambda t: t, accumulation=1, every=5)
    monitor.add(torch.tensor(1.0), 1)
    assert monitor.end_step({"step": 1, "loss": None}, flush=False) == []
    monitor.add(torch.tensor(float("nan")), 2)
    with pytest.raises(FloatingPointError, match="at step 2"):
        monitor.end_step({"step": 2, "loss": None}, flush=True)


def test_encoder_unchecked_forward_is_the_same_and_skips_checks():
    encoder = ConceptEncoderModel(sample_size=16, num_concepts=3, token_dim=4, width=8, mlp_hidden_dims=(8,))
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    assert torch.equal(encoder(images).tokens, encoder(images, check_inputs=False).tokens)
    images[0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        encoder(images)
    encoder(images, check_inputs=False)  # the pipeline checks; the training step does not


def test_fused_adamw_and_compile_flags():
    params = [torch.nn.Parameter(torch.zeros(2))]
    assert make_adamw([{"params": params}], 1e-3, 0.01, fused=True).defaults["fused"] is True
    assert not make_adamw([{"params": params}], 1e-3, 0.01).defaults.get("fused")
    module = torch.nn.Linear(2, 2)
    assert training_forward(module) is module
    compiled = training_forward(module, compile_unet=True)  # lazy: nothing compiles until called
    assert compiled is not module and compiled._orig_mod is module


def _train_script():
    from training import train_encdiff

    return train_encdiff


def test_latent_cache_matches_the_encoder_and_training_never_encodes(tmp_path, monkeypatch):
    """Cache the latents of a tiny VQ, then a latent-space run on device-resident data with every
    knob that works on CPU: the first stage's encoder runs only on the one-image shape probe."""
    from diffusers import VQModel
    from encdiff_pipeline.training.latent_cache import load_latent_cache, main as cache_main
    from training.train_autoencoder import AUTOENCODER_PRESETS

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    torch.manual_seed(0)
    vq_dir = str(tmp_path / "vq")
    VQModel(**AUTOENCODER_PRESETS["tiny"]).save_pretrained(vq_dir)
    options = {"factor_sizes": SIZES}
    cache = str(tmp_path / "latents.safetensors")
    cache_main(["--vae_path", vq_dir, "--image_size", "16", "--dataset_options", json.dumps(options),
                "--output", cache, "--batch_size", "40"])
    latents, meta = load_latent_cache(cache, 96)
    assert latents.shape == (96, 3, 4, 4) and meta["dataset_options"] == options and meta["uint8"] is False
    data = ProceduralShapes3D(image_size=16, factor_sizes=SIZES)
    vq = VQModel.from_pretrained(vq_dir)
    images = torch.from_numpy(data.get_images(np.arange(90, 96))).permute(0, 3, 1, 2) * 2.0 - 1.0
    with torch.no_grad():
        torch.testing.assert_close(latents[90:], vq.encode(images).latents, rtol=1e-5, atol=1e-5)
    with pytest.raises(SystemExit, match="holds 96 latents but the training dataset has 10"):
        load_latent_cache(cache, 10)

    config = tmp_path / "latent_tiny.json"
    config.write_text(json.dumps({"image_size": 16, "latent": True, "unet_preset": "tiny",
                                  "encoder": {"num_concepts": 3, "token_dim": 8, "width": 8, "mlp_hidden_dims": [8, 8]},
                                  "training": {"learning_rate": 1e-3, "lr_warmup_steps": 0, "train_batch_size": 4}}))
    batch_sizes = []
    original = VQModel.encode
    monkeypatch.setattr(VQModel, "encode", lambda self, x, *a, **k: (batch_sizes.append(len(x)), original(self, x, *a, **k))[1])
    script = _train_script()
    run = str(tmp_path / "run")
    script.main(script.parse_args([
        "--config", str(config), "--vae_path", vq_dir, "--latent_cache", cache, "--dataset_options", json.dumps(options),
        "--output_dir", run, "--max_train_steps", "3", "--validation_metrics", "none", "--num_validation_images", "2",
        "--validation_inference_steps", "2", "--validation_dataset_options", json.dumps({"image_size": 16, "factor_sizes": SIZES}),
        "--report_to", "none", "--data_on_device", "--fused_adamw", "--channels_last", "--foreach_ema",
        "--host_sync_steps", "2", "--allow_tf32"]))
    assert batch_sizes == [1]  # build_models' shape probe only
    records = [json.loads(line) for line in open(os.path.join(run, "logs", "train_log.jsonl"))]
    train = [r for r in records if r["event"] == "train"]
    assert [r["step"] for r in train] == [1, 2, 3] and all(np.isfinite(r["loss"]) for r in train)
