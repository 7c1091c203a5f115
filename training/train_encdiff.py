#!/usr/bin/env python
"""Train EncDiff (concept encoder + cross-attention U-Net, diffusion decoder) with accelerate.

    accelerate launch training/train_encdiff.py --dataset procedural-shapes3d --preset small \
        --output_dir runs/small --max_train_minutes 20 --checkpointing_steps 500

One CPU or many GPUs; resumable (`--resume_from_checkpoint latest` continues the same run: same data
order, same noise); validation every `--validation_steps` and/or `--validation_minutes` of training time
(reconstruction / swap grids as PNG,
FactorVAE / DCI / MIG of the concepts on a held factor grid, logged to `logs/train_log.jsonl` and to
tensorboard when installed). At the end `output_dir` is an `EncDiffPipeline` folder with a model card:
`EncDiffPipeline.from_pretrained(output_dir)`.

The loss is the paper's: mean L1 between the U-Net's and the true noise, with T=1000 and one of the
four schedules the paper ablates (`encdiff_pipeline.noise_schedules`). AdamW over encoder + U-Net with a linear
warm-up, EMA of the U-Net only; the saved pipeline carries the EMA U-Net. `--max_train_minutes` and
`--validation_minutes` count training time only (data, forward, backward, optimiser; not validation,
checkpoints or the final pipeline), in total across resumes, and every log record carries it as
`train_seconds`; the main process takes the stop / validate decisions and broadcasts them.

The paper's two ablations:
- `--conditioning adagn`: the tokens enter only through the U-Net's scale-shift norm (AdaGN): the
  preset's U-Net with plain blocks, no cross-attention, and the flattened tokens (N*d) projected
  into the timestep embedding (`class_embed_type="projection"`, passed as `class_labels`).
- `--decoder_type deterministic` ("EncDec w/o Diff"): the same encoder and U-Net, but the U-Net maps
  an all-zero input at timestep 0 to the image (or latent) in one pass, L1 loss, no noise. The
  saved folder still loads as an `EncDiffPipeline` (its encoder is what the metrics score), but its
  DDIM generation is meaningless: decode with `encdiff_pipeline.deterministic_decoder.deterministic_decode`.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import math
import logging
import os
import time

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, broadcast, set_seed
from diffusers import DDIMScheduler, UNet2DConditionModel, VQModel
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from encdiff_pipeline.cli import json_object_argument
from encdiff_pipeline.conditioning import unet_conditioning
from encdiff_pipeline.deterministic_decoder import deterministic_decode
from encdiff_pipeline.image_range import to_model_input
from encdiff_pipeline.latents import encode_latents, encode_to_diffusion
from encdiff_pipeline.models import UNET_PRESETS, ConceptEncoderModel, PatchAutoencoder, unet_from_preset
from encdiff_pipeline.noise_schedules import NOISE_SCHEDULES, make_noise_scheduler
from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline
from encdiff_pipeline.training import PREDICTION_TYPES, TIMESTEP_SAMPLINGS, DiffusionObjective, SkipDropout
from encdiff_pipeline.training.diffusion_objective import LOSS_WEIGHTINGS, TOKEN_GRADIENTS
from encdiff_pipeline.training.arg_checks import check_training_args
from encdiff_pipeline.training.batches import BatchOrder, batch_loader, step_generator
from encdiff_pipeline.training.checkpointing import (check_run_folder, checkpoint_step, load_checkpoint, lock_run_folder,
                                                     run_training, save_checkpoint, write_run_settings)
from encdiff_pipeline.training.factor_data import PROCEDURAL, load_datasets
from encdiff_pipeline.training.fast_path import (DeviceBatches, LossMonitor, build_uint8_grid, configure_tf32,
                                                 fits_on_device, grid_bytes, make_adamw, memory_format, prepare_models,
                                                 training_forward)
from encdiff_pipeline.training.first_stage import load_vae
from encdiff_pipeline.training.latent_cache import load_latent_cache
from encdiff_pipeline.training.presets import ENCDIFF_PRESETS, add_image_size_argument, load_preset
from encdiff_pipeline.training.validation import (RunLog, check_held_images, concept_metrics, logged_train_seconds,
                                                  push_failure_message, save_decoder_images, save_validation_images,
                                                  training_clock)

logger = get_logger(__name__)

ARGS_FILE = "training_args.json"
# Arguments that define a run: a resumed run must use the same values.
RUN_IDENTITY = ("dataset", "dataset_options", "preset", "config", "vae_path", "seed", "train_batch_size",
                "gradient_accumulation_steps", "num_processes", "beta_schedule", "prediction_type", "loss_type",
                "learning_rate", "lr_scheduler", "lr_warmup_steps", "adam_weight_decay", "ema_decay", "conditioning",
                "decoder_type", "timestep_sampling", "logsnr_mean", "logsnr_std", "edge_loss_weight", "edge_weighting",
                "skip_dropout", "encoder_lr_scale", "token_dropout", "loss_weighting", "loss_weight_cap",
                "sample_prediction_from", "token_gradient")
# Training settings a preset may set (its "training" dict) and their values when it does not.
TRAINING_DEFAULTS = {"learning_rate": 3e-4, "lr_warmup_steps": 500, "beta_schedule": "linear", "train_batch_size": 32,
                     "ema_decay": 0.9999, "prediction_type": "epsilon", "timestep_sampling": "uniform",
                     "logsnr_mean": 0.0, "logsnr_std": 1.0, "edge_loss_weight": 0.0, "edge_weighting": 0.0, "skip_dropout": 0.0,
                     "encoder_lr_scale": 1.0, "token_dropout": 0.0, "guidance_scale": 1.0,
                     "loss_weighting": "uniform", "loss_weight_cap": None, "sample_prediction_from": None,
                     "token_gradient": None}  # None: "full" (and a run folder saved before the flag resumes)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    # data and model
    p.add_argument("--dataset", default=PROCEDURAL,
                   help="factor dataset: 'procedural-shapes3d', a file/folder in a supported format, a local `datasets` folder or a Hub id")
    p.add_argument("--dataset_options", type=json_object_argument, default={},
                   help='JSON keyword options for load_factor_dataset, e.g. \'{"factor_sizes": [4,4,4,8,4,15]}\' '
                        "(their image_size is --image_size unless given)")
    add_image_size_argument(p, default_preset=None)
    p.add_argument("--preset", default="small", help=f"model + training preset, one of {sorted(ENCDIFF_PRESETS)}")
    p.add_argument("--config", default=None, help="JSON file with a custom preset (same keys as presets.py); overrides --preset")
    p.add_argument("--vae_path", default=None,
                   help="folder of a trained first stage (VQModel / AutoencoderKL, train_autoencoder.py): diffusion on its latents")
    p.add_argument("--output_dir", required=True, help="run folder: checkpoints, logs, validation images, final pipeline")
    p.add_argument("--seed", type=int, default=0, help="seed of initialisation, data order and noise")
    p.add_argument("--conditioning", default="cross_attention", choices=["cross_attention", "adagn"],
                   help="how tokens reach the U-Net: cross-attention (EncDiff) or only the scale-shift norm (AdaGN ablation)")
    p.add_argument("--decoder_type", default="diffusion", choices=["diffusion", "deterministic"],
                   help="diffusion decoder (EncDiff) or the U-Net decoding the image from the tokens in one pass (EncDec w/o Diff)")
    # optimisation
    p.add_argument("--train_batch_size", type=int, default=None, help="images per process per micro-batch (default: the preset's)")
    p.add_argument("--gradient_accumulation_steps", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--max_train_steps", type=int, default=None, help="stop after this many optimizer steps (in total, across resumes)")
    p.add_argument("--max_train_minutes", type=float, default=None, help="stop after this many minutes of training time (validation, checkpoints, final pipeline excluded; in total, across resumes)")
    p.add_argument("--learning_rate", type=float, default=None, help="AdamW learning rate (default: the preset's)")
    p.add_argument("--lr_scheduler", default="constant_with_warmup", help="diffusers.optimization.get_scheduler name")
    p.add_argument("--lr_warmup_steps", type=int, default=None, help="linear warm-up steps (default: the preset's)")
    p.add_argument("--encoder_lr_scale", type=float, default=None,
                   help="the concept encoder's learning rate as a multiple of --learning_rate; default: the preset's")
    p.add_argument("--adam_weight_decay", type=float, default=1e-2, help="AdamW weight decay (torch's default)")
    p.add_argument("--max_grad_norm", type=float, default=1.0, help="gradient clipping norm (0 = off)")
    p.add_argument("--ema_decay", type=float, default=None, help="EMA decay of the U-Net weights (default: the preset's)")
    p.add_argument("--beta_schedule", default=None, choices=NOISE_SCHEDULES,
                   help="noise schedule, release names (linear = diffusers scaled_linear 0.0015..0.0155); default: the preset's")
    p.add_argument("--prediction_type", default=None, choices=PREDICTION_TYPES,
                   help="U-Net target: the noise (paper), the clean image x0, or v; default: the preset's")
    p.add_argument("--timestep_sampling", default=None, choices=TIMESTEP_SAMPLINGS,
                   help="training noise levels: uniform over the T steps (paper), or log-SNR ~ N(--logsnr_mean, --logsnr_std); "
                        "default: the preset's")
    p.add_argument("--logsnr_mean", type=float, default=None, help="mean log-SNR of --timestep_sampling logsnr_normal")
    p.add_argument("--logsnr_std", type=float, default=None, help="std of log-SNR of --timestep_sampling logsnr_normal")
    p.add_argument("--edge_loss_weight", type=float, default=None,
                   help="weight of an L1 loss on finite differences of the implied clean image (0 = off; needs x0 or v "
                        "prediction); default: the preset's")
    p.add_argument("--edge_weighting", type=float, default=None,
                   help="weight the loss per pixel by 1 + this x the clean image's edge magnitude / its mean (0 = off); "
                        "default: the preset's")
    p.add_argument("--skip_dropout", type=float, default=None,
                   help="channel dropout probability on the U-Net's skip connections while training (0 = off); "
                        "default: the preset's")
    p.add_argument("--loss_weighting", default=None, choices=LOSS_WEIGHTINGS,
                   help="per-image weight of the loss by noise level: uniform, or truncated_snr (x0 prediction: the eps "
                        "loss at low noise, the x0 loss at high noise); default: the preset's")
    p.add_argument("--loss_weight_cap", type=float, default=None,
                   help="the largest --loss_weighting truncated_snr weight (default: the preset's, else none)")
    p.add_argument("--sample_prediction_from", type=int, default=None,
                   help="eps prediction with the U-Net predicting the clean image at training steps >= this (where an eps "
                        "prediction implies an unstable clean image and sampling from noise loses the hues); the saved "
                        "pipeline converts; default: the preset's (none)")
    p.add_argument("--token_gradient", default=None, choices=TOKEN_GRADIENTS,
                   help="'eps': the tokens' gradient from the --sample_prediction_from steps scaled to the eps loss's, "
                        "so the encoder learns from the eps objective alone; default: the preset's (full)")
    p.add_argument("--token_dropout", type=float, default=None,
                   help="probability that an image's tokens are zeroed while training, so the U-Net also learns the "
                        "empty condition that classifier-free guidance needs (0 = off); default: the preset's")
    p.add_argument("--guidance_scale", type=float, default=None,
                   help="classifier-free guidance of the validation grids and the saved pipeline's default "
                        "(1 = none; > 1 needs --token_dropout > 0); default: the preset's")
    p.add_argument("--loss_type", default="l1", choices=["l1", "l2"], help="L1 (paper) or L2 on the target")
    p.add_argument("--mixed_precision", default=None, choices=["no", "fp16", "bf16"], help="overrides accelerate's config")
    p.add_argument("--dataloader_num_workers", type=int, default=0, help="processes rendering/reading batches ahead")
    # GPU speed knobs (fast_path.py); off by default: the training step is then exactly the plain one
    p.add_argument("--allow_tf32", action="store_true", help="TF32 matmuls and convolutions (CUDA only)")
    p.add_argument("--compile_unet", action="store_true", help="torch.compile the U-Net of the training step (same weights; validation and checkpoints use the plain module)")
    p.add_argument("--fused_adamw", action="store_true", help="torch.optim.AdamW(fused=True)")
    p.add_argument("--channels_last", action="store_true", help="channels-last memory format for the models and their inputs")
    p.add_argument("--foreach_ema", action="store_true", help="update the EMA U-Net with torch's foreach kernels")
    p.add_argument("--host_sync_steps", type=int, default=None,
                   help="read back and check the losses once every K steps (one host sync); default 1 on CPU "
                        "(every step, as before), 50 on CUDA; the logged losses are the same")
    p.add_argument("--data_on_device", action="store_true",
                   help="hold the whole dataset as a uint8 tensor on the device and gather batches there (same "
                        "batch order; images rounded to 8 bits); falls back to the DataLoader (also rounded) when "
                        "it needs more than half the free device memory")
    p.add_argument("--latent_cache", default=None,
                   help="safetensors file of the dataset's first-stage latents (training/latent_cache.py): training "
                        "reads them by index and never runs the first stage's encoder; needs --vae_path (a VQModel)")
    # checkpoints
    p.add_argument("--checkpointing_steps", type=int, default=500, help="save a resumable checkpoint every K optimizer steps")
    p.add_argument("--checkpoints_total_limit", type=int, default=None, help="keep at most this many checkpoints (oldest deleted)")
    p.add_argument("--resume_from_checkpoint", default=None,
                   help="'latest' or a checkpoint folder of this run (output_dir/checkpoint-N) to continue from")
    # validation
    p.add_argument("--validation_steps", type=int, default=None,
                   help="validate every K steps (default: --checkpointing_steps, unless --validation_minutes is given)")
    p.add_argument("--validation_minutes", type=float, default=None, help="validate every this many minutes of training time")
    p.add_argument("--validation_dataset", default=None, help="held factor dataset for the metrics (default: a 10,000-point procedural sub-grid, or --dataset)")
    p.add_argument("--validation_dataset_options", type=json_object_argument, default=None, help="JSON options for the held dataset")
    p.add_argument("--validation_metrics", default="factor_vae,dci,mig", help="comma list of factor_vae, dci, mig; 'none' to skip")
    p.add_argument("--metric_num_train", type=int, default=2000, help="training samples / votes of each metric")
    p.add_argument("--metric_num_eval", type=int, default=1000, help="evaluation samples / votes of FactorVAE and DCI")
    p.add_argument("--num_validation_images", type=int, default=8, help="images in the reconstruction and swap grids")
    p.add_argument("--validation_inference_steps", type=int, default=50, help="DDIM steps for the validation grids")
    p.add_argument("--generation_fidelity", action="store_true",
                   help="at the end, read the final pipeline's reconstructions, swaps and traversals with a factor probe "
                        "trained on --dataset (cached), into RUN/generation_fidelity.json and the model card")
    p.add_argument("--fidelity_options", type=json_object_argument, default={},
                   help='JSON keyword options of generation_fidelity, e.g. \'{"num_images": 128, "probe_options": {"steps": 500}}\'')
    # output
    p.add_argument("--push_to_hub", action="store_true", help="push the final pipeline to the Hub")
    p.add_argument("--hub_model_id", default=None, help="Hub repo id for --push_to_hub (default: output_dir's name)")
    p.add_argument("--report_to", default="tensorboard", choices=["tensorboard", "none"],
                   help="extra tracker besides the JSON-lines log (skipped with a warning when not installed)")
    args = p.parse_args(argv)

    if args.max_train_steps is None and args.max_train_minutes is None:
        p.error("give --max_train_steps and/or --max_train_minutes")
    for name in ("gradient_accumulation_steps", "checkpointing_steps", "metric_num_train", "metric_num_eval",
                 "num_validation_images", "validation_inference_steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    if args.fidelity_options and not args.generation_fidelity:
        p.error("--fidelity_options needs --generation_fidelity")
    unknown = set(args.validation_metrics.split(",")) - {"factor_vae", "dci", "mig", "none"}
    if unknown:
        p.error(f"unknown --validation_metrics {sorted(unknown)}; expected a comma list of factor_vae, dci, mig, or none")
    if args.validation_metrics != "none" and args.metric_num_train < 2:
        p.error(f"--metric_num_train must be >= 2 for --validation_metrics {args.validation_metrics} (the metrics are "
                f"undefined on a single sample), got {args.metric_num_train}")
    if args.resume_from_checkpoint is not None and args.resume_from_checkpoint != "latest":
        given = args.resume_from_checkpoint  # 'checkpoint-N', or a path to one inside --output_dir
        args.resume_from_checkpoint = os.path.join(args.output_dir, os.path.basename(os.path.normpath(given)))
        if os.path.dirname(os.path.normpath(given)) and os.path.realpath(os.path.dirname(os.path.normpath(given))) != os.path.realpath(args.output_dir):
            p.error(f"--resume_from_checkpoint {given} is not a checkpoint of --output_dir {args.output_dir}; a run resumes "
                    "in its own folder: pass 'latest' or checkpoint-N of that folder")
    # fill the preset's training defaults
    try:
        preset = load_preset(args.preset, args.config)
    except ValueError as err:
        p.error(str(err))
    if args.image_size is None:
        args.image_size = preset["image_size"]
    elif args.image_size != preset["image_size"]:
        p.error(f"--image_size {args.image_size}: {args.config or 'preset ' + repr(args.preset)} is built for "
                f"{preset['image_size']}x{preset['image_size']} images")
    for key, value in {**TRAINING_DEFAULTS, **preset["training"]}.items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    if args.validation_minutes is not None and args.validation_minutes <= 0:
        p.error(f"--validation_minutes must be > 0, got {args.validation_minutes}")
    try:
        build_objective(args, make_noise_scheduler(args.beta_schedule))
    except ValueError as err:
        p.error(str(err))
    if not (np.isfinite(args.guidance_scale) and args.guidance_scale >= 0):
        p.error(f"--guidance_scale must be a finite number >= 0 (1 = no guidance), got {args.guidance_scale}")
    if args.guidance_scale != 1 and args.token_dropout == 0:
        p.error(f"--guidance_scale {args.guidance_scale} needs --token_dropout > 0: without it the U-Net never learns "
                "the empty condition that guidance steers away from")
    if not (args.encoder_lr_scale > 0 and np.isfinite(args.encoder_lr_scale)):
        p.error(f"--encoder_lr_scale must be a finite number > 0, got {args.encoder_lr_scale}")
    if not 0.0 <= args.skip_dropout < 1.0:
        p.error(f"--skip_dropout must be in [0, 1), got {args.skip_dropout}")
    if args.latent_cache is not None and args.vae_path is None:
        p.error("--latent_cache needs --vae_path (the VQ first stage that wrote it: it decodes the validation images)")
    if args.host_sync_steps is not None and args.host_sync_steps < 1:
        p.error(f"--host_sync_steps must be >= 1, got {args.host_sync_steps}")
    if args.validation_steps is None and args.validation_minutes is None:
        args.validation_steps = args.checkpointing_steps
    if args.validation_steps is not None and args.validation_steps < 1:
        p.error(f"--validation_steps must be >= 1, got {args.validation_steps}")
    check_training_args(p, args)  # every numeric argument and the output folder, before anything is written
    args.preset_spec = preset
    return args


def build_models(args, image_shape: tuple[int, int, int], vae):
    """Encoder and U-Net for the preset, checked against the data (and the first stage's latents)."""
    spec = args.preset_spec
    name = args.config or f"preset {args.preset!r}"
    channels, size = image_shape[0], image_shape[1]
    if size != spec["image_size"]:
        raise SystemExit(f"error: {name} is built for {spec['image_size']}x{spec['image_size']} images but the dataset "
                         f"gives {size}x{size}; pick a preset for this size or pass dataset options that match")
    if spec["latent"] and vae is None:
        raise SystemExit(f"error: {name} trains on first-stage latents: pass --vae_path (train one with train_autoencoder.py)")
    encoder = ConceptEncoderModel(in_channels=channels, sample_size=size, **spec["encoder"])
    if vae is None:
        unet_shape = (channels, size)
    else:
        with torch.no_grad():
            latents = encode_latents(vae, torch.zeros(1, channels, size, size))
        unet_shape = (latents.shape[1], latents.shape[2])
    overrides = {"sample_size": unet_shape[1], "in_channels": unet_shape[0], "out_channels": unet_shape[0],
                 "cross_attention_dim": encoder.config.token_dim, **spec["unet"]}
    if args.conditioning == "adagn":
        overrides.update(adagn_overrides(UNET_PRESETS[spec["unet_preset"]], overrides, encoder))
    unet = unet_from_preset(spec["unet_preset"], **overrides)
    if unet.config.sample_size != unet_shape[1]:
        raise SystemExit(f"error: {name}'s U-Net is built for {unet.config.sample_size}x{unet.config.sample_size} inputs but "
                         f"the diffusion space is {unet_shape[1]}x{unet_shape[1]}")
    return encoder, unet


def adagn_overrides(preset: dict, overrides: dict, encoder) -> dict:
    """U-Net settings of the AdaGN ablation: the same blocks without cross-attention, and the flattened
    tokens (N*d) projected into the timestep embedding that drives every ResNet's scale-shift norm."""
    plain = {"CrossAttnDownBlock2D": "DownBlock2D", "CrossAttnUpBlock2D": "UpBlock2D"}
    blocks = {key: tuple(plain.get(b, b) for b in overrides.get(key, preset[key]))
              for key in ("down_block_types", "up_block_types")}
    return {**blocks, "mid_block_type": "UNetMidBlock2D", "class_embed_type": "projection",
            "projection_class_embeddings_input_dim": encoder.config.num_concepts * encoder.config.token_dim}


def main(args: argparse.Namespace) -> str:
    project = ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs"))
    tracker = "tensorboard" if args.report_to == "tensorboard" and importlib.util.find_spec("tensorboard") else None
    accelerator = Accelerator(gradient_accumulation_steps=args.gradient_accumulation_steps,
                              mixed_precision=args.mixed_precision, log_with=tracker, project_config=project)
    logging.basicConfig(format="%(asctime)s %(levelname)s %(message)s", level=logging.INFO)
    if args.report_to == "tensorboard" and tracker is None:
        logger.warning("tensorboard is not installed: logging to logs/train_log.jsonl only", main_process_only=True)

    # ---- everything that can be wrong with the arguments is checked before training starts ----
    settings = {**{k: v for k, v in vars(args).items() if k != "preset_spec"}, "num_processes": accelerator.num_processes,
                "preset_spec": args.preset_spec}
    with lock_run_folder(accelerator, args.output_dir):  # released when main ends, however it ends
        return train(args, accelerator, settings, tracker)


def train(args: argparse.Namespace, accelerator: Accelerator, settings: dict, tracker: str | None) -> str:
    """The run, in its locked run folder."""
    resume_from = check_run_folder(args.output_dir, args.resume_from_checkpoint, settings, RUN_IDENTITY, ARGS_FILE)
    if resume_from is not None and args.max_train_steps is not None and checkpoint_step(resume_from) > args.max_train_steps:
        raise SystemExit(f"error: {resume_from} is at step {checkpoint_step(resume_from)}, past --max_train_steps "
                         f"{args.max_train_steps}: nothing to train (the run is finished). Give a larger --max_train_steps "
                         "to train on, or use the pipeline already saved in --output_dir")
    vae = load_vae(args.vae_path)
    dataset, held = load_datasets(args, args.image_size)
    check_held_images(args.num_validation_images, held)
    image_shape = tuple(dataset[0][0].shape)
    if args.preset_spec["patch_size"] > 1:  # the U-Net works on p x p patches of the pixels (a lossless first stage)
        if vae is not None:
            raise SystemExit(f"error: --vae_path {args.vae_path} and a preset with patch_size "
                             f"{args.preset_spec['patch_size']} both give the U-Net's input; pass one of them")
        vae = PatchAutoencoder(in_channels=image_shape[0], patch_size=args.preset_spec["patch_size"])
    set_seed(args.seed)
    encoder, unet = build_models(args, image_shape, vae)
    configure_tf32(args.allow_tf32, accelerator.device)
    prepare_models(encoder, unet, channels_last=args.channels_last)
    latent_cache = None
    if args.latent_cache is not None:
        if not isinstance(vae, VQModel):
            raise SystemExit(f"error: --latent_cache needs a VQModel first stage, --vae_path {args.vae_path} is a {type(vae).__name__}")
        latent_cache, cache_meta = load_latent_cache(args.latent_cache, len(dataset))
        if bool(cache_meta.get("uint8")) != args.data_on_device:
            logger.warning(f"--latent_cache {args.latent_cache} encoded {'8-bit' if cache_meta.get('uint8') else 'float'} images "
                           f"but training feeds {'8-bit' if args.data_on_device else 'float'} ones (--data_on_device); "
                           "write the cache with latent_cache.py " + ("--uint8" if args.data_on_device else "without --uint8")
                           + " for latents of exactly the training images", main_process_only=True)
    order = BatchOrder(len(dataset), args.train_batch_size, args.seed, accelerator.num_processes, accelerator.process_index)
    metric_names = [] if args.validation_metrics == "none" else args.validation_metrics.split(",")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        write_run_settings(args.output_dir, settings, ARGS_FILE)
    if tracker is not None:
        accelerator.init_trackers("encdiff")

    noise_scheduler = make_noise_scheduler(args.beta_schedule)
    # the deterministic decoder predicts the image itself: its (unused for training) scheduler says so
    noise_scheduler.register_to_config(prediction_type="sample" if args.decoder_type == "deterministic" else args.prediction_type)
    objective = build_objective(args, noise_scheduler)
    latent_scale = 1.0
    if vae is not None and not isinstance(vae, PatchAutoencoder):  # the paper: latents scaled by 1 / std of the first batch
        # (the same batch on every process); pixel patches stay pixels
        first = BatchOrder(len(dataset), args.train_batch_size, args.seed).indices(0)
        if latent_cache is not None:
            latent_scale = float(1.0 / latent_cache[torch.from_numpy(first)].float().std())
        else:
            images = to_model_input(dataset.get_images(first))
            with torch.no_grad():
                latent_scale = float(1.0 / encode_latents(vae, images).float().std())
    if vae is not None:
        vae.to(accelerator.device)

    ema_kwargs = {"foreach": True} if args.foreach_ema else {}
    ema_unet = EMAModel(unet.parameters(), decay=args.ema_decay, model_cls=UNet2DConditionModel, model_config=unet.config,
                        **ema_kwargs)

    # checkpoints hold models as save_pretrained folders (diffusers' examples), plus the EMA U-Net
    def save_model_hook(models, weights, output_dir):
        if accelerator.is_main_process:
            ema_unet.save_pretrained(os.path.join(output_dir, "unet_ema"))
            for model in models:
                model = accelerator.unwrap_model(model)
                model.save_pretrained(os.path.join(output_dir, "encoder" if isinstance(model, ConceptEncoderModel) else "unet"))
                weights.pop()

    def load_model_hook(models, input_dir):
        loaded = EMAModel.from_pretrained(os.path.join(input_dir, "unet_ema"), UNet2DConditionModel)
        ema_unet.load_state_dict(loaded.state_dict())
        while models:
            model = accelerator.unwrap_model(models.pop())
            is_encoder = isinstance(model, ConceptEncoderModel)
            cls = ConceptEncoderModel if is_encoder else UNet2DConditionModel
            saved = cls.from_pretrained(input_dir, subfolder="encoder" if is_encoder else "unet")
            model.register_to_config(**saved.config)
            model.load_state_dict(saved.state_dict())

    accelerator.register_save_state_pre_hook(save_model_hook)
    accelerator.register_load_state_pre_hook(load_model_hook)

    optimizer = make_adamw([{"params": list(encoder.parameters()), "lr": args.learning_rate * args.encoder_lr_scale},
                            {"params": list(unet.parameters())}], lr=args.learning_rate,
                           weight_decay=args.adam_weight_decay, fused=args.fused_adamw)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=(args.max_train_steps or 10**9) * accelerator.num_processes)
    encoder, unet, optimizer, lr_scheduler = accelerator.prepare(encoder, unet, optimizer, lr_scheduler)
    skip_dropout = SkipDropout(accelerator.unwrap_model(unet), args.skip_dropout)
    unet_step = training_forward(unet, args.compile_unet)  # the training step's U-Net (compiled when asked)

    global_step, train_seconds = 0, 0.0
    log_path = os.path.join(args.output_dir, "logs", "train_log.jsonl")
    if resume_from is not None:
        accelerator.print(f"Resuming from {resume_from}")
        load_checkpoint(accelerator, resume_from)
        global_step = checkpoint_step(resume_from)
        logged = logged_train_seconds(log_path, global_step)
        if logged is None and (args.max_train_minutes is not None or args.validation_minutes is not None):
            raise SystemExit(f"error: {log_path} has no record of step {global_step}, so the training time already spent "
                             "is unknown and --max_train_minutes / --validation_minutes would restart from 0; restore "
                             "the log, or resume with --max_train_steps only")
        train_seconds = (logged or 0.0) if accelerator.is_main_process else 0.0
    ema_unet.to(accelerator.device)

    total_steps = args.max_train_steps or 10**9
    first_batch = global_step * args.gradient_accumulation_steps
    batch_count = max(0, total_steps - global_step) * args.gradient_accumulation_steps
    grid = None
    if args.data_on_device:
        if fits_on_device(grid_bytes(dataset), accelerator.device):
            grid = build_uint8_grid(dataset, accelerator.device, num_workers=args.dataloader_num_workers)
        else:
            logger.warning(f"--data_on_device: the dataset ({grid_bytes(dataset) / 2**30:.1f} GiB as uint8) needs more than "
                           "half the free device memory: DataLoader batches instead (the same values)", main_process_only=True)
    if grid is not None:
        loader = DeviceBatches(grid, dataset, order, first=first_batch, count=batch_count)
        if latent_cache is not None:
            latent_cache = latent_cache.to(accelerator.device)
    else:
        loader = batch_loader(dataset, order, first=first_batch, count=batch_count,
                              num_workers=args.dataloader_num_workers, uint8=args.data_on_device)
    host_sync_steps = args.host_sync_steps or (50 if accelerator.device.type == "cuda" else 1)
    monitor = LossMonitor(accelerator.gather, args.gradient_accumulation_steps, host_sync_steps)
    held_rng = np.random.RandomState(args.seed)
    held_images = to_model_input(held.get_images(held_rng.choice(len(held), args.num_validation_images, replace=False)))
    log = RunLog(log_path, accelerator) if accelerator.is_main_process else None
    images_per_step = args.train_batch_size * accelerator.num_processes * args.gradient_accumulation_steps
    deterministic = args.decoder_type == "deterministic"
    unet_config = accelerator.unwrap_model(unet).config  # the prepared U-Net may be a DDP wrapper

    def validate(step: int) -> dict:
        """EMA U-Net + encoder as a pipeline: grids and metrics (main process only)."""
        unwrapped_unet = accelerator.unwrap_model(unet)
        ema_unet.store(unwrapped_unet.parameters())
        ema_unet.copy_to(unwrapped_unet.parameters())
        pipeline = make_pipeline(accelerator.unwrap_model(encoder), unwrapped_unet, noise_scheduler, vae, latent_scale, args.guidance_scale,
                                 args.sample_prediction_from)
        pipeline.set_progress_bar_config(disable=True)
        pipeline.encoder.eval()
        out_dir = os.path.join(args.output_dir, "validation", f"step-{step:06d}")
        images = held_images.to(accelerator.device)
        if deterministic:
            paths = save_decoder_images(pipeline.encoder, lambda t: deterministic_decode(unwrapped_unet, t, vae=vae, latent_scale=latent_scale),
                                        images, out_dir)
        else:
            paths = save_validation_images(pipeline, images, out_dir, args.validation_inference_steps, args.seed)
        scores = concept_metrics(pipeline.encoder, held, metrics=metric_names, num_train=args.metric_num_train,
                                 num_eval=args.metric_num_eval)
        pipeline.encoder.train()
        ema_unet.restore(unwrapped_unet.parameters())
        record = {"event": "validation", "step": step, "images_seen": step * images_per_step,
                  "train_seconds": round(train_seconds, 3), **scores,
                  "images": {k: os.path.relpath(v, args.output_dir) for k, v in paths.items()}}
        with open(os.path.join(out_dir, "metrics.json"), "w", encoding="utf-8") as f:
            json.dump(record, f, indent=2)
        log.write(record)
        accelerator.print(f"step {step} ({train_seconds:.0f} s of training): " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        return record

    budget_s = float("inf") if args.max_train_minutes is None else 60 * args.max_train_minutes
    every_s = float("inf") if args.validation_minutes is None else 60 * args.validation_minutes
    next_validation_s = (train_seconds // every_s + 1) * every_s if args.validation_minutes else every_s
    progress = tqdm(total=args.max_train_steps, initial=global_step, desc="steps", disable=not accelerator.is_local_main_process)
    last_validation, last_checkpoint = None, None
    encoder.train()
    unet.train()
    start_time = time.time()
    tick = training_clock()  # training time runs from here; validation and checkpoints restart it
    for images, _, k in loader:
        generator = step_generator(args.seed, int(k), accelerator.process_index)
        images = memory_format(images.to(accelerator.device), args.channels_last)
        with accelerator.accumulate(encoder, unet):
            with torch.no_grad():
                if latent_cache is not None:  # the first stage's encoder never runs
                    index = torch.from_numpy(order.indices(int(k))).to(latent_cache.device, non_blocking=True)
                    clean = latent_cache.index_select(0, index).to(accelerator.device, non_blocking=True) * latent_scale
                else:
                    clean = encode_to_diffusion(vae, images, latent_scale, generator)
            # a tuple, not the output dataclass: accelerate's mixed-precision wrapper rebuilds mappings by keyword
            _, tokens = encoder(images, return_dict=False, check_inputs=False)
            tokens = objective.drop_tokens(tokens, generator)
            if deterministic:  # EncDec w/o Diff: zeros at t=0 -> the image, no noise
                loss = objective.distance(deterministic_decode(unet, tokens, unet_config), clean)
            else:
                noisy, timesteps, noise = objective.noise(clean, generator)
                tokens = objective.condition_gradients(tokens, timesteps)
                skip_dropout.generator = generator
                prediction = unet_step(memory_format(noisy, args.channels_last), timesteps, **unet_conditioning(unet_config, tokens)).sample
                loss = objective.loss(clean, noisy, timesteps, noise, prediction)
            monitor.add(loss, global_step + 1)  # checked and read back every --host_sync_steps steps
            accelerator.backward(loss)
            if accelerator.sync_gradients and args.max_grad_norm > 0:
                accelerator.clip_grad_norm_(list(encoder.parameters()) + list(unet.parameters()), args.max_grad_norm)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if not accelerator.sync_gradients:
            continue

        ema_unet.step(accelerator.unwrap_model(unet).parameters())
        global_step += 1
        train_seconds += training_clock() - tick
        # the main process's clock decides, for every process alike (they must all validate / stop together)
        validate_now, out_of_time = train_seconds >= next_validation_s, train_seconds >= budget_s
        if accelerator.num_processes > 1:  # one process needs no broadcast (and no host sync)
            decision = torch.tensor([validate_now, out_of_time], device=accelerator.device)
            validate_now, out_of_time = (bool(x) for x in broadcast(decision, from_process=0))
        lr = lr_scheduler.get_last_lr()[0]
        progress.update(1)
        last_step = out_of_time or global_step >= total_steps
        flush = (last_step or validate_now or global_step % args.checkpointing_steps == 0
                 or bool(args.validation_steps and global_step % args.validation_steps == 0))
        record = {"event": "train", "step": global_step, "loss": None, "lr": lr,
                  "images_seen": global_step * images_per_step, "epoch": order.epoch_of(int(k)),
                  "train_seconds": round(train_seconds, 3), "seconds": round(time.time() - start_time, 3)}
        for done in monitor.end_step(record, flush):
            progress.set_postfix(loss=f"{done['loss']:.4f}", lr=f"{done['lr']:.2e}")
            if log is not None:
                log.write(done)
        if global_step % args.checkpointing_steps == 0:
            save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
            last_checkpoint = global_step
        if last_step:  # the end block checkpoints first, then validates: a failing validation loses nothing
            break
        if validate_now or (args.validation_steps and global_step % args.validation_steps == 0):
            if accelerator.is_main_process:
                last_validation = validate(global_step)
            accelerator.wait_for_everyone()
            next_validation_s = (train_seconds // every_s + 1) * every_s
        tick = training_clock()
    progress.close()

    # ---- the end: a last checkpoint (to extend the run later), a last validation, the pipeline ----
    if last_checkpoint != global_step:
        save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit)
    if accelerator.is_main_process:
        if last_validation is None or last_validation["step"] != global_step:
            last_validation = validate(global_step)
        unwrapped_unet = accelerator.unwrap_model(unet)
        ema_unet.copy_to(unwrapped_unet.parameters())
        pipeline = make_pipeline(accelerator.unwrap_model(encoder), unwrapped_unet, noise_scheduler, vae, latent_scale, args.guidance_scale,
                                 args.sample_prediction_from)
        if args.generation_fidelity:
            last_validation = dict(last_validation, generation_fidelity=final_fidelity(pipeline, dataset, args))
        write_pipeline(pipeline, args, last_validation)
        if args.push_to_hub:
            push(pipeline, args, last_validation)
    accelerator.wait_for_everyone()
    accelerator.end_training()
    return args.output_dir


def build_objective(args, noise_scheduler) -> DiffusionObjective:
    """The training step's `DiffusionObjective` from the run's arguments (raises ValueError on bad ones)."""
    return DiffusionObjective(noise_scheduler, args.prediction_type, args.loss_type, args.timestep_sampling,
                              args.logsnr_mean, args.logsnr_std, args.edge_loss_weight, args.edge_weighting,
                              args.token_dropout, args.loss_weighting,
                              math.inf if args.loss_weight_cap is None else args.loss_weight_cap,
                              args.sample_prediction_from, args.token_gradient or "full")


def make_pipeline(encoder, unet, noise_scheduler, vae, latent_scale: float, guidance_scale: float = 1.0,
                  sample_prediction_from: int | None = None) -> EncDiffPipeline:
    """The inference pipeline of the current weights, sampling with DDIM on the training schedule."""
    return EncDiffPipeline(encoder=encoder, unet=unet, scheduler=DDIMScheduler.from_config(noise_scheduler.config),
                           vae=vae, latent_scale=latent_scale, guidance_scale=guidance_scale,
                           sample_prediction_from=sample_prediction_from)


def final_fidelity(pipeline: EncDiffPipeline, dataset, args) -> dict:
    """`--generation_fidelity`: the probe-read fidelity of the final pipeline on the training set (the
    grid it was drawn from), written to RUN/generation_fidelity.json."""
    from encdiff_pipeline.atomic import write_json
    from encdiff_pipeline.generation_fidelity import generation_fidelity

    pipeline.set_progress_bar_config(disable=True)
    options = {"num_inference_steps": args.validation_inference_steps, **args.fidelity_options}
    report = generation_fidelity(pipeline, dataset, **options)
    write_json(os.path.join(args.output_dir, "generation_fidelity.json"), report, indent=1)
    return report


def validation_metrics(validation: dict) -> dict[str, float]:
    """The metric values of a validation record (not its step, images seen or training time), with the
    worst-factor generation-fidelity scores when they were measured."""
    metrics = {k: v for k, v in validation.items() if isinstance(v, float) and k != "train_seconds"}
    if validation.get("generation_fidelity"):
        from encdiff_pipeline.generation_fidelity import fidelity_summary

        metrics.update({name: value for name, value in fidelity_summary(validation["generation_fidelity"]).items()
                        if value is not None})
    return metrics


def training_facts(args, validation: dict) -> dict:
    """What the model card says of this run (`encdiff_pipeline.model_card.render_model_card(training=...)`),
    as of its last validation (the end of the run)."""
    return {"script": "training/train_encdiff.py", "dataset": args.dataset,
            "recipe": args.config or f"preset {args.preset}", "beta_schedule": args.beta_schedule,
            "learning_rate": args.learning_rate, "steps": validation["step"], "images_seen": validation["images_seen"],
            "train_seconds": validation["train_seconds"], "conditioning": args.conditioning,
            "decoder_type": args.decoder_type, "metrics_step": validation["step"],
            "metrics": validation_metrics(validation), "swap_image": "swap.png",
            "fidelity_table": fidelity_table(validation)}


def fidelity_table(validation: dict) -> str | None:
    """The model card's generation-fidelity table, when `--generation_fidelity` measured it."""
    if not validation.get("generation_fidelity"):
        return None
    from encdiff_pipeline.generation_fidelity import fidelity_markdown

    return fidelity_markdown(validation["generation_fidelity"])


def card_metrics(args, validation: dict) -> dict | None:
    """The card's evaluation results: `{dataset name: {metric: value}}`, or None without metrics."""
    metrics = validation_metrics(validation)
    return {os.path.basename(os.path.normpath(args.dataset)): metrics} if metrics else None


def write_pipeline(pipeline: EncDiffPipeline, args, validation: dict) -> None:
    """Save the pipeline into output_dir (beside checkpoints and logs) with its model card and swap grid."""
    import shutil

    from encdiff_pipeline.atomic import atomic_path

    pipeline.encoder.eval()
    with atomic_path(os.path.join(args.output_dir, "swap.png"), suffix=".png") as tmp:  # never a torn grid
        shutil.copyfile(os.path.join(args.output_dir, validation["images"]["swap"]), tmp)
    pipeline.save_pretrained(args.output_dir, metrics=card_metrics(args, validation),
                             training=training_facts(args, validation))


def push(pipeline: EncDiffPipeline, args, validation: dict) -> None:
    """Upload the pipeline with its model card (the pipeline's own push), then the swap grid the card shows."""
    import huggingface_hub

    try:
        repo_id = pipeline.push_to_hub(args.hub_model_id or os.path.basename(os.path.normpath(args.output_dir)),
                                       metrics=card_metrics(args, validation),
                                       training=training_facts(args, validation))
        huggingface_hub.upload_file(path_or_fileobj=os.path.join(args.output_dir, "swap.png"), path_in_repo="swap.png",
                                    repo_id=repo_id, commit_message="Add the training run's swap grid")
    except Exception as error:  # offline, no token, no network, refused
        raise SystemExit(push_failure_message(error, args.output_dir)) from None


if __name__ == "__main__":
    run_training(main, parse_args())
