"""A resumed training run ends with the very weights of an uninterrupted one (bit for bit).

training/train_encdiff.py runs in-process (no `accelerate launch`: the imports are already paid)
on the `tiny` preset: 4 optimizer steps in one go, against 2 steps, stop, and 2 more resumed from
`latest`, with gradient accumulation 1 and 2. The final checkpoints must hold identical U-Net, EMA
U-Net and encoder weights and an identical optimizer state: a resume that forgets the EMA weights
or restarts the data order at the wrong micro-batch changes them.
"""
from __future__ import annotations

import json
import os

import pytest
import torch
from safetensors.torch import load_file

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAIN = os.path.join(ROOT, "training", "train_encdiff.py")
HELD = json.dumps({"image_size": 16, "factor_sizes": [2, 2, 2, 2, 2, 2]})
COMMON = ["--preset", "tiny", "--train_batch_size", "2", "--seed", "5", "--validation_dataset_options", HELD,
          "--validation_inference_steps", "1", "--num_validation_images", "2", "--validation_metrics", "none",
          "--validation_steps", "100", "--checkpointing_steps", "2", "--report_to", "none",
          # a short warm-up, so the learning-rate schedule is part of what the resume must restore
          "--lr_warmup_steps", "3", "--ema_decay", "0.9"]


def _script():
    from training import train_encdiff

    return train_encdiff


def _train(script, output_dir, steps, accumulation, resume=False):
    argv = [*COMMON, "--output_dir", str(output_dir), "--max_train_steps", str(steps),
            "--gradient_accumulation_steps", str(accumulation)]
    if resume:
        argv += ["--resume_from_checkpoint", "latest"]
    script.main(script.parse_args(argv))  # main releases the run's lock when it returns


def _weights(checkpoint):
    out = {}
    for part in ("unet", "unet_ema", "encoder"):
        (name,) = [n for n in os.listdir(os.path.join(checkpoint, part)) if n.endswith(".safetensors")]
        out.update({f"{part}.{k}": v for k, v in load_file(os.path.join(checkpoint, part, name)).items()})
    return out


def _optimizer_tensors(checkpoint):
    state = torch.load(os.path.join(checkpoint, "optimizer.bin"), map_location="cpu", weights_only=True)
    tensors = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            tensors[f"{index}.{key}"] = torch.as_tensor(value)
    return tensors, state["param_groups"]


@pytest.mark.parametrize("accumulation", [1, 2])
def test_resumed_run_matches_uninterrupted_run_bit_for_bit(tmp_path, monkeypatch, accumulation):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    script = _script()
    _train(script, tmp_path / "full", 4, accumulation)
    _train(script, tmp_path / "parts", 2, accumulation)
    assert sorted(n for n in os.listdir(tmp_path / "parts") if n.startswith("checkpoint-")) == ["checkpoint-2"]
    _train(script, tmp_path / "parts", 4, accumulation, resume=True)

    full, parts = tmp_path / "full" / "checkpoint-4", tmp_path / "parts" / "checkpoint-4"
    a, b = _weights(full), _weights(parts)
    assert set(a) == set(b) and any(k.startswith("unet_ema.") for k in a)
    differing = [k for k in a if not torch.equal(a[k], b[k])]
    assert not differing, f"{len(differing)} tensors differ after the resume, e.g. {differing[:3]}"
    # the EMA is not the live U-Net (else comparing it would test nothing)
    assert any(not torch.equal(a[k], a["unet_ema." + k[len("unet."):]]) for k in a if k.startswith("unet."))

    (state_a, groups_a), (state_b, groups_b) = _optimizer_tensors(full), _optimizer_tensors(parts)
    assert set(state_a) == set(state_b) and len(state_a) > 0
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)
    assert [g["lr"] for g in groups_a] == [g["lr"] for g in groups_b]
    steps = {float(v) for k, v in state_a.items() if k.endswith(".step")}
    assert steps == {4.0}  # 4 optimizer steps, whatever the accumulation
