"""Models: image and text encoders, fusion modules, the CLIP-style dual encoder, language models."""

from crossalign.models.dual_encoder import DualEncoder, DualEncoderConfig
from crossalign.models.fusion import (
    FUSION_NAMES, ConcatFusion, CrossAttentionFusion, FiLMFusion, FusionModule, GatedFusion, MeanFusion,
    ModalityAttentionFusion, WeightedSumFusion, build_fusion,
)
from crossalign.models.ngram import NGramLM
from crossalign.models.image_encoders import (
    ImageEncoder, ResNetEncoder, SmallCNN, ViTEncoder, build_image_encoder, image_encoder_names,
)
from crossalign.models.text_encoders import (
    GRUTextEncoder, HFTextEncoder, TransformerTextEncoder, build_text_encoder, text_encoder_names,
)

__all__ = [
    "FUSION_NAMES", "ConcatFusion", "CrossAttentionFusion", "FiLMFusion", "FusionModule", "GatedFusion", "MeanFusion",
    "ModalityAttentionFusion", "WeightedSumFusion", "build_fusion",
    "NGramLM", "DualEncoder", "DualEncoderConfig", "GRUTextEncoder", "HFTextEncoder", "ImageEncoder", "ResNetEncoder",
    "SmallCNN", "TransformerTextEncoder", "ViTEncoder", "build_image_encoder", "build_text_encoder",
    "image_encoder_names", "text_encoder_names",
]
