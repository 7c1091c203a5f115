"""EncDiffPipeline: encode images to concepts, generate from concepts, swap, traverse, attention maps.

The pipeline is inference only (training lives in `training/`). Its components are a concept
encoder (`ConceptEncoderModel`), a cross-attention-conditioned `UNet2DConditionModel`, a diffusers
scheduler (DDIM by default) and an optional first-stage autoencoder (`VQModel` / `AutoencoderKL`;
`None` = the U-Net works in pixel space).

This file is also shipped, bundled with the models it imports, as the remote code of a saved
pipeline (`DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)`), so at module level
it imports only torch, numpy, PIL, diffusers and this package's modules that need nothing else
(models, conditioning, latents, noise schedules, image conventions), which the bundle inlines. The
link to the Hub helpers runs one way, pipeline -> `encdiff_pipeline.hub`, imported where it is
used (`_package_hub`), so that the standalone copy works without the package.

Example:
    >>> import torch
    >>> from encdiff_pipeline import ConceptEncoderModel, EncDiffPipeline
    >>> from encdiff_pipeline.models import unet_from_preset
    >>> encoder = ConceptEncoderModel(sample_size=8, num_concepts=4, token_dim=8, width=8)
    >>> unet = unet_from_preset("tiny", sample_size=8, cross_attention_dim=8)
    >>> pipe = EncDiffPipeline(encoder=encoder, unet=unet)
    >>> images = torch.rand(2, 3, 8, 8) * 2 - 1
    >>> concepts = pipe.encode(images)                               # (2, 4)
    >>> out = pipe(concepts=concepts, num_inference_steps=10, output_type="np")
    >>> out.images.shape
    (2, 8, 8, 3)
"""
from __future__ import annotations

import inspect
import numbers
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Sequence, Union

import numpy as np
import PIL.Image
import torch
from diffusers import DDIMScheduler
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.modeling_utils import ModelMixin
from diffusers.pipelines.pipeline_utils import DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from .conditioning import unet_conditioning
from .image_range import to_model_input
from .latents import decode_from_diffusion, encode_to_diffusion
from .models import aggregate_attention_maps, capture_cross_attention
from .noise_schedules import schedule_config

ImageInput = Union[PIL.Image.Image, np.ndarray, torch.Tensor, Sequence[Union[PIL.Image.Image, np.ndarray, torch.Tensor]]]
OUTPUT_TYPES = ("pil", "np", "pt")


@dataclass
class EncDiffPipelineOutput(BaseOutput):
    """Output of [`EncDiffPipeline.__call__`].

    Args:
        images: a list of `B` PIL images, a `(B, H, W, C)` numpy array in [0, 1] or a `(B, C, H, W)`
            tensor in [0, 1], after `output_type`.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor


@dataclass
class EncDiffSwapOutput(BaseOutput):
    """Output of [`EncDiffPipeline.swap`]: row `k` swaps concept `concept_indices[k]`.

    Args:
        images: `K` rows of `B` images: a list of lists of PIL images, a `(K, B, H, W, C)` array or a
            `(K, B, C, H, W)` tensor, all in [0, 1].
        concepts: `(K, B, N)` the concepts each image was generated from.
        concept_indices: the `K` swapped concept indices, one per row.
    """

    images: list[list[PIL.Image.Image]] | np.ndarray | torch.Tensor
    concepts: torch.Tensor
    concept_indices: list[int]


@dataclass
class EncDiffTraversalOutput(BaseOutput):
    """Output of [`EncDiffPipeline.traverse`]: one image per value of the traversed concept.

    Args:
        images: `V` images (list of PIL, `(V, H, W, C)` array or `(V, C, H, W)` tensor, in [0, 1]).
        concept_values: `(V,)` the values given to the traversed concept (not `values`, which
            `BaseOutput`, a dict, already has).
        concepts: `(V, N)` the concepts each image was generated from.
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    concept_values: torch.Tensor
    concepts: torch.Tensor


def _check_guidance_scale(guidance_scale) -> None:
    is_number = isinstance(guidance_scale, numbers.Real) and not isinstance(guidance_scale, bool)
    if not (is_number and np.isfinite(guidance_scale) and guidance_scale >= 0):
        raise ValueError(f"guidance_scale must be a finite number >= 0 (1 = no guidance), got {guidance_scale!r}.")


def _real_tensor(values: Any, name: str, expected: str) -> torch.Tensor:
    """`values` as a tensor holding real numbers; a ValueError naming `name` for anything else (strings,
    objects, complex numbers, a meta tensor without data)."""
    if isinstance(values, torch.Tensor) and values.device.type == "meta":
        raise ValueError(f"{name} is a meta tensor (it holds no values); expected {expected} on a real device.")
    try:
        tensor = torch.as_tensor(values)
    except (TypeError, ValueError, RuntimeError) as error:
        raise ValueError(f"{name} must be {expected}, got {type(values).__name__} that is not numeric ({error}).") from None
    if tensor.is_complex():
        raise ValueError(f"{name} must be {expected}, got complex values ({tensor.dtype}).")
    return tensor


