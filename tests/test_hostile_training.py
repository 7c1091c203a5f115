"""Hostile and careless training runs: bad arguments stop before anything is written, a failed start
never blocks the corrected command, runs cannot share a folder, and resume survives damage."""
from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from tests import HANG_GUARD_S
from tests.test_training_encdiff import ROOT, TRAIN, _env, _script

from encdiff_pipeline.training import checkpointing, validation  # noqa: E402

TINY = ["--preset", "tiny", "--dataset_options", json.dumps({"factor_sizes": [2, 2, 2, 2, 2, 2]}),
        "--validation_metrics", "none", "--num_validation_images", "2", "--validation_inference_steps", "1",
        "--train_batch_size", "4", "--report_to", "none"]


def _run(args, check=True):
    proc = subprocess.run([sys.executable, TRAIN, *TINY, *args], cwd=ROOT, env=_env(), capture_output=True,
                          text=True, timeout=HANG_GUARD_S)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stderr[-4000:]}")
    return proc


@pytest.fixture(scope="module")
def script():
    return _script()


@pytest.fixture(scope="module")
def base_run(tmp_path_factory):
    """4 steps, checkpoints at 2 and 4."""
    run = str(tmp_path_factory.mktemp("hostile_train") / "run")
    _run(["--output_dir", run, "--max_train_steps", "4", "--checkpointing_steps", "2"])
    return run


def _copy(base_run, tmp_path):
    run = str(tmp_path / "run")
    shutil.copytree(base_run, run)
    return run


# ---- arguments: one line, nothing written ----
@pytest.mark.parametrize("extra, message", [
    (["--max_train_steps", "0"], "--max_train_steps must be >= 1, got 0"),
    (["--max_train_steps", "-3"], "--max_train_steps must be >= 1, got -3"),
    (["--max_train_steps", "2", "--train_batch_size", "0"], "--train_batch_size must be >= 1"),
    (["--max_train_steps", "2", "--train_batch_size", "-4"], "--train_batch_size must be >= 1"),
    (["--max_train_steps", "2", "--dataloader_num_workers", "-1"], "--dataloader_num_workers must be >= 0"),
    (["--max_train_steps", "2", "--seed", "-1"], "--seed must be in [0, 4294967295]"),
    (["--max_train_steps", "2", "--learning_rate", "nan"], "--learning_rate must be a finite number > 0"),
    (["--max_train_steps", "2", "--lr_scheduler", "bogus"], "--lr_scheduler 'bogus' is not a diffusers scheduler"),
    (["--max_train_minutes", "-1"], "--max_train_minutes must be a finite number > 0"),
    (["--max_train_steps", "2", "--checkpoints_total_limit", "0"], "--checkpoints_total_limit must be >= 1"),
    (["--max_train_steps", "2", "--validation_metrics", "mig", "--metric_num_train", "1"],
     "--metric_num_train must be >= 2 for --validation_metrics mig"),
    # the second probe's unfinished runs, and options given as JSON that is not an object
    (["--max_train_steps", "2", "--learning_rate", "0"], "--learning_rate must be a finite number > 0, got 0.0"),
    (["--max_train_steps", "2", "--validation_steps", "0"], "--validation_steps must be >= 1, got 0"),
    (["--max_train_steps", "2", "--gradient_accumulation_steps", "0"], "--gradient_accumulation_steps must be >= 1"),
    (["--max_train_steps", "2", "--ema_decay", "1.5"], "--ema_decay must be in [0.0, 1.0], got 1.5"),
    (["--max_train_steps", "2", "--lr_warmup_steps", "-5"], "--lr_warmup_steps must be >= 0, got -5"),
    (["--max_train_steps", "2", "--max_grad_norm", "-1"], "--max_grad_norm must be >= 0.0, got -1.0"),
    (["--max_train_steps", "2", "--edge_loss_weight", "nan"], "edge_loss_weight must be >= 0, got nan"),
    (["--max_train_steps", "2", "--dataset_options", "[1,2]"], "--dataset_options: '[1,2]' is not a JSON object"),
    (["--max_train_steps", "2", "--validation_dataset_options", '{"image_size": Infinity}'],
     "--validation_dataset_options: '{\"image_size\": Infinity}' is not valid JSON (Infinity is not a JSON number)"),
])
def test_bad_numbers_stop_before_anything_is_written(script, tmp_path, capsys, extra, message):
    out = str(tmp_path / "run")
    with pytest.raises(SystemExit):
        script.parse_args(["--preset", "tiny", "--output_dir", out, *extra])
    assert message in capsys.readouterr().err.replace("\n", " ") or pytest.fail(message)
    assert not os.path.exists(out)


