"""training/train_encdiff.py and train_autoencoder.py through `accelerate launch`, on tiny configs.

One uninterrupted run, one run killed in the middle of a checkpoint save and resumed from `latest`
(its losses must equal the uninterrupted run's), a 2-process (CPU, gloo) latent-space AdaGN run on a
first stage trained by train_autoencoder.py, validating by training time, a deterministic-decoder
run stopped by a training-time budget (in-process, on a step clock), the saved EMA U-Net against an
EMA computed by hand from the live weights, and the argument checks (in-process: they stop before
training).
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
import torch

from encdiff_pipeline.deterministic_decoder import deterministic_decode
from encdiff_pipeline.training.validation import logged_train_seconds
from tests import HANG_GUARD_S

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "training", "train_encdiff.py")
TRAIN_AE = os.path.join(ROOT, "training", "train_autoencoder.py")
LAUNCH = [sys.executable, "-m", "accelerate.commands.launch", "--num_machines", "1", "--mixed_precision", "no",
          "--dynamo_backend", "no", "--num_cpu_threads_per_process", "1"]
HELD = json.dumps({"image_size": 16, "factor_sizes": [2, 2, 2, 2, 2, 2]})
COMMON = ["--preset", "tiny", "--train_batch_size", "4", "--seed", "3", "--validation_dataset_options", HELD,
          "--validation_inference_steps", "2", "--num_validation_images", "2", "--metric_num_train", "100",
          "--metric_num_eval", "50", "--validation_steps", "100"]

# Run as the training script: dies (SIGKILL) half-way through writing checkpoint-4, after truncating a weight file.
KILL_IN_SAVE = """
import os, runpy, signal, sys
from accelerate import Accelerator
original = Accelerator.save_state
def save_state(self, output_dir=None, **kwargs):
    if output_dir.rstrip("/").endswith("checkpoint-4.tmp"):
        original(self, output_dir, **kwargs)
        with open(os.path.join(output_dir, "unet", "diffusion_pytorch_model.safetensors"), "r+b") as f:
            f.truncate(64)
        os.kill(os.getpid(), signal.SIGKILL)
    return original(self, output_dir, **kwargs)
Accelerator.save_state = save_state
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""

