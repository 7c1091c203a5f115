"""Saving, loading and publishing EncDiff pipelines (local folders and the Hugging Face Hub).

A saved pipeline folder holds what diffusers writes (`model_index.json`, one sub-folder per
component, safetensors weights) plus:

- `pipeline_encdiff.py` at the root and `encoder/concept_encoder.py`: the remote code, written by
  `remote_code.write_remote_code` (see `remote_code.py`).
- `README.md`, the model card rendered from `model_cards/encdiff.md` (see `model_card.py`).

`EncDiffPipeline.from_pretrained` does not run that folder code: it loads every component with the
installed package's classes (`load_pipeline`), after checking the weight files.

This module imports nothing of the pipeline's: the pipeline calls it (`save_pretrained`,
`from_pretrained`, `push_to_hub`) and passes itself or its class.

Example:
    >>> from encdiff_pipeline.hub import save_pipeline
    >>> save_pipeline(pipe, "encdiff-shapes3d", metrics={"shapes3d": {"mig": 0.4}})
"""
from __future__ import annotations

import inspect
import json
import os
import re
import shutil
import socket
import time
import tempfile
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin

from .atomic import apply_default_mode
from .loading_allowlist import allowed_component_class
from .noise_schedules import check_noise_schedule
from .remote_code import MODEL_INDEX, write_remote_code
from .version import __version__

WEIGHTS_NAME = "diffusion_pytorch_model"
COMPONENT_NAMES = ("encoder", "unet", "scheduler", "vae")
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}


# ---------------------------------------------------------------------------- saving
INCOMPLETE_SAVE_MARKER = ".encdiff_save_incomplete"  # in a folder while save_pretrained moves files into it


def _files_to_place(staging: Path) -> list[Path]:
    """Every file of a fully written staging folder, relative to it, `model_index.json` last."""
    files = [path.relative_to(staging) for path in staging.rglob("*") if path.is_file()]
    return sorted(files, key=lambda rel: (str(rel) == MODEL_INDEX, str(rel)))


def check_variant(variant: str | None) -> None:
    """ValueError unless `variant` is None or a plain name such as 'fp16' (it becomes part of file names:
    a path separator or '..' would lead out of the component folder)."""
    if variant is not None and not (isinstance(variant, str) and re.fullmatch(r"[A-Za-z0-9_-]+", variant)):
        raise ValueError(f"variant must be a plain name such as 'fp16' (letters, digits, '_' or '-'), got {variant!r}")


def replaced_weight_files(component: Path, variant: str | None) -> list[Path]:
    """The weight files in a component folder that a save of `variant` replaces: that variant's single
    file, its shards (`...-00001-of-00002.safetensors`) and its shard index. Other variants (and any
    other file) are not touched: variants live beside each other, as in diffusers."""
    tag = re.escape(f".{variant}") if variant else ""
    pattern = re.compile(rf"^{WEIGHTS_NAME}{tag}(?:-\d+-of-\d+)?\.safetensors$")
    index = weights_index_name(variant)
    return [path for path in component.iterdir() if path.is_file() and (pattern.match(path.name) or path.name == index)]


def check_inside(root: Path, path: Path, what: str) -> None:
    """ValueError if `path` (a component folder or file of the pipeline folder `root`) leads out of
    `root` (an absolute or '..' name, or a symbolic link to elsewhere). Files of a Hub download are
    links into the cache's `blobs/` folder, which is allowed."""
    real, real_root = path.resolve(), root.resolve()
    if real.is_relative_to(real_root):
        return
    if real_root.parent.name == "snapshots" and path.is_file() and real.is_relative_to(real_root.parent.parent / "blobs"):
        return
    raise ValueError(f"{what} {path} leads out of the pipeline folder {root} (to {real}); refusing to read or write "
                     "files outside it (replace the link by a real folder or file)")


