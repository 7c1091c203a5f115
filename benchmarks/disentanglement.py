#!/usr/bin/env python
"""EncDiff beside β-VAE, β-TCVAE and FactorVAE on procedural Shapes3D, under one wall-clock budget.

    python benchmarks/disentanglement.py --budget_minutes 20 --eval_every_minutes 5 --seeds 1
    python benchmarks/disentanglement.py --dataset 3dshapes.h5 --budget_minutes 20   # a real file, resized
    python benchmarks/disentanglement.py --smoke                      # seconds per method: a plumbing check
    python benchmarks/disentanglement.py --methods encdiff --ablations schedules,tokens --budget_minutes 20

Each method trains in its own process; `--jobs J` runs J of them at once (give each
`--num_threads` = cores / J so that they do not compete for cores), one after the other by default.
EncDiff through `training/train_encdiff.py`, the baselines through `training/train_baseline.py`.
Both read the same data (uniform draws over the whole procedural grid), score their representation
on the same held sub-grid with the same metric code (`encdiff_pipeline.training.validation.concept_metrics`:
FactorVAE, DCI, MIG) at intervals, and log to `RUN/logs/train_log.jsonl`. Curves are plotted
against *training* seconds (validation excluded) and images seen.

Writes to `--output_dir`: `results.json` (settings, machine, every curve, summary), `results.md`
(the table: mean ± std over seeds), `learning_curves.png` (FactorVAE and DCI vs training seconds
and vs images seen, one line per method), `grids/METHOD_swap.png` and `grids/METHOD_traversal.png`
(seed 0), and the run folders under `runs/`. `--report_only` rebuilds the report from those runs.
The table is printed at the end.

`--dataset` trains every method on another factor dataset (a `3dshapes.h5`, a dSprites or MPI3D
`.npz`, ...): the training scripts resize it to `--image_size` (and say so in their logs) and score
the whole dataset as the held set.

EncDiff ablations (`--ablations`) are forwarded to train_encdiff.py as its flags.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Optional

import numpy as np

from encdiff_pipeline.atomic import atomic_path, write_text
from encdiff_pipeline.data.run_data import HELD_GRID  # the training scripts' default held set
from encdiff_pipeline.factor_importance import analyse
from encdiff_pipeline.image_range import to_model_input
from encdiff_pipeline.noise_schedules import NOISE_SCHEDULES
from encdiff_pipeline.training.factor_data import PROCEDURAL, load_dataset
from encdiff_pipeline.training.presets import load_preset
from encdiff_pipeline.training.script_env import script_env
from encdiff_pipeline.training.validation import read_log  # the training scripts' JSON-lines log

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TRAINING = os.path.join(REPO, "training")

BASELINE_METHODS = ("beta_vae", "beta_tcvae", "factor_vae")
LABELS = {"encdiff": "EncDiff", "beta_vae": "β-VAE", "beta_tcvae": "β-TCVAE", "factor_vae": "FactorVAE"}
# ablation group -> {method name: (train_encdiff.py flags it needs, what the method changes)}
ABLATIONS: dict[str, dict[str, tuple[list[str], str]]] = {
    "tokens": {"encdiff_vector": (["--config"], "vector tokens (EncDiff-V)")},
    "schedules": {f"encdiff_{s}": (["--beta_schedule"], f"{s} noise schedule") for s in NOISE_SCHEDULES},
    "adagn": {"encdiff_adagn": (["--conditioning"], "tokens through AdaGN instead of cross-attention")},
    "no_diffusion": {"encdiff_no_diffusion": (["--decoder_type"], "encoder + deterministic decoder, no diffusion")},
}
METRIC_KEYS = ("factor_vae", "dci_disentanglement", "dci_completeness", "dci_informativeness", "mig")


def parse_args(argv: Optional[list[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--methods", default="encdiff,beta_vae,beta_tcvae,factor_vae",
                   help="comma list of encdiff, beta_vae, beta_tcvae, factor_vae")
    p.add_argument("--dataset", default=PROCEDURAL,
                   help="factor dataset of every method: procedural-shapes3d or a file/folder (resized to --image_size)")
    p.add_argument("--ablations", default="", help=f"comma list of EncDiff ablation groups {sorted(ABLATIONS)} or 'all'")
    p.add_argument("--budget_minutes", type=float, default=20.0, help="training time per method and seed")
    p.add_argument("--eval_every_minutes", type=float, default=None, help="validation interval (default: budget / 4)")
    p.add_argument("--seeds", type=int, default=1, help="seeds per method (0, 1, ...)")
    p.add_argument("--run_seeds", default=None,
                   help="comma list of the seeds (of 0 .. seeds-1) to train now; the others are read from earlier "
                        "runs in output_dir (split a long comparison over several invocations)")
    p.add_argument("--image_size", type=int, default=None, help="image side (default: the EncDiff preset's)")
    p.add_argument("--metric_num_train", type=int, default=10000, help="metric training samples (protocol: 10000)")
    p.add_argument("--metric_num_eval", type=int, default=5000, help="metric evaluation samples (protocol: 5000)")
    p.add_argument("--held_factor_sizes", type=json.loads, default=HELD_GRID,
                   help="held sub-grid the metrics score: classes kept per Shapes3D factor, the loaders' "
                        "factor_sizes option in JSON (e.g. '[5,5,5,4,4,5]'), as the training scripts' "
                        "--validation_dataset_options spell it")
    p.add_argument("--encdiff_preset", default="small", help="train_encdiff.py --preset")
    p.add_argument("--encdiff_args", default="", help="extra arguments for train_encdiff.py (one string)")
    p.add_argument("--baseline_args", default="", help="extra arguments for train_baseline.py (one string)")
    p.add_argument("--inference_steps", type=int, default=20, help="DDIM steps of EncDiff's swap/traversal grids")
    p.add_argument("--num_threads", type=int, default=None,
                   help="OMP_NUM_THREADS of the training processes (default: torch's choice; --smoke: 1)")
    p.add_argument("--jobs", type=int, default=1,
                   help="training processes at once (pair with --num_threads so that jobs x threads <= cores)")
    p.add_argument("--output_dir", default="benchmark_results/disentanglement", help="where runs and the report go")
    p.add_argument("--report_only", action="store_true", help="do not train: rebuild the report from output_dir/runs")
    p.add_argument("--import_results", default=None,
                   help="an earlier results.json whose runs of --import_methods are reported as they are (not trained here)")
    p.add_argument("--import_methods", default="", help="comma list of the methods taken from --import_results")
    p.add_argument("--importance", action=argparse.BooleanOptionalAction, default=True,
                   help="per-factor accuracy and completeness of every run (DCI's importance matrix, 2,000 / 1,000 samples)")
    p.add_argument("--smoke", action="store_true",
                   help="plumbing check: seconds per method, tiny grids, tiny models, tiny metric protocol")
    args = p.parse_args(argv)
    args.methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = [m for m in args.methods if m not in ("encdiff", *BASELINE_METHODS)]
    if unknown:
        p.error(f"unknown --methods {unknown}; expected encdiff, {', '.join(BASELINE_METHODS)}")
    groups = [g.strip() for g in args.ablations.split(",") if g.strip()]
    args.ablations = sorted(ABLATIONS) if groups == ["all"] else groups
    if set(args.ablations) - set(ABLATIONS):
        p.error(f"unknown --ablations {sorted(set(args.ablations) - set(ABLATIONS))}; expected {sorted(ABLATIONS)} or all")
    args.import_methods = [m.strip() for m in args.import_methods.split(",") if m.strip()]
    if args.import_methods and not (args.import_results and os.path.isfile(args.import_results)):
        p.error(f"--import_methods needs --import_results FILE (an earlier results.json), got {args.import_results!r}")
    if set(args.import_methods) & set(args.methods):
        p.error(f"--import_methods {args.import_methods} must not also be trained (--methods {args.methods})")
    args.train_factor_sizes = None  # the whole grid
    if args.smoke:
        args.budget_minutes, args.eval_every_minutes, args.seeds = 0.15, 0.05, 1
        args.metric_num_train, args.metric_num_eval, args.inference_steps = 200, 100, 2
        args.held_factor_sizes, args.train_factor_sizes = [2, 2, 2, 2, 2, 2], [2, 2, 2, 2, 2, 3]
        args.encdiff_preset = "tiny"
        args.num_threads = args.num_threads or 1
        args.baseline_args = (args.baseline_args + " --width 16 --train_batch_size 8").strip()
        if args.output_dir == p.get_default("output_dir"):
            args.output_dir = "benchmark_results/disentanglement_smoke"
    if args.eval_every_minutes is None:
        args.eval_every_minutes = args.budget_minutes / 4
    try:
        preset_size = load_preset(args.encdiff_preset)["image_size"]
    except ValueError as err:
        p.error(str(err))
    uses_encdiff = "encdiff" in args.methods or args.ablations
    if args.image_size is None:
        args.image_size = preset_size
    elif uses_encdiff and args.image_size != preset_size:
        p.error(f"--image_size {args.image_size}: EncDiff preset {args.encdiff_preset!r} is built for {preset_size}")
    if args.budget_minutes <= 0 or args.eval_every_minutes <= 0 or args.seeds < 1 or args.jobs < 1:
        p.error("--budget_minutes and --eval_every_minutes must be > 0, --seeds and --jobs >= 1")
    try:
        args.run_seeds = (list(range(args.seeds)) if args.run_seeds is None
                          else [int(s) for s in args.run_seeds.split(",") if s.strip()])
    except ValueError:
        p.error(f"--run_seeds {args.run_seeds!r}: expected a comma list of integers, e.g. 1,2")
    if not set(args.run_seeds) <= set(range(args.seeds)):
        p.error(f"--run_seeds {args.run_seeds}: each must be one of 0 .. {args.seeds - 1} (--seeds {args.seeds})")
    return args


# -- what to run ----------------------------------------------------------------------------------
def plan_methods(args) -> tuple[list[str], list[str]]:
    """(methods to run, ablations skipped with the reason)."""
    methods, skipped = list(args.methods), []
    default_schedule = load_preset(args.encdiff_preset)["training"].get("beta_schedule")
    for group in args.ablations:
        for name in ABLATIONS[group]:
            if name == f"encdiff_{default_schedule}" and "encdiff" in methods:
                skipped.append(f"{name}: the same run as encdiff (the {args.encdiff_preset!r} preset's schedule)")
            elif name not in methods:
                methods.append(name)
    return methods, skipped


def encdiff_command(args, method: str, seed: int, run_dir: str) -> list[str]:
    """train_encdiff.py's command line for EncDiff or one of its ablations."""
    cmd = [sys.executable, os.path.join(TRAINING, "train_encdiff.py"), *dataset_flags(args),
           "--output_dir", run_dir, "--seed", str(seed),
           "--max_train_minutes", str(args.budget_minutes), "--validation_minutes", str(args.eval_every_minutes),
           "--checkpointing_steps", str(10**9), "--checkpoints_total_limit", "1",
           "--metric_num_train", str(args.metric_num_train), "--metric_num_eval", str(args.metric_num_eval),
           "--validation_inference_steps", str(args.inference_steps), "--report_to", "none"]
    if method == "encdiff_vector":
        cmd += ["--config", vector_token_config(args, run_dir)]
    else:
        cmd += ["--preset", args.encdiff_preset]
    if method.removeprefix("encdiff_") in NOISE_SCHEDULES:
        cmd += ["--beta_schedule", method.removeprefix("encdiff_")]
    if method == "encdiff_adagn":
        cmd += ["--conditioning", "adagn"]
    if method == "encdiff_no_diffusion":
        cmd += ["--decoder_type", "deterministic"]
    return cmd + args.encdiff_args.split()


