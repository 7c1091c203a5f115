#!/usr/bin/env python
"""How fast does EncDiff learn on this machine? The small preset against variants, one budget each.

Each variant is the `small` preset (training/presets.py) with a few keys changed. It trains with
training/train_encdiff.py on procedural Shapes3D for `--minutes` of training time and is scored
(FactorVAE, DCI, MIG on the held 10,000-point sub-grid, 2,000 / 1,000 metric samples) every
`--eval_every_minutes`. The script prints one row per variant and checkpoint time: images/s, FactorVAE,
DCI disentanglement, informativeness, MIG. These runs chose the small preset's defaults.

    python benchmarks/encdiff_variants.py --minutes 12 --jobs 2            # all variants, 2 at once
    python benchmarks/encdiff_variants.py --variants default,lr_2e-3 --minutes 12
    python benchmarks/encdiff_variants.py --report_only                    # reprint from the run folders
"""
from __future__ import annotations

import argparse
import copy
import json
import os
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from encdiff_pipeline.factor_importance import analyse
from encdiff_pipeline.training.presets import load_preset
from encdiff_pipeline.training.script_env import script_env
from encdiff_pipeline.training.validation import read_log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_FOUR_LEVELS = {"block_out_channels": [32, 64, 64, 64],
                "down_block_types": ["DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"]}

# the small U-Net without its 16x16 level: for 2x2 patches of 16x16 images
_PATCHED_8 = {"block_out_channels": [64, 64], "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
              "up_block_types": ["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"]}


