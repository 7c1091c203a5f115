"""One-call evaluation of an EncDiff model (or any encoder) on a factor dataset, and its CLI.

`evaluate` encodes every image of the dataset once, in batches, into a representation table
(vector tokens are reduced to one value each with PCA, as for EncDiff-V), then runs each metric on
that table with a fresh `np.random.RandomState(random_seed)` — the protocol behind the published
EncDiff numbers (docs/design.md §3).

Example:
    >>> from encdiff_pipeline import evaluate  # doctest: +SKIP
    >>> report = evaluate("path/to/encdiff-shapes3d", dataset="procedural-shapes3d")  # doctest: +SKIP
    >>> print(report.to_markdown())                                                   # doctest: +SKIP

CLI:
    encdiff-evaluate path/to/pipeline --dataset procedural-shapes3d --out report.json --markdown report.md
"""
from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any, Callable, Optional, Sequence, Union

import numpy as np

from .atomic import write_text
from .cli import check_distinct_outputs, check_output_file, check_output_spares_input, json_object_argument, run_cli
from .encoder_protocol import ConceptEncoder
from .metrics import METRICS, compute_representation_table, compute_tad

DEFAULT_METRICS = ("factor_vae", "dci", "mig", "sap", "modularity")
TAD_NUM_IMAGES = 1000
TAD_SEED = 30

# (metric, key in its result, display name) of the headline numbers: markdown table and model card.
HEADLINE = (
    ("factor_vae", "eval_accuracy", "FactorVAE score"),
    ("dci", "disentanglement", "DCI disentanglement"),
    ("dci", "completeness", "DCI completeness"),
    ("dci", "informativeness_test", "DCI informativeness"),
    ("mig", "discrete_mig", "MIG"),
    ("sap", "SAP_score", "SAP"),
    ("modularity", "modularity_score", "Modularity"),
    ("modularity", "explicitness_score_test", "Explicitness"),
    ("tad", "tad", "TAD"),
    ("tad", "num_captured", "TAD attributes captured"),
)


class EvaluationReport(dict):
    """The result of `evaluate`: a JSON-serialisable dict with helpers for tables and model cards.

    Keys: `model`, `dataset`, `num_images`, `representation_dim`, `random_seed`, `metrics`
    (metric name -> disentanglement_lib's result dict) and `seconds` (time per step).
    """

    def headline(self) -> list[tuple[str, float]]:
        """(display name, value) of the headline number of every metric in the report; generation
        fidelity (when measured) by its worst factor."""
        rows = []
        for metric, key, name in HEADLINE:
            result = self.get("metrics", {}).get(metric)
            if result is not None and key in result:
                rows.append((name, float(result[key])))
        fidelity = self.get("generation_fidelity")
        if fidelity:
            from .generation_fidelity import fidelity_summary

            rows += [(name, value) for name, value in fidelity_summary(fidelity).items() if value is not None]
        return rows

    def to_markdown(self) -> str:
        """A markdown table of the headline numbers (and the generation-fidelity table when measured)."""
        lines = [f"Evaluation of `{self.get('model')}` on `{self.get('dataset')}` "
                 f"({self.get('num_images')} images, seed {self.get('random_seed')})", "",
                 "| metric | value |", "|---|---|"]
        lines += [f"| {name} | {int(value)} |" if "captured" in name else f"| {name} | {value:.4f} |"
                  for name, value in self.headline()]
        fidelity = self.get("generation_fidelity")
        if fidelity:
            from .generation_fidelity import fidelity_markdown

            lines += ["", f"Generation fidelity on `{fidelity.get('dataset')}`, read by a factor probe "
                          f"({fidelity['num_images']} held images, sampling {json.dumps(fidelity['sampling'])})", "",
                      fidelity_markdown(fidelity)]
        return "\n".join(lines) + "\n"

    def to_eval_results(self, dataset_name: Optional[str] = None, task_type: str = "image-representation") -> list:
        """The headline numbers as `huggingface_hub.EvalResult`s (a model card's `model-index` entries)."""
        from huggingface_hub import EvalResult

        dataset = dataset_name or str(self.get("dataset"))
        return [
            EvalResult(task_type=task_type, task_name="Disentanglement", dataset_type=dataset, dataset_name=dataset,
                       metric_type=name.lower().replace(" ", "_"), metric_name=name, metric_value=round(value, 4))
            for name, value in self.headline()
        ]

    def to_model_index(self, model_name: str, dataset_name: Optional[str] = None) -> list[dict]:
        """The `model-index` metadata list of a model card (what `ModelCardData(...).to_dict()` writes)."""
        from huggingface_hub import ModelCardData

        card = ModelCardData(model_name=model_name, eval_results=self.to_eval_results(dataset_name))
        return card.to_dict()["model-index"]


