"""crossalign: the tested PyTorch implementation behind "Cross-Modal Alignment, by
Doing".

Sub-packages, each named after what it holds:

- ``crossalign.data``         ShapesWorld, Flickr8k, vocabularies, batching, feature
  caches
- ``crossalign.models``       image and text encoders, fusion modules, the CLIP-style
  dual encoder,
                              captioners, language models, projectors into a language
                              model
- ``crossalign.losses``       InfoNCE (single process and distributed), ranking,
  adversarial, distillation
- ``crossalign.linear``       closed-form alignment: orthogonal Procrustes, regularised
  CCA
- ``crossalign.matching``     alignment without learning: keyword and correlation
  baselines
- ``crossalign.decoding``     greedy and batched beam search for captioners and language
  models
- ``crossalign.sampling``     temperature, top-k and top-p sampling for language models
- ``crossalign.zero_shot``    CLIP-style zero-shot classification with prompt templates
- ``crossalign.metrics``      retrieval, caption metrics, geometry of the embedding
  space
- ``crossalign.evaluation``   embedding whole data sets and scoring retrieval
- ``crossalign.train``        the training loops, precision, schedules, checkpoints
- ``crossalign.experiments``  method comparisons under one budget, LiT, fusion tasks
- ``crossalign.architecture`` the package's own module graph; ``crossalign.profiling``
  timings
- ``crossalign.distributed``  torchrun / DDP helpers
- ``crossalign.viz``          plots
- ``crossalign.cli``          the ``crossalign`` command line
"""

from crossalign.utils import default_cache_dir, full, seed_everything, select_device

__version__ = "0.1.0"

__all__ = [
    "__version__",
    "default_cache_dir",
    "full",
    "seed_everything",
    "select_device",
]
