"""Does generation follow the concepts? Reconstructions, swaps and traversals read by a factor probe.

A diffusion autoencoder is used to edit images by concept: `pipe(images=...)` reconstructs,
`pipe.swap` and `pipe.traverse` change one concept. These scores say how often the generated image
shows what its concepts say, read by a `FactorProbe` (a classifier trained on the dataset's real
images, `factor_probe.py`) on held images it never trained on:

- `reconstruction[f]`: fraction of reconstructions (generated from fresh noise) read as the true
  class of factor f;
- `swap_donor[f]`: the concepts of factor f are taken from a donor image whose class of f differs;
  fraction of outputs read as the donor's class;
- `swap_kept[f]`: in the same swaps, fraction of (image, other factor) pairs read as the
  receiver's class, averaged over the other factors;
- `traversal[f]`: the concept that matters most for f is swept over its observed range (0.5 to
  99.5 percentile over the held images); the number of classes of f the row passes through in
  order (neighbouring classes, one direction), as a fraction of the factor's classes, averaged.

Concepts are matched to factors by DCI's importance matrix (gradient-boosted trees, as in DCI):
a concept belongs to the factor it matters most for; concepts with under `min_share` of the
largest concept's total importance are dead and belong to none; a factor that is no concept's
first is given the concept that matters most for it (shared with the factor it leads).

Example:
    >>> report = generation_fidelity(pipe, load_factor_dataset("procedural-shapes3d", image_size=16))  # doctest: +SKIP
    >>> report["reconstruction"]["floor_hue"], report["swap_donor"]["shape"]                           # doctest: +SKIP
"""
from __future__ import annotations

import os
from typing import Any, Optional, Sequence

import numpy as np
import torch

from .factor_probe import FactorProbe, load_factor_probe
from .image_range import to_model_input
from .metrics.dci import importance_per_factor

FIDELITY_SCORES = ("reconstruction", "swap_donor", "swap_kept", "traversal")
ROW_NAMES = {"real": "real images (probe)", "reconstruction": "reconstruction", "swap_donor": "swap: donor's class",
             "swap_kept": "swap: others kept", "traversal": "traversal: classes in order"}
SUMMARY_NAMES = {"reconstruction": "Reconstruction read (worst factor)", "swap_donor": "Swap donor's class (worst factor)",
                 "swap_kept": "Swap others kept (worst factor)", "traversal": "Traversal classes in order (worst factor)"}


