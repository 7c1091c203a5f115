#!/usr/bin/env python
"""Which noise levels train which concept? The token-gain map of a trained EncDiff pipeline.

For held procedural Shapes3D images noised to each of `--num_levels` training steps (fixed noise),
the U-Net's loss (mean L1 on its own target: eps, x0 or v, as the pipeline's scheduler says) is
measured with the images' true concept tokens, then with **one concept swapped in from another
image** (each concept in turn). The rise of the loss (x1000) is that concept's gain at that noise
level: where it is near 0 the denoiser does not use the concept (it reads the information from x_t
instead, or the concept carries nothing). A second block does the same per **factor**: all tokens of
an image replaced by those of its grid neighbour that differs only in that factor, so it shows at
which noise levels the denoiser must take the factor from the tokens.

    python benchmarks/token_gain.py RUN_DIR                     # writes RUN_DIR/token_gain.{json,png}
    python benchmarks/token_gain.py RUN_DIR --num_images 256 --num_levels 8 --output_dir out/

Prints both tables (rows: concepts / factors; columns: training step and its log-SNR).
"""
from __future__ import annotations

import argparse
import json
import os

import numpy as np
import torch

from encdiff_pipeline.data import load_factor_dataset
from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline
from encdiff_pipeline.training import DiffusionObjective
from encdiff_pipeline.image_range import to_model_input


def _levels(num_train: int, num_levels: int) -> list[int]:
    """Training steps spread over the schedule, denser at both ends (20 ... 950 for 10 levels of 1000)."""
    return sorted({int(round(x)) for x in np.linspace(0.02, 0.95, num_levels) * num_train})


@torch.no_grad()
def token_gain(pipe: EncDiffPipeline, images: torch.Tensor, neighbours: list[torch.Tensor], timesteps: list[int],
               seed: int = 0, batch_size: int = 128) -> dict:
    """Loss with true tokens, and its rise (x1000) per swapped concept and per factor neighbour.

    Args:
        images: (B, C, H, W) in [-1, 1].
        neighbours: per factor, (B, C, H, W) images differing from `images` only in that factor.
        timesteps: training steps to measure at.
    """
    scheduler = pipe.scheduler
    objective = DiffusionObjective(scheduler, scheduler.config.prediction_type)
    pipe.encoder.eval()
    pipe.unet.eval()
    concepts = pipe.encode(images)
    permutation = torch.roll(torch.arange(len(images)), 1)  # each image takes image i-1's concept
    neighbour_tokens = [pipe.encoder(n).tokens for n in neighbours]
    clean = pipe._latents_from_images(images)
    generator = torch.Generator().manual_seed(seed)
    noise = torch.randn(clean.shape, generator=generator)
    num_concepts = concepts.shape[1]

    def loss(t: int, tokens: torch.Tensor) -> float:
        total = 0.0
        for start in range(0, len(clean), batch_size):
            part = slice(start, start + batch_size)
            steps = torch.full((len(clean[part]),), t, dtype=torch.long)
            noisy = scheduler.add_noise(clean[part], noise[part], steps)
            prediction = pipe.unet(noisy, steps, **pipe._conditioning(tokens[part])).sample
            total += objective.loss(clean[part], noisy, steps, noise[part], prediction).item() * len(clean[part])
        return total / len(clean)

    def tokens_with(k: int) -> torch.Tensor:
        swapped = concepts.clone()
        swapped[:, k] = concepts[permutation, k]
        if pipe.encoder.config.token_type == "scalar":
            return pipe.encoder.concepts_to_tokens(swapped)
        return swapped

    true_tokens = pipe.encoder.concepts_to_tokens(concepts) if pipe.encoder.config.token_type == "scalar" else concepts
    base, concept_gain, factor_gain = [], np.zeros((num_concepts, len(timesteps))), np.zeros((len(neighbours), len(timesteps)))
    for j, t in enumerate(timesteps):
        base.append(loss(t, true_tokens))
        for k in range(num_concepts):
            concept_gain[k, j] = 1000 * (loss(t, tokens_with(k)) - base[-1])
        for f, tokens in enumerate(neighbour_tokens):
            factor_gain[f, j] = 1000 * (loss(t, tokens) - base[-1])
    alphas = scheduler.alphas_cumprod.double()[timesteps]
    return {"timesteps": timesteps, "logsnr": torch.log(alphas / (1 - alphas)).tolist(), "base_loss": base,
            "concept_gain": concept_gain.tolist(), "factor_gain": factor_gain.tolist(),
            "prediction_type": scheduler.config.prediction_type}


