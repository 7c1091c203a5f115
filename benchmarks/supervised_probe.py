#!/usr/bin/env python
"""Can the concept encoder's trunk read every factor at all? A supervised probe.

The `small` preset's concept encoder (same trunk and width) is trained with one classification head
per Shapes3D factor (its N outputs are the concatenated logits) on procedural Shapes3D for
`--minutes` at each `--image_sizes`, then scored on 4,000 held-out grid points never drawn for
training. If the trunk reads a factor here but EncDiff's concepts do not encode it, the
denoising objective, not the encoder or the resolution, is what stands in the way.

    python benchmarks/supervised_probe.py --minutes 3 --image_sizes 16,32

Prints one row per image size: steps, images/s and held-out accuracy per factor.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F

from encdiff_pipeline.data import load_factor_dataset
from encdiff_pipeline.models import ConceptEncoderModel
from encdiff_pipeline.image_range import to_model_input


def probe(image_size: int, minutes: float | None = None, steps: int | None = None, batch_size: int = 64, lr: float = 1e-3,
          seed: int = 0, num_test: int = 4000, width: int = 128) -> dict:
    """Train encoder + heads for `minutes` of wall time or `steps` steps; held-out accuracy per factor."""
    if (minutes is None) == (steps is None):
        raise ValueError("give exactly one of minutes and steps")
    data = load_factor_dataset("procedural-shapes3d", image_size=image_size)
    sizes = list(data.factor_sizes)
    rng = np.random.default_rng(seed)
    test = rng.choice(len(data), num_test, replace=False)
    held = np.zeros(len(data), dtype=bool)
    held[test] = True
    torch.manual_seed(seed)
    model = ConceptEncoderModel(in_channels=3, sample_size=image_size, num_concepts=sum(sizes), token_dim=2, width=width)
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr)
    to_tensor = lambda idx: to_model_input(data.get_images(idx))  # noqa: E731
    bounds = np.cumsum([0] + sizes)
    done, start = 0, time.perf_counter()
    model.train()
    while (done < steps) if steps is not None else (time.perf_counter() - start < 60 * minutes):
        idx = rng.integers(0, len(data), batch_size * 2)
        idx = idx[~held[idx]][:batch_size]  # never a held-out point
        logits = model.encode_concepts(to_tensor(idx))
        labels = torch.from_numpy(data.index_to_factors(idx)).long()
        loss = sum(F.cross_entropy(logits[:, bounds[f]:bounds[f + 1]], labels[:, f]) for f in range(len(sizes)))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        done += 1
    seconds = time.perf_counter() - start
    model.eval()
    correct = np.zeros(len(sizes))
    with torch.no_grad():
        for part in np.array_split(test, max(1, num_test // 500)):
            logits = model.encode_concepts(to_tensor(part))
            labels = data.index_to_factors(part)
            for f in range(len(sizes)):
                correct[f] += (logits[:, bounds[f]:bounds[f + 1]].argmax(1).numpy() == labels[:, f]).sum()
    return {"image_size": image_size, "steps": done, "images_per_second": done * batch_size / seconds,
            "accuracy": dict(zip([str(n) for n in data.factor_names], (correct / num_test).round(4).tolist()))}


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=3.0, help="training time per image size")
    p.add_argument("--steps", type=int, default=None,
                   help="train this many steps of 64 instead of --minutes (the same work however busy the machine)")
    p.add_argument("--image_sizes", default="16,32", help="comma list of image sides")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default=None, help="JSON file for the results")
    args = p.parse_args(argv)
    try:
        sizes = [int(s) for s in args.image_sizes.split(",") if s.strip()]
    except ValueError:
        p.error(f"--image_sizes {args.image_sizes!r}: expected a comma list of integers such as 16,32")
    if args.minutes <= 0 or (args.steps is not None and args.steps < 1) or not sizes or min(sizes) < 16:
        p.error("--minutes and --steps must be > 0 and every image size >= 16")
    results = [probe(size, None if args.steps else args.minutes, args.steps, seed=args.seed) for size in sizes]
    names = list(results[0]["accuracy"])
    print("| image size | steps | images/s | " + " | ".join(names) + " |")
    print("|---|---|---|" + "---|" * len(names))
    for r in results:
        print(f"| {r['image_size']} | {r['steps']} | {r['images_per_second']:.0f} | "
              + " | ".join(f"{r['accuracy'][n]:.2f}" for n in names) + " |")
    if args.output:
        os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
        with open(args.output, "w", encoding="utf-8") as f:
            json.dump(results, f, indent=1)
    return results


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="supervised_probe.py")
