"""Evaluation metrics: cross-modal retrieval (R@K, ranks, many-to-many positives),
caption metrics equal to pycocoevalcap (BLEU-1..4, ROUGE-L, CIDEr-D), and the geometry
of the shared embedding space (alignment, uniformity, modality gap, PCA), and the
semantic accuracy of ShapesWorld captions against their scene graphs."""

from crossalign.metrics.captioning import (
    caption_metrics,
    cider_d,
    corpus_bleu,
    meteor,
    rouge_l,
    tokenize_caption,
)
from crossalign.metrics.geometry import (
    alignment,
    geometry_report,
    modality_gap,
    modality_gap_vector,
    pca,
    uniformity,
)
from crossalign.metrics.retrieval import (
    format_retrieval,
    ranks_image_to_text,
    ranks_text_to_image,
    retrieval_metrics,
)
from crossalign.metrics.semantic import (
    caption_matches_scene,
    parse_caption,
    semantic_accuracy,
    semantic_report,
)

__all__ = [
    "caption_metrics",
    "cider_d",
    "corpus_bleu",
    "meteor",
    "rouge_l",
    "tokenize_caption",
    "alignment",
    "format_retrieval",
    "geometry_report",
    "modality_gap",
    "modality_gap_vector",
    "pca",
    "ranks_image_to_text",
    "ranks_text_to_image",
    "retrieval_metrics",
    "uniformity",
    "caption_matches_scene",
    "parse_caption",
    "semantic_accuracy",
    "semantic_report",
]
