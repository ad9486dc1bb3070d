"""crossalign: the tested PyTorch implementation behind "Cross-Modal Alignment, by Doing".

Sub-packages, each named after what it holds:

- ``crossalign.data``     ShapesWorld, Flickr8k, vocabularies, feature caches
- ``crossalign.models``   image and text encoders, the CLIP-style dual encoder
- ``crossalign.losses``   contrastive (InfoNCE) losses, single process and distributed
- ``crossalign.metrics``  retrieval metrics
- ``crossalign.train``    the training loop, precision, schedules, checkpoints
- ``crossalign.viz``      plots
- ``crossalign.cli``      the ``crossalign`` command line
"""

from crossalign.utils import default_cache_dir, seed_everything, select_device

__version__ = "0.1.0"

__all__ = ["__version__", "default_cache_dir", "seed_everything", "select_device"]
