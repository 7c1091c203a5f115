"""Crash-safe checkpoints of an accelerate run: `checkpoint-N` folders in the output directory.

`save_checkpoint` lets every process write into `checkpoint-N.tmp` with `accelerator.save_state`,
then the main process renames it to `checkpoint-N` (an atomic `os.replace`) and only then deletes
the oldest checkpoints beyond the total limit. A save killed half-way leaves a `.tmp` folder that
is never loaded (and is cleared by the next save) and the previous checkpoint intact.

Example:
    >>> save_checkpoint(accelerator, "runs/x", step=500, total_limit=3)
    'runs/x/checkpoint-500'
    >>> latest_checkpoint("runs/x")
    'runs/x/checkpoint-500'
"""
from __future__ import annotations

import json
import os
import re
import shutil

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoint folders, oldest first (`.tmp` leftovers excluded)."""
    if not os.path.isdir(output_dir):
        return []
    found = [(int(m.group(1)), name) for name in os.listdir(output_dir) if (m := _CHECKPOINT.match(name))]
    return [os.path.join(output_dir, name) for _, name in sorted(found)]


def latest_checkpoint(output_dir: str) -> str | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1] if checkpoints else None


def checkpoint_step(path: str) -> int:
    match = _CHECKPOINT.match(os.path.basename(os.path.normpath(path)))
    if match is None:
        raise ValueError(f"{path!r} is not a checkpoint folder (expected a name like 'checkpoint-500')")
    return int(match.group(1))


def save_checkpoint(accelerator, output_dir: str, step: int, total_limit: int | None = None) -> str:
    """Save the accelerator state as `output_dir/checkpoint-{step}`, atomically; keep `total_limit` newest."""
    final = os.path.join(output_dir, f"checkpoint-{step}")
    tmp = final + ".tmp"
    if accelerator.is_main_process and os.path.exists(tmp):
        shutil.rmtree(tmp)  # leftover of a save that was killed
    accelerator.wait_for_everyone()
    accelerator.save_state(tmp)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        stale = None
        if os.path.exists(final):  # same step saved before (e.g. a rerun): swap the new one in
            stale = final + ".old"
            os.replace(final, stale)
        os.replace(tmp, final)
        if stale is not None:
            shutil.rmtree(stale)
        if total_limit is not None and total_limit > 0:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def check_run_folder(output_dir: str, resume: str | None, settings: dict, identity_keys, args_file: str,
                     saved_defaults: dict | None = None) -> str | None:
    """Refuse to mix runs in one folder; return the checkpoint to resume from (None for a fresh run).

    A fresh run needs an empty or missing `output_dir`. `resume` ("latest" or a checkpoint path)
    needs a checkpoint there and the same values of `identity_keys` as saved in `args_file` (where a
    key is missing from the file, its value in `saved_defaults`).

    Raises:
        SystemExit: with a message saying what is wrong and what to do.
    """
    if resume is None:
        if os.path.isdir(output_dir) and os.listdir(output_dir):
            raise SystemExit(f"error: --output_dir {output_dir} already holds another run (or other files); "
                             "continue it with --resume_from_checkpoint latest or choose a new --output_dir")
        return None
    checkpoint = latest_checkpoint(output_dir) if resume == "latest" else resume
    if checkpoint is None or not os.path.isdir(checkpoint):
        found = [os.path.basename(c) for c in list_checkpoints(output_dir)]
        raise SystemExit(f"error: --resume_from_checkpoint {resume}: nothing to resume in {output_dir} "
                         f"(checkpoints found: {found or 'none'})")
    saved_file = os.path.join(output_dir, args_file)
    if not os.path.isfile(saved_file):
        raise SystemExit(f"error: {output_dir} has checkpoints but no {args_file}; it was not written by this script")
    with open(saved_file, encoding="utf-8") as f:
        saved = json.load(f)
    saved = {**(saved_defaults or {}), **saved}  # settings added after the run was saved: their default
    changed = {k: (saved.get(k), settings.get(k)) for k in identity_keys if saved.get(k) != settings.get(k)}
    if changed:
        raise SystemExit(f"error: cannot resume {output_dir} with different settings (saved, now): {changed}")
    return checkpoint


def write_run_settings(output_dir: str, settings: dict, args_file: str) -> None:
    """Record a run's settings (atomically) so a resume can check them."""
    os.makedirs(output_dir, exist_ok=True)
    path = os.path.join(output_dir, args_file)
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        json.dump(settings, f, indent=2, default=str)
    os.replace(path + ".tmp", path)