def plot(result: dict, factor_names: list[str], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = [("concept swapped in", np.array(result["concept_gain"]), [str(i) for i in range(len(result["concept_gain"]))]),
              ("factor changed in the tokens", np.array(result["factor_gain"]), factor_names)]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    columns = [f"{t}\n{s:+.1f}" for t, s in zip(result["timesteps"], result["logsnr"])]
    for ax, (title, values, rows) in zip(axes, blocks):
        image = ax.imshow(values, aspect="auto", cmap="viridis")
        for (i, j), v in np.ndenumerate(values):
            ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7, color="w" if v < values.max() / 2 else "k")
        ax.set_xticks(range(len(columns)), columns, fontsize=7)
        ax.set_yticks(range(len(rows)), rows, fontsize=8)
        ax.set_xlabel("training step t / log-SNR")
        ax.set_title(f"loss rise x1000: {title}", fontsize=9)
        fig.colorbar(image, ax=ax)
    fig.suptitle(f"token-gain map ({result['prediction_type']} loss; base loss per level in the JSON)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pipeline", help="an EncDiffPipeline folder (a train_encdiff.py run folder)")
    p.add_argument("--num_images", type=int, default=512, help="held images (procedural Shapes3D)")
    p.add_argument("--num_levels", type=int, default=10, help="noise levels")
    p.add_argument("--seed", type=int, default=0, help="seed of the images and the noise")
    p.add_argument("--output_dir", default=None, help="where token_gain.json / .png go (default: the pipeline folder)")
    args = p.parse_args(argv)
    if args.num_images < 2 or args.num_levels < 1:
        p.error("--num_images must be >= 2 and --num_levels >= 1")
    if not os.path.isfile(os.path.join(args.pipeline, "model_index.json")):
        p.error(f"{args.pipeline}: not an EncDiffPipeline folder (no model_index.json)")
    pipe = EncDiffPipeline.from_pretrained(args.pipeline)
    size = pipe.encoder.config.sample_size
    data = load_factor_dataset("procedural-shapes3d", image_size=size)
    rng = np.random.RandomState(args.seed)
    factors = data.sample_factors(args.num_images, rng)
    to_tensor = lambda f: to_model_input(data.get_images(data.factors_to_index(f)))  # noqa: E731
    neighbours = []
    for f, size_f in enumerate(data.factor_sizes):  # the same images with factor f moved one step (cyclically)
        moved = factors.copy()
        moved[:, f] = (moved[:, f] + 1) % size_f
        neighbours.append(to_tensor(moved))
    result = token_gain(pipe, to_tensor(factors), neighbours, _levels(pipe.scheduler.config.num_train_timesteps, args.num_levels),
                        seed=args.seed)
    names = [str(n) for n in data.factor_names]
    result["factor_names"] = names
    out_dir = args.output_dir or args.pipeline
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "token_gain.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1)
    plot(result, names, os.path.join(out_dir, "token_gain.png"))
    header = "      " + " ".join(f"{t:>6}" for t in result["timesteps"])
    print(f"{result['prediction_type']} loss with true tokens: " + " ".join(f"{b:.4f}" for b in result["base_loss"]))
    print("log-SNR " + " ".join(f"{s:+6.1f}" for s in result["logsnr"]))
    print("concept gain x1000 (rows: concepts; columns: training step)\n" + header)
    for k, row in enumerate(result["concept_gain"]):
        print(f"{k:>5} " + " ".join(f"{v:>6.1f}" for v in row))
    print("factor gain x1000 (tokens of the grid neighbour that differs in one factor)\n" + header)
    for name, row in zip(names, result["factor_gain"]):
        print(f"{name[:5]:>5} " + " ".join(f"{v:>6.1f}" for v in row))
    print(f"wrote {os.path.join(out_dir, 'token_gain.json')} and token_gain.png")
    return result


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="token_gain.py")
