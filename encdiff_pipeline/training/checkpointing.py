"""Crash-safe checkpoints of an accelerate run: `checkpoint-N` folders in the output directory.

`save_checkpoint` lets every process write into `checkpoint-N.tmp` with `accelerator.save_state`,
then the main process renames it to `checkpoint-N` (an atomic `os.replace`) and only then deletes
the oldest checkpoints beyond the total limit. A save killed half-way leaves a `.tmp` folder that
is never loaded (and is cleared by the next save) and the previous checkpoint intact. A save that
fails (a full disk) removes its `.tmp` folder and stops the run with a message naming the intact
previous checkpoint; a save whose models hold NaN / infinite weights (a diverged run) is refused.

`--resume_from_checkpoint latest` resumes from the newest *intact* checkpoint (`checkpoint_problem`:
complete safetensors, readable `optimizer.bin` / `scheduler.bin`, the same entries as its siblings),
skipping damaged newer ones with a warning. A folder holding only what a start that stopped before
its first checkpoint leaves does not block a new start: those leftovers are cleared with a warning.
Only a folder the script marked as its own (`RUN_MARKER`, written with the run's settings) counts,
and only files of the names the script writes (its settings, `logs/train_log.jsonl`, tensorboard
events, `validation/step-N/` images, `checkpoint-N.tmp`): a folder holding anything else is refused
and nothing in it is deleted.

Example:
    >>> save_checkpoint(accelerator, "runs/x", step=500, total_limit=3)
    'runs/x/checkpoint-500'
    >>> latest_checkpoint("runs/x")
    'runs/x/checkpoint-500'
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import sys
import zipfile

from ..atomic import swap_into_place, write_json
from ..hub import check_safetensors_file

_CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
LOCK_NAME = ".lock"
RUN_MARKER = ".encdiff_run"  # written with the settings: the folder's run files are this script's own
# the files (relative, '/'-separated) a start that stopped before its first checkpoint can leave besides
# its settings file; `_TEMP` is an atomic write's temporary name (atomic.py)
_TEMP = r"(?:/|^)\.[^/]+\.tmp[^/]*"
_START_FILES = re.compile(
    r"^(?:logs/train_log\.jsonl|logs/(?:[^/]+/)*events\.out\.tfevents\.[^/]+"
    r"|validation/step-\d+/(?:reconstruction\.png|swap\.png|metrics\.json)|checkpoint-\d+\.tmp/.+"
    rf"|(?:logs|validation/step-\d+){_TEMP})$")
_START_FOLDERS = re.compile(r"^(?:logs(?:/[^/]+)*|validation(?:/step-\d+)?|checkpoint-\d+\.tmp(?:/.+)?)$")
_OPTIONAL_ENTRIES = re.compile(r"^random_states_\d+\.pkl$")  # accelerate skips RNG states it cannot load


def _warn(message: str) -> None:
    print(f"warning: {message}", file=sys.stderr, flush=True)


def checkpoint_problem(path: str, siblings: list[str] | tuple = ()) -> str | None:
    """Why the checkpoint folder `path` cannot be resumed from, or None if it looks intact.

    Checks that it is not empty, that every model folder (a sub-folder with `config.json`) holds a
    complete safetensors file, that every `.bin` (optimizer, scheduler: torch zip archives) is
    readable, and that it has every entry its `siblings` (other checkpoints of the run) have.
    """
    if not os.path.isdir(path):
        return "it is not a folder"
    entries = set(os.listdir(path))
    if not entries:
        return "it is empty"
    expected = set()
    for sibling in siblings:
        if os.path.isdir(sibling) and sibling != path:
            expected |= {e for e in os.listdir(sibling) if not _OPTIONAL_ENTRIES.match(e)}
    missing = sorted(expected - entries)
    if missing:
        return f"it lacks {', '.join(m + ('/' if '.' not in m else '') for m in missing)} (which other checkpoints have)"
    if not any(name.endswith(".bin") for name in entries):
        return "it holds no optimizer.bin / scheduler.bin"
    for name in sorted(entries):
        full = os.path.join(path, name)
        if os.path.isdir(full):
            config = os.path.join(full, "config.json")
            try:
                with open(config, encoding="utf-8") as f:
                    json.load(f)
            except (OSError, ValueError) as error:
                return f"{name}/config.json is missing or unreadable ({error})"
            weights = os.path.join(full, "diffusion_pytorch_model.safetensors")
            try:
                check_safetensors_file(weights)
            except (OSError, ValueError) as error:
                return str(error)
        elif name.endswith(".bin"):
            try:
                with zipfile.ZipFile(full) as archive:
                    bad = archive.testzip()
            except (zipfile.BadZipFile, OSError, EOFError) as error:
                return f"{name} is truncated or corrupt ({error})"
            if bad is not None:
                return f"{name} is corrupt (member {bad})"
    return None


def intact_checkpoints(output_dir: str) -> tuple[list[str], dict[str, str]]:
    """The run's checkpoints that look intact (oldest first) and the damaged ones with the reason."""
    found = list_checkpoints(output_dir)
    intact, damaged = [], {}
    for path in found:
        problem = checkpoint_problem(path, found)
        if problem is None:
            intact.append(path)
        else:
            damaged[path] = problem
    return intact, damaged


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
    check_finite_weights(accelerator, output_dir, step)
    if accelerator.is_main_process and os.path.exists(tmp):
        shutil.rmtree(tmp)  # leftover of a save that was killed
    accelerator.wait_for_everyone()
    try:
        accelerator.save_state(tmp)
    except Exception as error:  # a full disk: safetensors / torch raise their own error types
        shutil.rmtree(tmp, ignore_errors=True)
        previous = latest_checkpoint(output_dir)
        kept = f"the previous checkpoint {previous} is intact" if previous else "no earlier checkpoint exists"
        full = "disk full? " if "space" in str(error).lower() or getattr(error, "errno", None) == 28 else ""
        raise SystemExit(f"error: saving checkpoint-{step} failed ({full}{type(error).__name__}: "
                         f"{str(error).splitlines()[0] if str(error) else ''}); {kept}. Free space and continue "
                         "with --resume_from_checkpoint latest") from None
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        swap_into_place(tmp, final)  # the same step saved before (e.g. a rerun) is replaced
        if total_limit is not None and total_limit > 0:
            for old in list_checkpoints(output_dir)[:-total_limit]:
                shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final


