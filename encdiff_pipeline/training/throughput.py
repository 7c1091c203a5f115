"""One synthetic EncDiff training step, timed: what `benchmarks/bench_unet.py` and `benchmarks/gpu_run.py`
measure (images/s, FLOPs) under each speed knob.

Example:
    >>> step = TrainStep("tiny", 8, latent_size=8, image_size=8, num_concepts=4, token_dim=8)  # doctest: +SKIP
    >>> step.images_per_second(steps=3)                                                       # doctest: +SKIP
"""
from __future__ import annotations

import contextlib
import time

import torch
import torch.nn.functional as F
from diffusers.models.attention_processor import AttnProcessor, AttnProcessor2_0
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from ..models import ConceptEncoderModel, unet_from_preset


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
