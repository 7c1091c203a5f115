"""Images/s of the `small` preset's CPU training step against speed variants, measured in one run.

The step is train_encdiff.py's, built from its own argument defaults and model builder: batch 64 of
16x16 pixels, the concept encoder, the U-Net's noise prediction, DiffusionObjective's edge-weighted
L1, backward, gradient clipping, AdamW (the encoder at 3x the learning rate), the EMA of the U-Net.
Data loading and the learning-rate schedule are left out (one fixed batch).

Each variant runs on 1 and 2 torch threads. After a warm-up, every round times today's step and
each variant alternately (today, variant 1, today, variant 2, ..., today), so load from other
processes hits a variant and the two todays beside it alike; the table gives each variant's median
rate, of wall time and per CPU-second (on 1 thread the CPU figure barely feels other processes), and
the medians over rounds of its ratio to the mean of its two todays (on 2 threads also today's step
on 1 thread, switched within each round). ">= 1.2x" needs both ratios. "same loss"
compares the loss of the 2nd step from the same weights and batch with today's (|difference| <=
1e-5); batch 128 trains on another batch, so it has no such comparison.

    nice -n 10 python benchmarks/bench_train_step.py --threads 1    # ~4 minutes beside other jobs
    nice -n 10 python benchmarks/bench_train_step.py --variants_more_threads "channels_last,fused AdamW"
    python benchmarks/bench_train_step.py --threads 1 --profile     # + where today's step spends its time

torch.compile's first compile of the step took 172 s on a loaded 2-core machine (9-11 s from
inductor's cache afterwards); `--compile_limit_s` bounds it. On 2 threads beside other jobs a step
can take 5-9x longer than on 1 thread, so give the later thread counts few variants there.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import platform
import signal
import statistics
import sys
import tempfile
import time

import torch
from diffusers.models.attention_processor import AttnProcessor
from diffusers.training_utils import EMAModel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)  # this checkout's package and training scripts

from encdiff_pipeline.conditioning import unet_conditioning  # noqa: E402
from encdiff_pipeline.noise_schedules import make_noise_scheduler  # noqa: E402
from encdiff_pipeline.training.batches import step_generator  # noqa: E402
from encdiff_pipeline.training.fast_path import make_adamw, memory_format, prepare_models, training_forward  # noqa: E402
from encdiff_pipeline.training.throughput import Timer  # noqa: E402

# name -> TrainStep options; "today" is train_encdiff.py's default CPU step
VARIANTS = {
    "today": {},  # train_encdiff.py's defaults: NCHW, AdamW for-loop, EMA for-loop, SDPA attention
    "channels_last": {"channels_last": True},
    "fused AdamW": {"fused_adamw": True},
    "foreach EMA": {"foreach_ema": True},
    "oneDNN off (native conv)": {"mkldnn": False},
    "flush denormals": {"flush_denormal": True},
    "attention: AttnProcessor (bmm)": {"attention": "bmm"},
    "oneDNN fp32 as bf16 (conv and matmul)": {"onednn_bf16": True},
    "bf16 autocast": {"autocast": True},
    "batch 128": {"batch": 128},
    "torch.compile U-Net": {"compile_unet": True},
}
CHANGES_THE_BATCH = {"batch 128"}
assert not any("," in name or "+" in name for name in VARIANTS)  # --variants is a comma list, "+" combines


def variant_options(name: str) -> dict:
    """A variant's TrainStep options; "a+b" combines variants a and b."""
    options = {}
    for part in name.split("+"):
        options.update(VARIANTS[part])
    return options


