"""Hostile and careless saves and loads (second probe): a save replaces only the files it writes,
variants live beside each other, nothing outside the pipeline folder is read or written, a load sees
one whole save, and weights or schedules that would silently produce garbage are refused."""
import json
import os
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import encdiff_pipeline.hub as hub
from encdiff_pipeline import EncDiffPipeline
from tests.test_hostile_loading import WEIGHTS, copy, edit_weights, saved, set_index_entry  # noqa: F401 (fixtures)
from tests.test_pipeline_encdiff import make_tiny_pipeline


def _files(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _bias(pipe):
    return float(pipe.encoder.concept_head.bias[0].detach()), float(pipe.unet.conv_out.bias[0].detach())


# ---- a save replaces only what it writes (B45, B46) ----
def test_save_keeps_other_variants_and_users_files_named_like_weights(copy):
    folder = copy()
    for component in ("encoder", "unet"):  # an earlier fp16 variant
        save_file({k: v.half() for k, v in load_file(str(folder / component / WEIGHTS)).items()},
                  str(folder / component / "diffusion_pytorch_model.fp16.safetensors"))
    fp16 = folder / "unet" / "diffusion_pytorch_model.fp16.safetensors"
    notes = folder / "unet" / "diffusion_pytorch_model_notes.txt"
    notes.write_text("mine")
    kept = fp16.read_bytes()
    make_tiny_pipeline(seed=3).save_pretrained(folder)
    assert fp16.read_bytes() == kept and notes.read_text() == "mine"
    assert EncDiffPipeline.from_pretrained(folder, variant="fp16").unet.dtype == torch.float16


def test_variant_save_is_added_beside_the_default_weights(copy):
    folder = copy()
    default = _files(folder)
    make_tiny_pipeline(seed=5).save_pretrained(folder, variant="fp16")
    after = _files(folder)
    for component in ("encoder", "unet"):
        rel = f"{component}/{WEIGHTS}"
        assert after[rel] == default[rel]  # the default weights are untouched
        assert f"{component}/diffusion_pytorch_model.fp16.safetensors" in after
    EncDiffPipeline.from_pretrained(folder)
    EncDiffPipeline.from_pretrained(folder, variant="fp16")


def test_replaced_weight_files_are_the_same_variants_only(tmp_path):
    names = [WEIGHTS, "diffusion_pytorch_model-00001-of-00002.safetensors", "diffusion_pytorch_model.safetensors.index.json",
             "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16-00001-of-00002.safetensors",
             "diffusion_pytorch_model.safetensors.index.fp16.json", "diffusion_pytorch_model_notes.txt", "config.json"]
    for name in names:
        (tmp_path / name).write_text("x")
    assert sorted(p.name for p in hub.replaced_weight_files(tmp_path, None)) == sorted(names[:3])
    assert sorted(p.name for p in hub.replaced_weight_files(tmp_path, "fp16")) == sorted(names[3:6])


# ---- a save that cannot finish fails before moving anything, and a failed rollback says so (H10) ----
def test_destination_that_is_a_folder_fails_before_anything_moves(copy):
    folder = copy()
    (folder / "model_index.json").unlink()
    (folder / "model_index.json" / "sub").mkdir(parents=True)
    before = _files(folder)
    with pytest.raises(IsADirectoryError, match=r"model_index.json is a folder, where the save writes a file.*nothing was"):
        make_tiny_pipeline(seed=2).save_pretrained(folder)
    assert _files(folder) == before and not (folder / hub.INCOMPLETE_SAVE_MARKER).exists()
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]
    (folder / "unet").rename(folder / "unet_moved")
    (folder / "unet").write_text("a file where a folder goes")
    with pytest.raises(NotADirectoryError, match=r"unet is a file, where the save needs a folder"):
        make_tiny_pipeline(seed=2).save_pretrained(folder)


