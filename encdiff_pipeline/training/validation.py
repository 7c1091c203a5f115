"""What a training run checks every K steps: image grids, disentanglement metrics, a JSON-lines log.

- `save_validation_images`: the reconstruction grid (originals over their reconstructions) and the
  paper's swap grid (row k: every image given image 0's value of concept k) as PNG;
  `save_decoder_images` draws them for a deterministic decoder (the "EncDec w/o Diff" ablation).
- `concept_metrics`: encode every image of a held factor dataset once (a representation table),
  then FactorVAE / DCI / MIG, with `encdiff_pipeline.evaluate` and small, configurable protocol sizes.
- `RunLog`: appends one JSON object per line to `logs/train_log.jsonl`, and mirrors scalars to the
  accelerate trackers (tensorboard when installed).

Example:
    >>> log = RunLog("runs/x/logs/train_log.jsonl")
    >>> log.write({"event": "train", "step": 1, "loss": 0.8})
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, Sequence

import torch

from ..image_range import to_unit_images
from ..visualization import image_grid, swap_grid_labels

CELL = 64  # grid cells are enlarged (nearest neighbour) to at least this many pixels


def save_validation_images(pipeline, images: torch.Tensor, out_dir: str, num_inference_steps: int, seed: int) -> dict[str, str]:
    """Write `reconstruction.png` and `swap.png` for `images` (B, C, H, W) in [-1, 1]; return their paths."""
    os.makedirs(out_dir, exist_ok=True)
    originals = to_unit_images(images)
    recon = pipeline(images=images, num_inference_steps=num_inference_steps,
                     generator=torch.Generator().manual_seed(seed), output_type="np").images
    swap = pipeline.swap(images, num_inference_steps=num_inference_steps,
                         generator=torch.Generator().manual_seed(seed), output_type="np").images  # (N, B, H, W, C)
    paths = {"reconstruction": os.path.join(out_dir, "reconstruction.png"), "swap": os.path.join(out_dir, "swap.png")}
    save_grids(originals, recon, list(swap), paths)
    return paths


@torch.no_grad()
def save_decoder_images(encoder, decode: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor,
                        out_dir: str) -> dict[str, str]:
    """The same two grids for a deterministic decoder (`--decoder_type deterministic`): `decode` maps
    tokens (B, N, d) to pixels in [-1, 1] in one pass, no sampling."""
    os.makedirs(out_dir, exist_ok=True)
    concepts = encoder.encode_concepts(images)
    rows = []
    for k in range(concepts.shape[1]):  # row k: every image given image 0's concept (or vector token) k
        swapped = concepts.clone()
        swapped[:, k] = concepts[0, k]
        rows.append(to_unit_images(decode(encoder.concepts_to_tokens(swapped))))
    paths = {"reconstruction": os.path.join(out_dir, "reconstruction.png"), "swap": os.path.join(out_dir, "swap.png")}
    save_grids(to_unit_images(images), to_unit_images(decode(encoder.concepts_to_tokens(concepts))), rows, paths)
    return paths


def save_grids(originals, reconstructions, swap_rows, paths: dict[str, str]) -> None:
    """The labelled reconstruction grid (inputs over reconstructions) and swap grid, cells >= `CELL` px."""
    columns = [f"image {i}" for i in range(len(originals))]
    image_grid([originals, reconstructions], row_labels=["input", "reconstruction"], col_labels=columns,
               min_cell_size=CELL).save(paths["reconstruction"])
    row_labels, col_labels = swap_grid_labels(len(swap_rows), len(originals))
    image_grid([originals] + list(swap_rows), row_labels=row_labels, col_labels=col_labels,
               min_cell_size=CELL).save(paths["swap"])


def concept_metrics(encoder, dataset, random_seed: int = 0, metrics: Sequence[str] = ("factor_vae", "dci", "mig"),
                    num_train: int = 2000, num_eval: int = 1000, batch_size: int = 256) -> dict[str, float]:
    """FactorVAE / DCI / MIG of the encoder's concepts on `dataset`, with `encdiff_pipeline.evaluate`
    and smaller protocol sizes.

    Every image is encoded once; each metric gets a fresh `np.random.RandomState(random_seed)`
    (seed 0, whatever the training seed, as disentanglement_lib does). Vector tokens (concepts `(B, N, d)`) are
    reduced to one value per token with PCA, as `evaluate` does for EncDiff-V.

    Example:
        >>> concept_metrics(encoder, held, metrics=["mig"], num_train=500)  # doctest: +SKIP
        {'mig': 0.41}
    """
    from ..evaluation import evaluate

    if not metrics:
        return {}
    was_training = encoder.training
    options = {"factor_vae": {"num_train": num_train, "num_eval": num_eval, "num_variance_estimate": num_train},
               "dci": {"num_train": num_train, "num_test": num_eval}, "mig": {"num_train": num_train}}
    report = evaluate(encoder, dataset, metrics=list(metrics), batch_size=batch_size, random_seed=random_seed,
                      metric_options={m: options[m] for m in metrics}, progress=False)  # puts the encoder in eval mode
    encoder.train(was_training)
    scores, results = {}, report["metrics"]
    if "factor_vae" in results:
        scores["factor_vae"] = float(results["factor_vae"]["eval_accuracy"])
    if "dci" in results:
        scores.update(dci_disentanglement=float(results["dci"]["disentanglement"]),
                      dci_completeness=float(results["dci"]["completeness"]),
                      dci_informativeness=float(results["dci"]["informativeness_test"]))
    if "mig" in results:
        scores["mig"] = float(results["mig"]["discrete_mig"])
    return scores


class RunLog:
    """Append-only JSON-lines log (always), mirrored to accelerate trackers when there are any."""

    def __init__(self, path: str, accelerator=None):
        self.path, self.accelerator = path, accelerator
        os.makedirs(os.path.dirname(path), exist_ok=True)
        drop_torn_last_line(path)

    def write(self, record: dict[str, Any]) -> None:
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        if self.accelerator is not None and self.accelerator.trackers:
            scalars = {f"{record.get('event', 'log')}/{k}": v for k, v in record.items()
                       if isinstance(v, (int, float)) and k != "step"}
            self.accelerator.log(scalars, step=record.get("step"))


def read_log(path: str) -> list[dict[str, Any]]:
    """The records of a JSON-lines log. A torn last line (a write cut short by a kill or a full disk)
    is skipped with a warning; a bad line elsewhere is a ValueError naming the file and line."""
    with open(path, encoding="utf-8", errors="replace") as f:
        lines = f.read().split("\n")
    records = []
    last = max((i for i, line in enumerate(lines) if line.strip()), default=-1)
    for number, line in enumerate(lines):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as error:
            if number == last:
                print(f"warning: {path}: skipping its torn last line {number + 1} ({error})", file=sys.stderr)
                continue
            raise ValueError(f"{path}: line {number + 1} is not a JSON record ({error})") from None
        records.append(record)
    return records


def training_clock() -> float:
    """The seconds that `--max_train_minutes` and `--validation_minutes` count in (train_encdiff.py
    reads it at the start and end of each step); tests replace it with a clock of their own."""
    return time.perf_counter()


def logged_train_seconds(log_path: str, step: int) -> float | None:
    """The training time a resumed run had reached at `step` (its train record in the log; None if none)."""
    if not os.path.isfile(log_path):
        return None
    records = [r for r in read_log(log_path) if r.get("event") == "train" and r.get("step") == step]
    return float(records[-1].get("train_seconds", 0.0)) if records else None


def drop_torn_last_line(path: str) -> None:
    """Cut a log file back to its last complete line, so appended records start on a line of their own."""
    if not os.path.isfile(path):
        return
    with open(path, "rb+") as f:
        data = f.read()
        if not data or data.endswith(b"\n"):
            return
        keep = data.rfind(b"\n") + 1
        print(f"warning: {path}: dropping its torn last line ({len(data) - keep} bytes)", file=sys.stderr)
        f.truncate(keep)


def check_held_images(num_validation_images: int, held) -> None:
    """SystemExit before the run starts if the held set cannot supply the validation grids' images."""
    if num_validation_images > len(held):
        raise SystemExit(f"error: --num_validation_images {num_validation_images} is larger than the held "
                         f"validation set ({len(held)} images); lower it or pass a larger --validation_dataset")


def push_failure_message(error: BaseException, output_dir: str) -> str:
    """One line for a failed Hub upload at the end of a run (the pipeline is already saved locally)."""
    first = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return (f"error: --push_to_hub failed ({type(error).__name__}: {first}); the trained pipeline is saved in "
            f"{output_dir}: upload it later with EncDiffPipeline.from_pretrained({output_dir!r}).push_to_hub(repo_id)")