def check_finite_weights(accelerator, output_dir: str, step: int) -> None:
    """Refuse to checkpoint a diverged run: a FloatingPointError if a prepared model holds NaN / inf."""
    import torch

    for model in getattr(accelerator, "_models", []):
        for name, parameter in model.named_parameters():
            if not torch.isfinite(parameter.detach()).all():
                previous = latest_checkpoint(output_dir)
                raise FloatingPointError(
                    f"the weights became NaN or infinite by step {step} ({name}); checkpoint-{step} was not saved"
                    + (f" and {previous} is kept" if previous else ""))


def load_checkpoint(accelerator, checkpoint: str) -> None:
    """`accelerator.load_state`, with a one-line message (naming the checkpoint) when it cannot be loaded."""
    try:
        accelerator.load_state(checkpoint)
    except Exception as error:
        others = [os.path.basename(c) for c in list_checkpoints(os.path.dirname(os.path.abspath(checkpoint)))
                  if os.path.abspath(c) != os.path.abspath(checkpoint)]
        first = str(error).strip().splitlines()[0] if str(error).strip() else ""
        raise SystemExit(f"error: cannot resume from {checkpoint} ({type(error).__name__}: {first}); other "
                         f"checkpoints: {others or 'none'} (pass one to --resume_from_checkpoint)") from None


class RunLock:
    """An exclusive lock on a run folder (`<output_dir>/.lock`, `fcntl.flock`): a second training into
    the same folder stops with a message. A context manager: leaving the block releases it (the kernel
    releases it anyway when the process ends); a folder this lock created and that holds nothing else
    is removed on release."""

    def __init__(self, output_dir: str):
        self.output_dir = output_dir
        self.created = not os.path.exists(output_dir)
        os.makedirs(output_dir, exist_ok=True)
        self.path = os.path.join(output_dir, LOCK_NAME)
        self.handle = open(self.path, "a+", encoding="utf-8")
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self.handle.seek(0)
            holder = self.handle.read().strip() or "another process"
            self.handle.close()
            raise SystemExit(f"error: another training is running in --output_dir {output_dir} ({holder} holds "
                             f"{self.path}); wait for it to finish or choose another --output_dir") from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(f"pid {os.getpid()}\n")
        self.handle.flush()

    def __enter__(self) -> "RunLock":
        return self

    def __exit__(self, *exc_info) -> None:
        self.release()

    def release(self) -> None:
        if self.handle.closed:
            return
        if self.created and set(os.listdir(self.output_dir)) <= {LOCK_NAME}:
            _remove(self.path)
            try:
                os.rmdir(self.output_dir)
            except OSError:
                pass
        self.handle.close()