def test_output_dir_that_is_a_file_or_empty(script, tmp_path, capsys):
    afile = tmp_path / "afile"
    afile.write_text("keep")
    for out, message in ((str(afile), "is an existing file, not a folder"), ("", "--output_dir is empty"),
                         (str(afile / "run"), "is a file, not a folder")):
        with pytest.raises(SystemExit):
            script.parse_args(["--preset", "tiny", "--output_dir", out, "--max_train_steps", "2"])
        assert message in capsys.readouterr().err
    assert afile.read_text() == "keep"


def test_push_to_hub_offline_is_refused_up_front(script, tmp_path, capsys, monkeypatch):
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(SystemExit):
        script.parse_args(["--preset", "tiny", "--output_dir", str(tmp_path / "r"), "--max_train_steps", "2", "--push_to_hub"])
    assert "--push_to_hub needs the network but HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_push_failure_after_training_is_one_line(script, base_run, monkeypatch):
    from huggingface_hub.errors import OfflineModeIsEnabled

    from encdiff_pipeline import EncDiffPipeline

    def offline(self, repo_id, **kwargs):
        raise OfflineModeIsEnabled("Cannot reach https://huggingface.co: offline mode is enabled.")

    monkeypatch.setattr(EncDiffPipeline, "push_to_hub", offline)
    args = script.parse_args(["--preset", "tiny", "--output_dir", base_run, "--max_train_steps", "4"])
    validation_record = [r for r in validation.read_log(os.path.join(base_run, "logs", "train_log.jsonl"))
                         if r["event"] == "validation"][-1]
    with pytest.raises(SystemExit, match=r"^error: --push_to_hub failed \(OfflineModeIsEnabled.*saved in") as info:
        script.push(EncDiffPipeline.from_pretrained(base_run), args, validation_record)
    assert "\n" not in str(info.value)


def test_too_many_validation_images_stop_before_the_run_folder_exists(script, tmp_path):
    out = str(tmp_path / "run")
    args = script.parse_args([*TINY, "--output_dir", out, "--max_train_steps", "2", "--num_validation_images", "100",
                              "--validation_dataset_options", json.dumps({"image_size": 16, "factor_sizes": [2, 2, 2, 2, 2, 2]})])
    with pytest.raises(SystemExit, match="--num_validation_images 100 is larger than the held validation set \\(64 images\\)"):
        script.run_training(script.main, args)
    assert not os.path.exists(out)


# ---- a failed start never blocks the corrected command; two runs cannot share a folder ----
def test_leftovers_of_a_failed_start_are_cleared_not_blocking(tmp_path, capsys):
    run = str(tmp_path / "run")
    checkpointing.write_run_settings(run, {"seed": 0}, "training_args.json")
    os.makedirs(os.path.join(run, "logs"))
    open(os.path.join(run, "logs", "train_log.jsonl"), "w").write('{"event": "train", "step": 1}\n')
    with pytest.raises(SystemExit, match="nothing to resume.*no intact checkpoint.*run the command without --resume_from_checkpoint"):
        checkpointing.check_run_folder(run, "latest", {"seed": 0}, ["seed"], "training_args.json")
    assert checkpointing.check_run_folder(run, None, {"seed": 0}, ["seed"], "training_args.json") is None
    assert "leftovers of a start that stopped before its first checkpoint" in capsys.readouterr().err
    assert os.listdir(run) == []
    open(os.path.join(run, "my_notes.txt"), "w").write("not ours")
    with pytest.raises(SystemExit, match="already holds another run"):
        checkpointing.check_run_folder(run, None, {"seed": 0}, ["seed"], "training_args.json")


