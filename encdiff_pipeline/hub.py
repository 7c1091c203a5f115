"""Saving, loading and publishing EncDiff pipelines (local folders and the Hugging Face Hub).

A saved pipeline folder holds what diffusers writes (`model_index.json`, one sub-folder per
component, safetensors weights) plus:

- `pipeline_encdiff.py` at the root and `encoder/concept_encoder.py`: the pipeline and encoder code,
  generated from this package's source by `bundle_module_source` (its own imports inlined, so the
  files need only torch, diffusers, numpy and pillow). `model_index.json` names them
  (`"_class_name": ["pipeline_encdiff", "EncDiffPipeline"]`, `"encoder": ["concept_encoder",
  "ConceptEncoderModel"]`), which is how diffusers finds custom code under `trust_remote_code=True`.
- `README.md`, the model card rendered from `model_cards/encdiff.md` (see `model_card.py`).

`EncDiffPipeline.from_pretrained` does not run that folder code: it loads every component with the
installed package's classes (`load_pipeline`), after checking the weight files.

Example:
    >>> from encdiff_pipeline.hub import bundle_module_source
    >>> source = bundle_module_source("encdiff_pipeline.pipeline_encdiff")  # self-contained module text
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import os
import shutil
import sys
import tempfile
import uuid
import warnings
from collections import Counter
from pathlib import Path
from typing import Any

import huggingface_hub
import torch
from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin

PACKAGE = "encdiff_pipeline"
PIPELINE_MODULE = "encdiff_pipeline.pipeline_encdiff"
REMOTE_PIPELINE_FILE = "pipeline_encdiff"  # <folder>/pipeline_encdiff.py
MODEL_INDEX = "model_index.json"
WEIGHTS_NAME = "diffusion_pytorch_model"
COMPONENT_NAMES = ("encoder", "unet", "scheduler", "vae")
_SAFETENSORS_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16}
_SHARED_NAMES = {"logger", "__all__"}  # names several bundled modules may define identically


# ---------------------------------------------------------------------------- remote code
def _top_level_names(tree: ast.Module) -> set[str]:
    names: set[str] = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
    return names


def _defining_module(target: str, name: str, where: str) -> str:
    """The package module that defines `name`, imported in `where` as `from target import name`."""
    module = importlib.import_module(target)
    if not hasattr(module, name):
        raise ImportError(f"{where}: {target} has no attribute {name!r}.")
    obj = getattr(module, name)
    if inspect.ismodule(obj):
        raise ValueError(f"{where}: cannot bundle `from {target} import {name}` (a module); import the names you use.")
    defining = getattr(obj, "__module__", None) if (inspect.isclass(obj) or inspect.isfunction(obj)) else None
    if defining and defining.split(".")[0] == PACKAGE:
        return defining
    for candidate in [target] + sorted(m for m in list(sys.modules) if m.startswith(target + ".")):
        source_file = getattr(sys.modules.get(candidate), "__file__", None)
        if source_file and name in _top_level_names(ast.parse(Path(source_file).read_text(encoding="utf-8"))):
            return candidate
    raise ValueError(f"{where}: cannot find the module of this package that defines {name!r}.")


def bundle_module_source(module_name: str) -> str:
    """Return the source of a package module with its package imports inlined (a standalone file).

    Module-level `from encdiff_pipeline... import name` / `from .x import name` statements are
    removed and the defining modules are prepended (dependencies first, each once). Imports inside
    functions are left alone. Raises `ValueError` for what cannot be bundled faithfully (`import
    encdiff_pipeline.x`, star imports, module imports, two modules defining the same name).

    Example:
        >>> text = bundle_module_source("encdiff_pipeline.models.concept_encoder")
    """
    order: list[str] = []
    bodies: dict[str, str] = {}
    future: set[str] = set()
    defined_in: dict[str, str] = {}

    def visit(name: str, stack: tuple[str, ...]) -> None:
        if name in bodies:
            return
        if name in stack:
            raise ValueError(f"Circular package imports cannot be bundled: {' -> '.join(stack + (name,))}.")
        module = importlib.import_module(name)
        path = Path(inspect.getsourcefile(module))
        text = path.read_text(encoding="utf-8")
        tree = ast.parse(text)
        for defined in _top_level_names(tree) - _SHARED_NAMES:
            if defined in defined_in:
                raise ValueError(f"Cannot bundle {name}: {defined!r} is also defined in {defined_in[defined]}.")
            defined_in[defined] = name
        edits: list[tuple[ast.stmt, str]] = []
        dependencies: list[str] = []
        for node in tree.body:
            where = f"{path}:{getattr(node, 'lineno', '?')}"
            if isinstance(node, ast.Import) and any(a.name.split(".")[0] == PACKAGE for a in node.names):
                raise ValueError(f"{where}: `import {PACKAGE}...` cannot be bundled; use `from ... import name`.")
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.module == "__future__":
                future.update(alias.name for alias in node.names)
                edits.append((node, ""))
                continue
            target = (
                importlib.util.resolve_name("." * node.level + (node.module or ""), module.__package__)
                if node.level
                else node.module
            )
            if target.split(".")[0] != PACKAGE:
                continue
            aliases = []
            for alias in node.names:
                if alias.name == "*":
                    raise ValueError(f"{where}: star imports cannot be bundled.")
                dependencies.append(_defining_module(target, alias.name, where))
                if alias.asname and alias.asname != alias.name:
                    aliases.append(f"{alias.asname} = {alias.name}\n")
            edits.append((node, "".join(aliases)))
        for dependency in dependencies:
            visit(dependency, stack + (name,))
        lines = text.splitlines(keepends=True)
        for node, replacement in sorted(edits, key=lambda edit: -edit[0].lineno):
            lines[node.lineno - 1 : node.end_lineno] = [replacement] if replacement else []
        bodies[name] = "".join(lines)
        order.append(name)

    visit(module_name, ())
    from . import __version__

    parts = [
        f"# Generated by encdiff-pipeline {__version__} from {', '.join(order)}.\n"
        "# Do not edit: it is rewritten by `EncDiffPipeline.save_pretrained`. Needs torch, diffusers, numpy, pillow.\n"
    ]
    if future:
        parts.append(f"from __future__ import {', '.join(sorted(future))}\n")
    for name in order:
        parts.append(f"\n# ---- {name} " + "-" * max(0, 80 - len(name)) + "\n" + bodies[name])
    source = "".join(parts)
    compile(source, f"<bundle of {module_name}>", "exec")
    return source


def _package_class(class_name: str) -> type:
    """The class `class_name` from this package's models (how custom components are named)."""
    models = importlib.import_module(f"{PACKAGE}.models")
    cls = getattr(models, class_name, None)
    if not inspect.isclass(cls):
        raise ValueError(
            f"{class_name} is not a model class of {PACKAGE}.models, so it cannot be saved as remote code or loaded."
        )
    return cls


