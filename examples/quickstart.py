"""Quickstart: build a tiny EncDiff pipeline, encode, swap, reconstruct, save and reload it.

The models are freshly initialised (untrained), so the pictures are noise-like; the point is the
API. Runs in a few seconds on a CPU.

    python examples/quickstart.py --output_dir encdiff-quickstart
"""
import argparse
from pathlib import Path

import numpy as np
import torch

from encdiff_pipeline import ConceptEncoderModel, EncDiffPipeline
from encdiff_pipeline.models import unet_from_preset
from encdiff_pipeline.visualization import attention_grid, image_grid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output_dir", type=Path, default=Path("encdiff-quickstart"))
    parser.add_argument("--image_size", type=int, default=32)
    parser.add_argument("--num_concepts", type=int, default=6)
    parser.add_argument("--steps", type=int, default=10, help="DDIM steps")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(args.seed)

    # 1. Build: concept encoder (pixels -> N scalars -> N tokens) + cross-attention U-Net (+ DDIM)
    token_dim = 16
    encoder = ConceptEncoderModel(sample_size=args.image_size, num_concepts=args.num_concepts,
                                  token_dim=token_dim, width=32)
    unet = unet_from_preset("tiny", sample_size=args.image_size, cross_attention_dim=token_dim)
    pipe = EncDiffPipeline(encoder=encoder, unet=unet)
    pipe.set_progress_bar_config(disable=True)

    # 2. Encode a small batch of (here random, smooth) images: uint8 numpy, NHWC
    rng = np.random.default_rng(args.seed)
    coarse = rng.integers(0, 256, size=(4, 4, 4, 3), dtype=np.uint8)
    images = coarse.repeat(args.image_size // 4, axis=1).repeat(args.image_size // 4, axis=2)
    concepts = pipe.encode(images)
    print(f"concepts {tuple(concepts.shape)}:\n{concepts.numpy().round(3)}")

    # 3. Reconstruct (generate from the images' concepts) and swap concepts (the paper's grid)
    generator = torch.Generator().manual_seed(args.seed)
    recon = pipe(images=images, num_inference_steps=args.steps, generator=generator).images
    swap = pipe.swap(images, concept_indices=[0, 1, 2], num_inference_steps=args.steps, generator=generator)
    maps = pipe.attention_maps(images, timestep=500, generator=generator)
    print(f"swap grid: {len(swap.images)} rows x {len(swap.images[0])} images; attention maps {tuple(maps.shape)}, "
          f"sum over tokens = {maps.sum(dim=1).mean():.4f}")

    args.output_dir.mkdir(parents=True, exist_ok=True)
    image_grid([recon] + swap.images).save(args.output_dir / "swap_grid.png")
    attention_grid(images, maps).save(args.output_dir / "attention.png")

    # 4. Save (weights, model card, remote code) and reload; the same seed gives the same images
    folder = args.output_dir / "pipeline"
    pipe.save_pretrained(folder)
    reloaded = EncDiffPipeline.from_pretrained(folder)
    reloaded.set_progress_bar_config(disable=True)
    again = reloaded(images=images, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(args.seed),
                     output_type="np").images
    first = pipe(images=images, num_inference_steps=args.steps, generator=torch.Generator().manual_seed(args.seed),
                 output_type="np").images
    print(f"saved to {folder}: {sorted(p.name for p in folder.iterdir())}")
    print(f"reloaded pipeline reproduces the reconstruction: max |diff| = {np.abs(again - first).max():.1e}")
    print(f"pictures: {args.output_dir / 'swap_grid.png'} (row 1: reconstructions, then one row per swapped "
          f"concept), {args.output_dir / 'attention.png'}")


if __name__ == "__main__":
    main()
