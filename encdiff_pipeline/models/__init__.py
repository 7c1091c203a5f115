"""EncDiff's models: the concept encoder, U-Net presets and cross-attention capture."""
from .attention_capture import (
    AttentionCaptureProcessor,
    AttentionStore,
    LayerAttention,
    aggregate_attention_maps,
    capture_cross_attention,
    cross_attention_layers,
)
from .concept_encoder import ConceptEncoderModel, ConceptEncoderOutput
from .patch_autoencoder import PatchAutoencoder, PatchEncoderOutput
from .unet_presets import UNET_PRESETS, unet_from_preset

__all__ = [
    "AttentionCaptureProcessor",
    "AttentionStore",
    "ConceptEncoderModel",
    "ConceptEncoderOutput",
    "LayerAttention",
    "PatchAutoencoder",
    "PatchEncoderOutput",
    "UNET_PRESETS",
    "aggregate_attention_maps",
    "capture_cross_attention",
    "cross_attention_layers",
    "unet_from_preset",
]
