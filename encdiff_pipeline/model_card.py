"""Render an EncDiff pipeline's model card (README.md) from the template `model_cards/encdiff.md`.

The card's YAML metadata (library_name diffusers, tags, datasets, metrics and a model-index with
the evaluation results when known) is built with `huggingface_hub.ModelCardData`; the body is the
Jinja template rendered by `huggingface_hub.ModelCard.from_template`.

A training script passes what it knows of the run as data (`training`: see `render_model_card`);
the template renders it as the card's "Training run" section.

Example:
    >>> card = render_model_card(pipe, repo_id="user/encdiff-shapes3d", datasets=["eurecom-ds/shapes3d"],
    ...                          metrics={"eurecom-ds/shapes3d": {"factor_vae": 0.999, "dci": 0.969}})
    >>> card.save("README.md")
"""
from __future__ import annotations

import importlib.resources
import math
import numbers
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATE_NAME = "encdiff.md"
DEFAULT_TAGS = ("encdiff", "diffusers", "diffusion-autoencoder", "disentanglement", "representation-learning")
TASK_TYPE = "image-feature-extraction"
TASK_NAME = "Disentangled representation learning"


def default_template_path() -> Path:
    """The card template: installed as package data `encdiff_pipeline.model_cards` (wheel), or the
    source tree's top-level `model_cards/` folder (editable install)."""
    try:
        resource = importlib.resources.files("encdiff_pipeline.model_cards") / TEMPLATE_NAME
        if resource.is_file():
            return Path(str(resource))
    except (ModuleNotFoundError, TypeError):
        pass
    source_tree = Path(__file__).resolve().parent.parent / "model_cards" / TEMPLATE_NAME
    if source_tree.is_file():
        return source_tree
    raise FileNotFoundError(
        f"Model card template {TEMPLATE_NAME} not found (looked in package data encdiff_pipeline.model_cards "
        f"and {source_tree})."
    )


def _num_params(model) -> str:
    count = sum(p.numel() for p in model.parameters())
    return f"{count / 1e6:.2f}M" if count >= 1e5 else f"{count:,}"


def _check_metrics(metrics: Any) -> dict[str, dict[str, float]]:
    """`{dataset: {metric: number}}` with float values; a ValueError naming the entry otherwise."""
    if metrics is None:
        return {}
    if not isinstance(metrics, Mapping) or not all(isinstance(v, Mapping) for v in metrics.values()):
        raise ValueError(f"metrics must be {{dataset: {{metric: value}}}}, got {metrics!r}")
    checked: dict[str, dict[str, float]] = {}
    for dataset, values in metrics.items():
        for metric, value in values.items():
            if isinstance(value, bool) or not isinstance(value, numbers.Real):
                raise ValueError(f"metrics[{dataset!r}][{metric!r}] must be a number, got {value!r}")
            checked.setdefault(str(dataset), {})[str(metric)] = float(value)
    return checked


def render_model_card(
    pipe,
    repo_id: str | None = None,
    datasets: Sequence[str] | str | None = None,
    metrics: Mapping[str, Mapping[str, float]] | None = None,
    tags: Sequence[str] | None = None,
    license: str | None = None,
    base_model: str | None = None,
    template_path: str | Path | None = None,
    training: Mapping | None = None,
) -> ModelCard:
    """Render the model card of an `EncDiffPipeline`.

    Args:
        pipe: the pipeline (its components fill the card's table).
        repo_id: the Hub repo id shown in the usage snippets.
        datasets: Hub dataset ids it was trained on.
        metrics: evaluation results `{dataset: {metric: value}}` (e.g. `{"eurecom-ds/shapes3d":
            {"factor_vae": 0.999, "dci": 0.969}}`); they go to the `metrics` list and the
            `model-index` of the metadata, and to a table in the card.
        tags: extra tags (added to encdiff, diffusers, disentanglement, ...).
        license, base_model: metadata fields, omitted when `None`.
        template_path: a different Jinja template (default: `model_cards/encdiff.md`).
        training: facts of the training run, for the card's "Training run" section: `script`,
            `dataset`, `recipe` (the preset or config file), `beta_schedule`, `learning_rate`, `steps`,
            `images_seen`, `train_seconds`, `conditioning`, `decoder_type`, `metrics_step`, `metrics`
            (`{metric: value}`) and `swap_image` (a file name beside the card); omitted when `None`.
    """
    model_name = repo_id.rstrip("/").split("/")[-1] if repo_id else "EncDiff"
    repo_id = repo_id or "path/to/this/folder"
    datasets = [datasets] if isinstance(datasets, str) else list(datasets or [])
    metrics = _check_metrics(metrics)
    datasets += [d for d in metrics if d not in datasets]
    # a NaN / infinite score is no result: shown as n/a in the card, left out of the model-index metadata
    results = [(d, m, round(v, 4) if math.isfinite(v) else "n/a") for d, values in metrics.items() for m, v in values.items()]
    eval_results = [
        EvalResult(task_type=TASK_TYPE, task_name=TASK_NAME, dataset_type=d, dataset_name=d, metric_type=m,
                   metric_name=m, metric_value=v)
        for d, m, v in results if v != "n/a"
    ]
    card_data = ModelCardData(
        library_name="diffusers",
        tags=list(dict.fromkeys([*DEFAULT_TAGS, *(tags or [])])),
        datasets=datasets or None,
        metrics=sorted({m for _, m, _ in results}) or None,
        eval_results=eval_results or None,
        model_name=model_name,
        license=license,
        base_model=base_model,
    )
    encoder, unet, vae = pipe.encoder, pipe.unet, pipe.vae
    return ModelCard.from_template(
        card_data,
        template_path=str(template_path or default_template_path()),
        model_name=model_name,
        repo_id=repo_id,
        image_size=encoder.config.sample_size,
        num_concepts=encoder.config.num_concepts,
        token_dim=encoder.config.token_dim,
        token_type=encoder.config.token_type,
        encoder_class=type(encoder).__name__,
        encoder_params=_num_params(encoder),
        unet_class=type(unet).__name__,
        unet_sample_size=unet.config.sample_size,
        unet_channels=unet.config.in_channels,
        unet_params=_num_params(unet),
        scheduler_class=type(pipe.scheduler).__name__,
        num_train_timesteps=pipe.scheduler.config.num_train_timesteps,
        vae_class=type(vae).__name__ if vae is not None else "none",
        vae_details=(
            f"{_num_params(vae)} parameters, latents scaled by {pipe.config.latent_scale:.4g}"
            if vae is not None
            else "pixel-space diffusion"
        ),
        results=results,
        training=dict(training) if training is not None else None,
    )
