"""Experiments built from the package's parts: alignment methods compared under one
budget, LiT, and fusion modules compared on tasks that need both modalities.

- ``crossalign.experiments.methods``  a registry of alignment objectives (InfoNCE, VSE0,
  VSE++, siamese, adversarial, distillation, hard negatives)
- ``crossalign.experiments.compare``  the runner: train each method with the same budget
  and seed, score retrieval, swap accuracies and geometry, print one table
- ``crossalign.experiments.lit``      locked-text tuning: an image tower trained into
  the frozen MiniLM sentence space
- ``crossalign.experiments.scene_oracle``  an image tower given the scene graph instead
  of pixels, to tell which tower limits a score (relation-swap accuracy)
- ``crossalign.experiments.fusion_tasks``  fusion modules trained on ShapesWorld
  matching and question answering over frozen aligned towers ("align, then fuse")
"""

from crossalign.experiments.compare import (
    CompareConfig,
    ComparisonData,
    MethodResult,
    compare_methods,
    format_table,
    prepare_data,
    swap_accuracy,
    train_method,
)
from crossalign.experiments.fusion_tasks import (
    FusionResult,
    FusionTaskConfig,
    compare_fusion,
    format_fusion_table,
    train_fusion,
)
from crossalign.experiments.methods import (
    AlignmentBatch,
    AlignmentMethod,
    get_method,
    method_names,
)

__all__ = [
    "AlignmentBatch",
    "AlignmentMethod",
    "CompareConfig",
    "ComparisonData",
    "MethodResult",
    "compare_methods",
    "format_table",
    "FusionResult",
    "FusionTaskConfig",
    "compare_fusion",
    "format_fusion_table",
    "train_fusion",
    "get_method",
    "method_names",
    "prepare_data",
    "swap_accuracy",
    "train_method",
]
