#!/usr/bin/env python
"""Does a trained EncDiff pipeline generate what its concepts say? Probe-read fidelity.

A factor classifier trained on the dataset's real images (`encdiff_pipeline/factor_probe.py`,
cached per dataset and image size) reads the pipeline's reconstructions, swaps and traversals of
held images (`encdiff_pipeline/generation_fidelity.py` defines each score). Each `--variants` entry
is one sampling setting, scored in the same run on the same images and noise:

    python benchmarks/generation_fidelity.py runs/encdiff-small
    python benchmarks/generation_fidelity.py runs/encdiff-small --variants \\
        '[{"num_inference_steps": 20}, {"num_inference_steps": 50}, {"num_inference_steps": 20, "guidance_scale": 2}]'
    python benchmarks/generation_fidelity.py runs/encdiff-small --scheduler_options '{"timestep_spacing": "trailing"}'

Prints one table per variant (rows: real images, reconstruction, swap donor, swap kept, traversal;
columns: factors), writes them as JSON with `--output`, and with `--grids DIR` a labelled swap grid
(each factor's concepts taken from a donor) and traversal grid (each factor's main concept swept).
"""
from __future__ import annotations

import argparse
import json
import os
import time

from encdiff_pipeline.atomic import write_json
from encdiff_pipeline.cli import json_object_argument
from encdiff_pipeline.data import load_factor_dataset
from encdiff_pipeline.generation_fidelity import fidelity_dataset, fidelity_importance, fidelity_markdown, generation_fidelity
from encdiff_pipeline.factor_probe import load_factor_probe
from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline

def factor_grids(pipe, dataset, owners: list[list[int]], num_images: int = 8, seed: int = 0, **sampling):
    """Two labelled, upscaled grids a reader can check by eye: swaps (row 0 the images, row 1 their
    donors, then per factor the image with that factor's concepts taken from its donor) and
    traversals (per factor, image 0 with the factor's main concept swept over its observed range)."""
    import numpy as np
    import torch

    from encdiff_pipeline.image_range import to_model_input
    from encdiff_pipeline.visualization import image_grid

    rng = np.random.RandomState(seed + 1)
    names = [str(n) for n in dataset.factor_names]
    picked = rng.choice(len(dataset), 2 * num_images, replace=False)
    images, donors = (to_model_input(dataset.get_images(part)) for part in np.split(picked, 2))
    concepts, donor_concepts = pipe.encode(images), pipe.encode(donors)
    rows, labels = [(images + 1) / 2, (donors + 1) / 2], ["image", "donor"]
    for name, own in zip(names, owners):
        if own:
            swapped = concepts.clone()
            swapped[:, own] = donor_concepts[:, own]
            rows.append(pipe(concepts=swapped, generator=torch.Generator().manual_seed(seed), output_type="pt",
                             **sampling).images)
            labels.append(f"{name} from donor")
    swap = image_grid(torch.stack(rows), row_labels=labels, min_cell_size=64)
    held = pipe.encode(to_model_input(dataset.get_images(rng.choice(len(dataset), 512, replace=False))))
    rows, labels = [], []
    for name, own in zip(names, owners):
        if own:
            low, high = np.percentile(held[:, own[0]].numpy(), [0.5, 99.5])
            values = torch.linspace(float(low), float(high), num_images)
            rows.append(pipe.traverse(images[:1], own[0], values=values, output_type="pt",
                                      generator=torch.Generator().manual_seed(seed), **sampling).images)
            labels.append(f"{name} (concept {own[0]})")
    traversal = image_grid(torch.stack(rows), row_labels=labels, min_cell_size=64)
    return swap, traversal


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pipeline", help="a saved EncDiff pipeline folder (a training run's --output_dir)")
    p.add_argument("--dataset", default=None, help="factor dataset (default: the run's training set, whole grid)")
    p.add_argument("--dataset_options", type=json_object_argument, default=None, help="JSON options for load_factor_dataset")
    p.add_argument("--variants", type=json.loads, default=[{}],
                   help="JSON list of sampling settings (keyword arguments of pipe(...)), each scored")
    p.add_argument("--scheduler_options", type=json_object_argument, default={},
                   help="JSON scheduler config overrides, e.g. {\"timestep_spacing\": \"trailing\"}")
    p.add_argument("--num_images", type=int, default=256)
    p.add_argument("--num_traversals", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="JSON file for the reports")
    p.add_argument("--grids", default=None,
                   help="folder for swap_grid.png and traversal_grid.png (labelled, upscaled; first variant's sampling)")
    args = p.parse_args(argv)
    if not isinstance(args.variants, list) or not all(isinstance(v, dict) for v in args.variants) or not args.variants:
        p.error(f"--variants must be a non-empty JSON list of objects, got {args.variants!r}")

    pipe = EncDiffPipeline.from_pretrained(args.pipeline)
    pipe.set_progress_bar_config(disable=True)
    if args.scheduler_options:
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **args.scheduler_options)
    source, options = fidelity_dataset(args.pipeline, args.dataset, args.dataset_options)
    dataset = load_factor_dataset(source, **options)
    probe = load_factor_probe(dataset, progress=True)
    importance = fidelity_importance(pipe, dataset, probe, seed=args.seed)
    reports = []
    for variant in args.variants:
        start = time.perf_counter()
        settings = {"num_images": args.num_images, "num_traversals": args.num_traversals, **variant}
        report = generation_fidelity(pipe, dataset, probe, seed=args.seed, importance=importance, **settings)
        report["seconds"] = round(time.perf_counter() - start, 1)
        report["scheduler_options"] = args.scheduler_options
        reports.append(report)
        print(f"\n{args.pipeline}: {json.dumps(variant) or 'defaults'}, scheduler {json.dumps(args.scheduler_options)} "
              f"({report['num_images']} images, {report['seconds']} s)")
        print(fidelity_markdown(report))
    print("concepts per factor:", json.dumps(reports[0]["concepts_per_factor"]))
    if args.output:
        write_json(os.path.abspath(args.output), reports, indent=1)
    if args.grids:
        from encdiff_pipeline.generation_fidelity import assign_concepts

        os.makedirs(args.grids, exist_ok=True)
        sampling = {k: v for k, v in args.variants[0].items() if k not in ("num_images", "num_traversals", "swaps")}
        swap, traversal = factor_grids(pipe, dataset, assign_concepts(importance), seed=args.seed, **sampling)
        swap.save(os.path.join(args.grids, "swap_grid.png"))
        traversal.save(os.path.join(args.grids, "traversal_grid.png"))
        print(f"grids written to {args.grids}")
    return reports


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="generation_fidelity.py")