def merge(base: dict, overrides: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


_X0_LOGSNR = {"prediction_type": "sample", "timestep_sampling": "logsnr_normal", "logsnr_mean": -1.5, "logsnr_std": 1.5}
_EPS_LOGSNR = {"timestep_sampling": "logsnr_normal", "logsnr_mean": -1.0, "logsnr_std": 2.0}
# The preset before x0 prediction (eps, edge weighting 4): the base of the third round and, with the
# plain loss, of the first two.
_EPS = {"training": {"prediction_type": "epsilon"}}
# The preset before edge weighting (the plain mean loss, eps): the base of the second tuning round.
_PLAIN = merge(_EPS, {"training": {"edge_weighting": 0.0}})
# The preset before the levers (10 concepts, one learning rate, plain loss): the base of the first round.
_FORMER = merge(_PLAIN, {"encoder": {"num_concepts": 10}, "training": {"encoder_lr_scale": 1.0}})


def _plain(**overrides: Any) -> dict[str, Any]:
    """Overrides on top of the small preset without edge weighting (the plain mean loss)."""
    return merge(_PLAIN, overrides)


def _former(**overrides: Any) -> dict[str, Any]:
    """Overrides on top of the former small preset (10 concepts, the encoder at the U-Net's lr)."""
    return merge(_FORMER, overrides)


# name -> (what changes from the small preset, preset keys to override, extra train_encdiff.py flags)
VARIANTS: dict[str, tuple[str, dict[str, Any], list[str]]] = {
    "default": ("small preset: 16x16, N=20, U-Net 16-8-4 with attention at 8x8 and 4x4, batch 64, lr 1e-3, "
                "encoder lr 3e-3, loss weighted per pixel by the image's edges (edge_weighting 4), x0 prediction", {}, []),
    # the third round (generation fidelity), on the preset before x0 prediction (eps, edge weighting 4)
    "eps_edge": ("eps prediction, edge weighting 4: the small preset before x0 prediction", _EPS, []),
    "eps_token_dropout": ("eps, edge weighting 4, token dropout 0.1 (for classifier-free guidance)",
                          merge(_EPS, {"training": {"token_dropout": 0.1}}), []),
    "v_edge_weighting": ("v prediction, edge weighting 4", {"training": {"prediction_type": "v_prediction"}}, []),
    "x0_edge_weighting_8": ("x0 prediction, edge weighting 8", {"training": {"edge_weighting": 8.0}}, []),
    "x0_truncated_snr": ("x0 prediction, loss weighted by max(1, sqrt(SNR)): eps's loss at low noise",
                         {"training": {"loss_weighting": "truncated_snr"}}, []),
    "x0_truncated_snr_cap_5": ("x0 prediction, loss weighted by min(5, max(1, sqrt(SNR)))",
                               {"training": {"loss_weighting": "truncated_snr", "loss_weight_cap": 5.0}}, []),
    # the fourth round: eps where it is stable, x0 where sampling from noise starts
    "eps_sample_above_700": ("eps prediction, the clean image at t >= 700, the tokens' gradient there scaled to eps's",
                             merge(_EPS, {"training": {"sample_prediction_from": 700, "token_gradient": "eps"}}), []),
    "eps_sample_above_700_full": ("eps prediction, the clean image at t >= 700 (full token gradient)",
                                  merge(_EPS, {"training": {"sample_prediction_from": 700}}), []),
    # edge weighting: how strong, and with other levers (second round, eps)
    "edge_weighting_2": ("eps, edge weighting 2", merge(_EPS, {"training": {"edge_weighting": 2.0}}), []),
    "edge_weighting_8": ("eps, edge weighting 8", merge(_EPS, {"training": {"edge_weighting": 8.0}}), []),
    "edge_logsnr": ("eps, edge weighting 4 with log-SNR ~ N(-1, 2) sampling", merge(_EPS, {"training": _EPS_LOGSNR}), []),
    # the second round, on the preset without edge weighting (its 'default' then: plain_loss)
    "plain_loss": ("the plain mean loss (no edge weighting): the small preset before edge weighting", _PLAIN, []),
    "edge_weighting_4": ("plain preset + edge weighting 4 (= eps_edge)", _EPS, []),
    "concepts_20_one_lr": ("plain, 20 concepts, encoder at the U-Net's lr", _plain(training={"encoder_lr_scale": 1.0}), []),
    "concepts_20_one_lr_skip_dropout": ("plain, 20 concepts, encoder at the U-Net's lr, skip dropout 0.2",
                                        _plain(training={"encoder_lr_scale": 1.0, "skip_dropout": 0.2}), []),
    "encoder_lr_x10": ("plain, encoder lr 10x the U-Net's (1e-2)", _plain(training={"encoder_lr_scale": 10.0}), []),
    "encoder_lr_x2": ("plain, encoder lr 2x the U-Net's (2e-3)", _plain(training={"encoder_lr_scale": 2.0}), []),
    "encoder_lr_x5": ("plain, encoder lr 5x the U-Net's (5e-3)", _plain(training={"encoder_lr_scale": 5.0}), []),
    "concepts_10": ("plain, 10 concepts", _plain(encoder={"num_concepts": 10}), []),
    "concepts_30": ("plain, 30 concepts", _plain(encoder={"num_concepts": 30}), []),
    "lr_cosine_700": ("plain, both learning rates decay to 0 on a cosine over 700 steps (about 8 minutes at 1 thread)",
                      _PLAIN, ["--lr_scheduler", "cosine", "--max_train_steps", "700"]),
    "eps_logsnr": ("plain, eps prediction with log-SNR ~ N(-1, 2)", _plain(training=_EPS_LOGSNR), []),
    "v_prediction": ("plain, v prediction", _plain(training={"prediction_type": "v_prediction"}), []),
    "skip_dropout": ("plain, skip dropout 0.2", _plain(training={"skip_dropout": 0.2}), []),
    "v_edge": ("plain, v prediction, edge loss 1.0",
               _plain(training={"prediction_type": "v_prediction", "edge_loss_weight": 1.0}), []),
    "x0_logsnr_edge": ("plain, x0 prediction, log-SNR ~ N(-1.5, 1.5), edge loss 1.0",
                       _plain(training={**_X0_LOGSNR, "edge_loss_weight": 1.0}), []),
    # the first round, on the former preset (10 concepts, one lr)
    "former_small": ("the former preset: 10 concepts, encoder at the U-Net's lr (1e-3)", _FORMER, []),
    "former_x0_logsnr": ("former preset, x0 prediction, log-SNR ~ N(-1.5, 1.5)", _former(training=_X0_LOGSNR), []),
    # a cheaper U-Net step, or finer images at the same step: the U-Net on 2x2 pixel patches (PatchAutoencoder)
    "patch_2": ("plain, U-Net at 8x8 on 2x2 pixel patches (12 channels): levels 8-4, attention at both, channels 64-64",
                _plain(patch_size=2, unet=_PATCHED_8), []),
    "pixels_32_patch_2": ("plain, 32x32 images, the U-Net at 16x16 on 2x2 pixel patches (the small U-Net), encoder at 32 px",
                          _plain(image_size=32, patch_size=2), []),
    # the first tuning round (image size, U-Net layout, lr, batch), on the former preset
    "former_pixels_32": ("former preset at 32x32, 4-level U-Net (32-16-8-4, attention at 8x8 and 4x4)",
                         _former(image_size=32, unet=_FOUR_LEVELS), []),
    "former_four_levels": ("former preset, U-Net 16-8-4-2: attention only at 4x4 and 2x2", _former(unet=_FOUR_LEVELS), []),
    "former_attention_16": ("former preset, attention at every level, 16x16 included",
                            _former(unet={"down_block_types": ["CrossAttnDownBlock2D"] * 3,
                                          "up_block_types": ["CrossAttnUpBlock2D"] * 3}), []),
    "former_cross_attention_only": ("former preset, no self-attention: both attention layers attend to the tokens",
                                    _former(unet={"only_cross_attention": True}), []),
    "former_lr_2e-3": ("former preset, learning rate 2e-3", _former(training={"learning_rate": 2e-3}), []),
    "former_batch_32": ("former preset, batch 32", _former(training={"train_batch_size": 32}), []),
    "former_batch_128_lr_2e-3": ("former preset, batch 128 with lr 2e-3",
                                 _former(training={"train_batch_size": 128, "learning_rate": 2e-3}), []),
}


def run_variant(args, name: str) -> int:
    run_dir = os.path.join(args.output_dir, name)
    shutil.rmtree(run_dir, ignore_errors=True)  # a variant re-run starts afresh
    os.makedirs(args.output_dir, exist_ok=True)
    config = os.path.join(args.output_dir, f"{name}.json")
    with open(config, "w", encoding="utf-8") as f:
        json.dump(merge(load_preset("small"), VARIANTS[name][1]), f, indent=1)
    cmd = [sys.executable, os.path.join(REPO, "training", "train_encdiff.py"), "--config", config,
           "--output_dir", run_dir, "--seed", str(args.seed), "--max_train_minutes", str(args.minutes),
           "--validation_minutes", str(args.eval_every_minutes), "--checkpointing_steps", str(10**9),
           "--checkpoints_total_limit", "1", "--num_validation_images", "4", "--validation_inference_steps", "10",
           "--report_to", "none", *VARIANTS[name][2]]
    print(f"== {name}: {' '.join(cmd[1:])}", flush=True)
    with open(run_dir + ".log", "w", encoding="utf-8") as log:
        code = subprocess.run(cmd, cwd=REPO, env=script_env(REPO, args.num_threads), stdout=log, stderr=subprocess.STDOUT).returncode
    print(f"== {name}: exit {code}", flush=True)
    if code == 0:  # which concept holds which factor, at the end of the run
        result = analyse(run_dir, num_train=2000, num_test=1000)
        with open(os.path.join(run_dir, "importance.json"), "w", encoding="utf-8") as f:
            json.dump({k: np.asarray(v).tolist() for k, v in result.items()}, f, indent=1)
    return code


def table(args, names: list[str]) -> str:
    rows = ["| variant | minutes | images seen | images/s | FactorVAE | DCI | informativeness | MIG | scale acc / C | shape acc / C |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for name in names:
        log = os.path.join(args.output_dir, name, "logs", "train_log.jsonl")
        if not os.path.exists(log):
            rows.append(f"| {name} | no run | | | | | | |")
            continue
        points = [r for r in read_log(log) if r.get("event") == "validation"]
        importance_file = os.path.join(args.output_dir, name, "importance.json")
        factors = "| |"
        if os.path.exists(importance_file):  # scale and shape: held-out accuracy and completeness (final step)
            with open(importance_file, encoding="utf-8") as f:
                imp = json.load(f)
            cells = [f"{imp['accuracy'][imp['factor_names'].index(k)]:.2f} / {imp['completeness'][imp['factor_names'].index(k)]:.2f}"
                     for k in ("scale", "shape")]
            factors = f"| {cells[0]} | {cells[1]} |"
        for i, r in enumerate(points):
            rows.append(f"| {name} | {r['train_seconds'] / 60:.1f} | {r['images_seen']:,} | "
                        f"{r['images_seen'] / r['train_seconds']:.0f} | {r['factor_vae']:.3f} | "
                        f"{r['dci_disentanglement']:.3f} | {r['dci_informativeness']:.3f} | {r['mig']:.3f} "
                        + (factors if i == len(points) - 1 else "| |"))
    return "\n".join(rows)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--variants", default=",".join(VARIANTS), help=f"comma list of {list(VARIANTS)}")
    p.add_argument("--minutes", type=float, default=12.0, help="training budget per variant")
    p.add_argument("--eval_every_minutes", type=float, default=4.0, help="validation interval")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--jobs", type=int, default=2, help="variants trained at once")
    p.add_argument("--num_threads", type=int, default=1, help="OMP_NUM_THREADS of each run")
    p.add_argument("--output_dir", default="benchmark_results/encdiff_variants")
    p.add_argument("--report_only", action="store_true", help="do not train: print the table of earlier runs")
    args = p.parse_args()
    names = [n.strip() for n in args.variants.split(",") if n.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        p.error(f"unknown --variants {unknown}; expected some of {list(VARIANTS)}")
    if not args.report_only:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(lambda name: run_variant(args, name), names))
    print("\n".join(f"- {n}: {VARIANTS[n][0]}" for n in names) + "\n")
    print(table(args, names))


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="encdiff_variants.py")