def test_rollback_that_cannot_undo_a_move_says_where_the_old_files_are(copy, monkeypatch):
    folder = copy()
    real, calls = hub.os.replace, [0]

    def flaky(source, destination):
        calls[0] += 1
        if calls[0] in (3, 4):  # the third move fails, and so does undoing the second
            raise OSError(5, "Input/output error")
        return real(source, destination)

    monkeypatch.setattr(hub.os, "replace", flaky)
    with pytest.raises(OSError, match="Input/output error") as info:
        make_tiny_pipeline(seed=2).save_pretrained(folder)
    monkeypatch.setattr(hub.os, "replace", real)
    note = " ".join(getattr(info.value, "__notes__", []))
    assert "could not be undone" in note and "the files it replaced are in" in note
    backup = note.rsplit("the files it replaced are in ", 1)[1].rstrip(".")
    assert os.path.isdir(backup) and os.listdir(backup)  # the old files are kept, not deleted
    with pytest.raises(OSError, match="in progress or was interrupted"):  # marked: never loaded as a mix
        EncDiffPipeline.from_pretrained(folder)


# ---- nothing outside the pipeline folder is read or written (B03, B33, shards) ----
def test_component_folder_linked_out_of_the_pipeline_is_refused(copy, tmp_path):
    folder = copy()
    outside = tmp_path / "outside"
    shutil.move(str(folder / "encoder"), outside)
    os.symlink(outside, folder / "encoder")
    before = _files(outside)
    with pytest.raises(ValueError, match=r"component 'encoder': .*encoder leads out of the pipeline folder"):
        EncDiffPipeline.from_pretrained(folder)
    with pytest.raises(ValueError, match=r"component folder .*encoder leads out of the pipeline folder"):
        make_tiny_pipeline(seed=2).save_pretrained(folder)
    assert _files(outside) == before and not (folder / hub.INCOMPLETE_SAVE_MARKER).exists()


def test_weights_file_linked_out_of_the_pipeline_is_refused(copy, tmp_path):
    folder = copy()
    outside = tmp_path / "elsewhere.safetensors"
    shutil.move(str(folder / "unet" / WEIGHTS), outside)
    os.symlink(outside, folder / "unet" / WEIGHTS)
    with pytest.raises(ValueError, match=r"unet/diffusion_pytorch_model.safetensors leads out of the pipeline folder"):
        EncDiffPipeline.from_pretrained(folder)


@pytest.mark.parametrize("key", ["/abs/outside", "../outside", "unet/../../x", "a b"])
def test_model_index_keys_that_are_paths_are_refused(copy, tmp_path, key):
    folder = copy()
    set_index_entry(folder, key if not key.startswith("/") else str(tmp_path / "outside"), ["diffusers", "UNet2DConditionModel"])
    with pytest.raises(ValueError, match=r"model_index.json: keys .* are not component or setting names"):
        EncDiffPipeline.from_pretrained(folder)


