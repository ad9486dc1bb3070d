"""Models: image and text encoders, fusion modules, the CLIP-style dual encoder,
captioners, language models (n-gram, MLP, GPT) and the bridges from vision into a
language model."""

from crossalign.models.captioners import (
    Captioner,
    CaptionerConfig,
    ShowAttendTell,
    TransformerCaptioner,
    build_captioner,
    caption_loss,
)
from crossalign.models.dual_encoder import DualEncoder, DualEncoderConfig
from crossalign.models.fusion import (
    FUSION_NAMES,
    ConcatFusion,
    CrossAttentionFusion,
    FiLMFusion,
    FusionModule,
    GatedFusion,
    MeanFusion,
    ModalityAttentionFusion,
    WeightedSumFusion,
    build_fusion,
)
from crossalign.models.gpt import GPT, GPTConfig
from crossalign.models.gpt_hf import gpt_from_hf, gpt_to_hf
from crossalign.models.image_encoders import (
    ImageEncoder,
    MaxPooledGrid,
    ResNetEncoder,
    SmallCNN,
    ViTEncoder,
    build_image_encoder,
    image_encoder_names,
)
from crossalign.models.lora import LoRALinear, apply_lora, merge_lora
from crossalign.models.mlp_lm import MLPLanguageModel
from crossalign.models.ngram import NGramLM
from crossalign.models.prefix_lm import IGNORE_INDEX, PrefixCaptioner
from crossalign.models.projector import (
    LinearProjector,
    MLPProjector,
    TransformerMapper,
    build_projector,
)
from crossalign.models.qformer import QFormer
from crossalign.models.text_encoders import (
    ConvTextEncoder,
    GRUTextEncoder,
    HFTextEncoder,
    TransformerTextEncoder,
    build_text_encoder,
    text_encoder_names,
)

__all__ = [
    "Captioner",
    "CaptionerConfig",
    "ShowAttendTell",
    "TransformerCaptioner",
    "build_captioner",
    "caption_loss",
    "GPT",
    "GPTConfig",
    "MLPLanguageModel",
    "gpt_from_hf",
    "gpt_to_hf",
    "IGNORE_INDEX",
    "LinearProjector",
    "LoRALinear",
    "MLPProjector",
    "PrefixCaptioner",
    "QFormer",
    "TransformerMapper",
    "apply_lora",
    "build_projector",
    "merge_lora",
    "FUSION_NAMES",
    "ConcatFusion",
    "CrossAttentionFusion",
    "FiLMFusion",
    "FusionModule",
    "GatedFusion",
    "MeanFusion",
    "ModalityAttentionFusion",
    "WeightedSumFusion",
    "build_fusion",
    "NGramLM",
    "DualEncoder",
    "DualEncoderConfig",
    "ConvTextEncoder",
    "GRUTextEncoder",
    "HFTextEncoder",
    "ImageEncoder",
    "ResNetEncoder",
    "MaxPooledGrid",
    "SmallCNN",
    "TransformerTextEncoder",
    "ViTEncoder",
    "build_image_encoder",
    "build_text_encoder",
    "image_encoder_names",
    "text_encoder_names",
]
