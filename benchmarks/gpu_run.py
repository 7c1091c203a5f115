#!/usr/bin/env python
"""The paper recipe on one GPU, measured by one command: speed knobs, a timed training run, a report.

    python benchmarks/gpu_run.py --output_dir runs/gpu_run            # ~8 minutes on one GPU
    python benchmarks/gpu_run.py --smoke --output_dir /tmp/gpu_smoke  # CPU, tiny models, seconds of compute

Steps (the device is CUDA when `torch.cuda.is_available()`, else the CPU):
1. the environment: torch, CUDA, GPU name, CPU count;
2. training images/s of the `paper` preset (34.8M U-Net on 16x16x3 latents + the paper's concept
   encoder on 64x64 pixels, batch 128; encdiff_pipeline.training.throughput.TrainStep) under each knob alone: fp32 (the
   baseline: NCHW, foreach AdamW), bf16 autocast, TF32, torch.compile of the U-Net, channels_last,
   fused AdamW; then all knobs faster than the baseline together ("best");
3. a quickly trained VQ f=4 first stage (train_autoencoder.py --preset paper for `--vq_minutes`; or
   `--vq_path` of a trained one), and its latent cache of the whole procedural grid (latent_cache.py);
4. train_encdiff.py --preset paper on procedural Shapes3D 64x64 with the best knobs, the device-
   resident data and the latent cache, for `--train_minutes` of training time, validating every
   `--validation_minutes` (FactorVAE / DCI / MIG on the held 10,000-point grid);
5. `report.json` + `report.md` in `--output_dir`: images/s per knob, images seen, the metrics over
   training time, the projected time to 3.6M images (the release's training length; the README gives
   what a re-run of the release reached).

`--smoke` runs the same steps on the CPU with the `tiny` models (a 16x16 latent preset on a tiny VQ,
a 96-image grid, a few steps; torch.compile skipped: it needs minutes of C++ compilation on a CPU).
"""
from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import subprocess
import sys
import time

import torch

from encdiff_pipeline.training.presets import ENCDIFF_PRESETS
from encdiff_pipeline.training.script_env import script_env
from encdiff_pipeline.training.throughput import TrainStep

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

TARGET_IMAGES = 3_600_000
# knob name -> (TrainStep options, train_encdiff.py flags)
KNOBS: dict[str, tuple[dict, list[str]]] = {
    "fp32": ({}, []),
    "bf16": ({"autocast": True}, ["--mixed_precision", "bf16"]),
    "tf32": ({"tf32": True}, ["--allow_tf32"]),
    "compile": ({"compile_unet": True}, ["--compile_unet"]),
    "channels_last": ({"channels_last": True}, ["--channels_last"]),
    "fused_adamw": ({"adamw": "fused"}, ["--fused_adamw"]),
}
# the smoke run's stand-in for the paper preset: latent diffusion on a tiny VQ at 16x16 pixels (4x4x3 latents)
SMOKE_PRESET = {"image_size": 16, "latent": True, "unet_preset": "tiny",
                "encoder": {"num_concepts": 3, "token_dim": 8, "width": 8, "mlp_hidden_dims": [8, 8]},
                "training": {"learning_rate": 1e-3, "lr_warmup_steps": 0, "train_batch_size": 4}}
SMOKE_DATA = {"factor_sizes": [2, 2, 2, 2, 2, 3]}


def environment(device: torch.device) -> dict:
    env = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
           "device": str(device), "cpus": os.cpu_count()}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        env.update(gpu=props.name, gpu_memory_gib=round(props.total_memory / 2**30, 1), cudnn=torch.backends.cudnn.version())
    return env


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def knob_rate(name: str, options: dict, shape: dict, device: torch.device, steps: int, warmup: int) -> float:
    """Training images/s of one TrainStep under `options` (TF32 set globally for the measurement)."""
    options = dict(options)
    tf32 = options.pop("tf32", False)
    previous = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = bool(tf32)
    try:
        step = TrainStep(device=str(device), **{"adamw": "foreach", **shape, **options})
        for _ in range(warmup + (2 if options.get("compile_unet") else 0)):
            step()
        sync(device)
        start = time.perf_counter()
        for _ in range(steps):
            step()
        sync(device)
        return steps * step.batch / (time.perf_counter() - start)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = previous
        step = None
        gc.collect()
        if device.type == "cuda":
            torch.cuda.empty_cache()


