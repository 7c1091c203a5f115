"""What a training run checks every K steps: image grids, disentanglement metrics, a JSON-lines log.

- `save_validation_images`: the reconstruction grid (originals over their reconstructions) and the
  paper's swap grid (row k: every image given image 0's value of concept k) as PNG.
- `concept_metrics`: encode every image of a held factor dataset once (a representation table),
  then FactorVAE / DCI / MIG from `encdiff_pipeline.metrics` with (small, configurable) protocol sizes.
- `RunLog`: appends one JSON object per line to `logs/train_log.jsonl`, and mirrors scalars to the
  accelerate trackers (tensorboard when installed).

Example:
    >>> log = RunLog("runs/x/logs/train_log.jsonl")
    >>> log.write({"event": "train", "step": 1, "loss": 0.8})
"""
from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import PIL.Image
import torch


def image_grid(rows: list[np.ndarray], pad: int = 2) -> PIL.Image.Image:
    """Rows of images `(B, H, W, C)` in [0, 1] -> one PIL image, white padding between cells."""
    cols = max(len(r) for r in rows)
    h, w, c = rows[0].shape[1:]
    grid = np.ones((len(rows) * (h + pad) + pad, cols * (w + pad) + pad, c), dtype=np.float32)
    for i, row in enumerate(rows):
        for j, image in enumerate(row):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y : y + h, x : x + w] = image
    array = (np.clip(grid, 0, 1) * 255).round().astype(np.uint8)
    return PIL.Image.fromarray(array[..., 0] if c == 1 else array)


def save_validation_images(pipeline, images: torch.Tensor, out_dir: str, num_inference_steps: int, seed: int) -> dict[str, str]:
    """Write `reconstruction.png` and `swap.png` for `images` (B, C, H, W) in [-1, 1]; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    originals = ((images.permute(0, 2, 3, 1).float().cpu().numpy() + 1) / 2).clip(0, 1)
    recon = pipeline(images=images, num_inference_steps=num_inference_steps,
                     generator=torch.Generator().manual_seed(seed), output_type="np").images
    swap = pipeline.swap(images, num_inference_steps=num_inference_steps,
                         generator=torch.Generator().manual_seed(seed), output_type="np").images  # (N, B, H, W, C)
    paths = {"reconstruction": os.path.join(out_dir, "reconstruction.png"), "swap": os.path.join(out_dir, "swap.png")}
    image_grid([originals, recon]).save(paths["reconstruction"])
    image_grid([originals] + list(swap)).save(paths["swap"])
    return paths


@torch.no_grad()
def concept_metrics(encoder, dataset, seed: int, metrics: list[str], num_train: int, num_eval: int,
                    batch_size: int = 256) -> dict[str, float]:
    """FactorVAE / DCI / MIG of the encoder's concepts on `dataset` (a fresh RandomState(seed) per metric)."""
    from encdiff_pipeline.metrics import compute_representation_table, dci, factor_vae, mig

    if not metrics:
        return {}
    was_training = encoder.training
    encoder.eval()
    device = next(encoder.parameters()).device

    def encode(images: np.ndarray) -> np.ndarray:
        x = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).to(device) * 2.0 - 1.0
        return encoder.encode_concepts(x).float().flatten(1).cpu().numpy()

    table = compute_representation_table(dataset, encode, batch_size=batch_size, progress=False)
    encoder.train(was_training)
    results: dict[str, float] = {}
    if "factor_vae" in metrics:
        scores = factor_vae(dataset, table, np.random.RandomState(seed), num_train=num_train,
                            num_eval=num_eval, num_variance_estimate=num_train)
        results["factor_vae"] = float(scores["eval_accuracy"])
    if "dci" in metrics:
        scores = dci(dataset, table, np.random.RandomState(seed), num_train=num_train, num_test=num_eval)
        results.update(dci_disentanglement=float(scores["disentanglement"]),
                       dci_completeness=float(scores["completeness"]),
                       dci_informativeness=float(scores.get("informativeness_test", np.nan)))
    if "mig" in metrics:
        results["mig"] = float(mig(dataset, table, np.random.RandomState(seed), num_train=num_train)["discrete_mig"])
    return results


class RunLog:
    """Append-only JSON-lines log (always), mirrored to accelerate trackers when there are any."""

    def __init__(self, path: str, accelerator=None):
        self.path, self.accelerator = path, accelerator
        os.makedirs(os.path.dirname(path), exist_ok=True)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.accelerator is not None and self.accelerator.trackers:
            scalars = {f"{record.get('event', 'log')}/{k}": v for k, v in record.items()
                       if isinstance(v, (int, float)) and k != "step"}
            self.accelerator.log(scalars, step=record.get("step"))


def read_log(path: str) -> list[dict[str, Any]]:
    """The records of a JSON-lines log."""
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