@pytest.mark.parametrize("user_file", ["validation/heldout_img.png", "logs/my_experiment_notes.txt",
                                       "validation/step-000002/mine.png", "logs/encdiff/notes.md"])
def test_users_files_in_a_failed_start_are_never_deleted(tmp_path, user_file):
    """A folder the script started holds a user's file too: refused, nothing deleted (E01, E02)."""
    run = str(tmp_path / "run")
    checkpointing.write_run_settings(run, {"seed": 0}, "training_args.json")
    os.makedirs(os.path.join(run, "validation", "step-000002"))
    open(os.path.join(run, "validation", "step-000002", "swap.png"), "wb").write(b"png")
    os.makedirs(os.path.join(run, os.path.dirname(user_file)), exist_ok=True)
    open(os.path.join(run, user_file), "w").write("precious")
    before = sorted(os.path.relpath(os.path.join(r, f), run) for r, _, fs in os.walk(run) for f in fs)
    with pytest.raises(SystemExit, match=rf"also files this script did not write \({user_file}\).*nothing in it was changed"):
        checkpointing.check_run_folder(run, None, {"seed": 0}, ["seed"], "training_args.json")
    assert sorted(os.path.relpath(os.path.join(r, f), run) for r, _, fs in os.walk(run) for f in fs) == before


@pytest.mark.parametrize("entries", [["training_args.json"], ["validation/heldout.png"], ["logs/train_log.jsonl"],
                                     ["training_args.json", "logs/train_log.jsonl"]])
def test_folder_the_script_did_not_start_is_refused_not_cleared(tmp_path, entries):
    """Names the script writes, but no mark of this script's start: a user's folder, left as it is."""
    run = tmp_path / "run"
    for entry in entries:
        (run / entry).parent.mkdir(parents=True, exist_ok=True)
        (run / entry).write_text("{}")
    with pytest.raises(SystemExit, match=r"already holds another run \(or other files: .*nothing in it was changed"):
        checkpointing.check_run_folder(str(run), None, {"seed": 0}, ["seed"], "training_args.json")
    assert all((run / entry).read_text() == "{}" for entry in entries)


def test_failed_start_with_only_its_own_files_is_cleared(tmp_path, capsys):
    run = tmp_path / "run"
    checkpointing.write_run_settings(str(run), {"seed": 0}, "training_args.json")
    for rel in ("logs/train_log.jsonl", "logs/encdiff/events.out.tfevents.1.host", "validation/step-000002/swap.png",
                "validation/step-000002/.metrics.json.abc.tmp", "checkpoint-2.tmp/unet/config.json", ".lock"):
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_text("x")
    assert checkpointing.check_run_folder(str(run), None, {"seed": 0}, ["seed"], "training_args.json") is None
    assert os.listdir(run) == [".lock"] and "clearing them" in capsys.readouterr().err


def test_second_training_into_the_same_folder_is_refused(script, tmp_path):
    out = str(tmp_path / "run")
    holder = checkpointing.RunLock(out)  # stands for a training already running there
    try:
        args = script.parse_args([*TINY, "--output_dir", out, "--max_train_steps", "2"])
        with pytest.raises(SystemExit, match=r"another training is running in --output_dir .*pid \d+ holds"):
            script.run_training(script.main, args)
    finally:
        holder.release()
    assert not os.path.exists(out)  # the lock's own folder, holding nothing else, is removed


