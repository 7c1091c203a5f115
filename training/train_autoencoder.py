#!/usr/bin/env python
"""Train EncDiff's first stage: a diffusers `VQModel` (or `AutoencoderKL`) with f=4, 64x64x3 -> 16x16x3.

    accelerate launch training/train_autoencoder.py --dataset procedural-shapes3d --preset paper \
        --output_dir runs/vq --max_train_steps 20000
    accelerate launch training/train_encdiff.py --preset paper --vae_path runs/vq --output_dir runs/encdiff ...

Loss: L1 reconstruction plus the quantiser's codebook/commitment loss (VQ) or a small KL term (KL);
the release's first stage also had perceptual and adversarial terms, which are not needed for the
simple synthetic scenes here. Validation every `--checkpointing_steps`: MSE and PSNR on held images,
a reconstruction grid PNG, a JSON-lines log. At the end the model is saved with `save_pretrained`
into `output_dir` itself (config.json + safetensors), which `--vae_path` loads. Same run-folder rules
as train_encdiff.py: resumable checkpoints, a total limit, crash-safe saves.
"""
from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from accelerate import Accelerator
from accelerate.utils import set_seed
from diffusers import AutoencoderKL, VQModel
from diffusers.optimization import get_scheduler
from tqdm.auto import tqdm

from encdiff_pipeline.cli import json_object_argument
from encdiff_pipeline.data.run_data import train_dataset_spec
from encdiff_pipeline.image_range import to_model_input, to_unit_images
from encdiff_pipeline.latents import encode_first_stage
from encdiff_pipeline.training.arg_checks import check_training_args
from encdiff_pipeline.training.batches import BatchOrder, batch_loader, step_generator
from encdiff_pipeline.training.checkpointing import (check_run_folder, checkpoint_step, load_checkpoint, lock_run_folder,
                                                     run_training, save_checkpoint, write_run_settings)
from encdiff_pipeline.training.factor_data import load_dataset
from encdiff_pipeline.training.presets import add_image_size_argument
from encdiff_pipeline.training.validation import CELL, RunLog
from encdiff_pipeline.visualization import image_grid

ARGS_FILE = "training_args.json"
RUN_IDENTITY = ("dataset", "dataset_options", "image_size", "model_type", "preset", "seed", "train_batch_size", "learning_rate",
                "num_processes", "kl_weight")
_F4 = {"down_block_types": ["DownEncoderBlock2D"] * 3, "up_block_types": ["UpDecoderBlock2D"] * 3,
       "latent_channels": 3, "mid_block_add_attention": False}  # three levels: f = 2^2 = 4; no attention (paper)