def measure_knobs(args, device: torch.device) -> dict:
    """images/s per knob, its speedup over fp32, and the best combination (knobs >= 2% faster)."""
    spec = SMOKE_PRESET if args.smoke else ENCDIFF_PRESETS["paper"]
    encoder = dict(spec["encoder"])
    shape = {"preset": spec["unet_preset"], "batch": args.batch, "image_size": spec["image_size"],
             "latent_size": spec["image_size"] // 4, "num_concepts": encoder.pop("num_concepts"),
             "token_dim": encoder.pop("token_dim"), "encoder_kwargs": encoder}
    results = {}
    for name, (options, _) in KNOBS.items():
        if name == "compile" and device.type != "cuda":
            results[name] = {"skipped": "torch.compile on a CPU compiles C++ for minutes; measured on CUDA only"}
            print(f"  {name:14s} skipped on CPU", flush=True)
            continue
        start = time.perf_counter()
        rate = knob_rate(name, options, shape, device, args.knob_steps, warmup=1)
        results[name] = {"images_per_s": round(rate, 1), "seconds": round(time.perf_counter() - start, 1)}
        print(f"  {name:14s} {rate:10.1f} images/s ({results[name]['seconds']:.0f} s)", flush=True)
    base = results["fp32"]["images_per_s"]
    for r in results.values():
        if "images_per_s" in r:
            r["speedup"] = round(r["images_per_s"] / base, 3)
    best = [n for n, r in results.items() if n != "fp32" and r.get("speedup", 0) >= 1.02]
    options = {k: v for n in best for k, v in KNOBS[n][0].items()}
    rate = knob_rate("best", options, shape, device, args.knob_steps, warmup=1) if best else base
    results["best"] = {"knobs": best, "images_per_s": round(rate, 1), "speedup": round(rate / base, 3)}
    print(f"  best {'+'.join(best) or '(fp32)'}: {rate:.1f} images/s ({rate / base:.2f}x)", flush=True)
    return results


def run(command: list[str], timeout: float, log_path: str) -> float:
    """Run a stage (a python script) with its output in `log_path`; its wall seconds; stop on failure."""
    start = time.perf_counter()
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.run([sys.executable, *command], cwd=ROOT, env=script_env(ROOT), stdout=log, stderr=subprocess.STDOUT,
                              timeout=timeout)
    if proc.returncode != 0:
        tail = open(log_path, encoding="utf-8").read()[-3000:]
        raise SystemExit(f"error: {' '.join(command[:1])} failed (exit {proc.returncode}); its log {log_path}:\n{tail}")
    return time.perf_counter() - start


def train_first_stage(args, out: str) -> tuple[str, float]:
    if args.vq_path:
        return args.vq_path, 0.0
    vq = os.path.join(out, "vq")
    if args.smoke:
        extra = ["--preset", "tiny", "--image_size", "16", "--dataset_options", json.dumps(SMOKE_DATA),
                 "--max_train_steps", "2", "--train_batch_size", "4", "--num_validation_images", "4"]
    else:
        extra = ["--preset", "paper", "--image_size", "64", "--max_train_minutes", str(args.vq_minutes),
                 "--train_batch_size", "128", "--num_validation_images", "64"]
    seconds = run([os.path.join(ROOT, "training", "train_autoencoder.py"), "--output_dir", vq, "--checkpointing_steps",
                   "1000000", *extra], timeout=600, log_path=os.path.join(out, "vq.log"))
    return vq, seconds


