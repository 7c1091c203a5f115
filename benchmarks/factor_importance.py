#!/usr/bin/env python
"""Which concept holds which factor? DCI's importance matrix of a trained model, printed.

Encodes the held 10,000-point procedural Shapes3D sub-grid with a pipeline folder's encoder (or a
baseline's), fits DCI's per-factor gradient-boosted trees on the codes (docs/design.md §3, a fresh
`RandomState(0)`) and prints the importance matrix (codes x factors), each code's disentanglement,
each factor's completeness and per-factor test accuracy. It shows where a DCI score is lost: a
factor spread over several codes (low completeness), a code that mixes factors (low
disentanglement), or a factor no code predicts (low accuracy).

    python benchmarks/factor_importance.py benchmark_results/disentanglement/runs/encdiff/seed0
    python benchmarks/factor_importance.py benchmark_results/disentanglement/runs/beta_vae/seed0
"""
from __future__ import annotations

import argparse

import numpy as np

from encdiff_pipeline.factor_importance import analyse


def main(argv: list[str] | None = None) -> np.ndarray:
    """Print the table; returns the importance matrix (codes x factors)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("model", help="EncDiffPipeline folder, or a train_baseline.py run folder / model folder")
    p.add_argument("--image_size", type=int, default=None, help="procedural image size (default: the encoder's)")
    p.add_argument("--num_train", type=int, default=5000)
    p.add_argument("--num_test", type=int, default=2000)
    args = p.parse_args(argv)
    result = analyse(args.model, args.image_size, args.num_train, args.num_test)
    importance, names = result["importance"], result["factor_names"]
    width = max(len(n) for n in names)
    print(f"{'code':>6} " + " ".join(f"{n[:width]:>{width}}" for n in names) + f" {'D':>6} {'std':>7}")
    for i, (row, d, std) in enumerate(zip(importance, result["disentanglement"], result["std"])):
        print(f"{i:>6} " + " ".join(f"{v:>{width}.2f}" for v in row) + f" {d:>6.2f} {std:>7.3f}")
    print(f"{'C':>6} " + " ".join(f"{v:>{width}.2f}" for v in result["completeness"]))
    print(f"{'acc':>6} " + " ".join(f"{v:>{width}.2f}" for v in result["accuracy"]))
    return importance


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="factor_importance.py")
