"""Data: ShapesWorld (generated, offline), Flickr8k (real), tokenisation, batching,
encoding with a frozen encoder, feature caches."""

from crossalign.data.batches import EpochBatches, StepBatchSampler
from crossalign.data.build import (
    all_captions,
    build_caption_dataset,
    build_dataset,
    build_tokenizer,
    build_vocabulary,
    dataset_size,
    fetch_items,
)
from crossalign.data.collate import CaptionCollator, batch_inputs
from crossalign.data.download import download_file, download_flickr8k, extract_archive
from crossalign.data.encode import encode_dataset, encode_in_batches, eval_mode
from crossalign.data.feature_cache import (
    CachedFeatures,
    cache_flickr8k_features,
    cache_image_features,
    load_feature_cache,
)
from crossalign.data.flickr8k import Flickr8k, LoadReport, read_flickr8k_annotations
from crossalign.data.shapes import SceneGraph, ShapeObject, ShapesWorld, caption_words
from crossalign.data.shapes_tasks import (
    ANSWERS,
    NEGATIVE_KINDS,
    QuestionAnswer,
    ShapesMatching,
    ShapesQA,
)
from crossalign.data.vocab import (
    HFTokenizerAdapter,
    Vocabulary,
    default_text_model_path,
    simple_tokenize,
    tokenizer_from_dict,
)

__all__ = [
    "ANSWERS",
    "NEGATIVE_KINDS",
    "QuestionAnswer",
    "ShapesMatching",
    "ShapesQA",
    "CachedFeatures",
    "EpochBatches",
    "CaptionCollator",
    "Flickr8k",
    "HFTokenizerAdapter",
    "LoadReport",
    "SceneGraph",
    "ShapeObject",
    "ShapesWorld",
    "StepBatchSampler",
    "Vocabulary",
    "all_captions",
    "batch_inputs",
    "build_caption_dataset",
    "build_dataset",
    "build_tokenizer",
    "build_vocabulary",
    "dataset_size",
    "encode_dataset",
    "encode_in_batches",
    "eval_mode",
    "fetch_items",
    "cache_flickr8k_features",
    "cache_image_features",
    "caption_words",
    "default_text_model_path",
    "download_file",
    "download_flickr8k",
    "extract_archive",
    "load_feature_cache",
    "read_flickr8k_annotations",
    "simple_tokenize",
    "tokenizer_from_dict",
]
