"""Checks of a training script's numeric and path arguments, run by `parse_args` before anything is
written: each bad value ends the command with one line (argparse's `error: ...`), no traceback.

Example:
    >>> import argparse
    >>> p = argparse.ArgumentParser()
    >>> args = argparse.Namespace(max_train_steps=0)
    >>> check_training_args(p, args)  # doctest: +SKIP
    error: --max_train_steps must be >= 1, got 0 (for a time budget only, leave it out and give --max_train_minutes)
"""
from __future__ import annotations

import math
import os

# name: (minimum, maximum or None, integer?). Only arguments the script has are checked.
NUMERIC_RULES = {
    "max_train_steps": (1, None, True),
    "train_batch_size": (1, None, True),
    "gradient_accumulation_steps": (1, None, True),
    "dataloader_num_workers": (0, None, True),
    "seed": (0, 2**32 - 1, True),
    "lr_warmup_steps": (0, None, True),
    "checkpointing_steps": (1, None, True),
    "checkpoints_total_limit": (1, None, True),
    "metric_num_train": (1, None, True),
    "metric_num_eval": (1, None, True),
    "num_validation_images": (1, None, True),
    "validation_inference_steps": (1, None, True),
    "validation_steps": (1, None, True),
    "adam_weight_decay": (0.0, None, False),
    "max_grad_norm": (0.0, None, False),
    "ema_decay": (0.0, 1.0, False),
}
# strictly positive floats
POSITIVE_FLOATS = ("learning_rate", "max_train_minutes", "validation_minutes")

HINTS = {
    "max_train_steps": " (for a time budget only, leave it out and give --max_train_minutes)",
    "seed": " (numpy and torch seeds are 32-bit)",
}


def check_training_args(parser, args) -> None:
    """`parser.error` (SystemExit 2, one line) for the first argument out of range; None values are skipped."""
    for name, (low, high, integer) in NUMERIC_RULES.items():
        value = getattr(args, name, None)
        if value is None:
            continue
        if not isinstance(value, (int, float)) or (isinstance(value, float) and not math.isfinite(value)):
            parser.error(f"--{name} must be a finite number, got {value!r}")
        if integer and value != int(value):
            parser.error(f"--{name} must be an integer, got {value!r}")
        if value < low or (high is not None and value > high):
            bound = f">= {low}" if high is None else f"in [{low}, {high}]"
            parser.error(f"--{name} must be {bound}, got {value!r}{HINTS.get(name, '')}")
    for name in POSITIVE_FLOATS:
        value = getattr(args, name, None)
        if value is not None and not (isinstance(value, (int, float)) and math.isfinite(value) and value > 0):
            parser.error(f"--{name} must be a finite number > 0, got {value!r}")
    scheduler = getattr(args, "lr_scheduler", None)
    if scheduler is not None:
        from diffusers.optimization import SchedulerType

        names = [s.value for s in SchedulerType]
        if scheduler not in names:
            parser.error(f"--lr_scheduler {scheduler!r} is not a diffusers scheduler; expected one of {names}")
    check_output_dir(parser, getattr(args, "output_dir", None))
    if getattr(args, "push_to_hub", False):
        from huggingface_hub import constants

        if constants.HF_HUB_OFFLINE:
            parser.error("--push_to_hub needs the network but HF_HUB_OFFLINE is set; train without --push_to_hub "
                         "and upload the saved folder later")


def check_output_dir(parser, output_dir) -> None:
    """An output folder that is not a file and whose nearest existing parent is a folder."""
    if output_dir is None:
        return
    if not str(output_dir).strip():
        parser.error("--output_dir is empty; give a folder for the run")
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        parser.error(f"--output_dir {output_dir} is an existing file, not a folder")
    parent = os.path.dirname(os.path.abspath(output_dir))
    while parent and not os.path.exists(parent):
        parent = os.path.dirname(parent)
    if parent and not os.path.isdir(parent):
        parser.error(f"--output_dir {output_dir}: {parent} is a file, not a folder")