def write_remote_code(pipe: DiffusionPipeline, folder: str | os.PathLike) -> None:
    """Write `pipeline_encdiff.py` and each custom component's module into a saved pipeline folder
    and point `model_index.json` at them, so `trust_remote_code=True` loading needs no package."""
    folder = Path(folder)
    index_path = folder / MODEL_INDEX
    index = json.loads(index_path.read_text(encoding="utf-8"))
    (folder / f"{REMOTE_PIPELINE_FILE}.py").write_text(bundle_module_source(PIPELINE_MODULE), encoding="utf-8")
    pipeline_class = importlib.import_module(PIPELINE_MODULE).EncDiffPipeline
    if type(pipe).__name__ != pipeline_class.__name__:
        warnings.warn(f"{type(pipe).__name__} is saved with {pipeline_class.__name__} as its remote code.")
    index["_class_name"] = [REMOTE_PIPELINE_FILE, pipeline_class.__name__]
    index.pop("_name_or_path", None)  # where it was loaded from: a local path, not for the Hub
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] is None or entry[0] in LOADABLE_CLASSES:
            continue
        module_name = _package_class(entry[1]).__module__
        stem = module_name.rsplit(".", 1)[-1]
        (folder / name / f"{stem}.py").write_text(bundle_module_source(module_name), encoding="utf-8")
        index[name] = [stem, entry[1]]
    index_path.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# ---------------------------------------------------------------------------- saving
