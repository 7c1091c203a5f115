#!/usr/bin/env python
"""Train a VAE baseline (β-VAE, β-TCVAE or FactorVAE) on a factor dataset, scoring it as it learns.

    python training/train_baseline.py --model beta_tcvae --output_dir runs/beta_tcvae \
        --max_train_minutes 20 --validation_minutes 5

The comparison harness (`benchmarks/disentanglement.py`) runs this script beside `train_encdiff.py`
with the same data, budget and evaluation: the held dataset, the metrics code
(`encdiff_pipeline.training.validation.concept_metrics`, on the posterior means) and the log format (`logs/train_log.jsonl`) are
train_encdiff.py's. Defaults are disentanglement_lib's study settings: batch 64, Adam lr 1e-4
(betas 0.9/0.999; FactorVAE's discriminator: betas 0.5/0.9), 10 latents, Bernoulli likelihood; the
encoder trunk is the concept encoder's (width 128).

Training images are drawn uniformly from the whole factor grid. The budget counts training time only
(data, forward, backward, optimiser), not validation. At the end: the model (`OUTPUT_DIR/model`, load
with `encdiff_pipeline.baselines.load_baseline`), `swap.png` and `traversal.png`. One process
(accelerate provides the device and mixed precision).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import set_seed

from encdiff_pipeline.cli import json_object_argument
from encdiff_pipeline.atomic import atomic_folder, write_json
from encdiff_pipeline.baselines import BASELINES, FactorVAEModel
from encdiff_pipeline.image_range import to_model_input, to_unit_range
from encdiff_pipeline.training.arg_checks import check_training_args
from encdiff_pipeline.training.factor_data import PROCEDURAL, load_datasets
from encdiff_pipeline.training.presets import add_image_size_argument
from encdiff_pipeline.training.validation import CELL, RunLog, concept_metrics
from encdiff_pipeline.visualization import image_grid, swap_grid_labels


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", required=True, choices=sorted(BASELINES), help="which baseline to train")
    p.add_argument("--dataset", default=PROCEDURAL, help="factor dataset: 'procedural-shapes3d', a file/folder or a Hub id")
    p.add_argument("--dataset_options", type=json_object_argument, default={}, help="JSON options for load_factor_dataset")
    add_image_size_argument(p, default_preset="small")  # the CPU default EncDiff the baselines are compared with
    p.add_argument("--validation_dataset", default=None, help="held factor dataset (default: a 10,000-point procedural sub-grid)")
    p.add_argument("--validation_dataset_options", type=json_object_argument, default=None, help="JSON options for the held dataset")
    p.add_argument("--output_dir", required=True, help="run folder: logs, model, grids")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and noise (metrics: seed 0)")
    p.add_argument("--train_batch_size", type=int, default=64, help="images per step (disentanglement_lib: 64)")
    p.add_argument("--learning_rate", type=float, default=1e-4, help="Adam learning rate of the VAE")
    p.add_argument("--discriminator_learning_rate", type=float, default=1e-4, help="FactorVAE discriminator's Adam lr")
    p.add_argument("--num_latents", type=int, default=10, help="latent dimensions (the representation)")
    p.add_argument("--width", type=int, default=128, help="trunk / decoder channels (concept encoder: 128)")
    p.add_argument("--likelihood", default="bernoulli", choices=["bernoulli", "gaussian"], help="pixel likelihood")
    p.add_argument("--beta", type=float, default=None, help="β of beta_vae (default 4) or beta_tcvae (default 6)")
    p.add_argument("--gamma", type=float, default=None, help="γ of factor_vae (default 10)")
    p.add_argument("--max_train_steps", type=int, default=None, help="stop after this many steps")
    p.add_argument("--max_train_minutes", type=float, default=None, help="stop after this much training time (validation excluded)")
    p.add_argument("--validation_minutes", type=float, default=None, help="validate every this much training time")
    p.add_argument("--validation_steps", type=int, default=None, help="validate every this many steps")
    p.add_argument("--metric_num_train", type=int, default=2000, help="training samples / votes of each metric")
    p.add_argument("--metric_num_eval", type=int, default=1000, help="evaluation samples / votes of FactorVAE and DCI")
    p.add_argument("--num_validation_images", type=int, default=8, help="images in the swap and traversal grids")
    p.add_argument("--logging_steps", type=int, default=10, help="write a train record every this many steps")
    p.add_argument("--mixed_precision", default="no", choices=["no", "bf16", "fp16"], help="accelerate mixed precision")
    args = p.parse_args(argv)
    if args.max_train_steps is None and args.max_train_minutes is None:
        p.error("give --max_train_steps and/or --max_train_minutes")
    if args.beta is not None and args.model == "factor_vae":
        p.error("--beta applies to beta_vae and beta_tcvae; factor_vae takes --gamma")
    if args.gamma is not None and args.model != "factor_vae":
        p.error("--gamma applies to factor_vae only")
    check_training_args(p, args)  # numeric arguments and the output folder, before anything is written
    return args


def build_model(args, image_shape: tuple[int, int, int]):
    channels, size = image_shape[2], image_shape[0]
    kwargs = dict(in_channels=channels, sample_size=size, num_latents=args.num_latents, width=args.width,
                  likelihood=args.likelihood)
    kwargs.update({k: getattr(args, k) for k in ("beta", "gamma") if getattr(args, k) is not None})
    return BASELINES[args.model](**kwargs)


@torch.no_grad()
def save_grids(model, images: torch.Tensor, output_dir: str, num_values: int = 8) -> dict[str, str]:
    """swap.png (row 0 inputs, row 1 reconstructions, row 1+k: latent k of every image set to image 0's)
    and traversal.png (row k: latent k of image 0 swept over its range on these images)."""
    was_training = model.training
    model.eval()
    inputs = to_unit_range(images.float()).clamp(0, 1).unsqueeze(0)
    paths = {"swap": os.path.join(output_dir, "swap.png"), "traversal": os.path.join(output_dir, "traversal.png")}
    swap_rows, columns = swap_grid_labels(model.config.num_latents, len(images), name="latent")
    swap_rows.insert(1, "reconstruction")
    image_grid(torch.cat([inputs, model.swap(images)]), row_labels=swap_rows, col_labels=columns,
               min_cell_size=CELL).save(paths["swap"])
    means = model.encode(images)
    rows = [model.traverse(images[:1], k, np.linspace(float(means[:, k].min()), float(means[:, k].max()), num_values))
            for k in range(model.config.num_latents)]
    image_grid(torch.stack(rows), row_labels=[f"latent {k}" for k in range(len(rows))],
               col_labels=["min"] + [""] * (num_values - 2) + ["max"], min_cell_size=CELL).save(paths["traversal"])
    model.train(was_training)
    return paths


def save_model(model, path: str) -> None:
    """save_pretrained into a temporary folder, then swap it in: a crash never leaves a half-written model."""
    with atomic_folder(path) as tmp:
        model.save_pretrained(tmp)


def check_fresh_output_dir(output_dir: str) -> None:
    """A baseline run starts in a missing or empty folder (or one holding only what a start of this
    script that failed before training left: training_args.json, an empty logs/); anything else, such
    as a downloaded pipeline or another script's run, would be overwritten or mixed, so it is refused."""
    if not os.path.isdir(output_dir):
        return
    entries = set(os.listdir(output_dir))
    leftovers = {"training_args.json", "logs"}
    own_start = entries <= leftovers and (not os.path.isdir(os.path.join(output_dir, "logs"))
                                          or not os.listdir(os.path.join(output_dir, "logs")))
    if own_start and "training_args.json" in entries:
        try:
            with open(os.path.join(output_dir, "training_args.json"), encoding="utf-8") as f:
                own_start = json.load(f).get("model") in BASELINES
        except (OSError, ValueError, AttributeError):
            own_start = False
    if entries and not own_start:
        shown = ", ".join(sorted(entries)[:6]) + (" ..." if len(entries) > 6 else "")
        raise SystemExit(f"error: --output_dir {output_dir} is not empty ({shown}); train_baseline.py writes a new run "
                         "there and would overwrite or mix those files: choose a new or empty folder")


def main(args: argparse.Namespace) -> list[dict]:
    log_path = os.path.join(args.output_dir, "logs", "train_log.jsonl")
    if os.path.exists(log_path):
        raise SystemExit(f"error: {args.output_dir} already holds a run ({log_path}); choose another --output_dir")
    check_fresh_output_dir(args.output_dir)
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    set_seed(args.seed)
    dataset, held = load_datasets(args, args.image_size)
    model = build_model(args, dataset.get_images([0]).shape[1:])
    write_json(os.path.join(args.output_dir, "training_args.json"), vars(args), indent=2)

    is_factor_vae = isinstance(model, FactorVAEModel)
    optimizer = torch.optim.Adam(model.vae_parameters() if is_factor_vae else model.parameters(),
                                 lr=args.learning_rate, betas=(0.9, 0.999), eps=1e-8)
    d_optimizer = (torch.optim.Adam(model.discriminator.parameters(), lr=args.discriminator_learning_rate,
                                    betas=(0.5, 0.9), eps=1e-8) if is_factor_vae else None)
    model, optimizer = accelerator.prepare(model, optimizer)
    d_optimizer = accelerator.prepare(d_optimizer) if d_optimizer is not None else None
    model = accelerator.unwrap_model(model)  # one process: call compute_loss / discriminator_loss directly
    accelerator.print(f"{args.model}: {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M parameters, "
                      f"{len(dataset)} training images, {len(held)} held")

    log = RunLog(log_path, accelerator)
    rng = np.random.RandomState(args.seed)  # data order
    held_images = to_model_input(held.get_images(rng.choice(len(held), args.num_validation_images, replace=False)),
                                 accelerator.device)
    budget_s = math.inf if args.max_train_minutes is None else 60 * args.max_train_minutes
    max_steps = args.max_train_steps or math.inf
    every_s = math.inf if args.validation_minutes is None else 60 * args.validation_minutes
    step, train_seconds, next_validation_s, start = 0, 0.0, every_s, time.time()
    validations: list[dict] = []

    def validate() -> None:
        scores = concept_metrics(model, held, metrics=["factor_vae", "dci", "mig"], num_train=args.metric_num_train,
                                 num_eval=args.metric_num_eval)  # each metric: a fresh RandomState(0), as EncDiff's
        record = {"event": "validation", "step": step, "images_seen": step * args.train_batch_size,
                  "train_seconds": round(train_seconds, 3), "seconds": round(time.time() - start, 3), **scores}
        validations.append(record)
        log.write(record)
        accelerator.print(f"step {step} ({train_seconds:.0f} s): " + ", ".join(
            f"{k} {v:.3f}" for k, v in scores.items()))

    model.train()
    while step < max_steps and train_seconds < budget_s:
        t0 = time.perf_counter()
        batch = dataset.get_images(rng.randint(len(dataset), size=args.train_batch_size))
        images = to_model_input(batch, accelerator.device)
        with accelerator.autocast():
            out = model.compute_loss(images)
        if not torch.isfinite(out.loss):
            raise FloatingPointError(f"loss is {out.loss.item()} at step {step + 1}; lower --learning_rate")
        optimizer.zero_grad()
        accelerator.backward(out.loss)
        optimizer.step()
        if d_optimizer is not None:  # zero_grad also drops what the VAE loss left on the discriminator
            d_optimizer.zero_grad()
            with accelerator.autocast():
                d_loss = model.discriminator_loss(out.latent_sample.detach())
            accelerator.backward(d_loss)
            d_optimizer.step()
        step += 1
        train_seconds += time.perf_counter() - t0
        if step % args.logging_steps == 0:
            record = {"event": "train", "step": step, "images_seen": step * args.train_batch_size,
                      "train_seconds": round(train_seconds, 3), "loss": out.loss.item(),
                      "reconstruction": out.reconstruction.item(), "kl": out.kl.item()}
            if out.total_correlation is not None:
                record["total_correlation"] = out.total_correlation.item()
            if d_optimizer is not None:
                record["discriminator_loss"] = d_loss.item()
            log.write(record)
        if train_seconds >= next_validation_s or (args.validation_steps and step % args.validation_steps == 0):
            validate()
            next_validation_s = (train_seconds // every_s + 1) * every_s
    if not validations or validations[-1]["step"] != step:
        validate()
    save_model(model, os.path.join(args.output_dir, "model"))
    save_grids(model, held_images, args.output_dir)
    accelerator.print(f"done: {step} steps, {step * args.train_batch_size} images, {train_seconds:.0f} s of training")
    return validations


if __name__ == "__main__":
    from encdiff_pipeline.cli import run_cli

    raise SystemExit(run_cli(main, parse_args(), prog="train_baseline.py"))