# Run as the training script on a clock where each step takes 1/64 s of training time on process 0 and
# none on the others: the validation decision must come from process 0 (else the others never validate).
STEP_CLOCK = """
import os, runpy, sys
from encdiff_pipeline.training import validation
step_s = 1 / 64 if os.environ.get("RANK", "0") == "0" else 0.0
now = [0.0]
def clock():
    now[0] += step_s
    return now[0]
validation.training_clock = clock
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def _env(**extra):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": ROOT, **extra}
    env.pop("ACCELERATE_USE_CPU", None)
    env.update(extra)
    return env


def _launch(script_args, launch_args=("--num_processes", "1", "--cpu"), env=None, check=True, direct=False):
    """Run a script through `accelerate launch` (or, `direct`, as a plain one-process `python SCRIPT`)."""
    command = [sys.executable, *script_args] if direct else [*LAUNCH, *launch_args, *script_args]
    proc = subprocess.run(command, cwd=ROOT, env=env or _env(),
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\n{proc.stdout[-3000:]}\n{proc.stderr[-6000:]}")
    return proc


def _log(run_dir, event="train"):
    with open(os.path.join(run_dir, "logs", "train_log.jsonl"), encoding="utf-8") as f:
        return [r for r in map(json.loads, f) if r["event"] == event]


def _checkpoints(run_dir):
    return sorted(n for n in os.listdir(run_dir) if n.startswith("checkpoint-"))


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """6 uninterrupted steps: checkpoints every 2 (keep 2), final validation and pipeline."""
    run = str(tmp_path_factory.mktemp("full") / "run")
    _launch([TRAIN, *COMMON, "--output_dir", run, "--max_train_steps", "6", "--checkpointing_steps", "2",
             "--checkpoints_total_limit", "2"])
    return run


def test_full_run_writes_checkpoints_log_images_and_pipeline(full_run):
    from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline

    assert _checkpoints(full_run) == ["checkpoint-4", "checkpoint-6"]  # the limit deleted checkpoint-2
    losses = [r["loss"] for r in _log(full_run)]
    assert [r["step"] for r in _log(full_run)] == [1, 2, 3, 4, 5, 6]
    assert all(np.isfinite(losses)) and 0.05 < losses[0] < 2.0
    train_seconds = [r["train_seconds"] for r in _log(full_run)]
    assert 0 < train_seconds[0] and all(np.diff(train_seconds) > 0)
    # wall-clock includes the checkpoint saves at steps 2 and 4; training time does not
    assert _log(full_run)[-1]["seconds"] > train_seconds[-1]
    (validation,) = _log(full_run, "validation")
    assert validation["train_seconds"] == train_seconds[-1] and validation["images_seen"] == 6 * 4
    assert validation["step"] == 6 and 0.0 <= validation["mig"] <= 1.0 and 0.0 <= validation["dci_disentanglement"] <= 1.0
    for name in ("reconstruction", "swap"):
        assert os.path.getsize(os.path.join(full_run, validation["images"][name])) > 100
    card = open(os.path.join(full_run, "README.md"), encoding="utf-8").read()
    assert "swap.png" in card and f"{validation['mig']:.4f}" in card
    pipe = EncDiffPipeline.from_pretrained(full_run)
    assert pipe.encoder.config.sample_size == 16 and pipe.vae is None
    images = torch.rand(2, 3, 16, 16) * 2 - 1
    assert pipe.encode(images).shape == (2, 4)


def test_killed_save_keeps_previous_checkpoint_and_resume_matches(full_run, tmp_path):
    from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline

    run = str(tmp_path / "run")
    wrapper = tmp_path / "kill_in_save.py"
    wrapper.write_text(KILL_IN_SAVE)
    args = [*COMMON, "--output_dir", run, "--max_train_steps", "6", "--checkpointing_steps", "2", "--checkpoints_total_limit", "2"]
    killed = _launch([str(wrapper), TRAIN, *args], check=False)
    assert killed.returncode != 0
    assert _checkpoints(run) == ["checkpoint-2", "checkpoint-4.tmp"]  # the half-written save is not a checkpoint
    assert [r["step"] for r in _log(run)] == [1, 2, 3, 4]
    before = {r["step"]: r["train_seconds"] for r in _log(run)}

    _launch([TRAIN, *args, "--resume_from_checkpoint", "latest"])  # continues from checkpoint-2
    assert logged_train_seconds(os.path.join(run, "logs", "train_log.jsonl"), 2) == before[2]
    after = {r["step"]: r["train_seconds"] for r in _log(run)}  # training time continues from step 2's
    assert before[2] < after[3] < after[4] < after[5] < after[6]
    assert _checkpoints(run) == ["checkpoint-4", "checkpoint-6"]
    resumed = {r["step"]: r["loss"] for r in _log(run)}  # steps 3 and 4 were logged twice: last wins
    expected = {r["step"]: r["loss"] for r in _log(full_run)}
    np.testing.assert_allclose([resumed[s] for s in range(1, 7)], [expected[s] for s in range(1, 7)], rtol=1e-5, atol=1e-6)
    # same final weights: the resumed pipeline encodes like the uninterrupted one
    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    a, b = EncDiffPipeline.from_pretrained(full_run), EncDiffPipeline.from_pretrained(run)
    torch.testing.assert_close(a.encode(images), b.encode(images), rtol=1e-4, atol=1e-5)


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_autoencoder_then_two_process_latent_run(tmp_path):
    from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline

    vq = str(tmp_path / "vq")
    _launch([TRAIN_AE, "--preset", "tiny", "--image_size", "16", "--output_dir", vq,
             "--max_train_steps", "3", "--train_batch_size", "4", "--checkpointing_steps", "2", "--num_validation_images", "4"])
    (record,) = [r for r in map(json.loads, open(os.path.join(vq, "logs", "train_log.jsonl"))) if r["event"] == "validation"][-1:]
    assert record["step"] == 3 and record["mse"] > 0 and record["psnr"] == pytest.approx(10 * np.log10(1 / record["mse"]))

    config = tmp_path / "latent_tiny.json"
    config.write_text(json.dumps({"image_size": 16, "latent": True, "unet_preset": "tiny",
                                  "encoder": {"num_concepts": 3, "token_dim": 8, "width": 8, "mlp_hidden_dims": [8, 8]},
                                  "training": {"learning_rate": 1e-3, "lr_warmup_steps": 0}}))
    run = str(tmp_path / "latent")
    # AdaGN conditioning; validation every 0.006 s of training time, i.e. after every 1/64 s step of
    # the main process's clock: it decides and the other process, whose clock stands still, follows (a
    # disagreement would hang the run)
    clock = tmp_path / "step_clock.py"
    clock.write_text(STEP_CLOCK)
    _launch([str(clock), TRAIN, *COMMON, "--config", str(config), "--vae_path", vq, "--output_dir", run, "--max_train_steps", "3",
             "--checkpointing_steps", "2", "--gradient_accumulation_steps", "2", "--train_batch_size", "2",
             "--conditioning", "adagn", "--validation_minutes", "0.0001"],
            launch_args=("--multi_gpu", "--num_processes", "2", "--main_process_port", str(_free_port())),
            env=_env(ACCELERATE_USE_CPU="true"))
    settings = json.load(open(os.path.join(run, "training_args.json")))
    assert settings["num_processes"] == 2
    train = _log(run)
    assert [r["step"] for r in train] == [1, 2, 3]
    assert train[-1]["images_seen"] == 3 * 2 * 2 * 2  # steps x batch x processes x accumulation
    assert _checkpoints(run) == ["checkpoint-2", "checkpoint-3"]
    assert [r["step"] for r in _log(run, "validation")] == [1, 2, 3]
    assert [r["train_seconds"] for r in _log(run, "validation")] == [r["train_seconds"] for r in train] == [round(k / 64, 3) for k in (1, 2, 3)]
    pipe = EncDiffPipeline.from_pretrained(run)
    assert type(pipe.vae).__name__ == "VQModel" and pipe.config.latent_scale != 1.0
    assert pipe.unet.config.sample_size == 4  # 16x16 pixels, f=4
    # AdaGN: no cross-attention anywhere; the flattened tokens (3 x 8) enter through the timestep embedding
    assert pipe.unet.config.class_embed_type == "projection" and pipe.unet.config.projection_class_embeddings_input_dim == 24
    assert not any("attn2" in name for name, _ in pipe.unet.named_modules())
    pipe.set_progress_bar_config(disable=True)
    out = pipe(images=torch.rand(2, 3, 16, 16) * 2 - 1, num_inference_steps=2, generator=torch.Generator().manual_seed(0),
               output_type="np").images
    assert out.shape == (2, 16, 16, 3) and np.isfinite(out).all()


class StepClock:
    """A training clock that reads `step_s` more on every call: train_encdiff.py reads it at the start
    and at the end of each step, so every step lasts exactly `step_s`, whatever the machine's speed
    or load. `pause(s)` moves it on by `s` outside any step (as a slow validation would)."""

    def __init__(self, step_s: float):
        self.step_s, self.now = step_s, 0.0

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now

    def pause(self, seconds: float) -> None:
        self.now += seconds


def test_deterministic_decoder_trains_its_whole_training_time_budget(tmp_path, monkeypatch):
    """EncDec w/o Diff under a 1.2 s training budget, validating every 0.42 s of training time, on a
    clock where each step takes 1/32 s and each validation 100 s (in-process, so the clock can be set)."""
    from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline

    script = _script()
    clock = StepClock(1 / 32)
    monkeypatch.setattr(script, "training_clock", clock)
    real_metrics = script.concept_metrics
    monkeypatch.setattr(script, "concept_metrics", lambda *a, **kw: clock.pause(100.0) or real_metrics(*a, **kw))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = str(tmp_path / "encdec")
    script.run_training(script.main, script.parse_args([
        *COMMON, "--output_dir", run, "--decoder_type", "deterministic", "--max_train_minutes", "0.02",
        "--validation_minutes", "0.007", "--checkpointing_steps", "1000"]))
    train, validations = _log(run), _log(run, "validation")
    # stops at the first step past the budget: 39 x 1/32 s = 1.219 s >= 1.2 s > 38 x 1/32 s
    assert [r["step"] for r in train] == list(range(1, 40))
    assert [r["train_seconds"] for r in train] == [round(k / 32, 3) for k in range(1, 40)]
    # validation at the first step past each 0.42 s (14/32 = 0.4375, 27/32 = 0.84375) and at the end;
    # the 100 s each validation takes are not training time (else the budget would end at step 14)
    assert [v["step"] for v in validations] == [14, 27, 39]
    assert [v["train_seconds"] for v in validations] == [round(k / 32, 3) for k in (14, 27, 39)]
    # no noise: L1 between the U-Net's one-pass output and the image, which falls as it learns
    losses = [r["loss"] for r in train]
    assert np.mean(losses[-5:]) < np.mean(losses[:5]) - 0.02
    for name in ("reconstruction", "swap"):
        assert os.path.getsize(os.path.join(run, validations[-1]["images"][name])) > 100
    pipe = EncDiffPipeline.from_pretrained(run)
    assert pipe.scheduler.config.prediction_type == "sample"
    images = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    with torch.no_grad():
        decoded = deterministic_decode(pipe.unet, pipe.encoder(images).tokens)
    assert decoded.shape == (2, 3, 16, 16) and torch.isfinite(decoded).all()
    assert "EncDec w/o Diff" in open(os.path.join(run, "README.md"), encoding="utf-8").read()


@pytest.mark.parametrize("foreach", [False, True])
def test_saved_unet_is_the_ema_of_the_live_weights_step_by_step(tmp_path, monkeypatch, foreach):
    """The saved U-Net equals an EMA computed by hand from the live weights after each of 6 steps:
    ema_0 = the initial weights, ema_k = a_k ema_(k-1) + (1 - a_k) live_k with diffusers' warm-up
    a_k = min(d, k / (k + 9)) for k >= 2 and a_1 = 0. d = 0.25 (k / (k + 9) reaches it at k = 3),
    so both sides of the min decide some steps."""
    from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline

    script = _script()
    start, live = [], []  # the weights the EMA started from, and those it was given at each step

    class RecordingEMA(script.EMAModel):
        def __init__(self, parameters, **kwargs):
            parameters = list(parameters)
            start.append([p.detach().double().clone() for p in parameters])
            super().__init__(parameters, **kwargs)

        def step(self, parameters):
            parameters = list(parameters)
            live.append([p.detach().double().clone() for p in parameters])
            super().step(parameters)

    monkeypatch.setattr(script, "EMAModel", RecordingEMA)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    run = str(tmp_path / "run")
    script.run_training(script.main, script.parse_args([
        *COMMON, "--output_dir", run, "--max_train_steps", "6", "--ema_decay", "0.25", "--validation_metrics", "none",
        "--checkpointing_steps", "1000", *(["--foreach_ema"] if foreach else [])]))
    assert len(start) == 1 and len(live) == 6
    ema = start[0]
    for k, weights in enumerate(live, start=1):
        decay = 0.0 if k == 1 else min(0.25, k / (k + 9))
        ema = [decay * e + (1 - decay) * w for e, w in zip(ema, weights)]
    saved = [p.detach().double() for p in EncDiffPipeline.from_pretrained(run).unet.parameters()]
    assert len(saved) == len(ema)
    for got, want in zip(saved, ema):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-6)
    # the EMA lags the live weights by far more than that tolerance
    assert max((w - l).abs().max().item() for w, l in zip(ema, live[-1])) > 1e-4


# ---- bad arguments stop before training, with a clear message (in-process: nothing heavy runs) ----
def _script():
    from training import train_encdiff

    return train_encdiff


@pytest.mark.parametrize("extra, message", [
    (["--dataset", "no/such-dataset-anywhere"], "cannot load dataset 'no/such-dataset-anywhere'"),
    (["--dataset_options", '{"image_size": 32}'], "built for 16x16 images but the dataset gives 32x32"),
    (["--resume_from_checkpoint", "latest"], "nothing to resume"),
    (["--preset", "paper", "--dataset_options", '{"image_size": 64}'], "pass --vae_path"),
])
def test_bad_arguments_stop_before_training(tmp_path, monkeypatch, extra, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = _script()
    out = str(tmp_path / "run")
    with pytest.raises(SystemExit, match=message):
        script.main(script.parse_args(["--preset", "tiny", "--output_dir", out, "--max_train_steps", "2", *extra]))
    assert not os.path.exists(os.path.join(out, "checkpoint-1"))


def test_output_dir_of_another_run_and_unknown_preset(full_run, tmp_path, capsys):
    script = _script()
    # in-process: main releases the run folder's lock however it ends
    with pytest.raises(SystemExit, match="already holds another run"):
        script.main(script.parse_args(["--preset", "tiny", "--output_dir", full_run, "--max_train_steps", "2"]))
    with pytest.raises(SystemExit, match="cannot resume .* different settings"):
        script.main(script.parse_args(["--preset", "tiny", "--output_dir", full_run, "--max_train_steps", "8",
                                       "--resume_from_checkpoint", "latest", "--seed", "4"]))
    from encdiff_pipeline.training.checkpointing import RunLock

    RunLock(full_run).release()  # free again (a lock still held would stop this with SystemExit)
    with pytest.raises(SystemExit):
        script.parse_args(["--preset", "huge", "--output_dir", str(tmp_path), "--max_train_steps", "2"])
    assert "unknown --preset 'huge'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        script.parse_args(["--output_dir", str(tmp_path)])
    assert "--max_train_steps and/or --max_train_minutes" in capsys.readouterr().err


def test_push_to_hub_uploads_pipeline_then_the_run_card(full_run, monkeypatch):
    import huggingface_hub

    from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)  # the uploads below are mocked
    calls = []
    monkeypatch.setattr(EncDiffPipeline, "push_to_hub", lambda self, repo_id, **kw: calls.append(("pipeline", repo_id, kw)) or f"user/{repo_id}")
    monkeypatch.setattr(huggingface_hub, "upload_file", lambda **kw: calls.append(("file", kw["repo_id"], kw["path_in_repo"])))
    script = _script()
    args = script.parse_args(["--preset", "tiny", "--output_dir", full_run, "--max_train_steps", "6", "--push_to_hub"])
    (validation,) = _log(full_run, "validation")
    script.push(EncDiffPipeline.from_pretrained(full_run), args, validation)
    assert calls[0][:2] == ("pipeline", "run") and calls[0][2]["metrics"]["procedural-shapes3d"]["mig"] == validation["mig"]
    assert calls[0][2]["training"]["steps"] == 6 and calls[0][2]["training"]["swap_image"] == "swap.png"
    assert calls[1:] == [("file", "user/run", "swap.png")]  # the card itself is the pipeline's, rendered once