def _check_destinations(target: Path, files: list[Path]) -> None:
    """Before anything moves: every destination is a file (or free) inside `target`, its folders real
    folders inside `target` (no link out of it), so the save cannot fail half-way on them nor write
    elsewhere."""
    for rel in files:
        destination = target / rel
        for parent in list(reversed(rel.parents))[1:]:
            folder = target / parent
            if folder.exists() or folder.is_symlink():
                check_inside(target, folder, "component folder")
                if not folder.is_dir():
                    raise NotADirectoryError(f"Cannot save into {target}: {folder} is a file, where the save needs a "
                                             "folder; move it away first (nothing was changed)")
        if destination.is_symlink():
            continue  # replaced by the new file itself (os.replace does not write through a link)
        if destination.exists() and not destination.is_file():
            raise IsADirectoryError(f"Cannot save into {target}: {destination} is a folder, where the save writes a "
                                    "file; move it away first (nothing was changed)")


def _move_into_place(staging: Path, target: Path, variant: str | None = None) -> None:
    """Move a fully written folder's files into `target`, all or nothing.

    A new `target` is the staging folder renamed. Into an existing folder, files are moved one by one
    (`model_index.json` last); each file they replace, and each stale weight file of an earlier save of
    the same variant (e.g. old shards, `replaced_weight_files`), is first moved to a backup folder
    beside `target`. If any move fails, the moves are undone in reverse, so the folder holds the old
    save again. While files move, `target` holds a marker (`INCOMPLETE_SAVE_MARKER`): a process
    killed in that window leaves the marker, and loading refuses the folder (it may mix two saves)
    instead of silently using a mix. Files this function did not write (anything the user keeps in
    `target` or its component folders, other variants' weights) are never touched.
    """
    for path in [staging, *staging.rglob("*")]:  # tempfile makes them owner-only; follow the umask
        apply_default_mode(path, directory=path.is_dir())
    if not target.exists():
        os.replace(staging, target)
        return
    recover_interrupted_save(target)  # a save killed here before: put the save it replaced back first
    files = _files_to_place(staging)
    _check_destinations(target, files)
    written = {str(rel) for rel in files}
    stale = [
        old.relative_to(target) for component in COMPONENT_NAMES
        if (target / component).is_dir() and not (target / component).is_symlink()
        for old in replaced_weight_files(target / component, variant) if str(old.relative_to(target)) not in written
    ]
    backup = Path(tempfile.mkdtemp(prefix=f".{target.name}.previous-", dir=target.parent))
    marker = target / INCOMPLETE_SAVE_MARKER
    record = {"new_files": str(staging), "replaced_files": str(backup), "pid": os.getpid(), "host": socket.gethostname(),
              "files": [str(rel) for rel in files], "stale": [str(rel) for rel in stale]}
    try:
        marker.write_text(json.dumps(record) + "\n", encoding="utf-8")
    except BaseException:  # e.g. a read-only folder: nothing was moved yet
        shutil.rmtree(backup, ignore_errors=True)
        raise
    done: list[tuple[Path, Path | None]] = []  # (path in target, where its old file went or None), once moved
    created: list[Path] = []
    try:
        for rel in stale:
            (backup / rel).parent.mkdir(parents=True, exist_ok=True)
            os.replace(target / rel, backup / rel)
            done.append((backup / rel, target / rel))  # undo: move it back
        for rel in files:
            destination = target / rel
            if not destination.parent.is_dir():
                destination.parent.mkdir(parents=True)
                created.append(destination.parent)
            saved = None
            if destination.is_file() or destination.is_symlink():
                saved = backup / rel
                saved.parent.mkdir(parents=True, exist_ok=True)
                os.replace(destination, saved)
                done.append((destination, saved))
            os.replace(staging / rel, destination)
            if saved is None:
                done.append((destination, None))
    except BaseException as error:
        _roll_back(done, created, backup, marker, error)
        raise
    marker.unlink()
    shutil.rmtree(backup, ignore_errors=True)


