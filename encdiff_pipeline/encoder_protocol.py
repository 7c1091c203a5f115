"""What `encdiff_pipeline.evaluate` needs of a model: the `ConceptEncoder` protocol.

EncDiff's `ConceptEncoderModel` and the VAE baselines (`encdiff_pipeline.baselines`) implement it;
`evaluation.make_encode_function` relies on it (an `EncDiffPipeline`, a pipeline folder, a plain
torch module or a callable on the dataset's images are accepted too).

Example:
    >>> from encdiff_pipeline.encoder_protocol import ConceptEncoder
    >>> isinstance(ConceptEncoderModel(sample_size=8, num_concepts=4, token_dim=8, width=8), ConceptEncoder)
    True
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol, runtime_checkable

if TYPE_CHECKING:
    import torch


@runtime_checkable
class ConceptEncoder(Protocol):
    """A model whose representation the disentanglement metrics score."""

    def encode_concepts(self, images: torch.Tensor) -> torch.Tensor:
        """Images `(B, C, H, W)` in [-1, 1] on the model's device -> codes `(B, N)` (or `(B, N, d)`
        for vector tokens, reduced to one value per token by `evaluate`)."""
        ...
