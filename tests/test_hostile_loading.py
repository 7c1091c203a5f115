"""Hostile and careless pipeline folders: loading is strict, saving keeps the user's files."""
import json
import os
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from encdiff_pipeline import EncDiffPipeline
from tests.test_pipeline_encdiff import make_tiny_pipeline, tiny_images

WEIGHTS = "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hostile") / "base"
    make_tiny_pipeline().save_pretrained(folder)
    return folder


@pytest.fixture
def copy(saved, tmp_path):
    def make(name="pipe"):
        target = tmp_path / name
        shutil.copytree(saved, target)
        return target
    return make


def edit_weights(path, edit):
    state = load_file(str(path))
    edit(state)
    save_file(state, str(path))


def set_index_entry(folder, key, value):
    """Write `value` under `key` in the folder's model_index.json."""
    index = json.loads((folder / "model_index.json").read_text())
    index[key] = value
    (folder / "model_index.json").write_text(json.dumps(index))


def test_encoder_missing_a_tensor_is_named(copy):
    folder = copy()
    weights = folder / "encoder" / WEIGHTS
    edit_weights(weights, lambda sd: sd.pop("concept_head.weight"))
    with pytest.raises(ValueError, match=rf"{weights}.*missing tensors concept_head.weight"):
        EncDiffPipeline.from_pretrained(folder)


def test_unet_with_one_tensor_left_is_refused(copy):
    folder = copy()
    weights = folder / "unet" / WEIGHTS
    state = load_file(str(weights))
    first = next(iter(state))
    save_file({first: state[first]}, str(weights))
    with pytest.raises(ValueError, match=rf"{weights}.*missing tensors .* more"):
        EncDiffPipeline.from_pretrained(folder)


def test_unexpected_tensor_is_named(copy):
    folder = copy()
    weights = folder / "encoder" / WEIGHTS
    edit_weights(weights, lambda sd: sd.update(stowaway=torch.zeros(2)))
    with pytest.raises(ValueError, match=rf"{weights}.*unexpected tensors stowaway"):
        EncDiffPipeline.from_pretrained(folder)


def test_missing_tensor_loads_with_strict_false_and_is_initialised(copy):
    folder = copy()
    edit_weights(folder / "encoder" / WEIGHTS, lambda sd: sd.pop("concept_head.weight"))
    with pytest.warns(UserWarning, match="missing tensors concept_head.weight"):
        pipe = EncDiffPipeline.from_pretrained(folder, strict=False)
    weight = pipe.encoder.concept_head.weight
    assert weight.device.type == "cpu" and torch.isfinite(weight).all()
    images = tiny_images(2)
    torch.testing.assert_close(pipe.encode(images), pipe.encode(images), rtol=0, atol=0)  # deterministic


def test_non_finite_weights_are_named(copy):
    folder = copy()
    weights = folder / "encoder" / WEIGHTS
    edit_weights(weights, lambda sd: sd["concept_head.weight"].fill_(float("nan")))
    with pytest.raises(ValueError, match=rf"{weights} holds NaN or infinite values in concept_head.weight"):
        EncDiffPipeline.from_pretrained(folder)
    with pytest.warns(UserWarning, match="NaN or infinite"):
        EncDiffPipeline.from_pretrained(folder, strict=False)


def test_wrong_class_for_the_encoder_slot_is_refused(copy):
    folder = copy()
    set_index_entry(folder, "encoder", ["diffusers", "UNet2DConditionModel"])
    for strict in (True, False):  # off the allow-list: refused whatever strict says
        with pytest.raises(ValueError, match="component 'encoder' names diffusers.UNet2DConditionModel, which is not "
                                             "allowed .*expected encdiff_pipeline.ConceptEncoderModel"):
            EncDiffPipeline.from_pretrained(folder, strict=strict)


def test_transformers_class_is_never_loaded(copy):
    folder = copy()
    set_index_entry(folder, "unet", ["transformers", "AutoModel"])
    with pytest.raises(ValueError, match="component 'unet' names transformers.AutoModel, which is not allowed"):
        EncDiffPipeline.from_pretrained(folder, strict=False)


@pytest.mark.parametrize("text, message", [
    ("[1, 2]", "holds a JSON list; expected an object"),
    ("{bad", "is not valid JSON"),
    ('{"encoder": ["diffusers"], "unet": ["diffusers", "UNet2DConditionModel"]}', "'encoder' must be \\[library, class name\\]"),
])
def test_broken_model_index_is_named(copy, text, message):
    folder = copy()
    (folder / "model_index.json").write_text(text)
    with pytest.raises(ValueError, match=f"model_index.json.*{message}"):
        EncDiffPipeline.from_pretrained(folder)


def test_safetensors_header_that_is_a_list_is_named(copy):
    folder = copy()
    weights = folder / "encoder" / WEIGHTS
    header = b"[1, 2, 3]"
    weights.write_bytes(len(header).to_bytes(8, "little") + header)
    with pytest.raises(OSError, match=rf"{weights} is corrupt: its safetensors header is a JSON list"):
        EncDiffPipeline.from_pretrained(folder)


