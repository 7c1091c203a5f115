"""Remote code: a saved pipeline folder's `pipeline_encdiff.py` and `encoder/concept_encoder.py`,
generated from this package's source with its own imports inlined (`bundle_module_source`), so
`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` needs only torch, diffusers,
numpy and pillow. `model_index.json` names them (`"_class_name": ["pipeline_encdiff",
"EncDiffPipeline"]`, `"encoder": ["concept_encoder", "ConceptEncoderModel"]`).

Example:
    >>> from encdiff_pipeline.remote_code import bundle_module_source
    >>> source = bundle_module_source("encdiff_pipeline.pipeline_encdiff")  # self-contained module text
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import json
import os
import sys
import warnings
from pathlib import Path

from diffusers.pipelines.pipeline_loading_utils import LOADABLE_CLASSES
from diffusers.pipelines.pipeline_utils import DiffusionPipeline

from .version import __version__

PACKAGE = "encdiff_pipeline"
PIPELINE_MODULE = "encdiff_pipeline.pipeline_encdiff"
REMOTE_PIPELINE_FILE = "pipeline_encdiff"  # <folder>/pipeline_encdiff.py
MODEL_INDEX = "model_index.json"
_SHARED_NAMES = {"logger", "__all__"}  # names several bundled modules may define identically


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
    pipeline_class = next((c for c in type(pipe).__mro__ if c.__module__ == PIPELINE_MODULE), None)
    if pipeline_class is None:
        raise ValueError(f"{type(pipe).__name__} is not an EncDiffPipeline: no remote code to write for it.")
    if type(pipe) is not pipeline_class:
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
