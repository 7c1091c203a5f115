"""Which code carries which factor: the DCI importance matrix of a trained model on the held grid,
read by `benchmarks/factor_importance.py`, `benchmarks/disentanglement.py` and
`benchmarks/encdiff_variants.py`.

Example:
    >>> report = analyse("runs/small")  # doctest: +SKIP
    >>> report["importance"].shape       # (codes, factors)
"""
from __future__ import annotations

import os

import numpy as np

from .baselines import load_baseline
from .data import load_factor_dataset
from .data.run_data import HELD_GRID
from .evaluation import _encode_table, make_encode_function
from .metrics.dci import completeness_per_factor, disentanglement_per_code, importance_per_factor
from .metrics.sampling import sample_codes_and_factors
from .pipeline_encdiff import EncDiffPipeline


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