# ---- resume: damaged newest checkpoints are skipped, torn logs and corrupt settings are named ----
def _truncate(path, size=64):
    with open(path, "r+b") as f:
        f.truncate(size)


DAMAGE = {
    "truncated-unet": (lambda c: _truncate(os.path.join(c, "unet", "diffusion_pytorch_model.safetensors")), "truncated"),
    "truncated-optimizer": (lambda c: _truncate(os.path.join(c, "optimizer.bin")), "optimizer.bin is truncated"),
    "no-scheduler": (lambda c: os.remove(os.path.join(c, "scheduler.bin")), "lacks scheduler.bin"),
    "no-ema": (lambda c: shutil.rmtree(os.path.join(c, "unet_ema")), "lacks unet_ema/"),
    "empty-99": (None, "checkpoint-99: it is empty"),
}


@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_resume_latest_skips_a_damaged_newest_checkpoint(base_run, tmp_path, capsys, damage):
    run = _copy(base_run, tmp_path)
    action, message = DAMAGE[damage]
    if action is None:
        os.makedirs(os.path.join(run, "checkpoint-99"))
    else:
        action(os.path.join(run, "checkpoint-4"))
    settings = json.load(open(os.path.join(run, "training_args.json")))
    chosen = checkpointing.check_run_folder(run, "latest", settings, ["seed"], "training_args.json")
    expected = "checkpoint-4" if action is None else "checkpoint-2"
    assert os.path.basename(chosen) == expected
    err = capsys.readouterr().err
    assert "warning: skipping" in err and message in err and f"resuming from {chosen}" in err
    if action is not None:
        with pytest.raises(SystemExit, match="checkpoint-4.*intact checkpoints: \\['checkpoint-2'\\]"):
            checkpointing.check_run_folder(run, os.path.join(run, "checkpoint-4"), settings, ["seed"], "training_args.json")


def test_checkpoint_left_as_old_by_a_killed_resave_is_found_again(base_run, tmp_path, capsys):
    """A kill between swap_into_place's two renames leaves checkpoint-4.old and no checkpoint-4."""
    run = _copy(base_run, tmp_path)
    os.replace(os.path.join(run, "checkpoint-4"), os.path.join(run, "checkpoint-4.old"))
    settings = json.load(open(os.path.join(run, "training_args.json")))
    chosen = checkpointing.check_run_folder(run, "latest", settings, ["seed"], "training_args.json")
    assert os.path.basename(chosen) == "checkpoint-4" and not os.path.exists(os.path.join(run, "checkpoint-4.old"))
    assert "restored checkpoint-4 from checkpoint-4.old" in capsys.readouterr().err


def test_corrupt_training_args_is_named(base_run, tmp_path):
    run = _copy(base_run, tmp_path)
    with open(os.path.join(run, "training_args.json"), "w") as f:
        f.write("{bad")
    with pytest.raises(SystemExit, match=r"training_args.json is corrupt"):
        checkpointing.check_run_folder(run, "latest", {}, ["seed"], "training_args.json")


def test_torn_last_log_line_is_tolerated_and_repaired(tmp_path, capsys):
    path = str(tmp_path / "logs" / "train_log.jsonl")
    log = validation.RunLog(path)
    log.write({"event": "train", "step": 1, "train_seconds": 1.5})
    with open(path, "a") as f:
        f.write('{"epoch": 0, "event": "tra')
    assert validation.read_log(path) == [{"event": "train", "step": 1, "train_seconds": 1.5}]
    assert "torn last line" in capsys.readouterr().err
    validation.RunLog(path).write({"event": "train", "step": 2})  # a resumed run appends on a clean line
    assert [r["step"] for r in validation.read_log(path)] == [1, 2]
    with open(path, "a") as f:
        f.write("garbage\n{\"step\": 3}\n")
    with pytest.raises(ValueError, match=r"train_log.jsonl: line 3 is not a JSON record"):
        validation.read_log(path)


