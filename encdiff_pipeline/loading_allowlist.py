"""Which classes a saved EncDiff folder may name: an allow-list per component slot.

`EncDiffPipeline.from_pretrained` reads `model_index.json`, which names a `[library, class]` for
every component. A hostile folder could name a class whose loading runs the folder's own Python
(for example `["transformers", "AutoModel"]` with an `auto_map` in the component's config, which
makes transformers offer to run that code). So a class is resolved only from this allow-list,
before anything named by the folder is imported:

| slot | allowed |
|---|---|
| `encoder` | this package's `ConceptEncoderModel` (recorded as `encdiff_pipeline` or as the bundled `concept_encoder` module) |
| `unet` | diffusers' `UNet2DConditionModel` |
| `scheduler` | diffusers' schedulers (`SCHEDULER_NAMES`) |
| `vae` | diffusers' `VQModel`, `AutoencoderKL`; this package's `PatchAutoencoder` (parameter-free) |

A `transformers` backbone (inside `ConceptEncoderModel`) is resolved by its `model_type` among the
architectures of the installed transformers only (`check_backbone_model_type`), and is always built
or downloaded with `trust_remote_code=False`.

Example:
    >>> from encdiff_pipeline.loading_allowlist import allowed_component_class
    >>> allowed_component_class("unet", "diffusers", "UNet2DConditionModel").__name__
    'UNet2DConditionModel'
"""
from __future__ import annotations

import importlib
import inspect
from typing import Any

from .models.concept_encoder import check_backbone_model_type, read_backbone_config  # noqa: F401 (re-exported)

PACKAGE = "encdiff_pipeline"

# diffusers' discrete-time schedulers (config-only classes: loading one reads a JSON file)
SCHEDULER_NAMES = (
    "DDIMScheduler", "DDIMInverseScheduler", "DDPMScheduler", "PNDMScheduler", "LMSDiscreteScheduler",
    "EulerDiscreteScheduler", "EulerAncestralDiscreteScheduler", "HeunDiscreteScheduler",
    "DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "DPMSolverSDEScheduler",
    "KDPM2DiscreteScheduler", "KDPM2AncestralDiscreteScheduler", "DEISMultistepScheduler",
    "UniPCMultistepScheduler", "LCMScheduler", "TCDScheduler",
)

# slot -> the allowed (library, class names) pairs: "diffusers" or this package
SLOT_ALLOWLIST: dict[str, tuple[tuple[str, tuple[str, ...]], ...]] = {
    "encoder": ((PACKAGE, ("ConceptEncoderModel",)),),
    "unet": (("diffusers", ("UNet2DConditionModel",)),),
    "scheduler": (("diffusers", SCHEDULER_NAMES),),
    "vae": (("diffusers", ("VQModel", "AutoencoderKL")), (PACKAGE, ("PatchAutoencoder",))),
}


def describe_allowed(slot: str) -> str:
    """`'diffusers.VQModel or diffusers.AutoencoderKL or ...'` for a slot (for error messages)."""
    described = []
    for library, names in SLOT_ALLOWLIST[slot]:
        if len(names) > 4:
            described.append(f"a diffusers scheduler ({', '.join(names[:3])}, ...)")
        else:
            described += [f"{library}.{name}" for name in names]
    return " or ".join(described)


def _package_model(class_name: str) -> type:
    return getattr(importlib.import_module(f"{PACKAGE}.models"), class_name)


def _library_matches(allowed_library: str, library: str, class_name: str) -> bool:
    if allowed_library == PACKAGE:  # as installed, or as saved remote code: the stem of the class's module
        stem = _package_model(class_name).__module__.rsplit(".", 1)[-1]
        return library == PACKAGE or library.startswith(PACKAGE + ".") or library == stem
    return library == allowed_library


def allowed_component_class(slot: str, library: Any, class_name: Any, where: str = "model_index.json") -> type | None:
    """The class to load component `slot` with, or None for an empty slot (`[null, null]`).

    Raises `ValueError` naming `where`, the slot and the refused `library.class` when the pair is not
    on the allow-list; nothing the folder names is imported before that check.
    """
    if library is None and class_name is None:
        return None
    if slot not in SLOT_ALLOWLIST:
        raise ValueError(f"{where}: {slot!r} is not a component slot of an EncDiff pipeline "
                         f"(expected one of {sorted(SLOT_ALLOWLIST)}).")
    allowed_library = None
    if isinstance(library, str) and isinstance(class_name, str):
        allowed_library = next((lib for lib, names in SLOT_ALLOWLIST[slot]
                                if class_name in names and _library_matches(lib, library, class_name)), None)
    if allowed_library is None:
        refused = f"{library}.{class_name}" if isinstance(library, str) and isinstance(class_name, str) else repr([library, class_name])
        raise ValueError(f"{where}: component {slot!r} names {refused}, which is not allowed for that slot "
                         f"(expected {describe_allowed(slot)}); refusing to load it. Saved EncDiff folders only "
                         "hold these classes, and no code from the folder is ever run.")
    if allowed_library == PACKAGE:
        cls = _package_model(class_name)
    else:
        cls = getattr(importlib.import_module(allowed_library), class_name, None)
    if not inspect.isclass(cls):
        raise ValueError(f"{where}: component {slot!r} names {library}.{class_name}, which the installed "
                         f"{allowed_library} does not provide.")
    return cls
