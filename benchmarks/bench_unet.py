"""Training throughput of EncDiff's paper-size U-Net + concept encoder on this machine.

Prints images/s for one training step (encoder on 64x64 pixels + U-Net on 16x16x3 latents, L1 on eps,
forward + backward + AdamW) at batch 32 in fp32, the achieved GFLOP/s (FLOPs counted with
`torch.utils.flop_counter.FlopCounterMode`), the machine's fp32/bf16 matmul peak, and a line for the
"small" CPU preset. `--variants` also times the speed knobs (channels_last, bf16 autocast, attention
backend, AdamW implementation, denormal flushing) against the defaults kept here: fp32, contiguous
(NCHW) memory, diffusers' SDPA processor (CPU flash kernel), fused AdamW, denormals not flushed.
Measured on the 2-core box (1 thread, per CPU-second, batch 32): bf16 autocast 0.55x, SDPA math backend
0.74x, AttnProcessor 0.83x, channels_last 0.99x; AdamW for-loop / foreach vs fused and flushing
denormals all within +-5% run-to-run noise.

    python benchmarks/bench_unet.py                 # under a minute on idle cores
    python benchmarks/bench_unet.py --variants      # + one line per speed knob (~3 minutes)
    python benchmarks/bench_unet.py --threads 1     # when other processes share the cores
"""
from __future__ import annotations

import argparse
import contextlib
import time

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from encdiff_pipeline.models import ConceptEncoderModel, unet_from_preset


class Timer:
    """Wall time and this process's CPU time of a block (CPU time stays meaningful when other
    processes share the cores: images per CPU-second x threads = the uncontended rate)."""

    def __enter__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        self.wall, self.cpu = time.perf_counter() - self.wall, time.process_time() - self.cpu


def matmul_gflops(dtype: torch.dtype, n: int = 2048, reps: int = 5) -> tuple[float, float]:
    """(GFLOP/s of wall time, GFLOP per CPU-second x threads) of an n^3 matmul."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b  # warm-up
    with Timer() as timer:
        for _ in range(reps):
            a @ b
    flops = 2 * n**3 * reps / 1e9
    return flops / timer.wall, flops / timer.cpu * torch.get_num_threads()


class TrainStep:
    """One EncDiff training step: tokens from pixels, eps-prediction on noised latents, L1 loss."""

    def __init__(self, preset: str, batch: int, *, latent_size: int, image_size: int, num_concepts: int,
                 token_dim: int, channels_last=False, autocast=False, attention="sdpa", adamw="fused",
                 flush_denormal=False, device: str = "cpu", compile_unet: bool = False, encoder_kwargs: dict | None = None):
        """`device`: where it runs (CUDA: `autocast` is bf16 autocast there); `compile_unet`: torch.compile the
        U-Net; `adamw`: "fused", "foreach" or "for-loop"; `encoder_kwargs`: more ConceptEncoderModel settings."""
        torch.manual_seed(0)
        self.device = torch.device(device)
        self.encoder = ConceptEncoderModel(sample_size=image_size, num_concepts=num_concepts, token_dim=token_dim,
                                           **(encoder_kwargs or {})).to(self.device)
        self.unet = unet_from_preset(preset, sample_size=latent_size, cross_attention_dim=token_dim).to(self.device)
        # "sdpa": diffusers' default (CPU flash kernel); "sdpa-math": SDPA's math backend; "math": AttnProcessor
        self.unet.set_attn_processor(AttnProcessor() if attention == "math" else AttnProcessor2_0())
        self.sdpa_math = attention == "sdpa-math"
        self.flush_denormal = flush_denormal
        params = list(self.encoder.parameters()) + list(self.unet.parameters())
        opt_kwargs = {"fused": True} if adamw == "fused" else {"foreach": adamw == "foreach"}
        self.optimizer = torch.optim.AdamW(params, lr=1e-4, **opt_kwargs)
        self.autocast = autocast
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        if channels_last:
            self.encoder.to(memory_format=memory_format)
            self.unet.to(memory_format=memory_format)
        if compile_unet:
            self.unet.compile()
        g = torch.Generator().manual_seed(0)
        self.images = (torch.rand(batch, 3, image_size, image_size, generator=g) * 2 - 1).to(self.device, memory_format=memory_format)
        self.latents = torch.randn(batch, 3, latent_size, latent_size, generator=g).to(self.device, memory_format=memory_format)
        self.noise = torch.randn_like(self.latents)
        self.timesteps = torch.randint(0, 1000, (batch,), generator=g).to(self.device)
        self.batch = batch

    def __call__(self) -> None:
        torch.set_flush_denormal(self.flush_denormal)
        with contextlib.ExitStack() as stack:
            if self.autocast:
                stack.enter_context(torch.autocast(self.device.type, dtype=torch.bfloat16))
            if self.sdpa_math:
                stack.enter_context(sdpa_kernel(SDPBackend.MATH))
            tokens = self.encoder(self.images, check_inputs=False).tokens
            noisy = 0.8 * self.latents + 0.6 * self.noise  # the schedule's mix does not change the cost
            eps = self.unet(noisy, self.timesteps, encoder_hidden_states=tokens).sample
            loss = F.l1_loss(eps.float(), self.noise)
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def images_per_second(self, steps: int, warmup: int = 1) -> tuple[float, float]:
        """(images/s of wall time, images per CPU-second x threads)."""
        for _ in range(warmup):
            self()
        with Timer() as timer:
            for _ in range(steps):
                self()
        images = steps * self.batch
        return images / timer.wall, images / timer.cpu * torch.get_num_threads()

    def flops(self) -> int:
        with FlopCounterMode(display=False) as counter:
            self()
        return counter.get_total_flops()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=3, help="timed training steps per measurement")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--small-batch", type=int, default=64)
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