def test_save_keeps_user_files_in_component_folders(copy):
    folder = copy()
    (folder / "encoder" / "my_notes.txt").write_text("precious")
    (folder / "unet" / "experiment.log").write_text("also precious")
    pipe = make_tiny_pipeline(seed=3)
    pipe.save_pretrained(folder)
    assert (folder / "encoder" / "my_notes.txt").read_text() == "precious"
    assert (folder / "unet" / "experiment.log").read_text() == "also precious"
    images = tiny_images(2)
    torch.testing.assert_close(EncDiffPipeline.from_pretrained(folder).encode(images), pipe.encode(images), rtol=0, atol=0)
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging left


def test_save_onto_a_file_is_named(tmp_path):
    target = tmp_path / "afile"
    target.write_text("keep me")
    with pytest.raises(NotADirectoryError, match="existing file"):
        make_tiny_pipeline().save_pretrained(target)
    assert target.read_text() == "keep me"


def test_torch_dtype_as_a_string(saved):
    assert EncDiffPipeline.from_pretrained(saved, torch_dtype="float16").unet.dtype == torch.float16
    with pytest.raises(ValueError, match="'float17' is not a torch dtype"):
        EncDiffPipeline.from_pretrained(saved, torch_dtype="float17")


def test_save_removes_stale_weight_files_of_an_earlier_save(copy):
    folder = copy()
    stale = folder / "unet" / "diffusion_pytorch_model.safetensors.index.json"
    stale.write_text('{"weight_map": {}}')  # an earlier sharded save's index would shadow the new weights
    make_tiny_pipeline(seed=4).save_pretrained(folder)
    assert not stale.exists()
    EncDiffPipeline.from_pretrained(folder)


def _changed(pipe, seed):
    torch.manual_seed(seed)
    for module in (pipe.encoder, pipe.unet):
        for parameter in module.parameters():
            parameter.data.add_(torch.randn_like(parameter) * 0.01)
    return pipe


@pytest.mark.parametrize("fail_at", [1, 2, 4, 6])
def test_failed_save_into_an_existing_folder_leaves_the_old_save(copy, saved, monkeypatch, fail_at):
    """A failure at any rename of save_pretrained restores the old folder: never new encoder + old U-Net."""
    import encdiff_pipeline.hub as hub

    folder = copy()
    (folder / "encoder" / "my_notes.txt").write_text("precious")
    before = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    real, calls = hub.os.replace, [0]

    def flaky(source, destination):
        calls[0] += 1
        if calls[0] == fail_at:
            raise OSError(28, "No space left on device")
        return real(source, destination)

    new = _changed(EncDiffPipeline.from_pretrained(saved), seed=fail_at)
    monkeypatch.setattr(hub.os, "replace", flaky)
    with pytest.raises(OSError, match="No space left"):
        new.save_pretrained(folder)
    monkeypatch.setattr(hub.os, "replace", real)
    after = {p.relative_to(folder): p.read_bytes() for p in folder.rglob("*") if p.is_file()}
    assert after == before
    assert not [p.name for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging or backup left
    EncDiffPipeline.from_pretrained(folder)


def test_interrupted_save_is_refused_on_load(copy):
    folder = copy()
    (folder / ".encdiff_save_incomplete").write_text("{}")  # what a process killed mid-save leaves
    with pytest.raises(OSError, match="save_pretrained into this folder is in progress or was interrupted"):
        EncDiffPipeline.from_pretrained(folder)


def test_saved_folders_follow_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        make_tiny_pipeline().save_pretrained(tmp_path / "fresh")
    finally:
        os.umask(old)
    modes = {p.relative_to(tmp_path): p.stat().st_mode & 0o777 for p in [tmp_path / "fresh", *(tmp_path / "fresh").rglob("*")]}
    assert modes[Path("fresh")] == 0o755
    assert all(mode == (0o755 if (tmp_path / p).is_dir() else 0o644) for p, mode in modes.items()), modes


@pytest.mark.parametrize("component, key, value, message", [
    ("unet", "block_out_channels", [-8, 16], r"unet/config.json does not describe a valid UNet2DConditionModel"),
    ("encoder", "num_concepts", "four", r"encoder/config.json does not describe a valid ConceptEncoderModel: .*'four'"),
    ("encoder", "num_concepts", 10**6, r"encoder/config.json describes a ConceptEncoderModel of [\d,]+ values but its "
                                       r"weights hold [\d,]+; refusing to build it"),
])
def test_hostile_component_configs_are_named_before_building(copy, component, key, value, message):
    folder = copy()
    config_file = folder / component / "config.json"
    config = json.loads(config_file.read_text())
    config[key] = value
    config_file.write_text(json.dumps(config))
    with pytest.raises(ValueError, match=message):
        EncDiffPipeline.from_pretrained(folder)


def test_non_numeric_latent_scale_is_named(copy):
    folder = copy()
    set_index_entry(folder, "latent_scale", "abc")
    with pytest.raises(ValueError, match="latent_scale must be a positive finite float, got 'abc'"):
        EncDiffPipeline.from_pretrained(folder)


def test_mistyped_relative_path_is_not_a_hub_id(tmp_path, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(FileNotFoundError, match="runs/encdiff-typo is not a folder .*not looking it up on the Hub"):
        EncDiffPipeline.from_pretrained("runs/encdiff-typo")
    with pytest.raises(FileNotFoundError, match="someone/encdiff-x is not a local folder, and as a Hub repo id it "
                                                "cannot be found"):
        EncDiffPipeline.from_pretrained("someone/encdiff-x")  # HF_HUB_OFFLINE: not in the cache