def fidelity_markdown(report: dict) -> str:
    """A markdown table of a `generation_fidelity` report: one row per score, one column per factor."""
    names = list(report["real"])
    lines = ["| read by the probe | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for key in ("real",) + FIDELITY_SCORES:
        values = [report[key][n] for n in names]
        lines.append(f"| {ROW_NAMES[key]} | " + " | ".join("n/a" if v is None else f"{v:.2f}" for v in values) + " |")
    return "\n".join(lines)


def fidelity_summary(report: dict) -> dict[str, Optional[float]]:
    """Each score's worst factor ({display name: value}; None where no factor has a value)."""
    out = {}
    for key, name in SUMMARY_NAMES.items():
        values = [v for v in report[key].values() if v is not None]
        out[name] = min(values) if values else None
    return out


def assign_concepts(importance: np.ndarray, min_share: float = 0.05) -> list[list[int]]:
    """Per factor, the concepts (rows of the (codes, factors) `importance`) that matter most for it,
    most important first; concepts with under `min_share` of the largest row total belong to none. A
    factor that is no concept's first gets its most important concept, shared."""
    importance = np.abs(np.asarray(importance, dtype=np.float64))
    if importance.ndim != 2 or importance.shape[0] < 1 or importance.shape[1] < 1:
        raise ValueError(f"importance must be a (codes, factors) matrix, got shape {importance.shape}")
    totals = importance.sum(axis=1)
    alive = totals >= min_share * totals.max() if totals.max() > 0 else np.zeros(len(totals), dtype=bool)
    owner = importance.argmax(axis=1)
    owned = [sorted((int(c) for c in np.flatnonzero(alive & (owner == f))), key=lambda c: -importance[c, f])
             for f in range(importance.shape[1])]
    # a factor that leads no concept (it shares one with a factor that matters more there) gets the
    # concept that matters most for it: swapping that concept then also moves the other factor
    return [own or ([int(importance[:, f].argmax())] if importance[:, f].max() > 0 else [])
            for f, own in enumerate(owned)]


def classes_in_order(read: Sequence[int]) -> int:
    """The most classes a sequence passes through in order: the longest run of steps to a
    neighbouring class in one direction, repeats collapsed (`[0, 0, 1, 2, 5, 4]` -> 3)."""
    seq = [int(c) for i, c in enumerate(read) if i == 0 or c != read[i - 1]]
    if not seq:
        return 0
    best, run, direction = 1, 1, 0
    for a, b in zip(seq[:-1], seq[1:]):
        step = b - a
        if abs(step) == 1 and (direction == 0 or step == direction):
            run, direction = run + 1, step
        elif abs(step) == 1:
            run, direction = 2, step
        else:
            run, direction = 1, 0
        best = max(best, run)
    return best


def _generate(pipe, concepts: torch.Tensor, seed: int, batch_size: int, sampling: dict,
              latents: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Images (B, C, H, W) in [-1, 1] generated from `concepts`, from `latents` or from noise (chunk j's
    from seed + j)."""
    out = []
    for j, part in enumerate(torch.split(concepts, batch_size)):
        start = None if latents is None else latents[j * batch_size : j * batch_size + len(part)]
        images = pipe(concepts=part, generator=torch.Generator().manual_seed(seed + j), latents=start,
                      output_type="pt", **sampling).images
        out.append(images * 2 - 1)
    return torch.cat(out)


def _encode(pipe, dataset, indices: np.ndarray, batch_size: int) -> torch.Tensor:
    return torch.cat([pipe.encode(to_model_input(dataset.get_images(part)))
                      for part in np.array_split(indices, max(1, -(-len(indices) // batch_size)))])


def concept_importance(pipe, dataset, indices: np.ndarray, seed: int = 0, batch_size: int = 256) -> np.ndarray:
    """DCI's importance matrix (codes, factors) of the pipeline's concepts on `indices` (2/3 train, 1/3 test)."""
    codes = _encode(pipe, dataset, indices, batch_size).numpy()
    factors = dataset.index_to_factors(indices)
    split = 2 * len(indices) // 3
    importance, _, _ = importance_per_factor(codes[:split], factors[:split], codes[split:], factors[split:],
                                             np.random.RandomState(seed))
    return importance


def fidelity_dataset(pipeline: str, dataset: Optional[str] = None, dataset_options: Optional[dict] = None) -> tuple[str, dict]:
    """(source, options) of the dataset a run's fidelity is read on: its training set (`training_args.json`'s
    `dataset`, default procedural Shapes3D) as a whole grid at the run's image size; `dataset` and
    `dataset_options` override."""
    from .data.run_data import read_run_settings
    from .evaluation import run_dataset

    settings = read_run_settings(pipeline) if os.path.isdir(pipeline) else None
    if dataset is None:
        dataset = (settings or {}).get("dataset") or "procedural-shapes3d"
    source, options = run_dataset(pipeline, dataset=dataset)
    return source, {**options, **(dataset_options or {})}


def evaluate_generation(pipeline: str, dataset: Optional[str] = None, dataset_options: Optional[dict] = None,
                        seed: int = 0, progress: bool = True, **options: Any) -> dict:
    """`generation_fidelity` of a saved pipeline (folder or Hub id) on `fidelity_dataset(pipeline)`, with
    the probe trained (or read from its cache) for that dataset; the report also names the dataset."""
    from .data import load_factor_dataset
    from .pipeline_encdiff import EncDiffPipeline

    source, data_options = fidelity_dataset(pipeline, dataset, dataset_options)
    data = load_factor_dataset(source, **data_options)
    pipe = EncDiffPipeline.from_pretrained(pipeline)
    pipe.set_progress_bar_config(disable=True)
    probe = load_factor_probe(data, progress=progress)
    report = generation_fidelity(pipe, data, probe, seed=seed, **options)
    report["dataset"] = source
    return report


def fidelity_importance(pipe, dataset, probe: FactorProbe, seed: int = 0, num_points: int = 3000,
                        batch_size: int = 256) -> np.ndarray:
    """The importance matrix `generation_fidelity` matches concepts with by default: DCI's, on the first
    `num_points` of the probe's held points. Compute it once to score several sampling settings alike."""
    return concept_importance(pipe, dataset, probe.held[:num_points], seed, batch_size)


def generation_fidelity(
    pipe,
    dataset,
    probe: Optional[FactorProbe] = None,
    num_images: int = 256,
    num_traversals: int = 8,
    seed: int = 0,
    importance: Optional[np.ndarray] = None,
    num_importance_points: int = 3000,
    batch_size: int = 256,
    probe_cache_dir: Optional[str] = None,
    probe_options: Optional[dict] = None,
    swaps: bool = True,
    invert: bool = False,
    **sampling: Any,
) -> dict:
    """Probe-read fidelity of an `EncDiffPipeline`'s reconstructions, swaps and traversals on `dataset`.

    Args:
        pipe: the pipeline (its encoder must take the dataset's images).
        dataset: a factor dataset (a full or sub-grid with `factor_sizes`, `get_images`, `index_to_factors`).
        probe: a trained `FactorProbe`; default: `load_factor_probe(dataset, cache_dir=probe_cache_dir,
            **probe_options)` (trained once, then cached).
        num_images: held images reconstructed and, per factor, swapped.
        num_traversals: images traversed per factor.
        swaps: also swap (False: reconstructions and traversals only; the swap scores are None).
        invert: start every generation from the DDIM inversion of the receiving image (`pipe.invert`,
            with `num_inference_steps` of `sampling`) instead of fresh noise.
        seed: draws the images, donors and generation noise.
        importance: a precomputed (codes, factors) importance matrix; default: `fidelity_importance`.
        sampling: passed to every `pipe(...)` call, e.g. `num_inference_steps`, `guidance_scale`.

    Returns a JSON-ready dict: per-factor scores under `FIDELITY_SCORES` (each a {factor name: value}
    dict), `real` (the probe on the real images), `concepts_per_factor`, and the settings.
    """
    if num_images < 1 or num_traversals < 0:
        raise ValueError(f"num_images must be >= 1 and num_traversals >= 0, got {num_images}, {num_traversals}")
    if probe is None:
        probe = load_factor_probe(dataset, cache_dir=probe_cache_dir, **(probe_options or {}))
    sizes = [int(s) for s in dataset.factor_sizes]
    if list(probe.factor_sizes) != sizes:
        raise ValueError(f"probe reads factor sizes {probe.factor_sizes}, the dataset has {sizes}")
    names = [str(n) for n in getattr(dataset, "factor_names", range(len(sizes)))]
    rng = np.random.RandomState(seed)
    held = probe.held
    if importance is None:  # drawn apart from rng: the images scored are the same whether importance is given or not
        importance = fidelity_importance(pipe, dataset, probe, seed, num_importance_points, batch_size)
    owners = assign_concepts(importance)
    receivers = rng.choice(held, size=min(num_images, len(held)), replace=False)
    truth = dataset.index_to_factors(receivers)
    concepts = _encode(pipe, dataset, receivers, batch_size)
    real = probe.accuracy(to_model_input(dataset.get_images(receivers)), truth)
    latents = None
    if invert:
        steps = sampling.get("num_inference_steps", 50)
        latents = torch.cat([pipe.invert(to_model_input(dataset.get_images(part)), num_inference_steps=steps)
                             for part in np.array_split(receivers, max(1, -(-len(receivers) // batch_size)))])
    recon = probe.accuracy(_generate(pipe, concepts, seed, batch_size, sampling, latents), truth)

    held_factors = dataset.index_to_factors(held)
    swap_donor, swap_kept, traversal = np.full(len(sizes), np.nan), np.full(len(sizes), np.nan), np.full(len(sizes), np.nan)
    held_codes = _encode(pipe, dataset, held[rng.choice(len(held), min(1024, len(held)), replace=False)], batch_size)
    for f, own in enumerate(owners):
        if not own:
            continue  # no concept carries this factor: nothing to swap or traverse
        # donors: held images whose class of f differs from the receiver's
        donors = np.empty(len(receivers), dtype=np.int64)
        for i, cls in enumerate(truth[:, f]):
            candidates = np.flatnonzero(held_factors[:, f] != cls)
            donors[i] = held[rng.choice(candidates)] if len(candidates) else receivers[i]
        if swaps:
            swapped = concepts.clone()
            swapped[:, own] = _encode(pipe, dataset, donors, batch_size)[:, own]
            read = probe.predict(_generate(pipe, swapped, seed, batch_size, sampling, latents))
            swap_donor[f] = (read[:, f] == dataset.index_to_factors(donors)[:, f]).mean()
            others = [g for g in range(len(sizes)) if g != f]
            swap_kept[f] = (read[:, others] == truth[:, others]).mean() if others else np.nan
        if num_traversals:
            code = own[0]
            low, high = np.percentile(held_codes[:, code].numpy(), [0.5, 99.5])
            values = torch.linspace(float(low), float(high), max(8, 2 * sizes[f]))
            counts = []
            for i, index in enumerate(receivers[:num_traversals]):  # one noise per row, as pipe.traverse draws it
                row = pipe.traverse(to_model_input(dataset.get_images([index])), code, values=values, output_type="pt",
                                    generator=torch.Generator().manual_seed(seed + i),
                                    latents=None if latents is None else latents[i : i + 1], **sampling).images
                counts.append(classes_in_order(probe.predict(row * 2 - 1)[:, f]))
            traversal[f] = np.mean(counts) / sizes[f]

    def by_name(values) -> dict:
        return {n: (None if np.isnan(v) else round(float(v), 4)) for n, v in zip(names, values)}

    return {"real": by_name(real), "reconstruction": by_name(recon), "swap_donor": by_name(swap_donor),
            "swap_kept": by_name(swap_kept), "traversal": by_name(traversal),
            "concepts_per_factor": {n: own for n, own in zip(names, owners)},
            "num_images": int(len(receivers)), "num_traversals": int(min(num_traversals, len(concepts))), "seed": seed,
            "sampling": {k: v for k, v in sampling.items() if isinstance(v, (int, float, str, bool))}, "inverted": invert}