def _check_generator(generator) -> None:
    generators = generator if isinstance(generator, (list, tuple)) else [generator]
    if not all(g is None or isinstance(g, torch.Generator) for g in generators):
        kinds = sorted({type(g).__name__ for g in generators})
        raise ValueError(f"generator must be a torch.Generator (e.g. torch.Generator().manual_seed(0)), a list of "
                         f"them or None, got {', '.join(kinds)}.")


def _package_hub():
    """The installed package's Hub helpers, or `None` when this file runs as standalone remote code."""
    try:
        from encdiff_pipeline import hub
    except ImportError:
        return None
    return hub


class EncDiffPipeline(DiffusionPipeline):
    r"""EncDiff: a diffusion autoencoder whose concept tokens condition the U-Net by cross-attention.

    Args:
        encoder: a `ConceptEncoderModel` (pixels in [-1, 1] -> N concepts -> N tokens of dim d).
        unet: a `UNet2DConditionModel` with `cross_attention_dim == encoder.config.token_dim`.
        scheduler: any diffusers scheduler; `None` builds the paper's schedule as a `DDIMScheduler`
            (T=1000, `scaled_linear` betas 0.0015..0.0155, eps prediction).
        vae: optional first stage (`VQModel` or `AutoencoderKL`); `None` means pixel space.
        guidance_scale: the default classifier-free guidance on the concept tokens of every
            generating call (1 = none). Guidance needs a U-Net trained with token dropout
            (`--token_dropout`): it then also knows the empty condition, all-zero tokens, and
            `eps_empty + w * (eps_tokens - eps_empty)` follows the tokens more closely for `w > 1`.
        sample_prediction_from: the first timestep at which the U-Net predicts the clean image
            instead of the scheduler's `prediction_type` (a U-Net trained with
            `--sample_prediction_from`); each prediction is converted to the scheduler's type before
            its step. `None` (default): the scheduler's type at every timestep.
        latent_scale: diffusion latents are `vae_latents * latent_scale` (the paper: 1 / std of the
            first batch); generated latents are decoded as `vae.decode(latents / latent_scale)`.
            A `VQModel` decodes with its default `force_not_quantize=False`: the latents are
            pre-quantisation values, quantised by the codebook before decoding (as in LDM).

    Example:
        >>> pipe = EncDiffPipeline.from_pretrained("path/to/saved/pipeline")
        >>> concepts = pipe.encode(images)                       # (B, N) raw concept scalars
        >>> recon = pipe(images=images, generator=torch.manual_seed(0)).images
        >>> grid = pipe.swap(images, concept_indices=[0, 3]).images  # 2 rows of B images
    """

    model_cpu_offload_seq = "encoder->unet->vae"
    _optional_components = ["vae", "scheduler"]  # scheduler: None builds the default DDIM

    def __init__(
        self,
        encoder: ModelMixin,
        unet: ModelMixin,
        scheduler: SchedulerMixin | None = None,
        vae: ModelMixin | None = None,
        latent_scale: float = 1.0,
        guidance_scale: float = 1.0,
        sample_prediction_from: int | None = None,
    ):
        super().__init__()
        if scheduler is None:
            scheduler = DDIMScheduler(**schedule_config("linear"))
        self._check_components(encoder, unet, vae, latent_scale)
        _check_guidance_scale(guidance_scale)
        num_train = scheduler.config.get("num_train_timesteps", 1000)
        if sample_prediction_from is not None and (isinstance(sample_prediction_from, bool) or not isinstance(
                sample_prediction_from, numbers.Integral) or not 0 <= sample_prediction_from < num_train):
            raise ValueError(f"sample_prediction_from must be a timestep in [0, {num_train}) or None, got {sample_prediction_from!r}.")
        self.register_modules(encoder=encoder, unet=unet, scheduler=scheduler, vae=vae)
        self.register_to_config(latent_scale=float(latent_scale), guidance_scale=float(guidance_scale),
                                sample_prediction_from=None if sample_prediction_from is None else int(sample_prediction_from))
        self.image_processor = VaeImageProcessor(do_resize=False, do_normalize=True)

    @staticmethod
    def _check_components(encoder, unet, vae, latent_scale) -> None:
        token_dim = encoder.config.token_dim
        cross_dim = unet.config.cross_attention_dim
        if token_dim != cross_dim:
            raise ValueError(
                f"The encoder's token_dim ({token_dim}) must equal the U-Net's cross_attention_dim "
                f"({cross_dim}): concept tokens are the U-Net's cross-attention context."
            )
        if vae is None:
            image_shape = (encoder.config.in_channels, encoder.config.sample_size)
            unet_shape = (unet.config.in_channels, unet.config.sample_size)
            if image_shape != unet_shape or unet.config.out_channels != unet.config.in_channels:
                raise ValueError(
                    "Without a vae the U-Net works in pixel space, so its (in_channels, sample_size) "
                    f"{unet_shape} (out_channels {unet.config.out_channels}) must match the encoder's "
                    f"images {image_shape}."
                )
        elif unet.config.in_channels != vae.config.latent_channels:
            raise ValueError(
                f"The U-Net's in_channels ({unet.config.in_channels}) must equal the vae's "
                f"latent_channels ({vae.config.latent_channels})."
            )
        is_number = isinstance(latent_scale, numbers.Real) and not isinstance(latent_scale, bool)
        if not (is_number and np.isfinite(latent_scale) and latent_scale > 0):
            raise ValueError(f"latent_scale must be a positive finite float, got {latent_scale!r}.")

    # ------------------------------------------------------------------ inputs
    @property
    def num_concepts(self) -> int:
        return self.encoder.config.num_concepts

    @contextmanager
    def _eval_mode(self) -> Iterator[None]:
        """Run the models in eval mode (BatchNorm running statistics, no dropout) and restore their
        train/eval flags afterwards, so a training loop can sample from its live models."""
        modules = [m for m in (self.encoder, self.unet, self.vae) if m is not None]
        flags = [[(sub, sub.training) for sub in m.modules()] for m in modules]
        try:
            for module in modules:
                module.eval()
            yield
        finally:
            for module_flags in flags:
                for sub, training in module_flags:
                    sub.training = training

    def prepare_images(self, images: ImageInput) -> torch.Tensor:
        """Validate images and convert them to a `(B, C, H, W)` tensor in [-1, 1] for the encoder.

        Accepts a PIL image or a list of them; a numpy `(H, W, C)` / `(B, H, W, C)` array, uint8
        in 0..255 or float in [0, 1]; a torch `(C, H, W)` / `(B, C, H, W)` float tensor in [-1, 1];
        or a list mixing these single images. Raises `ValueError` naming what was expected.
        """
        channels, size = self.encoder.config.in_channels, self.encoder.config.sample_size
        expected = f"{size}x{size} images with {channels} channel(s)"
        if isinstance(images, (list, tuple)):
            if len(images) == 0:
                raise ValueError(f"images is an empty list; expected {expected}.")
            parts = [self._image_to_tensor(image, expected) for image in images]
            shapes = sorted({tuple(part.shape[1:]) for part in parts})
            if len(shapes) > 1:
                sizes = ", ".join(f"{c} channel(s) {h}x{w}" for c, h, w in shapes)
                raise ValueError(f"Expected {expected}; the list mixes images of {sizes}.")
            tensor = torch.cat(parts)
        else:
            tensor = self._image_to_tensor(images, expected)
        if tensor.shape[0] == 0:
            raise ValueError(f"images is an empty batch; expected at least one of {expected}.")
        if tuple(tensor.shape[1:]) != (channels, size, size):
            raise ValueError(
                f"Expected {expected} (tensor shape (B, {channels}, {size}, {size})), got images of "
                f"{tensor.shape[1]} channel(s) and size {tensor.shape[2]}x{tensor.shape[3]}."
            )
        return tensor.to(device=self._execution_device, dtype=self.encoder.dtype)

    @staticmethod
    def _image_to_tensor(image: Any, expected: str) -> torch.Tensor:
        """One image or one batch -> float32 `(B, C, H, W)` in [-1, 1] (shapes checked by the caller)."""
        if isinstance(image, PIL.Image.Image):
            if image.mode not in ("L", "RGB"):
                raise ValueError(f"Expected {expected}; got a PIL image of mode {image.mode!r} (use 'RGB' or 'L').")
            array = np.asarray(image)
            return EncDiffPipeline._image_to_tensor(array[..., None] if array.ndim == 2 else array, expected)
        if isinstance(image, np.ndarray):
            if image.ndim not in (3, 4):
                raise ValueError(f"Expected {expected} as a numpy (H, W, C) or (B, H, W, C) array, got shape {image.shape}.")
            if image.size == 0:
                raise ValueError(f"images is an empty array of shape {image.shape}; expected {expected}.")
            if image.dtype == np.uint8:
                array = image.astype(np.float32) / 255.0
            elif np.issubdtype(image.dtype, np.floating):
                array = image.astype(np.float32)
                if not np.isfinite(array).all():
                    raise ValueError("images contain NaN or infinite values.")
                if array.min() < 0.0 or array.max() > 1.0:
                    raise ValueError(
                        f"Float numpy images must be in [0, 1], got values in [{array.min():.3g}, {array.max():.3g}] "
                        "(pass uint8 for 0..255)."
                    )
            else:
                raise ValueError(f"numpy images must be uint8 (0..255) or float ([0, 1]), got dtype {image.dtype}.")
            return to_model_input(array if array.ndim == 4 else array[None])
        if isinstance(image, torch.Tensor):
            if image.ndim not in (3, 4):
                raise ValueError(f"Expected {expected} as a torch (C, H, W) or (B, C, H, W) tensor, got shape {tuple(image.shape)}.")
            if not image.is_floating_point():
                raise ValueError(f"torch images must be a float tensor in [-1, 1], got dtype {image.dtype}.")
            _real_tensor(image, "images", expected)  # a meta tensor holds no values
            if image.numel() == 0:
                raise ValueError(f"images is an empty tensor of shape {tuple(image.shape)}; expected {expected}.")
            tensor = image.detach().float()
            if not torch.isfinite(tensor).all():
                raise ValueError("images contain NaN or infinite values.")
            low, high = tensor.min().item(), tensor.max().item()
            if low < -1.0 - 1e-4 or high > 1.0 + 1e-4:
                raise ValueError(f"torch images must be in [-1, 1], got values in [{low:.3g}, {high:.3g}].")
            return tensor if tensor.ndim == 4 else tensor[None]
        raise ValueError(f"Expected {expected} as PIL, numpy or torch, got {type(image).__name__}.")

    def prepare_concepts(self, concepts: torch.Tensor | np.ndarray) -> torch.Tensor:
        """Validate concepts: `(B, N)` (`(B, N, d)` for vector tokens), finite; returns a tensor."""
        n, d = self.num_concepts, self.encoder.config.token_dim
        vector = self.encoder.config.token_type == "vector"
        expected = f"(B, {n}, {d})" if vector else f"(B, {n})"
        tensor = _real_tensor(concepts, "concepts", f"real numbers of shape {expected}")
        if tensor.ndim == (2 if vector else 1):
            tensor = tensor[None]
        if tensor.ndim != (3 if vector else 2) or tensor.shape[1] != n or (vector and tensor.shape[2] != d):
            raise ValueError(f"concepts must have shape {expected} (N={n} concepts), got {tuple(tensor.shape)}.")
        if not tensor.is_floating_point():
            tensor = tensor.float()
        if tensor.shape[0] == 0:
            raise ValueError(f"concepts is an empty batch; expected shape {expected} with B >= 1.")
        if not torch.isfinite(tensor).all():
            raise ValueError("concepts contain NaN or infinite values.")
        return tensor.to(device=self._execution_device, dtype=self.encoder.dtype)

    def check_inputs(self, images, concepts, num_inference_steps: int, output_type: str, eta: float = 0.0,
                     guidance_scale: float | None = None) -> None:
        """Check the arguments of `__call__` (images/concepts themselves are checked when prepared)."""
        if (images is None) == (concepts is None):
            raise ValueError("Pass exactly one of `images` or `concepts`.")
        if guidance_scale is not None:
            _check_guidance_scale(guidance_scale)
        if (
            not isinstance(num_inference_steps, numbers.Integral)
            or isinstance(num_inference_steps, bool)
            or num_inference_steps < 1
        ):
            raise ValueError(f"num_inference_steps must be a positive int, got {num_inference_steps!r}.")
        if not isinstance(eta, numbers.Real) or isinstance(eta, bool) or not np.isfinite(eta) or eta < 0:
            raise ValueError(f"eta must be a finite number >= 0 (0 = deterministic DDIM, 1 = DDPM-like), got {eta!r}.")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}.")

    # ------------------------------------------------------------------ core
    @torch.no_grad()
    def encode(self, images: ImageInput) -> torch.Tensor:
        """Images -> concepts `(B, N)` (the raw scalars the disentanglement metrics score).

        Example:
            >>> concepts = pipe.encode(PIL.Image.open("shape.png").convert("RGB"))  # (1, N)
        """
        with self._eval_mode():
            return self.encoder.encode_concepts(self.prepare_images(images))

    def _latents_from_images(self, images: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> diffusion-space samples (vae latents * latent_scale, or the pixels)."""
        return encode_to_diffusion(self.vae, images, self.config.latent_scale)

    def _decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Diffusion-space samples -> pixels (roughly [-1, 1])."""
        return decode_from_diffusion(self.vae, latents, self.config.latent_scale)

    def _step_kwargs(self, generator, eta: float) -> dict[str, Any]:
        """`eta` and `generator` for schedulers whose `step` takes them (DDIM does)."""
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs: dict[str, Any] = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    def _conditioning(self, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        """The U-Net's conditioning inputs for `tokens` (see `encdiff_pipeline.conditioning`)."""
        return unet_conditioning(self.unet.config, tokens)

    def _noise_shape(self, batch_size: int) -> tuple[int, int, int, int]:
        size = self.unet.config.sample_size
        return (batch_size, self.unet.config.in_channels, size, size)

    def _check_latents(self, latents: torch.Tensor | None, batch_size: int) -> torch.Tensor | None:
        """`latents` (the starting noise, e.g. from `invert`) as float32 on the device, shape-checked."""
        if latents is None:
            return None
        expected = self._noise_shape(batch_size)
        if not isinstance(latents, torch.Tensor) or tuple(latents.shape) != expected:
            shape = tuple(latents.shape) if isinstance(latents, torch.Tensor) else type(latents).__name__
            raise ValueError(f"latents must be a tensor of shape {expected} (the starting noise, e.g. from "
                             f"`pipe.invert(images)`), got {shape}.")
        if not torch.isfinite(latents).all():
            raise ValueError("latents contain NaN or infinite values.")
        return latents.to(device=self._execution_device, dtype=torch.float32)

    def _prediction(self, model_input: torch.Tensor, t, tokens: torch.Tensor, noisy: torch.Tensor) -> torch.Tensor:
        """The U-Net's output at `t` as the scheduler's `prediction_type` (float32): converted from the
        clean image at timesteps >= `config.sample_prediction_from` (in float64, from x_t = `noisy`)."""
        output = self.unet(model_input, t, **self._conditioning(tokens)).sample.float()
        threshold = self.config.get("sample_prediction_from")
        if threshold is None or int(t) < threshold:
            return output
        kind = self.scheduler.config.get("prediction_type", "epsilon")
        if kind == "sample":
            return output
        alpha_bar = torch.as_tensor(self.scheduler.alphas_cumprod)[int(t)].double().to(output.device)
        x_t, clean = noisy.double(), output.double()
        eps = (x_t - alpha_bar.sqrt() * clean) / (1 - alpha_bar).sqrt()
        if kind == "epsilon":
            return eps.float()
        if kind == "v_prediction":
            return (alpha_bar.sqrt() * eps - (1 - alpha_bar).sqrt() * clean).float()
        raise ValueError(f"sample_prediction_from cannot convert to the scheduler's prediction_type {kind!r}.")

    def _guided_noise_pred(self, model_input: torch.Tensor, t, tokens: torch.Tensor, guidance_scale: float,
                           noisy: torch.Tensor) -> torch.Tensor:
        """The U-Net's prediction for `tokens` at x_t = `noisy` (`model_input` as the scheduler scales
        it); with `guidance_scale != 1`, classifier-free guided against the empty condition (all-zero
        tokens, what token dropout trains)."""
        if guidance_scale == 1:
            return self._prediction(model_input, t, tokens, noisy)
        both = torch.cat([torch.zeros_like(tokens), tokens])
        empty, cond = self._prediction(torch.cat([model_input] * 2), t, both, torch.cat([noisy] * 2)).chunk(2)
        return empty + guidance_scale * (cond - empty)

    def _sample(
        self, tokens: torch.Tensor, num_inference_steps: int, generator, eta: float, noise: torch.Tensor | None = None,
        guidance_scale: float | None = None,
    ) -> torch.Tensor:
        """Run the reverse process conditioned on `tokens` (B, N, d) from `noise` (default: drawn
        from `generator`); returns pixels in [-1, 1]. Latents stay float32; the U-Net runs in its dtype.
        `guidance_scale` None: the pipeline's `config.guidance_scale`."""
        guidance_scale = self.config.get("guidance_scale", 1.0) if guidance_scale is None else float(guidance_scale)
        device = self._execution_device
        num_inference_steps = int(num_inference_steps)
        _check_generator(generator)
        if isinstance(generator, (list, tuple)) and len(generator) not in (1, tokens.shape[0]):
            raise ValueError(
                f"generator is a list of {len(generator)} generators for a batch of {tokens.shape[0]} images; "
                "pass one generator or one per image."
            )
        if noise is None:
            noise = randn_tensor(self._noise_shape(tokens.shape[0]), generator=generator, device=device, dtype=torch.float32)
        latents = noise.to(device=device, dtype=torch.float32) * self.scheduler.init_noise_sigma
        self.scheduler.set_timesteps(num_inference_steps, device=device)
        step_kwargs = self._step_kwargs(generator, eta)
        tokens = tokens.to(self.unet.dtype)
        with self._eval_mode():
            for t in self.progress_bar(self.scheduler.timesteps):
                model_input = self.scheduler.scale_model_input(latents, t).to(self.unet.dtype)
                noise_pred = self._guided_noise_pred(model_input, t, tokens, guidance_scale, latents)
                latents = self.scheduler.step(noise_pred, t, latents, **step_kwargs).prev_sample
            pixels = self._decode(latents)
        if not torch.isfinite(pixels).all():
            span = tokens.float().abs().max().item()
            raise FloatingPointError(
                "The generated images contain NaN or infinite values (concept tokens up to "
                f"{span:.3g} in magnitude, eta={eta}): the concepts are far outside what the model was trained on, "
                "or its weights are broken."
            )
        return pixels

    @torch.no_grad()
    def __call__(
        self,
        images: ImageInput | None = None,
        concepts: torch.Tensor | np.ndarray | None = None,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        eta: float = 0.0,
        guidance_scale: float | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> EncDiffPipelineOutput | tuple:
        r"""Generate images from the concepts of `images` (a reconstruction) or from given `concepts`.

        Args:
            images: images to encode (see `prepare_images` for the accepted forms).
            concepts: `(B, N)` concepts (e.g. edited outputs of `encode`); pass this or `images`.
            num_inference_steps: scheduler steps (DDIM by default).
            generator: torch generator(s) for the initial noise (and DDIM's noise when `eta > 0`).
            eta: DDIM's eta (0 = deterministic DDIM, 1 = DDPM-like, the release's swap setting).
            guidance_scale: classifier-free guidance on the tokens (1 = none; default: the
                pipeline's `config.guidance_scale`, which training sets for a token-dropout model).
            latents: `(B, C, h, w)` starting noise instead of a draw from `generator`, e.g.
                `pipe.invert(images)` for a reconstruction that keeps the image's own noise.
            output_type: "pil", "np" (`(B, H, W, C)` in [0, 1]) or "pt" (`(B, C, H, W)` in [0, 1]).
            return_dict: return an `EncDiffPipelineOutput` instead of a tuple.

        Example:
            >>> recon = pipe(images=images, num_inference_steps=50, generator=torch.manual_seed(0)).images
            >>> exact = pipe(images=images, latents=pipe.invert(images)).images   # from the inverted noise
        """
        self.check_inputs(images, concepts, num_inference_steps, output_type, eta, guidance_scale)
        if images is not None:
            concepts = self.encode(images)
        concepts = self.prepare_concepts(concepts)
        tokens = self.encoder.concepts_to_tokens(concepts)
        noise = self._check_latents(latents, tokens.shape[0])
        pixels = self._sample(tokens, num_inference_steps, generator, eta, noise=noise, guidance_scale=guidance_scale)
        result = self.image_processor.postprocess(pixels, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result,)
        return EncDiffPipelineOutput(images=result)

    # ------------------------------------------------------------------ qualitative tools
    @torch.no_grad()
    def swap(
        self,
        images: ImageInput,
        concept_indices: Sequence[int] | None = None,
        source: int = 0,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        guidance_scale: float | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> EncDiffSwapOutput | tuple:
        r"""The paper's swap grid: row k gives every image image `source`'s value of concept k.

        Encodes the batch, and for each concept index i overwrites concept i of every image with
        image `source`'s value, rebuilds the tokens and samples with fresh noise (all rows in one
        batch). The release uses DDIM with 200 steps and `eta=1`.

        Args:
            images: a batch of B images.
            concept_indices: the concepts to swap, one row each (default: all N).
            source: the index in the batch of the image whose concept values are copied.
            guidance_scale: as in `__call__`.
            latents: `(B, C, h, w)` starting noise per image (e.g. `pipe.invert(images)`), shared by
                every row, so that a row differs from the image only through the swapped concept.

        Example:
            >>> out = pipe.swap(images, concept_indices=[0, 1], generator=torch.manual_seed(0))
            >>> out.images[1][4]   # image 4 with concept 1 taken from image 0
        """
        self.check_inputs(images, None, num_inference_steps, output_type, eta, guidance_scale)
        concepts = self.encode(images)
        batch = concepts.shape[0]
        noise = self._check_latents(latents, batch)
        if isinstance(source, bool) or not isinstance(source, numbers.Integral) or not -batch <= source < batch:
            raise ValueError(f"source must be an int indexing the batch of {batch} images, got {source!r}.")
        if concept_indices is not None and any(
            isinstance(i, bool) or not isinstance(i, numbers.Integral) for i in concept_indices
        ):
            raise ValueError(f"concept_indices must be integers, got {list(concept_indices)}.")
        indices = list(range(self.num_concepts)) if concept_indices is None else [int(i) for i in concept_indices]
        bad = [i for i in indices if not 0 <= i < self.num_concepts]
        if bad or not indices:
            raise ValueError(f"concept_indices must be a non-empty list within [0, {self.num_concepts}), got {indices}.")
        swapped = concepts.unsqueeze(0).repeat(len(indices), *([1] * concepts.ndim))  # (K, B, N[, d])
        for row, index in enumerate(indices):
            swapped[row, :, index] = concepts[source, index]
        tokens = self.encoder.concepts_to_tokens(swapped.flatten(0, 1))
        if noise is not None:
            noise = noise.repeat(len(indices), 1, 1, 1)
        pixels = self._sample(tokens, num_inference_steps, generator, eta, noise=noise, guidance_scale=guidance_scale)
        result = self._postprocess_rows(pixels, len(indices), output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result, swapped, indices)
        return EncDiffSwapOutput(images=result, concepts=swapped, concept_indices=indices)

    def _postprocess_rows(self, pixels: torch.Tensor, rows: int, output_type: str):
        images = self.image_processor.postprocess(pixels, output_type=output_type)
        if output_type == "pil":
            cols = len(images) // rows
            return [images[r * cols : (r + 1) * cols] for r in range(rows)]
        return images.reshape(rows, -1, *images.shape[1:])

    @torch.no_grad()
    def traverse(
        self,
        image: ImageInput,
        concept_index: int,
        values: Sequence[float] | torch.Tensor | None = None,
        num_values: int = 8,
        value_range: tuple[float, float] | None = None,
        num_inference_steps: int = 50,
        generator: torch.Generator | None = None,
        eta: float = 0.0,
        guidance_scale: float | None = None,
        latents: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
    ) -> EncDiffTraversalOutput | tuple:
        r"""A traversal row: sweep one concept of one image, keep the others, generate each.

        Args:
            image: one image.
            concept_index: the concept to sweep.
            values: the values to give it; default `num_values` evenly spaced over `value_range`.
            value_range: `(low, high)`; the paper sweeps the concept's observed range over a dataset
                (e.g. `(c[:, i].min(), c[:, i].max())` of `pipe.encode(dataset_images)`). Default,
                since raw concepts have no fixed scale: the image's own value +- 2.
            generator: draws the initial noise, shared by every value of the row, so the row
                differs only through the concept (with `eta > 0` DDIM adds fresh noise per step).
            guidance_scale: as in `__call__`.
            latents: `(1, C, h, w)` starting noise for the whole row instead (e.g. `pipe.invert(image)`).

        Example:
            >>> row = pipe.traverse(image, concept_index=3, value_range=(-1.5, 1.5), num_values=8).images
        """
        self.check_inputs(image, None, num_inference_steps, output_type, eta, guidance_scale)
        if self.encoder.config.token_type != "scalar":
            raise ValueError("traverse sweeps a scalar concept; this encoder has vector tokens.")
        concepts = self.encode(image)
        if concepts.shape[0] != 1:
            raise ValueError(f"traverse takes one image, got a batch of {concepts.shape[0]}.")
        if (isinstance(concept_index, bool) or not isinstance(concept_index, numbers.Integral)
                or not 0 <= concept_index < self.num_concepts):
            raise ValueError(f"concept_index must be an int in [0, {self.num_concepts}), got {concept_index!r}.")
        if values is None:
            if value_range is None:
                current = concepts[0, concept_index].item()
                value_range = (current - 2.0, current + 2.0)
            if not isinstance(num_values, numbers.Integral) or num_values < 1 or num_values > 4096:
                raise ValueError(f"num_values must be an int in [1, 4096], got {num_values!r}.")
            values = torch.linspace(float(value_range[0]), float(value_range[1]), int(num_values))
        values = _real_tensor(values, "values", "a 1-D list of finite numbers").to(torch.float32)
        if values.ndim > 1:
            raise ValueError(f"values must be a 1-D list of numbers (one per image of the row), got shape {tuple(values.shape)}.")
        values = values.flatten()
        if values.numel() == 0 or not torch.isfinite(values).all():
            raise ValueError("values must be a non-empty list of finite numbers.")
        traversed = concepts.repeat(values.numel(), 1)
        traversed[:, concept_index] = values.to(traversed)
        tokens = self.encoder.concepts_to_tokens(traversed)
        # one initial noise shared by the whole row, so images differ only through the concept
        noise = self._check_latents(latents, 1)
        _check_generator(generator)
        if noise is None:
            noise = randn_tensor(self._noise_shape(1), generator=generator, device=self._execution_device, dtype=torch.float32)
        noise = noise.expand(values.numel(), -1, -1, -1)
        pixels = self._sample(tokens, num_inference_steps, generator, eta, noise=noise, guidance_scale=guidance_scale)
        result = self.image_processor.postprocess(pixels, output_type=output_type)
        self.maybe_free_model_hooks()
        if not return_dict:
            return (result, values, traversed)
        return EncDiffTraversalOutput(images=result, concept_values=values, concepts=traversed)

    @torch.no_grad()
    def invert(self, images: ImageInput, num_inference_steps: int = 50) -> torch.Tensor:
        r"""DDIM inversion: the starting noise `(B, C, h, w)` from which deterministic DDIM
        (`eta=0`, the same `num_inference_steps`, no guidance) regenerates `images` from their own concepts.

        The deterministic reverse process is run backwards with `DDIMInverseScheduler` on the
        pipeline's training schedule. Pass the result as `latents` to `__call__`, `swap` or `traverse`
        to edit an image by concept while keeping what the concepts do not describe. (Generation
        from fresh noise stays the default, and is what the fidelity figures measure.)

        Example:
            >>> noise = pipe.invert(images, num_inference_steps=50)
            >>> recon = pipe(images=images, latents=noise, num_inference_steps=50).images
            >>> edited = pipe.swap(images, concept_indices=[3], latents=noise).images
        """
        from diffusers import DDIMInverseScheduler

        self.check_inputs(images, None, num_inference_steps, "pt")
        # with a clean-image or v prediction the first inverse step starts at alpha_bar(0), not 1 (the
        # noise they imply at alpha_bar = 1 is a division by zero); eps inverts DDIM's last step exactly
        exact_last_step = self.scheduler.config.get("prediction_type", "epsilon") == "epsilon"
        inverse = DDIMInverseScheduler.from_config(self.scheduler.config, set_alpha_to_one=exact_last_step)
        with self._eval_mode():
            pixels = self.prepare_images(images)
            tokens = self.encoder(pixels).tokens.to(self.unet.dtype)
            latents = self._latents_from_images(pixels).float()
            inverse.set_timesteps(int(num_inference_steps), device=latents.device)
            for t in self.progress_bar(inverse.timesteps):
                noise_pred = self._prediction(latents.to(self.unet.dtype), t, tokens, latents)
                latents = inverse.step(noise_pred, t, latents).prev_sample
        self.maybe_free_model_hooks()
        return latents

    @torch.no_grad()
    def attention_maps(
        self,
        images: ImageInput,
        timestep: int | Sequence[int] | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        r"""Per-token cross-attention maps `(B, N, H, W)` at the encoder's image size.

        The images are noised to `timestep` (default: the middle of the schedule; a list averages
        several), the U-Net is run once per timestep with its cross-attention probabilities recorded,
        and the maps are averaged over heads, layers (each upsampled bilinearly to `H x W`) and
        timesteps. Attention is a softmax over the N tokens, so the maps sum to 1 over N everywhere.

        Example:
            >>> maps = pipe.attention_maps(images, timestep=500)          # (B, N, 64, 64)
            >>> from encdiff_pipeline.visualization import attention_grid
            >>> attention_grid(images_pil, maps).save("attention.png")
        """
        with self._eval_mode():
            maps = self._attention_maps(self.prepare_images(images), timestep, generator)
        self.maybe_free_model_hooks()
        return maps

    def _attention_maps(self, pixels: torch.Tensor, timestep, generator) -> torch.Tensor:
        tokens = self.encoder(pixels).tokens.to(self.unet.dtype)
        x0 = self._latents_from_images(pixels)
        num_train = self.scheduler.config.num_train_timesteps
        given = [] if timestep is None else np.atleast_1d(np.asarray(timestep, dtype=object)).tolist()
        if any(isinstance(t, bool) or not isinstance(t, numbers.Integral) for t in given):
            raise ValueError(f"timestep must be an int or a non-empty list of ints, got {timestep!r}.")
        timesteps = [num_train // 2] if timestep is None else [int(t) for t in given]
        if not timesteps:
            raise ValueError("timestep must be an int or a non-empty list of ints.")
        if any(not 0 <= t < num_train for t in timesteps):
            raise ValueError(f"timestep must be in [0, {num_train}), got {timesteps}.")
        size = (self.encoder.config.sample_size, self.encoder.config.sample_size)
        total = None
        for t in timesteps:
            noise = randn_tensor(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
            t_batch = torch.full((x0.shape[0],), t, device=x0.device, dtype=torch.long)
            noisy = self.scheduler.add_noise(x0, noise, t_batch)
            with capture_cross_attention(self.unet) as store:
                self.unet(noisy.to(self.unet.dtype), t_batch, **self._conditioning(tokens))
            maps = aggregate_attention_maps(store, size)
            total = maps if total is None else total + maps
        return total / len(timesteps)

    # ------------------------------------------------------------------ save / load / Hub
    def save_pretrained(
        self,
        save_directory: str,
        safe_serialization: bool = True,
        variant: str | None = None,
        push_to_hub: bool = False,
        **kwargs,
    ) -> None:
        """Save components, `model_index.json`, a model card and the remote code, atomically.

        The folder loads with `EncDiffPipeline.from_pretrained(folder)` where this package is
        installed, and with `DiffusionPipeline.from_pretrained(folder, trust_remote_code=True)` where
        it is not. Every file is first written to a temporary folder and then moved into place.
        `push_to_hub=True` (with `repo_id`, `token`, `private`, `commit_message`, `create_pr`) also
        uploads the folder. Other keyword arguments go to the model card (`datasets`, `metrics`, ...).

        Example:
            >>> pipe.save_pretrained("encdiff-shapes3d", datasets=["eurecom-ds/shapes3d"])
        """
        hub = _package_hub()
        if hub is None:  # standalone remote-code copy: diffusers' own saving
            return super().save_pretrained(
                save_directory, safe_serialization=safe_serialization, variant=variant, push_to_hub=push_to_hub, **kwargs
            )
        upload_keys = ("repo_id", "token", "private", "commit_message", "create_pr")
        upload_kwargs = {key: kwargs.pop(key) for key in upload_keys if key in kwargs}
        hub.save_pipeline(self, save_directory, safe_serialization=safe_serialization, variant=variant, **kwargs)
        if push_to_hub:
            hub.upload_pipeline_folder(save_directory, **upload_kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str, **kwargs) -> "EncDiffPipeline":
        """Load from a local folder or a Hub repo id (its snapshot is downloaded first).

        Weight files are checked before loading (a missing or truncated safetensors file raises an
        error naming it); without `torch_dtype` the components keep the dtype they were saved in.
        Loading is strict: a component of the wrong class for its slot, or a weights file with
        missing, unexpected or non-finite tensors, raises an error naming the file and the tensors;
        `strict=False` loads such a folder with warnings (missing weights freshly initialised).

        Example:
            >>> pipe = EncDiffPipeline.from_pretrained("user/encdiff-shapes3d", torch_dtype=torch.bfloat16)
        """
        hub = _package_hub()
        if hub is None:  # standalone remote-code copy: diffusers' own loading
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
        return hub.load_pipeline(cls, pretrained_model_name_or_path, **kwargs)

    def push_to_hub(
        self,
        repo_id: str,
        commit_message: str | None = None,
        private: bool | None = None,
        token: str | None = None,
        create_pr: bool = False,
        safe_serialization: bool = True,
        variant: str | None = None,
        **card_kwargs,
    ) -> str:
        """Save the pipeline with its model card and remote code and upload it to the Hub.

        `card_kwargs` fill the model card: `datasets` (Hub dataset ids), `metrics`
        (`{dataset: {metric: value}}`), `tags`, `license`, `base_model`. Returns the repo id.

        Example:
            >>> pipe.push_to_hub("user/encdiff-shapes3d", datasets=["eurecom-ds/shapes3d"],
            ...                  metrics={"eurecom-ds/shapes3d": {"factor_vae": 0.999, "dci": 0.969}})
        """
        hub = _package_hub()
        if hub is None:
            raise ImportError("push_to_hub needs the encdiff-pipeline package (pip install encdiff-pipeline).")
        return hub.push_pipeline(
            self, repo_id, commit_message=commit_message, private=private, token=token, create_pr=create_pr,
            safe_serialization=safe_serialization, variant=variant, **card_kwargs,
        )

