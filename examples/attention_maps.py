"""Per-token cross-attention maps of a trained EncDiff pipeline on procedural Shapes3D images.

One row per image: the image, then the map of each concept token overlaid (averaged over heads,
layers and the given timesteps). Where a token attends shows which part of the scene its concept
controls.

    python examples/attention_maps.py runs/encdiff-small --out attention.png
"""
import argparse

import numpy as np
import torch

from encdiff_pipeline import EncDiffPipeline
from encdiff_pipeline.data import load_factor_dataset
from encdiff_pipeline.visualization import attention_grid
from encdiff_pipeline.image_range import to_model_input


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", help="a saved EncDiffPipeline folder or Hub id")
    parser.add_argument("--out", default="attention.png", help="PNG to write")
    parser.add_argument("--num_images", type=int, default=4, help="rows of the figure")
    parser.add_argument("--timesteps", type=int, nargs="+", default=[250, 500, 750], help="noise levels to average")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    pipe = EncDiffPipeline.from_pretrained(args.pipeline)
    data = load_factor_dataset("procedural-shapes3d", image_size=pipe.encoder.config.sample_size)
    indices = np.random.RandomState(args.seed).randint(len(data), size=args.num_images)
    images = to_model_input(data.get_images(indices))
    maps = pipe.attention_maps(images, timestep=args.timesteps, generator=torch.Generator().manual_seed(args.seed))
    attention_grid(images, maps).save(args.out)
    print(f"wrote {args.out}: {args.num_images} images x {maps.shape[1]} concept tokens")


if __name__ == "__main__":
    main()