def dataset_flags(args) -> list[str]:
    """The training scripts' dataset flags: procedural data on the (smoke) training grid and the held
    sub-grid at `--image_size`; any other dataset as it is (the scripts resize it, and hold it all out)."""
    if args.dataset != PROCEDURAL:
        return ["--dataset", args.dataset]
    dataset_options = {"image_size": args.image_size}
    if args.train_factor_sizes:
        dataset_options["factor_sizes"] = args.train_factor_sizes
    return ["--dataset", PROCEDURAL, "--dataset_options", json.dumps(dataset_options),
            "--validation_dataset_options", json.dumps({"image_size": args.image_size, "factor_sizes": args.held_factor_sizes})]


def load_held(args):
    """The held set the metrics score, at `--image_size` (a real dataset says so when it is resized)."""
    if args.dataset == PROCEDURAL:
        return load_dataset(PROCEDURAL, {"image_size": args.image_size, "factor_sizes": args.held_factor_sizes})
    return load_dataset(args.dataset, {"image_size": args.image_size})


def vector_token_config(args, run_dir: str) -> str:
    """A preset file: the EncDiff preset with vector tokens (EncDiff-V)."""
    preset = load_preset(args.encdiff_preset)
    preset["encoder"]["token_type"] = "vector"
    path = os.path.join(os.path.dirname(run_dir), f"{os.path.basename(run_dir)}_preset.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(preset, f, indent=2)
    return path


def baseline_command(args, method: str, seed: int, run_dir: str) -> list[str]:
    return [sys.executable, os.path.join(TRAINING, "train_baseline.py"), "--model", method, *dataset_flags(args),
            "--image_size", str(args.image_size), "--output_dir", run_dir, "--seed", str(seed),
            "--max_train_minutes", str(args.budget_minutes), "--validation_minutes", str(args.eval_every_minutes),
            "--metric_num_train", str(args.metric_num_train), "--metric_num_eval", str(args.metric_num_eval),
            ] + args.baseline_args.split()


def run(args, method: str, seed: int) -> dict:
    """Train one method with one seed in a subprocess; its output goes to RUN.log beside the run folder."""
    run_dir = os.path.join(args.output_dir, "runs", method, f"seed{seed}")
    shutil.rmtree(run_dir, ignore_errors=True)
    os.makedirs(os.path.dirname(run_dir), exist_ok=True)
    build = baseline_command if method in BASELINE_METHODS else encdiff_command
    cmd = build(args, method, seed, run_dir)
    print(f"\n== {method}, seed {seed} started: {' '.join(cmd[1:])}", flush=True)
    t0 = time.time()
    with open(run_dir + ".log", "w", encoding="utf-8") as log:
        code = subprocess.run(cmd, cwd=REPO, env=script_env(REPO, args.num_threads), stdout=log, stderr=subprocess.STDOUT).returncode
    message = f"== {method}, seed {seed}: exit {code} after {time.time() - t0:.0f} s wall-clock"
    if code != 0:
        with open(run_dir + ".log", encoding="utf-8") as f:
            message += "\n   " + "   ".join(f.readlines()[-15:])
    print(message, flush=True)
    return {"method": method, "seed": seed, "exit_code": code, "command": cmd}


# -- reading runs ---------------------------------------------------------------------------------
def learning_curve(records: list[dict]) -> list[dict]:
    """Validation points with `train_seconds` (validation time excluded) and `images_seen`: the
    training scripts log both in every validation record, taken as they are."""
    return [{k: v for k, v in r.items() if k not in ("event", "images")} for r in records if r.get("event") == "validation"]


def collect(args, methods: list[str]) -> list[dict]:
    """Every run's learning curve (runs that left no log are reported with an empty curve)."""
    runs = []
    for method in methods:
        for seed in range(args.seeds):
            run_dir = os.path.join(args.output_dir, "runs", method, f"seed{seed}")
            log = os.path.join(run_dir, "logs", "train_log.jsonl")
            curve = learning_curve(read_log(log)) if os.path.exists(log) else []
            runs.append({"method": method, "seed": seed, "run_dir": os.path.relpath(run_dir, args.output_dir),
                         "curve": curve, "final": curve[-1] if curve else None})
    if args.import_methods:
        with open(args.import_results, encoding="utf-8") as f:
            earlier = json.load(f)
        for run in earlier.get("runs", []):
            if run["method"] in args.import_methods:
                runs.append({**run, "imported_from": {"file": os.path.basename(args.import_results),
                                                      "machine": earlier.get("machine")}})
    return runs


def add_importance(args, runs: list[dict]) -> None:
    """Per run (procedural data, run folder present): held-out accuracy and completeness of each factor."""

    for run in runs:
        run_dir = os.path.join(args.output_dir, run["run_dir"])
        if run.get("imported_from") or not run["final"] or not os.path.isdir(run_dir):
            continue
        cached = os.path.join(run_dir, "importance.json")  # written once per finished run
        if os.path.exists(cached) and os.path.getmtime(cached) >= os.path.getmtime(os.path.join(run_dir, "logs", "train_log.jsonl")):
            with open(cached, encoding="utf-8") as f:
                result = json.load(f)
        else:
            try:
                result = {k: np.asarray(v).tolist() for k, v in analyse(run_dir, image_size=args.image_size, num_train=2000,
                                                                         num_test=1000).items()}
            except (OSError, ValueError) as err:  # e.g. a run still training: no saved model yet
                print(f"   no importance for {run['method']} seed {run['seed']}: {err}", flush=True)
                continue
            with open(cached, "w", encoding="utf-8") as f:
                json.dump(result, f, indent=1)
        run["importance"] = {key: result[key] for key in ("factor_names", "accuracy", "completeness")}


def summarise(runs: list[dict]) -> dict[str, dict[str, Any]]:
    """Per method: mean and std (ddof=0) over seeds of the final validation's numbers."""
    summary: dict[str, dict[str, Any]] = {}
    for method in dict.fromkeys(r["method"] for r in runs):
        finals = [r["final"] for r in runs if r["method"] == method and r["final"]]
        entry: dict[str, Any] = {"seeds": len(finals)}
        for key in (*METRIC_KEYS, "train_seconds", "images_seen"):
            values = [f[key] for f in finals if f.get(key) is not None]
            if values:
                entry[key] = {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}
        importances = [r["importance"] for r in runs if r["method"] == method and r.get("importance")]
        if importances:
            entry["importance"] = {"factor_names": importances[0]["factor_names"], "n": len(importances),
                                   **{key: np.mean([i[key] for i in importances], axis=0).tolist()
                                      for key in ("accuracy", "completeness")}}
        if any(r.get("imported_from") for r in runs if r["method"] == method):
            entry["imported"] = True
        summary[method] = entry
    return summary


def label(method: str) -> str:
    if method in LABELS:
        return LABELS[method]
    return "EncDiff " + method.removeprefix("encdiff_").replace("_", "-")


def markdown_table(summary: dict[str, dict[str, Any]]) -> str:
    """The results table; mean ± std when a method has more than one seed."""
    def cell(entry: dict, key: str, fmt: str = "{:.3f}") -> str:
        if key not in entry:
            return "–"
        value = entry[key]
        text = fmt.format(value["mean"])
        return text + (" ± " + fmt.format(value["std"]) if value["n"] > 1 else "")

    lines = ["| method | seeds | train s | images seen | FactorVAE | DCI | completeness | informativeness | MIG |",
             "|---|---|---|---|---|---|---|---|---|"]
    for method, entry in summary.items():
        lines.append(f"| {label(method)} | {entry['seeds']} | {cell(entry, 'train_seconds', '{:.0f}')} | "
                     f"{cell(entry, 'images_seen', '{:.0f}')} | {cell(entry, 'factor_vae')} | "
                     f"{cell(entry, 'dci_disentanglement')} | {cell(entry, 'dci_completeness')} | "
                     f"{cell(entry, 'dci_informativeness')} | {cell(entry, 'mig')} |")
    return "\n".join(lines)


def importance_table(summary: dict[str, dict[str, Any]]) -> str:
    """Per method: held-out accuracy / completeness of each factor (mean over seeds), or '' if none."""
    rows = [(method, entry["importance"]) for method, entry in summary.items() if "importance" in entry]
    if not rows:
        return ""
    names = rows[0][1]["factor_names"]
    lines = ["", "", "Per factor, held-out accuracy / completeness (DCI's importance matrix; mean over seeds):", "",
             "| method | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)]
    for method, imp in rows:
        lines.append(f"| {label(method)} | " + " | ".join(f"{a:.2f} / {c:.2f}" for a, c in zip(imp["accuracy"], imp["completeness"]))
                     + " |")
    return "\n".join(lines)


def mean_curve(runs: list[dict], x_key: str, metric: str) -> tuple[list[float], list[float]]:
    """The mean over seeds of one method's curve, validation by validation (as far as every seed goes)."""
    curves = [[p for p in r["curve"] if p.get(x_key) is not None and p.get(metric) is not None] for r in runs]
    length = min((len(c) for c in curves), default=0)
    return ([float(np.mean([c[i][x_key] for c in curves])) for i in range(length)],
            [float(np.mean([c[i][metric] for c in curves])) for i in range(length)])


def plot_curves(runs: list[dict], path: str, title: str) -> None:
    """FactorVAE and DCI against training seconds and images seen; one colour per method, the mean over
    seeds drawn thick and each seed thin."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 2, figsize=(11, 8), sharey="row")
    methods = list(dict.fromkeys(r["method"] for r in runs))
    colours = {m: plt.get_cmap("tab10")(i % 10) for i, m in enumerate(methods)}
    for method in methods:  # thin lines: each seed; thick: the mean over seeds
        method_runs = [r for r in runs if r["method"] == method and r["curve"]]
        for row, metric in enumerate(("factor_vae", "dci_disentanglement")):
            for col, x_key in enumerate(("train_seconds", "images_seen")):
                for run in method_runs if len(method_runs) > 1 else []:
                    points = [p for p in run["curve"] if p.get(x_key) is not None]
                    axes[row, col].plot([p[x_key] for p in points], [p.get(metric, np.nan) for p in points],
                                        lw=0.8, color=colours[method], alpha=0.35)
                xs, ys = mean_curve(method_runs, x_key, metric)
                seeds = f" ({len(method_runs)} seeds)" if len(method_runs) > 1 else ""
                axes[row, col].plot(xs, ys, marker="o", ms=3, lw=2, color=colours[method], label=label(method) + seeds)
    for row, name in enumerate(("FactorVAE score", "DCI disentanglement")):
        axes[row, 0].set_ylabel(name)
        for col, x_name in enumerate(("training seconds (validation excluded)", "images seen")):
            axes[row, col].set_xlabel(x_name)
            axes[row, col].grid(alpha=0.3)
    axes[0, 0].legend(loc="best", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


# -- grids ----------------------------------------------------------------------------------------
def collect_grids(args, methods: list[str]) -> dict[str, dict[str, str]]:
    """Copy each method's seed-0 swap grid (and traversal grid) into output_dir/grids."""
    grids_dir = os.path.join(args.output_dir, "grids")
    os.makedirs(grids_dir, exist_ok=True)
    grids: dict[str, dict[str, str]] = {}
    for method in methods:
        run_dir = os.path.join(args.output_dir, "runs", method, "seed0")
        if not os.path.exists(os.path.join(run_dir, "swap.png")):
            continue
        if method not in BASELINE_METHODS and not os.path.exists(os.path.join(run_dir, "traversal.png")):
            try:
                encdiff_traversal(args, run_dir)
            except Exception as err:  # a missing traversal must not lose the report
                print(f"   no traversal grid for {method}: {err}", flush=True)
        for kind in ("swap", "traversal"):
            source = os.path.join(run_dir, f"{kind}.png")
            if os.path.exists(source):
                target = os.path.join(grids_dir, f"{method}_{kind}.png")
                shutil.copyfile(source, target)
                grids.setdefault(method, {})[kind] = os.path.relpath(target, args.output_dir)
    return grids


def encdiff_traversal(args, run_dir: str, num_images: int = 8, num_values: int = 8) -> None:
    """traversal.png of a finished EncDiff run: row k sweeps concept k of a held image over the range
    concept k takes on a few held images (same images as the baselines' grids)."""
    import torch

    from encdiff_pipeline.pipeline_encdiff import EncDiffPipeline
    from encdiff_pipeline.visualization import image_grid

    pipe = EncDiffPipeline.from_pretrained(run_dir)
    if pipe.encoder.config.token_type != "scalar":
        return
    pipe.set_progress_bar_config(disable=True)
    held = load_held(args)
    rng = np.random.RandomState(0)
    images = to_model_input(held.get_images(rng.choice(len(held), num_images, replace=False)))
    concepts = pipe.encode(images)
    rows = []
    for k in range(concepts.shape[1]):
        out = pipe.traverse(images[:1], k, value_range=(float(concepts[:, k].min()), float(concepts[:, k].max())),
                            num_values=num_values, num_inference_steps=args.inference_steps,
                            generator=torch.Generator().manual_seed(0), output_type="np")
        rows.append(out.images)
    image_grid(np.stack(rows), row_labels=[f"concept {k}" for k in range(len(rows))],
               col_labels=["min"] + [""] * (num_values - 2) + ["max"], min_cell_size=64).save(os.path.join(run_dir, "traversal.png"))


# -- main -----------------------------------------------------------------------------------------
def machine() -> dict[str, Any]:
    import torch

    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "python": platform.python_version()}


def report(args, methods: list[str], skipped: list[str], launches: list[dict]) -> dict:
    runs = collect(args, methods)
    if args.importance and args.dataset == PROCEDURAL:
        add_importance(args, runs)
    summary = summarise(runs)
    grids = collect_grids(args, methods)
    settings = {k: v for k, v in vars(args).items() if k not in ("report_only",)}
    results = {"settings": settings, "machine": machine(), "skipped": skipped, "launches": launches,
               "summary": summary, "grids": grids, "runs": runs}
    procedural = args.dataset == PROCEDURAL
    name = "procedural Shapes3D" if procedural else os.path.basename(os.path.normpath(args.dataset))
    held = f"a {int(np.prod(args.held_factor_sizes))}-point held grid" if procedural else "the whole dataset"
    title = (f"{name} {args.image_size}x{args.image_size}, {args.budget_minutes:g} min training per method, "
             f"{args.seeds} seed(s); metrics on {held}")
    table = markdown_table(summary) + importance_table(summary)
    notes = [f"Budget {args.budget_minutes:g} min of training per method and seed; metrics (FactorVAE, DCI, MIG; "
             f"{args.metric_num_train} train / {args.metric_num_eval} eval samples) on "
             + (f"a held sub-grid {args.held_factor_sizes}" if procedural else "the whole dataset")
             + f" every ~{args.eval_every_minutes:g} min; final validation shown"
             + ("; mean ± std over seeds" if args.seeds > 1 else "") + ".",
             f"Machine: {results['machine']['processor']}, {results['machine']['cpu_count']} CPUs, "
             f"torch {results['machine']['torch']}; {args.jobs} training process(es) at once, "
             f"{args.num_threads or 'default'} thread(s) each."]
    for method, entry in summary.items():
        used = entry.get("train_seconds", {}).get("mean")
        if used is not None and used < 0.9 * 60 * args.budget_minutes:
            notes.append(f"{label(method)} trained {used:.0f} s of the {60 * args.budget_minutes:.0f} s budget.")
    for method in args.import_methods:
        machine_then = next((r["imported_from"]["machine"] for r in runs if r["method"] == method), None) or {}
        notes.append(f"{label(method)}: imported from {os.path.basename(args.import_results)} (not trained in this "
                     f"comparison; machine {machine_then.get('processor', '?')}, torch {machine_then.get('torch', '?')}).")
    notes += [f"Skipped: {s}" for s in skipped]
    failed = [f"{x['method']} seed {x['seed']} (exit {x['exit_code']})" for x in launches if x["exit_code"] != 0]
    notes += [f"Failed: {', '.join(failed)} — see runs/METHOD/seedS.log"] if failed else []
    markdown = f"# Disentanglement on {name}\n\n{table}\n\n" + "\n".join(f"- {n}" for n in notes)
    markdown += "\n\n![learning curves](learning_curves.png)\n"
    for method, paths in grids.items():
        markdown += "".join(f"\n{label(method)} {kind}: ![{method} {kind}]({path})\n" for kind, path in paths.items())
    for name, text in (("results.json", json.dumps(results, indent=2, default=str)), ("results.md", markdown)):
        write_text(os.path.join(args.output_dir, name), text)
    plot_curves(runs, os.path.join(args.output_dir, "learning_curves.png"), title)
    print("\n" + table + "\n" + "\n".join(notes), flush=True)
    print(f"\nwrote {os.path.join(args.output_dir, 'results.md')}, results.json, learning_curves.png, grids/", flush=True)
    return results


def main(args: argparse.Namespace) -> dict:
    methods, skipped = plan_methods(args)
    for line in skipped:
        print(f"skipped: {line}", flush=True)
    # launches recorded by earlier invocations on this output_dir; a method re-run here replaces its own
    launches = []
    if os.path.exists(os.path.join(args.output_dir, "results.json")):
        with open(os.path.join(args.output_dir, "results.json"), encoding="utf-8") as f:
            launches = json.load(f).get("launches", [])
    if not args.report_only:
        if args.dataset != PROCEDURAL:
            load_held(args)  # a dataset that cannot be opened stops here, before any training
        total = len(methods) * len(args.run_seeds) * args.budget_minutes
        print(f"training {methods} x seed(s) {args.run_seeds}, {args.budget_minutes:g} min each, {args.jobs} at once: "
              f"at least {total / args.jobs:g} min plus validation", flush=True)
        todo = [(method, seed) for seed in args.run_seeds for method in methods]
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # threads that each wait on one process
            done = list(pool.map(lambda job: run(args, *job), todo))
        launches = [x for x in launches if (x["method"], x["seed"]) not in set(todo)] + done
    return report(args, methods, skipped, launches)


if __name__ == "__main__":
    from encdiff_pipeline.cli import exit_with

    exit_with(main, parse_args(), prog="disentanglement.py")
