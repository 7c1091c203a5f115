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
import os
import sys

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, "training"))

from encdiff_pipeline.baselines import load_baseline  # noqa: E402
from encdiff_pipeline.data import load_factor_dataset  # noqa: E402
from encdiff_pipeline.data.run_data import HELD_GRID  # noqa: E402
from encdiff_pipeline.evaluation import _encode_table, make_encode_function  # noqa: E402
from encdiff_pipeline.metrics.dci import completeness_per_factor, disentanglement_per_code, importance_per_factor  # noqa: E402
from encdiff_pipeline.metrics.sampling import sample_codes_and_factors  # noqa: E402
from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline  # noqa: E402


def analyse(model_path: str, image_size: int | None = None, num_train: int = 5000, num_test: int = 2000) -> dict:
    """The importance matrix (codes x factors) of a trained model on the held grid, with each code's
    disentanglement and std, each factor's completeness and held-out accuracy, and the factor names."""
    if os.path.isfile(os.path.join(model_path, "model_index.json")):  # an EncDiff pipeline
        model = EncDiffPipeline.from_pretrained(model_path)
        size = model.encoder.config.sample_size
    else:  # a baseline run folder (train_baseline.py writes the model to RUN/model) or a model folder
        folder = os.path.join(model_path, "model") if os.path.isdir(os.path.join(model_path, "model")) else model_path
        model = load_baseline(folder)
        size = model.config.sample_size
    encode, _ = make_encode_function(model)
    dataset = load_factor_dataset("procedural-shapes3d", image_size=image_size or size, factor_sizes=HELD_GRID)
    table = _encode_table(dataset, encode, batch_size=256, progress=False)
    rs = np.random.RandomState(0)
    x_train, y_train = sample_codes_and_factors(dataset, table, num_train, rs, 16)
    x_test, y_test = sample_codes_and_factors(dataset, table, num_test, rs, 16)
    importance, _, accuracy = importance_per_factor(x_train, y_train, x_test, y_test, rs)
    return {"importance": importance, "disentanglement": disentanglement_per_code(importance), "std": table.std(axis=0),
            "completeness": completeness_per_factor(importance), "accuracy": np.asarray(accuracy),
            "factor_names": [str(n) for n in getattr(dataset, "factor_names", range(importance.shape[1]))]}


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
