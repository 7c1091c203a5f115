"""Learning check: does training make the concepts disentangled? (a benchmark script, not a test)

Trains the small CPU preset on procedural Shapes3D for a fixed wall-clock budget with
training/train_encdiff.py (one CPU process), then prints FactorVAE, DCI and MIG of
the learned concepts next to those of the same encoder at initialisation (same preset, same seed,
untrained), both scored on the same held 10,000-point sub-grid of the Shapes3D factors.

    python benchmarks/learning_check.py --minutes 10
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import torch
from accelerate.utils import set_seed

from encdiff_pipeline.data import load_factor_dataset
from encdiff_pipeline.data.run_data import HELD_GRID
from encdiff_pipeline.models import ConceptEncoderModel
from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline
from encdiff_pipeline.training.presets import load_preset
from encdiff_pipeline.training.script_env import script_env
from encdiff_pipeline.training.validation import concept_metrics, read_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=10.0, help="training budget (wall clock)")
    p.add_argument("--preset", default="small", help="train_encdiff.py preset")
    p.add_argument("--seed", type=int, default=0, help="seed of the run (and of the untrained encoder)")
    p.add_argument("--metric_num_train", type=int, default=10000, help="metric training samples / votes (published: 10000)")
    p.add_argument("--metric_num_eval", type=int, default=5000, help="metric evaluation samples / votes (published: 5000)")
    p.add_argument("--output_dir", default=None, help="run folder (default: a temporary one)")
    p.add_argument("--extra", default="", help="more train_encdiff.py flags, e.g. '--learning_rate 3e-4'")
    args = p.parse_args()

    output_dir = args.output_dir or os.path.join(tempfile.mkdtemp(prefix="learning_check_"), "run")
    train_args = ["--preset", args.preset, "--output_dir", output_dir, "--seed", str(args.seed),
                  "--max_train_minutes", str(args.minutes), "--checkpointing_steps", "1000000",
                  "--validation_metrics", "none", "--validation_inference_steps", "20", *args.extra.split()]
    spec = load_preset(args.preset)
    torch.manual_seed(args.seed)  # the training script's initialisation: set_seed(seed), then the encoder first
    set_seed(args.seed)
    untrained = ConceptEncoderModel(in_channels=3, sample_size=spec["image_size"], **spec["encoder"])

    start = time.time()
    subprocess.run([sys.executable, os.path.join(ROOT, "training", "train_encdiff.py"), *train_args], cwd=ROOT,
                   env=script_env(ROOT), check=True)
    seconds = time.time() - start
    steps = read_log(os.path.join(output_dir, "logs", "train_log.jsonl"))
    train_records = [r for r in steps if r["event"] == "train"]
    trained = EncDiffPipeline.from_pretrained(output_dir).encoder

    held = load_factor_dataset("procedural-shapes3d", image_size=spec["image_size"], factor_sizes=HELD_GRID)
    names = ["factor_vae", "dci", "mig"]
    rows = {}
    for label, encoder in (("untrained", untrained), ("trained", trained)):
        t = time.time()
        rows[label] = concept_metrics(encoder, held, 0, names, args.metric_num_train, args.metric_num_eval)
        rows[label]["eval_seconds"] = time.time() - t

    last = train_records[-1]
    print(f"\npreset {args.preset!r}, budget {args.minutes} min: {last['step']} steps, {last['images_seen']} images "
          f"({last['images_seen'] / max(last['seconds'], 1e-9):.1f} img/s), final loss {last['loss']:.4f}, "
          f"wall {seconds / 60:.1f} min incl. final validation")
    print(f"held set: procedural Shapes3D sub-grid {HELD_GRID} ({len(held)} images), "
          f"metrics with {args.metric_num_train} train / {args.metric_num_eval} eval samples, RandomState(0)")
    keys = ["factor_vae", "dci_disentanglement", "dci_completeness", "dci_informativeness", "mig"]
    print("| encoder | " + " | ".join(keys) + " |")
    print("|---|" + "---|" * len(keys))
    for label, scores in rows.items():
        print(f"| {label} | " + " | ".join(f"{scores[k]:.3f}" for k in keys) + " |")
    print(json.dumps({"run": output_dir, "steps": last["step"], "images_seen": last["images_seen"], **rows}))


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="learning_check.py")
