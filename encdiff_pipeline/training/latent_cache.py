"""Encode a factor dataset once with a trained VQ first stage: the latent cache of `--latent_cache`.

    python -m encdiff_pipeline.training.latent_cache --vae_path runs/vq --dataset procedural-shapes3d --image_size 64 \
        --output runs/vq/latents.safetensors
    accelerate launch training/train_encdiff.py --preset paper --vae_path runs/vq \
        --latent_cache runs/vq/latents.safetensors --output_dir runs/encdiff ...

The file (safetensors, no pickles) holds `latents` (N, c, h, w) float32: the first stage's latents
before quantisation (what `encdiff_pipeline.latents.encode_latents` gives a VQModel) of every dataset item
in index order, plus metadata (dataset, options, image size, first stage, rounding). With it,
training reads latents by index and never runs the first stage's encoder. `--uint8` encodes the
images rounded to 8 bits, as `--data_on_device` feeds them.
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from ..cli import check_output_spares_input, json_object_argument
from ..atomic import atomic_path
from ..data.run_data import train_dataset_spec
from ..latents import encode_latents
from .batches import RenderedBatches, uint8_to_model_range
from .factor_data import load_dataset
from .fast_path import dataset_chunks
from .first_stage import load_vae
from .presets import add_image_size_argument


def encode_dataset(vae, dataset, device: torch.device | str = "cpu", batch_size: int = 512, num_workers: int = 0,
                   uint8: bool = False) -> torch.Tensor:
    """Latents (N, c, h, w) float32 on the CPU of every item of `dataset`, in index order.

    Images go in as the training loop sees them: float in [-1, 1] (rounded to 8 bits with `uint8`).
    """
    from diffusers import VQModel

    if not isinstance(vae, VQModel):
        raise ValueError(f"the latent cache needs a VQModel first stage (deterministic latents), got {type(vae).__name__}")
    vae = vae.to(device).eval()
    out = []
    if uint8:
        chunks = (uint8_to_model_range(images) for images in dataset_chunks(dataset, batch_size, num_workers))
    else:
        chunks = (images for images, _, _ in _float_chunks(dataset, batch_size, num_workers))
    with torch.no_grad():
        for images in chunks:
            out.append(encode_latents(vae, images.to(device)).float().cpu())
    return torch.cat(out)


class _SequentialOrder:
    """Batch `k` = items `k * batch_size ...` in index order (the `BatchOrder` interface of RenderedBatches)."""

    def __init__(self, num_items: int, batch_size: int):
        self.num_items, self.batch_size = num_items, batch_size

    def indices(self, k: int) -> np.ndarray:
        return np.arange(k * self.batch_size, min(self.num_items, (k + 1) * self.batch_size))


def _float_chunks(dataset, batch_size: int, num_workers: int) -> torch.utils.data.DataLoader:
    """Sequential float batches computed exactly as the default DataLoader path computes them."""
    count = -(-len(dataset) // batch_size)
    return torch.utils.data.DataLoader(RenderedBatches(dataset, _SequentialOrder(len(dataset), batch_size), 0, count),
                                       batch_size=None, num_workers=num_workers)


def save_latent_cache(path: str, latents: torch.Tensor, metadata: dict) -> None:
    """Write `latents` and JSON-able `metadata` to a safetensors file (atomically)."""
    with atomic_path(path) as tmp:
        save_file({"latents": latents.contiguous()}, tmp, metadata={k: json.dumps(v) for k, v in metadata.items()})


def load_latent_cache(path: str, num_items: int | None = None) -> tuple[torch.Tensor, dict]:
    """(latents (N, c, h, w), metadata) of a cache file; checks the item count when given.

    Raises:
        SystemExit: no such file, not a latent cache, or a cache of a dataset of another size.
    """
    if not os.path.isfile(path):
        raise SystemExit(f"error: --latent_cache {path}: no such file (write one with python -m encdiff_pipeline.training.latent_cache)")
    try:
        with safe_open(path, framework="pt") as f:
            if "latents" not in f.keys():
                raise SystemExit(f"error: --latent_cache {path}: no 'latents' tensor (not written by encdiff_pipeline.training.latent_cache)")
            latents = f.get_tensor("latents")
            metadata = {k: json.loads(v) for k, v in (f.metadata() or {}).items()}
    except SystemExit:
        raise
    except Exception as err:
        raise SystemExit(f"error: --latent_cache {path}: not a readable safetensors file: {err}") from err
    if num_items is not None and latents.shape[0] != num_items:
        raise SystemExit(f"error: --latent_cache {path} holds {latents.shape[0]} latents but the training dataset has "
                         f"{num_items} items; encode this dataset (same --dataset / --dataset_options) with python -m encdiff_pipeline.training.latent_cache")
    return latents, metadata


def main(argv: list[str] | None = None) -> str:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--vae_path", required=True, help="folder of a VQModel first stage (train_autoencoder.py)")
    p.add_argument("--dataset", default="procedural-shapes3d", help="factor dataset source (as for train_encdiff.py)")
    p.add_argument("--dataset_options", type=json_object_argument, default={}, help="JSON options for load_factor_dataset")
    add_image_size_argument(p, default_preset="paper")
    p.add_argument("--output", required=True, help="the .safetensors file to write")
    p.add_argument("--batch_size", type=int, default=512, help="images per encoder call")
    p.add_argument("--num_workers", type=int, default=0, help="processes rendering / reading images ahead")
    p.add_argument("--uint8", action="store_true", help="round the images to 8 bits first (as --data_on_device does)")
    args = p.parse_args(argv)
    if args.batch_size < 1:
        p.error(f"--batch_size must be >= 1, got {args.batch_size}")
    for name, source in (("--vae_path", args.vae_path), ("--dataset", args.dataset)):
        try:  # hours of encoding must not end by overwriting an input
            check_output_spares_input("--output", args.output, name, source)
        except ValueError as err:
            p.error(str(err))

    vae = load_vae(args.vae_path)
    dataset = load_dataset(*train_dataset_spec(vars(args), args.image_size))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        latents = encode_dataset(vae, dataset, device, args.batch_size, args.num_workers, args.uint8)
    except ValueError as err:
        p.error(str(err))
    save_latent_cache(args.output, latents, {"dataset": args.dataset, "dataset_options": args.dataset_options,
                                             "image_size": args.image_size, "vae_path": os.path.abspath(args.vae_path),
                                             "uint8": args.uint8, "num_items": len(dataset)})
    print(f"wrote {args.output}: {tuple(latents.shape)} latents of {len(dataset)} images")
    return args.output


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="latent_cache.py")