def _roll_back(done: list[tuple[Path, Path | None]], created: list[Path], backup: Path, marker: Path,
               error: BaseException) -> None:
    """Undo the moves of a failed save, each one even if another fails. When all are undone the folder
    holds the old save again (marker and backup removed); otherwise the marker stays (the folder may
    mix two saves) and the backup keeps the old files, and the error says where."""
    failed = []
    for path, other in reversed(done):
        try:
            if path.is_relative_to(backup) or other is not None:  # a stale file back / the old file over the new
                source, destination = (path, other) if path.is_relative_to(backup) else (other, path)
                os.replace(source, destination)
            elif path.is_file() or path.is_symlink():
                path.unlink()
        except OSError as undo_error:
            failed.append(f"{path}: {undo_error}")
    for folder in reversed(created):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if failed:  # the marker now describes moves half undone: no automatic recovery may act on it
        marker.write_text(json.dumps({"rollback_failed": failed, "replaced_files": str(backup)}) + "\n", encoding="utf-8")
        error.add_note(f"The save failed and {len(failed)} of its moves could not be undone ({failed[0]}): "
                       f"{marker.parent} may mix two saves and stays marked; the files it replaced are in {backup}.")
        return
    marker.unlink()
    shutil.rmtree(backup, ignore_errors=True)


def recover_interrupted_save(target: Path) -> bool:
    """Undo a save into `target` whose process was killed while moving files (its marker is left):
    every file it moved in goes, every file it replaced comes back from the backup, so the folder
    holds the previous save again (or, for a first save into a run folder, what was there before).
    Only when the marker's process is gone (same host) and its staging and backup folders still
    exist; returns whether it recovered. A save in progress, or a marker of unknown origin, is left
    alone (loading then refuses the folder)."""
    marker = target / INCOMPLETE_SAVE_MARKER
    try:
        record = json.loads(marker.read_text(encoding="utf-8"))
        staging, backup = Path(record["new_files"]), Path(record["replaced_files"])
        pid, files, stale = int(record["pid"]), list(record["files"]), list(record["stale"])
    except (OSError, ValueError, KeyError, TypeError):
        return False
    if record.get("host") != socket.gethostname() or not staging.is_dir() or not backup.is_dir() or _alive(pid):
        return False
    for rel in [*files, *stale]:
        if Path(rel).is_absolute() or ".." in Path(rel).parts:
            return False  # not a marker this module wrote
    for rel in reversed(files):
        old, placed = backup / rel, not (staging / rel).exists()
        if old.exists() or old.is_symlink():
            os.replace(old, target / rel)
        elif placed and ((target / rel).is_file() or (target / rel).is_symlink()):
            (target / rel).unlink()  # a new file of the killed save
    for rel in stale:
        if (backup / rel).exists():
            os.replace(backup / rel, target / rel)
    marker.unlink()
    shutil.rmtree(backup, ignore_errors=True)
    shutil.rmtree(staging, ignore_errors=True)
    warnings.warn(f"{target}: a save_pretrained into this folder was killed while moving its files (process {pid}); "
                  "the save it was replacing is restored")
    return True


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. another user's process
        return True
    return True


def save_pipeline(
    pipe: DiffusionPipeline,
    save_directory: str | os.PathLike,
    safe_serialization: bool = True,
    variant: str | None = None,
    **card_kwargs: Any,
) -> None:
    """`EncDiffPipeline.save_pretrained`: components + remote code + model card, written to a
    temporary folder next to `save_directory` and then moved into place.

    An existing `README.md` in `save_directory` is kept unless `card_kwargs` are given.
    """
    if not safe_serialization:
        raise ValueError("EncDiff pipelines are saved as safetensors only (pickle files are never written or loaded).")
    check_variant(variant)
    from .model_card import render_model_card

    card_arguments = sorted(set(inspect.signature(render_model_card).parameters) - {"pipe"})
    unknown = sorted(set(card_kwargs) - set(card_arguments))
    if unknown:
        raise TypeError(f"Unexpected arguments {unknown}: extra keywords of save_pretrained go to the model card, "
                        f"which takes {card_arguments}.")

    target = Path(save_directory).resolve()
    if target.exists() and not target.is_dir():
        raise NotADirectoryError(f"Cannot save a pipeline to {target}: it is an existing file, not a folder.")
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        DiffusionPipeline.save_pretrained(pipe, staging, safe_serialization=True, variant=variant)
        write_remote_code(pipe, staging)
        if card_kwargs or not (target / "README.md").exists():
            render_model_card(pipe, **card_kwargs).save(staging / "README.md")
        _move_into_place(staging, target, variant)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------- loading