def test_resume_end_to_end_past_damage(base_run, tmp_path):
    """A truncated optimizer.bin in the newest checkpoint and a torn log line: resume latest continues."""
    run = _copy(base_run, tmp_path)
    _truncate(os.path.join(run, "checkpoint-4", "optimizer.bin"))
    with open(os.path.join(run, "logs", "train_log.jsonl"), "a") as f:
        f.write('{"epoch": 0, "event": "tra')
    proc = _run(["--output_dir", run, "--max_train_steps", "6", "--checkpointing_steps", "2",
                 "--resume_from_checkpoint", "latest"])
    assert "skipping" in proc.stderr and "Traceback" not in proc.stderr
    steps = [r["step"] for r in validation.read_log(os.path.join(run, "logs", "train_log.jsonl")) if r["event"] == "train"]
    assert steps[-4:] == [3, 4, 5, 6]  # resumed from checkpoint-2
    assert os.path.basename(checkpointing.latest_checkpoint(run)) == "checkpoint-6"
    assert checkpointing.checkpoint_problem(os.path.join(run, "checkpoint-4")) is None  # rewritten intact


# ---- divergence and a full disk ----
class FakeAccelerator:
    is_main_process = True

    def __init__(self, model, fail=None):
        self._models, self.fail = [model], fail

    def wait_for_everyone(self):
        pass

    def save_state(self, output_dir):
        os.makedirs(output_dir)
        with open(os.path.join(output_dir, "optimizer.bin"), "wb") as f:
            f.write(b"partial")
        if self.fail:
            raise self.fail


def test_disk_full_during_a_save_keeps_the_previous_checkpoint(tmp_path):
    run = str(tmp_path / "run")
    os.makedirs(os.path.join(run, "checkpoint-2"))
    (tmp_path / "run" / "checkpoint-2" / "optimizer.bin").write_bytes(b"previous")
    accelerator = FakeAccelerator(torch.nn.Linear(2, 2), fail=OSError(errno.ENOSPC, "No space left on device"))
    with pytest.raises(SystemExit, match=r"saving checkpoint-4 failed \(disk full\? OSError.*checkpoint-2 is intact"):
        checkpointing.save_checkpoint(accelerator, run, 4)
    assert sorted(os.listdir(run)) == ["checkpoint-2"]
    assert (tmp_path / "run" / "checkpoint-2" / "optimizer.bin").read_bytes() == b"previous"