AUTOENCODER_PRESETS = {
    "tiny": {**_F4, "block_out_channels": [8, 16, 16], "layers_per_block": 1, "norm_num_groups": 4, "num_vq_embeddings": 64},
    "small": {**_F4, "block_out_channels": [16, 32, 64], "layers_per_block": 1, "norm_num_groups": 8, "num_vq_embeddings": 512},
    # the release: channels 32, mult [1, 2, 4], 2 res blocks, codebook 2048 (~3.5M params)
    "paper": {**_F4, "block_out_channels": [32, 64, 128], "layers_per_block": 2, "norm_num_groups": 32, "num_vq_embeddings": 2048},
}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dataset", default="procedural-shapes3d", help="factor dataset source (as for train_encdiff.py)")
    p.add_argument("--dataset_options", type=json_object_argument, default={}, help="JSON keyword options for load_factor_dataset")
    add_image_size_argument(p, default_preset="paper")  # the latent EncDiff preset a first stage serves
    p.add_argument("--model_type", default="vq", choices=["vq", "kl"], help="diffusers VQModel or AutoencoderKL")
    p.add_argument("--preset", default="paper", choices=sorted(AUTOENCODER_PRESETS), help="first-stage size (all f=4)")
    p.add_argument("--output_dir", required=True, help="run folder; the trained model is saved at its top level")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation and data order")
    p.add_argument("--train_batch_size", type=int, default=16, help="images per process per step")
    p.add_argument("--max_train_steps", type=int, default=None, help="stop after this many steps (in total)")
    p.add_argument("--max_train_minutes", type=float, default=None, help="stop after this many minutes in this launch")
    p.add_argument("--learning_rate", type=float, default=1e-3, help="AdamW learning rate")
    p.add_argument("--lr_warmup_steps", type=int, default=100, help="linear warm-up steps")
    p.add_argument("--kl_weight", type=float, default=1e-6, help="weight of the KL term (model_type kl)")
    p.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"], help="overrides accelerate's config")
    p.add_argument("--checkpointing_steps", type=int, default=500, help="checkpoint and validate every K steps")
    p.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep at most this many checkpoints")
    p.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint folder of this run")
    p.add_argument("--num_validation_images", type=int, default=64, help="held images for MSE / PSNR and the grid")
    args = p.parse_args(argv)
    if args.max_train_steps is None and args.max_train_minutes is None:
        p.error("give --max_train_steps and/or --max_train_minutes")
    if args.resume_from_checkpoint not in (None, "latest"):
        given = args.resume_from_checkpoint  # 'checkpoint-N', or a path to one inside --output_dir
        args.resume_from_checkpoint = os.path.join(args.output_dir, os.path.basename(os.path.normpath(given)))
        if os.path.dirname(os.path.normpath(given)) and os.path.realpath(os.path.dirname(os.path.normpath(given))) != os.path.realpath(args.output_dir):
            p.error(f"--resume_from_checkpoint {given} is not a checkpoint of --output_dir {args.output_dir}; a run resumes "
                    "in its own folder: pass 'latest' or checkpoint-N of that folder")
    check_training_args(p, args)  # numeric arguments and the output folder, before anything is written
    return args


class Reconstruction(torch.nn.Module):
    """`forward(images)` -> (reconstruction, regulariser loss) of a first stage, for images in [-1, 1].

    A module of its own so that distributed training (DDP) sees the whole computation in one forward.
    The regulariser is the VQ codebook + commitment loss, or the KL divergence of the posterior.
    """

    def __init__(self, autoencoder):
        super().__init__()
        self.autoencoder = autoencoder

    def forward(self, images: torch.Tensor, generator: torch.Generator | None = None):
        model = self.autoencoder
        latents, posterior = encode_first_stage(model, images, generator)
        if posterior is None:  # VQModel: the codebook + commitment loss comes with the decoding
            out = model.decode(latents)
            return out.sample, out.commit_loss.mean()
        return model.decode(latents).sample, posterior.kl().mean()


@torch.no_grad()
def evaluate_reconstruction(model, images: torch.Tensor, path: str) -> dict[str, float]:
    """MSE (on [0, 1] pixels) and PSNR of the held images; saves originals over reconstructions."""
    model.eval()
    recon = Reconstruction(model)(images)[0].clamp(-1, 1)
    model.train()
    x, y = to_unit_images(images), to_unit_images(recon)
    mse = float(np.mean((y - x) ** 2))
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image_grid([x[:16], y[:16]], row_labels=["input", "reconstruction"],
               min_cell_size=CELL).save(path)
    return {"mse": mse, "psnr": float(10 * math.log10(1.0 / max(mse, 1e-12)))}


def main(args: argparse.Namespace) -> str:
    accelerator = Accelerator(mixed_precision=args.mixed_precision)
    settings = {**vars(args), "num_processes": accelerator.num_processes}
    with lock_run_folder(accelerator, args.output_dir):  # released when main ends, however it ends
        return train(args, accelerator, settings)


