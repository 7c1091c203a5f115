"""encdiff-pipeline: EncDiff, a diffusion autoencoder whose concept tokens learn disentangled factors.

Example:
    >>> from encdiff_pipeline import EncDiffPipeline, ConceptEncoderModel
    >>> pipe = EncDiffPipeline.from_pretrained("path/to/saved/pipeline")
    >>> concepts = pipe.encode(images)  # (B, N) concept scalars
"""
from .version import __version__
from .evaluation import evaluate  # noqa: E402
from .models import ConceptEncoderModel, ConceptEncoderOutput, PatchAutoencoder  # noqa: E402
from .pipeline_encdiff import (  # noqa: E402
    EncDiffPipeline,
    EncDiffPipelineOutput,
    EncDiffSwapOutput,
    EncDiffTraversalOutput,
)

__all__ = [
    "ConceptEncoderModel",
    "ConceptEncoderOutput",
    "EncDiffPipeline",
    "EncDiffPipelineOutput",
    "EncDiffSwapOutput",
    "EncDiffTraversalOutput",
    "PatchAutoencoder",
    "__version__",
    "evaluate",
]