def write_latent_cache(args, vq: str, out: str, workers: int) -> tuple[str, float]:
    path = os.path.join(out, "latents.safetensors")
    data = ["--image_size", "16", "--dataset_options", json.dumps(SMOKE_DATA)] if args.smoke else ["--image_size", "64"]
    seconds = run(["-m", "encdiff_pipeline.training.latent_cache", "--vae_path", vq, "--output", path, "--uint8",
                   "--num_workers", str(workers), *data], timeout=900, log_path=os.path.join(out, "latent_cache.log"))
    return path, seconds


def train(args, vq: str, cache: str, out: str, flags: list[str], workers: int) -> float:
    run_dir = os.path.join(out, "encdiff")
    common = ["--output_dir", run_dir, "--vae_path", vq, "--latent_cache", cache, "--data_on_device",
              "--dataloader_num_workers", str(workers), "--checkpointing_steps", "1000000", "--report_to", "none",
              "--seed", str(args.seed), *flags]
    if args.smoke:
        config = os.path.join(out, "smoke_preset.json")
        with open(config, "w", encoding="utf-8") as f:
            json.dump(SMOKE_PRESET, f)
        common += ["--config", config, "--dataset_options", json.dumps(SMOKE_DATA), "--max_train_steps", "3",
                   "--validation_steps", "2", "--validation_dataset_options", json.dumps({"image_size": 16, **SMOKE_DATA}),
                   "--metric_num_train", "100", "--metric_num_eval", "50", "--validation_inference_steps", "2",
                   "--num_validation_images", "2"]
    else:
        common += ["--preset", "paper", "--max_train_minutes", str(args.train_minutes),
                   "--validation_minutes", str(args.validation_minutes), "--foreach_ema"]
    common += args.extra_train_args.split()
    return run([os.path.join(ROOT, "training", "train_encdiff.py"), *common],
               timeout=60 * (args.train_minutes * 4 + 10), log_path=os.path.join(out, "train.log"))


