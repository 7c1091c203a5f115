"""The EncDiff concept encoder: image -> N raw concept scalars -> N concept tokens.

This file is self-contained (it imports only torch, diffusers and, lazily, transformers) so that a
saved pipeline can carry it as remote code.

Example:
    >>> import torch
    >>> from encdiff_pipeline.models import ConceptEncoderModel
    >>> encoder = ConceptEncoderModel()  # the paper's encoder: 64x64 RGB, N=20 concepts, d=16
    >>> out = encoder(torch.rand(2, 3, 64, 64) * 2 - 1)
    >>> out.concepts.shape, out.tokens.shape
    (torch.Size([2, 20]), torch.Size([2, 20, 16]))
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from diffusers.utils import BaseOutput
from torch import nn

TOKEN_TYPES = ("scalar", "vector")


@dataclass
class ConceptEncoderOutput(BaseOutput):
    """Output of [`ConceptEncoderModel`].

    Args:
        concepts: `(B, N)` raw concept scalars (the disentangled representation); `(B, N, d)` for
            `token_type="vector"`.
        tokens: `(B, N, d)` concept tokens, the U-Net's cross-attention context.
    """

    concepts: torch.Tensor
    tokens: torch.Tensor


class ResidualBlock(nn.Module):
    """`x + [ReLU, Conv3x3, BN, ReLU, Conv1x1](x)`, the release trunk's residual block."""

    def __init__(self, channels: int):
        super().__init__()
        self.block = nn.Sequential(
            nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.BatchNorm2d(channels),
            nn.ReLU(),
            nn.Conv2d(channels, channels, 1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.block(x)


def release_trunk(in_channels: int, width: int, num_downsamples: int) -> nn.Sequential:
    """The release's convolutional trunk.

    `num_downsamples` Conv(k4, s2, p1)+BN layers with a ReLU after each except the second-to-last
    (the release, with four, has none after the 3rd), then two residual blocks with a BN+ReLU
    between them.
    """
    layers: list[nn.Module] = []
    channels = in_channels
    for i in range(num_downsamples):
        layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1), nn.BatchNorm2d(width)]
        if i != num_downsamples - 2:
            layers.append(nn.ReLU())
        channels = width
    layers += [ResidualBlock(width), nn.BatchNorm2d(width), nn.ReLU(), ResidualBlock(width)]
    return nn.Sequential(*layers)


class BatchedTokenMLP(nn.Module):
    """N independent (non-shared) MLPs `Linear(1,h1)-ELU-Linear(h1,h2)-ELU-Linear(h2,d)`, batched.

    Parameters are stacked over the concept axis (`weight_k` has shape `(N, in, out)`), so one
    `einsum` evaluates all N MLPs; the function equals a loop of N separate `nn.Linear` stacks.
    """

    def __init__(self, num_concepts: int, token_dim: int, hidden_dims: tuple[int, ...] = (64, 128)):
        super().__init__()
        dims = (1, *hidden_dims, token_dim)
        self.num_layers = len(dims) - 1
        for k, (fan_in, fan_out) in enumerate(zip(dims[:-1], dims[1:])):
            bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation
            weight = torch.empty(num_concepts, fan_in, fan_out).uniform_(-bound, bound)
            bias = torch.empty(num_concepts, fan_out).uniform_(-bound, bound)
            self.register_parameter(f"weight_{k}", nn.Parameter(weight))
            self.register_parameter(f"bias_{k}", nn.Parameter(bias))

    def forward(self, concepts: torch.Tensor) -> torch.Tensor:
        """`(B, N)` scalars -> `(B, N, d)` tokens."""
        h = concepts.unsqueeze(-1)  # (B, N, 1)
        for k in range(self.num_layers):
            weight, bias = getattr(self, f"weight_{k}"), getattr(self, f"bias_{k}")
            if k == 0:  # in-dim 1: a broadcast multiply instead of a matmul
                h = h * weight[:, 0, :] + bias
            else:
                h = torch.einsum("bni,nio->bno", h, weight) + bias
            if k < self.num_layers - 1:
                h = F.elu(h)
        return h