def read_safetensors_header(path: str | os.PathLike) -> dict[str, Any]:
    """The tensor entries (name -> dtype, shape, data_offsets) of a complete safetensors file.

    Raises `FileNotFoundError` / `OSError` naming the file if it is missing, truncated or corrupt
    (including a header that is not a JSON object of tensor entries).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"Weights file {path} is missing.")
    size = path.stat().st_size
    with open(path, "rb") as handle:
        head = handle.read(8)
        header_size = int.from_bytes(head, "little") if len(head) == 8 else -1
        if header_size < 0 or 8 + header_size > size:
            raise OSError(f"Weights file {path} is truncated or corrupt: {size} bytes cannot hold its safetensors header.")
        try:
            header = json.loads(handle.read(header_size))
        except ValueError as error:
            raise OSError(f"Weights file {path} is corrupt: its safetensors header is not valid JSON.") from error
    if not isinstance(header, dict):
        raise OSError(f"Weights file {path} is corrupt: its safetensors header is a JSON {type(header).__name__}, "
                      "expected an object of tensor entries.")
    tensors = {key: value for key, value in header.items() if key != "__metadata__"}
    bad = sorted(
        key for key, value in tensors.items()
        if not (isinstance(value, dict) and isinstance(value.get("dtype"), str)
                and isinstance(value.get("data_offsets"), list) and len(value["data_offsets"]) == 2
                and all(isinstance(v, int) for v in value["data_offsets"]))
    )
    if bad:
        raise OSError(f"Weights file {path} is corrupt: header entries {bad[:5]} lack a dtype or data_offsets.")
    expected = 8 + header_size + max((value["data_offsets"][1] for value in tensors.values()), default=0)
    if size != expected:
        raise OSError(f"Weights file {path} is truncated or corrupt: expected {expected} bytes, found {size}.")
    return tensors


def check_safetensors_file(path: str | os.PathLike) -> torch.dtype | None:
    """Check that a safetensors file exists and is complete; return its (most common) float dtype.

    Raises `FileNotFoundError` / `OSError` naming the file if it is missing, truncated or corrupt.
    """
    tensors = read_safetensors_header(path)
    dtypes = Counter(_SAFETENSORS_DTYPES[v["dtype"]] for v in tensors.values() if v["dtype"] in _SAFETENSORS_DTYPES)
    return dtypes.most_common(1)[0][0] if dtypes else None


def read_model_index(folder: str | os.PathLike) -> dict[str, Any]:
    """`model_index.json` of a pipeline folder as a dict; errors name the file and what is wrong."""
    index_path = Path(folder) / MODEL_INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} is missing: {folder} is not a saved pipeline folder.")
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        detail = "nested too deeply" if isinstance(error, RecursionError) else str(error)
        raise ValueError(f"{index_path} is not valid JSON ({detail}).") from None
    if not isinstance(index, dict):
        raise ValueError(f"{index_path} holds a JSON {type(index).__name__}; expected an object "
                         '({"encoder": [library, class], "unet": [...], ...}).')
    bad_keys = [key for key in index if not key.isidentifier()]
    if bad_keys:  # a key names a component folder: '/abs/path' or '../x' would lead out of the pipeline folder
        raise ValueError(f"{index_path}: keys {bad_keys[:5]} are not component or setting names (expected names like "
                         "'encoder' or 'unet'; paths are not allowed)")
    for name in COMPONENT_NAMES:
        entry = index.get(name)
        if name in index and not (
            isinstance(entry, list) and len(entry) == 2 and all(e is None or isinstance(e, str) for e in entry)
        ):
            raise ValueError(f"{index_path}: component {name!r} must be [library, class name], got {entry!r}.")
    return index


def check_pipeline_folder(folder: str | os.PathLike, variant: str | None = None) -> dict[str, torch.dtype | None]:
    """Check a saved pipeline folder before loading; return each model component's saved dtype.

    Raises an error naming the file when `model_index.json`, a component's `config.json` or
    weights file is missing, or a weights file is truncated.
    """
    folder = Path(folder)
    index_path = folder / MODEL_INDEX
    if save_token(folder) is None and not recover_interrupted_save(folder):
        raise OSError(f"{folder}: a save_pretrained into this folder is in progress or was interrupted "
                      f"({folder / INCOMPLETE_SAVE_MARKER} is there), so it may mix two saves; load it when the save "
                      "is done, or save the pipeline into it again (or delete the folder)")
    index = read_model_index(folder)
    dtypes: dict[str, torch.dtype | None] = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        component = folder / name
        check_inside(folder, component, f"component {name!r}:")
        if (component / "scheduler_config.json").is_file():
            check_inside(folder, component / "scheduler_config.json", f"component {name!r}:")
            continue
        config = component / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{config} is missing (component {name!r} listed in {index_path}).")
        check_inside(folder, config, f"component {name!r}:")
        for shard in component_weight_files(component, variant):
            check_inside(folder, shard, f"component {name!r}:")
            dtypes[name] = check_safetensors_file(shard)
    return dtypes


def save_token(folder: Path) -> tuple | None:
    """What identifies the save a folder holds now (its `model_index.json`, replaced last by every save),
    or None while a save is moving files into it (its marker is there)."""
    if (folder / INCOMPLETE_SAVE_MARKER).exists():
        return None
    try:
        stat = (folder / MODEL_INDEX).stat()
    except OSError:
        return ("missing",)
    return (stat.st_dev, stat.st_ino, stat.st_mtime_ns, stat.st_size)


def weights_index_name(variant: str | None = None) -> str:
    """The shard index file name of a sharded save, as diffusers names it (`...safetensors.index.fp16.json`)."""
    return f"{WEIGHTS_NAME}.safetensors.index.{variant}.json" if variant else f"{WEIGHTS_NAME}.safetensors.index.json"


def component_weight_files(component: Path, variant: str | None = None) -> list[Path]:
    """The safetensors file(s) of a saved model component folder (the shards of a sharded save)."""
    weights = f"{WEIGHTS_NAME}.{variant}.safetensors" if variant else f"{WEIGHTS_NAME}.safetensors"
    shard_index = component / weights_index_name(variant)
    if not shard_index.is_file():
        return [component / weights]
    try:
        weight_map = json.loads(shard_index.read_text(encoding="utf-8"))["weight_map"]
        return [component / shard for shard in sorted(set(weight_map.values()))]
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ValueError(f"{shard_index} is not a valid shard index (a JSON object with a 'weight_map').") from error


def check_not_a_mistyped_path(path: str) -> None:
    """`FileNotFoundError` for 'runs/typo' where a local `runs/` exists: a mistyped path, not a Hub id."""
    first = path.split("/")[0]
    if "/" in path and not os.path.isdir(path) and os.path.isdir(first):
        raise FileNotFoundError(f"{path} is not a folder (the local folder {first}/ has no {path.split('/', 1)[1]!r}); "
                                f"not looking it up on the Hub. For a Hub repo, run from a folder without {first}/.")


def resolve_pretrained_folder(pretrained_model_name_or_path: str | os.PathLike, **download_kwargs: Any) -> Path:
    """A local folder as is; a Hub repo id -> its downloaded snapshot (`huggingface_hub.snapshot_download`)."""
    path = str(pretrained_model_name_or_path)
    if os.path.isdir(path):
        return Path(path)
    if os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise FileNotFoundError(f"{path} is neither a pipeline folder nor a Hub repo id ('user/name').")
    check_not_a_mistyped_path(path)

    try:
        return Path(
            huggingface_hub.snapshot_download(
                path, library_name="encdiff-pipeline", library_version=__version__, **download_kwargs
            )
        )
    except (huggingface_hub.errors.LocalEntryNotFoundError, huggingface_hub.errors.RepositoryNotFoundError,
            huggingface_hub.errors.HFValidationError) as error:
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise FileNotFoundError(f"{path} is not a local folder, and as a Hub repo id it cannot be found: "
                                f"{first_line}") from error


def _names(keys: Any, limit: int = 8) -> str:
    keys = sorted(keys)
    return ", ".join(keys[:limit]) + (f" and {len(keys) - limit} more" if len(keys) > limit else "")


def _check_component_config(component_cls: type, component: Path, files: list[Path], strict: bool = True) -> None:
    """Build the component from its config.json on the meta device (no memory) and compare its size with
    the weights: a config that cannot build the model, or that describes a model far larger than its
    weight files (a hostile edit that would exhaust memory), is a ValueError naming the file."""
    config_path = component / "config.json"
    _check_config_types(component_cls, config_path)
    try:
        config = component_cls.load_config(component)
        with torch.device("meta"):
            skeleton = component_cls.from_config(config)
    except Exception as error:  # noqa: BLE001 - any failure to build is the config's fault here
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{config_path} does not describe a valid {component_cls.__name__}: {detail}") from error
    own = skeleton.state_dict()
    expected = sum(t.numel() for t in own.values())
    held = 0
    for file in files:
        header = read_safetensors_header(file)
        for entry in header.values():
            shape = entry.get("shape") or []
            held += int(torch.Size(shape).numel()) if all(isinstance(n, int) and n >= 0 for n in shape) else 0
        not_float = sorted(f"{key} ({entry['dtype']})" for key, entry in header.items()
                           if key in own and own[key].is_floating_point() and not _is_float_dtype(entry["dtype"]))
        if not_float:  # torch would cast bool / integer tensors to float without a word: garbage weights
            message = (f"Weights file {file} stores float parameters of {component_cls.__name__} as non-floating "
                       f"tensors: {_names(not_float, 5)}; expected F32, F16, BF16 or F64 (a damaged or converted file)")
            if strict:
                raise ValueError(message + ". Pass strict=False to load it anyway.")
            warnings.warn(message)
    if expected > 2 * held + 2**20:
        raise ValueError(f"{config_path} describes a {component_cls.__name__} of {expected:,} values but its weights "
                         f"hold {held:,}; refusing to build it (an edited or mismatched config).")


def _check_config_types(component_cls: type, config_path: Path) -> None:
    """ValueError naming the file and key for a config.json that is not a JSON object, or whose value of
    an argument with an int, float or bool default is of another type (e.g. width "8")."""
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError, RecursionError) as error:
        detail = "nested too deeply" if isinstance(error, RecursionError) else str(error).splitlines()[0]
        raise ValueError(f"{config_path} is not a valid JSON file ({detail})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{config_path} holds a JSON {type(config).__name__}; expected an object of "
                         f"{component_cls.__name__} settings")
    expected = {bool: "true or false", int: "an integer", float: "a number"}
    for name, parameter in inspect.signature(component_cls.__init__).parameters.items():
        default, value = parameter.default, config.get(name)
        if name not in config or value is None or type(default) not in expected:
            continue
        fits = (isinstance(value, bool) if type(default) is bool
                else isinstance(value, int) and not isinstance(value, bool) if type(default) is int
                else isinstance(value, (int, float)) and not isinstance(value, bool))
        if not fits:
            raise ValueError(f"{config_path} does not describe a valid {component_cls.__name__}: {name} must be "
                             f"{expected[type(default)]}, got {value!r}")


def _is_float_dtype(dtype: str) -> bool:
    """Whether a safetensors dtype name is a floating-point one (F64, F32, F16, BF16, F8_*)."""
    return dtype.startswith("F") or dtype == "BF16"


def _load_model_component(
    component_cls: type, component: Path, strict: bool, torch_dtype: torch.dtype | None, variant: str | None
) -> Any:
    """Load one model component and check that its weight file(s) held exactly the model's tensors,
    all finite. `strict=False` turns these checks into warnings (missing weights are then freshly
    initialised, never left empty)."""
    files = component_weight_files(component, variant)
    where = files[0] if len(files) == 1 else component
    _check_component_config(component_cls, component, files, strict)
    try:
        model, info = component_cls.from_pretrained(
            component, torch_dtype=torch_dtype, use_safetensors=True, variant=variant, output_loading_info=True
        )
    except ValueError as error:  # e.g. diffusers' "Cannot load  because x expected shape ...": name the files
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"Weights file {where} does not fit the {component_cls.__name__} that "
                         f"{component / 'config.json'} describes: {detail.replace('Cannot load  because ', '')}") from error
    problems = []
    if info.get("missing_keys"):
        problems.append(f"missing tensors {_names(info['missing_keys'])}")
    if info.get("unexpected_keys"):
        problems.append(f"unexpected tensors {_names(info['unexpected_keys'])}")
    if info.get("mismatched_keys"):
        problems.append(f"tensors of the wrong shape {_names(k[0] for k in info['mismatched_keys'])}")
    if info.get("error_msgs"):
        problems.append("; ".join(map(str, info["error_msgs"]))[:500])
    if problems:
        message = f"Weights file {where} does not fit {component_cls.__name__}: " + "; ".join(problems) + "."
        if strict:
            raise ValueError(message + " Pass strict=False to load it anyway (missing weights freshly initialised).")
        warnings.warn(message)
        if info.get("missing_keys"):  # the loaded model holds uninitialised memory there: start from a fresh init
            from safetensors.torch import load_file

            fresh = component_cls.from_config(model.config)
            state = {}
            for file in files:
                state.update(load_file(str(file)))
            own = fresh.state_dict()
            fresh.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
            model = fresh.to(torch_dtype) if torch_dtype is not None else fresh
            model.eval()
    non_finite = [
        key for key, tensor in model.state_dict().items()
        if tensor.is_floating_point() and tensor.device.type != "meta" and not torch.isfinite(tensor).all()
    ]
    if non_finite:
        message = f"Weights file {where} holds NaN or infinite values in {_names(non_finite)}."
        if strict:
            raise ValueError(message + " Pass strict=False to load it anyway.")
        warnings.warn(message)
    return model


def load_model_folder(model_cls: type, folder: str | os.PathLike, strict: bool = True) -> Any:
    """One saved model (a first stage, a baseline) with the checks a pipeline component gets: its
    config.json builds the model, its weights are safetensors of the model's float tensors, all finite."""
    return _load_model_component(model_cls, Path(folder), strict, None, None)


