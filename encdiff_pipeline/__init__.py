"""encdiff-pipeline: EncDiff, a diffusion autoencoder whose concept tokens learn disentangled factors.

Example:
    >>> from encdiff_pipeline import EncDiffPipeline, ConceptEncoderModel
"""
__version__ = "0.1.0"