def _move_into_place(staging: Path, target: Path) -> None:
    """Move a fully written folder's entries into `target` (files by atomic rename, folders by
    rename-aside-then-rename), `model_index.json` last; other files already in `target` are kept."""
    if not target.exists():
        os.replace(staging, target)
        return
    for entry in sorted(staging.iterdir(), key=lambda p: p.name == MODEL_INDEX):
        destination = target / entry.name
        if entry.is_dir() and destination.exists():
            aside = target.parent / f".{target.name}.old-{entry.name}-{uuid.uuid4().hex[:8]}"
            os.replace(destination, aside)
            os.replace(entry, destination)
            shutil.rmtree(aside, ignore_errors=True)
        else:
            os.replace(entry, destination)


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
    from .model_card import render_model_card

    card_arguments = sorted(set(inspect.signature(render_model_card).parameters) - {"pipe"})
    unknown = sorted(set(card_kwargs) - set(card_arguments))
    if unknown:
        raise TypeError(f"Unexpected arguments {unknown}: extra keywords of save_pretrained go to the model card, "
                        f"which takes {card_arguments}.")

    target = Path(save_directory).resolve()
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    try:
        DiffusionPipeline.save_pretrained(pipe, staging, safe_serialization=True, variant=variant)
        write_remote_code(pipe, staging)
        if card_kwargs or not (target / "README.md").exists():
            render_model_card(pipe, **card_kwargs).save(staging / "README.md")
        _move_into_place(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


# ---------------------------------------------------------------------------- loading
def check_safetensors_file(path: str | os.PathLike) -> torch.dtype | None:
    """Check that a safetensors file exists and is complete; return its (most common) float dtype.

    Raises `FileNotFoundError` / `OSError` naming the file if it is missing, truncated or corrupt.
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
    tensors = {key: value for key, value in header.items() if key != "__metadata__"}
    expected = 8 + header_size + max((value["data_offsets"][1] for value in tensors.values()), default=0)
    if size != expected:
        raise OSError(f"Weights file {path} is truncated or corrupt: expected {expected} bytes, found {size}.")
    dtypes = Counter(_SAFETENSORS_DTYPES[v["dtype"]] for v in tensors.values() if v["dtype"] in _SAFETENSORS_DTYPES)
    return dtypes.most_common(1)[0][0] if dtypes else None


def check_pipeline_folder(folder: str | os.PathLike, variant: str | None = None) -> dict[str, torch.dtype | None]:
    """Check a saved pipeline folder before loading; return each model component's saved dtype.

    Raises an error naming the file when `model_index.json`, a component's `config.json` or
    weights file is missing, or a weights file is truncated.
    """
    folder = Path(folder)
    index_path = folder / MODEL_INDEX
    if not index_path.is_file():
        raise FileNotFoundError(f"{index_path} is missing: {folder} is not a saved pipeline folder.")
    index = json.loads(index_path.read_text(encoding="utf-8"))
    dtypes: dict[str, torch.dtype | None] = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] is None:
            continue
        component = folder / name
        if (component / "scheduler_config.json").is_file():
            continue
        config = component / "config.json"
        if not config.is_file():
            raise FileNotFoundError(f"{config} is missing (component {name!r} listed in {index_path}).")
        weights = f"{WEIGHTS_NAME}.{variant}.safetensors" if variant else f"{WEIGHTS_NAME}.safetensors"
        shard_index = component / f"{weights}.index.json"
        if shard_index.is_file():
            shards = sorted(set(json.loads(shard_index.read_text(encoding="utf-8"))["weight_map"].values()))
        else:
            shards = [weights]
        for shard in shards:
            dtypes[name] = check_safetensors_file(component / shard)
    return dtypes


def resolve_pretrained_folder(pretrained_model_name_or_path: str | os.PathLike, **download_kwargs: Any) -> Path:
    """A local folder as is; a Hub repo id -> its downloaded snapshot (`huggingface_hub.snapshot_download`)."""
    path = str(pretrained_model_name_or_path)
    if os.path.isdir(path):
        return Path(path)
    if os.path.exists(path) or path.startswith((".", "/", "~")) or path.count("/") > 1:
        raise FileNotFoundError(f"{path} is neither a pipeline folder nor a Hub repo id ('user/name').")
    from . import __version__

    return Path(
        huggingface_hub.snapshot_download(
            path, library_name="encdiff-pipeline", library_version=__version__, **download_kwargs
        )
    )


def _component_class(library: str, class_name: str) -> type:
    if library in LOADABLE_CLASSES:
        cls = getattr(importlib.import_module(library), class_name, None)
        if cls is None:
            raise ValueError(f"{library} has no class {class_name} (named in {MODEL_INDEX}).")
        return cls
    return _package_class(class_name)  # our own components, whatever module path was recorded


def load_pipeline(cls: type, pretrained_model_name_or_path: str | os.PathLike, **kwargs: Any) -> DiffusionPipeline:
    """`EncDiffPipeline.from_pretrained` with the installed package's classes (no remote code run).

    Keyword arguments: `torch_dtype` (or `dtype`), `variant`, components to use instead of the
    saved ones (`encoder=...`), and `cache_dir`, `revision`, `token`, `local_files_only`,
    `force_download` for Hub downloads.
    """
    torch_dtype = kwargs.pop("torch_dtype", None)
    torch_dtype = kwargs.pop("dtype", None) or torch_dtype
    variant = kwargs.pop("variant", None)
    download_keys = ("cache_dir", "revision", "token", "local_files_only", "force_download")
    download_kwargs = {key: kwargs.pop(key) for key in download_keys if key in kwargs}
    passed = {name: kwargs.pop(name) for name in COMPONENT_NAMES if name in kwargs}
    if kwargs:
        raise TypeError(f"Unexpected arguments for {cls.__name__}.from_pretrained: {sorted(kwargs)}.")

    folder = resolve_pretrained_folder(pretrained_model_name_or_path, **download_kwargs)
    saved_dtypes = check_pipeline_folder(folder, variant=variant)
    index = json.loads((folder / MODEL_INDEX).read_text(encoding="utf-8"))
    init_kwargs: dict[str, Any] = {}
    for name in inspect.signature(cls.__init__).parameters:
        if name == "self":
            continue
        if name in passed:
            init_kwargs[name] = passed[name]
        elif name in COMPONENT_NAMES and name in index:
            library, class_name = index[name]
            if library is None:
                init_kwargs[name] = None
                continue
            component_cls = _component_class(library, class_name)
            if issubclass(component_cls, SchedulerMixin):
                init_kwargs[name] = component_cls.from_pretrained(folder / name)
            else:
                init_kwargs[name] = component_cls.from_pretrained(
                    folder / name,
                    torch_dtype=torch_dtype or saved_dtypes.get(name),
                    use_safetensors=True,
                    variant=variant,
                )
        elif name in index:
            init_kwargs[name] = index[name]
    pipe = cls(**init_kwargs)
    pipe.register_to_config(_name_or_path=str(pretrained_model_name_or_path))
    return pipe


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