def test_shard_index_pointing_out_of_the_folder_is_refused_before_reading(copy, tmp_path):
    folder = copy()
    outside = tmp_path / "outside.safetensors"
    shutil.copyfile(folder / "unet" / WEIGHTS, outside)
    (folder / "unet" / "diffusion_pytorch_model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"conv_out.bias": f"../../{outside.name}"}}))
    with pytest.raises(ValueError, match="leads out of the pipeline folder"):
        EncDiffPipeline.from_pretrained(folder)


# ---- a load sees one whole save (H03) ----
def test_load_during_a_resave_reads_the_folder_again(copy, monkeypatch):
    folder = copy()
    real, saves = hub._load_model_component, []

    def resave_midway(component_cls, component, *args):
        if component.name == "unet" and not saves:  # another process re-saves between encoder and U-Net
            saves.append(1)
            make_tiny_pipeline(seed=7).save_pretrained(folder)
        return real(component_cls, component, *args)

    monkeypatch.setattr(hub, "_load_model_component", resave_midway)
    loaded = EncDiffPipeline.from_pretrained(folder)
    assert saves and _bias(loaded) == _bias(make_tiny_pipeline(seed=7))  # one whole save, the new one


def test_load_during_endless_resaves_fails_clearly(copy, monkeypatch):
    folder = copy()
    real = hub._load_model_component

    def resave_every_time(component_cls, component, *args):
        if component.name == "unet":
            make_tiny_pipeline(seed=8).save_pretrained(folder)
        return real(component_cls, component, *args)

    monkeypatch.setattr(hub, "_load_model_component", resave_every_time)
    monkeypatch.setattr(hub.time, "sleep", lambda seconds: None)
    with pytest.raises(OSError, match=r"changed while it was being loaded, 3 times \(another process is saving"):
        EncDiffPipeline.from_pretrained(folder)


# ---- weights and schedules that would silently give garbage (B12, B13, B38, B39, B41) ----
@pytest.mark.parametrize("dtype", [torch.bool, torch.int64, torch.int8])
def test_non_float_weights_are_refused(copy, dtype):
    folder = copy()
    weights = folder / "encoder" / WEIGHTS
    edit_weights(weights, lambda sd: sd.update({k: v.to(dtype) for k, v in sd.items()}))
    with pytest.raises(ValueError, match=rf"{weights} stores float parameters of ConceptEncoderModel as non-floating"):
        EncDiffPipeline.from_pretrained(folder)
    with pytest.warns(UserWarning, match="non-floating"):
        EncDiffPipeline.from_pretrained(folder, strict=False)


@pytest.mark.parametrize("edit, message", [
    ({"beta_start": 0.02, "beta_end": 0.0001, "beta_schedule": "linear"}, "betas decrease with t"),
    ({"beta_end": 1.5, "beta_schedule": "linear"}, r"betas must lie in \(0, 1\)"),
    ({"num_train_timesteps": -5}, "num_train_timesteps must be an integer >= 1, got -5|does not describe a valid"),
    ({"num_train_timesteps": 0}, "num_train_timesteps must be an integer >= 1, got 0"),
])
def test_meaningless_noise_schedules_are_refused_naming_the_file(copy, edit, message):
    folder = copy()
    config_file = folder / "scheduler" / "scheduler_config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **edit}))
    with pytest.raises(ValueError, match=rf"scheduler_config.json.*({message})"):
        EncDiffPipeline.from_pretrained(folder)


# ---- configs whose errors did not name the key or file (B19, B24, B32, B57, B58) ----
@pytest.mark.parametrize("text, message", [
    ('{"width": "8"}', r"encoder/config.json does not describe a valid ConceptEncoderModel: width must be an integer, got '8'"),
    ("[1, 2]", r"encoder/config.json holds a JSON list; expected an object"),
    ('{"sample_size": 1000000}', r"Weights file .*encoder.* does not fit the ConceptEncoderModel that .*encoder/config.json"),
])
def test_bad_component_configs_name_the_file_and_key(copy, text, message):
    folder = copy()
    config_file = folder / "encoder" / "config.json"
    edit = json.loads(text)
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), **edit} if isinstance(edit, dict) else edit))
    with pytest.raises(ValueError, match=message):
        EncDiffPipeline.from_pretrained(folder)


def test_deeply_nested_model_index_is_named(copy):
    folder = copy()
    (folder / "model_index.json").write_text("[" * 100000 + "]" * 100000)
    with pytest.raises(ValueError, match=r"model_index.json is not valid JSON \(nested too deeply\)"):
        EncDiffPipeline.from_pretrained(folder)


# ---- a save killed while moving files: the previous save comes back (SIGKILL during a final save) ----
def _killed_save(folder, at_move):
    """Save a new pipeline into `folder` in a forked child that SIGKILLs itself at its `at_move`-th rename."""
    import signal

    pipe = make_tiny_pipeline(seed=9)
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        try:
            real, calls = hub.os.replace, [0]

            def killing(source, destination):
                calls[0] += 1
                if calls[0] == at_move:
                    os.kill(os.getpid(), signal.SIGKILL)
                return real(source, destination)

            hub.os.replace = killing
            pipe.save_pretrained(folder)
        finally:
            os._exit(3)
    _, status = os.waitpid(pid, 0)
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
    assert (folder / hub.INCOMPLETE_SAVE_MARKER).exists()


def test_save_killed_mid_move_restores_the_previous_save_on_load(copy, saved):
    folder = copy()
    (folder / "unet" / "my_notes.txt").write_text("mine")
    before = _files(folder)
    _killed_save(folder, at_move=5)  # some files of the new save are in place, the rest not
    with pytest.warns(UserWarning, match="was killed while moving its files .* the save it was replacing is restored"):
        loaded = EncDiffPipeline.from_pretrained(folder)
    assert _bias(loaded) == _bias(EncDiffPipeline.from_pretrained(saved))
    assert _files(folder) == before
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # staging and backup cleared


