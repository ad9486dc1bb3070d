"""Evaluation metrics: cross-modal retrieval (R@K, median and mean rank, many-to-many positives)."""

from crossalign.metrics.retrieval import (
    format_retrieval,
    ranks_image_to_text,
    ranks_text_to_image,
    retrieval_metrics,
)

__all__ = ["format_retrieval", "ranks_image_to_text", "ranks_text_to_image", "retrieval_metrics"]
