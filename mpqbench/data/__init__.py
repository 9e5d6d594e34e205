"""Datasets, their sources (offline mirror or original download), the cache, splits and batches.

CIFAR-10 / CIFAR-100 are converted once into a cache folder under ``data/`` holding uint8 images
(N, 32, 32, 3) and int64 labels as ``.npy`` files plus ``meta.json``; ``.npy`` is byte-for-byte
deterministic, so DVC sees the same hash on every machine. ImageNet is read from an image folder
the user provides.

The dataset *variant* (``cifar10`` for the original pickles, ``cifar10-jpeg`` for the mirror's
JPEG re-encoding) is stored in the cache and travels into every result.

One module a job: ``datasets`` (the registry), ``sources`` (mirror, download, raw readers),
``cache`` (the decoded arrays, ImageNet's manifest), ``splits`` (splits, batches, subsets).
"""

from mpqbench.data.cache import (
    CACHE_ARRAYS,
    FOLDER_SPLITS,
    CacheMeta,
    folder_root,
    prepare_dataset,
    read_cache,
    write_cache,
    write_folder_manifest,
)
from mpqbench.data.datasets import (
    CACHE_FORMAT,
    DATASETS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    MIRROR_ENV,
    DatasetSpec,
)
from mpqbench.data.sources import (
    CIFAR10_CLASSES,
    RawArrays,
    download_cifar,
    file_digest,
    mirror_dir,
    read_cifar_pickles,
    read_jpeg_archive,
    verified_mirror_file,
)
from mpqbench.data.splits import (
    FolderSplit,
    Split,
    Splits,
    TensorSplit,
    calibration_subset,
    load_splits,
    pad_crop_flip,
    stratified_holdout,
)

__all__ = [
    "CACHE_ARRAYS", "CACHE_FORMAT", "CIFAR10_CLASSES", "DATASETS", "FOLDER_SPLITS",
    "IMAGENET_MEAN", "IMAGENET_STD", "MIRROR_ENV", "CacheMeta", "DatasetSpec", "FolderSplit",
    "RawArrays", "Split", "Splits", "TensorSplit", "calibration_subset", "download_cifar",
    "file_digest", "folder_root", "load_splits", "mirror_dir", "pad_crop_flip",
    "prepare_dataset", "read_cache", "read_cifar_pickles", "read_jpeg_archive",
    "stratified_holdout", "verified_mirror_file", "write_cache", "write_folder_manifest",
]