def check_backbone_model_type(model_type: Any, where: str = "backbone config") -> str:
    """`model_type` if the installed transformers has a built-in vision model of that type, else `ValueError`."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_MAPPING_NAMES

    if not isinstance(model_type, str) or model_type not in CONFIG_MAPPING_NAMES or model_type not in MODEL_MAPPING_NAMES:
        raise ValueError(f"{where}: backbone model_type {model_type!r} is not an architecture of the installed "
                         "transformers; only built-in architectures are loaded (a folder's own model code, "
                         "its auto_map, is never run).")
    return model_type


def read_backbone_config(pretrained_model_name_or_path: str | os.PathLike, **download_kwargs: Any) -> dict[str, Any]:
    """The `config.json` of a transformers backbone (local folder or Hub repo), checked with
    `check_backbone_model_type` before transformers is asked to load anything."""
    path = Path(pretrained_model_name_or_path)
    if path.is_dir():
        config_file = path / "config.json"
        if not config_file.is_file():
            raise FileNotFoundError(f"{config_file} is missing: {path} is not a transformers model folder.")
    elif str(pretrained_model_name_or_path).startswith((".", "/", "~")) or os.path.exists(path):
        raise FileNotFoundError(f"{pretrained_model_name_or_path} is neither a model folder nor a Hub repo id.")
    else:
        import huggingface_hub

        config_file = Path(huggingface_hub.hf_hub_download(str(pretrained_model_name_or_path), "config.json",
                                                           **download_kwargs))
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise ValueError(f"{config_file} is not valid JSON ({error}).") from error
    if not isinstance(config, dict):
        raise ValueError(f"{config_file} holds a JSON {type(config).__name__}; expected an object.")
    check_backbone_model_type(config.get("model_type"), where=str(config_file))
    return config


class BackboneTrunk(nn.Module):
    """A `transformers` vision model as the trunk; returns its pooled features, flattened."""

    def __init__(self, backbone_config: dict[str, Any]):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        config_dict = dict(backbone_config)
        model_type = config_dict.pop("model_type", None)
        if model_type is None:
            raise ValueError("backbone_config needs a 'model_type' (e.g. 'vit', 'resnet').")
        check_backbone_model_type(model_type, where="backbone_config")
        config_dict.pop("auto_map", None)  # a model's own code is never run: built-in architectures only
        self.config = AutoConfig.for_model(model_type, **config_dict)
        self.model = AutoModel.from_config(self.config, trust_remote_code=False)

    @property
    def output_dim(self) -> int:
        hidden_sizes = getattr(self.config, "hidden_sizes", None)
        if hidden_sizes:  # ResNet / ConvNeXt style
            return int(hidden_sizes[-1])
        hidden_size = getattr(self.config, "hidden_size", None)
        if hidden_size is None:
            raise ValueError(
                f"Cannot tell the pooled feature size of backbone '{self.config.model_type}': "
                "its config has neither hidden_sizes nor hidden_size."
            )
        return int(hidden_size)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        kwargs = {}
        image_size = getattr(self.config, "image_size", None)
        if isinstance(image_size, int) and image_size != images.shape[-1]:
            kwargs["interpolate_pos_encoding"] = True  # e.g. a 224px pretrained ViT on 64px images
        out = self.model(pixel_values=images, **kwargs)
        pooled = getattr(out, "pooler_output", None)
        if pooled is None:  # no pooling head: use the first (CLS) token or the mean feature map
            hidden = out.last_hidden_state
            pooled = hidden[:, 0] if hidden.ndim == 3 else hidden.mean(dim=(-2, -1))
        return pooled.flatten(1)


class ConceptEncoderModel(ModelMixin, ConfigMixin):
    r"""EncDiff's image encoder tau_phi: pixels -> N raw concept scalars -> N concept tokens.

    Args:
        in_channels: image channels.
        sample_size: image height and width (square).
        num_concepts: N, the number of concepts (and tokens).
        token_dim: d, the token size (the U-Net's `cross_attention_dim`).
        width: channels of the convolutional trunk.
        token_type: `"scalar"` (EncDiff: one scalar per concept, each through its own MLP) or
            `"vector"` (EncDiff-V: the trunk emits the N d-dim tokens directly).
        num_downsamples: stride-2 convolutions in the trunk; `None` picks the number that brings
            the image to 4x4 (four for 64x64, three for 32x32).
        mlp_hidden_dims: hidden sizes of each concept's token MLP.
        backbone_config: if given, a `transformers` config dict (with `model_type`, e.g.
            `{"model_type": "vit", "hidden_size": 64, ...}`) whose model replaces the trunk; its
            pooled output feeds the concept head. `num_channels` and `image_size` default to
            `in_channels` and `sample_size`.

    Example:
        >>> encoder = ConceptEncoderModel(sample_size=32, num_concepts=10, token_dim=32)
        >>> concepts = encoder.encode_concepts(images)       # (B, 10)
        >>> concepts[:, 3] = concepts[0, 3]                   # edit concept 3
        >>> tokens = encoder.concepts_to_tokens(concepts)     # (B, 10, 32)
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 3,
        sample_size: int = 64,
        num_concepts: int = 20,
        token_dim: int = 16,
        width: int = 128,
        token_type: str = "scalar",
        num_downsamples: int | None = None,
        mlp_hidden_dims: tuple[int, ...] = (64, 128),
        backbone_config: dict[str, Any] | None = None,
    ):
        super().__init__()
        if token_type not in TOKEN_TYPES:
            raise ValueError(f"token_type must be one of {TOKEN_TYPES}, got {token_type!r}.")
        for name, value in (("in_channels", in_channels), ("sample_size", sample_size),
                            ("num_concepts", num_concepts), ("token_dim", token_dim), ("width", width)):
            if int(value) < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}.")
        head_dim = num_concepts * token_dim if token_type == "vector" else num_concepts

        if backbone_config is not None:
            config = {"num_channels": in_channels, "image_size": sample_size, **backbone_config}
            self.trunk = BackboneTrunk(config)
            feature_dim = self.trunk.output_dim
        else:
            if num_downsamples is None:
                num_downsamples = max(1, round(math.log2(sample_size / 4)))
            if sample_size < 2**num_downsamples:
                raise ValueError(
                    f"sample_size {sample_size} is too small for {num_downsamples} stride-2 convolutions."
                )
            self.trunk = release_trunk(in_channels, width, num_downsamples)
            final_size = sample_size // 2**num_downsamples  # Conv(k4, s2, p1) maps n -> floor(n / 2)
            feature_dim = width * final_size * final_size
        self.concept_head = nn.Linear(feature_dim, head_dim)
        self.token_mlp = (
            BatchedTokenMLP(num_concepts, token_dim, tuple(mlp_hidden_dims)) if token_type == "scalar" else None
        )

    @classmethod
    def with_pretrained_backbone(cls, pretrained_model_name_or_path: str, **kwargs) -> "ConceptEncoderModel":
        """Build an encoder whose trunk is a pretrained `transformers` vision model.

        The backbone's config goes into this model's config and its weights into the trunk, so the
        result saves and reloads with `save_pretrained` / `from_pretrained` like any other encoder.

        Only built-in architectures of the installed transformers are loaded: the folder's
        `config.json` is read first and a `model_type` transformers does not ship is refused before
        transformers is asked to load anything; loading always passes `trust_remote_code=False`, so
        a folder's own Python (an `auto_map`) never runs.

        Example:
            >>> encoder = ConceptEncoderModel.with_pretrained_backbone("google/vit-base-patch16-224-in21k",
            ...                                                        num_concepts=20, token_dim=16)
        """
        from transformers import AutoConfig, AutoModel

        read_backbone_config(pretrained_model_name_or_path)  # refuses unknown model types before any import
        backbone = AutoModel.from_pretrained(pretrained_model_name_or_path, trust_remote_code=False)
        config = AutoConfig.from_pretrained(pretrained_model_name_or_path, trust_remote_code=False).to_diff_dict()
        for key in ("transformers_version", "architectures", "_name_or_path", "torch_dtype", "dtype", "auto_map"):
            config.pop(key, None)
        model = cls(backbone_config=config, **kwargs)
        model.trunk.model.load_state_dict(backbone.state_dict())
        return model

    @property
    def expected_image_shape(self) -> tuple[int, int, int]:
        """`(C, H, W)` of the images this encoder takes."""
        return (self.config.in_channels, self.config.sample_size, self.config.sample_size)

    def check_inputs(self, images: torch.Tensor) -> None:
        """Raise `ValueError` unless `images` is a finite float tensor `(B, C, H, W)` of the right size."""
        expected = "(B, {}, {}, {})".format(*self.expected_image_shape)
        if not isinstance(images, torch.Tensor):
            raise ValueError(f"images must be a torch.Tensor of shape {expected}, got {type(images).__name__}.")
        if images.ndim != 4 or tuple(images.shape[1:]) != self.expected_image_shape:
            raise ValueError(f"images must have shape {expected}, got {tuple(images.shape)}.")
        if not images.is_floating_point():
            raise ValueError(f"images must be a float tensor in [-1, 1], got dtype {images.dtype}.")
        if not torch.isfinite(images).all():
            raise ValueError("images contain NaN or infinite values.")

    def encode_concepts(self, images: torch.Tensor, check_inputs: bool = True) -> torch.Tensor:
        """Images `(B, C, H, W)` in [-1, 1] -> raw concepts `(B, N)` (`(B, N, d)` for "vector").

        `check_inputs=False` skips `check_inputs` (its `isfinite` reads the device back: a host sync);
        the training loop passes it, the pipeline keeps the checks at its boundary.
        """
        if check_inputs:
            self.check_inputs(images)
        features = self.trunk(images.to(self.dtype)).flatten(1)
        concepts = self.concept_head(features)
        if self.config.token_type == "vector":
            concepts = concepts.view(-1, self.config.num_concepts, self.config.token_dim)
        return concepts

    def concepts_to_tokens(self, concepts: torch.Tensor, check_inputs: bool = True) -> torch.Tensor:
        """Concepts `(B, N)` -> tokens `(B, N, d)`; the identity (after a shape check) for "vector".
        `check_inputs=False` skips the shape and finiteness checks (no host sync)."""
        n, d = self.config.num_concepts, self.config.token_dim
        vector = self.config.token_type == "vector"
        if not check_inputs:
            return concepts if vector else self.token_mlp(concepts.to(self.dtype))
        expected = (n, d) if vector else (n,)
        if concepts.ndim != 1 + len(expected) or tuple(concepts.shape[1:]) != expected:
            shape = ", ".join(map(str, ("B", *expected)))
            raise ValueError(f"concepts must have shape ({shape}) (expected N={n}), got {tuple(concepts.shape)}.")
        if not torch.isfinite(concepts).all():
            raise ValueError("concepts contain NaN or infinite values.")
        return concepts if vector else self.token_mlp(concepts.to(self.dtype))

    def forward(self, images: torch.Tensor, return_dict: bool = True, check_inputs: bool = True) -> ConceptEncoderOutput | tuple:
        """Encode images `(B, C, H, W)` in [-1, 1] to concepts and tokens.

        `check_inputs=False` (training loops) skips the shape / finiteness checks of the images and
        of the concepts, which synchronise with the device.

        Example:
            >>> tokens = encoder(images).tokens                              # checked (pipeline boundary)
            >>> tokens = encoder(images, check_inputs=False).tokens          # training step: no host sync
        """
        concepts = self.encode_concepts(images, check_inputs=check_inputs)
        tokens = self.concepts_to_tokens(concepts, check_inputs=check_inputs)
        if not return_dict:
            return (concepts, tokens)
        return ConceptEncoderOutput(concepts=concepts, tokens=tokens)
