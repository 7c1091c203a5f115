"""save_pretrained / from_pretrained round trips, the saved folder's layout, and broken folders."""
import ast
import json
import os
from pathlib import Path

import pytest
import torch

from encdiff_pipeline import EncDiffPipeline, hub
from encdiff_pipeline.models import concept_encoder
from tests.test_pipeline_encdiff import STEPS, make_tiny_pipeline, seeded, tiny_images


def outputs(pipe, images):
    """Everything a pipeline computes, for element-wise comparison."""
    return {
        "concepts": pipe.encode(images).float(),
        "images": pipe(images=images, num_inference_steps=STEPS, generator=seeded(), output_type="pt").images,
        "attention": pipe.attention_maps(images, generator=seeded()),
    }


@pytest.mark.parametrize(
    "vq, dtype", [(False, torch.float32), (True, torch.float32), (True, torch.bfloat16)], ids=["pixel", "vq", "vq-bf16"]
)
def test_round_trip_gives_identical_outputs(tmp_path, vq, dtype):
    pipe = make_tiny_pipeline(vq=vq).to(dtype)
    images = tiny_images(2, size=16 if vq else 8)
    before = outputs(pipe, images)
    pipe.save_pretrained(tmp_path / "saved")
    loaded = EncDiffPipeline.from_pretrained(tmp_path / "saved")
    loaded.set_progress_bar_config(disable=True)
    assert loaded.unet.dtype == dtype and loaded.encoder.dtype == dtype  # saved dtype kept
    assert loaded.config.latent_scale == pipe.config.latent_scale
    assert type(loaded.vae).__name__ == ("VQModel" if vq else "NoneType")
    after = outputs(loaded, images)
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=0, atol=0, msg=name)
    if dtype == torch.bfloat16:  # torch_dtype still wins
        upcast = EncDiffPipeline.from_pretrained(tmp_path / "saved", torch_dtype=torch.float32)
        assert upcast.unet.dtype == torch.float32


def test_saved_folder_carries_self_contained_remote_code(tmp_path):
    make_tiny_pipeline().save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["_class_name"] == ["pipeline_encdiff", "EncDiffPipeline"]
    assert index["encoder"] == ["concept_encoder", "ConceptEncoderModel"]
    assert index["unet"] == ["diffusers", "UNet2DConditionModel"]
    assert index["scheduler"] == ["diffusers", "DDIMScheduler"] and index["vae"] == [None, None]
    for code in (tmp_path / "pipeline_encdiff.py", tmp_path / "encoder" / "concept_encoder.py"):
        tree = ast.parse(code.read_text())
        for node in tree.body:  # no module-level import of this package, no relative imports
            if isinstance(node, ast.ImportFrom):
                assert node.level == 0 and not (node.module or "").startswith("encdiff_pipeline"), ast.unparse(node)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("encdiff_pipeline") for a in node.names), ast.unparse(node)
    # generated from the package source, so it cannot drift
    source = Path(concept_encoder.__file__).read_text()
    assert source.split("from __future__ import annotations\n", 1)[1] in (tmp_path / "encoder" / "concept_encoder.py").read_text()
    assert "class EncDiffPipeline(DiffusionPipeline)" in (tmp_path / "pipeline_encdiff.py").read_text()
    assert "def capture_cross_attention(" in (tmp_path / "pipeline_encdiff.py").read_text()  # inlined dependency
    EncDiffPipeline.from_pretrained(tmp_path).save_pretrained(tmp_path / "again")
    assert "_name_or_path" not in json.loads((tmp_path / "again" / "model_index.json").read_text())  # no local paths


def test_save_replaces_components_keeps_other_files_and_leaves_no_temp(tmp_path):
    target = tmp_path / "run"
    make_tiny_pipeline(seed=0).save_pretrained(target)
    (target / "notes.txt").write_text("training log")
    pipe = make_tiny_pipeline(seed=1)
    pipe.save_pretrained(target)
    assert (target / "notes.txt").read_text() == "training log"
    assert sorted(os.listdir(tmp_path)) == ["run"]  # no staging or set-aside folders left
    loaded = EncDiffPipeline.from_pretrained(target)
    images = tiny_images(2)
    torch.testing.assert_close(loaded.encode(images), pipe.encode(images), rtol=0, atol=0)


def test_failed_save_leaves_the_previous_folder_intact(tmp_path, monkeypatch):
    target = tmp_path / "run"
    first = make_tiny_pipeline(seed=0)
    first.save_pretrained(target)
    snapshot = {p: p.read_bytes() for p in target.rglob("*") if p.is_file()}

    def broken(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(hub, "write_remote_code", broken)
    with pytest.raises(RuntimeError, match="disk full"):
        make_tiny_pipeline(seed=1).save_pretrained(target)
    assert {p: p.read_bytes() for p in target.rglob("*") if p.is_file()} == snapshot
    assert sorted(os.listdir(tmp_path)) == ["run"]


def test_missing_or_truncated_weights_are_named(tmp_path):
    make_tiny_pipeline().save_pretrained(tmp_path)
    unet_weights = tmp_path / "unet" / "diffusion_pytorch_model.safetensors"
    encoder_weights = tmp_path / "encoder" / "diffusion_pytorch_model.safetensors"
    data = encoder_weights.read_bytes()
    encoder_weights.write_bytes(data[: len(data) - 100])
    with pytest.raises(OSError, match=rf"{encoder_weights}.*truncated"):
        EncDiffPipeline.from_pretrained(tmp_path)
    encoder_weights.write_bytes(data[:5])
    with pytest.raises(OSError, match=rf"{encoder_weights}.*truncated"):
        EncDiffPipeline.from_pretrained(tmp_path)
    encoder_weights.write_bytes(data)
    unet_weights.unlink()
    with pytest.raises(FileNotFoundError, match=rf"{unet_weights} is missing"):
        EncDiffPipeline.from_pretrained(tmp_path)
    (tmp_path / "model_index.json").unlink()
    with pytest.raises(FileNotFoundError, match="model_index.json is missing"):
        EncDiffPipeline.from_pretrained(tmp_path)


def test_pickle_saving_is_refused_and_unknown_arguments_are_named(tmp_path):
    pipe = make_tiny_pipeline()
    with pytest.raises(ValueError, match="safetensors only"):
        pipe.save_pretrained(tmp_path / "x", safe_serialization=False)
    with pytest.raises(TypeError, match=r"\['licence'\].*model card"):
        pipe.save_pretrained(tmp_path / "x", licence="mit")
    assert not (tmp_path / "x").exists() and sorted(os.listdir(tmp_path)) == []
    pipe.save_pretrained(tmp_path / "ok")
    with pytest.raises(TypeError, match="device_mapp"):
        EncDiffPipeline.from_pretrained(tmp_path / "ok", device_mapp="cpu")
    with pytest.raises(FileNotFoundError, match="neither a pipeline folder nor a Hub repo id"):
        EncDiffPipeline.from_pretrained(tmp_path / "does-not-exist")