def load_pipeline(cls: type, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> DiffusionPipeline:
    """`EncDiffPipeline.from_pretrained` with the installed package's classes (no remote code run).

    Keyword arguments: `torch_dtype` (or `dtype`), `variant`, components to use instead of the
    saved ones (`encoder=...`), `strict` (default True: a component of the wrong class for its
    slot, a weights file with missing, unexpected or non-finite tensors is an error naming the file
    and the tensors; `strict=False` loads with warnings), and `cache_dir`, `revision`, `token`,
    `local_files_only`, `force_download` for Hub downloads.
    """
    torch_dtype = kwargs.pop("torch_dtype", None)
    torch_dtype = kwargs.pop("dtype", None) or torch_dtype
    strict = kwargs.pop("strict", True)
    if isinstance(torch_dtype, str):
        if not isinstance(getattr(torch, torch_dtype.removeprefix("torch."), None), torch.dtype):
            raise ValueError(f"torch_dtype {torch_dtype!r} is not a torch dtype (e.g. torch.float16 or 'float16').")
        torch_dtype = getattr(torch, torch_dtype.removeprefix("torch."))
    variant = kwargs.pop("variant", None)
    check_variant(variant)
    download_keys = ("cache_dir", "revision", "token", "local_files_only", "force_download")
    download_kwargs = {key: kwargs.pop(key) for key in download_keys if key in kwargs}
    passed = {name: kwargs.pop(name) for name in COMPONENT_NAMES if name in kwargs}
    if kwargs:
        raise TypeError(f"Unexpected arguments for {cls.__name__}.from_pretrained: {sorted(kwargs)}.")

    folder = resolve_pretrained_folder(pretrained_model_name_or_path, **download_kwargs)
    for _attempt in range(LOAD_ATTEMPTS):  # a save into the folder while it is read: read it again
        token = save_token(folder)
        pipe = _load_folder(cls, folder, passed, strict, torch_dtype, variant)
        if token is not None and save_token(folder) == token:
            break
        time.sleep(0.05)
    else:
        raise OSError(f"{folder} changed while it was being loaded, {LOAD_ATTEMPTS} times (another process is saving "
                      "into it); load it again when that save is done")
    pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
    return pipe


LOAD_ATTEMPTS = 3


def _load_folder(cls: type, folder: Path, passed: dict, strict: bool, torch_dtype: torch.dtype | None,
                 variant: str | None) -> DiffusionPipeline:
    """One read of every component of a checked pipeline folder (`load_pipeline`)."""
    saved_dtypes = check_pipeline_folder(folder, variant=variant)
    index = read_model_index(folder)
    init_kwargs: dict[str, Any] = {}
    for name in inspect.signature(cls.__init__).parameters:
        if name == "self":
            continue
        if name in passed:
            init_kwargs[name] = passed[name]
        elif name in COMPONENT_NAMES and name in index:
            library, class_name = index[name]
            component_cls = allowed_component_class(name, library, class_name, where=str(folder / MODEL_INDEX))
            if component_cls is None:
                init_kwargs[name] = None
                continue
            if issubclass(component_cls, SchedulerMixin):
                init_kwargs[name] = _load_scheduler(component_cls, folder / name)
            else:
                init_kwargs[name] = _load_model_component(
                    component_cls, folder / name, strict, torch_dtype or saved_dtypes.get(name), variant
                )
        elif name in index:
            init_kwargs[name] = index[name]
    missing = [n for n in ("encoder", "unet") if n not in init_kwargs]
    if missing:
        raise ValueError(f"{folder / MODEL_INDEX} lists no {' or '.join(missing)}: not an EncDiff pipeline folder.")
    return cls(**init_kwargs)


def _load_scheduler(component_cls: type, component: Path) -> SchedulerMixin:
    """A scheduler from its folder; a config it cannot be built from, or a schedule diffusion cannot run
    on (`check_noise_schedule`), is a ValueError naming the file."""
    where = component / "scheduler_config.json"
    try:
        scheduler = component_cls.from_pretrained(component)
    except (ValueError, RuntimeError, TypeError, NotImplementedError) as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ValueError(f"{where} does not describe a valid {component_cls.__name__}: {detail}") from error
    check_noise_schedule(scheduler, str(where))
    return scheduler


# ---------------------------------------------------------------------------- Hub upload
def upload_pipeline_folder(
    folder: str | os.PathLike,
    repo_id: str,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
) -> str:
    """Create the Hub repo if needed and upload a saved pipeline folder; returns the repo id."""
    repo = huggingface_hub.create_repo(repo_id, token=token, private=private, exist_ok=True)
    repo_id = getattr(repo, "repo_id", repo_id)
    huggingface_hub.upload_folder(
        repo_id=repo_id,
        folder_path=str(folder),
        commit_message=commit_message or "Upload EncDiffPipeline",
        token=token,
        create_pr=create_pr,
    )
    return repo_id


def push_pipeline(
    pipe: DiffusionPipeline,
    repo_id: str,
    commit_message: str | None = None,
    private: bool | None = None,
    token: str | None = None,
    create_pr: bool = False,
    safe_serialization: bool = True,
    variant: str | None = None,
    **card_kwargs: Any,
) -> str:
    """`EncDiffPipeline.push_to_hub`: save to a temporary folder (with the model card) and upload it."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "pipeline"
        save_pipeline(pipe, folder, safe_serialization=safe_serialization, variant=variant, repo_id=repo_id, **card_kwargs)
        return upload_pipeline_folder(
            folder, repo_id, commit_message=commit_message, private=private, token=token, create_pr=create_pr
        )
