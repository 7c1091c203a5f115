"""Training throughput of EncDiff's paper-size U-Net + concept encoder on this machine.

Prints images/s for one training step (encoder on 64x64 pixels + U-Net on 16x16x3 latents, L1 on eps,
forward + backward + AdamW) at batch 32 in fp32, the achieved GFLOP/s (FLOPs counted with
`torch.utils.flop_counter.FlopCounterMode`), the machine's fp32/bf16 matmul peak, and a line for the
"small" CPU preset. `--variants` also times the speed knobs (channels_last, bf16 autocast, attention
backend, AdamW implementation, denormal flushing) against the defaults kept here: fp32, contiguous
(NCHW) memory, diffusers' SDPA processor (CPU flash kernel), fused AdamW, denormals not flushed.

    python benchmarks/bench_unet.py                 # under a minute on idle cores
    python benchmarks/bench_unet.py --variants      # + one line per speed knob (~3 minutes)
    python benchmarks/bench_unet.py --threads 1     # when other processes share the cores
"""
from __future__ import annotations

import argparse

import torch

from encdiff_pipeline.training.throughput import TrainStep, matmul_gflops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per measurement")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--small_batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--variants", action="store_true", help="also time each speed knob")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads. Figures: wall-clock rate | rate per CPU-second x "
          f"{threads} threads (= the rate on idle cores; differs from wall when other processes share them)")
    fp32, fp32_cpu = matmul_gflops(torch.float32)
    bf16, bf16_cpu = matmul_gflops(torch.bfloat16)
    print(f"matmul 2048^3 peak: fp32 {fp32:,.0f} | {fp32_cpu:,.0f} GFLOP/s, bf16 {bf16:,.0f} | {bf16_cpu:,.0f} GFLOP/s")

    paper = dict(latent_size=16, image_size=64, num_concepts=20, token_dim=16)
    step = TrainStep("paper", args.batch, **paper)
    n_params = sum(p.numel() for p in step.unet.parameters()) / 1e6
    gflop = step.flops() / 1e9  # also the warm-up step
    ips, ips_cpu = step.images_per_second(args.steps, warmup=0)
    print(f"paper U-Net ({n_params:.1f}M) + encoder, batch {args.batch}, fp32, fwd+bwd+AdamW: "
          f"{ips:.1f} | {ips_cpu:.1f} images/s; {gflop / args.batch:.2f} GFLOP per image per step; "
          f"{gflop * ips / args.batch:.0f} | {gflop * ips_cpu / args.batch:.0f} GFLOP/s "
          f"= {100 * gflop * ips_cpu / args.batch / fp32_cpu:.0f}% of the fp32 matmul peak")

    if args.variants:
        print("speed knobs (paired with a fresh default run; ratio of per-CPU-second rates):")
        for name, kwargs in [
            ("channels_last", {"channels_last": True}),
            ("bf16 autocast", {"autocast": True}),
            ("attention: SDPA math backend", {"attention": "sdpa-math"}),
            ("attention: AttnProcessor (bmm)", {"attention": "math"}),
            ("AdamW for-loop (not fused)", {"adamw": "for-loop"}),
            ("AdamW foreach (not fused)", {"adamw": "foreach"}),
            ("flush denormals", {"flush_denormal": True}),
        ]:
            _, base = TrainStep("paper", args.batch, **paper).images_per_second(args.steps)
            _, variant = TrainStep("paper", args.batch, **paper, **kwargs).images_per_second(args.steps)
            print(f"  {name:32s} {variant:5.1f} images/s vs default {base:5.1f} ({variant / base:.2f}x)")

    small = dict(latent_size=16, image_size=16, num_concepts=10, token_dim=32)
    step = TrainStep("small", args.small_batch, **small)
    n_params = sum(p.numel() for p in step.unet.parameters()) / 1e6
    gflop = step.flops() / 1e9
    ips, ips_cpu = step.images_per_second(args.steps, warmup=0)
    print(f"small U-Net ({n_params:.1f}M) + 16x16 encoder, pixel space 16x16, batch {args.small_batch}, fp32: "
          f"{ips:.1f} | {ips_cpu:.1f} images/s, {gflop * ips_cpu / args.small_batch:.0f} GFLOP/s")


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="bench_unet.py")
