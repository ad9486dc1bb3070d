"""Evaluation metrics: cross-modal retrieval (R@K, ranks, many-to-many positives) and the
geometry of the shared embedding space (alignment, uniformity, modality gap, PCA)."""

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

__all__ = [
    "alignment", "format_retrieval", "geometry_report", "modality_gap", "modality_gap_vector", "pca",
    "ranks_image_to_text", "ranks_text_to_image", "retrieval_metrics", "uniformity",
]