def train(args: argparse.Namespace, accelerator: Accelerator, settings: dict) -> str:
    """The run, in its locked run folder."""
    resume_from = check_run_folder(args.output_dir, args.resume_from_checkpoint, settings, RUN_IDENTITY, ARGS_FILE)
    if resume_from is not None and args.max_train_steps is not None and checkpoint_step(resume_from) > args.max_train_steps:
        raise SystemExit(f"error: {resume_from} is at step {checkpoint_step(resume_from)}, past --max_train_steps "
                         f"{args.max_train_steps}: nothing to train (the run is finished). Give a larger --max_train_steps "
                         "to train on, or use the pipeline already saved in --output_dir")
    dataset = load_dataset(*train_dataset_spec(vars(args), args.image_size))
    channels, size = dataset[0][0].shape[:2]
    if size % 4:
        raise SystemExit(f"error: image size {size} is not divisible by 4 (the first stage downsamples by f=4)")
    set_seed(args.seed)
    model_cls = VQModel if args.model_type == "vq" else AutoencoderKL
    config = dict(AUTOENCODER_PRESETS[args.preset])
    if args.model_type == "kl":
        config.pop("num_vq_embeddings")
    else:
        config["vq_embed_dim"] = config["latent_channels"]
    model = model_cls(in_channels=channels, out_channels=channels, sample_size=size, **config)
    order = BatchOrder(len(dataset), args.train_batch_size, args.seed, accelerator.num_processes, accelerator.process_index)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_run_settings(args.output_dir, settings, ARGS_FILE)

    model = Reconstruction(model)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate)
    lr_scheduler = get_scheduler("constant_with_warmup", optimizer, num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    global_step = 0
    if resume_from is not None:
        load_checkpoint(accelerator, resume_from)
        global_step = checkpoint_step(resume_from)

    total_steps = args.max_train_steps or 10**9
    loader = batch_loader(dataset, order, first=global_step, count=max(0, total_steps - global_step))
    held = np.random.RandomState(args.seed).choice(len(dataset), min(args.num_validation_images, len(dataset)), replace=False)
    held_images = to_model_input(dataset.get_images(held)).to(accelerator.device)
    log = RunLog(os.path.join(args.output_dir, "logs", "train_log.jsonl")) if accelerator.is_main_process else None
    progress = tqdm(total=args.max_train_steps, initial=global_step, desc="steps", disable=not accelerator.is_local_main_process)
    start_time, scores = time.time(), None
    for images, _, k in loader:
        generator = step_generator(args.seed, int(k), accelerator.process_index)
        images = images.to(accelerator.device)
        recon, regulariser = model(images, generator)
        l1 = F.l1_loss(recon.float(), images.float())
        loss = l1 + (regulariser if args.model_type == "vq" else args.kl_weight * regulariser)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss is {loss.item()} at step {global_step + 1}; lower --learning_rate")
        accelerator.backward(loss)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        global_step += 1
        progress.update(1)
        progress.set_postfix(l1=f"{l1.item():.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        if log is not None:
            log.write({"event": "train", "step": global_step, "loss": loss.item(), "l1": l1.item(),
                       "regulariser": regulariser.item(), "seconds": round(time.time() - start_time, 3)})
        if global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
            if accelerator.is_main_process:
                scores = validate(accelerator.unwrap_model(model).autoencoder, held_images, args.output_dir, global_step, log)
        if args.max_train_minutes is not None and accelerator.is_main_process \
                and time.time() - start_time > 60 * args.max_train_minutes:
            accelerator.set_trigger()
        if accelerator.check_trigger() or global_step >= total_steps:
            break
    progress.close()

    if global_step % args.checkpointing_steps:
        save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
    if accelerator.is_main_process:
        model = accelerator.unwrap_model(model).autoencoder
        if scores is None or scores["step"] != global_step:
            scores = validate(model, held_images, args.output_dir, global_step, log)
        model.save_pretrained(args.output_dir)  # config.json + diffusion_pytorch_model.safetensors: --vae_path
        accelerator.print(f"first stage saved to {args.output_dir}: MSE {scores['mse']:.5f}, PSNR {scores['psnr']:.2f} dB")
    accelerator.wait_for_everyone()
    return args.output_dir


def validate(model, held_images: torch.Tensor, output_dir: str, step: int, log: RunLog) -> dict:
    path = os.path.join(output_dir, "validation", f"step-{step:06d}", "reconstruction.png")
    record = {"event": "validation", "step": step, **evaluate_reconstruction(model, held_images, path)}
    log.write(record)
    return record


if __name__ == "__main__":
    run_training(main, parse_args())