# ---------------------------------------------------------------------------------------- models
def _load_pipeline(path_or_id: str):
    from .pipeline_encdiff import EncDiffPipeline  # lazy: metrics and data do not need the models

    return EncDiffPipeline.from_pretrained(path_or_id)


def make_encode_function(model: Any) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A function images (B, H, W, C) float [0, 1] -> codes (B, N) or (B, N, d) numpy, and a model label.

    `model` is a `ConceptEncoder` (`encoder_protocol.py`: `ConceptEncoderModel`, the baselines), a
    pipeline folder or Hub id, an object with `.encode(images)` (EncDiffPipeline: (B, C, H, W) tensors
    in [-1, 1] -> concepts), any torch module whose output has `.concepts`, or a plain callable on the
    dataset's observations.
    """
    if isinstance(model, (str, os.PathLike)):
        label = os.fspath(model)
        model = _load_pipeline(label)
    else:
        label = type(model).__name__
    if isinstance(model, ConceptEncoder) or hasattr(model, "encode") or _is_torch_module(model):
        import torch

        from .image_range import to_model_input

        for module in (model, getattr(model, "encoder", None)):
            if _is_torch_module(module):
                module.eval()  # BatchNorm statistics, no dropout: the representation is deterministic
        device = _device_of(model)

        def encode(images: np.ndarray) -> np.ndarray:
            x = to_model_input(np.asarray(images, dtype=np.float32))
            with torch.no_grad():
                if isinstance(model, ConceptEncoder):  # EncDiff's encoder, the baselines
                    codes = model.encode_concepts(x.to(device))
                elif hasattr(model, "encode"):  # EncDiffPipeline: moves the images itself
                    codes = model.encode(x)
                else:
                    out = model(x.to(device))
                    codes = getattr(out, "concepts", out[0] if isinstance(out, (tuple, list)) else out)
            return codes.detach().float().cpu().numpy()

        return encode, label
    if callable(model):
        return (lambda images: np.asarray(model(images))), label
    raise TypeError(f"cannot evaluate a {type(model).__name__}: expected a pipeline path / Hub id, an object with "
                    f".encode(images), a ConceptEncoderModel or a callable on images")


def _is_torch_module(model) -> bool:
    try:
        import torch
    except ImportError:  # pragma: no cover
        return False
    return isinstance(model, torch.nn.Module)


def _device_of(model):
    import torch

    if _is_torch_module(model):
        for parameter in model.parameters():
            return parameter.device
    return getattr(model, "device", torch.device("cpu"))


def reduce_vector_tokens(codes: np.ndarray) -> np.ndarray:
    """(num, N, d) vector tokens -> (num, N): each token projected on its first principal component.

    (num, N) codes pass through unchanged.
    """
    codes = np.asarray(codes, dtype=np.float64)
    if codes.ndim == 2:
        return codes
    if codes.ndim != 3:
        raise ValueError(f"expected codes (num, N) or vector tokens (num, N, d), got {codes.shape}")
    from sklearn.decomposition import PCA

    return np.stack([PCA(n_components=1).fit_transform(codes[:, i, :])[:, 0] for i in range(codes.shape[1])], axis=1)


def _encode_table(dataset, encode, batch_size: int, progress: bool) -> np.ndarray:
    tokens = []

    def flat_encode(images):
        codes = np.asarray(encode(images), dtype=np.float64)
        tokens.append(codes.shape[1:])
        return codes.reshape(codes.shape[0], -1)

    table = compute_representation_table(dataset, flat_encode, batch_size=batch_size, progress=progress)
    if tokens and len(tokens[0]) == 2:  # vector tokens (N, d)
        table = reduce_vector_tokens(table.reshape(len(table), *tokens[0]))
    return table


# -------------------------------------------------------------------------------------- evaluate
def evaluate(
    model: Any,
    dataset: Union[str, os.PathLike, Any] = "procedural-shapes3d",
    metrics: Sequence[str] = DEFAULT_METRICS,
    batch_size: int = 256,
    random_seed: int = 0,
    dataset_options: Optional[dict] = None,
    metric_options: Optional[dict[str, dict]] = None,
    progress: bool = True,
) -> EvaluationReport:
    """Score a model's representation on a factor dataset with the published protocol.

    Args:
        model: pipeline folder or Hub id (loaded with `EncDiffPipeline.from_pretrained`), an object
            with `.encode(images)`, a `ConceptEncoderModel`, or a callable images (B, H, W, C) in [0, 1]
            -> codes (B, N).
        dataset: a `FactorDataset`, or a source for `encdiff_pipeline.data.load_factor_dataset`.
        metrics: names among `factor_vae`, `dci`, `mig`, `sap`, `modularity` (and `tad` for an
            attribute dataset such as CelebA: 1,000 images drawn with seed 30).
        batch_size: images per encoder call.
        random_seed: seed of the fresh `RandomState` each metric gets.
        dataset_options: keyword arguments for `load_factor_dataset` (e.g. `{"image_size": 32}`).
        metric_options: per metric, protocol overrides (e.g. `{"dci": {"num_train": 1000}}`).
        progress: show a progress bar while encoding.

    Returns:
        An `EvaluationReport` (a dict; `.to_markdown()`, `.to_model_index(model_name)`).

    Example:
        >>> report = evaluate(my_encoder, dataset=my_factor_dataset, metrics=("mig",))  # doctest: +SKIP
        >>> report["metrics"]["mig"]["discrete_mig"]                                     # doctest: +SKIP
    """
    unknown = [m for m in metrics if m not in METRICS and m != "tad"]
    if unknown:
        raise ValueError(f"unknown metrics {unknown}; choose from {sorted(METRICS) + ['tad']}")
    metric_options = dict(metric_options or {})
    if isinstance(dataset, (str, os.PathLike)):
        from .data import load_factor_dataset

        dataset_label = os.fspath(dataset)
        dataset = load_factor_dataset(dataset, **(dataset_options or {}))
    else:
        dataset_label = type(dataset).__name__
    encode, model_label = make_encode_function(model)
    seconds: dict[str, float] = {}
    results: dict[str, dict] = {}
    report = EvaluationReport(model=model_label, dataset=dataset_label, num_images=len(dataset),
                              random_seed=random_seed, metrics=results, seconds=seconds)

    factor_metrics = [m for m in metrics if m != "tad"]
    if factor_metrics:
        if not hasattr(dataset, "factors_to_index"):
            raise ValueError(f"metrics {factor_metrics} need a factor dataset (with a factor grid); "
                             f"{dataset_label} has none (use metrics=('tad',) for attribute datasets)")
        start = time.perf_counter()
        table = _encode_table(dataset, encode, batch_size, progress)
        seconds["encode"] = time.perf_counter() - start
        report["representation_dim"] = int(table.shape[1])
        for name in factor_metrics:
            start = time.perf_counter()
            results[name] = _jsonable(METRICS[name](dataset, table, np.random.RandomState(random_seed),
                                                    **metric_options.get(name, {})))
            seconds[name] = time.perf_counter() - start
    if "tad" in metrics:
        start = time.perf_counter()
        results["tad"] = _jsonable(_evaluate_tad(dataset, encode, batch_size, **metric_options.get("tad", {})))
        seconds["tad"] = time.perf_counter() - start
    return report


def _evaluate_tad(dataset, encode, batch_size: int, num_images: int = TAD_NUM_IMAGES, seed: int = TAD_SEED, **options):
    if not hasattr(dataset, "get_attributes"):
        raise ValueError("TAD needs an attribute dataset (with get_attributes(indices)), such as CelebA")
    num = min(num_images, len(dataset))
    indices = np.sort(np.random.RandomState(seed).choice(len(dataset), size=num, replace=False))
    codes = [np.asarray(encode(dataset.get_images(indices[s:s + batch_size])), dtype=np.float64)
             for s in range(0, num, batch_size)]
    codes = reduce_vector_tokens(np.concatenate(codes, axis=0))
    names = getattr(dataset, "attribute_names", None)
    return compute_tad(codes, dataset.get_attributes(indices), attribute_names=names, **options)


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    return value


# ------------------------------------------------------------------------------------------- CLI
# the top-level files of a saved pipeline / training run folder (its sub-folders are all protected)
PIPELINE_FILES = ("model_index.json", "README.md", "pipeline_encdiff.py", "training_args.json", "swap.png")


def _writable_beside_pipeline(rel: str) -> bool:
    """Whether `--out` / `--markdown` may write `rel` inside the evaluated folder: a new top-level file
    (e.g. the default report.json), never one of the pipeline's or run's own files."""
    return "/" not in rel and rel not in PIPELINE_FILES and not rel.startswith(".")


def run_dataset(pipeline: str, dataset: Optional[str] = None, dataset_options: Optional[dict] = None) -> tuple[str, dict]:
    """The dataset `encdiff-evaluate` scores: by default what the run in folder `pipeline` was validated on.

    A run folder written by the training scripts holds `training_args.json`: without `dataset`, its
    held set (source, held grid, image size) is used; with `dataset`, that source at the run's image
    size. `dataset_options` override either. Without a run file, `procedural-shapes3d` at the
    encoder's input size (`encoder/config.json`) where the folder has one.

    Example:
        >>> run_dataset("runs/encdiff-small")  # doctest: +SKIP
        ('procedural-shapes3d', {'factor_sizes': [5, 5, 5, 4, 4, 5], 'image_size': 16})
    """
    from .data.loading import PROCEDURAL_SHAPES3D
    from .data.run_data import held_dataset_spec, read_run_settings, run_image_size, with_image_size

    settings = read_run_settings(pipeline) if os.path.isdir(pipeline) else None
    if settings is not None:
        image_size = run_image_size(settings)
        if dataset is None:
            source, options = held_dataset_spec(settings, image_size)
        else:
            source, options = dataset, with_image_size({}, image_size)
    else:
        encoder_config = os.path.join(pipeline, "encoder", "config.json")
        image_size = None
        if os.path.isfile(encoder_config):
            with open(encoder_config, encoding="utf-8") as f:
                image_size = json.load(f).get("sample_size")
        source, options = dataset or PROCEDURAL_SHAPES3D, with_image_size({}, image_size)
    return source, {**options, **(dataset_options or {})}


def main(argv: Optional[Sequence[str]] = None) -> int:
    """`encdiff-evaluate RUN [--dataset SOURCE] [--dataset_options JSON] [--out report.json] [--markdown report.md]`.

    With no dataset option, a run folder is scored on what its training validated on (see `run_dataset`);
    the report goes to `RUN/report.json` (and `RUN/report.md`) unless `--out` says otherwise.

    Example:
        >>> main(["runs/encdiff-small"])  # doctest: +SKIP
    """
    parser = argparse.ArgumentParser(prog="encdiff-evaluate", description="Score an EncDiff pipeline's concepts "
                                     "with the disentanglement_lib protocol (FactorVAE, DCI, MIG, SAP, modularity).")
    parser.add_argument("pipeline", help="pipeline folder (a training run's output_dir) or Hub id")
    parser.add_argument("--dataset", default=None,
                        help="dataset source (see load_factor_dataset); default: the run's held set, else procedural-shapes3d")
    parser.add_argument("--dataset_options", type=json_object_argument, default={}, metavar="JSON",
                        help="options of the dataset loader as a JSON object, e.g. '{\"image_size\": 32}' (as in the "
                             "training scripts); they override what the run folder says")
    parser.add_argument("--metrics", nargs="+", default=list(DEFAULT_METRICS),
                        help=f"metrics to run (default: {' '.join(DEFAULT_METRICS)}; 'tad' for CelebA)")
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None,
                        help="JSON report path (default: report.json in a pipeline folder, else in the working directory)")
    parser.add_argument("--markdown", default=None,
                        help="also write the markdown table here (default: report.md next to a default --out in a folder)")
    parser.add_argument("--generation_fidelity", action="store_true",
                        help="also read the pipeline's reconstructions, swaps and traversals with a factor probe "
                             "trained on the run's training set (cached; see benchmarks/generation_fidelity.py)")
    parser.add_argument("--fidelity_options", type=json_object_argument, default={}, metavar="JSON",
                        help="options of generation_fidelity, e.g. '{\"num_images\": 256, \"num_inference_steps\": 50}'")
    parser.add_argument("--no_progress", action="store_true")
    args = parser.parse_args(argv)
    if args.fidelity_options and not args.generation_fidelity:
        parser.error("--fidelity_options needs --generation_fidelity")
    if args.batch_size < 1:
        parser.error(f"--batch_size must be >= 1, got {args.batch_size}")
    if not 0 <= args.seed <= 2**32 - 1:
        parser.error(f"--seed must be in [0, 2**32 - 1], got {args.seed}")
    unknown = sorted(set(args.metrics) - set(METRICS) - {"tad"})
    if unknown:
        parser.error(f"unknown metrics {unknown}; expected some of {sorted(METRICS) + ['tad']}")
    _check_pipeline_argument(args.pipeline)
    if args.out is None:
        in_folder = os.path.isdir(args.pipeline)
        args.out = os.path.join(args.pipeline, "report.json") if in_folder else "report.json"
        if in_folder and args.markdown is None:
            args.markdown = os.path.join(args.pipeline, "report.md")
    # before any work: an output that cannot be written must not cost a finished evaluation
    check_distinct_outputs(**{"--out": args.out, "--markdown": args.markdown})
    for option, path in (("--out", args.out), ("--markdown", args.markdown)):
        if path:
            check_output_spares_input(option, path, "the evaluated pipeline", args.pipeline, _writable_beside_pipeline)
            check_output_spares_input(option, path, "--dataset", args.dataset)
            check_output_file(path, option)

    source, options = run_dataset(args.pipeline, args.dataset, args.dataset_options)
    print(f"evaluating on {source} with options {options}")
    report = evaluate(args.pipeline, dataset=source, metrics=args.metrics, batch_size=args.batch_size,
                      random_seed=args.seed, dataset_options=options, progress=not args.no_progress)
    if args.generation_fidelity:
        from .generation_fidelity import evaluate_generation

        # the run's training set as a whole grid, unless --dataset / --dataset_options say otherwise
        report["generation_fidelity"] = evaluate_generation(args.pipeline, args.dataset, args.dataset_options or None,
                                                            seed=args.seed, progress=not args.no_progress,
                                                            **args.fidelity_options)
    model_index = report.to_model_index(model_name=os.path.basename(os.path.normpath(args.pipeline)))
    payload = dict(report, model_index=model_index)
    markdown = report.to_markdown()
    print(markdown)  # shown before anything is written: a failing write loses no result
    write_text(args.out, json.dumps(payload, indent=2) + "\n")
    if args.markdown:
        write_text(args.markdown, markdown)
    print(f"report written to {args.out}" + (f" and {args.markdown}" if args.markdown else ""))
    return 0


def _check_pipeline_argument(pipeline: str) -> None:
    """Name the problem when RUN is a folder that is not a pipeline (a baseline run, an empty folder)."""
    if not os.path.isdir(pipeline):  # a Hub id, or a mistyped local path (refused before any work)
        from .hub import check_not_a_mistyped_path

        check_not_a_mistyped_path(pipeline)
        return
    if os.path.isfile(os.path.join(pipeline, "model_index.json")):
        return
    for config in (os.path.join(pipeline, "config.json"), os.path.join(pipeline, "model", "config.json")):
        try:
            with open(config, encoding="utf-8") as f:
                class_name = json.load(f).get("_class_name")
        except (OSError, ValueError, AttributeError):
            continue
        from .baselines import BASELINES

        if class_name in {cls.__name__ for cls in BASELINES.values()}:
            folder = os.path.dirname(config)
            raise ValueError(f"{pipeline} holds a {class_name} baseline, not an EncDiff pipeline; encdiff-evaluate "
                             f"scores pipelines only (in Python: evaluate(load_baseline({folder!r}), dataset))")
    raise FileNotFoundError(f"{pipeline} has no model_index.json: it is not a saved pipeline folder "
                            "(give a training run's output_dir or a folder written by save_pretrained)")


def cli(argv: Optional[Sequence[str]] = None) -> int:
    """The `encdiff-evaluate` command: `main`, with user errors (a folder that is not a pipeline, a bad
    dataset option, metric or path) ending in one line `error: ...` instead of a traceback."""
    return run_cli(main, argv, prog="encdiff-evaluate")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(cli())