def cpu_description() -> str:
    """The CPU model and the SIMD / matrix extensions its flags list."""
    model, flags = platform.processor() or "unknown CPU", set()
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "model name":
                model = value.strip()
            elif key.strip() == "flags":
                flags = set(value.split())
    wanted = ["avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "amx_tile", "amx_bf16"]
    present = [f for f in wanted if f in flags]
    absent = [f for f in wanted if f not in flags]
    return (f"{model}, {os.cpu_count()} logical CPUs; has {' '.join(present) or 'none'}; lacks {' '.join(absent) or 'none'}; "
            f"torch {torch.__version__} (kernels: {torch.backends.cpu.get_cpu_capability()})")


def small_preset_args():
    """train_encdiff.py's arguments for `--preset small` (its defaults filled from the preset)."""
    from training import train_encdiff

    with tempfile.TemporaryDirectory() as out:
        return train_encdiff, train_encdiff.parse_args(["--preset", "small", "--output_dir", os.path.join(out, "run"),
                                                        "--max_train_steps", "1"])


class TrainStep:
    """One train_encdiff.py training step of the `small` preset on a fixed batch, with a variant's options."""

    def __init__(self, script, args, batch=None, channels_last=False, fused_adamw=False, mkldnn=True,
                 flush_denormal=False, attention=None, onednn_bf16=False, autocast=False, compile_unet=False,
                 foreach_ema=False):
        self.args, self.batch = args, batch or args.train_batch_size
        self.channels_last, self.mkldnn, self.flush_denormal = channels_last, mkldnn, flush_denormal
        self.onednn_bf16, self.autocast = onednn_bf16, autocast
        torch.manual_seed(args.seed)
        size = args.preset_spec["image_size"]
        self.encoder, self.unet = script.build_models(args, (3, size, size), None)
        if attention == "bmm":
            self.unet.set_attn_processor(AttnProcessor())
        prepare_models(self.encoder, self.unet, channels_last=channels_last)
        self.objective = script.build_objective(args, make_noise_scheduler(args.beta_schedule))
        self.optimizer = make_adamw([{"params": list(self.encoder.parameters()), "lr": args.learning_rate * args.encoder_lr_scale},
                                     {"params": list(self.unet.parameters())}], lr=args.learning_rate,
                                    weight_decay=args.adam_weight_decay, fused=fused_adamw)
        self.ema = EMAModel(self.unet.parameters(), decay=args.ema_decay, **({"foreach": True} if foreach_ema else {}))
        self.unet_step = training_forward(self.unet, compile_unet)
        self.images = torch.rand(self.batch, 3, size, size, generator=torch.Generator().manual_seed(1)) * 2 - 1
        self.k = 0
        self.encoder.train()
        self.unet.train()

    @contextlib.contextmanager
    def settings(self):
        """oneDNN and denormal settings of the variant, restored afterwards."""
        mkldnn = torch.backends.mkldnn
        previous = (mkldnn.enabled, mkldnn.conv.fp32_precision, mkldnn.matmul.fp32_precision)
        mkldnn.enabled = self.mkldnn
        if self.onednn_bf16:  # oneDNN may compute float32 convolutions and matmuls in bf16 (AMX / AVX512-BF16)
            mkldnn.conv.fp32_precision = mkldnn.matmul.fp32_precision = "bf16"
        torch.set_flush_denormal(self.flush_denormal)
        try:
            yield
        finally:
            mkldnn.enabled, mkldnn.conv.fp32_precision, mkldnn.matmul.fp32_precision = previous
            torch.set_flush_denormal(False)

    def __call__(self) -> float:
        """One step (the k-th batch's noise and timesteps, as in training); its loss."""
        generator = step_generator(self.args.seed, self.k, 0)
        self.k += 1
        with self.settings():  # the whole step, backward included
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self.autocast):  # the forward pass only
                images = memory_format(self.images, self.channels_last)
                _, tokens = self.encoder(images, return_dict=False, check_inputs=False)
                noisy, timesteps, noise = self.objective.noise(images, generator)
                prediction = self.unet_step(memory_format(noisy, self.channels_last), timesteps,
                                            **unet_conditioning(self.unet.config, tokens)).sample
                loss = self.objective.loss(images, noisy, timesteps, noise, prediction)
            loss.backward()
            if self.args.max_grad_norm > 0:
                torch.nn.utils.clip_grad_norm_(list(self.encoder.parameters()) + list(self.unet.parameters()),
                                               self.args.max_grad_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self.ema.step(self.unet.parameters())
        return loss.item()

    def rate(self, steps: int) -> tuple[float, float]:
        """(images/s of wall time, images per CPU-second of this process x its threads)."""
        with Timer() as timer:
            for _ in range(steps):
                self()
        return steps * self.batch / timer.wall, steps * self.batch / timer.cpu * torch.get_num_threads()


class CompileTimeout(Exception):
    pass


def warmed(script, args, options: dict, warmup: int, compile_limit_s: float):
    """A variant's TrainStep after `warmup` steps, the 2nd step's loss, and the warm-up's seconds; a
    compiled U-Net that has not compiled within `compile_limit_s` gives (None, None, seconds)."""
    step = TrainStep(script, args, **options)
    start = time.perf_counter()
    losses = []

    def give_up(signum, frame):
        raise CompileTimeout

    previous = signal.signal(signal.SIGALRM, give_up)
    signal.setitimer(signal.ITIMER_REAL, compile_limit_s if options.get("compile_unet") else 0)
    try:
        for _ in range(max(2, warmup)):
            losses.append(step())
    except CompileTimeout:
        return None, None, time.perf_counter() - start
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    return step, losses[1], time.perf_counter() - start


def profile_today(step: TrainStep, rows: int = 15) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        step()
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", default="1,2", help="comma list of torch thread counts")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    parser.add_argument("--steps", type=int, default=2, help="timed steps per variant per round")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per variant first (>= 2: the loss check)")
    parser.add_argument("--compile_limit_s", type=float, default=120.0, help="give up torch.compile after this long")
    parser.add_argument("--variants", default=",".join(VARIANTS),
                        help="comma list of variant names, a+b for both (today always runs)")
    parser.add_argument("--variants_more_threads", default=None,
                        help="variants for the thread counts after the first (default: --variants); on a loaded machine "
                             "more threads can be 10x slower per step")
    parser.add_argument("--profile", action="store_true", help="print torch.profiler's top ops of today's step")
    args = parser.parse_args()
    names = ["today"] + [n for n in args.variants.split(",") if n and n != "today"]
    names_more = ["today"] + [n for n in (args.variants_more_threads or args.variants).split(",") if n and n != "today"]
    unknown = sorted({part for n in names + names_more for part in n.split("+") if part not in VARIANTS})
    if unknown:
        raise SystemExit(f"error: unknown --variants {unknown}; expected some of {list(VARIANTS)}")
    script, train_args = small_preset_args()
    print(cpu_description())
    print(f"small preset: batch {train_args.train_batch_size}, {train_args.preset_spec['image_size']}x"
          f"{train_args.preset_spec['image_size']} pixels; {args.rounds} rounds x {args.steps} steps per variant, "
          f"after {args.warmup} warm-up steps")
    thread_counts, fast = [int(t) for t in args.threads.split(",")], []
    for threads in thread_counts:
        torch.set_num_threads(threads)
        phase = names if threads == thread_counts[0] else names_more
        steps, losses = {}, {}
        for name in phase:
            step, loss, seconds = warmed(script, train_args, variant_options(name), args.warmup, args.compile_limit_s)
            if step is None:
                print(f"  {name}: no compiled step within {args.compile_limit_s:.0f} s; left out")
                continue
            if variant_options(name).get("compile_unet"):
                print(f"  {name}: compiled and warmed up in {seconds:.0f} s")
            steps[name], losses[name] = step, loss
        if threads == 1 and args.profile:
            profile_today(steps["today"])
        reference = f"today on {thread_counts[0]} thread{'s' * (thread_counts[0] > 1)}"
        if threads != thread_counts[0]:  # the thread counts compared within each round too
            steps[reference], losses[reference] = steps["today"], losses["today"]
        # each round: today, variant 1, today, variant 2, ..., today; a variant's ratio is to the mean of
        # the two todays beside it (load that changes during a round hits a pair alike)
        ratios = {name: ([], []) for name in steps}
        rates = {name: [] for name in steps}
        for _ in range(args.rounds):
            before = steps["today"].rate(args.steps)
            rates["today"].append(before)
            for name, step in steps.items():
                if name == "today":
                    continue
                torch.set_num_threads(thread_counts[0] if name == reference else threads)
                rate = step.rate(args.steps)
                torch.set_num_threads(threads)
                after = steps["today"].rate(args.steps)
                rates[name].append(rate)
                rates["today"].append(after)
                for kind in (0, 1):  # wall, CPU
                    ratios[name][kind].append(2 * rate[kind] / (before[kind] + after[kind]))
                before = after
        print(f"\n{threads} thread{'s' * (threads > 1)}: images/s (wall | per CPU-second x threads), ratio to today "
              f"(wall | CPU; medians over {args.rounds} rounds)")
        print(f"  {'variant':44s} {'images/s':>13s} {'vs today':>13s}  same loss (2nd step, vs {losses['today']:.6f})")
        for name in steps:
            wall, cpu = (statistics.median(r[kind] for r in rates[name]) for kind in (0, 1))
            ratio = [statistics.median(ratios[name][kind]) if name != "today" else 1.0 for kind in (0, 1)]
            if any(part in CHANGES_THE_BATCH for part in name.split("+")):
                same = "n/a (another batch)"
            else:
                diff = abs(losses[name] - losses["today"])
                same = f"{'yes' if diff <= 1e-5 else 'NO'} (|diff| {diff:.1e})"
            print(f"  {name:44s} {wall:6.1f} | {cpu:5.1f} {ratio[0]:5.2f}x | {ratio[1]:4.2f}x  {same}")
            if min(ratio) >= 1.2 and name not in ("today", reference):
                fast.append(f"{name} ({threads} thread{'s' * (threads > 1)}, {ratio[0]:.2f}x | {ratio[1]:.2f}x, same loss: {same})")
    print("\n>= 1.2x: " + ("; ".join(fast) if fast else "none"))


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="bench_train_step.py")