def lock_run_folder(accelerator, output_dir: str) -> RunLock | contextlib.nullcontext:
    """Lock `output_dir` for this run (main process only), for a `with` block; SystemExit if another
    run holds it."""
    return RunLock(output_dir) if accelerator.is_main_process else contextlib.nullcontext()


def is_divergence(error: BaseException) -> bool:
    """Whether an error is the symptom of diverged weights (NaN / inf loss, concepts or images)."""
    text = str(error).lower()  # the encoder's and the pipeline's checks: "... contain NaN or infinite values"
    return isinstance(error, FloatingPointError) or (isinstance(error, ValueError) and "contain nan or infinite" in text)


def run_training(main, args):
    """Run a training script's `main(args)`; a diverged run ends with one line naming the last good
    checkpoint, any other error with one line `script: error: ...` (`encdiff_pipeline.cli`), not a
    traceback (`ENCDIFF_TRACEBACK=1` shows it)."""
    from encdiff_pipeline.cli import fail_in_one_line

    try:
        return main(args)
    except KeyboardInterrupt:
        raise
    except (FloatingPointError, ValueError) as error:
        if not is_divergence(error):
            fail_in_one_line(error)
        intact, _ = intact_checkpoints(args.output_dir)
        kept = (f"the last good checkpoint is {intact[-1]}" if intact else "no checkpoint was saved")
        lr = getattr(args, "learning_rate", None)
        raise SystemExit(f"error: training diverged: {error}. {kept[0].upper() + kept[1:]}; lower --learning_rate"
                         + (f" (now {lr})" if lr is not None else "") + " and start a new --output_dir") from None
    except Exception as error:  # noqa: BLE001 - the scripts' error boundary
        fail_in_one_line(error)


def check_run_folder(output_dir: str, resume: str | None, settings: dict, identity_keys, args_file: str) -> str | None:
    """Refuse to mix runs in one folder; return the checkpoint to resume from (None for a fresh run).

    A fresh run needs an empty or missing `output_dir`. `resume` ("latest" or a checkpoint path)
    needs a checkpoint there and the same values of `identity_keys` as saved in `args_file`.

    Raises:
        SystemExit: with a message saying what is wrong and what to do.
    """
    if os.path.exists(output_dir) and not os.path.isdir(output_dir):
        raise SystemExit(f"error: --output_dir {output_dir} is an existing file, not a folder")
    if resume is None:
        entries = set(os.listdir(output_dir)) if os.path.isdir(output_dir) else set()
        if entries - {LOCK_NAME}:
            _clear_failed_start(output_dir, args_file)
        return None
    _restore_interrupted_swaps(output_dir)
    intact, damaged = intact_checkpoints(output_dir)
    found = [os.path.basename(c) for c in list_checkpoints(output_dir)]
    if resume == "latest":
        checkpoint = intact[-1] if intact else None
        for path, problem in damaged.items():
            if checkpoint is None or checkpoint_step(path) > checkpoint_step(checkpoint):
                _warn(f"skipping {path}: {problem}")
        if checkpoint is None:
            hint = (" (the start stopped before its first checkpoint: run the command without "
                    "--resume_from_checkpoint to start over)" if not found else "")
            raise SystemExit(f"error: --resume_from_checkpoint {resume}: nothing to resume in {output_dir} "
                             f"(no intact checkpoint; checkpoints found: {found or 'none'}){hint}")
        if damaged and any(checkpoint_step(p) > checkpoint_step(checkpoint) for p in damaged):
            _warn(f"resuming from {checkpoint}, the newest intact checkpoint")
    else:
        checkpoint = resume
        if not os.path.isdir(checkpoint):
            raise SystemExit(f"error: --resume_from_checkpoint {resume}: nothing to resume in {output_dir} "
                             f"(checkpoints found: {found or 'none'})")
        if checkpoint in damaged:
            raise SystemExit(f"error: --resume_from_checkpoint {resume}: {damaged[checkpoint]}; intact checkpoints: "
                             f"{[os.path.basename(c) for c in intact] or 'none'}")
    saved_file = os.path.join(output_dir, args_file)
    if not os.path.isfile(saved_file):
        raise SystemExit(f"error: {output_dir} has checkpoints but no {args_file}; it was not written by this script")
    try:
        with open(saved_file, encoding="utf-8") as f:
            saved = json.load(f)
        if not isinstance(saved, dict):
            raise ValueError(f"a JSON {type(saved).__name__}, not an object")
    except (ValueError, UnicodeDecodeError) as error:
        raise SystemExit(f"error: {saved_file} is corrupt ({error}); it records the run's settings: restore it "
                         "(e.g. from a backup) or start a new --output_dir") from None
    changed = {k: (saved.get(k), settings.get(k)) for k in identity_keys if saved.get(k) != settings.get(k)}
    if changed:
        raise SystemExit(f"error: cannot resume {output_dir} with different settings (saved, now): {changed}")
    return checkpoint