def test_first_save_into_a_run_folder_killed_mid_move_leaves_the_run_as_it_was(tmp_path):
    run = tmp_path / "run"
    (run / "checkpoint-2" / "unet").mkdir(parents=True)
    (run / "checkpoint-2" / "unet" / "config.json").write_text("{}")
    (run / "training_args.json").write_text("{}")
    before = _files(run)
    _killed_save(run, at_move=4)
    with pytest.warns(UserWarning, match="the save it was replacing is restored"):
        assert hub.recover_interrupted_save(run)
    assert _files(run) == before  # the partial pipeline is gone; the checkpoint is untouched


def test_marker_of_a_live_saver_is_not_recovered(copy):
    folder = copy()
    (folder / hub.INCOMPLETE_SAVE_MARKER).write_text(json.dumps({
        "new_files": str(folder), "replaced_files": str(folder), "pid": os.getpid(), "host": hub.socket.gethostname(),
        "files": [], "stale": []}))
    assert not hub.recover_interrupted_save(folder)
    with pytest.raises(OSError, match="in progress or was interrupted"):
        EncDiffPipeline.from_pretrained(folder)


def test_single_model_folders_get_the_same_weight_checks(tmp_path):
    """The B12/B13 class beyond pipelines: a first stage (--vae_path) and a baseline with bool weights."""
    from diffusers import VQModel

    from encdiff_pipeline.baselines import BetaVAEModel, load_baseline
    from encdiff_pipeline.training.first_stage import load_vae
    from tests.test_baselines_models import TINY

    vq = VQModel(in_channels=3, out_channels=3, latent_channels=3, vq_embed_dim=3, num_vq_embeddings=16,
                 down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                 block_out_channels=(8,), layers_per_block=1, norm_num_groups=4, sample_size=8)
    for model, name in ((vq, "vq"), (BetaVAEModel(**TINY), "baseline")):
        model.save_pretrained(tmp_path / name)
        edit_weights(tmp_path / name / WEIGHTS, lambda sd: sd.update({k: v.to(torch.bool) for k, v in sd.items()}))
    with pytest.raises(SystemExit, match="--vae_path .*stores float parameters of VQModel as non-floating"):
        load_vae(str(tmp_path / "vq"))
    with pytest.raises(ValueError, match="stores float parameters of BetaVAEModel as non-floating"):
        load_baseline(tmp_path / "baseline")


def test_hub_cache_snapshot_whose_files_link_into_blobs_still_loads(saved, tmp_path):
    """The Hub cache's layout: snapshot files are links into the repo's blobs/ folder (allowed), while a
    link to anywhere else is not."""
    repo = tmp_path / "models--user--encdiff"
    snapshot, blobs = repo / "snapshots" / "abc123", repo / "blobs"
    blobs.mkdir(parents=True)
    for k, path in enumerate(p for p in saved.rglob("*") if p.is_file()):
        blob = blobs / f"blob{k}"
        shutil.copyfile(path, blob)
        link = snapshot / path.relative_to(saved)
        link.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(os.path.relpath(blob, link.parent), link)
    EncDiffPipeline.from_pretrained(snapshot)
    outside = tmp_path / "elsewhere.safetensors"
    shutil.copyfile(saved / "unet" / WEIGHTS, outside)
    (snapshot / "unet" / WEIGHTS).unlink()
    os.symlink(outside, snapshot / "unet" / WEIGHTS)
    with pytest.raises(ValueError, match="leads out of the pipeline folder"):
        EncDiffPipeline.from_pretrained(snapshot)


@pytest.mark.parametrize("variant", ["../../x", "a/b", "fp16.x", ""])
def test_variant_that_is_not_a_plain_name_is_refused(saved, tmp_path, variant):
    """A variant becomes part of file names: no path in it, for saves and loads alike."""
    with pytest.raises(ValueError, match="variant must be a plain name such as 'fp16'"):
        make_tiny_pipeline().save_pretrained(tmp_path / "p", variant=variant)
    with pytest.raises(ValueError, match="variant must be a plain name"):
        EncDiffPipeline.from_pretrained(saved, variant=variant)
    assert not (tmp_path / "p").exists()