def training_summary(run_dir: str) -> dict:
    """Images seen, training time and rate, the projected time to 3.6M images, the validations over time."""
    with open(os.path.join(run_dir, "logs", "train_log.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f if line.strip()]
    train = [r for r in records if r["event"] == "train"]
    last = train[-1]
    rate = last["images_seen"] / max(last["train_seconds"], 1e-9)
    keys = ("step", "images_seen", "train_seconds", "factor_vae", "dci_disentanglement", "dci_completeness",
            "dci_informativeness", "mig")
    validations = [{k: r[k] for k in keys if k in r} for r in records if r["event"] == "validation"]
    return {"steps": last["step"], "images_seen": last["images_seen"], "train_seconds": last["train_seconds"],
            "images_per_s": round(rate, 1), "last_loss": last["loss"],
            "projected_minutes_to_3.6M_images": round(TARGET_IMAGES / rate / 60, 1), "validations": validations}


def markdown(report: dict) -> str:
    env = report["environment"]
    lines = [f"# EncDiff paper recipe on one {'GPU' if env['device'].startswith('cuda') else 'CPU'}"
             + (" (--smoke: tiny models, not the paper's figures)" if report["smoke"] else ""), "",
             "Environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), "",
             f"## Training images/s per knob (batch {report['batch']}, {report['knob_steps']} timed steps each)", "",
             "| knob | images/s | vs fp32 |", "|---|---|---|"]
    for name, r in report["knobs"].items():
        label = f"best ({'+'.join(r['knobs']) or 'fp32'})" if name == "best" else name
        lines.append(f"| {label} | {r.get('images_per_s', r.get('skipped', ''))} | {r.get('speedup', '')} |")
    t = report["training"]
    lines += ["", f"## Training run ({' '.join(report['train_flags']) or 'fp32'})", "",
              f"{t['steps']} steps, {t['images_seen']:,} images in {t['train_seconds']:.0f} s of training: "
              f"{t['images_per_s']:,.0f} images/s, so 3.6M images take {t['projected_minutes_to_3.6M_images']} minutes.",
              "", "| step | images seen | training s | FactorVAE | DCI | MIG |", "|---|---|---|---|---|---|"]
    for v in t["validations"]:
        fmt = lambda key: f"{v[key]:.3f}" if key in v else ""  # noqa: E731
        lines.append(f"| {v['step']} | {v['images_seen']:,} | {v['train_seconds']:.0f} | {fmt('factor_vae')} | "
                     f"{fmt('dci_disentanglement')} | {fmt('mig')} |")
    lines += ["", "Stage wall seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in report["stage_seconds"].items()), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--output_dir", required=True, help="folder of the report, the first stage, the cache and the run")
    p.add_argument("--smoke", action="store_true", help="CPU-sized: tiny models, a few steps (the test suite runs this)")
    p.add_argument("--batch", type=int, default=None, help="batch of the knob measurements (default 128; 4 with --smoke)")
    p.add_argument("--knob_steps", type=int, default=None, help="timed steps per knob (default 10; 1 with --smoke)")
    p.add_argument("--vq_path", default=None, help="a trained VQ first stage to use instead of training one")
    p.add_argument("--vq_minutes", type=float, default=1.0, help="training minutes of the quick VQ first stage")
    p.add_argument("--train_minutes", type=float, default=2.5, help="EncDiff training time budget (minutes)")
    p.add_argument("--validation_minutes", type=float, default=1.0, help="validate every this many training minutes")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--extra_train_args", default="", help="more train_encdiff.py flags, e.g. '--lr_warmup_steps 1000'")
    args = p.parse_args(argv)
    args.batch = args.batch or (4 if args.smoke else 128)
    args.knob_steps = args.knob_steps or (1 if args.smoke else 10)
    if args.batch < 1 or args.knob_steps < 1 or args.train_minutes <= 0 or args.validation_minutes <= 0:
        p.error("--batch and --knob_steps must be >= 1, --train_minutes and --validation_minutes > 0")
    if args.vq_path and not os.path.isfile(os.path.join(args.vq_path, "config.json")):
        p.error(f"--vq_path {args.vq_path}: no config.json (expected a folder written by train_autoencoder.py)")
    out = os.path.abspath(args.output_dir)
    os.makedirs(out, exist_ok=True)
    if os.path.exists(os.path.join(out, "encdiff")):
        p.error(f"--output_dir {out} already holds a run (encdiff/); pick a new folder")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    workers = 0 if args.smoke else max(0, min(16, (os.cpu_count() or 1) - 2))
    env = environment(device)
    print("environment: " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
    stages = {}
    start = time.perf_counter()
    print(f"training images/s per knob ({'tiny smoke models' if args.smoke else 'paper preset'}, batch {args.batch}):", flush=True)
    knobs = measure_knobs(args, device)
    stages["knobs"] = time.perf_counter() - start
    flags = [f for name in knobs["best"]["knobs"] for f in KNOBS[name][1]]
    print("first stage ...", flush=True)
    vq, stages["first_stage"] = train_first_stage(args, out)
    print(f"latent cache of {vq} ...", flush=True)
    cache, stages["latent_cache"] = write_latent_cache(args, vq, out, workers)
    print(f"training with {' '.join(flags) or 'fp32'} ...", flush=True)
    stages["training"] = train(args, vq, cache, out, flags, workers)
    summary = training_summary(os.path.join(out, "encdiff"))
    report = {"smoke": args.smoke, "environment": env, "batch": args.batch, "knob_steps": args.knob_steps,
              "knobs": knobs, "train_flags": flags, "first_stage": vq, "training": summary,
              "stage_seconds": {k: round(v, 1) for k, v in stages.items()},
              "wall_seconds": round(time.perf_counter() - start, 1)}
    with open(os.path.join(out, "report.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2)
    with open(os.path.join(out, "report.md"), "w", encoding="utf-8") as f:
        f.write(markdown(report))
    print(markdown(report))
    print(f"wrote {os.path.join(out, 'report.json')} and report.md ({report['wall_seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, prog="gpu_run.py")