def test_diverged_weights_are_not_checkpointed(tmp_path):
    run = str(tmp_path / "run")
    os.makedirs(os.path.join(run, "checkpoint-2"))
    model = torch.nn.Linear(2, 2)
    with torch.no_grad():
        model.weight[0, 0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN or infinite by step 4 \\(weight\\).*checkpoint-2 is kept"):
        checkpointing.save_checkpoint(FakeAccelerator(model), run, 4)
    assert sorted(os.listdir(run)) == ["checkpoint-2"]


def test_diverging_learning_rate_ends_with_one_line(tmp_path):
    run = str(tmp_path / "run")
    proc = _run(["--output_dir", run, "--max_train_steps", "6", "--checkpointing_steps", "1", "--learning_rate", "1e30"],
                check=False)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("error: training diverged")
    intact, damaged = checkpointing.intact_checkpoints(run)
    assert not damaged
    for checkpoint in intact:  # whatever was kept holds finite weights
        from safetensors.torch import load_file

        for sub in ("encoder", "unet"):
            state = load_file(os.path.join(checkpoint, sub, "diffusion_pytorch_model.safetensors"))
            assert all(torch.isfinite(t).all() for t in state.values())


# ---- issue 15: the scripts' error boundary, resume paths, finished runs, foreign folders ----
def test_any_error_of_main_is_one_line(tmp_path, capsys):
    import argparse

    def broken(args):
        raise OSError(28, "No space left on device")

    def bug(args):
        raise ZeroDivisionError("division by zero")

    args = argparse.Namespace(output_dir=str(tmp_path))
    for main, text in ((broken, "error: [Errno 28] No space left on device"),
                       (bug, "error: division by zero (unexpected ZeroDivisionError")):
        with pytest.raises(SystemExit) as info:
            checkpointing.run_training(main, args)
        assert info.value.code == 1
        err = capsys.readouterr().err
        assert text in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize("name", ["train_encdiff", "train_autoencoder"])
def test_resume_from_a_checkpoint_of_another_folder_is_refused(tmp_path, capsys, name):
    module = importlib.import_module(f"training.{name}")
    out = str(tmp_path / "run")
    base = ["--preset", "tiny", "--output_dir", out, "--max_train_steps", "6"]
    with pytest.raises(SystemExit):
        module.parse_args(base + ["--resume_from_checkpoint", str(tmp_path / "elsewhere" / "checkpoint-2")])
    assert "is not a checkpoint of --output_dir" in capsys.readouterr().err
    for ok in ("checkpoint-2", os.path.join(out, "checkpoint-2"), "latest"):
        args = module.parse_args(base + ["--resume_from_checkpoint", ok])
        assert args.resume_from_checkpoint in (os.path.join(out, "checkpoint-2"), "latest")


def test_resuming_a_finished_run_with_fewer_steps_is_refused(script, base_run, tmp_path):
    run = _copy(base_run, tmp_path)
    before = {name: os.path.getmtime(os.path.join(run, name)) for name in os.listdir(run) if name != ".lock"}
    args = script.parse_args([*TINY, "--output_dir", run, "--max_train_steps", "2", "--resume_from_checkpoint", "latest"])
    with pytest.raises(SystemExit, match="checkpoint-4 is at step 4, past --max_train_steps 2: nothing to train"):
        script.run_training(script.main, args)
    after = {name: os.path.getmtime(os.path.join(run, name)) for name in os.listdir(run) if name != ".lock"}
    assert after == before  # nothing re-saved


def test_resume_without_the_log_refuses_a_time_budget(script, base_run, tmp_path):
    run = _copy(base_run, tmp_path)
    os.remove(os.path.join(run, "logs", "train_log.jsonl"))
    args = script.parse_args([*TINY, "--output_dir", run, "--max_train_steps", "6", "--max_train_minutes", "5",
                              "--resume_from_checkpoint", "latest"])
    with pytest.raises(SystemExit, match="has no record of step 4, so the training time already spent is unknown"):
        script.run_training(script.main, args)


def test_train_baseline_refuses_a_folder_it_did_not_start(tmp_path):
    from training import train_baseline as baseline

    pipeline = tmp_path / "downloaded"
    pipeline.mkdir()
    (pipeline / "swap.png").write_text("precious")
    (pipeline / "training_args.json").write_text("{}")
    with pytest.raises(SystemExit, match="is not empty \\(swap.png, training_args.json\\).*choose a new or empty folder"):
        baseline.check_fresh_output_dir(str(pipeline))
    assert (pipeline / "swap.png").read_text() == "precious"
    failed_start = tmp_path / "failed"
    (failed_start / "logs").mkdir(parents=True)
    (failed_start / "training_args.json").write_text(json.dumps({"model": "beta_vae"}))
    baseline.check_fresh_output_dir(str(failed_start))  # its own leftovers do not block the corrected command
    baseline.check_fresh_output_dir(str(tmp_path / "missing"))


def test_vae_path_without_safetensors_is_one_line(script, tmp_path):
    folder = tmp_path / "vae"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "VQModel"}))
    torch.save({"weight": torch.zeros(1)}, folder / "diffusion_pytorch_model.bin")  # a pickle: never read
    with pytest.raises(SystemExit, match=r"^error: --vae_path .*cannot load its VQModel weights .*safetensors"):
        script.load_vae(str(folder))