def _restore_interrupted_swaps(output_dir: str) -> None:
    """A re-save of checkpoint-N moves the old one to `checkpoint-N.old` before renaming the new one in
    (`atomic.swap_into_place`); a process killed between the two renames leaves only `.old`: put that
    complete checkpoint back under its name, so `latest` finds it."""
    for name in sorted(os.listdir(output_dir)):
        match = re.match(r"^(checkpoint-\d+)\.old$", name)
        if match and not os.path.exists(os.path.join(output_dir, match.group(1))):
            try:
                os.replace(os.path.join(output_dir, name), os.path.join(output_dir, match.group(1)))
            except FileNotFoundError:  # another process of the run restored it first
                continue
            _warn(f"restored {match.group(1)} from {name} (a save of it was killed between its two renames)")


def _remove(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def _start_leftovers(output_dir: str, args_file: str) -> tuple[list[str], list[str]]:
    """The entries of `output_dir` (relative paths) that a start of this script writes before its first
    checkpoint, and all others (a user's files, another run's)."""
    own_top = {LOCK_NAME, RUN_MARKER, args_file, args_file + ".tmp"}
    own, foreign = [], []
    for root, folders, files in os.walk(output_dir):
        rel_root = os.path.relpath(root, output_dir).replace(os.sep, "/")
        for name in folders + files:
            rel = name if rel_root == "." else f"{rel_root}/{name}"
            full = os.path.join(root, name)
            if name in folders and os.path.islink(full):
                folders.remove(name)  # never followed: a link is not this script's
                foreign.append(rel)
            elif name in folders:
                (own if _START_FOLDERS.match(rel) else foreign).append(rel)
            elif rel in own_top or re.fullmatch(rf"\.{re.escape(args_file)}\.[^/]+\.tmp", rel) or _START_FILES.match(rel):
                own.append(rel)
            else:
                foreign.append(rel)
    return own, foreign


def _clear_failed_start(output_dir: str, args_file: str) -> None:
    """Clear the leftovers of this script's start that stopped before its first checkpoint, or refuse
    (SystemExit, nothing deleted) a folder holding anything else."""
    entries = set(os.listdir(output_dir))
    if not os.path.isfile(os.path.join(output_dir, RUN_MARKER)) or any(_CHECKPOINT.match(e) for e in entries):
        raise SystemExit(f"error: --output_dir {output_dir} already holds another run (or other files: "
                         f"{_names(sorted(entries - {LOCK_NAME}))}); continue it with --resume_from_checkpoint latest "
                         "or choose a new --output_dir (nothing in it was changed)")
    own, foreign = _start_leftovers(output_dir, args_file)
    if foreign:
        raise SystemExit(f"error: --output_dir {output_dir} holds the leftovers of a start that stopped before its first "
                         f"checkpoint, but also files this script did not write ({_names(foreign)}); move them out or "
                         "choose a new --output_dir (nothing in it was changed)")
    leftovers = sorted(entries - {LOCK_NAME})
    _warn(f"{output_dir} holds only the leftovers of a start that stopped before its first checkpoint "
          f"({', '.join(leftovers)}); clearing them and starting afresh")
    for name in leftovers:
        full = os.path.join(output_dir, name)
        shutil.rmtree(full, ignore_errors=True) if os.path.isdir(full) else _remove(full)


def _names(paths: list[str], limit: int = 5) -> str:
    return ", ".join(paths[:limit]) + (f" and {len(paths) - limit} more" if len(paths) > limit else "")


def write_run_settings(output_dir: str, settings: dict, args_file: str) -> None:
    """Record a run's settings (atomically) so a resume can check them, and mark the folder as this
    script's run (`RUN_MARKER`), before it writes anything else there."""
    write_json(os.path.join(output_dir, RUN_MARKER), {"run_folder_of": args_file, "pid": os.getpid()})
    write_json(os.path.join(output_dir, args_file), settings, indent=2, default=str)
